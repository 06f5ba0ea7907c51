use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use nexus_kernel::Kernel;

/// Prometheus text exposition: requests by method, route template and status, request
/// duration histogram, process memory and CPU.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain")))]
pub async fn prometheus(State(kernel): State<Arc<Kernel>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], kernel.metrics.render())
}
