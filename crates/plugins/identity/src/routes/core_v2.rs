//! Core API v2 surface: `/v2/auth/*` and `/v2/users*`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use nexus_web::{ApiError, Client, FieldError, Json, ListRequest, Path, Query};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::dto::{LoginTokens, UserView, check_optional_text, check_text, parse_flag, reject};
use crate::service::{Activity, LoginRequest, TokenLifetime};
use crate::store::{USER_LISTING, UserFilter};
use crate::{Auth, Identity};

type Api = State<Arc<Identity>>;

/// Longest `client_id` / `device_id` accepted.
const MAX_ID_CHARS: usize = 128;
/// Entries of `activity` shown by `include_activity`.
const ACTIVITY_ENTRIES: i64 = 20;

pub fn routes() -> OpenApiRouter<Arc<Identity>> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(list_users))
        .routes(routes!(get_user))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct V2LoginBody {
    /// Registered email address.
    pub email: String,
    pub password: String,
    /// Identifier of the consuming application; the refresh token is bound to it.
    pub client_id: String,
    /// Origin IP address as the client reports it: written to the audit log, never used as
    /// the client's address.
    pub ip_address: Option<String>,
}

/// Authenticate with email and password.
#[utoipa::path(post, path = "/v2/auth/login", tag = "core-v2", request_body = V2LoginBody,
    responses((status = 200, body = LoginTokens), (status = 400, description = "VALIDATION_ERROR"),
               (status = 401, description = "INVALID_CREDENTIALS"), (status = 429, description = "Too many attempts")))]
async fn login(State(id): Api, client: Client, Json(body): Json<V2LoginBody>) -> Result<Json<LoginTokens>, ApiError> {
    let mut errors = Vec::new();
    check_text("email", &body.email, 254, &mut errors);
    if !body.email.trim().is_empty() && !looks_like_email(body.email.trim()) {
        errors.push(FieldError::new("email", "Must be an email address"));
    }
    if body.password.is_empty() {
        errors.push(FieldError::new("password", "This field is required"));
    }
    check_text("client_id", &body.client_id, MAX_ID_CHARS, &mut errors);
    let reported_ip = match body.ip_address.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => match text.parse::<IpAddr>() {
            Ok(ip) => Some(ip.to_string()),
            Err(_) => {
                errors.push(FieldError::new("ip_address", "Must be an IPv4 or IPv6 address"));
                None
            }
        },
    };
    reject(errors)?;
    let email = body.email.trim().to_string();
    let client_id = body.client_id.trim().to_string();
    let req = LoginRequest {
        login: email.clone(),
        password: body.password,
        client: client.0.clone(),
        client_id: client_id.clone(),
        device_id: String::new(),
        lifetime: TokenLifetime::Access,
        // The address the client claims is recorded in the login's audit metadata; the
        // record's own address stays the connection's.
        reported: reported_ip.map(|ip| ("reported_ip_address".to_string(), ip.into())).into_iter().collect(),
    };
    Ok(Json(LoginTokens::new(id.login(req).await?, "bearer")))
}

fn looks_like_email(email: &str) -> bool {
    !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct V2RefreshBody {
    pub refresh_token: String,
    /// Must be the `client_id` the token was issued to.
    pub client_id: String,
    pub device_id: Option<String>,
}

/// Exchange a refresh token for a new access token and a new refresh token (single use: a
/// reused refresh token revokes its whole session).
#[utoipa::path(post, path = "/v2/auth/refresh", tag = "core-v2", request_body = V2RefreshBody,
    responses((status = 200, body = LoginTokens), (status = 400, description = "VALIDATION_ERROR"),
               (status = 401, description = "Invalid, reused, expired or another client's refresh token")))]
async fn refresh(
    State(id): Api,
    client: Client,
    Json(body): Json<V2RefreshBody>,
) -> Result<Json<LoginTokens>, ApiError> {
    let mut errors = Vec::new();
    check_text("refresh_token", &body.refresh_token, 1024, &mut errors);
    check_text("client_id", &body.client_id, MAX_ID_CHARS, &mut errors);
    check_optional_text("device_id", body.device_id.as_deref(), MAX_ID_CHARS, &mut errors);
    reject(errors)?;
    let s = id.refresh(body.refresh_token.trim(), Some(body.client_id.trim()), &client, TokenLifetime::Access).await?;
    Ok(Json(LoginTokens::new(s, "bearer")))
}

