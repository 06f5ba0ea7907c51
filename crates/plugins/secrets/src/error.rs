//! What can go wrong in the secrets manager, and how it is told (never with a value or key).

use nexus_kernel::db::StorageError;
use nexus_kernel::error::{ErrorCode, Failure, FieldError};

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("validation failed")]
    Invalid(Vec<FieldError>),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("secret already exists")]
    Exists,
    #[error("version mismatch: the secret is at version {current}, not {expected}")]
    VersionMismatch { expected: i64, current: i64 },
    #[error("the secret was changed concurrently; retry")]
    Concurrent,
    #[error("permission denied: `{permission}` is not granted on `{path}`")]
    Denied { permission: String, path: String },
    #[error("permission denied: missing permission `{0}`")]
    Forbidden(String),
    #[error("admin access required")]
    AdminRequired,
    #[error("secret integrity check failed: the stored data was modified or moved; the value is withheld")]
    Integrity,
    #[error("the audit log cannot be written, so the secret is not returned; retry later")]
    AuditUnavailable,
    #[error("the master key was rotated while this server was running; restart it with the new master key")]
    StaleMasterKey,
    /// A problem with the master key at start-up or during rotation (never shows the key).
    #[error("{0}")]
    MasterKey(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl SecretsError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        SecretsError::Invalid(vec![FieldError::new(field, message)])
    }

    /// Whether this is a refusal of the caller (as opposed to a failure of the server).
    pub fn is_refusal(&self) -> bool {
        matches!(self, SecretsError::Denied { .. } | SecretsError::Forbidden(_) | SecretsError::AdminRequired)
    }
}

impl From<SecretsError> for Failure {
    fn from(err: SecretsError) -> Self {
        match err {
            SecretsError::InvalidPath(reason) => {
                Failure::new(ErrorCode::ValidationError, format!("invalid secret path: {reason}"))
                    .with_details(vec![FieldError::new("path", reason)])
            }
            SecretsError::Invalid(details) => Failure::invalid(details),
            SecretsError::NotFound(what) => Failure::not_found(format!("{what} not found")),
            e @ (SecretsError::Exists | SecretsError::Concurrent) => Failure::conflict(e.to_string()),
            e @ SecretsError::VersionMismatch { current, .. } => {
                Failure::conflict(e.to_string()).with_extra("current_version", current)
            }
            e @ (SecretsError::Denied { .. } | SecretsError::Forbidden(_) | SecretsError::AdminRequired) => {
                Failure::new(ErrorCode::PermissionDenied, e.to_string())
            }
            // A stored ciphertext that fails authentication is reported as a conflict with the
            // stored state (see docs/secrets.md), never as a 5xx or a garbage value.
            e @ SecretsError::Integrity => Failure::conflict(e.to_string()),
            e @ (SecretsError::AuditUnavailable | SecretsError::StaleMasterKey) => Failure::unavailable(e.to_string()),
            SecretsError::MasterKey(e) => Failure::internal(e),
            SecretsError::Storage(e) => Failure::internal(e),
        }
    }
}

impl From<nexus_kernel::principal::Denied> for SecretsError {
    fn from(d: nexus_kernel::principal::Denied) -> Self {
        SecretsError::Forbidden(d.0)
    }
}
