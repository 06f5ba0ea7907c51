//! Which access tokens are revoked before they expire. Each instance keeps the set in memory
//! (no database round trip per request).
//!
//! How a revocation made on one instance reaches the others:
//! - **With Redis** (`redis.url`): the instance that revokes publishes it on the installation's
//!   revocation channel before it answers; every other instance applies it as it arrives,
//!   within milliseconds. The channel is identity's own, not the event bus, so revocations
//!   (session ids among them) never reach WebSocket subscribers or webhooks.
//! - **Always**: every revocation is also a row in `revocations`, which each instance polls every
//!   second. This catches what Redis missed (a dropped subscription, an instance that was
//!   restarting) and is the only path without Redis.

use std::collections::{HashMap, HashSet};
use std::sync::{RwLock, Weak};
use std::time::Duration;

use nexus_kernel::clock::Timestamp;
use nexus_kernel::db::StorageError;
use serde::{Deserialize, Serialize};

use super::Identity;
use crate::store::IdentityStore;

const POLL: Duration = Duration::from_secs(1);
/// Polls look back this far, so a row committed late (after a later one) is not missed.
const OVERLAP_MICROS: i64 = 10_000_000;
/// The longest a revocation waits for Redis to take it before the answer goes out anyway
/// (the database poll then carries it).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

/// What is revoked: a session, every token of a user issued before a time, or an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Session,
    User,
    ApiKey,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Session => "session",
            Kind::User => "user",
            Kind::ApiKey => "apikey",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "session" => Kind::Session,
            "user" => Kind::User,
            // Unknown kinds are treated as the broadest harmless one: cached keys are dropped.
            _ => Kind::ApiKey,
        }
    }
}

#[derive(Debug, Default)]
pub struct Revoked {
    state: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashSet<String>,
    /// Tokens of a user issued before this instant (µs) are void.
    users: HashMap<String, i64>,
    polled_at: i64,
}

impl Revoked {
    pub fn rejects(&self, sid: &str, user_id: &str, issued_at_us: i64) -> bool {
        let Ok(state) = self.state.read() else { return true };
        state.sessions.contains(sid) || state.users.get(user_id).is_some_and(|nb| issued_at_us < *nb)
    }

    pub fn revoke_session(&self, sid: &str) {
        if let Ok(mut state) = self.state.write() {
            state.sessions.insert(sid.to_string());
        }
    }

    pub fn revoke_user(&self, user_id: &str, not_before: i64) {
        if let Ok(mut state) = self.state.write() {
            apply(&mut state, Kind::User, user_id.to_string(), not_before);
        }
    }

    /// Records a revocation made elsewhere; whether cached API-key owners must be dropped.
    pub fn apply(&self, kind: Kind, subject: String, not_before: i64) -> bool {
        match self.state.write() {
            Ok(mut state) => apply(&mut state, kind, subject, not_before),
            Err(_) => true,
        }
    }

    /// Loads revocations recorded since the last poll; whether an API key was among them.
    pub async fn load(&self, store: &dyn IdentityStore) -> Result<bool, StorageError> {
        let since = self.state.read().map(|s| s.polled_at).unwrap_or(0);
        let now = Timestamp::now().as_micros();
        let rows = store.revocations_since(since.saturating_sub(OVERLAP_MICROS)).await?;
        let mut keys_changed = false;
        if let Ok(mut state) = self.state.write() {
            for row in rows {
                keys_changed |= apply(&mut state, Kind::parse(&row.kind), row.subject, row.not_before);
            }
            state.polled_at = now;
        }
        Ok(keys_changed)
    }
}

/// Applies one revocation; whether cached API-key owners must be dropped (a user's or a key's).
fn apply(state: &mut State, kind: Kind, subject: String, not_before: i64) -> bool {
    match kind {
        Kind::Session => {
            state.sessions.insert(subject);
            false
        }
        Kind::User => {
            let entry = state.users.entry(subject).or_insert(not_before);
            *entry = (*entry).max(not_before);
            true
        }
        Kind::ApiKey => true,
    }
}

