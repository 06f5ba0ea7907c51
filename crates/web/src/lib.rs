//! Nexus HTTP plumbing shared by every surface: the one error type and its dialects, extractors
//! that reject bad input in those dialects, the edge middleware (request id, error rendering,
//! metrics), and the API documentation.

pub mod client;
pub mod conditional;
pub mod context;
pub mod dialect;
pub mod docs;
pub mod edge;
pub mod error;
pub mod extract;
pub mod list;
pub mod plugin;

pub use client::{Client, ClientMeta};
pub use dialect::Dialect;
pub use error::{ApiError, ErrorCode, FieldError};
pub use extract::{Json, Path, Query};
pub use list::ListRequest;

/// The id of a batch sub-request (`<batch's id>-<index>`), in its extensions. Any other
/// request's id is in its [`context`].
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Routes a plugin contributes, with their OpenAPI description.
pub type Routes = utoipa_axum::router::OpenApiRouter;
