//! Framework surface: `/api/auth/*` and `/api/users*`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nexus_web::{ApiError, Client, Json, ListRequest, Path, Query};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::dto::{ApiKeyView, LoginUser, UserView, parse_time};
use crate::service::{KeyStyle, LoginRequest, NewApiKey, NewUser, TokenLifetime, UserPatch};
use crate::store::{API_KEY_LISTING, USER_LISTING, UserFilter};
use crate::{Auth, Identity, IdentityError};

type Api = State<Arc<Identity>>;

/// The client id framework logins are issued to; their refresh tokens refresh only here.
const FRAMEWORK_CLIENT: &str = "framework";

pub fn routes() -> OpenApiRouter<Arc<Identity>> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginBody {
    /// Username or email.
    pub username: Option<String>,
    pub email: Option<String>,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<LoginUser>,
}

/// Log in with a username (or email) and password.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginBody,
    responses((status = 200, body = TokenResponse), (status = 401, description = "INVALID_CREDENTIALS"),
               (status = 429, description = "Too many attempts")))]
async fn login(State(id): Api, client: Client, Json(body): Json<LoginBody>) -> Result<Json<TokenResponse>, ApiError> {
    let login = body
        .username
        .or(body.email)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| IdentityError::field("username", "This field is required"))?;
    let req = LoginRequest {
        login,
        password: body.password,
        client: client.0,
        client_id: String::from(FRAMEWORK_CLIENT),
        device_id: String::new(),
        lifetime: TokenLifetime::Access,
        reported: Default::default(),
    };
    let s = id.login(req).await?;
    Ok(Json(TokenResponse {
        user: Some(LoginUser::from(&s.user)),
        access_token: s.access_token,
        refresh_token: s.refresh_token,
        token_type: "bearer",
        expires_in: s.expires_in,
        expires_at: s.expires_at.to_rfc3339(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshBody {
    pub refresh_token: String,
}

/// Exchange a refresh token for a new access token and a new refresh token (single use).
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth", request_body = RefreshBody,
    responses((status = 200, body = TokenResponse), (status = 401, description = "Invalid, reused or expired refresh token")))]
async fn refresh(
    State(id): Api,
    client: Client,
    Json(body): Json<RefreshBody>,
) -> Result<Json<TokenResponse>, ApiError> {
    let s = id.refresh(&body.refresh_token, Some(FRAMEWORK_CLIENT), &client, TokenLifetime::Access).await?;
    Ok(Json(TokenResponse {
        access_token: s.access_token,
        refresh_token: s.refresh_token,
        token_type: "bearer",
        expires_in: s.expires_in,
        expires_at: s.expires_at.to_rfc3339(),
        user: None,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageResponse {
    pub message: &'static str,
}

/// Revoke the presented access token's session, including its refresh chain.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = MessageResponse), (status = 401, description = "Not authenticated")))]
async fn logout(State(id): Api, Auth(p): Auth, client: Client) -> Result<Json<MessageResponse>, ApiError> {
    id.logout(&p, &client).await?;
    Ok(Json(MessageResponse { message: "Successfully logged out" }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateKeyBody {
    pub name: String,
    /// RFC 3339; absent means the key does not expire.
    pub expires_at: Option<String>,
    /// Permissions, or `read` / `write` / `admin`; absent means all of the owner's.
    pub scopes: Option<Vec<String>>,
    /// A premium-tier key (higher rate limits); needs `auth.admin`.
    pub premium: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyCreated {
    pub id: String,
    /// The secret key: shown only in this response.
    pub key: String,
    pub name: String,
    pub prefix: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub scopes: Vec<String>,
}

/// Create an API key for the caller (`sk_live_…`); the key is shown once.
#[utoipa::path(post, path = "/api/auth/api-keys", tag = "auth", request_body = CreateKeyBody,
    responses((status = 201, body = KeyCreated), (status = 400, description = "VALIDATION_ERROR")))]
async fn create_key(
    State(id): Api,
    Auth(p): Auth,
    client: Client,
    Json(body): Json<CreateKeyBody>,
) -> Result<(StatusCode, Json<KeyCreated>), ApiError> {
    let new = NewApiKey {
        name: body.name,
        scopes: body.scopes.unwrap_or_default(),
        expires_at: parse_time("expires_at", body.expires_at.as_deref())?,
        premium: body.premium.unwrap_or(false),
        style: KeyStyle::Framework,
    };
    let (k, key) = id.create_api_key(&p, new, &client).await?;
    let view = ApiKeyView::from(k);
    Ok((
        StatusCode::CREATED,
        Json(KeyCreated {
            id: view.id,
            key,
            name: view.name,
            prefix: view.prefix,
            created_at: view.created_at,
            expires_at: view.expires_at,
            scopes: view.scopes,
        }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    /// API keys (`ApiKeyView`), reduced to `fields` when given.
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<Value>,
    pub total: i64,
    /// Offset or cursor pagination, as for every list.
    #[schema(value_type = Object)]
    pub pagination: Value,
}

/// The caller's API keys (never their secrets); the list conventions apply (`page`/`limit` or
/// `cursor`, `filter[name|prefix|premium|created_at|expires_at|last_used]`, `sort`, `fields`).
#[utoipa::path(get, path = "/api/auth/api-keys", tag = "auth", responses((status = 200, body = KeyList)))]
async fn list_keys(State(id): Api, Auth(p): Auth, RawQuery(raw): RawQuery) -> Result<Json<KeyList>, ApiError> {
    let req = ListRequest::parse(raw.as_deref().unwrap_or(""), &API_KEY_LISTING, id.kernel())?;
    let page = id.list_api_keys_page(&p, &req.query).await?.map(ApiKeyView::from);
    let pagination = req.pagination(&page);
    let total = page.total.unwrap_or_default();
    Ok(Json(KeyList { keys: req.project_all(page.items), total, pagination }))
}

/// Revoke one of the caller's API keys.
#[utoipa::path(delete, path = "/api/auth/api-keys/{key_id}", tag = "auth",
    params(("key_id" = String, Path)), responses((status = 204), (status = 404, description = "No such key")))]
async fn revoke_key(
    State(id): Api,
    Auth(p): Auth,
    client: Client,
    Path(key_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    id.revoke_api_key(&p, &key_id, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `page`, `limit`, `cursor`, `sort` and `fields` are read by [`ListRequest`]; they are
/// declared here for the API documentation (and so that a malformed number is named).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct UserListQuery {
    pub role: Option<String>,
    /// `active`, `inactive` or `suspended`
    #[param(pattern = "^(active|inactive|suspended)$")]
    pub status: Option<String>,
    /// Substring of username or email.
    pub search: Option<String>,
    /// Page number, from 1 (offset pagination).
    #[param(minimum = 1)]
    pub page: Option<u32>,
    /// Items per page (default 20; at most `api.max_limit`, 100 by default).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Cursor pagination: empty for the first page, then a `next_cursor` / `prev_cursor`.
    pub cursor: Option<String>,
    /// Sort keys, `-` for descending: `-created_at,username`.
    pub sort: Option<String>,
    /// Field selection: `id,username,email`.
    pub fields: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    pub total: i64,
    /// The page number (offset pagination only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    pub limit: u32,
    /// Users (`UserView`), reduced to `fields` when given.
    #[schema(value_type = Vec<Object>)]
    pub users: Vec<Value>,
    /// `page`, `limit`, `total`, `total_pages`, `has_next`, `has_prev`; or in cursor mode
    /// `cursor`, `next_cursor`, `prev_cursor`, `has_more`, `limit`.
    #[schema(value_type = Object)]
    pub pagination: Value,
}

/// List users (`user.read`). Besides `role`, `status` and `search`, the list conventions
/// apply: `filter[field]` / `filter[field][$op]` on id, username, email, full_name, status,
/// created_at, updated_at and last_login; `sort`; `fields`; `page`/`limit` or `cursor`.
#[utoipa::path(get, path = "/api/users", tag = "users", params(UserListQuery),
    responses((status = 200, body = UserPage), (status = 400, description = "VALIDATION_ERROR"),
               (status = 403, description = "PERMISSION_DENIED")))]
async fn list_users(
    State(id): Api,
    Auth(p): Auth,
    Query(q): Query<UserListQuery>,
    RawQuery(raw): RawQuery,
) -> Result<Json<UserPage>, ApiError> {
    let req = ListRequest::parse(raw.as_deref().unwrap_or(""), &USER_LISTING, id.kernel())?;
    let filter = UserFilter {
        role: q.role,
        status: q.status,
        search: q.search.filter(|s| !s.is_empty()),
        ..UserFilter::default()
    };
    let page = id.list_users_page(&p, &filter, &req.query).await?.map(|u| UserView::new(u, None));
    let pagination = req.pagination(&page);
    Ok(Json(UserPage {
        total: page.total.unwrap_or_default(),
        page: req.page,
        limit: req.query.limit,
        users: req.project_all(page.items),
        pagination,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateUserBody {
    pub username: String,
    pub email: String,
    pub password: String,
    pub full_name: Option<String>,
    pub roles: Option<Vec<String>>,
    pub status: Option<String>,
    pub metadata: Option<Value>,
}

/// Create a user (`user.write`).
#[utoipa::path(post, path = "/api/users", tag = "users", request_body = CreateUserBody,
    responses((status = 201, body = UserView), (status = 400, description = "VALIDATION_ERROR"), (status = 409, description = "CONFLICT")))]
async fn create_user(
    State(id): Api,
    Auth(p): Auth,
    client: Client,
    Json(b): Json<CreateUserBody>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let new = NewUser {
        username: b.username,
        email: b.email,
        password: b.password,
        full_name: b.full_name,
        roles: b.roles,
        status: b.status,
        metadata: b.metadata,
    };
    let user = id.create_user(Some(&p), new, &client).await?;
    Ok((StatusCode::CREATED, Json(UserView::new(user, None))))
}

/// A user with their permissions (`user.read`, or the user themself).
#[utoipa::path(get, path = "/api/users/{user_id}", tag = "users", params(("user_id" = String, Path)),
    responses((status = 200, body = UserView), (status = 404, description = "RESOURCE_NOT_FOUND")))]
async fn get_user(State(id): Api, Auth(p): Auth, Path(user_id): Path<String>) -> Result<Response, ApiError> {
    // The body is rendered once per cached record, not once per request.
    let entry = id.user_entry_for(&p, &user_id).await?;
    let body = entry.rendered(|user| {
        let view = UserView::new(user.clone(), Some(id.roles().permissions(&user.roles).list()));
        // A view of strings and a JSON object cannot fail to serialise.
        Bytes::from(serde_json::to_vec(&view).unwrap_or_default())
    });
    Ok(([(CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateUserBody {
    pub username: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    pub full_name: Option<String>,
    pub roles: Option<Vec<String>>,
    pub status: Option<String>,
    pub metadata: Option<Value>,
}

/// Change a user (`user.write`; users may change their own name, email, password and metadata).
#[utoipa::path(put, path = "/api/users/{user_id}", tag = "users", params(("user_id" = String, Path)), request_body = UpdateUserBody,
    responses((status = 200, body = UserView), (status = 404, description = "RESOURCE_NOT_FOUND"), (status = 409, description = "CONFLICT")))]
async fn update_user(
    State(id): Api,
    Auth(p): Auth,
    client: Client,
    Path(user_id): Path<String>,
    Json(b): Json<UpdateUserBody>,
) -> Result<Json<UserView>, ApiError> {
    let patch = UserPatch {
        username: b.username,
        email: b.email,
        password: b.password,
        full_name: b.full_name,
        roles: b.roles,
        status: b.status,
        metadata: b.metadata,
    };
    let user = id.update_user(&p, &user_id, patch, &client).await?;
    let permissions = id.roles().permissions(&user.roles).list();
    Ok(Json(UserView::new(user, Some(permissions))))
}

/// Delete a user (`user.write`).
#[utoipa::path(delete, path = "/api/users/{user_id}", tag = "users", params(("user_id" = String, Path)),
    responses((status = 204), (status = 404, description = "RESOURCE_NOT_FOUND"), (status = 409, description = "Last admin")))]
async fn delete_user(
    State(id): Api,
    Auth(p): Auth,
    client: Client,
    Path(user_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    id.delete_user(&p, &user_id, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}
