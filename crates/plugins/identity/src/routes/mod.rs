//! Identity endpoints, one module per surface; each renders its own seed's shapes from the one
//! domain service.

mod core_v2;
mod dto;

pub use dto::UserView;
mod framework;
mod media;
mod secrets;

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use crate::Identity;

nexus_web::http_error!(crate::error::IdentityError);

pub fn all(identity: Arc<Identity>) -> nexus_web::Routes {
    OpenApiRouter::new()
        .merge(framework::routes())
        .merge(secrets::routes())
        .merge(core_v2::routes())
        .merge(media::routes())
        .with_state(identity)
}
