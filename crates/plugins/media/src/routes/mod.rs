//! The Jellyfin surface at `/api/media`. Jellyfin matches paths case-insensitively (clients
//! send `system/info/public` as well as `System/Info/Public`), so one route takes every
//! `/api/media/…` path, lower-cases it and hands it to the router below, whose paths are all
//! lower case. Ids are lower-case hex, so they survive.

mod arr;
mod dto;
mod items;
mod openapi;
mod params;
mod requests;
mod sessions;
mod stream;
mod system;
mod tautulli;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use tower::ServiceExt as _;
use utoipa_axum::router::OpenApiRouter;

use crate::Media;

#[derive(Clone)]
struct Dispatch {
    router: axum::Router,
}

pub fn all(
    media: Arc<Media>,
    gateway: Arc<crate::arr::Gateway>,
    requests: Arc<crate::requests::Requests>,
) -> nexus_web::Routes {
    let router = axum::Router::new()
        .route("/api/media/system/info/public", get(system::info_public))
        .route("/api/media/system/info", get(system::info))
        .route("/api/media/system/ping", get(system::ping).post(system::ping))
        .route("/api/media/users/me", get(system::me))
        .route("/api/media/users/{user_id}", get(system::user))
        .route("/api/media/items", get(items::list))
        .route("/api/media/items/{id}", get(items::one))
        .route("/api/media/items/{id}/images/{kind}", get(items::image).head(items::image))
        .route("/api/media/items/{id}/images/{kind}/{index}", get(items::image).head(items::image))
        .route("/api/media/users/{user_id}/items", get(items::list_for_user))
        .route("/api/media/users/{user_id}/items/{id}", get(items::one_for_user))
        .route("/api/media/users/{user_id}/views", get(items::views))
        .route("/api/media/userviews", get(items::user_views))
        .route(
            "/api/media/library/virtualfolders",
            get(items::virtual_folders).post(items::add_folder).delete(items::remove_folder),
        )
        .route("/api/media/library/refresh", post(items::refresh))
        .route("/api/media/scheduledtasks", get(items::scheduled_tasks))
        .route("/api/media/userplayeditems/{id}", post(items::played).delete(items::unplayed))
        .route("/api/media/userfavoriteitems/{id}", post(items::favorite).delete(items::unfavorite))
        .route("/api/media/users/{user_id}/playeditems/{id}", post(items::played_for).delete(items::unplayed_for))
        .route("/api/media/users/{user_id}/favoriteitems/{id}", post(items::favorite_for).delete(items::unfavorite_for))
        .route("/api/media/videos/{id}/{file}", get(stream::video).head(stream::video))
        .route("/api/media/audio/{id}/{file}", get(stream::audio).head(stream::audio))
        .route("/api/media/sessions", get(sessions::list))
        .route("/api/media/sessions/playing", post(sessions::playing))
        .route("/api/media/sessions/playing/progress", post(sessions::progress))
        .route("/api/media/sessions/playing/stopped", post(sessions::stopped))
        .route("/api/media/sessions/playing/ping", post(sessions::ping))
        .route("/api/media/sessions/{id}/playing", post(sessions::play))
        .route("/api/media/sessions/{id}/playing/{command}", post(sessions::playstate))
        .route("/api/media/socket", get(sessions::socket))
        .with_state(media.clone());
    let tautulli = OpenApiRouter::new().route("/api/tautulli/api/v2", get(tautulli::api)).with_state(media);
    OpenApiRouter::with_openapi(<openapi::JellyfinDoc as utoipa::OpenApi>::openapi())
        .route("/api/media/{*rest}", any(dispatch))
        .with_state(Dispatch { router })
        .merge(tautulli)
        .merge(
            OpenApiRouter::new()
                .route("/api/arr/{service}", any(arr::forward))
                .route("/api/arr/{service}/{*rest}", any(arr::forward))
                .with_state(gateway),
        )
        .merge(
            OpenApiRouter::new()
                .route("/api/requests/api/v1/request", get(requests::list).post(requests::create))
                .route("/api/requests/api/v1/request/{id}", get(requests::one).delete(requests::delete))
                .route("/api/requests/api/v1/request/{id}/{action}", post(requests::status))
                .with_state(requests),
        )
}

/// Hands the request to the lower-case router, with its path (not its query) lower-cased.
async fn dispatch(State(d): State<Dispatch>, mut req: Request) -> Response {
    let uri = req.uri();
    let lower = uri.path().to_ascii_lowercase();
    if lower != uri.path() {
        let rebuilt = match uri.query() {
            Some(q) => format!("{lower}?{q}"),
            None => lower,
        };
        if let Ok(new) = rebuilt.parse::<Uri>() {
            *req.uri_mut() = new;
        }
    }
    match d.router.oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
    .into_response()
}

/// The one place a media error meets HTTP: an unreachable upstream is a 502.
impl From<crate::MediaError> for nexus_web::ApiError {
    fn from(err: crate::MediaError) -> Self {
        match err {
            crate::MediaError::NotFound(what) => nexus_web::ApiError::not_found(format!("{what} not found")),
            crate::MediaError::Invalid(details) => nexus_web::ApiError::invalid_fields(details),
            crate::MediaError::Forbidden(permission) => {
                nexus_web::ApiError::forbidden(format!("This operation requires the `{permission}` permission"))
            }
            crate::MediaError::Conflict(message) => nexus_web::ApiError::conflict(message),
            // A value of `static` this server does not serve: a request to fix (4xx), not a
            // server failure, and the message says what to send instead.
            crate::MediaError::TranscodingUnsupported => nexus_web::ApiError::invalid_field(
                "static",
                "Transcoding is not supported: request the original file with static=true",
            ),
            crate::MediaError::ArrNotConfigured(service) => nexus_web::ApiError::unavailable(format!(
                "{service} is not configured: set media.arr.{service}.url (NEXUS_MEDIA__ARR__{}__URL)",
                service.to_ascii_uppercase()
            )),
            crate::MediaError::ArrUnreachable(why) => {
                let mut e = nexus_web::ApiError::new(nexus_kernel::error::ErrorCode::ServiceUnavailable, why);
                e.status = axum::http::StatusCode::BAD_GATEWAY;
                e
            }
            crate::MediaError::Identity(e) => e.into(),
            crate::MediaError::Storage(e) => nexus_web::ApiError::internal(e),
            crate::MediaError::Io(e) => nexus_web::ApiError::internal(e),
        }
    }
}
