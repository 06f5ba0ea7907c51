//! The Nexus kernel: the services every plugin and surface stands on.
//!
//! Nothing here knows about HTTP. Handlers call these services; SQL lives only in storage
//! modules (this crate's `db` for connection and migrations, each plugin's `store` for its
//! tables).

pub mod audit;
pub mod cache;
pub mod client;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod group_commit;
pub mod health;
pub mod id;
pub mod instance;
pub mod kernel;
pub mod metrics;
pub mod outbox;
pub mod plugin;
pub mod principal;
pub mod query;
pub mod ratelimit;
pub mod rpc;
pub mod seal;
pub mod tasks;
pub mod timeseries;

pub use kernel::Kernel;

/// Migrations of the kernel's own tables; their SQL is portable, so both backends share it.
pub static MIGRATIONS: db::MigrationSet = db::MigrationSet {
    owner: "kernel",
    sqlite: sqlx::migrate!("./migrations"),
    postgres: sqlx::migrate!("./migrations"),
};

/// The version of the running build, as reported by every surface.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
