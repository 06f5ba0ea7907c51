//! What can go wrong with webhooks, and how the API says so.

use nexus_kernel::db::StorageError;
use nexus_kernel::error::{ErrorCode, Failure, FieldError};

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook not found")]
    NotFound,
    #[error("validation failed")]
    Invalid(Vec<FieldError>),
    #[error("missing permission {0}")]
    Forbidden(String),
    #[error(transparent)]
    Identity(#[from] nexus_identity::IdentityError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl WebhookError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        WebhookError::Invalid(vec![FieldError::new(field, message)])
    }
}

impl From<WebhookError> for Failure {
    fn from(err: WebhookError) -> Self {
        match err {
            WebhookError::NotFound => Failure::not_found("Webhook not found"),
            WebhookError::Invalid(details) => Failure::invalid(details),
            WebhookError::Forbidden(permission) => Failure::new(
                ErrorCode::PermissionDenied,
                format!("This operation requires the `{permission}` permission"),
            ),
            WebhookError::Identity(e) => e.into(),
            WebhookError::Storage(e) => e.into(),
        }
    }
}

impl From<nexus_kernel::principal::Denied> for WebhookError {
    fn from(d: nexus_kernel::principal::Denied) -> Self {
        WebhookError::Forbidden(d.0)
    }
}
