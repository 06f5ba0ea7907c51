//! The kernel cache: named in-process caches (L1, moka) with hit, miss and eviction counters,
//! and a Redis level (L2) shared by the instances when `redis.url` is configured.
//!
//! A domain makes its cache through [`Cache::l1`] and uses the returned [`L1`] as it would a
//! moka cache; the kernel keeps it in its registry, so the operations API can show its
//! statistics and clear it. Keys are shown and matched as `<cache name>:<key>` (`user:u_1`),
//! and [`Cache::clear`] takes a glob over them (`user:*`). Clearing is also published as a
//! `cache.cleared` event, which reaches the other instances through the Redis event relay;
//! each clears its own L1 the same way (L2 is shared, so the instance asked clears it once).
//!
//! ```ignore
//! let users = kernel.cache.l1("user", moka::sync::Cache::builder().max_capacity(10_000));
//! users.insert(id.clone(), user);
//! let hit = users.get(&id);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::events::{Event, EventBus};

/// Counters of one cache (or level).
#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

/// A snapshot of one cache's statistics.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CacheStats {
    pub name: String,
    /// `L1` or `L2`.
    pub level: &'static str,
    pub entries: u64,
    /// What the cache weighs its entries in: bytes when it has a weigher that counts bytes,
    /// else entries (see `weight_unit`).
    pub weighted_size: u64,
    pub weight_unit: &'static str,
    /// The most it holds, in `weight_unit`s, when bounded.
    pub capacity: Option<u64>,
    pub hits: u64,
    pub misses: u64,
    /// Entries pushed out by capacity or expiry (not explicit invalidations).
    pub evictions: u64,
}

impl CacheStats {
    pub fn hit_rate(&self) -> Option<f64> {
        let total = self.hits + self.misses;
        (total > 0).then(|| self.hits as f64 / total as f64)
    }
}

/// A named in-process cache: a moka cache that counts its hits, misses and evictions.
/// Cloning is cheap and shares the entries.
#[derive(Clone)]
pub struct L1<V> {
    name: Arc<str>,
    inner: moka::sync::Cache<String, V>,
    counters: Arc<Counters>,
    weight_unit: &'static str,
}

impl<V> std::fmt::Debug for L1<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L1").field("name", &self.name).field("entries", &self.inner.entry_count()).finish()
    }
}

impl<V: Clone + Send + Sync + 'static> L1<V> {
    /// A counted cache outside any registry (for unit tests and tools without a kernel);
    /// [`Cache::l1`] makes registered ones.
    pub fn standalone(
        name: &str,
        builder: moka::sync::CacheBuilder<String, V, moka::sync::Cache<String, V>>,
        weight_unit: &'static str,
    ) -> Self {
        let counters = Arc::new(Counters::default());
        let weak: Weak<Counters> = Arc::downgrade(&counters);
        let inner = builder
            .eviction_listener(move |_key, _value, cause| {
                if cause.was_evicted()
                    && let Some(c) = weak.upgrade()
                {
                    c.evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        L1 { name: Arc::from(name), inner, counters, weight_unit }
    }

    pub fn get(&self, key: &str) -> Option<V> {
        self.get_if(key, |_| true)
    }

    /// The entry of `key` if `usable` accepts it (a freshness check of the caller's own);
    /// one it refuses counts as a miss.
    pub fn get_if(&self, key: &str, usable: impl FnOnce(&V) -> bool) -> Option<V> {
        let found = self.inner.get(key).filter(|v| usable(v));
        let counter = if found.is_some() { &self.counters.hits } else { &self.counters.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn insert(&self, key: String, value: V) {
        self.inner.insert(key, value);
    }

    pub fn invalidate(&self, key: &str) {
        self.inner.invalidate(key);
    }

    pub fn invalidate_all(&self) {
        self.inner.invalidate_all();
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// What the registry needs of a cache, whatever its value type.
trait Registered: Send + Sync {
    fn stats(&self) -> CacheStats;
    /// Drops the entries whose shown key (`name:key`) matches `pattern`; returns how many.
    fn clear(&self, pattern: &str) -> u64;
}

impl<V: Clone + Send + Sync + 'static> Registered for L1<V> {
    fn stats(&self) -> CacheStats {
        self.inner.run_pending_tasks();
        CacheStats {
            name: self.name.to_string(),
            level: "L1",
            entries: self.inner.entry_count(),
            weighted_size: self.inner.weighted_size(),
            weight_unit: self.weight_unit,
            capacity: self.inner.policy().max_capacity(),
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            evictions: self.counters.evictions.load(Ordering::Relaxed),
        }
    }

    fn clear(&self, pattern: &str) -> u64 {
        self.inner.run_pending_tasks();
        let mut cleared = 0;
        let whole = pattern == "*" || glob_matches(pattern, &format!("{}:", self.name)) && pattern.ends_with(":*");
        if whole {
            cleared = self.inner.entry_count();
            self.inner.invalidate_all();
            self.inner.run_pending_tasks();
            return cleared;
        }
        let keys: Vec<Arc<String>> = self.inner.iter().map(|(k, _)| k).collect();
        for key in keys {
            if glob_matches(pattern, &format!("{}:{key}", self.name)) {
                self.inner.invalidate(key.as_str());
                cleared += 1;
            }
        }
        cleared
    }
}

/// Which levels a clear acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    L1,
    L2,
    All,
}

impl Level {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "l1" => Some(Level::L1),
            "l2" => Some(Level::L2),
            "all" => Some(Level::All),
            _ => None,
        }
    }

    fn names(self, has_l2: bool) -> Vec<&'static str> {
        match self {
            Level::L1 => vec!["L1"],
            Level::L2 => vec!["L2"],
            Level::All if has_l2 => vec!["L1", "L2"],
            Level::All => vec!["L1"],
        }
    }
}

/// What a clear did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Cleared {
    pub cleared_keys: u64,
    pub pattern: String,
    pub levels: Vec<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("the L2 cache needs redis.url to be configured")]
    NoL2,
    #[error("redis: {0}")]
    Redis(String),
}

