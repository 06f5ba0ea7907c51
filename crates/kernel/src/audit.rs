//! The audit log: an append-only record of security-relevant actions. Writers that must fail
//! closed (a secret is not served without its record) check the result of
//! [`AuditLog::record`].

use std::collections::HashMap;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::clock::Timestamp;
use crate::db::{Backend, Db, StorageError};
use crate::group_commit::{GroupCommit, GroupCommitError, Sink};
use crate::query::{Field, Keyed, Kind, ListQuery, Listing, Op, Page, Value};

/// One action, as it is written.
#[derive(Debug, Clone, Default)]
pub struct AuditRecord {
    pub action: String,
    /// The acting user's id; for a failed login, the name that was tried.
    pub actor: String,
    /// What was acted on, when it is not a secret (a user id, a key id).
    pub target: String,
    pub secret_id: String,
    pub secret_path: String,
    pub ip_address: String,
    pub user_agent: String,
    pub success: bool,
    pub request_id: String,
    pub metadata: serde_json::Value,
}

/// One action, as it is read back.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: String,
    pub timestamp: i64,
    pub action: String,
    pub actor: String,
    pub target: String,
    pub secret_id: String,
    pub secret_path: String,
    pub ip_address: String,
    pub user_agent: String,
    pub success: bool,
    pub request_id: String,
    pub metadata: String,
}

/// Which entries to read; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub secret_path: Option<String>,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    pub limit: Option<i64>,
    pub offset: i64,
}

/// Records waiting for the writer; a full queue makes writers wait (back-pressure), it never
/// drops a record.
const QUEUE: usize = 8192;
/// Records inserted by one statement at most (a power of two).
const CHUNK: usize = 256;

const COLUMNS: &str = "id, timestamp, action, actor, target, secret_id, secret_path, ip_address, user_agent, success, request_id, metadata";
/// Bound values per record.
const PARAMS: usize = 12;

/// A record on its way to the log; its id and time are fixed when it is submitted.
#[derive(Debug)]
struct Pending {
    id: String,
    timestamp: i64,
    rec: AuditRecord,
}

/// Binds the values of one record, in [`COLUMNS`] order, to `$query`.
macro_rules! bind_record {
    ($query:expr, $id:expr, $timestamp:expr, $rec:expr, $metadata:expr) => {
        $query
            .bind($id)
            .bind($timestamp)
            .bind(&$rec.action)
            .bind(&$rec.actor)
            .bind(&$rec.target)
            .bind(&$rec.secret_id)
            .bind(&$rec.secret_path)
            .bind(&$rec.ip_address)
            .bind(&$rec.user_agent)
            .bind($rec.success)
            .bind(&$rec.request_id)
            .bind($metadata)
    };
}

fn metadata_text(rec: &AuditRecord) -> String {
    if rec.metadata.is_null() { String::from("{}") } else { rec.metadata.to_string() }
}

/// A new record's id: time-ordered (v7), so that consecutive records land on the last page of
/// the primary key's index instead of dirtying a random page of it each.
fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Writes an audit record inside the caller's transaction, for a record that must commit (or
/// not) with what the caller checks or changes there: a plugin that serves a cached copy
/// checks in its own tables, in the same transaction, that the copy is still current.
pub trait AuditTx: Send {
    /// Inserts `rec`; its id.
    fn write_record<'a>(
        &'a mut self,
        rec: &'a AuditRecord,
    ) -> impl Future<Output = Result<String, sqlx::Error>> + Send + 'a;

    /// Inserts each of `recs` whose guard holds when it is inserted, many rows per
    /// statement, each statement atomic on its own: for each record, whether it was written.
    /// `condition` is the plugin's boolean SQL expression over `guard_key` (text) and
    /// `guard_version` (bigint), about its own tables: a plugin that serves a copy it cached
    /// learns this way, with the record, whether the copy is still current, in one round trip
    /// for many reads. Static, so that no request input ever becomes SQL.
    fn write_records_if<'a>(
        &'a mut self,
        recs: &'a [Guarded<'a>],
        condition: &'static str,
    ) -> impl Future<Output = Result<Vec<bool>, sqlx::Error>> + Send + 'a;
}

