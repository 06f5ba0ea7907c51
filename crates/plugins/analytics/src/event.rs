//! Incoming events: the request shapes (one event, an array, `{"events": [...]}`), and the
//! validation of each event on its own, so that one bad event is reported by its index and
//! does not refuse the others.

use nexus_kernel::clock::Timestamp;
use nexus_kernel::config::AnalyticsConfig;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Longest `event_name`, `event_category` and `source`, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest `user_id` and `event_id`.
pub const MAX_ID_CHARS: usize = 256;

/// Why a request's body cannot be taken at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON, or JSON of no accepted shape.
    Malformed(String),
    /// More events than a request may carry.
    TooManyEvents { given: usize, max: usize },
}

/// The events of a request, each still as its own text.
#[derive(Debug)]
pub struct Batch<'a> {
    pub events: Vec<&'a RawValue>,
    /// The body was one event (not an array or a wrapper).
    pub single: bool,
}

#[derive(Deserialize)]
struct Wrapper<'a> {
    #[serde(borrow)]
    events: Option<Vec<&'a RawValue>>,
}

/// Splits `body` into its events.
pub fn split(body: &[u8], max_events: usize) -> Result<Batch<'_>, BodyError> {
    let malformed = |e: serde_json::Error| BodyError::Malformed(format!("The body is not valid JSON: {e}"));
    let start = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let batch = match start {
        Some(b'[') => Batch { events: serde_json::from_slice(body).map_err(malformed)?, single: false },
        Some(b'{') => {
            let whole: &RawValue = serde_json::from_slice(body).map_err(malformed)?;
            match serde_json::from_str::<Wrapper>(whole.get()) {
                Ok(Wrapper { events: Some(events) }) => Batch { events, single: false },
                _ => Batch { events: vec![whole], single: true },
            }
        }
        None => {
            return Err(BodyError::Malformed("The body is empty; an event or an array of events is expected".into()));
        }
        Some(_) => {
            return Err(BodyError::Malformed(
                "Expected an event object, an array of events, or {\"events\": [...]}".into(),
            ));
        }
    };
    if batch.events.is_empty() {
        return Err(BodyError::Malformed("No events: the array is empty".into()));
    }
    if batch.events.len() > max_events {
        return Err(BodyError::TooManyEvents { given: batch.events.len(), max: max_events });
    }
    Ok(batch)
}

/// One refused event: its index in the request, the field at fault, why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct EventError {
    pub index: usize,
    pub field: String,
    pub message: String,
}

/// A valid event, as the client sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: Option<String>,
    pub event_name: String,
    pub event_category: String,
    pub timestamp: Option<Timestamp>,
    pub user_id: Option<String>,
    pub source: Option<String>,
    pub properties: Map<String, Value>,
}

/// Validates the event at `index` (its text `raw`) against `limits`, as of `now`.
pub fn validate(
    index: usize,
    raw: &RawValue,
    limits: &AnalyticsConfig,
    now: Timestamp,
) -> Result<NewEvent, EventError> {
    let err = |field: &str, message: String| EventError { index, field: field.to_string(), message };
    if raw.get().len() > limits.max_event_bytes {
        return Err(err(
            "event",
            format!("The event is {} bytes; at most {} are accepted", raw.get().len(), limits.max_event_bytes),
        ));
    }
    let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(raw.get()) else {
        return Err(err("event", "Each event must be a JSON object".into()));
    };
    let event_name = required_text(&mut obj, "event_name", MAX_NAME_CHARS).map_err(|m| err("event_name", m))?;
    let event_category =
        required_text(&mut obj, "event_category", MAX_NAME_CHARS).map_err(|m| err("event_category", m))?;
    let user_id = optional_text(&mut obj, "user_id", MAX_ID_CHARS).map_err(|m| err("user_id", m))?;
    let source = optional_text(&mut obj, "source", MAX_NAME_CHARS).map_err(|m| err("source", m))?;
    let event_id = optional_text(&mut obj, "event_id", MAX_ID_CHARS).map_err(|m| err("event_id", m))?;
    let timestamp = match obj.remove("timestamp") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => {
            let t = parse_time(&text).ok_or_else(|| {
                err("timestamp", format!("`{text}` is not an ISO 8601 time such as 2024-01-20T15:30:00Z"))
            })?;
            let limit = now.add_seconds(i64::try_from(limits.future_tolerance_secs).unwrap_or(i64::MAX));
            if t > limit {
                return Err(err(
                    "timestamp",
                    format!("The time is in the future beyond the tolerance of {} s", limits.future_tolerance_secs),
                ));
            }
            Some(t)
        }
        Some(_) => return Err(err("timestamp", "Must be an ISO 8601 string".into())),
    };
    let properties = match obj.remove("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => {
            if depth_exceeds(&p, limits.max_depth) {
                return Err(err(
                    "properties",
                    format!("Properties are nested deeper than {} levels", limits.max_depth),
                ));
            }
            p
        }
        Some(_) => return Err(err("properties", "Must be a JSON object".into())),
    };
    // Free-form data belongs in `properties`; anything else is a client's mistake to report.
    if let Some(field) = obj.keys().next() {
        return Err(err(field, format!("Unknown field `{field}`; free-form data goes in `properties`")));
    }
    Ok(NewEvent { event_id, event_name, event_category, timestamp, user_id, source, properties })
}

