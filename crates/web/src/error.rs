//! The one error type every handler returns. It knows its status and code; how it is written
//! out depends on the surface that owns the path, and is decided once, at the edge.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Machine-readable error codes: part of the API contract (see `docs/errors.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    AuthenticationRequired,
    InvalidCredentials,
    TokenExpired,
    PermissionDenied,
    ResourceNotFound,
    ValidationError,
    Conflict,
    RateLimitExceeded,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    RequestTimeout,
    PreconditionFailed,
    NotImplemented,
    InternalError,
    ServiceUnavailable,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::AuthenticationRequired,
        ErrorCode::InvalidCredentials,
        ErrorCode::TokenExpired,
        ErrorCode::PermissionDenied,
        ErrorCode::ResourceNotFound,
        ErrorCode::ValidationError,
        ErrorCode::Conflict,
        ErrorCode::RateLimitExceeded,
        ErrorCode::MethodNotAllowed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::RequestTimeout,
        ErrorCode::PreconditionFailed,
        ErrorCode::NotImplemented,
        ErrorCode::InternalError,
        ErrorCode::ServiceUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AuthenticationRequired => "AUTHENTICATION_REQUIRED",
            ErrorCode::InvalidCredentials => "INVALID_CREDENTIALS",
            ErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::ResourceNotFound => "RESOURCE_NOT_FOUND",
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::PreconditionFailed => "PRECONDITION_FAILED",
            ErrorCode::NotImplemented => "NOT_IMPLEMENTED",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
        }
    }

    /// The status this code is sent with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::AuthenticationRequired | ErrorCode::InvalidCredentials | ErrorCode::TokenExpired => {
                StatusCode::UNAUTHORIZED
            }
            ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorCode::ResourceNotFound => StatusCode::NOT_FOUND,
            ErrorCode::ValidationError => StatusCode::BAD_REQUEST,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::RateLimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ErrorCode::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The code for a status produced outside any handler (routing, body limit, timeout).
    pub fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::UNAUTHORIZED => ErrorCode::AuthenticationRequired,
            StatusCode::FORBIDDEN => ErrorCode::PermissionDenied,
            StatusCode::NOT_FOUND => ErrorCode::ResourceNotFound,
            StatusCode::CONFLICT => ErrorCode::Conflict,
            StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimitExceeded,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            StatusCode::REQUEST_TIMEOUT => ErrorCode::RequestTimeout,
            StatusCode::PRECONDITION_FAILED => ErrorCode::PreconditionFailed,
            StatusCode::NOT_IMPLEMENTED => ErrorCode::NotImplemented,
            StatusCode::SERVICE_UNAVAILABLE => ErrorCode::ServiceUnavailable,
            s if s.is_client_error() => ErrorCode::ValidationError,
            _ => ErrorCode::InternalError,
        }
    }

    /// What the code means, for the error catalogue.
    pub fn description(self) -> &'static str {
        match self {
            ErrorCode::AuthenticationRequired => "No valid authentication provided",
            ErrorCode::InvalidCredentials => "Invalid username or password",
            ErrorCode::TokenExpired => "The token has expired; log in again or refresh it",
            ErrorCode::PermissionDenied => "The caller lacks a permission this operation requires",
            ErrorCode::ResourceNotFound => "The requested resource or route does not exist",
            ErrorCode::ValidationError => "The request is malformed or a field is invalid; see details",
            ErrorCode::Conflict => "The resource already exists or changed concurrently",
            ErrorCode::RateLimitExceeded => "Too many requests; retry after the time given",
            ErrorCode::MethodNotAllowed => "The route exists but not for this HTTP method; see Allow",
            ErrorCode::PayloadTooLarge => "The request body exceeds the configured limit",
            ErrorCode::UnsupportedMediaType => "The request body's Content-Type is not accepted",
            ErrorCode::RequestTimeout => "The request took longer than the server allows",
            ErrorCode::PreconditionFailed => "A conditional request header did not match",
            ErrorCode::NotImplemented => "This feature is not available in this build",
            ErrorCode::InternalError => "An unexpected server error; quote the request id",
            ErrorCode::ServiceUnavailable => "A dependency is unavailable; retry later",
        }
    }
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// An error on its way to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    /// Safe to show: never a secret, credential or internal detail.
    pub message: String,
    pub details: Vec<FieldError>,
    /// Extra top-level fields of the error object (for example `retry_after` on a 429).
    pub extra: serde_json::Map<String, serde_json::Value>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: code.status(),
            code,
            message: message.into(),
            details: Vec::new(),
            extra: serde_json::Map::new(),
            headers: Vec::new(),
        }
    }

    pub fn with_details(mut self, details: Vec<FieldError>) -> Self {
        self.details = details;
        self
    }

    pub fn with_extra(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceNotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::AuthenticationRequired, message)
    }

    /// A 400 naming one invalid field.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let detail = FieldError::new(field, message);
        Self::new(ErrorCode::ValidationError, "Request validation failed").with_details(vec![detail])
    }

    /// A 400 naming every invalid field.
    pub fn invalid_fields(details: Vec<FieldError>) -> Self {
        Self::new(ErrorCode::ValidationError, "Request validation failed").with_details(details)
    }

    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotImplemented, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ServiceUnavailable, message)
    }

    /// A 500 whose cause is logged (with the request id) but never sent to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::InternalError, "An internal error occurred")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The body is written by the edge middleware, which knows the path and so the dialect.
        let mut response = self.status.into_response();
        for (name, value) in &self.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        response.extensions_mut().insert(self);
        response
    }
}

impl From<nexus_kernel::db::StorageError> for ApiError {
    fn from(err: nexus_kernel::db::StorageError) -> Self {
        ApiError::internal(err)
    }
}
