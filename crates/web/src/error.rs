//! The one error type every handler returns. It knows its status and code; how it is written
//! out depends on the surface that owns the path, and is decided once, at the edge.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub use nexus_kernel::error::{ErrorCode, Failure, FieldError};

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
            status: status_of(code),
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

/// The HTTP status `code` is sent with.
pub fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl From<Failure> for ApiError {
    fn from(f: Failure) -> Self {
        // A failure that says when to retry says so in the standard header too.
        let headers = match f.extra.get("retry_after").and_then(serde_json::Value::as_u64) {
            Some(secs) => vec![(HeaderName::from_static("retry-after"), HeaderValue::from(secs))],
            None => Vec::new(),
        };
        Self {
            status: status_of(f.code),
            code: f.code,
            message: f.message,
            details: f.details,
            extra: f.extra,
            headers,
        }
    }
}

/// Lets handlers `?` a domain error `$t` that converts into a [`Failure`]: the one place the
/// domain's error meets HTTP.
#[macro_export]
macro_rules! http_error {
    ($t:ty) => {
        impl From<$t> for $crate::ApiError {
            fn from(err: $t) -> Self {
                $crate::ApiError::from(::nexus_kernel::error::Failure::from(err))
            }
        }
    };
}

impl From<nexus_kernel::principal::Denied> for ApiError {
    fn from(d: nexus_kernel::principal::Denied) -> Self {
        Failure::from(d).into()
    }
}

impl From<nexus_kernel::db::StorageError> for ApiError {
    fn from(err: nexus_kernel::db::StorageError) -> Self {
        ApiError::internal(err)
    }
}
