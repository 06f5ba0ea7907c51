//! What can go wrong in the operations API, and how every surface is told.

use nexus_kernel::db::StorageError;
use nexus_kernel::error::{Failure, FieldError};
use nexus_kernel::tasks::TaskError;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("missing permission {0}")]
    Forbidden(String),
    #[error("validation failed")]
    Invalid(Vec<FieldError>),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Identity(#[from] nexus_identity::IdentityError),
}

impl OpsError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        OpsError::Invalid(vec![FieldError::new(field, message)])
    }
}

impl From<nexus_kernel::principal::Denied> for OpsError {
    fn from(d: nexus_kernel::principal::Denied) -> Self {
        OpsError::Forbidden(d.0)
    }
}

impl From<nexus_kernel::cache::CacheError> for OpsError {
    fn from(e: nexus_kernel::cache::CacheError) -> Self {
        match e {
            // A well-formed request this server cannot serve as configured.
            nexus_kernel::cache::CacheError::NoL2 => OpsError::Conflict(e.to_string()),
            nexus_kernel::cache::CacheError::Redis(_) => OpsError::Unavailable(e.to_string()),
        }
    }
}

impl From<OpsError> for Failure {
    fn from(err: OpsError) -> Self {
        match err {
            OpsError::Forbidden(permission) => Failure::forbidden(&permission),
            OpsError::Invalid(details) => Failure::invalid(details),
            OpsError::NotFound(what) => Failure::not_found(format!("{what} not found")),
            OpsError::Conflict(message) => Failure::conflict(message),
            OpsError::Unavailable(message) => Failure::unavailable(message),
            OpsError::Task(e) => e.into(),
            OpsError::Storage(e) => e.into(),
            OpsError::Identity(e) => e.into(),
        }
    }
}
