//! Queries over events: the shared filters, the summary (groups, time buckets in an IANA time
//! zone) and the funnel.

use std::cmp::Ordering;

use jiff::tz::TimeZone;
use nexus_kernel::clock::Timestamp;
use nexus_kernel::error::FieldError;
use serde_json::Value;

use crate::error::AnalyticsError;
use crate::event::parse_time;
use crate::store::{Bucket, Bucketing, Filter, FunnelRow, GroupKey, SummaryRow, SummarySpec};

/// Longest property key a filter or group may name.
const MAX_KEY_CHARS: usize = 64;
/// The range a summary or funnel covers by default, ending now.
pub const DEFAULT_RANGE_SECS: i64 = 24 * 3600;
/// Steps a funnel may have.
pub const MAX_STEPS: usize = 10;

/// The filters of the list, the summary and the funnel, as given (query parameters).
#[derive(Debug, Clone, Default)]
pub struct FilterParams {
    pub event_name: Option<String>,
    pub event_category: Option<String>,
    pub user_id: Option<String>,
    pub source: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// `properties.<key>=<value>` pairs.
    pub properties: Vec<(String, String)>,
}

fn time(field: &str, text: Option<&str>, errors: &mut Vec<FieldError>) -> Option<Timestamp> {
    let text = text?.trim();
    let t = parse_time(text);
    if t.is_none() {
        errors.push(FieldError::new(field, format!("`{text}` is not an ISO 8601 time such as 2024-01-20T15:30:00Z")));
    }
    t
}

