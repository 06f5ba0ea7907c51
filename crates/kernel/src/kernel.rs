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
    /// Present when `redis.url` is configured.
    pub redis: Option<redis::aio::ConnectionManager>,
    /// This installation's id, stable across restarts and shared by every instance.
    pub server_id: String,
    /// Signs pagination cursors; shared by every instance on the database.
    pub cursor_key: Vec<u8>,
    pub started_at: Timestamp,
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
    /// Opens storage, applies `migrations` and connects to Redis when configured.
    pub async fn open(config: Config, migrations: &[&MigrationSet]) -> Result<Arc<Self>, KernelError> {
        crate::db::create_private_dir(&config.data_dir)?;
        let db = Db::connect(&config.database_url(), config.database.max_connections).await?;
        db.migrate(migrations).await?;
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
        let cursor_key = crate::instance::secret(&db, "cursor").await?.into_bytes();
        let audit = AuditLog::start(db.clone());
        let outbox = Outbox::new();
        outbox.start_relay(db.clone(), events.clone());
        Ok(Arc::new(Self {
            config,
            db,
            metrics: Metrics::new(),
            health_cache: Default::default(),
            audit,
            rate_limits,
            events,
            outbox,
            rpc: RpcRegistry::default(),
            redis,
            server_id,
            cursor_key,
            started_at: Timestamp::now(),
            started: Instant::now(),
        }))
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
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
