//! What can go wrong in the media library, and how the API says so.

use axum::http::StatusCode;
use nexus_kernel::db::StorageError;
use nexus_web::{ApiError, ErrorCode, FieldError};

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("validation failed")]
    Invalid(Vec<FieldError>),
    #[error("missing permission {0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    /// Anything but `static=true` asks for a transcode, which Nexus does not do.
    #[error("transcoding is not supported")]
    TranscodingUnsupported,
    /// No server is configured for this *arr service.
    #[error("{0} is not configured")]
    ArrNotConfigured(String),
    /// The configured *arr server could not be reached or did not answer in time.
    #[error("{0}")]
    ArrUnreachable(String),
    #[error(transparent)]
    Identity(#[from] nexus_identity::IdentityError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("file system: {0}")]
    Io(#[from] std::io::Error),
}

impl MediaError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        MediaError::Invalid(vec![FieldError::new(field, message)])
    }
}

impl From<MediaError> for ApiError {
    fn from(err: MediaError) -> Self {
        match err {
            MediaError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            MediaError::Invalid(details) => ApiError::invalid_fields(details),
            MediaError::Forbidden(permission) => {
                ApiError::forbidden(format!("This operation requires the `{permission}` permission"))
            }
            MediaError::Conflict(message) => ApiError::conflict(message),
            MediaError::TranscodingUnsupported => {
                ApiError::not_implemented("Transcoding is not supported: request the original file with static=true")
            }
            MediaError::ArrNotConfigured(service) => ApiError::unavailable(format!(
                "{service} is not configured: set media.arr.{service}.url (NEXUS_MEDIA__ARR__{}__URL)",
                service.to_ascii_uppercase()
            )),
            MediaError::ArrUnreachable(why) => {
                let mut e = ApiError::new(ErrorCode::ServiceUnavailable, why);
                e.status = StatusCode::BAD_GATEWAY;
                e
            }
            MediaError::Identity(e) => e.into(),
            MediaError::Storage(e) => ApiError::internal(e),
            MediaError::Io(e) => ApiError::internal(e),
        }
    }
}
