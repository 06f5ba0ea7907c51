//! The document database: MongoDB-style collections over SQLite and PostgreSQL. Filters,
//! sorting, paging, counting and the common `$group` stages are compiled to SQL; the engine
//! evaluates in Rust only what SQL cannot express exactly. See `docs/documents.md`.

pub mod engine;
mod routes;
pub mod schema;
pub mod service;
pub mod sql;
#[cfg(test)]
mod sql_tests;
pub mod store;

use std::sync::Arc;

use nexus_kernel::Kernel;

pub use service::{DocError, Documents};

/// Migrations of the document tables, for each backend.
pub static MIGRATIONS: nexus_kernel::db::MigrationSet = nexus_kernel::db::MigrationSet {
    owner: "documents",
    sqlite: sqlx::migrate!("./migrations/sqlite"),
    postgres: sqlx::migrate!("./migrations/postgres"),
};

/// Starts the service.
pub fn start(kernel: Arc<Kernel>) -> Arc<Documents> {
    Arc::new(Documents::new(kernel))
}

/// The document routes: `/api/database/*`, `/api/collections/{name}/documents*`, and
/// `/api/{name}[/{id}]` for collections whose name no other route owns.
pub fn routes(documents: Arc<Documents>) -> nexus_web::Routes {
    routes::all(documents)
}
