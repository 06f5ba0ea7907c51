//! What can go wrong with webhooks, and how the API says so.

use nexus_kernel::db::StorageError;
use nexus_web::{ApiError, FieldError};

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

impl From<WebhookError> for ApiError {
    fn from(err: WebhookError) -> Self {
        match err {
            WebhookError::NotFound => ApiError::not_found("Webhook not found"),
            WebhookError::Invalid(details) => ApiError::invalid_fields(details),
            WebhookError::Forbidden(permission) => {
                ApiError::forbidden(format!("This operation requires the `{permission}` permission"))
            }
            WebhookError::Identity(e) => e.into(),
            WebhookError::Storage(e) => ApiError::internal(e),
        }
    }
}

impl From<nexus_kernel::principal::Denied> for WebhookError {
    fn from(d: nexus_kernel::principal::Denied) -> Self {
        WebhookError::Forbidden(d.0)
    }
}