/// A record for [`AuditTx::write_records_if`], with the key and version its guard tests.
#[derive(Debug, Clone, Copy)]
pub struct Guarded<'a> {
    pub rec: &'a AuditRecord,
    pub key: &'a str,
    pub version: i64,
}

macro_rules! audit_tx {
    ($conn:ty, $backend:expr) => {
        impl AuditTx for $conn {
            async fn write_record(&mut self, rec: &AuditRecord) -> Result<String, sqlx::Error> {
                let id = new_id();
                let sql = format!(
                    "INSERT INTO audit_log ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                );
                let query = sqlx::query(sqlx::AssertSqlSafe(sql));
                bind_record!(query, &id, Timestamp::now().as_micros(), rec, metadata_text(rec))
                    .execute(&mut *self)
                    .await?;
                Ok(id)
            }

            async fn write_records_if(
                &mut self,
                recs: &[Guarded<'_>],
                condition: &'static str,
            ) -> Result<Vec<bool>, sqlx::Error> {
                let timestamp = Timestamp::now().as_micros();
                let mut written = Vec::with_capacity(recs.len());
                let mut rest = recs;
                while !rest.is_empty() {
                    let (chunk, tail) = rest.split_at_checked(chunk_len(rest.len())).unwrap_or((rest, &[]));
                    rest = tail;
                    let rows: Vec<(String, String)> = chunk.iter().map(|g| (new_id(), metadata_text(g.rec))).collect();
                    let sql = guarded_insert_sql($backend, condition, chunk.len());
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for (g, (id, metadata)) in chunk.iter().zip(&rows) {
                        query = bind_record!(query, id, timestamp, g.rec, metadata).bind(g.key).bind(g.version);
                    }
                    let inserted = query.execute(&mut *self).await?.rows_affected();
                    if usize::try_from(inserted).is_ok_and(|n| n == chunk.len()) {
                        written.extend(std::iter::repeat_n(true, chunk.len()));
                        continue;
                    }
                    // Some guards did not hold: which records went in says whose. (Not
                    // RETURNING: sqlx hands each returned row over on its own, and waking the
                    // task per row cost more than this rare second statement.)
                    let mut present =
                        sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(present_sql($backend, chunk.len())));
                    for (id, _) in &rows {
                        present = present.bind(id);
                    }
                    let present = present.persistent(false).fetch_all(&mut *self).await?;
                    written.extend(rows.iter().map(|(id, _)| present.contains(id)));
                }
                Ok(written)
            }
        }
    };
}

audit_tx!(sqlx::SqliteConnection, Backend::Sqlite);
audit_tx!(sqlx::PgConnection, Backend::Postgres);

/// The audit log's writer. Records from concurrent requests are inserted together by a single
/// task, many rows per statement: SQLite has one writer, and a transaction per record would
/// make every request queue for it, each paying a round trip to the connection's thread. Each
/// caller still waits for its own record to be committed, so a caller that must fail closed
/// knows the record is durable.
#[derive(Debug, Clone)]
pub struct AuditLog {
    writer: GroupCommit<Pending, ()>,
}

impl AuditLog {
    /// Starts the writer for `db`; it stops when the last handle is dropped.
    pub fn start(db: Db) -> Self {
        let writer = match db {
            Db::Sqlite(pool) => GroupCommit::start(SqliteWriter::new(pool), CHUNK, QUEUE),
            Db::Postgres(pool) => GroupCommit::start(PostgresWriter::new(pool), CHUNK, QUEUE),
        };
        Self { writer }
    }

    /// Appends `rec` and waits until it is committed; the error is the caller's to act on.
    pub async fn record(&self, rec: &AuditRecord) -> Result<String, StorageError> {
        let id = new_id();
        let pending = Pending { id: id.clone(), timestamp: Timestamp::now().as_micros(), rec: rec.clone() };
        match self.writer.submit(vec![pending]).await {
            Ok(_) => Ok(id),
            Err(GroupCommitError::Stopped) => {
                Err(StorageError::Unavailable(String::from("the audit writer has stopped")))
            }
            // The reason (logged by the writer) is the database's, not the caller's.
            Err(GroupCommitError::Failed(_)) => {
                Err(StorageError::Unavailable(String::from("the audit record could not be written")))
            }
        }
    }

    /// Appends `rec`, logging (never propagating) a failure: for records whose loss must not
    /// fail the action they describe.
    pub async fn record_best_effort(&self, rec: &AuditRecord) {
        if let Err(e) = self.record(rec).await {
            tracing::error!(error = %e, action = %rec.action, "audit record could not be written");
        }
    }
}

/// How many of `waiting` (at least one) records the next statement inserts: the largest power
/// of two not above their number, at most [`CHUNK`]. [`AuditTx::write_records_if`] writes
/// `records` in statements of these sizes; a caller that batches records writes one statement
/// a batch by taking this many.
pub fn chunk_len(waiting: usize) -> usize {
    1usize << waiting.clamp(1, CHUNK).ilog2()
}

/// `($k, …, $k+n-1)` for the values of record `row` of a statement with `per_row` values each;
/// on SQLite `(?, …, ?)`: it looks each numbered parameter's name up by a linear scan, which
/// makes binding the many parameters of a batch quadratic.
fn placeholders(sql: &mut String, backend: Backend, row: usize, per_row: usize) {
    use std::fmt::Write;
    sql.push('(');
    for i in 0..per_row {
        let sep = if i == 0 { "" } else { ", " };
        match backend {
            Backend::Sqlite => {
                sql.push_str(sep);
                sql.push('?');
            }
            Backend::Postgres => {
                let _ = write!(sql, "{sep}${}", row * per_row + i + 1);
            }
        }
    }
    sql.push(')');
}

/// The insert of `n` records.
fn insert_sql(backend: Backend, n: usize) -> String {
    let mut sql = format!("INSERT INTO audit_log ({COLUMNS}) VALUES ");
    for row in 0..n {
        if row > 0 {
            sql.push_str(", ");
        }
        placeholders(&mut sql, backend, row, PARAMS);
    }
    sql
}

/// The insert of the `n` records of [`AuditTx::write_records_if`], each with its guard's key
/// and version after its columns.
fn guarded_insert_sql(backend: Backend, condition: &str, n: usize) -> String {
    // VALUES columns are called column1, column2, … by SQLite and PostgreSQL alike.
    let mut sql = format!(
        "INSERT INTO audit_log ({COLUMNS}) SELECT column1, column2, column3, column4, column5, column6, column7, \
         column8, column9, column10, column11, column12 FROM (SELECT *, column13 AS guard_key, column14 AS \
         guard_version FROM (VALUES "
    );
    for row in 0..n {
        if row > 0 {
            sql.push_str(", ");
        }
        placeholders(&mut sql, backend, row, PARAMS + 2);
    }
    sql.push_str(") AS guard_values) AS guard_rows WHERE ");
    sql.push_str(condition);
    sql
}

/// Which of `n` ids are in the log.
fn present_sql(backend: Backend, n: usize) -> String {
    let mut sql = String::from("SELECT id FROM audit_log WHERE id IN ");
    placeholders(&mut sql, backend, 0, n);
    sql
}

/// The writer's loop for one dialect's pool.
/// The [`Sink`] of [`AuditLog`]'s group commit on one dialect's pool: one statement a batch
/// (its batches are [`chunk_len`] long), on a connection kept while records keep coming, so
/// that a statement costs one round trip and not also a pool acquire and release (sqlx pings
/// a connection as it is released).
macro_rules! writer {
    ($name:ident, $pool:ty, $conn:ty, $backend:expr) => {
        struct $name {
            pool: $pool,
            conn: Option<$conn>,
            /// The insert of each batch length met so far.
            statements: HashMap<usize, String>,
        }

        impl $name {
            fn new(pool: $pool) -> Self {
                Self { pool, conn: None, statements: HashMap::new() }
            }
        }

        impl Sink for $name {
            type Item = Pending;
            type Output = ();

            async fn commit(&mut self, records: Vec<Pending>) -> Result<Vec<()>, String> {
                let sql = self.statements.entry(records.len()).or_insert_with(|| insert_sql($backend, records.len()));
                let conn = match &mut self.conn {
                    Some(conn) => conn,
                    None => self.conn.insert(self.pool.acquire().await.map_err(|e| e.to_string())?),
                };
                let metadata: Vec<String> = records.iter().map(|p| metadata_text(&p.rec)).collect();
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
                for (p, metadata) in records.iter().zip(&metadata) {
                    query = bind_record!(query, &p.id, p.timestamp, p.rec, metadata);
                }
                if let Err(e) = query.execute(&mut **conn).await {
                    // The connection may be what failed; the next batch gets another.
                    self.conn = None;
                    return Err(e.to_string());
                }
                Ok(vec![(); records.len()])
            }

            async fn idle(&mut self) {
                self.conn = None;
            }

            fn batch_len(&self, waiting: usize) -> usize {
                chunk_len(waiting)
            }
        }
    };
}

writer!(SqliteWriter, sqlx::SqlitePool, sqlx::pool::PoolConnection<sqlx::Sqlite>, Backend::Sqlite);
writer!(PostgresWriter, sqlx::PgPool, sqlx::pool::PoolConnection<sqlx::Postgres>, Backend::Postgres);

/// What `GET /api/v1/audit` allows to filter, sort and select (`user` is the `actor` column).
/// No default limit: the seed's default is every entry.
pub const AUDIT_LISTING: Listing = Listing {
    name: "audit",
    fields: &[
        Field { name: "id", column: "id", kind: Kind::Text, ops: Op::EQUALITY, sortable: true },
        Field { name: "timestamp", column: "timestamp", kind: Kind::Time, ops: Op::ORDERED, sortable: true },
        Field { name: "action", column: "action", kind: Kind::Text, ops: Op::TEXT, sortable: true },
        Field { name: "user", column: "actor", kind: Kind::Text, ops: Op::TEXT, sortable: true },
        Field { name: "secret_id", column: "secret_id", kind: Kind::Text, ops: Op::EQUALITY, sortable: false },
        Field { name: "secret_path", column: "secret_path", kind: Kind::Text, ops: Op::TEXT, sortable: true },
        Field { name: "ip_address", column: "ip_address", kind: Kind::Text, ops: Op::TEXT, sortable: false },
        Field { name: "success", column: "success", kind: Kind::Bool, ops: &[Op::Eq, Op::Ne], sortable: false },
    ],
    unique: "id",
    default_sort: "-timestamp,-id",
    default_limit: 0,
    select: &[
        "id",
        "timestamp",
        "action",
        "user",
        "secret_id",
        "secret_path",
        "ip_address",
        "user_agent",
        "success",
        "metadata",
    ],
};

impl Keyed for AuditEntry {
    fn key(&self, field: &str) -> Value {
        match field {
            "timestamp" => Value::Int(self.timestamp),
            "action" => Value::Text(self.action.clone()),
            "user" => Value::Text(self.actor.clone()),
            "secret_path" => Value::Text(self.secret_path.clone()),
            _ => Value::Text(self.id.clone()),
        }
    }
}

/// Reading the audit log, for each dialect (the writer is [`AuditLog`]).
pub trait AuditStore: Send + Sync {
    /// Entries matching `q`, newest first, and how many match in all.
    fn query<'a>(&'a self, q: &'a AuditQuery) -> BoxFuture<'a, Result<(Vec<AuditEntry>, i64), StorageError>>;
    /// A page of the entries matching `base` (its filters; not its limit and offset) and the
    /// list request `q` (built against [`AUDIT_LISTING`]).
    fn page<'a>(
        &'a self,
        base: &'a AuditQuery,
        q: &'a ListQuery,
    ) -> BoxFuture<'a, Result<Page<AuditEntry>, StorageError>>;
}

