//! SQL of the analytics plugin, behind [`EventStore`]: one implementation per dialect
//! ([`SqliteStore`], [`PgStore`]). The statements are the same text where the dialects agree
//! (`$n` parameters, `ON CONFLICT`, `RETURNING`); [`Dialect`] supplies where they differ (JSON
//! access, the placeholders of the bulk insert). Every value of a request is a bound parameter;
//! only fixed column names, operators and integer constants are written into the SQL.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use futures::future::BoxFuture;
use nexus_kernel::db::{Db, StorageError};
use nexus_kernel::query::{Field, Keyed, Kind, ListQuery, Listing, Op, Page, Value};
use sqlx::Row as _;

use crate::rollup::{self, EdgeRow, RollupRow};

/// One stored event.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct EventRow {
    pub id: String,
    /// The client's `event_id`.
    pub event_key: Option<String>,
    /// The event's time, microseconds.
    pub ts: i64,
    pub received_at: i64,
    pub event_name: String,
    pub event_category: String,
    pub user_id: Option<String>,
    pub linked_user_id: Option<String>,
    pub source: Option<String>,
    /// A JSON object.
    pub properties: String,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

const COLUMNS: &str = "id, event_key, ts, received_at, event_name, event_category, user_id, linked_user_id, \
    source, properties, ip_address, user_agent";
const PER_ROW: usize = 12;
/// Rows per insert statement at most; smaller statements are powers of two, so that a
/// connection prepares only a few distinct ones.
const CHUNK: usize = 128;

/// What became of one row handed to [`EventStore::insert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Inserted,
    /// Its `event_key` was already stored, under this id.
    Duplicate(String),
}

/// Which events a query reads; every field narrows. Times are microseconds, `from`
/// inclusive, `to` exclusive.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub event_name: Option<String>,
    pub event_category: Option<String>,
    pub user_id: Option<String>,
    pub source: Option<String>,
    /// `properties.<key>` equal to a value, given as its possible JSON texts.
    pub properties: Vec<(String, Vec<String>)>,
}

/// A column or a property to group a summary by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupKey {
    EventName,
    EventCategory,
    Source,
    UserId,
    Property(String),
}

/// The width of a time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Minute,
    Hour,
    Day,
    Week,
}

impl Bucket {
    pub const fn micros(self) -> i64 {
        const MINUTE: i64 = 60_000_000;
        match self {
            Bucket::Minute => MINUTE,
            Bucket::Hour => 60 * MINUTE,
            Bucket::Day => 24 * 60 * MINUTE,
            Bucket::Week => 7 * 24 * 60 * MINUTE,
        }
    }
}

/// Time buckets in a zone: the zone's UTC offset (microseconds) over the queried range, as
/// the offset before the first change and each change after (instant, new offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucketing {
    pub bucket: Bucket,
    pub initial_offset: i64,
    pub changes: Vec<(i64, i64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SummarySpec {
    pub filter: Filter,
    pub keys: Vec<GroupKey>,
    pub bucketing: Option<Bucketing>,
}

/// One group of a summary. `bucket` is, for minutes and hours, the UTC instant the bucket
/// starts; for days and weeks, the local date-time it starts at, written as if it were UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRow {
    /// Values of the keys; a property as its JSON text.
    pub keys: Vec<Option<String>>,
    pub bucket: Option<i64>,
    pub count: i64,
    pub unique_users: i64,
}

/// The groups of a summary, and the (count, unique users) of all its events.
pub type SummaryAnswer = (Vec<SummaryRow>, (i64, i64));

/// (user, event name, time) of the events a funnel considers.
pub type FunnelRow = (String, String, i64);

/// Storage of analytics events.
pub trait EventStore: Send + Sync + std::fmt::Debug {
    /// Inserts `rows` in one transaction: each is inserted, or is a duplicate of a stored
    /// `event_key`. Committed when this returns `Ok`.
    fn insert(&self, rows: Vec<EventRow>) -> BoxFuture<'_, Result<Vec<Written>, StorageError>>;

