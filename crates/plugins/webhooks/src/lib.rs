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

use nexus_kernel::plugin::Manifest;
use nexus_web::plugin::{BoxFuture, Plugin, StartContext, StartError, Started};

pub use error::WebhookError;
pub use service::Webhooks;

/// Migrations of the webhook tables, for each backend.
pub static MIGRATIONS: nexus_kernel::db::MigrationSet = nexus_kernel::db::MigrationSet {
    owner: "webhooks",
    sqlite: sqlx::migrate!("./migrations"),
    postgres: sqlx::migrate!("./migrations"),
};

/// The plugin: registration routes, and the outbox feeder and delivery worker, which end
/// after [`EventBus::close`](nexus_kernel::events::EventBus::close) once their attempts in
/// flight are recorded.
#[derive(Debug, Default)]
pub struct WebhooksPlugin;

/// Its configuration is applied at the next start.
impl nexus_kernel::plugin::Reconfigure for WebhooksPlugin {}

impl Plugin for WebhooksPlugin {
    fn manifest(&self) -> Manifest {
        Manifest::builtin(
            "webhooks",
            "Webhooks",
            "integration",
            "Signed outgoing webhooks with a durable outbox and retries",
        )
        .depends_on("identity", "*")
        .permission("webhook.read", "List webhooks and their deliveries")
        .permission("webhook.write", "Register, change, test and delete webhooks")
        .config_type::<nexus_kernel::config::WebhooksConfig>()
    }

    fn migrations(&self) -> Option<&'static nexus_kernel::db::MigrationSet> {
        Some(&MIGRATIONS)
    }

    fn start<'a>(&'a self, ctx: &'a mut StartContext) -> BoxFuture<'a, Result<Started, StartError>> {
        Box::pin(async move {
            let webhooks = Arc::new(Webhooks::new(ctx.kernel.clone()));
            webhooks
                .store
                .sync_interest()
                .await
                .map_err(|e| StartError { plugin: String::from("webhooks"), reason: e.to_string() })?;
            ctx.provide(webhooks.clone());
            Ok(Started::routes(routes(webhooks.clone()))
                .tag("webhooks", "Outgoing webhooks: registration, test, deliveries")
                .task(tokio::spawn(delivery::consume(webhooks.clone())))
                .task(tokio::spawn(delivery::feed(webhooks.clone())))
                .task(tokio::spawn(delivery::work(webhooks))))
        })
    }
}

/// Every webhook route of every surface.
pub fn routes(webhooks: Arc<Webhooks>) -> nexus_web::Routes {
    routes::all(webhooks)
}
