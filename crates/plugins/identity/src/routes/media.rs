//! Media platform surface: `/auth/*` and `/api/media/Users/authenticatebyname`.

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use crate::Identity;

pub fn routes() -> OpenApiRouter<Arc<Identity>> {
    OpenApiRouter::new()
}
