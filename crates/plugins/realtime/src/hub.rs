//! Fan-out of the bus's events to this instance's WebSocket connections.
//!
//! One dispatcher task receives each event from the bus once, renders its message once per
//! channel, and hands those same bytes (reference-counted, never copied or re-serialised) to
//! every connection whose permissions and subscriptions accept the event, by a non-blocking
//! push into the connection's bounded send queue. Per (event, connection) that leaves a filter
//! check, a reference-count increment and the wake-up of the connection's writer. A bus
//! receiver per connection would wake every connection's task on every event and serialise
//! the message once per connection: at 1,000 subscribers, more CPU than writing the sockets.
//!
//! A connection whose queue is full is a slow consumer: it gets nothing more from here and is
//! told (through [`Overflow`]) to close itself; the dispatcher never waits for anyone. If the
//! dispatcher itself falls behind the bus, every subscribed connection gets `EVENTS_DROPPED`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use axum::extract::ws::{Message, Utf8Bytes};
use nexus_identity::Principal;
use nexus_kernel::events::{self, Event, EventBus};
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast, mpsc};

use crate::channels::{self, ChannelTable, Filters};

/// Raised once a connection's send queue overflowed; the connection then closes itself.
#[derive(Debug, Default)]
pub struct Overflow {
    raised: AtomicBool,
    notify: Notify,
}

impl Overflow {
    pub fn raise(&self) {
        if !self.raised.swap(true, Ordering::AcqRel) {
            // `notify_one` keeps a permit when the connection is not waiting at that moment,
            // so the signal is not lost.
            self.notify.notify_one();
        }
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Resolves once [`raise`](Self::raise) has been called.
    pub async fn raised(&self) {
        while !self.is_raised() {
            self.notify.notified().await;
        }
    }
}

/// What the dispatcher knows of one subscribed connection.
#[derive(Debug)]
pub struct Subscriber {
    pub principal: Arc<Principal>,
    /// Index into the hub's [`ChannelTable`] and the subscription's filters, in channel-name order.
    pub subscriptions: Vec<(usize, Arc<Filters>)>,
    pub queue: mpsc::Sender<Message>,
    pub overflow: Arc<Overflow>,
}

#[derive(Debug)]
pub struct Hub {
    bus: EventBus,
    pub channels: ChannelTable,
    subscribers: Mutex<HashMap<u64, Subscriber>>,
    next_id: AtomicU64,
    /// Set once the dispatcher runs (started with the first subscription).
    dispatcher: OnceLock<()>,
}

impl Hub {
    pub fn new(bus: EventBus, channels: ChannelTable) -> Arc<Self> {
        Arc::new(Self {
            bus,
            channels,
            subscribers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            dispatcher: OnceLock::new(),
        })
    }

    /// A new connection's id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sets (or replaces) what connection `id` receives. Every event published after this
    /// returns is considered for it.
    pub fn set(self: &Arc<Self>, id: u64, subscriber: Subscriber) {
        // Started here, in the runtime, rather than at service start; the bus receiver is
        // taken before the first subscriber is entered, so no event published after a
        // subscription is acknowledged can be missed.
        self.dispatcher.get_or_init(|| {
            tokio::spawn(dispatch(self.clone(), self.bus.subscribe()));
        });
        self.lock().insert(id, subscriber);
    }

    /// Connection `id` receives nothing any more.
    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Subscriber>> {
        // Nothing panics while holding the lock; should it ever, the map is still consistent
        // (every change is a single insert or remove).
        self.subscribers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `event` to every subscriber that may see it and subscribed to a channel carrying
    /// it, once per such channel.
    fn deliver(&self, event: &Event) {
        let permission = events::required_permission(&event.kind);
        let carried: Vec<bool> = (0..self.channels.len()).map(|i| self.channels.carries(i, event)).collect();
        if !carried.contains(&true) {
            return;
        }
        let plugin = self.channels.plugin_id(event);
        // Rendered on first use, then shared by every recipient.
        let mut data: Option<Value> = None;
        let mut rendered: Vec<Option<Utf8Bytes>> = vec![None; carried.len()];
        let subscribers = self.lock();
        for sub in subscribers.values() {
            if sub.overflow.is_raised() || !sub.principal.has(permission) {
                continue;
            }
            for (index, filters) in &sub.subscriptions {
                let (Some(true), Some(slot), Some(channel)) =
                    (carried.get(*index).copied(), rendered.get_mut(*index), self.channels.name(*index))
                else {
                    continue;
                };
                if !filters.accepts(event, plugin) {
                    continue;
                }
                let text = slot.get_or_insert_with(|| {
                    let data = data.get_or_insert_with(|| channels::event_data(event, plugin));
                    let msg =
                        json!({ "type": "event", "channel": channel, "data": data, "timestamp": event.timestamp });
                    Utf8Bytes::from(msg.to_string())
                });
                if !push(sub, text.clone()) {
                    break;
                }
            }
        }
    }

    /// The dispatcher fell `missed` events behind the bus: every subscriber is told.
    fn dropped(&self, missed: u64) {
        tracing::warn!(missed, "WebSocket fan-out fell behind the event bus; events were dropped");
        let text = Utf8Bytes::from(
            json!({
                "type": "error",
                "code": "EVENTS_DROPPED",
                "message": format!("{missed} events were dropped because the server fell behind"),
                "missed": missed,
            })
            .to_string(),
        );
        // The notice is advisory: a subscriber whose queue has no room for it misses the
        // notice, not its connection (only events it asked for may overflow it).
        for sub in self.lock().values() {
            if !sub.overflow.is_raised() {
                let _ = sub.queue.try_send(Message::Text(text.clone()));
            }
        }
    }
}

/// Queues `text` for `sub` without waiting; false (and the connection told to close) when
/// its queue is full. A closed queue means the connection is ending and leaves on its own.
fn push(sub: &Subscriber, text: Utf8Bytes) -> bool {
    match sub.queue.try_send(Message::Text(text)) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            sub.overflow.raise();
            false
        }
    }
}

