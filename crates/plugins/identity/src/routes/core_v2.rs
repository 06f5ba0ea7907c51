//! Core API v2 surface: `/v2/auth/*` and `/v2/users*`.

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use crate::Identity;

pub fn routes() -> OpenApiRouter<Arc<Identity>> {
    OpenApiRouter::new()
}
