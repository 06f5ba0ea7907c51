//! The kernel: the shared services of one running instance.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audit::AuditLog;
use crate::clock::Timestamp;
use crate::config::{Config, mask_url};
use crate::db::{Db, MigrationSet, StorageError};
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::plugin::Manifest;
use crate::ratelimit::RateLimiter;
use crate::rpc::RpcRegistry;

#[derive(Debug)]
pub struct Kernel {
    pub config: Config,
    pub db: Db,
    pub metrics: Metrics,
    /// The last health report (see [`Kernel::health`]).
    pub health_cache: crate::health::HealthCache,
    pub audit: AuditLog,
    pub rate_limits: RateLimiter,
    pub events: EventBus,
    /// Events written with the changes they describe; its relay publishes them on `events`.
    pub outbox: Outbox,
    /// Methods callable over the WebSocket.
    pub rpc: RpcRegistry,
    /// Every plugin of this instance, its state and its traffic.
    pub plugins: crate::plugin::Registry,
    /// Present when `redis.url` is configured.
    pub redis: Option<redis::aio::ConnectionManager>,
    /// This installation's id, stable across restarts and shared by every instance.
    pub server_id: String,
    /// Seals the credentials of configuration stored through the API.
    pub sealer: Arc<crate::seal::Sealer>,
    /// Signs pagination cursors; shared by every instance on the database.
    pub cursor_key: Vec<u8>,
    pub started_at: Timestamp,
    /// The clock every expiry is judged by (tests move it).
    pub clock: Arc<crate::clock::Clock>,
    /// Background tasks with progress, persisted (see [`crate::tasks`]).
    pub tasks: Arc<crate::tasks::Tasks>,
    /// Named in-process caches and the Redis level (see [`crate::cache`]).
    pub cache: Arc<crate::cache::Cache>,
    started: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot connect to redis at {url}: {reason}")]
    Redis { url: String, reason: String },
}

impl Kernel {
    /// Opens storage, applies `migrations`, applies the plugin state operators stored (their
    /// configuration changes and whether each plugin is enabled) and connects to Redis when
    /// configured. `plugins` are the manifests of every plugin, in start-up order; `sealer`
    /// opens and seals the credentials of that stored configuration.
    pub async fn open(
        mut config: Config,
        plugins: &[Manifest],
        migrations: &[&MigrationSet],
        sealer: crate::seal::Sealer,
    ) -> Result<Arc<Self>, KernelError> {
        crate::db::create_private_dir(&config.data_dir)?;
        let db = Db::connect(&config.database_url(), config.database.max_connections).await?;
        db.migrate(migrations).await?;
        let stored = crate::plugin::store::load(&db, &sealer).await?;
        config = with_stored_changes(config, &stored, plugins);
        let registry = crate::plugin::Registry::default();
        let shown = config.masked();
        for manifest in plugins {
            let slot = crate::plugin::Slot::new(manifest.clone(), shown.section(&manifest.config_key));
            if let Some(state) = stored.iter().find(|s| s.plugin_id == manifest.id) {
                slot.apply_stored(state);
            }
            registry.add(Arc::new(slot));
        }
        let server_id = crate::instance::server_id(&db).await?;
        let redis = match &config.redis.url {
            Some(url) => Some(connect_redis(url).await?),
            None => None,
        };
        let events = EventBus::new();
        if let (Some(url), Some(conn)) = (&config.redis.url, &redis) {
            events
                .connect_redis(url, &server_id, conn.clone())
                .await
                .map_err(|e| KernelError::Redis { url: mask_url(url), reason: format!("event subscription: {e}") })?;
        }
        let rate_limits = match &redis {
            Some(conn) => {
                let prefix =
                    config.rate_limits.redis_prefix.clone().unwrap_or_else(|| format!("nexus:rl:{server_id}:"));
                RateLimiter::shared(conn.clone(), prefix)
            }
            None => RateLimiter::local(),
        };
        let clock = Arc::new(crate::clock::Clock::default());
        let rate_limits = rate_limits.with_clock(clock.clone());
        let cursor_key = crate::instance::secret(&db, "cursor").await?.into_bytes();
        let audit = AuditLog::start(db.clone());
        let outbox = Outbox::new();
        outbox.start_relay(db.clone(), events.clone());
        let tasks = crate::tasks::Tasks::start(&db, events.clone(), clock.clone());
        let cache = crate::cache::Cache::start(redis.clone(), &server_id, events.clone());
        let metrics = Metrics::new();
        metrics.series.use_clock(clock.clone());
        Ok(Arc::new(Self {
            config,
            db,
            metrics,
            health_cache: Default::default(),
            audit,
            rate_limits,
            events,
            outbox,
            rpc: RpcRegistry::default(),
            plugins: registry,
            redis,
            server_id,
            sealer: Arc::new(sealer),
            cursor_key,
            started_at: Timestamp::now(),
            clock,
            tasks,
            cache,
            started: Instant::now(),
        }))
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// `config` with the configuration changes operators stored (`nexus_plugin_state`): each
/// plugin's over its section, then the kernel's own sections (row
/// [`KERNEL_STATE`](crate::plugin::KERNEL_STATE), `{section: patch}`, written by
/// `PUT /api/v1/config`). A stored change that no longer validates is skipped with a warning.
pub fn with_stored_changes(mut config: Config, stored: &[crate::plugin::StoredState], plugins: &[Manifest]) -> Config {
    let patch_of = |id: &str| -> Option<serde_json::Value> {
        stored
            .iter()
            .find(|s| s.plugin_id == id)
            .and_then(|s| s.config.as_deref())
            .and_then(|c| serde_json::from_str(c).ok())
    };
    for manifest in plugins {
        if let Some(patch) = patch_of(&manifest.id) {
            match config.patched(&manifest.config_key, &patch) {
                Ok(patched) => config = patched,
                Err(e) => tracing::warn!(plugin = %manifest.id, error = %e, "stored plugin configuration ignored"),
            }
        }
    }
    if let Some(serde_json::Value::Object(sections)) = patch_of(crate::plugin::KERNEL_STATE) {
        for (section, patch) in &sections {
            match config.patched(section, patch) {
                Ok(patched) => config = patched,
                Err(e) => tracing::warn!(section = %section, error = %e, "stored configuration change ignored"),
            }
        }
    }
    config
}

async fn connect_redis(url: &str) -> Result<redis::aio::ConnectionManager, KernelError> {
    let err = |reason: String| KernelError::Redis { url: mask_url(url), reason };
    let client = redis::Client::open(url).map_err(|e| err(e.to_string()))?;
    let connect = redis::aio::ConnectionManager::new(client);
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(err(e.to_string())),
        Err(_) => Err(err(String::from("timed out after 5 s"))),
    }
}
