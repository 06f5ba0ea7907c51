//! Analytics: durable ingestion of client events (`POST /v2/analytics/events`), acknowledged
//! only once committed, with group commits across concurrent requests; queries, summaries in
//! a time zone and funnels over them; retention; notification of stored events on the event
//! bus. Choices are described in `docs/analytics.md`.

pub mod error;
pub mod event;
pub mod query;
mod routes;
pub mod service;
pub mod store;
pub mod view;

use std::sync::Arc;

use nexus_identity::Identity;
use nexus_kernel::Kernel;
use tokio::task::JoinHandle;

pub use error::AnalyticsError;
pub use service::Analytics;

/// Migrations of the analytics tables; their SQL is portable, so both backends share it.
pub static MIGRATIONS: nexus_kernel::db::MigrationSet = nexus_kernel::db::MigrationSet {
    owner: "analytics",
    sqlite: sqlx::migrate!("./migrations"),
    postgres: sqlx::migrate!("./migrations"),
};

/// The running service and its retention task, which ends when the event bus closes.
#[derive(Debug)]
pub struct Started {
    pub analytics: Arc<Analytics>,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Starts the service, its writer and its retention task.
pub fn start(kernel: Arc<Kernel>, identity: Arc<Identity>) -> Started {
    let analytics = Arc::new(Analytics::new(kernel, identity));
    let tasks = vec![tokio::spawn(service::retain(analytics.clone()))];
    Started { analytics, tasks }
}

/// Every analytics route.
pub fn routes(analytics: Arc<Analytics>) -> nexus_web::Routes {
    routes::all(analytics)
}
