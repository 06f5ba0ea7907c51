//! What can go wrong in identity and access, and how each surface is told.

use nexus_kernel::db::StorageError;
use nexus_kernel::error::{ErrorCode, Failure, FieldError};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("authentication required")]
    Unauthenticated,
    #[error("token expired")]
    TokenExpired,
    #[error("invalid or revoked token")]
    InvalidToken,
    #[error("invalid or revoked API key")]
    InvalidApiKey,
    #[error("API key expired")]
    ApiKeyExpired,
    #[error("account is temporarily locked after repeated failed logins")]
    Locked,
    #[error("account is {0}")]
    Inactive(String),
    #[error("too many login attempts")]
    Throttled { retry_after: u64, limit: u32 },
    #[error("missing permission {0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("validation failed")]
    Invalid(Vec<FieldError>),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl IdentityError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        IdentityError::Invalid(vec![FieldError::new(field, message)])
    }
}

impl From<IdentityError> for Failure {
    fn from(err: IdentityError) -> Self {
        match err {
            IdentityError::InvalidCredentials => Failure::new(ErrorCode::InvalidCredentials, "invalid credentials"),
            IdentityError::Unauthenticated => {
                Failure::new(ErrorCode::AuthenticationRequired, "Authentication required")
            }
            IdentityError::TokenExpired => {
                Failure::new(ErrorCode::TokenExpired, "Your session has expired. Please login again.")
            }
            IdentityError::InvalidToken => Failure::new(ErrorCode::AuthenticationRequired, "Invalid or revoked token"),
            IdentityError::InvalidApiKey => {
                Failure::new(ErrorCode::AuthenticationRequired, "Invalid or revoked API key")
            }
            IdentityError::ApiKeyExpired => Failure::new(ErrorCode::TokenExpired, "API key has expired"),
            IdentityError::Locked => Failure::new(
                ErrorCode::InvalidCredentials,
                "account is temporarily locked after repeated failed logins",
            ),
            IdentityError::Inactive(status) => {
                Failure::new(ErrorCode::InvalidCredentials, format!("account is {status}"))
            }
            IdentityError::Throttled { retry_after, limit } => Failure::new(
                ErrorCode::RateLimitExceeded,
                format!("Too many login attempts. Please retry after {retry_after} seconds."),
            )
            .with_extra("retry_after", retry_after)
            .with_extra("limit", limit)
            .with_extra("window", "1m"),
            IdentityError::Forbidden(permission) => Failure::new(
                ErrorCode::PermissionDenied,
                format!("This operation requires the `{permission}` permission"),
            ),
            IdentityError::NotFound(what) => Failure::not_found(format!("{what} not found")),
            IdentityError::Conflict(message) => Failure::conflict(message),
            IdentityError::Invalid(details) => Failure::invalid(details),
            IdentityError::Storage(e) => Failure::internal(e),
            IdentityError::Internal(e) => Failure::internal(e),
        }
    }
}

impl From<nexus_kernel::principal::Denied> for IdentityError {
    fn from(d: nexus_kernel::principal::Denied) -> Self {
        IdentityError::Forbidden(d.0)
    }
}
