//! Real checks of the services a request depends on.

use std::time::Duration;

use serde::Serialize;

use crate::Kernel;

/// How long a health check waits for a dependency before calling it down.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a health report is reused before the dependencies are checked again.
pub const FRESH_FOR: Duration = Duration::from_millis(250);

/// The last report and when it was made. Readers take a short synchronous read lock and never
/// wait on each other; only a caller that finds the report stale takes `refresh`, so that
/// concurrent callers share one check.
#[derive(Debug, Default)]
pub struct HealthCache {
    /// The report and when it was taken, on the coarse clock: read on every `/health`, and a
    /// few milliseconds are nothing to its freshness.
    latest: std::sync::RwLock<Option<(Duration, HealthReport)>>,
    refresh: tokio::sync::Mutex<()>,
}

impl HealthCache {
    fn fresh(&self) -> Option<HealthReport> {
        let latest = self.latest.read().ok()?;
        let now = crate::clock::coarse::monotonic();
        latest.as_ref().filter(|(at, _)| now.saturating_sub(*at) < FRESH_FOR).map(|(_, report)| report.clone())
    }

    fn store(&self, report: HealthReport) {
        if let Ok(mut latest) = self.latest.write() {
            *latest = Some((crate::clock::coarse::monotonic(), report));
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentHealth {
    pub healthy: bool,
    pub latency_ms: f64,
    /// Why the component is unhealthy, phrased for operators (no credentials).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub database: ComponentHealth,
    /// `None` when no Redis is configured (the in-memory cache needs no check).
    pub redis: Option<ComponentHealth>,
}

impl HealthReport {
    pub fn healthy(&self) -> bool {
        self.database.healthy && self.redis.as_ref().is_none_or(|r| r.healthy)
    }
}

impl Kernel {
    pub async fn check_database(&self) -> ComponentHealth {
        match self.db.ping(CHECK_TIMEOUT).await {
            Ok(latency) => ComponentHealth { healthy: true, latency_ms: ms(latency), error: None },
            Err(e) => {
                tracing::warn!(error = %e, "database health check failed");
                ComponentHealth {
                    healthy: false,
                    latency_ms: 0.0,
                    error: Some(String::from("database connection failed")),
                }
            }
        }
    }

    pub async fn check_redis(&self) -> Option<ComponentHealth> {
        let mut conn = self.redis.clone()?;
        let started = std::time::Instant::now();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        Some(match tokio::time::timeout(CHECK_TIMEOUT, ping).await {
            Ok(Ok(_)) => ComponentHealth { healthy: true, latency_ms: ms(started.elapsed()), error: None },
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis health check failed");
                ComponentHealth { healthy: false, latency_ms: 0.0, error: Some("redis connection failed".into()) }
            }
            Err(_) => ComponentHealth { healthy: false, latency_ms: 0.0, error: Some("redis timed out".into()) },
        })
    }

    /// The health of the dependencies, checked for real at most every [`FRESH_FOR`]: load
    /// balancers poll health endpoints hard, and a round trip per poll would cost more than
    /// the requests the endpoint exists to protect. Concurrent callers share one check.
    pub async fn health(&self) -> HealthReport {
        if let Some(report) = self.health_cache.fresh() {
            return report;
        }
        let _refreshing = self.health_cache.refresh.lock().await;
        // Another caller may have refreshed it while this one waited.
        if let Some(report) = self.health_cache.fresh() {
            return report;
        }
        let (database, redis) = tokio::join!(self.check_database(), self.check_redis());
        let report = HealthReport { database, redis };
        self.health_cache.store(report.clone());
        report
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}
