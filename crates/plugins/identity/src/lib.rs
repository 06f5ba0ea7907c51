//! Identity and access: users, roles and permissions, argon2id passwords, JWT access tokens,
//! rotating refresh tokens, API keys, login throttling and lock-out — one domain service
//! ([`Identity`]) behind the login, user and key endpoints of every surface.
//!
//! Other plugins protect their handlers with the [`Auth`] extractor and
//! [`Principal::require`].

pub mod error;
pub mod password;
pub mod principal;
pub mod roles;
mod routes;
pub mod service;
pub mod store;
pub mod tokens;

use std::sync::Arc;

pub use error::IdentityError;
pub use principal::{Auth, MaybeAuth, Principal};
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