/// Every filter is a bound parameter; an absent one is a NULL that matches everything.
const FILTER: &str = "($1 IS NULL OR actor = $1) AND ($2 IS NULL OR action = $2) \
    AND ($3 IS NULL OR secret_path = $3) AND ($4 IS NULL OR timestamp >= $4) AND ($5 IS NULL OR timestamp <= $5)";

#[derive(Debug, Clone)]
pub struct SqliteAudit(pub sqlx::SqlitePool);

#[derive(Debug, Clone)]
pub struct PostgresAudit(pub sqlx::PgPool);

macro_rules! audit_store {
    ($store:ty) => {
        impl AuditStore for $store {
            fn query<'a>(&'a self, q: &'a AuditQuery) -> BoxFuture<'a, Result<(Vec<AuditEntry>, i64), StorageError>> {
                Box::pin(async move {
                    let start = q.start.map(Timestamp::as_micros);
                    let end = q.end.map(Timestamp::as_micros);
                    let limit = q.limit.unwrap_or(i64::MAX).max(0);
                    let count_sql = format!("SELECT COUNT(*) FROM audit_log WHERE {FILTER}");
                    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql))
                        .bind(&q.actor)
                        .bind(&q.action)
                        .bind(&q.secret_path)
                        .bind(start)
                        .bind(end)
                        .fetch_one(&self.0)
                        .await?;
                    let list_sql = format!(
                        "SELECT * FROM audit_log WHERE {FILTER} ORDER BY timestamp DESC, id DESC LIMIT $6 OFFSET $7"
                    );
                    let rows = sqlx::query_as::<_, AuditEntry>(sqlx::AssertSqlSafe(list_sql))
                        .bind(&q.actor)
                        .bind(&q.action)
                        .bind(&q.secret_path)
                        .bind(start)
                        .bind(end)
                        .bind(limit)
                        .bind(q.offset.max(0))
                        .fetch_all(&self.0)
                        .await?;
                    Ok((rows, total))
                })
            }

            fn page<'a>(
                &'a self,
                base: &'a AuditQuery,
                q: &'a ListQuery,
            ) -> BoxFuture<'a, Result<Page<AuditEntry>, StorageError>> {
                Box::pin(async move {
                    let start = base.start.map(Timestamp::as_micros);
                    let end = base.end.map(Timestamp::as_micros);
                    let b = q.build(6);
                    let count_sql =
                        sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM audit_log WHERE {FILTER} AND {}", b.filter));
                    let list_sql = sqlx::AssertSqlSafe(format!(
                        "SELECT * FROM audit_log WHERE {FILTER} AND {} {} {} {}",
                        b.filter, b.keyset, b.order, b.window
                    ));
                    let count = sqlx::query_scalar(count_sql)
                        .bind(&base.actor)
                        .bind(&base.action)
                        .bind(&base.secret_path)
                        .bind(start)
                        .bind(end);
                    let total: i64 = crate::bind_values!(count, &b.filter_params).fetch_one(&self.0).await?;
                    let list = sqlx::query_as::<_, AuditEntry>(list_sql)
                        .bind(&base.actor)
                        .bind(&base.action)
                        .bind(&base.secret_path)
                        .bind(start)
                        .bind(end);
                    let rows: Vec<AuditEntry> = crate::bind_values!(list, &b.params).fetch_all(&self.0).await?;
                    Ok(q.finish(rows, Some(total)))
                })
            }
        }
    };
}

