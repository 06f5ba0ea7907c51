//! The in-process event bus. Domains publish as they act; WebSocket subscribers, webhooks,
//! audit and metrics consume. Publishing never waits for a consumer: each subscriber has a
//! bounded buffer, and one that falls behind loses events (and learns so), never slowing the
//! publisher or anyone else.
//!
//! When Redis is configured ([`EventBus::connect_redis`]), every event published here is also
//! sent to the installation's Redis channel, and every event another instance sent there is
//! delivered here. Each event carries the id of the instance that published it, so an instance
//! never re-delivers its own events and consumers that must act once per event (the webhook
//! outbox) can act only on the events of their own instance.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};

use crate::clock::Timestamp;

/// Events buffered per subscriber before the slowest starts losing them.
const CAPACITY: usize = 4096;

/// Events waiting to be sent to Redis before new ones are dropped (with a warning).
const RELAY_CAPACITY: usize = 8192;

/// The envelope every event travels in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// `evt_…`
    pub id: String,
    /// Dotted type, such as `user.created`.
    #[serde(rename = "type")]
    pub kind: String,
    pub data: serde_json::Value,
    /// RFC 3339.
    pub timestamp: String,
    /// The plugin or component that published it.
    pub source: String,
    /// The instance (process) that published it (for an event of the outbox: that wrote it);
    /// not part of the public envelope.
    #[serde(skip)]
    pub origin: String,
    /// Whether it was written to the outbox with the change it describes (and so reaches the
    /// durable consumers, webhooks among them, from there); not part of the public envelope.
    #[serde(skip)]
    pub durable: bool,
}

/// Events of one source, serialised as they are added, for one outbox batch row
/// ([`crate::outbox::OutboxTx::write_batch`]): a change that announces many (a bulk insert)
/// builds its events before its transaction, from data it has already serialised, so that the
/// transaction, which holds SQLite's one write lock, only writes the row. The events share the
/// batch's time, as they describe one change.
#[derive(Debug)]
pub struct EventBatch {
    source: String,
    /// `source` as a JSON string.
    source_json: String,
    origin: String,
    timestamp: String,
    /// The first event's id and type, the row's own columns.
    first: Option<(String, String)>,
    /// The JSON array of the envelopes, as `Event` serialises them.
    json: String,
}

impl EventBatch {
    /// Adds an event of `kind` whose `data` is the text of a JSON object, which the caller
    /// serialised (with serde: it goes into the row as it is).
    pub fn push_raw(&mut self, kind: &str, data: &str) {
        let id = new_event_id();
        let json = &mut self.json;
        json.reserve(data.len() + id.len() + kind.len() + self.timestamp.len() + self.source_json.len() + 64);
        match json.pop() {
            Some(_) => json.push(','),
            None => json.push('['),
        }
        json.push_str("{\"id\":\"");
        json.push_str(&id);
        json.push_str("\",\"type\":");
        json.push_str(&json_string(kind));
        json.push_str(",\"data\":");
        json.push_str(data);
        json.push_str(",\"timestamp\":\"");
        json.push_str(&self.timestamp);
        json.push_str("\",\"source\":");
        json.push_str(&self.source_json);
        json.push_str("}]");
        if self.first.is_none() {
            self.first = Some((id, kind.to_string()));
        }
    }

