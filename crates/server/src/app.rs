//! The HTTP application: every plugin's routes, the docs, and the layers around them.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::{ACCEPT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ORIGIN};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse as _, Response};
use futures::FutureExt as _;
use futures::future::Either;
use hyper::body::Incoming;
use nexus_identity::Identity;
use nexus_identity::principal::Authenticator;
use nexus_kernel::Kernel;
use nexus_kernel::plugin::{Endpoint, Slot};
use nexus_web::conditional::{COMPRESSION_VARY, CORS_AND_COMPRESSION_VARY, CORS_VARY, add_vary};
use nexus_web::edge::{Edge, EdgeFuture, Inner, PluginRoutesLayer};
use nexus_web::plugin::{DialectMap, Started};
use tower::{Layer, Service, ServiceExt as _};
use tower_http::compression::CompressionLayer;
use tower_http::compression::Predicate;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::conventions::batch::BatchState;
use crate::conventions::service::Conventions;

#[derive(OpenApi)]
#[openapi(
    modifiers(&SecurityAddon),
    info(title = "Nexus", description = "One server for the Nexus APIs: core v2, framework, operations, secrets manager and media platform."),
)]
struct ApiDoc;

/// Declares the credentials handlers refer to with `security(...)`.
struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        components
            .add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
    }
}

/// The complete application for `kernel`: every plugin's routes inside the conventions, CORS,
/// the edge and compression. Shared by every connection ([`Connection`]) and called by
/// reference: a request clones none of it.
pub fn app(kernel: Arc<Kernel>, identity: Arc<Identity>, plugins: Vec<(Arc<Slot>, Started)>) -> Arc<App> {
    let mut router = OpenApiRouter::new();
    let mut document = crate::openapi::Document::new(&ApiDoc::openapi());
    let mut mounts = Vec::new();
    let mut tags = Vec::new();
    let mut dynamic = Vec::new();
    // Paths of the plugins that can be disabled, whose routes may then answer 503.
    let mut optional_paths = std::collections::BTreeSet::new();
    let authenticator = Authenticator::new(identity.clone());
    for (slot, started) in plugins {
        dynamic.extend(started.dynamic);
        if let Some(mut routes) = started.routes {
            let part = std::mem::take(routes.get_openapi_mut());
            slot.set_endpoints(endpoints(&part));
            if !slot.manifest.essential {
                optional_paths.extend(part.paths.paths.keys().cloned());
            }
            document.add(&slot.manifest.id, &part);
            // Each plugin's routes note their plugin (metrics), answer 503 while it is
            // disabled, and carry the identity service for the `Auth` extractor.
            router = router.merge(routes.route_layer(PluginRoutesLayer::new(slot.clone(), authenticator.clone())));
        }
        mounts.extend(started.mounts);
        tags.extend(started.tags);
    }
    let (api, _) = router.split_for_parts();
    document.set_version(nexus_kernel::VERSION);
    document.set_tags(&tags);
    let dialects = Arc::new(DialectMap::new(mounts));

    let rate_limits = crate::conventions::ratelimit::RateLimits::new(kernel.clone(), identity.clone());
    let openapi = crate::openapi::complete(
        document,
        &crate::openapi::Layers {
            dialect: &|path| dialects.for_path(path),
            rate_limited: &|path| rate_limits.applies_to(path),
            can_be_disabled: &|path| optional_paths.contains(path),
        },
    );
    let server = &kernel.config.server;
    let limit = server.body_limit_bytes;

    let mut docs = nexus_web::docs::router(openapi, dynamic.clone());
    if let Some(system) = kernel.plugins.get("system") {
        docs = docs.route_layer(PluginRoutesLayer::new(system, authenticator.clone()));
    }
    // Routes added at run time (WebAssembly plugins) are asked before the 404.
    let fallback = move |req: Request| {
        let dynamic = dynamic.clone();
        async move {
            let handler = dynamic.iter().find_map(|routes| routes.route(req.method(), req.uri().path()));
            match handler {
                Some(handler) => handler(req).await,
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
    };
    // Behind the identity layer like every plugin's routes: their handlers take the caller.
    let fallback = axum::handler::Handler::layer(fallback, axum::Extension(authenticator));
    let mut routes = api.merge(docs).fallback(fallback);
    // The edge cuts every body off at the limit; axum's extractors add their own default
    // limit, which needs lifting only when the configured one is larger.
    if limit > AXUM_BODY_LIMIT {
        routes = routes.layer(DefaultBodyLimit::max(limit));
    }
    // Conventions, outermost first: batches, `/api/v2/...` becomes `/api/...`, rate limits,
    // ETags. Batch sub-requests run through the same conventions, without batching.
    let core = Conventions::new(routes, kernel.clone(), rate_limits);
    let batch = BatchState { core: core.clone(), max: kernel.config.api.max_batch, dialects: dialects.clone() };
    let conventions = core.with_batch(batch);
    let inner = Application { conventions, cors: cors(&server.cors_origins) };
    Arc::new(App { edge: Edge::new(inner, kernel.clone(), dialects), compression: compression() })
}

/// The endpoints an OpenAPI document describes, for `/api/plugins/{id}`.
fn endpoints(openapi: &utoipa::openapi::OpenApi) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for (path, item) in &openapi.paths.paths {
        let ops = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
            ("HEAD", &item.head),
            ("OPTIONS", &item.options),
        ];
        for (method, op) in ops {
            if let Some(op) = op {
                let description = op.summary.clone().or_else(|| op.description.clone()).unwrap_or_default();
                out.push(Endpoint { path: path.clone(), method: method.to_string(), description });
            }
        }
    }
    out
}

