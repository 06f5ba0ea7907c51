//! Secrets manager surface: `/api/v1/secrets…` and `/api/v1/audit`.
//!
//! Paths contain slashes, so `/api/v1/secrets/{*path}` takes the rest of the URL; a path whose
//! last segment is `versions` is the version history of the path before it (which is why no
//! secret's last segment may be `versions`).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nexus_identity::{Auth, Principal};
use nexus_kernel::audit::AUDIT_LISTING;
use nexus_kernel::audit::{AuditEntry, AuditQuery};
use nexus_kernel::clock::Timestamp;
use nexus_web::{ApiError, Client, Json, ListRequest, Path, Query};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use zeroize::Zeroizing;

use crate::error::SecretsError;
use crate::service::{SecretMeta, Secrets, Update};
use crate::store::{SECRET_LISTING, VersionRow};

nexus_web::http_error!(crate::error::SecretsError);

type Api = State<Arc<Secrets>>;
type Caller = Result<Auth, ApiError>;

const TAG: &str = "secrets";

#[derive(OpenApi)]
#[openapi(paths(read_secret, update_secret, delete_secret, secret_versions))]
struct WildcardDoc;

pub fn routes(secrets: Arc<Secrets>) -> nexus_web::Routes {
    OpenApiRouter::with_openapi(WildcardDoc::openapi())
        .routes(routes!(list_secrets, create_secret))
        .routes(routes!(audit_log))
        .route("/api/v1/secrets/{*path}", get(get_any).put(put_any).delete(delete_any))
        .with_state(secrets)
}

/// The caller, or a 401 that is audited as a refused `action` first.
async fn caller(s: &Secrets, auth: Caller, action: &str, path: &str, client: &Client) -> Result<Principal, ApiError> {
    match auth {
        Ok(Auth(p)) => Ok(p),
        Err(e) => {
            s.unauthenticated(action, path, client, &e.message).await;
            Err(e)
        }
    }
}

/// A secret without its value.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretView {
    pub id: String,
    pub path: String,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub version: i64,
    pub created_at: String,
    pub created_by: String,
    pub updated_at: String,
    pub updated_by: String,
}

impl From<SecretMeta> for SecretView {
    fn from(m: SecretMeta) -> Self {
        Self {
            id: m.id,
            path: m.path,
            metadata: m.metadata,
            version: m.version,
            created_at: m.created_at.to_rfc3339(),
            created_by: m.created_by,
            updated_at: m.updated_at.to_rfc3339(),
            updated_by: m.updated_by,
        }
    }
}

/// A secret with its decrypted value.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretWithValue<'a> {
    pub id: &'a str,
    pub path: &'a str,
    pub value: &'a str,
    #[schema(value_type = Object)]
    pub metadata: &'a Value,
    pub version: i64,
    pub created_at: String,
    pub created_by: &'a str,
    pub updated_at: String,
    pub updated_by: &'a str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretList {
    /// Secrets (`SecretView`, never values), reduced to `fields` when given.
    #[schema(value_type = Vec<SecretView>)]
    pub secrets: Vec<Value>,
    /// Secrets matching the prefix and filters that the caller may read, over all pages.
    pub total: i64,
    /// `page`, `limit` (`null`: no limit), `total`, `total_pages`, `has_next`, `has_prev`; or in
    /// cursor mode `cursor`, `next_cursor`, `prev_cursor`, `has_more`, `limit`, `total`.
    #[schema(value_type = Object)]
    pub pagination: Value,
}

/// The list conventions' parameters (docs/conventions.md), documented here; they are parsed
/// from the raw query by `ListRequest`. `filter[field]` / `filter[field][$op]` come on top.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListParams {
    /// Page number, from 1.
    #[param(value_type = Option<u32>, minimum = 1)]
    pub page: Option<String>,
    /// Cursor pagination: empty for the first page, then a `next_cursor` / `prev_cursor`.
    pub cursor: Option<String>,
    /// Sort keys, `-` for descending: `-updated_at,path`.
    pub sort: Option<String>,
    /// Field selection: `id,path,version`.
    pub fields: Option<String>,
}

/// `limit` is read by [`ListRequest`]; it is declared here for the API documentation.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListQuery {
    /// Only secrets whose path starts with this.
    pub prefix: Option<String>,
    /// Items per page (1 to `api.max_limit`); without it, every secret.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
}