    /// Adds an event of `kind` with `data`.
    pub fn push(&mut self, kind: &str, data: &serde_json::Value) {
        self.push_raw(kind, &data.to_string());
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// The first event's id and type, when there is one.
    pub fn first(&self) -> Option<(&str, &str)> {
        self.first.as_ref().map(|(id, kind)| (id.as_str(), kind.as_str()))
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn timestamp(&self) -> &str {
        &self.timestamp
    }

    /// The JSON array of the events' envelopes.
    pub fn json(&self) -> &str {
        &self.json
    }
}

/// A new `evt_…` id: time-ordered (UUIDv7), so that the outbox's indexes on event ids grow at
/// their end instead of taking each new event at a random page.
fn new_event_id() -> String {
    format!("evt_{}", uuid::Uuid::now_v7().simple())
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// An event as it crosses Redis: with the instance that sent it, and (when another instance
/// wrote it to the outbox) the instance that wrote it.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    writer: Option<String>,
    #[serde(default)]
    durable: bool,
    event: Event,
}

#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
    /// This process's id, random per start.
    instance: Arc<str>,
    /// Where events for other instances go, once Redis is connected.
    relay: Arc<OnceLock<mpsc::Sender<Arc<Event>>>>,
    closing: Arc<watch::Sender<bool>>,
    /// Events delivered to this instance's subscribers since it started.
    delivered: Arc<std::sync::atomic::AtomicU64>,
}

/// What the bus has done, for the operations API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BusStats {
    /// Events still buffered for the slowest subscriber.
    pub queue_size: usize,
    /// Events delivered to this instance's subscribers since it started.
    pub processed_events: u64,
    pub subscribers: usize,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        let (closing, _) = watch::channel(false);
        Self {
            tx,
            instance: Arc::from(format!("inst_{}", crate::id::random_alphanumeric(16))),
            relay: Arc::new(OnceLock::new()),
            closing: Arc::new(closing),
            delivered: Arc::default(),
        }
    }

    /// The id of this instance, as events published here carry it in [`Event::origin`].
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    /// Whether `event` was published by this instance (rather than relayed from another).
    pub fn is_local(&self, event: &Event) -> bool {
        *event.origin == *self.instance
    }

    /// The envelope of a new event of `kind` with `data` from `source`, published by this
    /// instance, without publishing it: what a store writes to the outbox
    /// ([`crate::outbox`]) in the transaction of the change it describes.
    pub fn envelope(&self, source: &str, kind: &str, data: serde_json::Value) -> Event {
        Event {
            id: new_event_id(),
            kind: kind.to_string(),
            data,
            timestamp: Timestamp::now().to_rfc3339(),
            source: source.to_string(),
            origin: self.instance.to_string(),
            durable: false,
        }
    }

    /// An empty batch of events from `source`, published by this instance
    /// ([`EventBatch`]).
    pub fn batch(&self, source: &str) -> EventBatch {
        EventBatch {
            source: source.to_string(),
            source_json: json_string(source),
            origin: self.instance.to_string(),
            timestamp: Timestamp::now().to_rfc3339(),
            first: None,
            json: String::new(),
        }
    }

    /// Publishes `kind` with `data` from `source` now; returns the event as sent. For events
    /// that describe no committed change (notices, tests): an event of a change goes through
    /// the outbox, so that it survives a crash after the commit.
    pub fn publish(&self, source: &str, kind: &str, data: serde_json::Value) -> Arc<Event> {
        let event = Arc::new(self.envelope(source, kind, data));
        self.publish_event(event.clone());
        event
    }

    /// Delivers an already-built event to this instance's subscribers, and to the other
    /// instances when it was published here. An event relayed from another instance is
    /// delivered locally only.
    pub fn publish_event(&self, event: Arc<Event>) {
        if self.is_local(&event) {
            self.send_to_redis(&event);
        }
        // No subscriber is not an error: the event simply has no one to reach.
        self.delivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = self.tx.send(event);
    }

    /// Delivers an event taken from the outbox, whichever instance wrote it, here and to every
    /// other instance: the outbox hands each event to one instance's relay only.
    pub fn publish_from_outbox(&self, event: Arc<Event>) {
        self.send_to_redis(&event);
        self.delivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = self.tx.send(event);
    }

    /// Queue size, events processed and subscribers of this instance's bus.
    pub fn stats(&self) -> BusStats {
        BusStats {
            queue_size: self.tx.len(),
            processed_events: self.delivered.load(std::sync::atomic::Ordering::Relaxed),
            subscribers: self.tx.receiver_count(),
        }
    }

    fn send_to_redis(&self, event: &Arc<Event>) {
        if let Some(relay) = self.relay.get()
            && let Err(mpsc::error::TrySendError::Full(_)) = relay.try_send(event.clone())
        {
            tracing::warn!(kind = %event.kind, "event relay to redis is backed up; event not sent to other instances");
        }
    }

    /// A new subscription receiving every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Calls `on` with every event published from now on, or with `None` when events were
    /// missed (the subscriber fell behind), until the bus closes or `target` is dropped. For
    /// caches that drop entries as the bus reports changes.
    pub fn follow<T>(&self, target: Weak<T>, on: impl Fn(&T, Option<&Event>) + Send + 'static)
    where
        T: Send + Sync + 'static,
    {
        let mut events = self.subscribe();
        let closed = self.closed();
        tokio::spawn(async move {
            tokio::pin!(closed);
            loop {
                let received = tokio::select! {
                    () = &mut closed => return,
                    received = events.recv() => received,
                };
                let Some(target) = target.upgrade() else { return };
                match received {
                    Ok(event) => on(&target, Some(&event)),
                    Err(broadcast::error::RecvError::Lagged(_)) => on(&target, None),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Tells every long-running consumer (WebSocket connections, workers, the Redis bridge)
    /// that the instance is shutting down.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    pub fn is_closed(&self) -> bool {
        *self.closing.borrow()
    }

    /// Resolves once [`close`](Self::close) has been called.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|closed| *closed).await;
        }
    }

    /// Bridges this bus to the Redis channel of installation `server_id`: events published
    /// here go out, events other instances publish come in. Returns once subscribed, so that
    /// events published elsewhere after this returns are seen here.
    pub async fn connect_redis(
        &self,
        url: &str,
        server_id: &str,
        conn: redis::aio::ConnectionManager,
    ) -> Result<(), redis::RedisError> {
        let channel = format!("nexus:events:{server_id}");
        let client = redis::Client::open(url)?;
        let pubsub = subscribe(&client, &channel).await?;

        let (relay_tx, relay_rx) = mpsc::channel(RELAY_CAPACITY);
        if self.relay.set(relay_tx).is_err() {
            return Ok(());
        }
        tokio::spawn(relay_out(self.clone(), conn, channel.clone(), relay_rx));
        tokio::spawn(relay_in(self.clone(), client, channel, pubsub));
        Ok(())
    }
}

async fn subscribe(client: &redis::Client, channel: &str) -> Result<redis::aio::PubSub, redis::RedisError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// Sends this instance's events to Redis, in order, until shutdown.
async fn relay_out(
    bus: EventBus,
    mut conn: redis::aio::ConnectionManager,
    channel: String,
    mut rx: mpsc::Receiver<Arc<Event>>,
) {
    let closed = bus.closed();
    tokio::pin!(closed);
    loop {
        let event = tokio::select! {
            () = &mut closed => return,
            event = rx.recv() => match event { Some(e) => e, None => return },
        };
        let writer = (*event.origin != *bus.instance).then(|| event.origin.clone());
        let wire = Wire { origin: bus.instance.to_string(), writer, durable: event.durable, event: (*event).clone() };
        let Ok(payload) = serde_json::to_string(&wire) else { continue };
        let sent: Result<i64, _> = redis::cmd("PUBLISH").arg(&channel).arg(payload).query_async(&mut conn).await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, kind = %event.kind, "could not relay event to redis");
        }
    }
}

