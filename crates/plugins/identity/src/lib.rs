//! Identity and access: users, roles and permissions, argon2id passwords, JWT access tokens,
//! rotating refresh tokens, API keys, login throttling and lock-out — one domain service
//! ([`Identity`]) behind the login, user and key endpoints of every surface.
//!
//! Other plugins protect their handlers with the [`Auth`] extractor and
//! [`Principal::require`].

pub mod error;
pub mod overview;
pub mod password;
pub mod principal;
pub mod roles;
mod routes;
pub mod service;
pub mod store;
pub mod tokens;

use std::sync::Arc;

use nexus_kernel::plugin::{ChannelSpec, Manifest};
use nexus_web::plugin::{BoxFuture, Plugin, StartContext, StartError, Started};
use service::FirstAdmin;

pub use error::IdentityError;
pub use principal::{Auth, MaybeAuth, Principal};
/// A user as the framework and core v2 surfaces show it: the rendering other plugins use
/// (WebSocket RPC) rather than their own.
pub use routes::UserView;
pub use service::Identity;

/// Migrations of the identity tables; their SQL is portable, so both backends share it.
pub static MIGRATIONS: nexus_kernel::db::MigrationSet = nexus_kernel::db::MigrationSet {
    owner: "identity",
    sqlite: sqlx::migrate!("./migrations"),
    postgres: sqlx::migrate!("./migrations"),
};

/// Every identity route of every surface.
pub fn routes(identity: Arc<Identity>) -> nexus_web::Routes {
    routes::all(identity)
}

/// The plugin. It publishes `Arc<Identity>` for the plugins that authenticate callers.
#[derive(Debug, Default)]
pub struct IdentityPlugin {
    /// On a new database, the first admin's password and its hash, begun in `prepare`: the
    /// hash is start-up's longest step (~25 ms of a core), and it needs no storage.
    first_admin: std::sync::Mutex<Option<tokio::task::JoinHandle<Result<FirstAdmin, String>>>>,
}

impl IdentityPlugin {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Its configuration is applied at the next start.
impl nexus_kernel::plugin::Reconfigure for IdentityPlugin {}

impl Plugin for IdentityPlugin {
    fn manifest(&self) -> Manifest {
        Manifest::builtin(
            "identity",
            "Identity and access",
            "security",
            "Users, roles and permissions, passwords, access and refresh tokens, API keys, login throttling",
        )
        .essential()
        .permission("user.read", "Read users")
        .permission("user.write", "Create, change and delete users")
        .permission("auth.admin", "Manage other users' API keys and sessions")
        .channel(ChannelSpec::new("user_events", Some("user.read"), &["user.*"]))
        .channel(ChannelSpec::new("auth_events", Some("audit.read"), &["auth.*", "apikey.*"]))
        .config_key("auth")
        .config_type::<nexus_kernel::config::AuthConfig>()
    }

    fn migrations(&self) -> Option<&'static nexus_kernel::db::MigrationSet> {
        Some(&MIGRATIONS)
    }

    fn prepare(&self, config: &nexus_kernel::config::Config, new_database: bool) {
        if !new_database {
            return;
        }
        let first = FirstAdmin::begin(config.auth.admin_password.clone());
        if let Ok(mut slot) = self.first_admin.lock() {
            *slot = Some(tokio::spawn(first));
        }
    }

    fn start<'a>(&'a self, ctx: &'a mut StartContext) -> BoxFuture<'a, Result<Started, StartError>> {
        Box::pin(async move {
            let identity = Identity::open(ctx.kernel.clone()).await.map_err(|e| ctx.error(e.to_string()))?;
            ctx.provide(identity.clone());
            let admin = identity.clone();
            let prepared = self.first_admin.lock().ok().and_then(|mut slot| slot.take());
            let admin = tokio::spawn(async move {
                let prepared = match prepared {
                    Some(hashing) => Some(hashing.await.map_err(|e| e.to_string())??),
                    None => None,
                };
                admin.ensure_admin_with(prepared).await.map_err(|e| e.to_string())
            });
            Ok(Started::routes(routes(identity))
                .before_serving(admin)
                .tag("auth", "Framework: login, refresh, logout, API keys")
                .tag("users", "Framework: user management")
                .tag("secrets-auth", "Secrets manager: login, refresh, API keys")
                .tag("core-v2", "Core API v2: identity")
                .tag("media-auth", "Media platform: login, refresh, API keys"))
        })
    }
}
