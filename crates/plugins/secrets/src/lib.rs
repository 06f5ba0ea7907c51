//! The secrets manager: encrypted (AES-256-GCM envelope encryption), versioned, audited
//! secrets under slash-separated paths, with per-role path policies — the service behind
//! `/api/v1/secrets` and `/api/v1/audit` (see `docs/secrets.md`).

mod cache;
pub mod crypto;
pub mod error;
pub mod keyring;
pub mod paths;
pub mod policy;
mod routes;
pub mod service;
pub mod store;

use std::sync::Arc;

pub use error::SecretsError;
pub use service::Secrets;

/// Migrations of the secrets tables, for each backend.
pub static MIGRATIONS: nexus_kernel::db::MigrationSet = nexus_kernel::db::MigrationSet {
    owner: "secrets",
    sqlite: sqlx::migrate!("migrations/sqlite"),
    postgres: sqlx::migrate!("migrations/postgres"),
};

/// The secrets manager's routes.
pub fn routes(secrets: Arc<Secrets>) -> nexus_web::Routes {
    routes::routes(secrets)
}

/// Re-wraps every data key under a new master key (`nexus secrets rotate-master-key`), on a
/// database already migrated. Resumable; see [`keyring`].
pub async fn rotate_master_key(
    config: &nexus_kernel::config::Config,
    db: &nexus_kernel::db::Db,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<keyring::Rotation, SecretsError> {
    // Rotation writes no events: the outbox handle wakes no one.
    keyring::rotate(config, &store::Store::new(db.clone(), nexus_kernel::outbox::Outbox::new()), progress).await
}
