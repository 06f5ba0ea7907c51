//! Channels a WebSocket client subscribes to, which events each carries, who may subscribe,
//! and the filters a subscription narrows them with.

use std::collections::HashSet;

use nexus_kernel::events::{self, Event};
use nexus_kernel::plugin::{ChannelSpec, EventTest, QueryLanguage, Registry};
use serde::Deserialize;
use serde_json::{Value, json};

/// Every channel the plugins declared, and which event sources are Nexus's own (events from
/// any other source are a third-party plugin's).
#[derive(Debug, Clone, Default)]
pub struct ChannelTable {
    channels: Vec<ChannelSpec>,
    core_sources: HashSet<String>,
}

/// Sources that belong to the kernel rather than to a plugin.
const KERNEL_SOURCES: &[&str] = &["kernel", "system", "audit", "database"];

impl ChannelTable {
    /// The channels of every plugin in `registry`; built-in plugins' ids are core sources.
    pub fn from_registry(registry: &Registry) -> Self {
        let slots = registry.all();
        let mut channels: Vec<ChannelSpec> = slots.iter().flat_map(|s| s.manifest.channels.clone()).collect();
        channels.sort_by(|a, b| a.name.cmp(&b.name));
        channels.dedup_by(|a, b| a.name == b.name);
        let core_sources = slots
            .iter()
            .filter(|s| s.manifest.builtin)
            .map(|s| s.id().to_string())
            .chain(KERNEL_SOURCES.iter().map(|s| (*s).to_string()))
            .collect();
        Self { channels, core_sources }
    }

    pub fn new(channels: Vec<ChannelSpec>, core_sources: &[&str]) -> Self {
        Self { channels, core_sources: core_sources.iter().map(|s| (*s).to_string()).collect() }
    }

    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    pub fn names(&self) -> Vec<&str> {
        self.channels.iter().map(|c| c.name.as_str()).collect()
    }

    pub fn name(&self, index: usize) -> Option<&str> {
        self.channels.get(index).map(|c| c.name.as_str())
    }

    /// Whether `channel` exists; returns its subscribe permission.
    pub fn lookup(&self, channel: &str) -> Option<Option<&str>> {
        self.channels.iter().find(|c| c.name == channel).map(|c| c.permission.as_deref())
    }

    /// `channel`'s index in this table.
    pub fn position(&self, channel: &str) -> Option<usize> {
        self.channels.iter().position(|c| c.name == channel)
    }

    /// The query language of `channel`'s `filters.query`, if it takes one.
    pub fn query_language(&self, channel: &str) -> Option<&QueryLanguage> {
        self.channels.iter().find(|c| c.name == channel).and_then(|c| c.query.as_ref())
    }

    /// Whether the channel at `index` carries `event`.
    pub fn carries(&self, index: usize, event: &Event) -> bool {
        self.channels.get(index).is_some_and(|c| {
            c.events.iter().any(|p| events::matches(p, &event.kind))
                || (c.third_party && !self.core_sources.contains(&event.source))
        })
    }

    /// The plugin an event concerns: its `data.plugin_id`, else its source when that is a
    /// third-party plugin.
    pub fn plugin_id<'e>(&self, event: &'e Event) -> Option<&'e str> {
        if let Some(id) = event.data.get("plugin_id").and_then(Value::as_str) {
            return Some(id);
        }
        (!self.core_sources.contains(&event.source)).then_some(event.source.as_str())
    }
}

/// A subscription's filters, as the seed documents them; both optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    pub plugin_id: Option<String>,
    /// Event types or wildcard patterns (`user.*`, `*`). For plugin events a pattern may also
    /// name the type without its `plugin.<id>.` prefix (`data_update`).
    pub event_types: Option<Vec<String>>,
    /// Channel `analytics`: only events with one of these `event_name`s / `event_category`s.
    pub event_names: Option<Vec<String>>,
    pub event_categories: Option<Vec<String>>,
    /// Channel `documents`: only events of documents in these collections.
    pub collections: Option<Vec<String>>,
    /// A query in the channel's own language ([`ChannelTable::query_language`]); the
    /// `documents` channel takes a document filter (`{"price": {"$gt": 100}}`).
    pub query: Option<Value>,
    /// `query`, compiled when the client subscribed.
    #[serde(skip)]
    pub test: Option<Test>,
}

