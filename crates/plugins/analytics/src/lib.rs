//! Analytics: durable ingestion of client events (`POST /v2/analytics/events`), acknowledged
//! only once committed, with group commits across concurrent requests; queries, summaries in
//! a time zone and funnels over them; retention; notification of stored events on the event
//! bus. Choices are described in `docs/analytics.md`.

pub mod error;
pub mod event;
pub mod query;
pub mod rollup;
mod routes;
pub mod service;
pub mod store;
pub mod view;

use std::sync::Arc;

use nexus_identity::Identity;
use nexus_kernel::plugin::{ChannelSpec, Manifest};
use nexus_web::plugin::{BoxFuture, Plugin, StartContext, StartError, Started};

pub use error::AnalyticsError;
pub use service::Analytics;

/// Migrations of the analytics tables; their SQL is portable, so both backends share it.
pub static MIGRATIONS: nexus_kernel::db::MigrationSet = nexus_kernel::db::MigrationSet {
    owner: "analytics",
    sqlite: sqlx::migrate!("./migrations"),
    postgres: sqlx::migrate!("./migrations"),
};

/// The plugin: the service, its writer, and its retention task (which ends when the event
/// bus closes).
#[derive(Debug, Default)]
pub struct AnalyticsPlugin;

/// Its configuration is applied at the next start.
impl nexus_kernel::plugin::Reconfigure for AnalyticsPlugin {}

impl Plugin for AnalyticsPlugin {
    fn manifest(&self) -> Manifest {
        Manifest::builtin(
            "analytics",
            "Analytics",
            "analytics",
            "Durable event ingestion, queries, summaries and funnels",
        )
        .depends_on("identity", "*")
        .permission("analytics.write", "Send events")
        .permission("analytics.read", "Query events, summaries and funnels")
        .channel(ChannelSpec::new("analytics", Some("analytics.read"), &["analytics.*"]))
        .config_type::<nexus_kernel::config::AnalyticsConfig>()
    }

    fn migrations(&self) -> Option<&'static nexus_kernel::db::MigrationSet> {
        Some(&MIGRATIONS)
    }

    fn start<'a>(&'a self, ctx: &'a mut StartContext) -> BoxFuture<'a, Result<Started, StartError>> {
        Box::pin(async move {
            let identity = ctx.require::<Arc<Identity>>()?;
            let analytics = Arc::new(Analytics::new(ctx.kernel.clone(), identity));
            ctx.provide(analytics.clone());
            Ok(Started::routes(routes(analytics.clone()))
                .tag("analytics", "Core API v2: analytics events, summaries, funnels")
                .task(tokio::spawn(service::retain(analytics))))
        })
    }
}

/// Every analytics route.
pub fn routes(analytics: Arc<Analytics>) -> nexus_web::Routes {
    routes::all(analytics)
}
