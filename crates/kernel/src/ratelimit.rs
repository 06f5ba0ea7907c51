//! Fixed-window request counting per key (an identity, an IP, a login client).
//!
//! In process by default. Shared counting across instances (Redis) plugs in behind the same
//! [`RateLimiter::check`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::Timestamp;

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
}

#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, (i64, u32)>>,
}

impl RateLimiter {
    /// Counts one request for `key` against `limit` per `window`.
    pub fn check(&self, key: &str, limit: u32, window: Duration) -> Decision {
        let window_secs = i64::try_from(window.as_secs().max(1)).unwrap_or(i64::MAX);
        let now = Timestamp::now().as_unix_seconds();
        let start = now - now.rem_euclid(window_secs);
        let reset_at = start + window_secs;
        let count = match self.windows.lock() {
            Ok(mut map) => {
                if map.len() > 100_000 {
                    map.retain(|_, (s, _)| *s >= start);
                }
                let entry = map.entry(key.to_string()).or_insert((start, 0));
                if entry.0 != start {
                    *entry = (start, 0);
                }
                entry.1 = entry.1.saturating_add(1);
                entry.1
            }
            // A poisoned lock means a panic elsewhere mid-update; counting stays best-effort.
            Err(_) => 1,
        };
        Decision {
            allowed: count <= limit,
            limit,
            remaining: limit.saturating_sub(count),
            reset_at,
            reset_after: u64::try_from((reset_at - now).max(1)).unwrap_or(1),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_down_then_refuses() {
        let rl = super::RateLimiter::default();
        let w = std::time::Duration::from_secs(3600);
        let first = rl.check("k", 2, w);
        assert!(first.allowed && first.remaining == 1);
        assert!(rl.check("k", 2, w).allowed);
        let third = rl.check("k", 2, w);
        assert!(!third.allowed && third.remaining == 0 && third.reset_after >= 1);
        assert!(rl.check("other", 2, w).allowed);
    }
}