/// Polls for revocations made elsewhere until the service is dropped; purges expired rows
/// hourly.
pub fn watch(identity: Weak<Identity>) {
    tokio::spawn(async move {
        let mut ticks: u64 = 0;
        loop {
            tokio::time::sleep(POLL).await;
            let Some(identity) = identity.upgrade() else { return };
            match identity.revoked.load(identity.store.as_ref()).await {
                Ok(true) => identity.keys.invalidate_all(),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not poll revocations"),
            }
            ticks += 1;
            if ticks.is_multiple_of(3600)
                && let Err(e) = identity.store.purge_expired(Timestamp::now()).await
            {
                tracing::warn!(error = %e, "could not purge expired tokens");
            }
        }
    });
}

/// A revocation as it crosses Redis.
#[derive(Debug, Serialize, Deserialize)]
struct Notice {
    /// The instance that revoked (it has applied the revocation already).
    origin: String,
    kind: String,
    subject: String,
    not_before: i64,
}

/// Where this instance announces its revocations, when Redis is configured.
#[derive(Clone)]
pub struct Broadcast {
    conn: redis::aio::ConnectionManager,
    channel: String,
    origin: String,
}

impl std::fmt::Debug for Broadcast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broadcast").field("channel", &self.channel).finish_non_exhaustive()
    }
}

/// The revocation channel of installation `server_id`.
fn channel(server_id: &str) -> String {
    format!("nexus:revocations:{server_id}")
}

impl Broadcast {
    pub fn new(conn: redis::aio::ConnectionManager, server_id: &str, origin: &str) -> Self {
        Self { conn, channel: channel(server_id), origin: origin.to_string() }
    }

    /// Tells the other instances; a failure is logged, as the database poll carries it too.
    pub async fn announce(&self, kind: Kind, subject: &str, not_before: i64) {
        let notice = Notice {
            origin: self.origin.clone(),
            kind: kind.as_str().to_string(),
            subject: subject.to_string(),
            not_before,
        };
        let Ok(payload) = serde_json::to_string(&notice) else { return };
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(&self.channel).arg(payload);
        let publish = cmd.query_async::<i64>(&mut conn);
        match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not publish a revocation to redis; other instances poll for it")
            }
            Err(_) => tracing::warn!("publishing a revocation to redis timed out; other instances poll for it"),
        }
    }
}

/// Applies the revocations other instances announce on Redis at `url`, until the service is
/// dropped or the instance shuts down. Returns once subscribed (or once the first attempt
/// failed, after which it keeps retrying in the background).
pub async fn listen(identity: Weak<Identity>, url: &str, server_id: &str, origin: String) {
    let client = match redis::Client::open(url) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for revocations on redis; polling only");
            return;
        }
    };
    let channel = channel(server_id);
    let first = match subscribe(&client, &channel).await {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(error = %e, "redis revocation subscription failed; retrying");
            None
        }
    };
    let Some(bus) = identity.upgrade().map(|i| i.kernel.events.clone()) else { return };
    tokio::spawn(receive(identity, client, channel, origin, first, bus));
}

async fn subscribe(client: &redis::Client, channel: &str) -> Result<redis::aio::PubSub, redis::RedisError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

async fn receive(
    identity: Weak<Identity>,
    client: redis::Client,
    channel: String,
    origin: String,
    first: Option<redis::aio::PubSub>,
    bus: nexus_kernel::events::EventBus,
) {
    use futures::StreamExt;
    let closed = bus.closed();
    tokio::pin!(closed);
    let mut pubsub = first;
    loop {
        let current = match pubsub.take() {
            Some(p) => p,
            None => {
                tokio::select! {
                    () = &mut closed => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if identity.strong_count() == 0 {
                    return;
                }
                match subscribe(&client, &channel).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "redis revocation subscription failed; retrying");
                        continue;
                    }
                }
            }
        };
        let mut messages = current.into_on_message();
        loop {
            let msg = tokio::select! {
                () = &mut closed => return,
                msg = messages.next() => msg,
            };
            let Some(msg) = msg else { break };
            let Ok(notice) = serde_json::from_slice::<Notice>(msg.get_payload_bytes()) else {
                tracing::warn!("ignoring a malformed revocation from redis");
                continue;
            };
            if notice.origin == origin {
                continue;
            }
            let Some(identity) = identity.upgrade() else { return };
            if identity.revoked.apply(Kind::parse(&notice.kind), notice.subject, notice.not_before) {
                identity.keys.invalidate_all();
            }
        }
        tracing::warn!("redis revocation subscription ended; reconnecting");
    }
}
