//! The edge: the outermost middleware of every request. It assigns the request id, renders
//! every error in the dialect of the surface that owns the path (including the ones produced
//! outside any handler: unknown route, wrong method, oversized body, timeout, panic), records
//! metrics and makes the request id known to every log line of the request
//! ([`crate::context`]).

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, HttpBody};
use axum::extract::{MatchedPath, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::IntoResponse as _;
use axum::response::Response;
use futures::FutureExt as _;
use futures::future::Either;
use nexus_kernel::Kernel;
use nexus_kernel::plugin::Slot;
use std::future::Ready;
use tower::{Layer, Service};

use crate::RequestId;
use crate::context::RequestContext;
use crate::dialect::Dialect;
use crate::error::{ApiError, ErrorCode};
use crate::plugin::DialectMap;

/// Made at compile time: a `&str` name is parsed again on every use.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Route-level layer, one per plugin around that plugin's routes: notes which route template
/// and which plugin matched (in the request's context, for the edge's metrics), answers 503
/// while the plugin is disabled, and hands the routes' handlers `extension` (the server's
/// means of verifying callers). One plain service rather than `from_fn` or a stack of layers,
/// because it wraps every route and runs on every request.
#[derive(Debug, Clone)]
pub struct PluginRoutesLayer<E> {
    slot: Arc<Slot>,
    extension: E,
}

impl<E> PluginRoutesLayer<E> {
    pub fn new(slot: Arc<Slot>, extension: E) -> Self {
        Self { slot, extension }
    }
}

impl<S, E: Clone> Layer<S> for PluginRoutesLayer<E> {
    type Service = PluginRoutes<S, E>;

    fn layer(&self, inner: S) -> Self::Service {
        PluginRoutes { inner, slot: self.slot.clone(), extension: self.extension.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct PluginRoutes<S, E> {
    inner: S,
    slot: Arc<Slot>,
    extension: E,
}

impl<S, E> Service<Request> for PluginRoutes<S, E>
where
    S: Service<Request, Response = Response>,
    E: Clone + Send + Sync + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        // A batch's sub-requests (which carry their own id) run within the batch's request,
        // and must not label it with their route.
        if let Some(route) = req.extensions().get::<MatchedPath>()
            && req.extensions().get::<RequestId>().is_none()
        {
            crate::context::note_route(route, &self.slot);
        }
        if self.slot.is_enabled() {
            req.extensions_mut().insert(self.extension.clone());
            Either::Left(self.inner.call(req))
        } else {
            Either::Right(std::future::ready(Ok(disabled(&self.slot))))
        }
    }
}

/// The answer of a disabled plugin's routes.
fn disabled(slot: &Slot) -> Response {
    let why = slot.reason().map(|r| format!(": {r}")).unwrap_or_default();
    ApiError::unavailable(format!("The plugin `{}` is disabled{why}", slot.id()))
        .with_extra("plugin_id", slot.id())
        .into_response()
}

/// What the edge wraps: the application, called by reference. Its future owns what it needs,
/// so that a request clones nothing of the application but what its answer uses.
pub trait Inner: Send + Sync + 'static {
    fn handle(&self, req: Request) -> impl Future<Output = Response> + Send + 'static;
}

/// The answer to one request at the edge: the edge's own work around the application's
/// future (boxed on its own, see [`Edge::serve`]).
pub type EdgeFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

/// The outermost layer of the application (inside compression); see the module documentation.
/// Called by reference for each request of every connection ([`Edge::serve`]): nothing of it
/// is cloned per request.
///
/// It also enforces `server.body_limit_bytes` (413 on a declared length above it, a body cut
/// off there otherwise) and turns a panic into a 500, so that neither needs a layer of its own.
#[derive(Debug)]
pub struct Edge<S> {
    inner: S,
    kernel: Arc<Kernel>,
    body_limit: usize,
    dialects: Arc<DialectMap>,
}

impl<S: Inner> Edge<S> {
    /// The edge around `inner`.
    pub fn new(inner: S, kernel: Arc<Kernel>, dialects: Arc<DialectMap>) -> Self {
        let body_limit = kernel.config.server.body_limit_bytes;
        Self { inner, kernel, body_limit, dialects }
    }

    /// Answers `req`, which came from `peer` ([`crate::context::peer`]).
    pub fn serve(&self, peer: Option<SocketAddr>, req: Request) -> EdgeFuture {
        let started = Instant::now();
        let request_id = req
            .headers()
            .get(&REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| acceptable_request_id(v))
            .map_or_else(nexus_kernel::id::request_id, str::to_owned);
        let ctx = RequestContext::new(request_id, peer);
        let method = req.method().clone();
        let uri = req.uri().clone();
        let too_large = declared_length(&req).is_some_and(|len| len > self.body_limit);
        let future = if too_large {
            None
        } else {
            let req = limit_body(req, self.body_limit);
            let inner = &self.inner;
            // Boxed where it is made: the application's future is large, and moving it into
            // the edge's future would copy it several times.
            let call = || -> EdgeFuture { Box::pin(inner.handle(req)) };
            ctx.clone().sync_scope(|| std::panic::catch_unwind(AssertUnwindSafe(call))).ok()
        };
        let kernel = self.kernel.clone();
        let dialects = self.dialects.clone();
        Box::pin(ctx.clone().scope(async move {
            let outcome = match future {
                Some(future) => AssertUnwindSafe(future).catch_unwind().await.ok(),
                None => None,
            };
            let response = match outcome {
                Some(response) => response,
                None if too_large => status_only(StatusCode::PAYLOAD_TOO_LARGE),
                None => {
                    // The panic message went to stderr through the panic hook.
                    tracing::error!(%method, path = uri.path(), "the request's handler panicked");
                    status_only(StatusCode::INTERNAL_SERVER_ERROR)
                }
            };
            let dialect = dialects.for_path(uri.path());
            let mut response = render_error(response, dialect, uri.path(), &method, ctx.id());
            if let Ok(value) = HeaderValue::from_str(ctx.id()) {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            let status = response.status();
            let elapsed = started.elapsed();
            kernel.metrics.observe_request(method.as_str(), ctx.route(), status.as_u16(), elapsed.as_secs_f64());
            if let Some(slot) = ctx.plugin() {
                slot.traffic.record(status.as_u16(), u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
            }
            if status == StatusCode::SERVICE_UNAVAILABLE {
                // A disabled plugin or a dependency that is down: the operator knows, or the
                // health checks say so; one line per request is not an error of its own.
                tracing::warn!(%method, path = uri.path(), status = status.as_u16(),
                    elapsed_ms = elapsed.as_millis() as u64, "request refused: service unavailable");
            } else if status.is_server_error() {
                tracing::error!(%method, path = uri.path(), status = status.as_u16(),
                    elapsed_ms = elapsed.as_millis() as u64, "request failed");
            } else {
                tracing::debug!(%method, path = uri.path(), status = status.as_u16(),
                    elapsed_ms = elapsed.as_millis() as u64, "request served");
            }
            response
        }))
    }
}

/// The request's `Content-Length`, when it sends one that parses.
fn declared_length(req: &Request) -> Option<usize> {
    req.headers().get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Cuts the body off at `limit` bytes: reading past it fails with a length-limit error, which
/// the extractors answer with 413. Requests without a body (most) are left as they are.
fn limit_body(req: Request, limit: usize) -> Request {
    if req.body().is_end_stream() {
        return req;
    }
    req.map(|body| Body::new(http_body_util::Limited::new(body, limit)))
}

fn status_only(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

/// Client-supplied ids are echoed and logged, so only short, plain ones are taken.
fn acceptable_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Writes the body of an error response in the path's dialect. A response that carries an
/// [`ApiError`] is rendered from it; any other error status without a JSON body (produced by
/// routing or a tower layer) is rendered from its status.
pub fn render_error(response: Response, dialect: Dialect, path: &str, method: &Method, request_id: &str) -> Response {
    if let Some(error) = response.extensions().get::<ApiError>() {
        return keep_headers(dialect.render(error, request_id), &response);
    }
    let status = response.status();
    if status.as_u16() < 400 || is_json(&response) {
        return response;
    }
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::not_found(format!("No route for {method} {path}")),
        StatusCode::METHOD_NOT_ALLOWED => {
            ApiError::new(ErrorCode::MethodNotAllowed, format!("{method} is not allowed on {path}"))
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "Request body exceeds the size limit")
        }
        StatusCode::REQUEST_TIMEOUT => ApiError::new(ErrorCode::RequestTimeout, "The request took too long"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::new(ErrorCode::UnsupportedMediaType, "Unsupported Content-Type for this endpoint")
        }
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::invalid_field("body", "The request body is invalid"),
        StatusCode::INTERNAL_SERVER_ERROR => ApiError::new(ErrorCode::InternalError, "An internal error occurred"),
        other => {
            let mut e = ApiError::new(ErrorCode::for_status(other.as_u16()), crate::dialect::reason(other));
            e.status = other;
            e
        }
    };
    keep_headers(dialect.render(&error, request_id), &response)
}

/// Carries over headers of the original response that still apply (`Allow`, `Retry-After`, …).
fn keep_headers(mut rendered: Response, original: &Response) -> Response {
    for (name, value) in original.headers() {
        if name != CONTENT_TYPE && name != CONTENT_LENGTH && !rendered.headers().contains_key(name) {
            rendered.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rendered
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.contains("+json"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_screened() {
        assert!(super::acceptable_request_id("req_abc-123"));
        assert!(!super::acceptable_request_id(""));
        assert!(!super::acceptable_request_id("a b"));
        assert!(!super::acceptable_request_id(&"x".repeat(200)));
    }
}
