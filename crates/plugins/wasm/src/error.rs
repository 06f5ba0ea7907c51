//! What can go wrong installing and running WebAssembly plugins.

use nexus_kernel::db::StorageError;
use nexus_kernel::error::{ErrorCode, Failure};

use crate::runtime::CallError;

#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// The package, its manifest, its signature or the request.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// A route collision, a missing dependency, an id taken, a version not newer.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// The plugin's `init` refused its configuration.
    #[error("plugin `{plugin}` refused to start: {message}")]
    Init { plugin: String, message: String },
    #[error("plugin `{plugin}` {error}")]
    Call { plugin: String, error: CallError },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<WasmError> for Failure {
    fn from(err: WasmError) -> Self {
        let message = err.to_string();
        match err {
            WasmError::Invalid(_) | WasmError::Init { .. } => Failure::invalid_message(message),
            WasmError::NotFound(_) => Failure::not_found(message),
            WasmError::Conflict(_) => Failure::conflict(message),
            WasmError::Unavailable(_) => Failure::unavailable(message),
            WasmError::Call { plugin, error } => {
                let code = match error {
                    CallError::Timeout(_) => ErrorCode::PluginTimeout,
                    CallError::Busy => ErrorCode::ServiceUnavailable,
                    _ => ErrorCode::PluginError,
                };
                Failure::new(code, message).with_extra("plugin_id", plugin)
            }
            WasmError::Storage(e) => Failure::internal(e),
        }
    }
}
