//! Media platform surface: `/auth/*`, `/api/media/Users/authenticatebyname` and
//! `/api/user/profile`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use nexus_kernel::clock::Timestamp;
use nexus_web::{ApiError, Client, FieldError, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::dto::{LoginTokens, UserView, check_optional_text, check_text, reject, rename_fields};
use crate::service::{ApiKey, KeyStyle, LoginRequest, NewApiKey, TokenLifetime};
use crate::{Auth, Identity, IdentityError};

type Api = State<Arc<Identity>>;

/// The client id refresh tokens of `/auth/login` are bound to; `/auth/refresh` takes only these.
const MEDIA_CLIENT: &str = "media";
/// The client id of Jellyfin-style logins.
const JELLYFIN_CLIENT: &str = "jellyfin";
/// Longest API key lifetime: 100 years.
const MAX_KEY_LIFETIME_SECS: u64 = 100 * 365 * 24 * 3600;

pub fn routes() -> OpenApiRouter<Arc<Identity>> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(create_key))
        .routes(routes!(authenticate_by_name))
        // Jellyfin clients spell the path this way; routes are case-sensitive.
        .route("/api/media/Users/AuthenticateByName", axum::routing::post(authenticate_by_name))
        .routes(routes!(profile))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaLoginBody {
    /// Username or email.
    pub username: String,
    pub password: String,
    /// The client device, e.g. `desktop_browser`; kept with the session.
    pub device_id: Option<String>,
}

/// Log in with username and password.
#[utoipa::path(post, path = "/auth/login", tag = "media-auth", request_body = MediaLoginBody,
    responses((status = 200, body = LoginTokens), (status = 400, description = "INVALID_REQUEST"),
               (status = 401, description = "UNAUTHORIZED"), (status = 429, description = "RATE_LIMITED")))]
async fn login(
    State(id): Api,
    client: Client,
    Json(body): Json<MediaLoginBody>,
) -> Result<Json<LoginTokens>, ApiError> {
    let mut errors = Vec::new();
    check_text("username", &body.username, 254, &mut errors);
    if body.password.is_empty() {
        errors.push(FieldError::new("password", "This field is required"));
    }
    check_optional_text("device_id", body.device_id.as_deref(), 128, &mut errors);
    reject(errors)?;
    let req = LoginRequest {
        login: body.username.trim().to_string(),
        password: body.password,
        client: client.0,
        client_id: MEDIA_CLIENT.to_string(),
        device_id: body.device_id.unwrap_or_default(),
        lifetime: TokenLifetime::Access,
        reported: Default::default(),
    };
    let s = id.login(req).await?;
    Ok(Json(LoginTokens::new(s, "Bearer")))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaRefreshBody {
    pub refresh_token: String,
}

/// Exchange a refresh token from `/auth/login` for a new pair (single use: a reused refresh
/// token revokes its whole session).
#[utoipa::path(post, path = "/auth/refresh", tag = "media-auth", request_body = MediaRefreshBody,
    responses((status = 200, body = LoginTokens), (status = 400, description = "INVALID_REQUEST"),
               (status = 401, description = "Invalid, reused or expired refresh token")))]
async fn refresh(
    State(id): Api,
    client: Client,
    Json(body): Json<MediaRefreshBody>,
) -> Result<Json<LoginTokens>, ApiError> {
    let mut errors = Vec::new();
    check_text("refresh_token", &body.refresh_token, 1024, &mut errors);
    reject(errors)?;
    let s = id.refresh(body.refresh_token.trim(), Some(MEDIA_CLIENT), &client, TokenLifetime::Access).await?;
    Ok(Json(LoginTokens::new(s, "Bearer")))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaKeyBody {
    pub name: String,
    /// `read`, `write`, `admin` or permission names; absent or empty: all of the caller's.
    /// A key never exceeds its owner's permissions.
    pub permissions: Option<Vec<String>>,
    /// Lifetime in seconds (2592000 = 30 days); absent: the key does not expire.
    pub expires_in: Option<u64>,
    /// A premium-tier key (`nexus_premium_key_…`, higher rate limits); needs `auth.admin`.
    pub premium: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MediaKeyCreated {
    /// `nexus_key_…`: shown only in this response.
    pub api_key: String,
    pub key_id: String,
    pub name: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub permissions: Vec<String>,
    pub premium: bool,
}

impl MediaKeyCreated {
    fn new(k: ApiKey, api_key: String) -> Self {
        Self {
            api_key,
            key_id: k.id,
            name: k.name,
            created_at: k.created_at.to_rfc3339(),
            expires_at: k.expires_at.map(Timestamp::to_rfc3339),
            permissions: k.scopes,
            premium: k.premium,
        }
    }
}

/// Create an API key for the caller; the key is shown once.
#[utoipa::path(post, path = "/auth/api-keys", tag = "media-auth", request_body = MediaKeyBody,
    responses((status = 201, body = MediaKeyCreated), (status = 400, description = "INVALID_REQUEST"),
               (status = 401, description = "UNAUTHORIZED"), (status = 403, description = "FORBIDDEN")))]
