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
    info(title = "Nexus", description = "One server for the Nexus APIs: core v2, framework, operations, secrets manager and media platform."),
    tags(
        (name = "health", description = "Liveness and dependency checks"),
        (name = "auth", description = "Framework: login, refresh, logout, API keys"),
        (name = "users", description = "Framework: user management"),
        (name = "secrets-auth", description = "Secrets manager: login, refresh, API keys"),
        (name = "core-v2", description = "Core API v2: identity"),
        (name = "media-auth", description = "Media platform: login, refresh, API keys"),
    )
)]
struct ApiDoc;

/// The complete application for `kernel`.
pub fn router(kernel: Arc<Kernel>, identity: Arc<Identity>) -> Router {
    let (api, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(nexus_system::routes(kernel.clone()))
        .merge(nexus_identity::routes(identity.clone()))
        .split_for_parts();
    openapi.info.version = nexus_kernel::VERSION.to_string();

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

    api.merge(nexus_web::docs::router(openapi))
        .route_layer(axum::middleware::from_fn(nexus_web::edge::note_route))
        .fallback(|| async { StatusCode::NOT_FOUND })
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
