//! What can go wrong in the media library, and how the API says so.

use nexus_kernel::db::StorageError;
use nexus_kernel::error::FieldError;

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

impl From<nexus_kernel::principal::Denied> for MediaError {
    fn from(d: nexus_kernel::principal::Denied) -> Self {
        MediaError::Forbidden(d.0)
    }
}
