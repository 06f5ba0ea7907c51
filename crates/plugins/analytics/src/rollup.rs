//! Hourly rollups that make summaries over long ranges fast, exactly.
//!
//! For every UTC hour, event name, category and source, `analytics_rollups` holds the number of
//! events and the set of their users (as numbers from `analytics_user_ids`, delta-encoded), so
//! that counts add up and unique users are unions of sets: exact, not sampled. An hour's rows
//! are valid while the hour is listed in `analytics_rollup_hours` and not in
//! `analytics_dirty_hours`; ingestion and retention mark the hours they touch dirty in their own
//! transactions, and a summary recomputes the hours it needs that are not valid from the raw
//! events first (one transaction per run of hours, which also clears their dirty marks).
//!
//! A summary uses them when everything it groups and filters by is in them (event name,
//! category, source, time) and its buckets are whole UTC hours or unions of them (hours, days
//! and weeks in a zone whose offsets are whole hours). The partial hours at either end of its
//! range are read from the raw events. Anything else runs on the raw events.

use std::collections::HashMap;

use crate::store::{Bucket, Bucketing, GroupKey, SummaryRow, SummarySpec};

pub const HOUR: i64 = 3_600_000_000;

/// The start of the UTC hour holding `ts`.
pub fn hour_of(ts: i64) -> i64 {
    ts - ts.rem_euclid(HOUR)
}

/// Hours a recomputation handles in one transaction at most.
pub const RUN_HOURS: i64 = 24;

/// Consecutive `hours` (ascending) as runs `[start, end)` of at most [`RUN_HOURS`].
pub fn runs(hours: impl Iterator<Item = i64>) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for hour in hours {
        match out.last_mut() {
            Some((start, end)) if *end == hour && hour - *start < RUN_HOURS * HOUR => *end = hour + HOUR,
            _ => out.push((hour, hour + HOUR)),
        }
    }
    out
}

/// A summary's range split for the rollups: whole hours `[hours.0, hours.1)` and the partial
/// hours at either end, read raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub hours: (i64, i64),
    pub edges: Vec<(i64, i64)>,
}

/// The plan for `spec`, or `None` when it needs the raw events.
pub fn plan(spec: &SummarySpec) -> Option<Plan> {
    let keys_ok =
        spec.keys.iter().all(|k| matches!(k, GroupKey::EventName | GroupKey::EventCategory | GroupKey::Source));
    let filter_ok = spec.filter.user_id.is_none() && spec.filter.properties.is_empty();
    let buckets_ok = match &spec.bucketing {
        None => true,
        Some(b) => {
            b.bucket != Bucket::Minute
                && b.initial_offset % HOUR == 0
                && b.changes.iter().all(|(at, offset)| at % HOUR == 0 && offset % HOUR == 0)
        }
    };
    let (from, to) = (spec.filter.from?, spec.filter.to?);
    if !(keys_ok && filter_ok && buckets_ok) || from >= to {
        return None;
    }
    let first = hour_of(from) + if from % HOUR == 0 { 0 } else { HOUR };
    let last = hour_of(to);
    if first >= last {
        return Some(Plan { hours: (first, first), edges: vec![(from, to)] });
    }
    let edges = [(from, first), (last, to)].into_iter().filter(|(a, b)| a < b).collect();
    Some(Plan { hours: (first, last), edges })
}

/// The bucket (as the raw summary computes it) of the events of UTC hour `hour`.
pub fn bucket_of(hour: i64, b: &Bucketing) -> i64 {
    let mut offset = b.initial_offset;
    for (at, next) in &b.changes {
        if hour >= *at {
            offset = *next;
        }
    }
    let floor = |x: i64, w: i64| x - x.rem_euclid(w);
    match b.bucket {
        Bucket::Minute | Bucket::Hour => floor(hour + offset, b.bucket.micros()) - offset,
        Bucket::Day => floor(hour + offset, Bucket::Day.micros()),
        Bucket::Week => {
            let shift = 3 * Bucket::Day.micros();
            floor(hour + offset + shift, Bucket::Week.micros()) - shift
        }
    }
}

/// Sorted, distinct user numbers as varint deltas.
pub fn encode(users: &mut Vec<u32>) -> Vec<u8> {
    users.sort_unstable();
    users.dedup();
    let mut out = Vec::with_capacity(users.len() * 2);
    let mut prev = 0u32;
    for &u in users.iter() {
        let mut d = u - prev;
        prev = u;
        loop {
            let byte = u8::try_from(d & 0x7f).unwrap_or(0);
            d >>= 7;
            if d == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    out
}

/// The user numbers [`encode`] wrote, handed to `each`; stops at a malformed byte.
pub fn decode(bytes: &[u8], mut each: impl FnMut(u32)) {
    let (mut prev, mut d, mut shift) = (0u32, 0u32, 0u32);
    for &b in bytes {
        if shift > 28 {
            return;
        }
        d |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            prev = prev.wrapping_add(d);
            each(prev);
            d = 0;
            shift = 0;
        } else {
            shift += 7;
        }
    }
}

/// One stored rollup row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    pub hour: i64,
    pub event_name: String,
    pub event_category: String,
    /// `None` for events without a source.
    pub source: Option<String>,
    pub events: i64,
    pub user_count: i64,
    pub users: Vec<u8>,
}

