use std::collections::BTreeMap;
use std::sync::RwLock;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName};
use axum::response::{IntoResponse, Response};
use nexus_kernel::clock::Timestamp;
use nexus_web::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::SystemState;

/// A health answer is about this instant: caches and ETags must not keep it.
const NO_STORE_VALUE: HeaderValue = HeaderValue::from_static("no-store");
const NO_STORE: [(HeaderName, HeaderValue); 1] = [(CACHE_CONTROL, NO_STORE_VALUE)];
const JSON_VALUE: HeaderValue = HeaderValue::from_static("application/json");

/// The healthy answer of one endpoint for the current second. Its body says nothing finer
/// than the second, and load balancers and monitors ask many times a second: the body is
/// rendered once a second instead of on every request. Unhealthy answers, which carry the
/// details of the failure, are rendered every time.
#[derive(Debug, Default)]
pub struct HealthyBody(RwLock<Option<(i64, Bytes)>>);

impl HealthyBody {
    /// `200` with the body for the current second, rendered by `render` (given the second's
    /// timestamp) if this second has none yet.
    fn answer<T: Serialize>(&self, render: impl FnOnce(String) -> T) -> Response {
        let now = nexus_kernel::clock::unix_seconds();
        let cached =
            self.0.read().ok().and_then(|c| c.as_ref().filter(|(second, _)| *second == now).map(|(_, b)| b.clone()));
        let body = match cached {
            Some(body) => body,
            None => {
                let timestamp = Timestamp::from_micros(now * 1_000_000).to_rfc3339();
                let body = Bytes::from(serde_json::to_vec(&render(timestamp)).unwrap_or_default());
                if let Ok(mut cell) = self.0.write() {
                    *cell = Some((now, body.clone()));
                }
                body
            }
        };
        // Built by hand: the tuple form parses its `&str` header values anew on every answer.
        let mut response = Response::new(Body::from(body));
        let headers = response.headers_mut();
        headers.insert(CACHE_CONTROL, NO_STORE_VALUE);
        headers.insert(CONTENT_TYPE, JSON_VALUE);
        response
    }
}

/// One [`HealthyBody`] per endpoint.
#[derive(Debug, Default)]
pub struct HealthyBodies {
    secrets: HealthyBody,
    framework: HealthyBody,
    ops: HealthyBody,
}

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
pub async fn secrets_health(State(state): State<SystemState>) -> Response {
    let report = state.kernel.health().await;
    if report.healthy() {
        return state.healthy.secrets.answer(|timestamp| SecretsHealth { status: "healthy", timestamp, error: None });
    }
    let timestamp = Timestamp::now().to_rfc3339();
    let error = report.database.error.clone().or_else(|| report.redis.as_ref().and_then(|r| r.error.clone()));
    (StatusCode::SERVICE_UNAVAILABLE, NO_STORE, Json(SecretsHealth { status: "unhealthy", timestamp, error }))
        .into_response()
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
pub async fn framework_health(State(state): State<SystemState>) -> Response {
    let report = state.kernel.health().await;
    if report.healthy() {
        return state.healthy.framework.answer(|timestamp| FrameworkHealth {
            status: "healthy",
            version: nexus_kernel::VERSION,
            timestamp,
            services: BTreeMap::from([("database", "connected"), ("cache", "connected"), ("plugins", "loaded")]),
        });
    }
    let connected = |ok: bool| if ok { "connected" } else { "disconnected" };
    let services = BTreeMap::from([
        ("database", connected(report.database.healthy)),
        // Without Redis the cache is the in-process one, which is always there.
        ("cache", connected(report.redis.as_ref().is_none_or(|r| r.healthy))),
        ("plugins", "loaded"),
    ]);
    let body = FrameworkHealth {
        status: "unhealthy",
        version: nexus_kernel::VERSION,
        timestamp: Timestamp::now().to_rfc3339(),
        services,
    };
    (StatusCode::SERVICE_UNAVAILABLE, NO_STORE, Json(body)).into_response()
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
pub async fn ops_health(State(state): State<SystemState>) -> Response {
    if state.kernel.health().await.healthy() {
        return state.healthy.ops.answer(|timestamp| OpsHealth { status: "ok", timestamp });
    }
    let timestamp = Timestamp::now().to_rfc3339();
    (StatusCode::SERVICE_UNAVAILABLE, NO_STORE, Json(OpsHealth { status: "error", timestamp })).into_response()
}