/// Whether `key` may name a property: letters, digits, `_` and `-`.
pub fn valid_property_key(key: &str) -> bool {
    !key.is_empty()
        && key.chars().count() <= MAX_KEY_CHARS
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The JSON texts a property compared with `value` may have: the string, and the number,
/// boolean or null the text spells, if it spells one.
fn json_texts(value: &str) -> Vec<String> {
    let mut texts = vec![Value::String(value.to_string()).to_string()];
    if let Ok(v) = serde_json::from_str::<Value>(value)
        && matches!(v, Value::Number(_) | Value::Bool(_) | Value::Null)
    {
        texts.push(v.to_string());
    }
    texts
}

impl FilterParams {
    /// The filter, or every invalid parameter.
    pub fn filter(&self) -> Result<Filter, AnalyticsError> {
        let mut errors = Vec::new();
        let from = time("from", self.from.as_deref(), &mut errors);
        let to = time("to", self.to.as_deref(), &mut errors);
        let mut properties = Vec::new();
        for (key, value) in &self.properties {
            if valid_property_key(key) {
                properties.push((key.clone(), json_texts(value)));
            } else {
                errors.push(FieldError::new(
                    format!("properties.{key}"),
                    format!("Property keys are 1 to {MAX_KEY_CHARS} letters, digits, `_` or `-`"),
                ));
            }
        }
        if let (Some(f), Some(t)) = (from, to)
            && f >= t
        {
            errors.push(FieldError::new("to", "`to` must be after `from`"));
        }
        if !errors.is_empty() {
            return Err(AnalyticsError::Invalid(errors));
        }
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Ok(Filter {
            from: from.map(Timestamp::as_micros),
            to: to.map(Timestamp::as_micros),
            event_name: nonempty(&self.event_name),
            event_category: nonempty(&self.event_category),
            user_id: nonempty(&self.user_id),
            source: nonempty(&self.source),
            properties,
        })
    }

    /// The filter with `from`/`to` defaulting to the last 24 hours.
    fn ranged(&self) -> Result<(Filter, Timestamp, Timestamp), AnalyticsError> {
        let mut f = self.filter()?;
        let to = f.to.map_or_else(Timestamp::now, Timestamp::from_micros);
        let from = f.from.map_or_else(|| to.add_seconds(-DEFAULT_RANGE_SECS), Timestamp::from_micros);
        if from >= to {
            return Err(AnalyticsError::field("from", "`from` must be before `to`"));
        }
        f.from = Some(from.as_micros());
        f.to = Some(to.as_micros());
        Ok((f, from, to))
    }
}

#[derive(Debug, Clone, Default)]
pub struct SummaryRequest {
    pub filters: FilterParams,
    pub group_by: Option<String>,
    pub timezone: Option<String>,
}

/// A summary request made ready for the store.
#[derive(Debug, Clone)]
pub struct PreparedSummary {
    pub spec: SummarySpec,
    pub from: Timestamp,
    pub to: Timestamp,
    /// The names of `group_by`, in order (the bucket's included).
    pub group_by: Vec<String>,
    /// The names of the keys (without the bucket), in the store's order.
    pub keys: Vec<String>,
    pub tz: TimeZone,
}

pub fn summary_spec(req: &SummaryRequest) -> Result<PreparedSummary, AnalyticsError> {
    let (filter, from, to) = req.filters.ranged()?;
    let tz_name = req.timezone.as_deref().map(str::trim).filter(|s| !s.is_empty()).unwrap_or("UTC");
    let tz = TimeZone::get(tz_name)
        .map_err(|_| AnalyticsError::field("timezone", format!("`{tz_name}` is not an IANA time zone name")))?;
    let mut keys = Vec::new();
    let mut names = Vec::new();
    let mut group_by = Vec::new();
    let mut bucket = None;
    for name in req.group_by.as_deref().unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if group_by.iter().any(|g| g == name) {
            return Err(AnalyticsError::field("group_by", format!("`{name}` is listed twice")));
        }
        let key = match name {
            "event_name" => GroupKey::EventName,
            "event_category" => GroupKey::EventCategory,
            "source" => GroupKey::Source,
            "user_id" => GroupKey::UserId,
            "minute" | "hour" | "day" | "week" => {
                if bucket.is_some() {
                    return Err(AnalyticsError::field("group_by", "At most one time bucket (minute, hour, day, week)"));
                }
                bucket = Some(match name {
                    "minute" => Bucket::Minute,
                    "hour" => Bucket::Hour,
                    "day" => Bucket::Day,
                    _ => Bucket::Week,
                });
                group_by.push(name.to_string());
                continue;
            }
            other => match other.strip_prefix("properties.") {
                Some(k) if valid_property_key(k) => GroupKey::Property(k.to_string()),
                _ => {
                    return Err(AnalyticsError::field(
                        "group_by",
                        format!(
                            "Cannot group by `{other}`; allowed: event_name, event_category, source, user_id, \
                             properties.<key>, minute, hour, day, week"
                        ),
                    ));
                }
            },
        };
        keys.push(key);
        names.push(name.to_string());
        group_by.push(name.to_string());
    }
    let bucketing = match bucket {
        None => None,
        Some(bucket) => Some(offsets(&tz, bucket, from, to)?),
    };
    Ok(PreparedSummary { spec: SummarySpec { filter, keys, bucketing }, from, to, group_by, keys: names, tz })
}