/// Delivers other instances' events here, reconnecting when the subscription drops.
async fn relay_in(bus: EventBus, client: redis::Client, channel: String, first: redis::aio::PubSub) {
    use futures::StreamExt;
    let closed = bus.closed();
    tokio::pin!(closed);
    let mut pubsub = Some(first);
    loop {
        let current = match pubsub.take() {
            Some(p) => p,
            None => {
                tokio::select! {
                    () = &mut closed => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                match subscribe(&client, &channel).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "redis event subscription failed; retrying");
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
            let Ok(wire) = serde_json::from_slice::<Wire>(msg.get_payload_bytes()) else {
                tracing::warn!("ignoring a malformed event from redis");
                continue;
            };
            if wire.origin == *bus.instance {
                continue;
            }
            let mut event = wire.event;
            event.origin = wire.writer.unwrap_or(wire.origin);
            event.durable = wire.durable;
            // Here only: this instance's own events (even one another instance relayed from
            // the outbox) must not go back out.
            bus.delivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = bus.tx.send(Arc::new(event));
        }
        tracing::warn!("redis event subscription ended; reconnecting");
    }
}

/// Whether `kind` matches `pattern`: exact, `*` for all, or a `prefix.*` wildcard.
pub fn matches(pattern: &str, kind: &str) -> bool {
    if pattern == "*" || pattern == kind {
        return true;
    }
    pattern.strip_suffix(".*").is_some_and(|prefix| kind.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.')))
}

/// Whether `pattern` is a valid event-type pattern: dotted segments of letters, digits, `_`
/// and `-`, optionally ending in `.*`, or `*` alone.
pub fn valid_pattern(pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let body = pattern.strip_suffix(".*").unwrap_or(pattern);
    (1..=200).contains(&pattern.len())
        && body
            .split('.')
            .all(|seg| !seg.is_empty() && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
}

/// The domain of an event type: its first segment (`user` for `user.created`).
pub fn domain(kind: &str) -> &str {
    kind.split('.').next().unwrap_or(kind)
}

/// The permission a subscriber (WebSocket client, webhook owner) needs to see events of
/// `kind`. Secret and audit events need their own permissions; unknown domains need
/// `read:system`.
pub fn required_permission(kind: &str) -> &'static str {
    permission_for_domain(domain(kind))
}

/// The permission for the events of one domain.
pub fn permission_for_domain(domain: &str) -> &'static str {
    match domain {
        "user" => "user.read",
        "auth" | "apikey" | "audit" => "audit.read",
        // Secret events name paths in every user's namespace, so only those who may read the
        // whole audit log see them: `secret.read` grants no path by itself (docs/secrets.md).
        "secret" => "audit.read",
        "plugin" => "plugin.read",
        "document" | "database" => "database.read",
        "webhook" => "webhook.read",
        "analytics" => "analytics.read",
        "media" | "ai" | "voice" | "xr" | "web3" => "media.read",
        _ => "read:system",
    }
}

/// Every permission that events matching `pattern` may need: one domain's for `user.*` or
/// `user.created`, all of them for `*`.
pub fn permissions_for_pattern(pattern: &str) -> Vec<&'static str> {
    if pattern == "*" {
        let mut all: Vec<&'static str> = KNOWN_DOMAINS.iter().map(|d| permission_for_domain(d)).collect();
        all.push(permission_for_domain(""));
        all.sort_unstable();
        all.dedup();
        return all;
    }
    vec![required_permission(pattern)]
}

