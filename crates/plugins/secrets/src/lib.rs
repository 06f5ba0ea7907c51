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

use nexus_kernel::plugin::{ChannelSpec, Manifest};
use nexus_web::plugin::{BoxFuture, Plugin, StartContext, StartError, Started};

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

/// The plugin: `/api/v1/secrets` and `/api/v1/audit`.
#[derive(Debug, Default)]
pub struct SecretsPlugin;

/// Its configuration is applied at the next start.
impl nexus_kernel::plugin::Reconfigure for SecretsPlugin {}

impl Plugin for SecretsPlugin {
    fn manifest(&self) -> Manifest {
        Manifest::builtin(
            "secrets",
            "Secrets manager",
            "security",
            "Encrypted, versioned, audited secrets with path policies",
        )
        .depends_on("identity", "*")
        .permission("secret.read", "Read secrets a policy grants")
        .permission("secret.write", "Create and change secrets a policy grants")
        .permission("secret.delete", "Delete secrets a policy grants")
        .permission("audit.read", "Read the audit log")
        .channel(ChannelSpec::new("secret_events", Some("secret.read"), &["secret.*"]))
        .config_type::<nexus_kernel::config::SecretsConfig>()
    }

    fn migrations(&self) -> Option<&'static nexus_kernel::db::MigrationSet> {
        Some(&MIGRATIONS)
    }

    fn start<'a>(&'a self, ctx: &'a mut StartContext) -> BoxFuture<'a, Result<Started, StartError>> {
        Box::pin(async move {
            let identity = ctx.require::<Arc<nexus_identity::Identity>>()?;
            let secrets = Secrets::start(ctx.kernel.clone(), &identity).await.map_err(|e| ctx.error(e.to_string()))?;
            ctx.provide(secrets.clone());
            Ok(Started::routes(routes(secrets))
                .tag("secrets", "Secrets manager: encrypted, versioned secrets and the audit log"))
        })
    }
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
