//! The document database: MongoDB-style collections over SQLite and PostgreSQL. Filters,
//! sorting, paging, counting and the common `$group` stages are compiled to SQL; the engine
//! evaluates in Rust only what SQL cannot express exactly. See `docs/documents.md`.

pub mod cursor;
pub mod engine;
pub mod operation;
mod routes;
pub mod schema;
pub mod service;
pub mod sql;
#[cfg(test)]
mod sql_tests;
pub mod store;

use std::sync::Arc;

use nexus_kernel::Kernel;
use nexus_kernel::plugin::{ChannelSpec, Manifest};
use nexus_web::plugin::{BoxFuture, Plugin, StartContext, StartError, Started};

pub use service::{DocError, Documents};

/// Migrations of the document tables, for each backend.
pub static MIGRATIONS: nexus_kernel::db::MigrationSet = nexus_kernel::db::MigrationSet {
    owner: "documents",
    sqlite: sqlx::migrate!("./migrations/sqlite"),
    postgres: sqlx::migrate!("./migrations/postgres"),
};

/// The `[documents]` section.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DocumentsConfig {
    /// Largest document accepted, in bytes of its JSON.
    #[schema(minimum = 1)]
    pub max_document_bytes: usize,
}

impl Default for DocumentsConfig {
    fn default() -> Self {
        Self { max_document_bytes: 1024 * 1024 }
    }
}

/// Starts the service.
pub fn start(kernel: Arc<Kernel>, config: DocumentsConfig) -> Arc<Documents> {
    Arc::new(Documents::new(kernel, config))
}

/// The document routes: `/api/database/*`, `/api/collections/{name}/documents*`, and
/// `/api/{name}[/{id}]` for collections whose name no other route owns.
pub fn routes(documents: Arc<Documents>) -> nexus_web::Routes {
    routes::all(documents)
}

/// The plugin: `/api/database/...`, `/api/collections/...` and the `/api/{name}` collections.
#[derive(Debug, Default)]
pub struct DocumentsPlugin;

/// The `documents` channel's `filters.query`: a document filter, evaluated on each event's
/// `document` (inserted, or updated as it now is); a deletion carries only its `_id`.
struct ChangeQuery;

impl nexus_kernel::plugin::ChannelQuery for ChangeQuery {
    fn compile(&self, query: &serde_json::Value) -> Result<nexus_kernel::plugin::EventTest, String> {
        let filter = engine::filter::Filter::parse(query, "filters.query").map_err(|e| e.to_string())?;
        Ok(std::sync::Arc::new(move |event: &nexus_kernel::events::Event| match event.data.get("document") {
            Some(doc) => filter.matches(doc),
            None => filter.matches(&serde_json::json!({ "_id": event.data.get("id") })),
        }))
    }
}

/// Its configuration is applied at the next start.
impl nexus_kernel::plugin::Reconfigure for DocumentsPlugin {}

impl Plugin for DocumentsPlugin {
    fn manifest(&self) -> Manifest {
        Manifest::builtin(
            "documents",
            "Document database",
            "data",
            "Mongo-style collections over SQLite and PostgreSQL",
        )
        .depends_on("identity", "*")
        .permission("documents.read", "Read documents (optionally `documents.read:<collection>`)")
        .permission("documents.write", "Write documents (optionally `documents.write:<collection>`)")
        .permission("documents.admin", "Create and drop collections and indexes")
        .channel(ChannelSpec::new("documents", Some("documents.read"), &["document.*"]).with_query(ChangeQuery))
        .config_type::<DocumentsConfig>()
    }

    fn migrations(&self) -> Option<&'static nexus_kernel::db::MigrationSet> {
        Some(&MIGRATIONS)
    }

    fn start<'a>(&'a self, ctx: &'a mut StartContext) -> BoxFuture<'a, Result<Started, StartError>> {
        Box::pin(async move {
            let config: DocumentsConfig = ctx.config()?;
            if config.max_document_bytes == 0 {
                return Err(ctx.error("documents.max_document_bytes must be greater than 0"));
            }
            let documents = start(ctx.kernel.clone(), config);
            operation::register_rpc(&documents);
            ctx.provide(documents.clone());
            Ok(Started::routes(routes(documents))
                .tag("documents", "Document database: Mongo-style collections, queries, bulk writes, indexes"))
        })
    }
}
