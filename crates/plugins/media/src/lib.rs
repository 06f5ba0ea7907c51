//! The media platform's library: a Jellyfin-compatible surface at `/api/media` over libraries
//! named by Jellyfin's conventions (`naming`), scanned in the background (`jobs`, `scan`,
//! `probe`) and watched for changes, with per-user data, static streaming with byte ranges,
//! and playback sessions with remote control over Jellyfin's socket. See `docs/media.md`.

pub mod arr;
pub mod catalog;
pub mod error;
pub mod fulfilment;
pub mod jobs;
pub mod metrics;
pub mod naming;
pub mod probe;
pub mod query;
pub mod requests;
mod routes;
pub mod scan;
pub mod service;
pub mod sessions;
pub mod stats;
pub mod store;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use nexus_kernel::Kernel;
use nexus_kernel::plugin::{ChannelSpec, Manifest};
use nexus_web::plugin::{BoxFuture, Plugin, StartContext, StartError, Started as PluginStarted};
use tokio::task::JoinHandle;

pub use error::MediaError;
pub use service::Media;

/// Migrations of the media tables, for each backend.
pub static MIGRATIONS: nexus_kernel::db::MigrationSet = nexus_kernel::db::MigrationSet {
    owner: "media",
    sqlite: sqlx::migrate!("./migrations"),
    postgres: sqlx::migrate!("./migrations"),
};

/// The running service and its background tasks (the watcher), which end after
/// [`EventBus::close`](nexus_kernel::events::EventBus::close).
#[derive(Debug)]
pub struct Started {
    pub media: Arc<Media>,
    pub gateway: Arc<arr::Gateway>,
    pub requests: Arc<requests::Requests>,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Opens the library, starts the first scan and, when `media.watch_interval_ms` is set, the
/// watcher.
pub async fn start(kernel: Arc<Kernel>, identity: Arc<nexus_identity::Identity>) -> Result<Started, MediaError> {
    let media = Media::open(kernel.clone(), identity).await?;
    media.start_scan();
    let mut tasks = Vec::new();
    let interval = kernel.config.media.watch_interval_ms;
    if interval > 0 {
        tasks.push(tokio::spawn(media.clone().watch(Duration::from_millis(interval))));
    }
    let gateway = Arc::new(arr::Gateway::new(&kernel));
    let requests = Arc::new(requests::Requests::new(kernel.clone(), gateway.clone(), media.clone()));
    tasks.push(tokio::spawn(requests.clone().complete_as_scanned()));
    Ok(Started { media, gateway, requests, tasks })
}

/// Every route of the Jellyfin surface, Tautulli's statistics and the *arr gateway.
pub fn routes(started: &Started) -> nexus_web::Routes {
    routes::all(started.media.clone(), started.gateway.clone(), started.requests.clone())
}

/// The plugin: the Jellyfin-compatible library, streaming and sessions, Overseerr-compatible
/// requests, the *arr gateway and Tautulli statistics.
#[derive(Debug, Default)]
pub struct MediaPlugin {
    /// The gateway of the last start, and the configuration it started with (against which
    /// changes are judged): `media.arr` changes apply to it live.
    running: RwLock<Option<(Arc<arr::Gateway>, nexus_kernel::config::MediaConfig)>>,
}

/// `media.arr` (servers and keys) applies live; the rest at the next start.
impl nexus_kernel::plugin::Reconfigure for MediaPlugin {
    fn reconfigure(
        &self,
        config: &serde_json::Value,
    ) -> Result<nexus_kernel::plugin::Reconfigured, Vec<nexus_kernel::error::FieldError>> {
        use nexus_kernel::plugin::Reconfigured;
        let new: nexus_kernel::config::MediaConfig = nexus_kernel::plugin::validate_config(config)?;
        let running = self.running.read().ok().and_then(|r| r.clone());
        let Some((gateway, boot)) = running else {
            return Ok(Reconfigured::RestartRequired);
        };
        gateway.set_upstreams(&new.arr);
        let rest_unchanged = serde_json::to_value(nexus_kernel::config::MediaConfig { arr: Default::default(), ..new })
            .ok()
            == serde_json::to_value(nexus_kernel::config::MediaConfig { arr: Default::default(), ..boot }).ok();
        Ok(if rest_unchanged { Reconfigured::Live } else { Reconfigured::RestartRequired })
    }
}

impl Plugin for MediaPlugin {
    fn manifest(&self) -> Manifest {
        Manifest::builtin(
            "media",
            "Media platform",
            "media",
            "Jellyfin-compatible library, playback and streaming; requests; *arr gateway; statistics",
        )
        .depends_on("identity", "*")
        .permission("media.read", "Browse and stream the library")
        .permission("media.write", "Manage libraries, requests and sessions")
        .permission("media.arr", "Use the *arr gateway")
        .channel(ChannelSpec::new("media_events", Some("media.read"), &["media.*"]))
        .config_type::<nexus_kernel::config::MediaConfig>()
    }

    fn migrations(&self) -> Option<&'static nexus_kernel::db::MigrationSet> {
        Some(&MIGRATIONS)
    }

    fn start<'a>(&'a self, ctx: &'a mut StartContext) -> BoxFuture<'a, Result<PluginStarted, StartError>> {
        Box::pin(async move {
            let identity = ctx.require::<Arc<nexus_identity::Identity>>()?;
            let started = start(ctx.kernel.clone(), identity).await.map_err(|e| ctx.error(e.to_string()))?;
            ctx.provide(started.media.clone());
            if let Ok(mut running) = self.running.write() {
                *running = Some((started.gateway.clone(), ctx.kernel.config.media.clone()));
            }
            let mut out =
                PluginStarted::routes(routes(&started)).mount("/api/requests", nexus_web::Dialect::Media).tag(
                    "media",
                    "Media platform: Jellyfin-compatible library, streaming and sessions at /api/media (docs/media.md)",
                );
            out.tasks = started.tasks;
            Ok(out)
        })
    }
}