/// `page`, `cursor`, `sort` and `fields` are read by [`ListRequest`]; they are declared here
/// for the API documentation.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct V2UserListQuery {
    /// Maximum number of users to return (1-100, default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Number of users to skip (default 0; not with `page` or `cursor`).
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    /// `active`, `inactive` or `suspended`.
    #[param(pattern = "^(active|inactive|suspended)$")]
    pub status: Option<String>,
    /// Only users holding this role.
    pub role: Option<String>,
    /// Page number, from 1 (instead of `offset`).
    #[param(value_type = Option<u32>, minimum = 1)]
    pub page: Option<String>,
    /// Cursor pagination: empty for the first page, then a `next_cursor` / `prev_cursor`.
    pub cursor: Option<String>,
    /// Sort keys, `-` for descending: `-created_at,username`.
    pub sort: Option<String>,
    /// Field selection: `id,username,email`.
    pub fields: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct V2UserList {
    /// Users (`UserView`), reduced to `fields` when given.
    #[schema(value_type = Vec<UserView>)]
    pub users: Vec<serde_json::Value>,
    /// Users matching the filters, over all pages.
    pub total: i64,
    pub limit: i64,
    /// Users skipped before this page; `null` in cursor mode.
    pub offset: Option<u64>,
    /// `page`, `limit`, `total`, `total_pages`, `has_next`, `has_prev`; or in cursor mode
    /// `cursor`, `next_cursor`, `prev_cursor`, `has_more`, `limit`, `total`.
    #[schema(value_type = Object)]
    pub pagination: serde_json::Value,
}

/// List users (`user.read`). Besides `limit`, `offset`, `status` and `role`, the list
/// conventions apply as on `GET /api/users`: `filter[field]` / `filter[field][$op]`, `sort`,
/// `fields`, `page` or `cursor`.
#[utoipa::path(get, path = "/v2/users", tag = "core-v2", params(V2UserListQuery),
    responses((status = 200, body = V2UserList), (status = 400, description = "VALIDATION_ERROR"),
               (status = 401, description = "Not authenticated"), (status = 403, description = "PERMISSION_DENIED")))]
async fn list_users(
    State(id): Api,
    Auth(p): Auth,
    Query(q): Query<V2UserListQuery>,
    RawQuery(raw): RawQuery,
) -> Result<Json<V2UserList>, ApiError> {
    let mut errors = Vec::new();
    if q.limit.is_some_and(|limit| !(1..=100).contains(&limit)) {
        errors.push(FieldError::new("limit", "Limit must be between 1 and 100"));
    }
    if q.offset.is_some_and(|offset| offset < 0) {
        errors.push(FieldError::new("offset", "Offset must be 0 or more"));
    }
    reject(errors)?;
    let mut req = ListRequest::parse(raw.as_deref().unwrap_or(""), &USER_LISTING, id.kernel())?;
    if let Some(offset) = q.offset {
        req.skip("offset", u64::try_from(offset).unwrap_or_default())?;
    }
    let filter = UserFilter {
        role: q.role.filter(|s| !s.is_empty()),
        status: q.status.filter(|s| !s.is_empty()),
        ..UserFilter::default()
    };
    let page = id.list_users_page(&p, &filter, &req.query).await?.map(|u| UserView::new(u, None));
    let pagination = req.pagination(&page);
    let offset = match req.query.paging {
        nexus_kernel::query::Paging::Offset { offset } => Some(offset),
        nexus_kernel::query::Paging::Keyset { .. } => None,
    };
    Ok(Json(V2UserList {
        total: page.total.unwrap_or_default(),
        limit: i64::from(req.query.limit),
        offset,
        users: req.project_all(page.items),
        pagination,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct V2UserQuery {
    /// Add the user's permissions.
    #[param(value_type = Option<bool>)]
    pub include_permissions: Option<String>,
    /// Add the user's 20 most recent audited actions.
    #[param(value_type = Option<bool>)]
    pub include_activity: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct V2UserDetail {
    #[serde(flatten)]
    pub user: UserView,
    /// Newest first; present with `include_activity=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity: Option<Vec<Activity>>,
}

/// One user (`user.read`, or the user themself).
#[utoipa::path(get, path = "/v2/users/{userId}", tag = "core-v2", params(("userId" = String, Path), V2UserQuery),
    responses((status = 200, body = V2UserDetail), (status = 400, description = "VALIDATION_ERROR"),
               (status = 403, description = "PERMISSION_DENIED"), (status = 404, description = "RESOURCE_NOT_FOUND")))]
async fn get_user(
    State(id): Api,
    Auth(p): Auth,
    Path(user_id): Path<String>,
    Query(q): Query<V2UserQuery>,
) -> Result<Json<V2UserDetail>, ApiError> {
    let user = id.user_entry_for(&p, &user_id).await?.user.clone();
    let with_permissions = parse_flag("include_permissions", q.include_permissions.as_deref())?;
    let with_activity = parse_flag("include_activity", q.include_activity.as_deref())?;
    let permissions = with_permissions.then(|| id.roles().permissions(&user.roles).list());
    let activity = if with_activity { Some(id.activity(&user.id, ACTIVITY_ENTRIES).await?) } else { None };
    Ok(Json(V2UserDetail { user: UserView::new(user, permissions), activity }))
}