/// Raw events of a partial hour, grouped: (hour, name, category, source, user, events).
pub type EdgeRow = (i64, String, String, Option<String>, Option<String>, i64);

/// A set of user numbers, as bits.
#[derive(Debug, Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn insert(&mut self, n: u32) {
        let i = usize::try_from(n / 64).unwrap_or(usize::MAX);
        if i >= self.0.len() {
            self.0.resize(i + 1, 0);
        }
        if let Some(word) = self.0.get_mut(i) {
            *word |= 1 << (n % 64);
        }
    }

    fn count(&self) -> i64 {
        self.0.iter().map(|w| i64::from(w.count_ones())).sum()
    }
}

/// What a group gathers: events, and its users as one row's count while it has a single row,
/// or as the union of its rows' sets.
#[derive(Debug, Default)]
struct Gathered<'a> {
    events: i64,
    single: Option<(&'a [u8], i64)>,
    union: Option<Vec<u32>>,
    rows: usize,
}

impl<'a> Gathered<'a> {
    fn add_row(&mut self, events: i64, users: &'a [u8], count: i64) {
        self.events += events;
        self.rows += 1;
        match (self.rows, self.single.take()) {
            (1, _) => self.single = Some((users, count)),
            (_, Some((first, _))) => {
                let mut all = Vec::new();
                decode(first, |u| all.push(u));
                decode(users, |u| all.push(u));
                self.union = Some(all);
            }
            (_, None) => {
                let all = self.union.get_or_insert_with(Vec::new);
                decode(users, |u| all.push(u));
            }
        }
    }

    fn add_user(&mut self, events: i64, user: Option<u32>) {
        self.events += events;
        let Some(user) = user else { return };
        let mut all = self.union.take().unwrap_or_default();
        if let Some((first, _)) = self.single.take() {
            decode(first, |u| all.push(u));
        }
        self.rows += 2;
        all.push(user);
        self.union = Some(all);
    }

    fn unique(self) -> i64 {
        match (self.single, self.union) {
            (Some((_, count)), _) => count,
            (None, Some(mut all)) => {
                all.sort_unstable();
                all.dedup();
                i64::try_from(all.len()).unwrap_or(i64::MAX)
            }
            (None, None) => 0,
        }
    }
}

