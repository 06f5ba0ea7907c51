//! CORS and compression only for the requests that ask for them.
//!
//! Both tower-http layers do work on every request, also when it sent no `Origin` (no CORS
//! applies) or no `Accept-Encoding` (nothing will be compressed): header maps built and
//! merged, predicates run, bodies wrapped. Most API clients send neither, so these wrappers
//! call the inner service directly then, adding only the `Vary` header the full layer would
//! have added, so that caches still key the answer on those request headers (unless the
//! answer is `Cache-Control: no-store`, which no cache keeps).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, HttpBody};
use axum::http::header::{ACCEPT_ENCODING, CACHE_CONTROL, ORIGIN, VARY};
use axum::http::{HeaderMap, HeaderValue, Request, Response};
use tower::{Layer, Service};
use tower_http::compression::{CompressionLayer, DefaultPredicate};
use tower_http::cors::CorsLayer;

/// What [`CorsLayer`] puts in `Vary` (tower-http's `preflight_request_headers`).
const CORS_VARY: HeaderValue =
    HeaderValue::from_static("origin, access-control-request-method, access-control-request-headers");
const COMPRESSION_VARY: HeaderValue = HeaderValue::from_static("accept-encoding");

/// Whether an answer says `Cache-Control: no-store`: no cache keeps it, so nothing need key
/// or tag it.
pub fn is_no_store(headers: &HeaderMap) -> bool {
    headers.get(CACHE_CONTROL).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("no-store"))
}

/// [`CorsLayer`] for requests with an `Origin` header.
///
/// The services of a connection are cloned for every request, so the CORS configuration is
/// shared rather than cloned, and a [`Cors`] service is only made for requests that need one.
/// It expects an inner service that is always ready, as routers are.
#[derive(Debug, Clone)]
pub struct CorsWhenOriginLayer(Arc<CorsLayer>);

impl CorsWhenOriginLayer {
    pub fn new(cors: CorsLayer) -> Self {
        Self(Arc::new(cors))
    }
}

impl<S> Layer<S> for CorsWhenOriginLayer {
    type Service = CorsWhenOrigin<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CorsWhenOrigin { inner, cors: self.0.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct CorsWhenOrigin<S> {
    inner: S,
    cors: Arc<CorsLayer>,
}

impl<S, B> Service<Request<Body>> for CorsWhenOrigin<S>
where
    S: Service<Request<Body>, Response = Response<B>> + Clone,
    B: Default,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Either<tower_http::cors::ResponseFuture<S::Future>, AddVary<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if req.headers().contains_key(ORIGIN) {
            Either::Full { future: self.cors.layer(self.inner.clone()).call(req) }
        } else {
            Either::Bypass { future: AddVary { inner: self.inner.call(req), vary: CORS_VARY } }
        }
    }
}

/// [`CompressionLayer`] for requests with an `Accept-Encoding` header. Answers with [`Body`]
/// either way. Like [`CorsWhenOrigin`], it expects an always-ready inner service.
#[derive(Clone)]
pub struct CompressionWhenAcceptedLayer(pub CompressionLayer);

impl<S> Layer<S> for CompressionWhenAcceptedLayer {
    type Service = CompressionWhenAccepted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CompressionWhenAccepted { inner, compression: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct CompressionWhenAccepted<S> {
    inner: S,
    compression: CompressionLayer,
}

impl<S> Service<Request<Body>> for CompressionWhenAccepted<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<
        IntoBody<tower_http::compression::ResponseFuture<S::Future, DefaultPredicate>>,
        IntoBody<AddVary<S::Future>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if req.headers().contains_key(ACCEPT_ENCODING) {
            Either::Full { future: IntoBody { inner: self.compression.layer(self.inner.clone()).call(req) } }
        } else {
            let inner = AddVary { inner: self.inner.call(req), vary: COMPRESSION_VARY };
            Either::Bypass { future: IntoBody { inner } }
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's answer with one more `Vary` value.
    pub struct AddVary<F> {
        #[pin]
        inner: F,
        vary: HeaderValue,
    }
}

impl<F, B, E> Future for AddVary<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        if !is_no_store(response.headers()) {
            response.headers_mut().append(VARY, this.vary.clone());
        }
        Poll::Ready(Ok(response))
    }
}

pin_project_lite::pin_project! {
    /// The future of the full layer or of the bypass.
    #[project = EitherProj]
    pub enum Either<A, B> {
        Full { #[pin] future: A },
        Bypass { #[pin] future: B },
    }
}

impl<A, B, O> Future for Either<A, B>
where
    A: Future<Output = O>,
    B: Future<Output = O>,
{
    type Output = O;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<O> {
        match self.project() {
            EitherProj::Full { future } => future.poll(cx),
            EitherProj::Bypass { future } => future.poll(cx),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner answer with its body as a [`Body`]. `Body::new` of a `Body` unwraps it
    /// rather than boxing it again, so only compressed bodies are boxed.
    pub struct IntoBody<F> {
        #[pin]
        inner: F,
    }
}

impl<F, B, E> Future for IntoBody<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map_ok(|r| r.map(Body::new))
    }
}
