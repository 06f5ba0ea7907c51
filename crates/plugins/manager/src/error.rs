//! What can go wrong managing plugins.

use nexus_kernel::db::StorageError;
use nexus_kernel::error::{ErrorCode, Failure, FieldError};

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("plugin `{0}` not found")]
    NotFound(String),
    #[error("plugin `{0}` is essential and cannot be disabled")]
    Essential(String),
    #[error("plugin `{plugin}` is needed by enabled plugins: {}", dependents.join(", "))]
    HasDependents { plugin: String, dependents: Vec<String> },
    #[error("plugin `{plugin}` needs disabled plugins: {}", missing.join(", "))]
    NeedsDisabled { plugin: String, missing: Vec<String> },
    #[error("plugin `{0}` is built into the server and cannot be uninstalled; disable it instead")]
    Builtin(String),
    #[error("{0}")]
    NotAvailable(String),
    #[error("validation failed")]
    Invalid(Vec<FieldError>),
    #[error("missing permission {0}")]
    Forbidden(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// What the installer refused or failed, as it tells it.
    #[error("{0}")]
    Install(Failure),
}

impl From<nexus_kernel::principal::Denied> for ManagerError {
    fn from(d: nexus_kernel::principal::Denied) -> Self {
        ManagerError::Forbidden(d.0)
    }
}

impl From<ManagerError> for Failure {
    fn from(err: ManagerError) -> Self {
        let message = err.to_string();
        match err {
            ManagerError::NotFound(_) => Failure::not_found(message),
            ManagerError::HasDependents { dependents, .. } => {
                Failure::conflict(message).with_extra("dependents", dependents)
            }
            ManagerError::NeedsDisabled { missing, .. } => {
                Failure::conflict(message).with_extra("dependencies", missing)
            }
            ManagerError::Essential(_) | ManagerError::Builtin(_) => Failure::conflict(message),
            ManagerError::NotAvailable(_) => Failure::new(ErrorCode::NotImplemented, message),
            ManagerError::Invalid(details) => Failure::invalid(details),
            ManagerError::Forbidden(permission) => Failure::forbidden(&permission),
            ManagerError::Storage(e) => e.into(),
            ManagerError::Install(failure) => failure,
        }
    }
}