/// List secrets (never their values), optionally under a path prefix. Only secrets the caller
/// may read are listed. The list conventions apply: `filter[field]` / `filter[field][$op]` on
/// id, path, version, created_at, updated_at, created_by and updated_by; `sort`; `fields`;
/// `page`/`limit` or `cursor`. Without `limit`, every secret is listed (the seed's behaviour).
#[utoipa::path(get, path = "/api/v1/secrets", tag = TAG, params(ListQuery, ListParams), security(("bearer" = [])),
    responses((status = 200, body = SecretList), (status = 400, description = "Invalid prefix or list parameter"),
        (status = 401, description = "Not authenticated"), (status = 403, description = "Missing secret.read")))]
async fn list_secrets(
    State(s): Api,
    auth: Caller,
    client: Client,
    q: Result<Query<ListQuery>, ApiError>,
    RawQuery(raw): RawQuery,
) -> Result<Json<SecretList>, ApiError> {
    let p = caller(&s, auth, "secret.list", "", &client).await?;
    let Query(q) = q?;
    let req = ListRequest::parse(raw.as_deref().unwrap_or(""), &SECRET_LISTING, s.kernel())?;
    let page = s.list(&p, q.prefix.as_deref(), &req.query, &client).await?.map(SecretView::from);
    let pagination = req.pagination(&page);
    Ok(Json(SecretList { total: page.total.unwrap_or_default(), secrets: req.project_all(page.items), pagination }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateBody {
    /// Unique path, such as `prod/database/password` (rules in docs/secrets.md).
    pub path: String,
    pub value: String,
    /// Key-value pairs shown in listings (not encrypted).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// Create a secret (version 1).
#[utoipa::path(post, path = "/api/v1/secrets", tag = TAG, request_body = CreateBody, security(("bearer" = [])),
    responses((status = 201, body = SecretView), (status = 400, description = "Invalid path or body"),
        (status = 403, description = "Not permitted on this path"), (status = 409, description = "secret already exists")))]
async fn create_secret(
    State(s): Api,
    auth: Caller,
    client: Client,
    body: Result<Json<CreateBody>, ApiError>,
) -> Result<(StatusCode, Json<SecretView>), ApiError> {
    let path = body.as_ref().map(|Json(b)| b.path.as_str()).unwrap_or_default();
    let p = caller(&s, auth, "secret.create", path, &client).await?;
    let Json(body) = body?;
    let value = Zeroizing::new(body.value);
    let created = s.create(&p, &body.path, value, body.metadata, &client).await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// Read this (older) version instead of the current one.
    #[param(minimum = 1)]
    pub version: Option<i64>,
}

/// `GET /api/v1/secrets/{path}` and `GET /api/v1/secrets/{path}/versions`.
async fn get_any(
    State(s): Api,
    auth: Caller,
    client: Client,
    Path(path): Path<String>,
    q: Result<Query<ReadQuery>, ApiError>,
) -> Result<Response, ApiError> {
    match path.strip_suffix("/versions") {
        Some(secret_path) => {
            let p = caller(&s, auth, "secret.versions", secret_path, &client).await?;
            secret_versions(&s, &p, secret_path, &client).await.map(IntoResponse::into_response)
        }
        None => {
            let p = caller(&s, auth, "secret.read", &path, &client).await?;
            let Query(q) = q?;
            read_secret(&s, &p, &path, q.version, &client).await
        }
    }
}

/// Read a secret's decrypted value (`?version=N` for an older version).
#[utoipa::path(get, path = "/api/v1/secrets/{path}", tag = TAG, security(("bearer" = [])),
    params(("path" = String, Path, pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$", description = "The secret path; may contain `/` between segments of letters, digits, `.`, `_` and `-` (not `.` or `..`; the last not `versions`)"), ReadQuery),
    responses((status = 200, body = SecretWithValue), (status = 400, description = "Invalid path"),
        (status = 403, description = "Not permitted on this path"), (status = 404, description = "secret not found"),
        (status = 409, description = "Stored data failed its integrity check"),
        (status = 503, description = "Audit log unavailable; value withheld")))]
async fn read_secret(
    s: &Secrets,
    p: &Principal,
    path: &str,
    version: Option<i64>,
    client: &Client,
) -> Result<Response, ApiError> {
    let secret = s.read(p, path, version, client).await?;
    let m = &secret.meta;
    let view = SecretWithValue {
        id: &m.id,
        path: &m.path,
        value: &secret.value,
        metadata: &m.metadata,
        version: m.version,
        created_at: m.created_at.to_rfc3339(),
        created_by: &m.created_by,
        updated_at: m.updated_at.to_rfc3339(),
        updated_by: &m.updated_by,
    };
    // A decrypted value must not be kept by caches, nor tagged: an ETag derived from the body
    // would let anyone who sees headers test guesses at the value offline.
    Ok(([(axum::http::header::CACHE_CONTROL, "no-store")], Json(view)).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    pub id: String,
    pub secret_id: String,
    pub version: i64,
    pub created_at: String,
    pub created_by: String,
}

impl From<VersionRow> for VersionView {
    fn from(v: VersionRow) -> Self {
        Self {
            id: v.id,
            secret_id: v.secret_id,
            version: v.version,
            created_at: Timestamp::from_micros(v.created_at).to_rfc3339(),
            created_by: v.created_by,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionList {
    pub versions: Vec<VersionView>,
    pub total: usize,
}

/// A secret's version history, newest first, without values.
#[utoipa::path(get, path = "/api/v1/secrets/{path}/versions", tag = TAG, security(("bearer" = [])),
    params(("path" = String, Path, pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$", description = "The secret path; may contain `/` between segments of letters, digits, `.`, `_` and `-` (not `.` or `..`; the last not `versions`)")),
    responses((status = 200, body = VersionList), (status = 404, description = "secret not found")))]
async fn secret_versions(
    s: &Secrets,
    p: &Principal,
    path: &str,
    client: &Client,
) -> Result<Json<VersionList>, ApiError> {
    let versions: Vec<VersionView> = s.versions(p, path, client).await?.into_iter().map(VersionView::from).collect();
    Ok(Json(VersionList { total: versions.len(), versions }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateBody {
    /// New value; absent: the value is unchanged (a new version still is written).
    pub value: Option<String>,
    /// New metadata, replacing the old; absent: unchanged.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Check-and-set: the version the secret must be at, else 409.
    pub cas: Option<i64>,
}

async fn put_any(
    State(s): Api,
    auth: Caller,
    client: Client,
    Path(path): Path<String>,
    body: Result<Json<UpdateBody>, ApiError>,
) -> Result<Json<SecretView>, ApiError> {
    let p = caller(&s, auth, "secret.update", &path, &client).await?;
    let Json(body) = body?;
    update_secret(&s, &p, &path, body, &client).await
}

/// Update a secret: each update writes a new version.
#[utoipa::path(put, path = "/api/v1/secrets/{path}", tag = TAG, request_body = UpdateBody, security(("bearer" = [])),
    params(("path" = String, Path, pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$", description = "The secret path; may contain `/` between segments of letters, digits, `.`, `_` and `-` (not `.` or `..`; the last not `versions`)")),
    responses((status = 200, body = SecretView), (status = 400, description = "Invalid path or body"),
        (status = 404, description = "secret not found"), (status = 409, description = "cas mismatch")))]
async fn update_secret(
    s: &Secrets,
    p: &Principal,
    path: &str,
    body: UpdateBody,
    client: &Client,
) -> Result<Json<SecretView>, ApiError> {
    let update = Update { value: body.value.map(Zeroizing::new), metadata: body.metadata, cas: body.cas };
    Ok(Json(s.update(p, path, update, client).await?.into()))
}

async fn delete_any(
    State(s): Api,
    auth: Caller,
    client: Client,
    Path(path): Path<String>,
) -> Result<StatusCode, ApiError> {
    let p = caller(&s, auth, "secret.delete", &path, &client).await?;
    delete_secret(&s, &p, &path, &client).await
}

/// Delete a secret with all its versions.
#[utoipa::path(delete, path = "/api/v1/secrets/{path}", tag = TAG, security(("bearer" = [])),
    params(("path" = String, Path, pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$", description = "The secret path; may contain `/` between segments of letters, digits, `.`, `_` and `-` (not `.` or `..`; the last not `versions`)")),
    responses((status = 204), (status = 404, description = "secret not found")))]
async fn delete_secret(
    s: &Secrets,
    p: &Principal,
    path: &str,
    client: &nexus_web::ClientMeta,
) -> Result<StatusCode, ApiError> {
    s.delete(p, path, client).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `limit` is read by [`ListRequest`]; it is declared here for the API documentation (and so
/// that a malformed number is named).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AuditParams {
    /// Maximum entries (1 to `api.max_limit`, larger values are capped; default: no limit).
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    /// Entries to skip (not with `page` or `cursor`).
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    /// User id.
    pub user: Option<String>,
    pub action: Option<String>,
    pub secret_path: Option<String>,
    /// RFC 3339.
    pub start_time: Option<String>,
    /// RFC 3339.
    pub end_time: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: String,
    pub timestamp: String,
    pub action: String,
    pub user: String,
    pub secret_id: String,
    pub secret_path: String,
    pub ip_address: String,
    pub user_agent: String,
    pub success: bool,
    #[schema(value_type = Object)]
    pub metadata: Value,
}

impl From<AuditEntry> for AuditView {
    fn from(e: AuditEntry) -> Self {
        Self {
            id: e.id,
            timestamp: Timestamp::from_micros(e.timestamp).to_rfc3339(),
            action: e.action,
            user: e.actor,
            secret_id: e.secret_id,
            secret_path: e.secret_path,
            ip_address: e.ip_address,
            user_agent: e.user_agent,
            success: e.success,
            metadata: serde_json::from_str(&e.metadata).unwrap_or_else(|_| serde_json::json!({})),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    /// Entries (`AuditView`), reduced to `fields` when given.
    #[schema(value_type = Vec<AuditView>)]
    pub logs: Vec<Value>,
    /// How many entries match the filters in all (not only this page).
    pub total: i64,
    /// `page`, `limit` (`null`: no limit), `total`, `total_pages`, `has_next`, `has_prev`; or in
    /// cursor mode `cursor`, `next_cursor`, `prev_cursor`, `has_more`, `limit`, `total`.
    #[schema(value_type = Object)]
    pub pagination: Value,
}

fn parse_time(field: &str, value: Option<&str>) -> Result<Option<Timestamp>, SecretsError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) => Timestamp::parse_rfc3339(text)
            .map(Some)
            .ok_or_else(|| SecretsError::field(field, "must be an RFC 3339 time, such as 2025-12-03T00:00:00Z")),
    }
}

/// Audit log entries, newest first (admin only). Besides the seed's parameters, the list
/// conventions apply: `filter[field]` / `filter[field][$op]` on id, timestamp, action, user,
/// secret_id, secret_path, ip_address and success; `sort`; `fields`; `page` or `cursor`.
#[utoipa::path(get, path = "/api/v1/audit", tag = TAG, params(AuditParams, ListParams), security(("bearer" = [])),
    responses((status = 200, body = AuditList), (status = 400, description = "Invalid filter"),
        (status = 403, description = "admin access required")))]
async fn audit_log(
    State(s): Api,
    auth: Caller,
    client: Client,
    q: Result<Query<AuditParams>, ApiError>,
    RawQuery(raw): RawQuery,
) -> Result<Json<AuditList>, ApiError> {
    let p = caller(&s, auth, "audit.list", "", &client).await?;
    // Refused (and audited) before anything about the query is looked at.
    s.may_read_audit(&p, &client).await?;
    let Query(q) = q?;
    if q.offset.is_some_and(|o| o < 0) {
        return Err(SecretsError::field("offset", "must be 0 or more").into());
    }
    let mut req = ListRequest::parse(raw.as_deref().unwrap_or(""), &AUDIT_LISTING, s.kernel())?;
    if let Some(offset) = q.offset {
        req.skip("offset", u64::try_from(offset).unwrap_or_default())?;
    }
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let query = AuditQuery {
        start: parse_time("start_time", q.start_time.as_deref())?,
        end: parse_time("end_time", q.end_time.as_deref())?,
        actor: nonempty(q.user),
        action: nonempty(q.action),
        secret_path: nonempty(q.secret_path),
        limit: None,
        offset: 0,
    };
    let page = s.audit_log(&p, &query, &req.query, &client).await?.map(AuditView::from);
    let pagination = req.pagination(&page);
    Ok(Json(AuditList { total: page.total.unwrap_or_default(), logs: req.project_all(page.items), pagination }))
}