const KNOWN_DOMAINS: &[&str] = &[
    "user",
    "auth",
    "apikey",
    "audit",
    "secret",
    "plugin",
    "document",
    "database",
    "webhook",
    "media",
    "system",
    "analytics",
];

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn subscribers_receive_what_is_published() {
        let bus = super::EventBus::new();
        let mut rx = bus.subscribe();
        let sent = bus.publish("identity", "user.created", serde_json::json!({"id": "u1"}));
        let got = rx.recv().await.map(|e| e.id.clone());
        assert_eq!(got.ok(), Some(sent.id.clone()));
        assert!(sent.id.starts_with("evt_"));
        assert!(bus.is_local(&sent));
    }

    #[test]
    fn patterns() {
        assert!(super::matches("user.*", "user.created"));
        assert!(super::matches("*", "secret.updated"));
        assert!(!super::matches("user.*", "users.created"));
        assert!(!super::matches("user.created", "user.deleted"));
        assert!(super::valid_pattern("user.*") && super::valid_pattern("*") && super::valid_pattern("a.b_c"));
        assert!(!super::valid_pattern("user.") && !super::valid_pattern("us er") && !super::valid_pattern(""));
    }

    #[test]
    fn envelope_has_no_origin() {
        let bus = super::EventBus::new();
        let e = bus.publish("x", "system.test", serde_json::json!({}));
        let v = serde_json::to_value(&*e).unwrap_or_default();
        assert!(v.get("origin").is_none());
        assert_eq!(v["type"], "system.test");
    }

    #[tokio::test]
    async fn close_resolves_waiters() {
        let bus = super::EventBus::new();
        let waiter = bus.closed();
        bus.close();
        waiter.await;
        assert!(bus.is_closed());
    }
}
