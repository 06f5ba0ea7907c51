//! Secrets manager surface: `/api/v1/auth/*` and `/api/v1/apikeys`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use nexus_kernel::clock::Timestamp;
use nexus_web::{ApiError, Client, Json, Query};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::dto::ApiKeyView;
use crate::service::{KeyStyle, LoginRequest, NewApiKey, TokenLifetime};
use crate::{Auth, Identity, IdentityError};

type Api = State<Arc<Identity>>;

pub fn routes() -> OpenApiRouter<Arc<Identity>> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(list_keys, create_key, revoke_key))
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = SecretsLoginBody)]
pub struct LoginBody {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionUser {
    pub id: String,
    pub name: String,
    pub role: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// JWT, valid for 24 hours.
    pub token: String,
    pub expires_at: String,
    pub user: SessionUser,
}

/// Authenticate with username and password; the token is valid for 24 hours.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "secrets-auth", request_body = LoginBody,
    responses((status = 200, body = LoginResponse), (status = 401, description = "invalid credentials")))]
async fn login(State(id): Api, client: Client, Json(body): Json<LoginBody>) -> Result<Json<LoginResponse>, ApiError> {
    let req = LoginRequest {
        login: body.username,
        password: body.password,
        client: client.0,
        client_id: String::from("secrets"),
        device_id: String::new(),
        lifetime: TokenLifetime::Session,
        reported: Default::default(),
    };
    let s = id.login(req).await?;
    let role = if s.user.roles.iter().any(|r| r == "admin") {
        "admin"
    } else {
        s.user.roles.first().map_or("user", String::as_str)
    };
    let name = if s.user.full_name.is_empty() { s.user.username.clone() } else { s.user.full_name.clone() };
    Ok(Json(LoginResponse {
        token: s.access_token,
        expires_at: s.expires_at.to_rfc3339(),
        user: SessionUser { id: s.user.id.clone(), name, role: role.to_string() },
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefreshResponse {
    pub token: String,
    pub expires_at: String,
}

/// A new 24-hour token for the presented one's session.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "secrets-auth", security(("bearer" = [])),
    responses((status = 200, body = RefreshResponse), (status = 401, description = "Not authenticated")))]
async fn refresh(State(id): Api, Auth(p): Auth, client: Client) -> Result<Json<RefreshResponse>, ApiError> {
    let (token, expires_at) = id.reissue(&p, &client, TokenLifetime::Session).await?;
    Ok(Json(RefreshResponse { token, expires_at: expires_at.to_rfc3339() }))
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SecretsKeyList)]
pub struct KeyList {
    /// API keys (`ApiKeyView`), reduced to `fields` when given.
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<serde_json::Value>,
    pub total: i64,
    /// Offset or cursor pagination, as for every list.
    #[schema(value_type = Object)]
    pub pagination: serde_json::Value,
}

/// The caller's API keys; the list conventions apply (`page`/`limit` or `cursor`, `filter`,
/// `sort`, `fields`).
#[utoipa::path(get, path = "/api/v1/apikeys", tag = "secrets-auth", responses((status = 200, body = KeyList)))]
async fn list_keys(
    State(id): Api,
    Auth(p): Auth,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Json<KeyList>, ApiError> {
    let req = nexus_web::ListRequest::parse(raw.as_deref().unwrap_or(""), &crate::store::API_KEY_LISTING, id.kernel())?;
    let page = id.list_api_keys_page(&p, &req.query).await?.map(ApiKeyView::from);
    let pagination = req.pagination(&page);
    let total = page.total.unwrap_or_default();
    Ok(Json(KeyList { keys: req.project_all(page.items), total, pagination }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = SecretsCreateKeyBody)]
pub struct CreateKeyBody {
    pub name: String,
    /// Lifetime in nanoseconds (720 h = 2592000000000000); absent: no expiry.
    pub expires_in: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SecretsKeyCreated)]
pub struct KeyCreated {
    pub id: String,
    pub name: String,
    /// `nx_…`: returned only once.
    pub key: String,
    pub prefix: String,
    pub created_at: String,
    pub expires_at: Option<String>,
}

/// Create an API key (`nx_…`); the key is returned only once.
#[utoipa::path(post, path = "/api/v1/apikeys", tag = "secrets-auth", request_body = CreateKeyBody,
    responses((status = 201, body = KeyCreated), (status = 400, description = "Invalid request")))]
async fn create_key(
    State(id): Api,
    Auth(p): Auth,
    client: Client,
    Json(body): Json<CreateKeyBody>,
) -> Result<(StatusCode, Json<KeyCreated>), ApiError> {
    let expires_at = match body.expires_in {
        None => None,
        Some(0) => return Err(IdentityError::field("expires_in", "Must be a positive number of nanoseconds").into()),
        Some(ns) => Some(Timestamp::now().add_seconds(i64::try_from(ns.div_ceil(1_000_000_000)).unwrap_or(i64::MAX))),
    };
    let new = NewApiKey { name: body.name, scopes: Vec::new(), expires_at, premium: false, style: KeyStyle::Secrets };
    let (k, key) = id.create_api_key(&p, new, &client).await?;
    let v = ApiKeyView::from(k);
    Ok((
        StatusCode::CREATED,
        Json(KeyCreated {
            id: v.id,
            name: v.name,
            key,
            prefix: v.prefix,
            created_at: v.created_at,
            expires_at: v.expires_at,
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevokeQuery {
    /// The id of the key to revoke.
    #[param(required = true, min_length = 1)]
    pub id: Option<String>,
}

/// Revoke an API key.
#[utoipa::path(delete, path = "/api/v1/apikeys", tag = "secrets-auth", params(RevokeQuery),
    responses((status = 204), (status = 400, description = "id missing"), (status = 404, description = "No such key")))]
async fn revoke_key(
    State(id): Api,
    Auth(p): Auth,
    client: Client,
    Query(q): Query<RevokeQuery>,
) -> Result<StatusCode, ApiError> {
    let key_id =
        q.id.filter(|s| !s.is_empty()).ok_or_else(|| IdentityError::field("id", "This parameter is required"))?;
    id.revoke_api_key(&p, &key_id, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}
