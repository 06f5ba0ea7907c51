//! The sealed rows of recently read secrets, by path, so that reading a current version costs
//! no query. Only what the database holds is kept — ciphertext and the wrapped data key — never
//! a plaintext or an unwrapped key.
//!
//! A cached row may be stale: another instance on the same database (or another process on the
//! same SQLite file) may have written the secret since. It is therefore never served on trust:
//! the read's audit record is inserted only if the secret is still at the cached id and version
//! ([`crate::store::CURRENT`]), in the same statement, and a read whose precondition fails drops
//! the entry and reads the database. Dropping entries when secrets are written — here, or
//! elsewhere as the event bus reports — only spares reads that retry.

use std::sync::{Arc, Weak};

use nexus_kernel::events::EventBus;
use serde_json::Value;

use crate::store::SealedRow;

/// Bytes of cached rows at most (ciphertext, wrapped key and text).
const CAPACITY_BYTES: u64 = 32 * 1024 * 1024;
/// Weight of an entry besides its variable-length fields.
const ENTRY_OVERHEAD: usize = 256;

/// A current version's row as it was read, with its metadata parsed once.
#[derive(Debug)]
pub struct Cached {
    pub row: SealedRow,
    pub metadata: Value,
}

#[derive(Debug)]
pub struct ReadCache {
    /// The kernel cache `secret` when the service runs (keys are secret paths).
    entries: nexus_kernel::cache::L1<Arc<Cached>>,
}

impl Default for ReadCache {
    fn default() -> Self {
        Self { entries: nexus_kernel::cache::L1::standalone("secret", builder(), "bytes") }
    }
}

impl ReadCache {
    /// The cache, registered with the kernel cache as `secret`.
    pub fn new(cache: &nexus_kernel::cache::Cache) -> Self {
        Self { entries: cache.l1("secret", builder(), "bytes") }
    }
}

fn builder() -> moka::sync::CacheBuilder<String, Arc<Cached>, moka::sync::Cache<String, Arc<Cached>>> {
    moka::sync::Cache::builder().max_capacity(CAPACITY_BYTES).weigher(|path: &String, c: &Arc<Cached>| {
        let r = &c.row;
        let bytes = ENTRY_OVERHEAD
            + path.len()
            + r.id.len()
            + r.metadata.len() * 2
            + r.wrapped_key.len()
            + r.v_ciphertext.as_ref().map_or(0, Vec::len);
        u32::try_from(bytes).unwrap_or(u32::MAX)
    })
}

impl ReadCache {
    pub fn get(&self, path: &str) -> Option<Arc<Cached>> {
        self.entries.get(path)
    }

    pub fn insert(&self, row: SealedRow, metadata: Value) {
        self.entries.insert(row.path.clone(), Arc::new(Cached { row, metadata }));
    }

    pub fn invalidate(&self, path: &str) {
        self.entries.invalidate(path);
    }

    /// Drops entries as the event bus reports writes (this instance's, and other instances'
    /// once relayed through Redis), until the bus closes or the cache is gone.
    pub fn follow(cache: Weak<Self>, events: &EventBus) {
        events.follow(cache, |cache, event| match event {
            Some(event) if event.source == "secrets" => {
                if let Some(path) = event.data.get("path").and_then(Value::as_str) {
                    cache.invalidate(path);
                }
            }
            Some(_) => {}
            // Missed events may have named any path.
            None => cache.entries.invalidate_all(),
        });
    }
}
