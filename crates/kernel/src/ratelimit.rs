//! Fixed-window request counting per key (an identity, an IP, a login client).
//!
//! In process by default. When Redis is configured, every instance counts in Redis (one
//! `INCR` + `EXPIRE` transaction per request, on a key that names the window), so instances
//! behind one load balancer share their limits. Should Redis fail, counting falls back to the
//! process for that request rather than refusing or waving it through unlimited.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The outcome of counting one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Unix seconds at which the window resets.
    pub reset_at: i64,
    /// Seconds until then (at least 1).
    pub reset_after: u64,
    /// The window's length in seconds.
    pub window: u64,
}

/// Keys counted in process before finished windows are swept out.
const SWEEP_ABOVE: usize = 100_000;

#[derive(Default)]
pub struct RateLimiter {
    local: Mutex<Local>,
    /// Shared counting, with the prefix of this installation's keys.
    redis: Option<(redis::aio::ConnectionManager, String)>,
    /// Windows follow the kernel's clock, so tests move to the next one instead of waiting.
    clock: std::sync::Arc<crate::clock::Clock>,
}

/// The in-process counters.
#[derive(Debug, Default)]
struct Local {
    windows: HashMap<String, Window>,
    /// The second of the last sweep: a sweep walks every key, so it runs at most once a
    /// second however many new keys arrive (a flood of addresses must not make each of its
    /// requests walk the whole map).
    swept_at: i64,
}

/// One key's count in its current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Unix seconds at which the window ends; keys of different classes have windows of
    /// different lengths, so this, not the window start of whoever sweeps, says what is done.
    end: i64,
    count: u32,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("shared", &self.redis.is_some()).finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter counting in process only.
    pub fn local() -> Self {
        Self::default()
    }

    /// A limiter counting in Redis under keys starting with `prefix`.
    pub fn shared(conn: redis::aio::ConnectionManager, prefix: impl Into<String>) -> Self {
        Self { local: Mutex::default(), redis: Some((conn, prefix.into())), clock: std::sync::Arc::default() }
    }

    /// This limiter, its windows following `clock`.
    pub fn with_clock(mut self, clock: std::sync::Arc<crate::clock::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Whether counts are shared with other instances.
    pub fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    /// Counts one request for `key` against `limit` per `window`.
    pub async fn check(&self, key: &str, limit: u32, window: Duration) -> Decision {
        let window_secs = i64::try_from(window.as_secs().max(1)).unwrap_or(i64::MAX);
        let now = self.clock.unix_seconds();
        let start = now - now.rem_euclid(window_secs);
        let count = match &self.redis {
            Some((conn, prefix)) => match count_shared(conn.clone(), prefix, key, start, window_secs).await {
                Ok(count) => count,
                Err(e) => {
                    tracing::warn!(error = %e, "rate limit: redis unavailable, counting in process");
                    self.count_local(key, start, window_secs, now)
                }
            },
            None => self.count_local(key, start, window_secs, now),
        };
        decide(count, limit, start, window_secs, now)
    }

    fn count_local(&self, key: &str, start: i64, window_secs: i64, now: i64) -> u32 {
        // A poisoned lock means a panic elsewhere mid-update; counting stays best-effort.
        let Ok(mut local) = self.local.lock() else { return 1 };
        let end = start.saturating_add(window_secs);
        if let Some(w) = local.windows.get_mut(key) {
            if w.end != end {
                *w = Window { end, count: 0 };
            }
            w.count = w.count.saturating_add(1);
            return w.count;
        }
        if local.windows.len() >= SWEEP_ABOVE && local.swept_at != now {
            local.swept_at = now;
            local.windows.retain(|_, w| w.end > now);
        }
        local.windows.insert(key.to_string(), Window { end, count: 1 });
        1
    }
}

fn decide(count: u32, limit: u32, start: i64, window_secs: i64, now: i64) -> Decision {
    let reset_at = start.saturating_add(window_secs);
    Decision {
        allowed: count <= limit,
        limit,
        remaining: limit.saturating_sub(count),
        reset_at,
        reset_after: u64::try_from((reset_at - now).max(1)).unwrap_or(1),
        window: u64::try_from(window_secs).unwrap_or(u64::MAX),
    }
}

async fn count_shared(
    mut conn: redis::aio::ConnectionManager,
    prefix: &str,
    key: &str,
    start: i64,
    window_secs: i64,
) -> Result<u32, redis::RedisError> {
    // The window's start is part of the key, so every instance counts into the same one and
    // an old window simply expires.
    let redis_key = format!("{prefix}{key}:{start}");
    let (count,): (i64,) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg(&redis_key)
        .cmd("EXPIRE")
        .arg(&redis_key)
        .arg(window_secs.saturating_add(1))
        .ignore()
        .query_async(&mut conn)
        .await?;
    Ok(u32::try_from(count.max(0)).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn counts_down_then_refuses() {
        let rl = super::RateLimiter::local();
        let w = std::time::Duration::from_secs(3600);
        let first = rl.check("k", 2, w).await;
        assert!(first.allowed && first.remaining == 1 && first.window == 3600);
        assert!(rl.check("k", 2, w).await.allowed);
        let third = rl.check("k", 2, w).await;
        assert!(!third.allowed && third.remaining == 0 && third.reset_after >= 1);
        assert!(rl.check("other", 2, w).await.allowed);
    }

    #[test]
    fn a_sweep_keeps_the_counts_of_longer_windows() {
        let rl = super::RateLimiter::local();
        // An hourly count, then enough one-minute keys to trigger a sweep an hour later.
        let hour_start = 7_200;
        assert_eq!(rl.count_local("hourly", hour_start, 3600, hour_start + 10), 1);
        let now = hour_start + 1_800;
        let minute = now - now.rem_euclid(60);
        for i in 0..super::SWEEP_ABOVE {
            rl.count_local(&format!("minute:{i}"), minute - 60, 60, minute - 1);
        }
        rl.count_local("trigger", minute, 60, now);
        assert_eq!(rl.count_local("hourly", hour_start, 3600, now), 2, "the hour is not over");
        let left = rl.local.lock().map(|l| l.windows.len()).unwrap_or_default();
        assert_eq!(left, 2, "finished minute windows are swept");
    }
}
