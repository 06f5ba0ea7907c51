//! The HTTP application: every plugin's routes, the docs, and the layers around them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{Extensions, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use nexus_identity::Identity;
use nexus_kernel::Kernel;
use nexus_web::conditional::{CompressionWhenAccepted, CompressionWhenAcceptedLayer, CorsWhenOriginLayer};
use nexus_web::edge::{Edge, EdgeLayer};
use tower::{Layer, Service, ServiceBuilder};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::conventions::batch::BatchState;
use crate::conventions::service::Conventions;

#[derive(OpenApi)]
#[openapi(
    modifiers(&SecurityAddon),
    info(title = "Nexus", description = "One server for the Nexus APIs: core v2, framework, operations, secrets manager and media platform."),
    tags(
        (name = "health", description = "Liveness and dependency checks"),
        (name = "auth", description = "Framework: login, refresh, logout, API keys"),
        (name = "users", description = "Framework: user management"),
        (name = "secrets-auth", description = "Secrets manager: login, refresh, API keys"),
        (name = "secrets", description = "Secrets manager: encrypted, versioned secrets and the audit log"),
        (name = "core-v2", description = "Core API v2: identity"),
        (name = "media-auth", description = "Media platform: login, refresh, API keys"),
        (name = "versions", description = "Framework: API versions"),
        (name = "batch", description = "Framework: several requests in one"),
        (name = "realtime", description = "WebSocket: events and RPC"),
        (name = "webhooks", description = "Outgoing webhooks: registration, test, deliveries"),
    )
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

/// The complete application for `kernel`: what `axum::serve` runs, making the service of
/// each connection. Not boxed: the service of a connection is cloned for every request, and
/// every layer's clone is cheap.
pub fn router(
    kernel: Arc<Kernel>,
    identity: Arc<Identity>,
    secrets: Arc<nexus_secrets::Secrets>,
    realtime: Arc<nexus_realtime::Realtime>,
    webhooks: Arc<nexus_webhooks::Webhooks>,
) -> Connections<
    impl Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone + Send + Sync + 'static,
> {
    let (api, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(nexus_system::routes(kernel.clone()))
        .merge(nexus_identity::routes(identity.clone()))
        .merge(nexus_secrets::routes(secrets))
        .merge(nexus_realtime::routes(realtime))
        .merge(nexus_webhooks::routes(webhooks))
        .merge(crate::conventions::version::routes(kernel.clone()))
        .merge(crate::conventions::batch::routes())
        .split_for_parts();
    openapi.info.version = nexus_kernel::VERSION.to_string();

    let rate_limits = crate::conventions::ratelimit::RateLimits::new(kernel.clone(), identity.clone());
    // What any plugin's handler may ask for: the `Auth` extractor finds the identity service.
    let mut services = Extensions::new();
    services.insert(identity.clone());
    let server = &kernel.config.server;
    let limit = server.body_limit_bytes;

    // Layers are applied around the finished router, not with `Router::layer`: that would wrap
    // every route and clone the whole stack on every request.
    let routes = api
        .merge(nexus_web::docs::router(openapi))
        .route_layer(nexus_web::edge::NoteRouteLayer)
        .fallback(|| async { StatusCode::NOT_FOUND });
    // Conventions, outermost first: batches, `/api/v2/...` becomes `/api/...`, rate limits,
    // ETags. Batch sub-requests run through the same conventions, without batching.
    let core = Conventions::new(routes, kernel.clone(), rate_limits);
    let batch = BatchState { core: core.clone(), max: kernel.config.api.max_batch };
    let conventions = core.with_batch(batch);
    let inner = ServiceBuilder::new()
        .layer(CorsWhenOriginLayer::new(cors(&server.cors_origins)))
        // The edge cuts every body off at the limit; axum's extractors add their own default
        // limit, which needs lifting only when the configured one is larger.
        .option_layer((limit > AXUM_BODY_LIMIT).then(|| DefaultBodyLimit::max(limit)))
        .service(conventions);
    Connections {
        inner,
        edge: EdgeLayer::new(kernel.clone(), services),
        compression: CompressionWhenAcceptedLayer(CompressionLayer::new()),
    }
}

/// Makes the service of each connection: the application inside the edge, which is told the
/// connection's peer address (for `nexus_web::context::peer`), inside compression.
///
/// Compression is outermost so that the edge rewrites error bodies before they are encoded;
/// the edge wraps everything that can fail. CORS and compression only run for the requests
/// that ask for them (`nexus_web::conditional`).
#[derive(Clone)]
pub struct Connections<S> {
    inner: S,
    edge: EdgeLayer,
    compression: CompressionWhenAcceptedLayer,
}

impl<L, S> Service<IncomingStream<'_, L>> for Connections<S>
where
    L: Listener<Addr = SocketAddr>,
    S: Clone,
{
    type Response = CompressionWhenAccepted<Edge<S>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: IncomingStream<'_, L>) -> Self::Future {
        let edge = self.edge.for_peer(*stream.remote_addr()).layer(self.inner.clone());
        std::future::ready(Ok(self.compression.layer(edge)))
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
