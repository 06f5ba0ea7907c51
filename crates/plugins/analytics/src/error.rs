//! What can go wrong with analytics, and how the API says so.

use nexus_kernel::db::StorageError;
use nexus_kernel::error::{ErrorCode, Failure, FieldError};
use nexus_kernel::group_commit::GroupCommitError;

use crate::event::EventError;

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("missing permission {0}")]
    Forbidden(String),
    #[error("validation failed")]
    Invalid(Vec<FieldError>),
    /// Every event of the request was refused.
    #[error("every event was refused")]
    Refused(Vec<EventError>),
    #[error("{0}")]
    TooLarge(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("events could not be stored: {0}")]
    Write(#[from] GroupCommitError),
}

impl AnalyticsError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        AnalyticsError::Invalid(vec![FieldError::new(field, message)])
    }
}

impl From<AnalyticsError> for Failure {
    fn from(err: AnalyticsError) -> Self {
        match err {
            AnalyticsError::Forbidden(permission) => Failure::forbidden(&permission),
            AnalyticsError::Invalid(details) => Failure::invalid(details),
            AnalyticsError::Refused(errors) => {
                let details =
                    errors.iter().map(|e| FieldError::new(format!("[{}].{}", e.index, e.field), &e.message)).collect();
                Failure::new(ErrorCode::ValidationError, "Every event was refused")
                    .with_details(details)
                    .with_extra("errors", serde_json::to_value(&errors).unwrap_or_default())
            }
            AnalyticsError::TooLarge(message) => Failure::new(ErrorCode::PayloadTooLarge, message),
            AnalyticsError::Storage(e) => Failure::internal(e),
            AnalyticsError::Write(GroupCommitError::Stopped) => {
                Failure::unavailable("Analytics ingestion is shutting down")
            }
            AnalyticsError::Write(e) => Failure::internal(e),
        }
    }
}

impl From<nexus_kernel::principal::Denied> for AnalyticsError {
    fn from(d: nexus_kernel::principal::Denied) -> Self {
        AnalyticsError::Forbidden(d.0)
    }
}
