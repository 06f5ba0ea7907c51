//! `System/Info[/Public]`, `System/Ping`, `Users/Me`, `Users/{id}`.

use std::sync::Arc;

use axum::extract::State;

use super::params::Id;
use axum::http::HeaderMap;
use axum::http::header::HOST;
use nexus_identity::{Auth, MaybeAuth};
use nexus_web::{ApiError, Json};
use serde_json::{Value, json};

use crate::Media;

/// The Jellyfin version Nexus answers as: clients (the TypeScript SDK) need 10.10 or later.
pub const JELLYFIN_VERSION: &str = "10.10.7";
pub const PRODUCT_NAME: &str = "Jellyfin Server";

fn public_info(media: &Media, headers: &HeaderMap) -> serde_json::Map<String, Value> {
    let host = headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let mut m = serde_json::Map::new();
    m.insert("LocalAddress".into(), json!(format!("http://{host}/api/media")));
    m.insert("ServerName".into(), json!("Nexus"));
    m.insert("Version".into(), json!(JELLYFIN_VERSION));
    m.insert("ProductName".into(), json!(PRODUCT_NAME));
    m.insert("OperatingSystem".into(), json!(std::env::consts::OS));
    m.insert("Id".into(), json!(media.server_id()));
    m.insert("StartupWizardCompleted".into(), json!(true));
    m
}

#[utoipa::path(get, path = "/api/media/System/Info/Public", tag = "media", summary = "Public server information (ServerName, Version, ProductName, Id)", responses((status = 200, description = "Public system information", body = Object)))]
pub async fn info_public(State(media): State<Arc<Media>>, headers: HeaderMap) -> Json<Value> {
    Json(Value::Object(public_info(&media, &headers)))
}

#[utoipa::path(get, path = "/api/media/System/Info", tag = "media", summary = "Server information", security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "System information", body = Object), (status = 401, description = "Not authenticated")))]
pub async fn info(State(media): State<Arc<Media>>, Auth(_): Auth, headers: HeaderMap) -> Json<Value> {
    let mut m = public_info(&media, &headers);
    m.insert("OperatingSystemDisplayName".into(), json!(std::env::consts::OS));
    m.insert("HasPendingRestart".into(), json!(false));
    m.insert("IsShuttingDown".into(), json!(false));
    m.insert("SupportsLibraryMonitor".into(), json!(true));
    m.insert("CanSelfRestart".into(), json!(false));
    m.insert("CanLaunchWebBrowser".into(), json!(false));
    m.insert("HasUpdateAvailable".into(), json!(false));
    m.insert("WebSocketPortNumber".into(), json!(media.kernel.config.server.port));
    m.insert("CompletedInstallations".into(), json!([]));
    Json(Value::Object(m))
}

#[utoipa::path(get, path = "/api/media/System/Ping", tag = "media", summary = "Liveness: the product name; POST is accepted too", responses((status = 200, description = "The product name", body = String)))]
pub async fn ping(MaybeAuth(_): MaybeAuth) -> Json<Value> {
    Json(json!(PRODUCT_NAME))
}

async fn user_dto(media: &Media, user_id: &str) -> Result<Value, ApiError> {
    let identity = &media.identity;
    let u = identity.get_user(user_id).await?;
    let is_admin = identity.roles().permissions(&u.roles).is_all();
    Ok(json!({
        "Name": u.username,
        "ServerId": media.server_id(),
        "Id": u.id,
        "HasPassword": true,
        "HasConfiguredPassword": true,
        "HasConfiguredEasyPassword": false,
        "EnableAutoLogin": false,
        "LastLoginDate": u.last_login.map(|t| t.to_rfc3339()),
        "Configuration": {"PlayDefaultAudioTrack": true, "SubtitleMode": "Default", "OrderedViews": [], "LatestItemsExcludes": [], "MyMediaExcludes": [], "HidePlayedInLatest": true, "RememberAudioSelections": true, "RememberSubtitleSelections": true, "EnableNextEpisodeAutoPlay": true},
        "Policy": {"IsAdministrator": is_admin, "IsHidden": false, "IsDisabled": u.status != "active", "EnableAllFolders": true, "EnableMediaPlayback": true, "EnableAudioPlaybackTranscoding": false, "EnableVideoPlaybackTranscoding": false, "EnablePlaybackRemuxing": false, "EnableRemoteControlOfOtherUsers": is_admin, "EnableContentDeletion": false, "AuthenticationProviderId": "Nexus", "PasswordResetProviderId": "Nexus"},
    }))
}

#[utoipa::path(get, path = "/api/media/Users/Me", tag = "media", summary = "The caller as a Jellyfin user", security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "UserDto", body = Object), (status = 401, description = "Not authenticated")))]
pub async fn me(State(media): State<Arc<Media>>, Auth(p): Auth) -> Result<Json<Value>, ApiError> {
    Ok(Json(user_dto(&media, &p.user_id).await?))
}

#[utoipa::path(get, path = "/api/media/Users/{userId}", tag = "media", summary = "A user (oneself, or anyone for administrators)", params(("userId" = String, Path, description = "User id")), security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "UserDto", body = Object), (status = 401, description = "Not authenticated"), (status = 404, description = "No such user")))]
pub async fn user(State(media): State<Arc<Media>>, Auth(p): Auth, Id(user_id): Id) -> Result<Json<Value>, ApiError> {
    if !user_id.eq_ignore_ascii_case(&p.user_id) && !p.is_admin() {
        return Err(ApiError::not_found("User not found"));
    }
    Ok(Json(user_dto(&media, &user_id).await?))
}
