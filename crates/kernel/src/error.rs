//! The error vocabulary every domain shares, below HTTP: machine-readable codes (part of the
//! API contract, see `docs/errors.md`), field errors, and [`Failure`], the one error shape that
//! HTTP, WebSocket RPC, batch and WebAssembly callers are all told. Each domain keeps its own
//! typed error (`thiserror`) and converts it into a [`Failure`]; each surface renders that once.

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
    /// A WebAssembly plugin failed (trapped, ran out of memory); the body names the plugin.
    PluginError,
    /// A WebAssembly plugin ran past its time limit. Sent as `PLUGIN_ERROR` with 504.
    PluginTimeout,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 18] = [
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
        ErrorCode::PluginError,
        ErrorCode::PluginTimeout,
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
            // One code for the client whatever went wrong inside the plugin; the status tells
            // a timeout (504) from a failure (500).
            ErrorCode::PluginError | ErrorCode::PluginTimeout => "PLUGIN_ERROR",
        }
    }

    /// The HTTP status this code is sent with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::AuthenticationRequired | ErrorCode::InvalidCredentials | ErrorCode::TokenExpired => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::ResourceNotFound => 404,
            ErrorCode::ValidationError => 400,
            ErrorCode::Conflict => 409,
            ErrorCode::RateLimitExceeded => 429,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::PreconditionFailed => 412,
            ErrorCode::NotImplemented => 501,
            ErrorCode::InternalError => 500,
            ErrorCode::ServiceUnavailable => 503,
            ErrorCode::PluginError => 500,
            ErrorCode::PluginTimeout => 504,
        }
    }

    /// The code for a status produced outside any handler (routing, body limit, timeout).
    pub fn for_status(status: u16) -> Self {
        match status {
            401 => ErrorCode::AuthenticationRequired,
            403 => ErrorCode::PermissionDenied,
            404 => ErrorCode::ResourceNotFound,
            409 => ErrorCode::Conflict,
            429 => ErrorCode::RateLimitExceeded,
            405 => ErrorCode::MethodNotAllowed,
            413 => ErrorCode::PayloadTooLarge,
            415 => ErrorCode::UnsupportedMediaType,
            408 => ErrorCode::RequestTimeout,
            412 => ErrorCode::PreconditionFailed,
            501 => ErrorCode::NotImplemented,
            503 => ErrorCode::ServiceUnavailable,
            400..=499 => ErrorCode::ValidationError,
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
            ErrorCode::PluginError => "A WebAssembly plugin failed (trapped or exceeded its memory); the body names it",
            ErrorCode::PluginTimeout => "A WebAssembly plugin exceeded its time limit (sent as PLUGIN_ERROR with 504)",
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

/// A domain operation's failure as any caller is told it: a code, a safe message, the invalid
/// fields, and extra top-level fields (for example `retry_after` on a 429).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub code: ErrorCode,
    /// Safe to show: never a secret, credential or internal detail.
    pub message: String,
    pub details: Vec<FieldError>,
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Failure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: Vec::new(), extra: serde_json::Map::new() }
    }

    pub fn with_details(mut self, details: Vec<FieldError>) -> Self {
        self.details = details;
        self
    }

    pub fn with_extra(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    /// A 400 naming every invalid field.
    pub fn invalid(details: Vec<FieldError>) -> Self {
        Self { details, ..Self::new(ErrorCode::ValidationError, "Request validation failed") }
    }

    /// A 400 whose message says what is wrong.
    pub fn invalid_message(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, message)
    }

    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::invalid(vec![FieldError::new(field, message)])
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceNotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// The caller lacks `permission`.
    pub fn forbidden(permission: &str) -> Self {
        Self::new(ErrorCode::PermissionDenied, format!("This operation requires the `{permission}` permission"))
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ServiceUnavailable, message)
    }

    /// A 500 whose cause is logged but never shown.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::InternalError, "An internal error occurred")
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for Failure {}

fn overloaded(err: &crate::db::StorageError) -> Failure {
    tracing::warn!(error = %err, "the database is overloaded");
    Failure::new(ErrorCode::ServiceUnavailable, "The database is busy; retry shortly").with_extra("retry_after", 1)
}

impl From<crate::db::StorageError> for Failure {
    fn from(err: crate::db::StorageError) -> Self {
        use crate::db::StorageError;
        match err {
            // Every connection stayed busy: the server is overloaded, not broken. The client
            // may retry; the operator sees it in the log.
            StorageError::Query(sqlx::Error::PoolTimedOut) | StorageError::Timeout(_) => overloaded(&err),
            // SQLite's write lock stayed taken past the busy timeout (`SQLITE_BUSY`, or
            // `SQLITE_LOCKED` in shared cache): the same overload, one writer at a time.
            StorageError::Query(sqlx::Error::Database(ref db))
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                    && matches!(
                        db.code().as_deref().and_then(|c| c.parse::<i32>().ok()).map(|c| c & 0xff),
                        Some(5 | 6)
                    ) =>
            {
                overloaded(&err)
            }
            StorageError::Read(rusqlite::Error::SqliteFailure(ref e, _))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
            {
                overloaded(&err)
            }
            // The request is well formed; this server's keys cannot serve it. The message
            // names the key, never its value.
            StorageError::Sealing(e) => Failure::new(ErrorCode::Conflict, e.to_string()),
            err => Failure::internal(err),
        }
    }
}