async fn dispatch(hub: Arc<Hub>, mut rx: broadcast::Receiver<Arc<Event>>) {
    let closed = hub.bus.closed();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            () = &mut closed => return,
            event = rx.recv() => match event {
                Ok(event) => hub.deliver(&event),
                Err(broadcast::error::RecvError::Lagged(missed)) => hub.dropped(missed),
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(permissions: &[&str]) -> Arc<Principal> {
        let mut p = Principal::system();
        p.roles = vec![];
        let scopes: Vec<String> = permissions.iter().map(|s| (*s).to_string()).collect();
        p.permissions = p.permissions.narrowed_to(&scopes);
        Arc::new(p)
    }

    fn subscriber(
        hub: &Arc<Hub>,
        who: Arc<Principal>,
        names: &[&str],
        buffer: usize,
    ) -> (u64, mpsc::Receiver<Message>, Arc<Overflow>) {
        let (queue, rx) = mpsc::channel(buffer);
        let overflow = Arc::new(Overflow::default());
        let subscriptions =
            names.iter().filter_map(|c| hub.channels.position(c).map(|i| (i, Arc::new(Filters::default())))).collect();
        let id = hub.next_id();
        hub.set(id, Subscriber { principal: who, subscriptions, queue, overflow: overflow.clone() });
        (id, rx, overflow)
    }

    async fn next_text(rx: &mut mpsc::Receiver<Message>) -> Value {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await;
        match msg {
            Ok(Some(Message::Text(t))) => serde_json::from_str(t.as_str()).unwrap_or_default(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn one_rendering_per_channel_shared_by_every_recipient() {
        let bus = EventBus::new();
        let hub = Hub::new(bus.clone(), channels::tests::table());
        let (_, mut a, _) = subscriber(&hub, principal(&["user.read"]), &["events", "user_events"], 8);
        let (_, mut b, _) = subscriber(&hub, principal(&["user.read"]), &["user_events"], 8);
        let (_, mut denied, _) = subscriber(&hub, principal(&["read:system"]), &["events"], 8);
        bus.publish("identity", "user.created", json!({ "user_id": "u1" }));
        bus.publish("system", "system.notice", json!({}));

        // Once per subscribed channel, in channel-name order.
        let first = next_text(&mut a).await;
        assert_eq!((first["channel"].as_str(), first["data"]["type"].as_str()), (Some("events"), Some("user.created")));
        let second = next_text(&mut a).await;
        assert_eq!(second["channel"], "user_events");
        assert_eq!(second["data"]["payload"]["user_id"], "u1");
        assert_eq!(next_text(&mut b).await, second);
        // Without user.read the user event never arrives, even on `events`.
        assert_eq!(next_text(&mut denied).await["data"]["type"], "system.notice");
    }

    #[tokio::test]
    async fn a_full_queue_raises_overflow_and_nobody_waits() {
        let bus = EventBus::new();
        let hub = Hub::new(bus.clone(), channels::tests::table());
        let (_, _slow_rx, slow) = subscriber(&hub, principal(&["read:system"]), &["system_events"], 2);
        let (id, mut fast_rx, fast) = subscriber(&hub, principal(&["read:system"]), &["system_events"], 64);
        for i in 0..10 {
            bus.publish("system", "system.flood", json!({ "i": i }));
        }
        for i in 0..10 {
            assert_eq!(next_text(&mut fast_rx).await["data"]["payload"]["i"], i);
        }
        tokio::time::timeout(std::time::Duration::from_secs(5), slow.raised())
            .await
            .unwrap_or_else(|_| panic!("no overflow"));
        assert!(!fast.is_raised());
        hub.remove(id);
        bus.publish("system", "system.after", json!({}));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(fast_rx.try_recv().is_err(), "a removed connection receives nothing");
    }
}
