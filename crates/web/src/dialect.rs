//! The three ways an error is written, chosen by which surface owns the path
//! (`../shared/DESIGN.md`, "the path map").

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nexus_kernel::clock::Timestamp;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ErrorCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `{"error": {"code", "message", "details", "request_id", "timestamp"}}`
    Framework,
    /// `{"success": false, "error": "Not Found", "message", "code", "request_id"}`
    V1,
    /// The framework shape with the media seed's codes and a `documentation_url`.
    Media,
}

/// Paths owned by the media platform surface (everything else under `/api` is the framework's).
const MEDIA_PREFIXES: &[&str] = &[
    "/auth/",
    "/security/quantum/",
    "/webhooks/register",
    "/api/media/",
    "/api/ai/",
    "/api/voice/",
    "/api/xr/",
    "/api/web3/",
    "/api/arr/",
];

impl Dialect {
    pub fn for_path(path: &str) -> Self {
        if path == "/health" || path == "/api/v1" || path.starts_with("/api/v1/") {
            Dialect::V1
        } else if path == "/metrics" || MEDIA_PREFIXES.iter().any(|p| path.starts_with(p)) {
            Dialect::Media
        } else {
            Dialect::Framework
        }
    }

    /// The response for `error` in this dialect.
    pub fn render(self, error: &ApiError, request_id: &str) -> Response {
        let body = self.body(error, request_id);
        let mut response = (error.status, axum::Json(body)).into_response();
        for (name, value) in &error.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }

    pub fn body(self, error: &ApiError, request_id: &str) -> Value {
        let timestamp = Timestamp::now().to_rfc3339();
        match self {
            Dialect::Framework => {
                let mut inner = Map::new();
                inner.insert("code".into(), error.code.as_str().into());
                inner.insert("message".into(), error.message.clone().into());
                if !error.details.is_empty() {
                    inner.insert("details".into(), json!(error.details));
                }
                inner.extend(error.extra.clone());
                inner.insert("request_id".into(), request_id.into());
                inner.insert("timestamp".into(), timestamp.into());
                json!({ "error": inner })
            }
            Dialect::Media => {
                let code = media_code(error.code);
                let mut inner = Map::new();
                inner.insert("code".into(), code.into());
                inner.insert("message".into(), error.message.clone().into());
                if !error.details.is_empty() {
                    let text: Vec<String> =
                        error.details.iter().map(|d| format!("{}: {}", d.field, d.message)).collect();
                    inner.insert("details".into(), text.join("; ").into());
                }
                inner.extend(error.extra.clone());
                inner.insert("timestamp".into(), timestamp.into());
                inner.insert("request_id".into(), request_id.into());
                inner.insert("documentation_url".into(), format!("/api/errors/{code}").into());
                json!({ "error": inner })
            }
            Dialect::V1 => {
                let mut body = Map::new();
                body.insert("success".into(), false.into());
                body.insert("error".into(), reason(error.status).into());
                body.insert("message".into(), error.message.clone().into());
                body.insert("code".into(), error.code.as_str().into());
                if !error.details.is_empty() {
                    body.insert("details".into(), json!(error.details));
                }
                body.extend(error.extra.clone());
                body.insert("request_id".into(), request_id.into());
                Value::Object(body)
            }
        }
    }
}

/// The media seed's code for `code`, where its table has one.
pub fn media_code(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::ValidationError => "INVALID_REQUEST",
        ErrorCode::AuthenticationRequired | ErrorCode::InvalidCredentials => "UNAUTHORIZED",
        ErrorCode::PermissionDenied => "FORBIDDEN",
        ErrorCode::ResourceNotFound => "NOT_FOUND",
        ErrorCode::RateLimitExceeded => "RATE_LIMITED",
        other => other.as_str(),
    }
}

/// The canonical reason phrase (`Not Found`), which the v1 dialect sends as `error`.
pub fn reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_surface() {
        assert_eq!(Dialect::for_path("/health"), Dialect::V1);
        assert_eq!(Dialect::for_path("/api/v1/secrets/a/b"), Dialect::V1);
        assert_eq!(Dialect::for_path("/api/users"), Dialect::Framework);
        assert_eq!(Dialect::for_path("/api/v2/users"), Dialect::Framework);
        assert_eq!(Dialect::for_path("/v2/auth/login"), Dialect::Framework);
        assert_eq!(Dialect::for_path("/auth/login"), Dialect::Media);
        assert_eq!(Dialect::for_path("/api/media/Items"), Dialect::Media);
        assert_eq!(Dialect::for_path("/api/auth/login"), Dialect::Framework);
    }

    #[test]
    fn v1_carries_reason_and_code() {
        let body = Dialect::V1.body(&ApiError::not_found("secret not found"), "req_1");
        assert_eq!(body["error"], "Not Found");
        assert_eq!(body["message"], "secret not found");
        assert_eq!(body["code"], "RESOURCE_NOT_FOUND");
        assert_eq!(body["success"], false);
    }
}
