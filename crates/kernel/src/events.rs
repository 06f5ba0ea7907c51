//! The in-process event bus. Domains publish as they act; WebSocket subscribers, webhooks,
//! audit and metrics consume. Publishing never waits for a consumer: each subscriber has a
//! bounded buffer, and one that falls behind loses events (and learns so), never slowing the
//! publisher or anyone else.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::clock::Timestamp;

/// Events buffered per subscriber before the slowest starts losing them.
const CAPACITY: usize = 4096;

/// The envelope every event travels in.
#[derive(Debug, Clone, Serialize)]
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
}

#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        Self { tx }
    }

    /// Publishes `kind` with `data` from `source`; returns the event as sent.
    pub fn publish(&self, source: &str, kind: &str, data: serde_json::Value) -> Arc<Event> {
        let event = Arc::new(Event {
            id: format!("evt_{}", crate::id::random_alphanumeric(20)),
            kind: kind.to_string(),
            data,
            timestamp: Timestamp::now().to_rfc3339(),
            source: source.to_string(),
        });
        self.publish_event(event.clone());
        event
    }

    /// Delivers an already-built event (for example one relayed from another instance).
    pub fn publish_event(&self, event: Arc<Event>) {
        // No subscriber is not an error: the event simply has no one to reach.
        let _ = self.tx.send(event);
    }

    /// A new subscription receiving every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

/// Whether `kind` matches `pattern`: exact, `*` for all, or a `prefix.*` wildcard.
pub fn matches(pattern: &str, kind: &str) -> bool {
    if pattern == "*" || pattern == kind {
        return true;
    }
    pattern.strip_suffix(".*").is_some_and(|prefix| kind.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.')))
}

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
    }

    #[test]
    fn patterns() {
        assert!(super::matches("user.*", "user.created"));
        assert!(super::matches("*", "secret.updated"));
        assert!(!super::matches("user.*", "users.created"));
        assert!(!super::matches("user.created", "user.deleted"));
    }
}
