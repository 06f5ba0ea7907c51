//! Outgoing webhooks: registration (`/api/webhooks`, the media platform's
//! `/webhooks/register`), a durable outbox fed by the event bus, signed delivery with retries
//! and exponential back-off, disabling of webhooks that keep failing, and outbound URL rules.
//! The receiver's side is described in `docs/webhooks.md`.

pub mod delivery;
pub mod error;
mod routes;
pub mod service;
pub mod store;
pub mod target;

use std::sync::Arc;

use nexus_kernel::Kernel;
use tokio::task::JoinHandle;

pub use error::WebhookError;
pub use service::Webhooks;

/// Migrations of the webhook tables, for each backend.
pub static MIGRATIONS: nexus_kernel::db::MigrationSet = nexus_kernel::db::MigrationSet {
    owner: "webhooks",
    sqlite: sqlx::migrate!("./migrations"),
    postgres: sqlx::migrate!("./migrations"),
};

/// The running service and its background tasks, which end after
/// [`EventBus::close`](nexus_kernel::events::EventBus::close) once their attempts in flight
/// are recorded.
#[derive(Debug)]
pub struct Started {
    pub webhooks: Arc<Webhooks>,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Starts the outbox consumer, the bus feeder and the delivery worker.
pub fn start(kernel: Arc<Kernel>) -> Started {
    let webhooks = Arc::new(Webhooks::new(kernel));
    let tasks = vec![
        tokio::spawn(delivery::consume(webhooks.clone())),
        tokio::spawn(delivery::feed(webhooks.clone())),
        tokio::spawn(delivery::work(webhooks.clone())),
    ];
    Started { webhooks, tasks }
}

/// Every webhook route of every surface.
pub fn routes(webhooks: Arc<Webhooks>) -> nexus_web::Routes {
    routes::all(webhooks)
}
