use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, HeaderName};
use nexus_kernel::Kernel;
use nexus_kernel::clock::Timestamp;
use nexus_web::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// A health answer is about this instant: caches and ETags must not keep it.
type NoStore = [(HeaderName, &'static str); 1];
const NO_STORE: NoStore = [(CACHE_CONTROL, "no-store")];

/// Health in the secrets manager's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretsHealth {
    /// `healthy` or `unhealthy`
    pub status: &'static str,
    pub timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Liveness and database reachability.
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, body = SecretsHealth), (status = 503, description = "A dependency is down", body = SecretsHealth)))]
pub async fn secrets_health(State(kernel): State<Arc<Kernel>>) -> (StatusCode, NoStore, Json<SecretsHealth>) {
    let report = kernel.health().await;
    let timestamp = Timestamp::now().to_rfc3339();
    if report.healthy() {
        (StatusCode::OK, NO_STORE, Json(SecretsHealth { status: "healthy", timestamp, error: None }))
    } else {
        let error = report.database.error.clone().or_else(|| report.redis.as_ref().and_then(|r| r.error.clone()));
        (StatusCode::SERVICE_UNAVAILABLE, NO_STORE, Json(SecretsHealth { status: "unhealthy", timestamp, error }))
    }
}

/// Health in the framework's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct FrameworkHealth {
    /// `healthy` or `unhealthy`
    pub status: &'static str,
    pub version: &'static str,
    pub timestamp: String,
    /// `database` and `cache`: `connected` or `disconnected`; `plugins`: `loaded`.
    pub services: BTreeMap<&'static str, &'static str>,
}

/// Health of the platform and its services.
#[utoipa::path(get, path = "/api/health", tag = "health",
    responses((status = 200, body = FrameworkHealth), (status = 503, description = "A dependency is down", body = FrameworkHealth)))]
pub async fn framework_health(State(kernel): State<Arc<Kernel>>) -> (StatusCode, NoStore, Json<FrameworkHealth>) {
    let report = kernel.health().await;
    let connected = |ok: bool| if ok { "connected" } else { "disconnected" };
    let services = BTreeMap::from([
        ("database", connected(report.database.healthy)),
        // Without Redis the cache is the in-process one, which is always there.
        ("cache", connected(report.redis.as_ref().is_none_or(|r| r.healthy))),
        ("plugins", "loaded"),
    ]);
    let (code, status) =
        if report.healthy() { (StatusCode::OK, "healthy") } else { (StatusCode::SERVICE_UNAVAILABLE, "unhealthy") };
    let body =
        FrameworkHealth { status, version: nexus_kernel::VERSION, timestamp: Timestamp::now().to_rfc3339(), services };
    (code, NO_STORE, Json(body))
}

/// Health in the operations API's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpsHealth {
    /// `ok`, or `error` when a dependency is down
    pub status: &'static str,
    pub timestamp: String,
}

/// Load-balancer health check.
#[utoipa::path(get, path = "/api/v1/health", tag = "health",
    responses((status = 200, body = OpsHealth), (status = 503, description = "A dependency is down", body = OpsHealth)))]
pub async fn ops_health(State(kernel): State<Arc<Kernel>>) -> (StatusCode, NoStore, Json<OpsHealth>) {
    let healthy = kernel.health().await.healthy();
    let timestamp = Timestamp::now().to_rfc3339();
    if healthy {
        (StatusCode::OK, NO_STORE, Json(OpsHealth { status: "ok", timestamp }))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, NO_STORE, Json(OpsHealth { status: "error", timestamp }))
    }
}
