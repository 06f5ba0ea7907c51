//! The HTTP application: every plugin's routes, the docs, and the layers around them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::{Extension, Router};
use nexus_identity::Identity;
use nexus_kernel::Kernel;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

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

/// The complete application for `kernel`.
pub fn router(
    kernel: Arc<Kernel>,
    identity: Arc<Identity>,
    secrets: Arc<nexus_secrets::Secrets>,
    realtime: Arc<nexus_realtime::Realtime>,
    webhooks: Arc<nexus_webhooks::Webhooks>,
) -> Router {
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
    let server = &kernel.config.server;
    let limit = server.body_limit_bytes;
    // Layers run top to bottom on the way in. Compression is outermost so that the edge
    // rewrites error bodies before they are encoded; the edge wraps everything that can fail.
    let layers = ServiceBuilder::new()
        .layer(CompressionLayer::new())
        .layer(from_fn_with_state(kernel.clone(), nexus_web::edge::edge))
        // Any plugin's handler can take the `Auth` extractor, which finds the service here.
        .layer(Extension(identity))
        .layer(CatchPanicLayer::new())
        .layer(cors(&server.cors_origins))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(server.request_timeout_secs),
        ))
        .layer(RequestBodyLimitLayer::new(limit))
        .layer(DefaultBodyLimit::max(limit));

    // Per route (after routing): rate limits outside ETags.
    let routes = api
        .merge(nexus_web::docs::router(openapi))
        .route_layer(axum::middleware::from_fn(nexus_web::edge::note_route))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(axum::middleware::from_fn(crate::conventions::etag::etag))
        .layer(from_fn_with_state(rate_limits, crate::conventions::ratelimit::limit));
    // Before routing: `/api/v2/...` becomes `/api/...`. Batch sub-requests enter here.
    let core = Router::new()
        .fallback_service(routes)
        .layer(from_fn_with_state(kernel.clone(), crate::conventions::version::negotiate));
    let batch =
        Arc::new(crate::conventions::batch::BatchState { core: core.clone(), max: kernel.config.api.max_batch });
    Router::new()
        .fallback_service(core)
        .layer(from_fn_with_state(batch, crate::conventions::batch::batch))
        .layer(layers)
}

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