    /// A page of the events matching `filter` and the list request `q`; counted when `count`.
    fn page<'a>(
        &'a self,
        filter: &'a Filter,
        q: &'a ListQuery,
        count: bool,
    ) -> BoxFuture<'a, Result<Page<EventRow>, StorageError>>;

    /// The groups of `spec`, and the total (count, unique users) of its filter.
    fn summary<'a>(&'a self, spec: &'a SummarySpec) -> BoxFuture<'a, Result<SummaryAnswer, StorageError>>;

    /// Events named in `steps` with a user, between `from` and `to`, by user then time.
    fn funnel_rows<'a>(
        &'a self,
        steps: &'a [String],
        from: i64,
        to: i64,
    ) -> BoxFuture<'a, Result<Vec<FunnelRow>, StorageError>>;

    /// Recomputes from the raw events the rollups of the hours in `[from, to)` that are not
    /// valid (`crate::rollup`); returns how many hours it recomputed.
    fn refresh_rollups(&self, from: i64, to: i64) -> BoxFuture<'_, Result<usize, StorageError>>;

    /// The rollup rows of the hours in `[from, to)` that `filter`'s name, category and source
    /// select.
    fn rollups<'a>(
        &'a self,
        from: i64,
        to: i64,
        filter: &'a Filter,
    ) -> BoxFuture<'a, Result<Vec<RollupRow>, StorageError>>;

    /// The raw events in `[from, to)` that `filter`'s name, category and source select, grouped
    /// by hour, name, category, source and user.
    fn edge_rows<'a>(
        &'a self,
        from: i64,
        to: i64,
        filter: &'a Filter,
    ) -> BoxFuture<'a, Result<Vec<EdgeRow>, StorageError>>;

    /// The numbers of those of `users` that have one.
    fn user_numbers<'a>(&'a self, users: &'a [String]) -> BoxFuture<'a, Result<HashMap<String, u32>, StorageError>>;

    /// Deletes at most `batch` events older than `cutoff`; returns how many went.
    fn delete_before(&self, cutoff: i64, batch: i64) -> BoxFuture<'_, Result<u64, StorageError>>;

    /// Up to `limit` events with `from <= ts < to` after the event at (`ts`, `id`) in time order.
    fn export<'a>(
        &'a self,
        from: i64,
        to: i64,
        after: Option<&'a (i64, String)>,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<EventRow>, StorageError>>;
}

/// The store for `db`'s backend.
pub fn open(db: &Db) -> std::sync::Arc<dyn EventStore> {
    match db {
        Db::Sqlite(pool) => std::sync::Arc::new(SqliteStore(pool.clone())),
        Db::Postgres(pool) => std::sync::Arc::new(PgStore(pool.clone())),
    }
}

#[derive(Debug, Clone)]
pub struct SqliteStore(pub sqlx::SqlitePool);

#[derive(Debug, Clone)]
pub struct PgStore(pub sqlx::PgPool);

/// The SQL of the hour an event falls in (`rollup::hour_of`).
const HOUR_SQL: &str = "(ts - (((ts % 3600000000) + 3600000000) % 3600000000))";