fn jiff_ts(t: Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_microsecond(t.as_micros()).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// The zone's offsets over `[from, to)`.
fn offsets(tz: &TimeZone, bucket: Bucket, from: Timestamp, to: Timestamp) -> Result<Bucketing, AnalyticsError> {
    /// Offset changes a summary's range may span (two a year in most zones).
    const MAX_CHANGES: usize = 512;
    let micros = |o: jiff::tz::Offset| i64::from(o.seconds()) * 1_000_000;
    let start = jiff_ts(from);
    let end = jiff_ts(to);
    let mut changes = Vec::new();
    for t in tz.following(start) {
        if t.timestamp() >= end {
            break;
        }
        if changes.len() == MAX_CHANGES {
            return Err(AnalyticsError::field("from", "The range spans too many UTC offset changes of the time zone"));
        }
        changes.push((t.timestamp().as_microsecond(), micros(t.offset())));
    }
    Ok(Bucketing { bucket, initial_offset: micros(tz.to_offset(start)), changes })
}

/// One group of a summary, ready to show.
#[derive(Debug, Clone)]
pub struct Group {
    /// (name, value) per key of `group_by`, in order; properties as their JSON values.
    pub keys: Vec<(String, Value)>,
    /// RFC 3339 with the zone's offset.
    pub bucket: Option<String>,
    bucket_at: i64,
    pub count: i64,
    pub unique_users: i64,
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub from: Timestamp,
    pub to: Timestamp,
    pub group_by: Vec<String>,
    pub groups: Vec<Group>,
    pub total: (i64, i64),
}

fn format_zoned(z: &jiff::ZonedDateTime) -> String {
    z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// The start of the bucket `value` (see [`SummaryRow::bucket`]) in `tz`.
fn bucket_start(tz: &TimeZone, bucket: Bucket, value: i64) -> (i64, String) {
    let at = jiff::Timestamp::from_microsecond(value).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let zoned = match bucket {
        Bucket::Minute | Bucket::Hour => at.to_zoned_datetime(tz.clone()),
        // A local start that falls into a gap is the first instant after it.
        Bucket::Day | Bucket::Week => {
            let civil = at.to_zoned_datetime(TimeZone::UTC).datetime();
            civil.to_zoned_datetime(tz.clone()).unwrap_or_else(|_| at.to_zoned_datetime(tz.clone()))
        }
    };
    (zoned.timestamp().as_microsecond(), format_zoned(&zoned))
}

/// The groups of `rows`, ordered by bucket, then count (descending), then keys.
pub fn summary(prepared: PreparedSummary, rows: Vec<SummaryRow>, total: (i64, i64)) -> Summary {
    let bucket = prepared.spec.bucketing.as_ref().map(|b| b.bucket);
    let mut groups: Vec<Group> = rows
        .into_iter()
        .map(|r| {
            let keys = prepared
                .keys
                .iter()
                .zip(&prepared.spec.keys)
                .zip(r.keys)
                .map(|((name, key), value)| {
                    let value = match (key, value) {
                        (_, None) => Value::Null,
                        (GroupKey::Property(_), Some(text)) => {
                            serde_json::from_str(&text).unwrap_or(Value::String(text))
                        }
                        (_, Some(text)) => Value::String(text),
                    };
                    (name.clone(), value)
                })
                .collect();
            let (bucket_at, shown) = match (bucket, r.bucket) {
                (Some(b), Some(v)) => {
                    let (at, text) = bucket_start(&prepared.tz, b, v);
                    (at, Some(text))
                }
                _ => (0, None),
            };
            Group { keys, bucket: shown, bucket_at, count: r.count, unique_users: r.unique_users }
        })
        .collect();
    groups.sort_by(|a, b| {
        a.bucket_at.cmp(&b.bucket_at).then(b.count.cmp(&a.count)).then_with(|| compare_keys(&a.keys, &b.keys))
    });
    Summary { from: prepared.from, to: prepared.to, group_by: prepared.group_by, groups, total }
}

fn compare_keys(a: &[(String, Value)], b: &[(String, Value)]) -> Ordering {
    for ((_, x), (_, y)) in a.iter().zip(b) {
        let o = x.to_string().cmp(&y.to_string());
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

#[derive(Debug, Clone)]
pub struct FunnelRequest {
    pub steps: Vec<String>,
    pub window_secs: i64,
    pub from: Timestamp,
    pub to: Timestamp,
}

impl FunnelRequest {
    /// Validates the body's fields; the range defaults to the last 24 hours.
    pub fn new(
        steps: Vec<String>,
        window_secs: Option<i64>,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Self, AnalyticsError> {
        let mut errors = Vec::new();
        if steps.len() < 2 || steps.len() > MAX_STEPS {
            errors.push(FieldError::new("steps", format!("Give 2 to {MAX_STEPS} event names")));
        }
        if steps.iter().any(|s| s.trim().is_empty()) {
            errors.push(FieldError::new("steps", "Event names must not be empty"));
        }
        let window_secs = window_secs.unwrap_or(DEFAULT_RANGE_SECS);
        if window_secs <= 0 {
            errors.push(FieldError::new("window_secs", "Must be a positive number of seconds"));
        }
        let from_t = time("from", from, &mut errors);
        let to_t = time("to", to, &mut errors);
        if !errors.is_empty() {
            return Err(AnalyticsError::Invalid(errors));
        }
        let to = to_t.unwrap_or_else(Timestamp::now);
        let from = from_t.unwrap_or_else(|| to.add_seconds(-DEFAULT_RANGE_SECS));
        if from >= to {
            return Err(AnalyticsError::field("to", "`to` must be after `from`"));
        }
        Ok(Self { steps, window_secs, from, to })
    }
}

/// How many users reached one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunnelStep {
    pub event_name: String,
    pub users: i64,
}

/// Per step, the users who did the steps up to it in order, the last within `window_secs` of
/// the first. `rows` are ordered by user, then time.
pub fn funnel(steps: &[String], window_secs: i64, rows: &[FunnelRow]) -> Vec<FunnelStep> {
    let window = window_secs.saturating_mul(1_000_000);
    let mut reached = vec![0i64; steps.len()];
    let mut start = 0;
    while start < rows.len() {
        let user = rows.get(start).map(|r| r.0.as_str()).unwrap_or_default();
        let end = rows.get(start..).map_or(start, |rest| start + rest.iter().take_while(|r| r.0 == user).count());
        let events = rows.get(start..end).unwrap_or_default();
        let best = deepest(steps, window, events);
        for r in reached.iter_mut().take(best) {
            *r += 1;
        }
        start = end.max(start + 1);
    }
    steps.iter().zip(reached).map(|(s, users)| FunnelStep { event_name: s.clone(), users }).collect()
}

/// The most steps one user's `events` complete in order within the window: from each
/// occurrence of the first step, the earliest next steps (which is the best from that start).
fn deepest(steps: &[String], window: i64, events: &[FunnelRow]) -> usize {
    let Some(first) = steps.first() else { return 0 };
    let mut best = 0;
    for (i, (_, name, t0)) in events.iter().enumerate() {
        if name != first {
            continue;
        }
        let deadline = t0.saturating_add(window);
        let mut k = 1;
        for (_, name, t) in events.iter().skip(i + 1) {
            if *t > deadline || k == steps.len() {
                break;
            }
            if steps.get(k) == Some(name) {
                k += 1;
            }
        }
        best = best.max(k);
        if best == steps.len() {
            break;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: &str, name: &str, secs: i64) -> FunnelRow {
        (user.into(), name.into(), secs * 1_000_000)
    }

    #[test]
    fn funnel_counts_ordered_steps_within_the_window() {
        let steps: Vec<String> = ["a", "b", "c"].iter().map(|s| (*s).to_string()).collect();
        let rows = vec![
            // u1: all three in order.
            row("u1", "a", 0),
            row("u1", "b", 10),
            row("u1", "c", 20),
            // u2: b before a never counts; a then b only.
            row("u2", "b", 0),
            row("u2", "a", 5),
            row("u2", "b", 6),
            // u3: the first a is too early for c; the second a completes.
            row("u3", "a", 0),
            row("u3", "a", 100),
            row("u3", "b", 110),
            row("u3", "c", 150),
        ];
        let f = funnel(&steps, 60, &rows);
        assert_eq!(f.iter().map(|s| s.users).collect::<Vec<_>>(), [3, 3, 2]);
    }

    #[test]
    fn hour_buckets_follow_the_zone_across_dst() {
        let tz = TimeZone::get("Europe/Berlin").unwrap_or(TimeZone::UTC);
        // 2026-10-25 01:00 UTC is 03:00 CEST -> 02:00 CET.
        let (_, text) = bucket_start(&tz, Bucket::Hour, 1_792_890_000_000_000);
        assert_eq!(text, "2026-10-25T02:00:00+01:00");
        let (_, text) = bucket_start(&tz, Bucket::Hour, 1_792_890_000_000_000 - 3_600_000_000);
        assert_eq!(text, "2026-10-25T02:00:00+02:00");
    }
}