/// The application: the edge around CORS, the conventions and the routes; compression around
/// the edge, so that the edge rewrites error bodies before they are encoded.
pub struct App {
    edge: Edge<Application>,
    compression: Compression,
}

type Compression = CompressionLayer<Compressible>;

fn compression() -> Compression {
    CompressionLayer::new().compress_when(Compressible)
}

/// Answers below this size are sent as they are. Such an answer fits one TCP segment either
/// way, so compressing it saves no packet, while starting a deflate stream costs more than
/// serving the request: zeroing its window and tables made `/health` with `Accept-Encoding:
/// gzip` half as fast, for a 55-byte body that came out larger.
const COMPRESS_MIN_BYTES: u64 = 1024;

/// Which answers are compressed: those of [`COMPRESS_MIN_BYTES`] or more (or of a length not
/// known in advance), except what is compressed already or must flow as it is written — the
/// exceptions of tower-http's default predicate (gRPC, images but SVG, server-sent events),
/// and audio and video, which are compressed already and are served by byte ranges that an
/// encoded body would break. One look at `Content-Type`, and nothing to clone per request.
#[derive(Debug, Clone, Copy)]
struct Compressible;

impl Predicate for Compressible {
    fn should_compress<B: hyper::body::Body>(&self, response: &axum::http::Response<B>) -> bool {
        let headers = response.headers();
        let length = response
            .body()
            .size_hint()
            .exact()
            .or_else(|| headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()));
        if length.is_some_and(|n| n < COMPRESS_MIN_BYTES) {
            return false;
        }
        let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let kept = ["application/grpc", "text/event-stream", "video/", "audio/"];
        let image = content_type.starts_with("image/") && !content_type.starts_with("image/svg+xml");
        !image && !kept.iter().any(|prefix| content_type.starts_with(prefix))
    }
}

/// CORS around the conventions, run only for requests that send `Origin`
/// (`nexus_web::conditional`).
struct Application {
    conventions: Conventions,
    cors: CorsLayer,
}

impl Inner for Application {
    fn handle(&self, req: Request) -> impl Future<Output = Response> + Send + 'static {
        if req.headers().contains_key(ORIGIN) {
            let cors = self.cors.layer(self.conventions.clone());
            Either::Left(Box::pin(async move {
                let Ok(response) = cors.oneshot(req).await;
                response
            }))
        } else {
            // The `Vary` that CORS would have added is added with compression's
            // ([`Connection`]), in one pass.
            Either::Right(self.conventions.answer(req))
        }
    }
}

/// The application as one connection's service: its requests come from `peer`.
#[derive(Clone)]
pub(crate) struct Connection {
    pub(crate) app: Arc<App>,
    pub(crate) peer: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for Connection {
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, req: Request<Incoming>) -> Answer {
        let req = req.map(Body::new);
        // The `Vary` values of the layers that will not run (`nexus_web::conditional`).
        let cors_runs = req.headers().contains_key(ORIGIN);
        if req.headers().contains_key(ACCEPT_ENCODING) {
            let compressed = self.app.compression.clone().layer(self.clone());
            let future = Box::pin(async move {
                let Ok(response) = compressed.oneshot(req).await;
                response.map(Body::new)
            });
            Answer { future, vary: (!cors_runs).then_some(CORS_VARY) }
        } else {
            let vary = if cors_runs { COMPRESSION_VARY } else { CORS_AND_COMPRESSION_VARY };
            Answer { future: self.app.edge.serve(Some(self.peer), req), vary: Some(vary) }
        }
    }
}

/// What compression wraps, for the requests that accept it.
impl Service<Request> for Connection {
    type Response = Response;
    type Error = Infallible;
    type Future = futures::future::Map<EdgeFuture, fn(Response) -> Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        self.app.edge.serve(Some(self.peer), req).map(Ok)
    }
}

/// A connection's answer to one request, and the `Vary` values to add to it.
pub(crate) struct Answer {
    future: EdgeFuture,
    vary: Option<HeaderValue>,
}

impl Future for Answer {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.future.as_mut().poll(cx).map(|mut response| {
            if let Some(vary) = this.vary.take() {
                add_vary(&mut response, vary);
            }
            Ok(response)
        })
    }
}

/// The body limit of axum's extractors unless told otherwise.
const AXUM_BODY_LIMIT: usize = 2 * 1024 * 1024;

fn cors(origins: &[String]) -> CorsLayer {
    let base = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers(Any)
        .expose_headers(Any)
        .max_age(Duration::from_secs(3600));
    if origins.iter().any(|o| o == "*") {
        base.allow_origin(Any)
    } else {
        let list: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
        base.allow_origin(AllowOrigin::list(list))
    }
}