/// Marks the hours of `times` dirty in `tx` (their rollups are recomputed when next needed).
async fn mark_dirty<'c, DB>(
    tx: &mut sqlx::Transaction<'c, DB>,
    times: impl Iterator<Item = i64>,
) -> Result<(), StorageError>
where
    DB: sqlx::Database + sqlx::database::HasStatementCache,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    for<'q> DB::Arguments: sqlx::IntoArguments<DB>,
{
    let mut hours: Vec<i64> = times.map(rollup::hour_of).collect();
    hours.sort_unstable();
    hours.dedup();
    for chunk in hours.chunks(CHUNK) {
        let list: Vec<String> = (1..=chunk.len()).map(|i| format!("(${i})")).collect();
        let sql = format!("INSERT INTO analytics_dirty_hours (hour) VALUES {} ON CONFLICT DO NOTHING", list.join(", "));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
        for h in chunk {
            q = q.bind(*h);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Where the two SQL dialects differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The JSON text of a top-level property whose key is parameter `$n`, NULL when absent.
    fn property(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("(properties -> ${n})"),
            Dialect::Postgres => format!("((properties::jsonb -> ${n})::text)"),
        }
    }

    /// The parameter value naming property `key` for [`Dialect::property`].
    fn property_param(self, key: &str) -> Value {
        match self {
            Dialect::Sqlite => Value::Text(format!("$.{key}")),
            Dialect::Postgres => Value::Text(key.to_string()),
        }
    }

    /// The insert of `n` rows; SQLite gets `?`: it looks numbered parameters up by a linear
    /// scan, which makes binding a large statement quadratic.
    fn insert_sql(self, n: usize) -> String {
        let mut sql = format!("INSERT INTO analytics_events ({COLUMNS}) VALUES ");
        for row in 0..n {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for i in 0..PER_ROW {
                let sep = if i == 0 { "" } else { ", " };
                let _ = match self {
                    Dialect::Sqlite => write!(sql, "{sep}?"),
                    Dialect::Postgres => write!(sql, "{sep}${}", row * PER_ROW + i + 1),
                };
            }
            sql.push(')');
        }
        sql.push_str(" ON CONFLICT DO NOTHING RETURNING id");
        sql
    }

    /// `WHERE` conditions of `f`, parameters from `$first`.
    fn filter(self, f: &Filter, first: usize) -> (String, Vec<Value>) {
        let mut params: Vec<Value> = Vec::new();
        let mut parts: Vec<String> = Vec::new();
        let next = |v: Value, params: &mut Vec<Value>| {
            params.push(v);
            first + params.len() - 1
        };
        if let Some(from) = f.from {
            parts.push(format!("ts >= ${}", next(Value::Int(from), &mut params)));
        }
        if let Some(to) = f.to {
            parts.push(format!("ts < ${}", next(Value::Int(to), &mut params)));
        }
        for (column, value) in [
            ("event_name", &f.event_name),
            ("event_category", &f.event_category),
            ("user_id", &f.user_id),
            ("source", &f.source),
        ] {
            if let Some(v) = value {
                parts.push(format!("{column} = ${}", next(Value::Text(v.clone()), &mut params)));
            }
        }
        for (key, texts) in &f.properties {
            let k = next(self.property_param(key), &mut params);
            let list: Vec<String> =
                texts.iter().map(|t| format!("${}", next(Value::Text(t.clone()), &mut params))).collect();
            parts.push(format!("{} IN ({})", self.property(k), list.join(", ")));
        }
        let sql = if parts.is_empty() { String::from("1 = 1") } else { parts.join(" AND ") };
        (sql, params)
    }

    /// The summary's grouping query and its parameters.
    fn summary_sql(self, spec: &SummarySpec) -> (String, Vec<Value>) {
        let (filter, mut params) = self.filter(&spec.filter, 1);
        let mut offset = String::from("0");
        if let Some(b) = &spec.bucketing {
            let add = |v: i64, params: &mut Vec<Value>| {
                params.push(Value::Int(v));
                format!("${}", params.len())
            };
            let mut case = String::from("CASE");
            let mut current = b.initial_offset;
            for (at, next) in &b.changes {
                let at = add(*at, &mut params);
                let off = add(current, &mut params);
                let _ = write!(case, " WHEN ts < {at} THEN {off}");
                current = *next;
            }
            let last = add(current, &mut params);
            offset = if b.changes.is_empty() { last } else { format!("{case} ELSE {last} END") };
        }
        let mut select: Vec<String> = Vec::new();
        for key in &spec.keys {
            select.push(match key {
                GroupKey::EventName => String::from("event_name"),
                GroupKey::EventCategory => String::from("event_category"),
                GroupKey::Source => String::from("source"),
                GroupKey::UserId => String::from("user_id"),
                GroupKey::Property(k) => {
                    params.push(self.property_param(k));
                    self.property(params.len())
                }
            });
        }
        if let Some(b) = &spec.bucketing {
            let w = b.bucket.micros();
            let floor = |x: &str| format!("({x} - ((({x} % {w}) + {w}) % {w}))");
            select.push(match b.bucket {
                Bucket::Minute | Bucket::Hour => format!("({} - o)", floor("(ts + o)")),
                Bucket::Day => floor("(ts + o)"),
                // Weeks start on Monday; the epoch was a Thursday.
                Bucket::Week => {
                    let shift = 3 * Bucket::Day.micros();
                    format!("({} - {shift})", floor(&format!("(ts + o + {shift})")))
                }
            });
        }
        let groups: Vec<String> = (1..=select.len()).map(|i| i.to_string()).collect();
        select.push(String::from("COUNT(*)"));
        select.push(String::from("COUNT(DISTINCT user_id)"));
        let mut sql = format!(
            "SELECT {} FROM (SELECT ts, event_name, event_category, source, user_id, properties, {offset} AS o \
             FROM analytics_events WHERE {filter}) AS e",
            select.join(", ")
        );
        if !groups.is_empty() {
            let _ = write!(sql, " GROUP BY {}", groups.join(", "));
        }
        (sql, params)
    }
}

/// What `GET /v2/analytics/events` allows to filter (`filter[...]`) and sort.
pub const EVENT_LISTING: Listing = Listing {
    name: "analytics_events",
    fields: &[
        Field { name: "id", column: "id", kind: Kind::Text, ops: Op::EQUALITY, sortable: true },
        Field { name: "timestamp", column: "ts", kind: Kind::Time, ops: Op::ORDERED, sortable: true },
        Field { name: "received_at", column: "received_at", kind: Kind::Time, ops: Op::ORDERED, sortable: true },
        Field { name: "event_name", column: "event_name", kind: Kind::Text, ops: Op::TEXT, sortable: true },
        Field { name: "event_category", column: "event_category", kind: Kind::Text, ops: Op::TEXT, sortable: true },
        Field { name: "user_id", column: "user_id", kind: Kind::Text, ops: Op::TEXT, sortable: false },
        Field { name: "source", column: "source", kind: Kind::Text, ops: Op::TEXT, sortable: false },
    ],
    unique: "id",
    default_sort: "-timestamp",
    default_limit: 50,
    select: &[
        "id",
        "event_id",
        "event_name",
        "event_category",
        "timestamp",
        "user_id",
        "linked_user_id",
        "source",
        "properties",
        "ip_address",
        "user_agent",
        "received_at",
    ],
};

impl Keyed for EventRow {
    fn key(&self, field: &str) -> Value {
        match field {
            "timestamp" => Value::Int(self.ts),
            "received_at" => Value::Int(self.received_at),
            "event_name" => Value::Text(self.event_name.clone()),
            "event_category" => Value::Text(self.event_category.clone()),
            _ => Value::Text(self.id.clone()),
        }
    }
}

/// `rows` split into statement sizes: whole chunks, then powers of two.
fn chunk_sizes(mut n: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    while n > 0 {
        let size = if n >= CHUNK { CHUNK } else { 1usize << n.ilog2() };
        sizes.push(size);
        n -= size;
    }
    sizes
}

/// The same code for each dialect's pool type.
macro_rules! impl_store {
    ($store:ty, $dialect:expr) => {
        impl $store {
            /// Recomputes the rollups of the hours in `[start, end)` from the raw events, in one
            /// transaction that also clears their dirty marks: an event committed before it is
            /// counted; one committed after marks its hour dirty again.
            async fn recompute(&self, start: i64, end: i64) -> Result<(), StorageError> {
                let dialect: Dialect = $dialect;
                // SQLite: IMMEDIATE, so that the reads see what the writes will be based on.
                let mut tx = match dialect {
                    Dialect::Sqlite => self.0.begin_with("BEGIN IMMEDIATE").await?,
                    Dialect::Postgres => self.0.begin().await?,
                };
                sqlx::query("DELETE FROM analytics_dirty_hours WHERE hour >= $1 AND hour < $2")
                    .bind(start)
                    .bind(end)
                    .execute(&mut *tx)
                    .await?;
                let sql = format!(
                    "SELECT {HOUR_SQL}, event_name, event_category, source, user_id, COUNT(*) \
                     FROM analytics_events WHERE ts >= $1 AND ts < $2 GROUP BY 1, 2, 3, 4, 5"
                );
                let raw: Vec<EdgeRow> =
                    sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(start).bind(end).fetch_all(&mut *tx).await?;
                let mut users: Vec<&str> = raw.iter().filter_map(|r| r.4.as_deref()).collect();
                users.sort_unstable();
                users.dedup();
                let mut numbers: HashMap<String, u32> = HashMap::with_capacity(users.len());
                for chunk in users.chunks(CHUNK) {
                    let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
                    let sql =
                        format!("SELECT user_id, n FROM analytics_user_ids WHERE user_id IN ({})", list.join(", "));
                    let mut q = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql)).persistent(false);
                    for u in chunk {
                        q = q.bind(*u);
                    }
                    for (user, n) in q.fetch_all(&mut *tx).await? {
                        numbers.insert(user, u32::try_from(n).unwrap_or(u32::MAX));
                    }
                }
                let missing: Vec<&str> = users.iter().copied().filter(|u| !numbers.contains_key(*u)).collect();
                if !missing.is_empty() {
                    let max: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(n), -1) FROM analytics_user_ids")
                        .fetch_one(&mut *tx)
                        .await?;
                    let mut next = max + 1;
                    for chunk in missing.chunks(CHUNK / 2) {
                        let list: Vec<String> =
                            (0..chunk.len()).map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2)).collect();
                        let sql = format!("INSERT INTO analytics_user_ids (user_id, n) VALUES {}", list.join(", "));
                        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
                        for u in chunk {
                            q = q.bind(*u).bind(next);
                            numbers.insert((*u).to_string(), u32::try_from(next).unwrap_or(u32::MAX));
                            next += 1;
                        }
                        q.execute(&mut *tx).await?;
                    }
                }
                let mut groups: std::collections::BTreeMap<(i64, String, String, String), (i64, Vec<u32>)> =
                    std::collections::BTreeMap::new();
                for (hour, name, category, source, user, events) in raw {
                    let g = groups.entry((hour, name, category, source.unwrap_or_default())).or_default();
                    g.0 += events;
                    if let Some(n) = user.and_then(|u| numbers.get(&u).copied()) {
                        g.1.push(n);
                    }
                }
                sqlx::query("DELETE FROM analytics_rollups WHERE hour >= $1 AND hour < $2")
                    .bind(start)
                    .bind(end)
                    .execute(&mut *tx)
                    .await?;
                let groups: Vec<_> = groups.into_iter().collect();
                for chunk in groups.chunks(CHUNK / 8) {
                    let list: Vec<String> = (0..chunk.len())
                        .map(|i| {
                            let p: Vec<String> = (1..=7).map(|j| format!("${}", 7 * i + j)).collect();
                            format!("({})", p.join(", "))
                        })
                        .collect();
                    let sql = format!(
                        "INSERT INTO analytics_rollups (hour, event_name, event_category, source, events, \
                         user_count, users) VALUES {}",
                        list.join(", ")
                    );
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
                    for ((hour, name, category, source), (events, users)) in chunk {
                        let mut users = users.clone();
                        let bytes = rollup::encode(&mut users);
                        q = q
                            .bind(*hour)
                            .bind(name)
                            .bind(category)
                            .bind(source)
                            .bind(*events)
                            .bind(i64::try_from(users.len()).unwrap_or(i64::MAX))
                            .bind(bytes);
                    }
                    q.execute(&mut *tx).await?;
                }
                let hours: Vec<i64> = (0..).map(|i| start + i * rollup::HOUR).take_while(|h| *h < end).collect();
                for chunk in hours.chunks(CHUNK) {
                    let list: Vec<String> = (1..=chunk.len()).map(|i| format!("(${i})")).collect();
                    let sql = format!(
                        "INSERT INTO analytics_rollup_hours (hour) VALUES {} ON CONFLICT DO NOTHING",
                        list.join(", ")
                    );
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
                    for h in chunk {
                        q = q.bind(*h);
                    }
                    q.execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }
        }

        impl EventStore for $store {
            fn insert(&self, rows: Vec<EventRow>) -> BoxFuture<'_, Result<Vec<Written>, StorageError>> {
                Box::pin(async move {
                    let dialect: Dialect = $dialect;
                    let mut tx = self.0.begin().await?;
                    let mut inserted: HashSet<String> = HashSet::with_capacity(rows.len());
                    let mut rest: &[EventRow] = &rows;
                    for size in chunk_sizes(rows.len()) {
                        let (chunk, tail) = rest.split_at(size.min(rest.len()));
                        rest = tail;
                        let sql = dialect.insert_sql(chunk.len());
                        let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
                        for r in chunk {
                            q = q
                                .bind(&r.id)
                                .bind(&r.event_key)
                                .bind(r.ts)
                                .bind(r.received_at)
                                .bind(&r.event_name)
                                .bind(&r.event_category)
                                .bind(&r.user_id)
                                .bind(&r.linked_user_id)
                                .bind(&r.source)
                                .bind(&r.properties)
                                .bind(&r.ip_address)
                                .bind(&r.user_agent);
                        }
                        inserted.extend(q.fetch_all(&mut *tx).await?);
                    }
                    let missing: Vec<&str> = rows
                        .iter()
                        .filter(|r| !inserted.contains(&r.id))
                        .filter_map(|r| r.event_key.as_deref())
                        .collect();
                    let mut existing: HashMap<String, String> = HashMap::new();
                    for keys in missing.chunks(CHUNK) {
                        let list: Vec<String> = (1..=keys.len()).map(|i| format!("${i}")).collect();
                        let sql = format!(
                            "SELECT event_key, id FROM analytics_events WHERE event_key IN ({})",
                            list.join(", ")
                        );
                        let mut q = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql)).persistent(false);
                        for k in keys {
                            q = q.bind(*k);
                        }
                        existing.extend(q.fetch_all(&mut *tx).await?);
                    }
                    mark_dirty(&mut tx, rows.iter().filter(|r| inserted.contains(&r.id)).map(|r| r.ts)).await?;
                    tx.commit().await?;
                    rows.iter()
                        .map(|r| {
                            if inserted.contains(&r.id) {
                                return Ok(Written::Inserted);
                            }
                            r.event_key
                                .as_ref()
                                .and_then(|k| existing.get(k))
                                .map(|id| Written::Duplicate(id.clone()))
                                .ok_or_else(|| StorageError::Unavailable(String::from("an event was not stored")))
                        })
                        .collect()
                })
            }

            fn page<'a>(
                &'a self,
                filter: &'a Filter,
                q: &'a ListQuery,
                count: bool,
            ) -> BoxFuture<'a, Result<Page<EventRow>, StorageError>> {
                Box::pin(async move {
                    let dialect: Dialect = $dialect;
                    let (filter_sql, filter_params) = dialect.filter(filter, 1);
                    let b = q.build(filter_params.len() + 1);
                    let total = if count {
                        let sql = format!("SELECT COUNT(*) FROM analytics_events WHERE {filter_sql} AND {}", b.filter);
                        let query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql));
                        let query = nexus_kernel::bind_values!(query, &filter_params);
                        Some(nexus_kernel::bind_values!(query, &b.filter_params).fetch_one(&self.0).await?)
                    } else {
                        None
                    };
                    let sql = format!(
                        "SELECT {COLUMNS} FROM analytics_events WHERE {filter_sql} AND {} {} {} {}",
                        b.filter, b.keyset, b.order, b.window
                    );
                    let query = sqlx::query_as::<_, EventRow>(sqlx::AssertSqlSafe(sql));
                    let query = nexus_kernel::bind_values!(query, &filter_params);
                    let rows = nexus_kernel::bind_values!(query, &b.params).fetch_all(&self.0).await?;
                    Ok(q.finish(rows, total))
                })
            }

            fn summary<'a>(&'a self, spec: &'a SummarySpec) -> BoxFuture<'a, Result<SummaryAnswer, StorageError>> {
                Box::pin(async move {
                    let dialect: Dialect = $dialect;
                    let (sql, params) = dialect.summary_sql(spec);
                    let query = sqlx::query(sqlx::AssertSqlSafe(sql));
                    let rows = nexus_kernel::bind_values!(query, &params).fetch_all(&self.0).await?;
                    let keys = spec.keys.len();
                    let bucketed = usize::from(spec.bucketing.is_some());
                    let mut out = Vec::with_capacity(rows.len());
                    for row in rows {
                        let mut values = Vec::with_capacity(keys);
                        for i in 0..keys {
                            values.push(row.try_get::<Option<String>, _>(i)?);
                        }
                        let bucket = if bucketed == 1 { Some(row.try_get::<i64, _>(keys)?) } else { None };
                        out.push(SummaryRow {
                            keys: values,
                            bucket,
                            count: row.try_get::<i64, _>(keys + bucketed)?,
                            unique_users: row.try_get::<i64, _>(keys + bucketed + 1)?,
                        });
                    }
                    let (filter_sql, filter_params) = dialect.filter(&spec.filter, 1);
                    let sql =
                        format!("SELECT COUNT(*), COUNT(DISTINCT user_id) FROM analytics_events WHERE {filter_sql}");
                    let query = sqlx::query_as::<_, (i64, i64)>(sqlx::AssertSqlSafe(sql));
                    let total = nexus_kernel::bind_values!(query, &filter_params).fetch_one(&self.0).await?;
                    Ok((out, total))
                })
            }

            fn funnel_rows<'a>(
                &'a self,
                steps: &'a [String],
                from: i64,
                to: i64,
            ) -> BoxFuture<'a, Result<Vec<FunnelRow>, StorageError>> {
                Box::pin(async move {
                    let names: Vec<String> = (0..steps.len()).map(|i| format!("${}", i + 3)).collect();
                    let sql = format!(
                        "SELECT user_id, event_name, ts FROM analytics_events WHERE ts >= $1 AND ts < $2 \
                         AND user_id IS NOT NULL AND event_name IN ({}) ORDER BY user_id, ts, id",
                        names.join(", ")
                    );
                    let mut q = sqlx::query_as::<_, FunnelRow>(sqlx::AssertSqlSafe(sql)).bind(from).bind(to);
                    for s in steps {
                        q = q.bind(s);
                    }
                    Ok(q.fetch_all(&self.0).await?)
                })
            }

            fn delete_before(&self, cutoff: i64, batch: i64) -> BoxFuture<'_, Result<u64, StorageError>> {
                Box::pin(async move {
                    let mut tx = self.0.begin().await?;
                    let gone: Vec<i64> = sqlx::query_scalar(
                        "DELETE FROM analytics_events WHERE id IN \
                         (SELECT id FROM analytics_events WHERE ts < $1 ORDER BY ts LIMIT $2) RETURNING ts",
                    )
                    .bind(cutoff)
                    .bind(batch)
                    .fetch_all(&mut *tx)
                    .await?;
                    mark_dirty(&mut tx, gone.iter().copied()).await?;
                    tx.commit().await?;
                    Ok(u64::try_from(gone.len()).unwrap_or(u64::MAX))
                })
            }

            fn refresh_rollups(&self, from: i64, to: i64) -> BoxFuture<'_, Result<usize, StorageError>> {
                Box::pin(async move {
                    let computed: HashSet<i64> =
                        sqlx::query_scalar("SELECT hour FROM analytics_rollup_hours WHERE hour >= $1 AND hour < $2")
                            .bind(from)
                            .bind(to)
                            .fetch_all(&self.0)
                            .await?
                            .into_iter()
                            .collect();
                    let dirty: HashSet<i64> =
                        sqlx::query_scalar("SELECT hour FROM analytics_dirty_hours WHERE hour >= $1 AND hour < $2")
                            .bind(from)
                            .bind(to)
                            .fetch_all(&self.0)
                            .await?
                            .into_iter()
                            .collect();
                    let stale = (0..)
                        .map(|i| from + i * rollup::HOUR)
                        .take_while(|h| *h < to)
                        .filter(|h| !computed.contains(h) || dirty.contains(h));
                    let runs = rollup::runs(stale);
                    let mut done = 0;
                    for (start, end) in runs {
                        self.recompute(start, end).await?;
                        done += usize::try_from((end - start) / rollup::HOUR).unwrap_or(0);
                    }
                    Ok(done)
                })
            }

            fn rollups<'a>(
                &'a self,
                from: i64,
                to: i64,
                filter: &'a Filter,
            ) -> BoxFuture<'a, Result<Vec<RollupRow>, StorageError>> {
                Box::pin(async move {
                    let mut sql = String::from(
                        "SELECT hour, event_name, event_category, source, events, user_count, users \
                         FROM analytics_rollups WHERE hour >= $1 AND hour < $2",
                    );
                    let mut values: Vec<&str> = Vec::new();
                    for (column, value) in [
                        ("event_name", &filter.event_name),
                        ("event_category", &filter.event_category),
                        ("source", &filter.source),
                    ] {
                        if let Some(v) = value {
                            values.push(v);
                            let _ = write!(sql, " AND {column} = ${}", values.len() + 2);
                        }
                    }
                    let mut q =
                        sqlx::query_as::<_, (i64, String, String, String, i64, i64, Vec<u8>)>(sqlx::AssertSqlSafe(sql))
                            .bind(from)
                            .bind(to);
                    for v in values {
                        q = q.bind(v);
                    }
                    Ok(q.fetch_all(&self.0)
                        .await?
                        .into_iter()
                        .map(|(hour, event_name, event_category, source, events, user_count, users)| RollupRow {
                            hour,
                            event_name,
                            event_category,
                            source: (!source.is_empty()).then_some(source),
                            events,
                            user_count,
                            users,
                        })
                        .collect())
                })
            }

            fn edge_rows<'a>(
                &'a self,
                from: i64,
                to: i64,
                filter: &'a Filter,
            ) -> BoxFuture<'a, Result<Vec<EdgeRow>, StorageError>> {
                Box::pin(async move {
                    let dialect: Dialect = $dialect;
                    let narrowed = Filter {
                        from: Some(from),
                        to: Some(to),
                        event_name: filter.event_name.clone(),
                        event_category: filter.event_category.clone(),
                        source: filter.source.clone(),
                        ..Filter::default()
                    };
                    let (filter_sql, params) = dialect.filter(&narrowed, 1);
                    let sql = format!(
                        "SELECT {HOUR_SQL}, event_name, event_category, source, user_id, COUNT(*) \
                         FROM analytics_events WHERE {filter_sql} GROUP BY 1, 2, 3, 4, 5"
                    );
                    let query = sqlx::query_as::<_, EdgeRow>(sqlx::AssertSqlSafe(sql));
                    Ok(nexus_kernel::bind_values!(query, &params).fetch_all(&self.0).await?)
                })
            }

            fn user_numbers<'a>(
                &'a self,
                users: &'a [String],
            ) -> BoxFuture<'a, Result<HashMap<String, u32>, StorageError>> {
                Box::pin(async move {
                    let mut out = HashMap::with_capacity(users.len());
                    for chunk in users.chunks(CHUNK) {
                        let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
                        let sql =
                            format!("SELECT user_id, n FROM analytics_user_ids WHERE user_id IN ({})", list.join(", "));
                        let mut q = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql)).persistent(false);
                        for u in chunk {
                            q = q.bind(u);
                        }
                        for (user, n) in q.fetch_all(&self.0).await? {
                            if let Ok(n) = u32::try_from(n) {
                                out.insert(user, n);
                            }
                        }
                    }
                    Ok(out)
                })
            }

            fn export<'a>(
                &'a self,
                from: i64,
                to: i64,
                after: Option<&'a (i64, String)>,
                limit: i64,
            ) -> BoxFuture<'a, Result<Vec<EventRow>, StorageError>> {
                Box::pin(async move {
                    let (ts, id) = match after {
                        Some((ts, id)) => (*ts, id.as_str()),
                        None => (from.saturating_sub(1), ""),
                    };
                    let sql = format!(
                        "SELECT {COLUMNS} FROM analytics_events WHERE ts >= $1 AND ts < $2 \
                         AND (ts > $3 OR (ts = $3 AND id > $4)) ORDER BY ts, id LIMIT $5"
                    );
                    Ok(sqlx::query_as::<_, EventRow>(sqlx::AssertSqlSafe(sql))
                        .bind(from)
                        .bind(to)
                        .bind(ts)
                        .bind(id)
                        .bind(limit)
                        .fetch_all(&self.0)
                        .await?)
                })
            }
        }
    };
}

impl_store!(SqliteStore, Dialect::Sqlite);
impl_store!(PgStore, Dialect::Postgres);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_powers_of_two_with_a_parameter_per_value() {
        assert_eq!(chunk_sizes(300), [128, 128, 32, 8, 4]);
        let sql = Dialect::Postgres.insert_sql(2);
        assert!(sql.contains("$24)") && !sql.contains("$25"), "{sql}");
        assert_eq!(Dialect::Sqlite.insert_sql(3).matches('?').count(), 3 * PER_ROW);
    }

    #[test]
    fn filters_bind_every_value() {
        let f = Filter {
            from: Some(1),
            event_name: Some("x' OR 1=1".into()),
            properties: vec![("plan".into(), vec!["\"pro\"".into()])],
            ..Filter::default()
        };
        let (sql, params) = Dialect::Sqlite.filter(&f, 1);
        assert_eq!(sql, "ts >= $1 AND event_name = $2 AND (properties -> $3) IN ($4)");
        assert_eq!(params.len(), 4);
    }
}
