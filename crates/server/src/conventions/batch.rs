//! `POST /api/batch` (framework seed, "Batch Requests"): sub-requests run through the same
//! router, one after another in the caller's name (their credentials are passed on), so that
//! authentication, permissions and rate limits apply to each. Consecutive `GET`/`HEAD`
//! sub-requests, which change nothing, run concurrently. Responses come back in request order
//! with `id`, `status` and `body` (`null` when empty); a failing sub-request fails alone, and
//! a malformed entry, a nested batch or a URL on another host gets a 400 entry of its own.

use std::sync::Arc;

use super::service::Conventions;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use nexus_web::dialect::Dialect;
use nexus_web::{ApiError, FieldError, Json, RequestId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Headers of the batch request passed on to every sub-request (credentials among them).
const INHERITED: &[&str] = &[
    "authorization",
    "x-api-key",
    "x-nexus-api-key",
    "x-rate-limit-tier",
    "x-api-version",
    "accept-language",
    "user-agent",
];

/// Largest sub-response body kept.
const MAX_SUB_BODY: usize = 16 * 1024 * 1024;

#[derive(Clone)]
pub struct BatchState {
    /// The conventions sub-requests run through: versioning, rate limits, ETags and the routes.
    pub core: Conventions,
    pub max: usize,
    /// The dialect each sub-request's errors are written in.
    pub dialects: Arc<nexus_web::plugin::DialectMap>,
}

fn is_batch_path(path: &str) -> bool {
    matches!(path, "/api/batch" | "/api/v2/batch" | "/api/batch/" | "/api/v2/batch/")
}

/// Whether `req` is a batch for [`answer`] rather than a request for the routes.
pub fn is_batch(req: &Request) -> bool {
    req.method() == Method::POST && is_batch_path(req.uri().path())
}

/// Answers `POST /api/batch`.
pub async fn answer(state: &BatchState, req: Request) -> Response {
    match run(state, req).await {
        Ok(body) => (StatusCode::OK, Json(body)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// One sub-request as sent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubRequest {
    /// Echoed in the response entry (any JSON value).
    pub id: Option<Value>,
    /// `GET` unless given.
    pub method: Option<String>,
    /// A path on this server (`/api/users/123`).
    pub url: String,
    #[schema(value_type = Object)]
    pub body: Option<Value>,
    /// Extra headers (not credentials: those of the batch request apply).
    pub headers: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    #[schema(value_type = Vec<SubRequest>)]
    pub requests: Vec<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubResponse {
    /// The sub-request's `id`, as sent (`null` when it had none).
    pub id: Value,
    pub status: u16,
    /// The sub-request's answer (`null` when it had no body).
    #[schema(value_type = Option<Object>)]
    pub body: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    pub responses: Vec<SubResponse>,
}

async fn run(state: &BatchState, req: Request) -> Result<BatchResponse, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|_| ApiError::new(nexus_web::ErrorCode::PayloadTooLarge, "Request body exceeds the size limit"))?;
    let batch: BatchBody = nexus_web::extract::parse_json(&bytes)?;
    if batch.requests.len() > state.max {
        return Err(ApiError::invalid_field(
            "requests",
            format!("At most {} sub-requests per batch ({} given)", state.max, batch.requests.len()),
        ));
    }
    let request_id = nexus_web::context::request_id().unwrap_or_default();
    let host = parts.headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let prepared: Vec<Result<Prepared, SubResponse>> = batch
        .requests
        .into_iter()
        .enumerate()
        .map(|(i, entry)| prepare(i, entry, &parts, &host, &request_id))
        .collect();

    let mut responses: Vec<SubResponse> = Vec::with_capacity(prepared.len());
    let mut pending_reads: Vec<Prepared> = Vec::new();
    for item in prepared {
        match item {
            Ok(p) if p.safe => pending_reads.push(p),
            other => {
                flush(state, &mut pending_reads, &mut responses).await;
                match other {
                    Ok(p) => responses.push(execute(state, p).await),
                    Err(entry) => responses.push(entry),
                }
            }
        }
    }
    flush(state, &mut pending_reads, &mut responses).await;
    Ok(BatchResponse { responses })
}

/// Runs the queued reads concurrently, appending their answers in order.
async fn flush(state: &BatchState, reads: &mut Vec<Prepared>, out: &mut Vec<SubResponse>) {
    if reads.is_empty() {
        return;
    }
    let batch = std::mem::take(reads);
    out.extend(futures::future::join_all(batch.into_iter().map(|p| execute(state, p))).await);
}

struct Prepared {
    id: Value,
    safe: bool,
    method: Method,
    path: String,
    request: Request,
}

fn entry_error(id: Value, field: &str, message: String, request_id: &str) -> SubResponse {
    let error = ApiError::invalid_fields(vec![FieldError::new(field, message)]);
    SubResponse { id, status: 400, body: Dialect::Framework.body(&error, request_id) }
}

fn prepare(
    index: usize,
    entry: Value,
    parent: &axum::http::request::Parts,
    host: &str,
    request_id: &str,
) -> Result<Prepared, SubResponse> {
    let id = entry.get("id").cloned().unwrap_or(Value::Null);
    let field = |name: &str| format!("requests[{index}].{name}");
    let sub: SubRequest = serde_json::from_value(entry)
        .map_err(|e| entry_error(id.clone(), &format!("requests[{index}]"), e.to_string(), request_id))?;
    let method_text = sub.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
    let method = Method::from_bytes(method_text.as_bytes())
        .ok()
        .filter(|m| [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(m))
        .ok_or_else(|| {
            entry_error(id.clone(), &field("method"), format!("Unsupported method `{method_text}`"), request_id)
        })?;
    let uri: Uri = sub
        .url
        .parse()
        .map_err(|_| entry_error(id.clone(), &field("url"), String::from("Not a valid URL"), request_id))?;
    if let Some(authority) = uri.authority() {
        if !authority.as_str().eq_ignore_ascii_case(host) {
            return Err(entry_error(
                id,
                &field("url"),
                String::from("Sub-requests must address this server; use a path such as /api/users"),
                request_id,
            ));
        }
    } else if !sub.url.starts_with('/') || sub.url.starts_with("//") {
        return Err(entry_error(id, &field("url"), String::from("Expected a path starting with /"), request_id));
    }
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    if is_batch_path(uri.path()) {
        return Err(entry_error(id, &field("url"), String::from("A batch cannot contain another batch"), request_id));
    }
    let mut builder = Request::builder().method(method.clone()).uri(&path_and_query);
    if let Some(headers) = builder.headers_mut() {
        copy_headers(parent, &sub.headers, headers);
    }
    let body = match &sub.body {
        Some(value) => {
            if let Some(headers) = builder.headers_mut() {
                headers.insert("content-type", HeaderValue::from_static("application/json"));
            }
            Body::from(serde_json::to_vec(value).unwrap_or_default())
        }
        None => Body::empty(),
    };
    let mut request = builder
        .body(body)
        .map_err(|e| entry_error(id.clone(), &format!("requests[{index}]"), e.to_string(), request_id))?;
    let mut extensions = parent.extensions.clone();
    extensions.insert(RequestId(format!("{request_id}-{index}")));
    *request.extensions_mut() = extensions;
    let safe = method == Method::GET || method == Method::HEAD;
    Ok(Prepared { id, safe, method, path: uri.path().to_string(), request })
}

fn copy_headers(
    parent: &axum::http::request::Parts,
    extra: &Option<std::collections::BTreeMap<String, String>>,
    out: &mut HeaderMap,
) {
    for (name, value) in extra.iter().flatten() {
        let lower = name.to_ascii_lowercase();
        if (INHERITED.contains(&lower.as_str()) && lower != "x-api-version")
            || matches!(lower.as_str(), "host" | "content-length" | "transfer-encoding" | "connection")
        {
            continue;
        }
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(lower.as_bytes()), HeaderValue::from_str(value)) {
            out.insert(n, v);
        }
    }
    for name in INHERITED {
        if out.contains_key(*name) {
            continue;
        }
        if let Some(value) = parent.headers.get(*name) {
            out.insert(*name, value.clone());
        }
    }
}

async fn execute(state: &BatchState, p: Prepared) -> SubResponse {
    let request_id = p.request.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let response = state.core.answer(p.request).await;
    let dialect = state.dialects.for_path(&p.path);
    let response = nexus_web::edge::render_error(response, dialect, &p.path, &p.method, &request_id);
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), MAX_SUB_BODY).await.unwrap_or_default();
    let body = if bytes.is_empty() || status == StatusCode::NO_CONTENT {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
    };
    SubResponse { id: p.id, status: status.as_u16(), body }
}

/// Run several requests in one (answered by the conventions service; this route documents it).
#[utoipa::path(post, path = "/api/batch", tag = "batch", request_body = BatchBody,
    responses((status = 200, body = BatchResponse), (status = 400, description = "VALIDATION_ERROR")))]
async fn batch_route() -> Result<StatusCode, ApiError> {
    Err(ApiError::internal("batch requests are answered by the conventions service"))
}

pub fn routes() -> nexus_web::Routes {
    OpenApiRouter::new().routes(routes!(batch_route))
}
