//! Users as the read paths see them, kept in memory so that reading a user costs no database
//! round trip (`GET /api/users/{id}` and friends are served from here).
//!
//! How fresh an entry is:
//! - **This instance**: every write path invalidates the user's entry after its write commits
//!   and before it answers, so a record older than an acknowledged write is never served here.
//!   A read that raced with such a write cannot put its older record back: a loaded record is
//!   stored only if no invalidation happened since its read began.
//! - **Other writers** (instances sharing the database, `nexus user …` at the shell, SQL by
//!   hand): an entry is served only while less than [`TTL`] has passed since the read that
//!   produced it *began*, so every write committed before that read is in it. A write made
//!   elsewhere is therefore seen here at most [`TTL`] (1 s, the revocation poll's period) after
//!   it was acknowledged. With Redis, the events other instances publish for user changes and
//!   logins invalidate the entry as soon as they arrive, typically within milliseconds.

use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nexus_kernel::events::{Event, EventBus};

use super::{Identity, User};

/// The longest time an entry is served after the read that produced it began.
pub const TTL: Duration = Duration::from_secs(1);

/// Entries kept at most. Each is a user record (about a kilobyte with its rendering); entries
/// also leave after [`TTL`], so only users read within the last second are held.
const CAPACITY: u64 = 10_000;

/// A cached user and, once a surface has asked for it, its rendered JSON.
#[derive(Debug)]
pub struct Entry {
    pub user: User,
    fetched: Instant,
    rendered: OnceLock<Bytes>,
}

impl Entry {
    /// The response body `render` makes of this user, rendered once per entry. Only one
    /// rendering is memoised (that of `GET /api/users/{id}`, the hot path); it lives and dies
    /// with the entry, so invalidation covers it.
    pub fn rendered(&self, render: impl FnOnce(&User) -> Bytes) -> Bytes {
        self.rendered.get_or_init(|| render(&self.user)).clone()
    }
}

/// Proof that a load began at a given point, for [`UserCache::store`].
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    generation: u64,
    started: Instant,
}

#[derive(Debug)]
pub struct UserCache {
    /// The kernel cache `user` (its statistics and clears are the operations API's).
    entries: nexus_kernel::cache::L1<Arc<Entry>>,
    /// Counts invalidations. A load stores its result only if no invalidation happened since
    /// it began; checking and storing under this lock orders them against invalidations.
    generation: Mutex<u64>,
}

fn builder() -> moka::sync::CacheBuilder<String, Arc<Entry>, moka::sync::Cache<String, Arc<Entry>>> {
    moka::sync::Cache::builder().max_capacity(CAPACITY).time_to_live(TTL)
}

impl Default for UserCache {
    fn default() -> Self {
        Self { entries: nexus_kernel::cache::L1::standalone("user", builder(), "entries"), generation: Mutex::new(0) }
    }
}

impl UserCache {
    /// The cache, registered with the kernel cache as `user`.
    pub fn new(cache: &nexus_kernel::cache::Cache) -> Self {
        Self { entries: cache.l1("user", builder(), "entries"), generation: Mutex::new(0) }
    }

    /// The entry of user `id`, if one is fresh enough to serve.
    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        self.entries.get_if(id, |e| e.fetched.elapsed() < TTL)
    }

    /// Call before reading a user from the database; hand the ticket to [`store`](Self::store).
    pub fn begin(&self) -> Ticket {
        let generation = *self.generation.lock().unwrap_or_else(PoisonError::into_inner);
        Ticket { generation, started: Instant::now() }
    }

    /// Keeps `user`, read under `ticket`, unless it may have been overtaken by a write.
    /// Returns the entry either way, for the caller to answer with.
    pub fn store(&self, user: User, ticket: Ticket) -> Arc<Entry> {
        let id = user.id.clone();
        let entry = Arc::new(Entry { user, fetched: ticket.started, rendered: OnceLock::new() });
        let generation = self.generation.lock().unwrap_or_else(PoisonError::into_inner);
        if *generation == ticket.generation {
            self.entries.insert(id, entry.clone());
        }
        entry
    }

    /// Forgets user `id`: call after every committed change to the user's record or roles.
    pub fn invalidate(&self, id: &str) {
        let mut generation = self.generation.lock().unwrap_or_else(PoisonError::into_inner);
        *generation = generation.wrapping_add(1);
        self.entries.invalidate(id);
    }

    /// Forgets every user (when change notifications may have been missed).
    pub fn invalidate_all(&self) {
        let mut generation = self.generation.lock().unwrap_or_else(PoisonError::into_inner);
        *generation = generation.wrapping_add(1);
        self.entries.invalidate_all();
    }
}

/// Whose cached record an event from another instance makes stale, if anyone's: every
/// `user.*` change, and logins (they set `last_login`).
fn changed_user(event: &Event) -> Option<&str> {
    let concerns_user = event.kind.starts_with("user.") || event.kind == "auth.login";
    concerns_user.then(|| event.data.get("user_id").and_then(serde_json::Value::as_str)).flatten()
}

/// Invalidates entries as other instances report changes through the event bus (which carries
/// them only when Redis is configured), until the service is dropped or the bus closes. Changes
/// made here are invalidated by their write paths and skipped.
pub fn follow_remote_changes(identity: Weak<Identity>, bus: &EventBus) {
    let events = bus.clone();
    bus.follow(identity, move |identity, event| match event {
        Some(event) => {
            if !events.is_local(event)
                && let Some(user_id) = changed_user(event)
            {
                identity.users.invalidate(user_id);
            }
        }
        // Notifications were lost: any entry may be stale.
        None => identity.users.invalidate_all(),
    });
}

#[cfg(test)]
mod tests {
    use nexus_kernel::clock::Timestamp;

    use super::*;

    fn user(id: &str, name: &str) -> User {
        User {
            id: id.into(),
            username: name.into(),
            email: format!("{name}@example.com"),
            full_name: String::new(),
            roles: vec!["user".into()],
            status: "active".into(),
            metadata: serde_json::json!({}),
            created_at: Timestamp::from_micros(0),
            updated_at: Timestamp::from_micros(0),
            last_login: None,
        }
    }

    #[test]
    fn a_load_overtaken_by_an_invalidation_is_not_kept() {
        let cache = UserCache::default();
        let ticket = cache.begin();
        // A write commits and invalidates while the (older) read is in flight.
        cache.invalidate("u1");
        let served = cache.store(user("u1", "old"), ticket);
        assert_eq!(served.user.username, "old", "the racing reader still answers with what it read");
        assert!(cache.get("u1").is_none(), "but the older record is not kept");

        let ticket = cache.begin();
        cache.store(user("u1", "new"), ticket);
        assert_eq!(cache.get("u1").map(|e| e.user.username.clone()).as_deref(), Some("new"));
        cache.invalidate("u1");
        assert!(cache.get("u1").is_none());
    }

    #[test]
    fn entries_expire_ttl_after_their_read_began() {
        let cache = UserCache::default();
        let mut ticket = cache.begin();
        ticket.started = Instant::now().checked_sub(TTL).unwrap_or_else(Instant::now);
        cache.store(user("u1", "a"), ticket);
        assert!(cache.get("u1").is_none(), "a read that began TTL ago is not served");
    }

    #[test]
    fn the_rendering_is_made_once_per_entry() {
        let cache = UserCache::default();
        let entry = cache.store(user("u1", "a"), cache.begin());
        let first = entry.rendered(|u| Bytes::from(u.username.clone()));
        let second = entry.rendered(|_| Bytes::from_static(b"not called"));
        assert_eq!(first, second);
        assert_eq!(&first[..], b"a");
    }
}
