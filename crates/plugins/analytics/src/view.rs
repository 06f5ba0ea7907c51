//! An event as the API and `nexus analytics export` show it.

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::store::EventRow;

/// RFC 3339 in UTC, with the fraction of a second when there is one.
fn precise(micros: i64) -> String {
    jiff::Timestamp::from_microsecond(micros).map(|t| t.to_string()).unwrap_or_default()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: String,
    pub event_id: Option<String>,
    pub event_name: String,
    pub event_category: String,
    pub timestamp: String,
    pub user_id: Option<String>,
    /// The Nexus user `user_id` names, when it names one.
    pub linked_user_id: Option<String>,
    pub source: Option<String>,
    #[schema(value_type = Object)]
    pub properties: Value,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub received_at: String,
}

impl From<EventRow> for EventView {
    fn from(r: EventRow) -> Self {
        Self {
            properties: serde_json::from_str(&r.properties).unwrap_or_else(|_| Value::Object(Map::new())),
            id: r.id,
            event_id: r.event_key,
            event_name: r.event_name,
            event_category: r.event_category,
            timestamp: precise(r.ts),
            user_id: r.user_id,
            linked_user_id: r.linked_user_id,
            source: r.source,
            ip_address: r.ip_address,
            user_agent: r.user_agent,
            received_at: precise(r.received_at),
        }
    }
}