audit_store!(SqliteAudit);
audit_store!(PostgresAudit);

/// The audit store for `db`'s dialect.
pub fn store(db: &Db) -> Box<dyn AuditStore> {
    match db {
        Db::Sqlite(pool) => Box::new(SqliteAudit(pool.clone())),
        Db::Postgres(pool) => Box::new(PostgresAudit(pool.clone())),
    }
}

/// Entries matching `q`, newest first, and how many match in all.
pub async fn query(db: &Db, q: &AuditQuery) -> Result<(Vec<AuditEntry>, i64), StorageError> {
    store(db).query(q).await
}

/// A page of the entries matching `base` (its filters; not its limit and offset) and the list
/// request `q` (built against [`AUDIT_LISTING`]).
pub async fn page(db: &Db, base: &AuditQuery, q: &ListQuery) -> Result<Page<AuditEntry>, StorageError> {
    store(db).page(base, q).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_powers_of_two_oldest_first() {
        let mut waiting = 13;
        let sizes: Vec<usize> = std::iter::from_fn(|| {
            let n = (waiting > 0).then(|| chunk_len(waiting))?;
            waiting -= n;
            Some(n)
        })
        .collect();
        assert_eq!(sizes, [8, 4, 1]);
        assert_eq!(chunk_len(1000), CHUNK);
    }

    #[test]
    fn statements_have_one_parameter_per_value() {
        let plain = insert_sql(Backend::Postgres, 2);
        assert!(plain.ends_with("($13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)"), "{plain}");
        assert_eq!(insert_sql(Backend::Sqlite, 3).matches('?').count(), 3 * PARAMS);
    }
}