/// The cache service of one instance (`kernel.cache`).
pub struct Cache {
    registry: Mutex<Vec<Arc<dyn Registered>>>,
    redis: Option<redis::aio::ConnectionManager>,
    /// Prefix of this installation's L2 keys.
    prefix: String,
    l2: Counters,
    events: EventBus,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("l2", &self.redis.is_some()).finish()
    }
}

/// Most L2 keys one clear deletes, so that a clear of everything stays bounded.
const L2_CLEAR_LIMIT: u64 = 1_000_000;

impl Cache {
    /// The service; with `redis`, L2 keys live under `nexus:cache:<server_id>:`. It follows
    /// `events` for clears made on other instances.
    pub fn start(redis: Option<redis::aio::ConnectionManager>, server_id: &str, events: EventBus) -> Arc<Self> {
        let cache = Arc::new(Self {
            registry: Mutex::default(),
            redis,
            prefix: format!("nexus:cache:{server_id}:"),
            l2: Counters::default(),
            events: events.clone(),
        });
        let bus = events.clone();
        events.follow(Arc::downgrade(&cache), move |cache: &Cache, event: Option<&Event>| {
            if let Some(event) = event
                && event.kind == "cache.cleared"
                && !bus.is_local(event)
            {
                let pattern = event.data.get("pattern").and_then(|p| p.as_str()).unwrap_or("*");
                let n = cache.clear_l1(pattern);
                tracing::debug!(pattern, cleared = n, "cache cleared on another instance");
            }
        });
        cache
    }