fn required_text(obj: &mut Map<String, Value>, field: &str, max: usize) -> Result<String, String> {
    match optional_text(obj, field, max)? {
        Some(text) => Ok(text),
        None => Err(format!("`{field}` is required")),
    }
}

fn optional_text(obj: &mut Map<String, Value>, field: &str, max: usize) -> Result<Option<String>, String> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            if s.trim().is_empty() {
                return Err(format!("`{field}` must not be empty"));
            }
            if s.chars().count() > max {
                return Err(format!("`{field}` is longer than {max} characters"));
            }
            Ok(Some(s))
        }
        Some(_) => Err(format!("`{field}` must be a string")),
    }
}

/// RFC 3339 (any offset), or a date-time without offset taken as UTC.
pub fn parse_time(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    Timestamp::parse_rfc3339(text).or_else(|| {
        let civil: jiff::civil::DateTime = text.parse().ok()?;
        let ts = civil.to_zoned_datetime(jiff::tz::TimeZone::UTC).ok()?.timestamp();
        Some(Timestamp::from_micros(ts.as_microsecond()))
    })
}

/// Whether objects and arrays inside `properties` (level 1) nest deeper than `max`.
fn depth_exceeds(properties: &Map<String, Value>, max: usize) -> bool {
    fn deeper(v: &Value, level: usize, max: usize) -> bool {
        match v {
            Value::Object(m) => level > max || m.values().any(|v| deeper(v, level + 1, max)),
            Value::Array(a) => level > max || a.iter().any(|v| deeper(v, level + 1, max)),
            _ => false,
        }
    }
    1 > max || properties.values().any(|v| deeper(v, 2, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AnalyticsConfig {
        AnalyticsConfig::default()
    }

    #[test]
    fn shapes() {
        assert!(matches!(split(br#"{"event_name":"a"}"#, 10), Ok(Batch { single: true, .. })));
        assert_eq!(split(br#"[{"a":1},{"b":2}]"#, 10).map(|b| b.events.len()), Ok(2));
        assert_eq!(split(br#"{"events":[{"a":1}]}"#, 10).map(|b| (b.events.len(), b.single)), Ok((1, false)));
        assert!(matches!(split(b"[1,2,3]", 2), Err(BodyError::TooManyEvents { given: 3, max: 2 })));
        assert!(matches!(split(b"nope", 2), Err(BodyError::Malformed(_))));
        assert!(matches!(split(b"[]", 2), Err(BodyError::Malformed(_))));
    }

    #[test]
    fn depth_counts_properties_as_level_one() {
        let nested = |n: usize| {
            let mut v = serde_json::json!(1);
            for _ in 0..n {
                v = serde_json::json!({ "x": v });
            }
            v
        };
        let ok = serde_json::json!({"event_name": "a", "event_category": "b", "properties": nested(8)});
        let raw = serde_json::value::to_raw_value(&ok).unwrap_or_else(|_| RawValue::NULL.to_owned());
        assert!(validate(0, &raw, &limits(), Timestamp::now()).is_ok());
        let deep = serde_json::json!({"event_name": "a", "event_category": "b", "properties": nested(9)});
        let raw = serde_json::value::to_raw_value(&deep).unwrap_or_else(|_| RawValue::NULL.to_owned());
        assert_eq!(
            validate(3, &raw, &limits(), Timestamp::now()).map_err(|e| (e.index, e.field)),
            Err((3, "properties".into()))
        );
    }
}