async fn create_key(
    State(id): Api,
    Auth(p): Auth,
    client: Client,
    Json(body): Json<MediaKeyBody>,
) -> Result<(StatusCode, Json<MediaKeyCreated>), ApiError> {
    let expires_at = match body.expires_in {
        None => None,
        Some(secs @ 1..=MAX_KEY_LIFETIME_SECS) => {
            Some(Timestamp::now().add_seconds(i64::try_from(secs).unwrap_or(i64::MAX)))
        }
        Some(_) => {
            let why = format!("Must be between 1 and {MAX_KEY_LIFETIME_SECS} seconds");
            return Err(IdentityError::field("expires_in", why).into());
        }
    };
    let new = NewApiKey {
        name: body.name,
        scopes: body.permissions.unwrap_or_default(),
        expires_at,
        premium: body.premium.unwrap_or(false),
        style: KeyStyle::Media,
    };
    let (k, key) = id
        .create_api_key(&p, new, &client)
        .await
        .map_err(|e| rename_fields(e, &[("scopes", "permissions"), ("expires_at", "expires_in")]))?;
    Ok((StatusCode::CREATED, Json(MediaKeyCreated::new(k, key))))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AuthenticateByNameBody {
    // Jellyfin reads JSON keys case-insensitively; its Python client sends `username`.
    #[serde(rename = "Username", alias = "username", alias = "userName", alias = "USERNAME")]
    pub username: String,
    /// The password (may be empty; a wrong one is a 401).
    #[serde(rename = "Pw", alias = "pw", alias = "PW")]
    pub pw: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct JellyfinPolicy {
    pub is_administrator: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct JellyfinUser {
    pub id: String,
    pub name: String,
    pub server_id: String,
    pub has_password: bool,
    pub policy: JellyfinPolicy,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct JellyfinAuthResult {
    /// Send it back as `Authorization: MediaBrowser Token="…"` (or as a bearer token).
    pub access_token: String,
    pub server_id: String,
    pub user: JellyfinUser,
}

/// Jellyfin-style login.
#[utoipa::path(post, path = "/api/media/Users/authenticatebyname", tag = "media-auth",
    request_body = AuthenticateByNameBody,
    responses((status = 200, body = JellyfinAuthResult), (status = 400, description = "INVALID_REQUEST"),
               (status = 401, description = "UNAUTHORIZED")))]
async fn authenticate_by_name(
    State(id): Api,
    client: Client,
    Json(body): Json<AuthenticateByNameBody>,
) -> Result<Json<JellyfinAuthResult>, ApiError> {
    let mut errors = Vec::new();
    check_text("Username", &body.username, 254, &mut errors);
    reject(errors)?;
    let req = LoginRequest {
        login: body.username.trim().to_string(),
        password: body.pw,
        client: client.0,
        client_id: JELLYFIN_CLIENT.to_string(),
        device_id: String::new(),
        lifetime: TokenLifetime::Access,
        reported: Default::default(),
    };
    let s = id.login(req).await?;
    let server_id = id.kernel().server_id.clone();
    let is_administrator = id.roles().permissions(&s.user.roles).is_all();
    Ok(Json(JellyfinAuthResult {
        access_token: s.access_token,
        server_id: server_id.clone(),
        user: JellyfinUser {
            id: s.user.id,
            name: s.user.username,
            server_id,
            has_password: true,
            policy: JellyfinPolicy { is_administrator },
        },
    }))
}

/// The caller's profile, with the permissions their credential carries (an API key's are
/// narrowed to its scopes). Accepts a bearer token, `X-API-Key` or
/// `Authorization: MediaBrowser Token="…"`.
#[utoipa::path(get, path = "/api/user/profile", tag = "media-auth",
    responses((status = 200, body = UserView), (status = 401, description = "Not authenticated")))]
async fn profile(State(id): Api, Auth(p): Auth) -> Result<Json<UserView>, ApiError> {
    let user = id.get_user(&p.user_id).await?;
    Ok(Json(UserView::new(user, Some(p.permissions.list()))))
}