    /// A new named L1 cache built from `builder` (its capacity, expiry, weigher), counted
    /// and registered. `weight_unit` names what the builder's weigher counts (`entries`
    /// without one).
    pub fn l1<V: Clone + Send + Sync + 'static>(
        &self,
        name: &str,
        builder: moka::sync::CacheBuilder<String, V, moka::sync::Cache<String, V>>,
        weight_unit: &'static str,
    ) -> L1<V> {
        let cache = L1::standalone(name, builder, weight_unit);
        if let Ok(mut registry) = self.registry.lock() {
            registry.push(Arc::new(cache.clone()));
        }
        cache
    }

    pub fn has_l2(&self) -> bool {
        self.redis.is_some()
    }

    /// Statistics of every L1 cache.
    pub fn l1_stats(&self) -> Vec<CacheStats> {
        let registry = self.registry.lock().map(|r| r.clone()).unwrap_or_default();
        registry.iter().map(|c| c.stats()).collect()
    }

    /// Statistics of L2 (keys of this installation), `None` without Redis.
    pub async fn l2_stats(&self) -> Option<Result<CacheStats, CacheError>> {
        let mut conn = self.redis.clone()?;
        let keys = async {
            let mut count = 0u64;
            let mut cursor = 0u64;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{}*", self.prefix))
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| CacheError::Redis(e.to_string()))?;
                count += batch.len() as u64;
                if next == 0 {
                    return Ok::<u64, CacheError>(count);
                }
                cursor = next;
            }
        };
        Some(keys.await.map(|entries| CacheStats {
            name: String::from("redis"),
            level: "L2",
            entries,
            weighted_size: entries,
            weight_unit: "entries",
            capacity: None,
            hits: self.l2.hits.load(Ordering::Relaxed),
            misses: self.l2.misses.load(Ordering::Relaxed),
            evictions: 0,
        }))
    }

    /// The L2 value of `key`, `None` when absent (or without Redis).
    pub async fn l2_get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut conn = self.redis.clone().ok_or(CacheError::NoL2)?;
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(format!("{}{key}", self.prefix))
            .query_async(&mut conn)
            .await
            .map_err(|e| CacheError::Redis(e.to_string()))?;
        let counter = if value.is_some() { &self.l2.hits } else { &self.l2.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(value)
    }

    /// Sets the L2 value of `key` for `ttl`.
    pub async fn l2_set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        let mut conn = self.redis.clone().ok_or(CacheError::NoL2)?;
        let _: () = redis::cmd("SET")
            .arg(format!("{}{key}", self.prefix))
            .arg(value)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .query_async(&mut conn)
            .await
            .map_err(|e| CacheError::Redis(e.to_string()))?;
        Ok(())
    }

    fn clear_l1(&self, pattern: &str) -> u64 {
        let registry = self.registry.lock().map(|r| r.clone()).unwrap_or_default();
        registry.iter().map(|c| c.clear(pattern)).sum()
    }

    async fn clear_l2(&self, pattern: &str) -> Result<u64, CacheError> {
        let Some(mut conn) = self.redis.clone() else { return Ok(0) };
        let err = |e: redis::RedisError| CacheError::Redis(e.to_string());
        let mut cleared = 0u64;
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}{pattern}", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(err)?;
            if !batch.is_empty() {
                let n: u64 = redis::cmd("DEL").arg(&batch).query_async(&mut conn).await.map_err(err)?;
                cleared += n;
            }
            if next == 0 || cleared >= L2_CLEAR_LIMIT {
                return Ok(cleared);
            }
            cursor = next;
        }
    }

    /// Clears the entries whose key matches the glob `pattern` (`*` any run, `?` one
    /// character) from `level`, here and (L1) on every other instance. Returns the keys
    /// cleared here.
    pub async fn clear(&self, pattern: &str, level: Level) -> Result<Cleared, CacheError> {
        if level == Level::L2 && self.redis.is_none() {
            return Err(CacheError::NoL2);
        }
        let mut cleared = 0;
        if matches!(level, Level::L1 | Level::All) {
            cleared += self.clear_l1(pattern);
            self.events.publish("cache", "cache.cleared", json!({ "pattern": pattern, "level": "L1" }));
        }
        if matches!(level, Level::L2 | Level::All) {
            cleared += self.clear_l2(pattern).await?;
        }
        Ok(Cleared { cleared_keys: cleared, pattern: pattern.to_string(), levels: level.names(self.has_l2()) })
    }
}

/// Whether `text` matches the glob `pattern`: `*` any run of characters, `?` one, the rest
/// literally.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || Some(c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..).is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_matches("user:*", "user:u_1"));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("u?er:*1", "user:abc1"));
        assert!(!glob_matches("user:*", "secret:a"));
        assert!(!glob_matches("user:a", "user:ab"));
        assert!(glob_matches("*:a*b", "x:aXXb"));
    }

    #[tokio::test]
    async fn counts_hits_misses_and_clears_by_pattern() {
        let cache = Cache::start(None, "s", EventBus::new());
        let users: L1<u32> = cache.l1("user", moka::sync::Cache::builder().max_capacity(100), "entries");
        let other: L1<u32> = cache.l1("secret", moka::sync::Cache::builder().max_capacity(100), "entries");
        users.insert("a".into(), 1);
        users.insert("b".into(), 2);
        other.insert("a".into(), 3);
        assert_eq!(users.get("a"), Some(1));
        assert_eq!(users.get("z"), None);
        let stats = cache.l1_stats();
        let u = stats.iter().find(|s| s.name == "user").cloned().unwrap_or_default();
        assert_eq!((u.hits, u.misses, u.entries), (1, 1, 2));
        let cleared = cache.clear("user:*", Level::All).await.map(|c| c.cleared_keys).unwrap_or(0);
        assert_eq!(cleared, 2);
        assert_eq!(other.get("a"), Some(3));
        let cleared = cache.clear("*:a", Level::L1).await.map(|c| c.cleared_keys).unwrap_or(0);
        assert_eq!(cleared, 1);
    }
}