#[derive(Clone)]
pub struct Test(pub EventTest);

impl std::fmt::Debug for Test {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Test")
    }
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

    /// Whether the subscription wants `event`, which concerns `plugin` ([`ChannelTable::plugin_id`]).
    pub fn accepts(&self, event: &Event, plugin: Option<&str>) -> bool {
        for (wanted, field) in [
            (&self.event_names, "event_name"),
            (&self.event_categories, "event_category"),
            (&self.collections, "collection"),
        ] {
            if let Some(wanted) = wanted
                && !event.data.get(field).and_then(Value::as_str).is_some_and(|v| wanted.iter().any(|w| w == v))
            {
                return false;
            }
        }
        if let Some(wanted) = &self.plugin_id
            && plugin != Some(wanted.as_str())
        {
            return false;
        }
        if let Some(test) = &self.test
            && !(test.0)(event)
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
        let mut shown = json!({ "plugin_id": self.plugin_id, "event_types": self.event_types });
        for (name, list) in [
            ("event_names", &self.event_names),
            ("event_categories", &self.event_categories),
            ("collections", &self.collections),
        ] {
            if let (Some(list), Some(obj)) = (list, shown.as_object_mut()) {
                obj.insert(name.into(), json!(list));
            }
        }
        if let (Some(query), Some(obj)) = (&self.query, shown.as_object_mut()) {
            obj.insert("query".into(), query.clone());
        }
        shown
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
pub fn event_data(event: &Event, plugin: Option<&str>) -> Value {
    let mut data = json!({
        "id": event.id,
        "type": event.kind,
        "event_type": event.kind,
        "source": event.source,
        "payload": event.data,
    });
    if let (Some(obj), Some(plugin)) = (data.as_object_mut(), plugin) {
        obj.insert("plugin_id".into(), Value::from(plugin));
    }
    data
}

#[cfg(test)]
pub(crate) mod tests {
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

    /// The channels the built-in plugins declare.
    pub fn table() -> ChannelTable {
        ChannelTable::new(
            vec![
                ChannelSpec::new("events", None, &["*"]),
                ChannelSpec::new("plugin_events", Some("plugin.read"), &["plugin.*"]).third_party(),
                ChannelSpec::new("secret_events", Some("secret.read"), &["secret.*"]),
                ChannelSpec::new("system_events", Some("read:system"), &["system.*"]),
                ChannelSpec::new("user_events", Some("user.read"), &["user.*"]),
            ],
            &["identity", "secrets", "system"],
        )
    }

    #[test]
    fn channels_and_filters() {
        let t = table();
        let at = |name: &str| t.position(name).unwrap_or(usize::MAX);
        let created = ev("user.created", "identity", json!({"id": "u"}));
        assert!(t.carries(at("user_events"), &created) && t.carries(at("events"), &created));
        assert!(!t.carries(at("plugin_events"), &created) && !t.carries(at("secret_events"), &created));
        let f = Filters { plugin_id: None, event_types: Some(vec!["user.*".into()]), ..Filters::default() };
        assert!(f.accepts(&created, t.plugin_id(&created)));
        let plug = ev("plugin.analytics_dashboard.data_update", "analytics_dashboard", json!({}));
        assert!(t.carries(at("plugin_events"), &plug));
        let f = Filters {
            plugin_id: Some("analytics_dashboard".into()),
            event_types: Some(vec!["data_update".into()]),
            ..Filters::default()
        };
        assert!(f.accepts(&plug, t.plugin_id(&plug)));
        let f = Filters { plugin_id: Some("other".into()), event_types: None, ..Filters::default() };
        assert!(!f.accepts(&plug, t.plugin_id(&plug)));
        assert_eq!(event_data(&plug, t.plugin_id(&plug))["plugin_id"], "analytics_dashboard");
    }
}