/// The summary's groups and totals from rollup rows and the raw rows of partial hours, whose
/// users are numbered by `numbers` (users unknown there get numbers above every known one).
pub fn combine(
    spec: &SummarySpec,
    rows: &[RollupRow],
    edges: &[EdgeRow],
    numbers: &HashMap<String, u32>,
) -> (Vec<SummaryRow>, (i64, i64)) {
    let key_of = |name: &str, category: &str, source: Option<&str>, hour: i64| {
        let keys: Vec<Option<String>> = spec
            .keys
            .iter()
            .map(|k| match k {
                GroupKey::EventName => Some(name.to_string()),
                GroupKey::EventCategory => Some(category.to_string()),
                GroupKey::Source => source.map(str::to_string),
                GroupKey::UserId | GroupKey::Property(_) => None,
            })
            .collect();
        (keys, spec.bucketing.as_ref().map(|b| bucket_of(hour, b)))
    };
    let mut total_events = 0i64;
    let mut total_users = Bits::default();
    let mut max_seen = numbers.values().max().copied();
    let mut groups: HashMap<(Vec<Option<String>>, Option<i64>), Gathered<'_>> = HashMap::new();
    for r in rows {
        total_events += r.events;
        decode(&r.users, |u| {
            total_users.insert(u);
            max_seen = max_seen.max(Some(u));
        });
        let key = key_of(&r.event_name, &r.event_category, r.source.as_deref(), r.hour);
        groups.entry(key).or_default().add_row(r.events, &r.users, r.user_count);
    }
    // Users not numbered yet: numbers no set here holds.
    let mut next_unknown = max_seen.map_or(0, |m| m.saturating_add(1));
    let mut unknown: HashMap<&str, u32> = HashMap::new();
    for (hour, name, category, source, user, events) in edges {
        total_events += events;
        let n = user.as_deref().map(|u| match numbers.get(u) {
            Some(n) => *n,
            None => *unknown.entry(u).or_insert_with(|| {
                let n = next_unknown;
                next_unknown = next_unknown.saturating_add(1);
                n
            }),
        });
        if let Some(n) = n {
            total_users.insert(n);
        }
        let key = key_of(name, category, source.as_deref(), *hour);
        groups.entry(key).or_default().add_user(*events, n);
    }
    let out = groups
        .into_iter()
        .map(|((keys, bucket), g)| {
            let count = g.events;
            SummaryRow { keys, bucket, count, unique_users: g.unique() }
        })
        .collect();
    (out, (total_events, total_users.count()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Filter;

    #[test]
    fn stale_hours_are_recomputed_in_bounded_runs() {
        let hours = [0, 1, 2, 5, 6].map(|h| h * HOUR);
        assert_eq!(runs(hours.into_iter()), vec![(0, 3 * HOUR), (5 * HOUR, 7 * HOUR)]);
        let many = runs((0..50).map(|h| h * HOUR));
        assert_eq!(many, vec![(0, 24 * HOUR), (24 * HOUR, 48 * HOUR), (48 * HOUR, 50 * HOUR)]);
    }

    #[test]
    fn user_sets_round_trip() {
        let mut users = vec![5, 1, 300, 1, 70_000, 2];
        let bytes = encode(&mut users);
        let mut back = Vec::new();
        decode(&bytes, |u| back.push(u));
        assert_eq!(back, vec![1, 2, 5, 300, 70_000]);
    }

    fn spec(from: i64, to: i64, bucketing: Option<Bucketing>) -> SummarySpec {
        SummarySpec {
            filter: Filter { from: Some(from), to: Some(to), ..Filter::default() },
            keys: vec![GroupKey::EventName],
            bucketing,
        }
    }

    #[test]
    fn ranges_split_into_whole_hours_and_raw_edges() {
        let p = plan(&spec(HOUR + 10, 5 * HOUR + 20, None)).unwrap_or_else(|| panic!("eligible"));
        assert_eq!(p.hours, (2 * HOUR, 5 * HOUR));
        assert_eq!(p.edges, vec![(HOUR + 10, 2 * HOUR), (5 * HOUR, 5 * HOUR + 20)]);
        let p = plan(&spec(2 * HOUR, 4 * HOUR, None)).unwrap_or_else(|| panic!("eligible"));
        assert_eq!((p.hours, p.edges.len()), ((2 * HOUR, 4 * HOUR), 0));
        let p = plan(&spec(HOUR + 10, HOUR + 20, None)).unwrap_or_else(|| panic!("eligible"));
        assert_eq!(p.edges, vec![(HOUR + 10, HOUR + 20)]);
        // Minutes, half-hour zones and user groups need the raw events.
        let minutes = Bucketing { bucket: Bucket::Minute, initial_offset: 0, changes: vec![] };
        assert!(plan(&spec(0, HOUR, Some(minutes))).is_none());
        let india = Bucketing { bucket: Bucket::Day, initial_offset: HOUR * 11 / 2, changes: vec![] };
        assert!(plan(&spec(0, HOUR, Some(india))).is_none());
        let mut by_user = spec(0, HOUR, None);
        by_user.keys.push(GroupKey::UserId);
        assert!(plan(&by_user).is_none());
    }

    #[test]
    fn groups_add_events_and_unite_users() {
        let mut a = vec![1, 2, 3];
        let mut b = vec![3, 4];
        let rows = vec![
            RollupRow {
                hour: 0,
                event_name: "x".into(),
                event_category: "c".into(),
                source: None,
                events: 5,
                user_count: 3,
                users: encode(&mut a),
            },
            RollupRow {
                hour: HOUR,
                event_name: "x".into(),
                event_category: "c".into(),
                source: None,
                events: 2,
                user_count: 2,
                users: encode(&mut b),
            },
        ];
        let numbers: HashMap<String, u32> = [("u4".to_string(), 4)].into_iter().collect();
        let edges = vec![
            (2 * HOUR, "x".to_string(), "c".to_string(), None, Some("u4".to_string()), 1),
            (2 * HOUR, "x".to_string(), "c".to_string(), None, Some("new".to_string()), 2),
        ];
        let s = spec(0, 3 * HOUR, None);
        let (groups, total) = combine(&s, &rows, &edges, &numbers);
        assert_eq!(groups.len(), 1);
        assert_eq!((groups[0].count, groups[0].unique_users), (10, 5));
        assert_eq!(total, (10, 5));
    }

    #[test]
    fn days_follow_the_zone_offset_across_a_change() {
        let day = Bucket::Day.micros();
        // UTC+1, then UTC+2 from hour 50.
        let b = Bucketing { bucket: Bucket::Day, initial_offset: HOUR, changes: vec![(50 * HOUR, 2 * HOUR)] };
        assert_eq!(bucket_of(22 * HOUR, &b), 0);
        assert_eq!(bucket_of(23 * HOUR, &b), day);
        assert_eq!(bucket_of(46 * HOUR, &b), 2 * day - day);
        assert_eq!(bucket_of(46 * HOUR + HOUR, &b), 2 * day);
        assert_eq!(bucket_of(70 * HOUR, &b), 3 * day);
    }
}
