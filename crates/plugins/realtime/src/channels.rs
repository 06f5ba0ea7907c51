//! Channels a WebSocket client subscribes to, which events each carries, who may subscribe,
//! and the filters a subscription narrows them with.

use nexus_kernel::events::{self, Event};
use serde::Deserialize;
use serde_json::{Value, json};

/// Every channel, with the permission needed to subscribe (`None`: any authenticated
/// client; each event is still checked against its own permission).
pub const CHANNELS: &[(&str, Option<&str>)] = &[
    ("plugin_events", Some("plugin.read")),
    ("user_events", Some("user.read")),
    ("auth_events", Some("audit.read")),
    ("secret_events", Some("secret.read")),
    ("system_events", Some("read:system")),
    ("events", None),
];

/// Sources that are part of Nexus itself; events from any other source are a plugin's.
const CORE_SOURCES: &[&str] =
    &["identity", "secrets", "system", "kernel", "webhooks", "realtime", "audit", "documents", "database", "plugins"];

/// Whether `channel` exists; returns its subscribe permission.
pub fn lookup(channel: &str) -> Option<Option<&'static str>> {
    CHANNELS.iter().find(|(name, _)| *name == channel).map(|(_, perm)| *perm)
}

/// `channel`'s index in [`CHANNELS`].
pub fn position(channel: &str) -> Option<usize> {
    CHANNELS.iter().position(|(name, _)| *name == channel)
}

/// Whether `channel` carries `event`.
pub fn carries(channel: &str, event: &Event) -> bool {
    let domain = events::domain(&event.kind);
    match channel {
        "events" => true,
        "plugin_events" => domain == "plugin" || !CORE_SOURCES.contains(&event.source.as_str()),
        "user_events" => domain == "user",
        "auth_events" => matches!(domain, "auth" | "apikey"),
        "secret_events" => domain == "secret",
        "system_events" => domain == "system",
        _ => false,
    }
}

/// The plugin an event concerns: its `data.plugin_id`, else its source when that is a plugin.
pub fn plugin_id(event: &Event) -> Option<&str> {
    if let Some(id) = event.data.get("plugin_id").and_then(Value::as_str) {
        return Some(id);
    }
    (!CORE_SOURCES.contains(&event.source.as_str())).then_some(event.source.as_str())
}

/// A subscription's filters, as the seed documents them; both optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    pub plugin_id: Option<String>,
    /// Event types or wildcard patterns (`user.*`, `*`). For plugin events a pattern may also
    /// name the type without its `plugin.<id>.` prefix (`data_update`).
    pub event_types: Option<Vec<String>>,
}

impl Filters {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(types) = &self.event_types {
            if types.len() > 100 {
                return Err("at most 100 event types".into());
            }
            if let Some(bad) = types.iter().find(|t| !events::valid_pattern(t)) {
                return Err(format!("`{bad}` is not a valid event type pattern"));
            }
        }
        Ok(())
    }

    pub fn accepts(&self, event: &Event) -> bool {
        let plugin = plugin_id(event);
        if let Some(wanted) = &self.plugin_id
            && plugin != Some(wanted.as_str())
        {
            return false;
        }
        match &self.event_types {
            None => true,
            Some(patterns) => {
                let short = short_type(event, plugin);
                patterns.iter().any(|p| events::matches(p, &event.kind) || short.is_some_and(|s| events::matches(p, s)))
            }
        }
    }

    pub fn to_json(&self) -> Value {
        json!({ "plugin_id": self.plugin_id, "event_types": self.event_types })
    }
}

/// `data_update` for `plugin.analytics.data_update` of plugin `analytics`, or the event's own
/// `data.event_type`.
fn short_type<'a>(event: &'a Event, plugin: Option<&str>) -> Option<&'a str> {
    if let Some(t) = event.data.get("event_type").and_then(Value::as_str) {
        return Some(t);
    }
    let plugin = plugin?;
    event.kind.strip_prefix("plugin.")?.strip_prefix(plugin)?.strip_prefix('.')
}

/// The `data` of an event message: the seed's `plugin_id` / `event_type` / `payload`, plus the
/// envelope's id, type and source.
pub fn event_data(event: &Event) -> Value {
    let mut data = json!({
        "id": event.id,
        "type": event.kind,
        "event_type": event.kind,
        "source": event.source,
        "payload": event.data,
    });
    if let (Some(obj), Some(plugin)) = (data.as_object_mut(), plugin_id(event)) {
        obj.insert("plugin_id".into(), Value::from(plugin));
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, source: &str, data: Value) -> Event {
        Event {
            id: "evt_1".into(),
            kind: kind.into(),
            data,
            timestamp: "t".into(),
            source: source.into(),
            origin: String::new(),
            durable: false,
        }
    }

    #[test]
    fn channels_and_filters() {
        let created = ev("user.created", "identity", json!({"id": "u"}));
        assert!(carries("user_events", &created) && carries("events", &created));
        assert!(!carries("plugin_events", &created) && !carries("secret_events", &created));
        let f = Filters { plugin_id: None, event_types: Some(vec!["user.*".into()]) };
        assert!(f.accepts(&created));
        let plug = ev("plugin.analytics_dashboard.data_update", "analytics_dashboard", json!({}));
        assert!(carries("plugin_events", &plug));
        let f =
            Filters { plugin_id: Some("analytics_dashboard".into()), event_types: Some(vec!["data_update".into()]) };
        assert!(f.accepts(&plug));
        let f = Filters { plugin_id: Some("other".into()), event_types: None };
        assert!(!f.accepts(&plug));
        assert_eq!(event_data(&plug)["plugin_id"], "analytics_dashboard");
    }
}
