//! The audit log: an append-only record of security-relevant actions. Writers that must fail
//! closed (a secret is not served without its record) check the result of
//! [`AuditLog::record`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::clock::Timestamp;
use crate::db::{Backend, Db, StorageError};
use crate::query::{Field, Keyed, Kind, ListQuery, Listing, Op, Page, Value};
use crate::with_db;

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
/// How long an idle writer keeps its connection before giving it back to the pool.
const HOLD: Duration = Duration::from_secs(1);

const COLUMNS: &str = "id, timestamp, action, actor, target, secret_id, secret_path, ip_address, user_agent, success, request_id, metadata";
/// Bound values per record: the columns, then a precondition's key and version.
const PLAIN_PARAMS: usize = 12;
const GUARDED_PARAMS: usize = 14;

/// A condition the audited object must still meet for its record to be written, tested by the
/// statement that inserts the record. A reader that serves a copy it cached earlier learns this
/// way, atomically with the record, whether its copy is still current: the database decides,
/// not a notification from another instance that may arrive late.
#[derive(Debug, Clone)]
pub struct Precondition {
    /// A boolean SQL expression over the columns `guard_key` (text) and `guard_version`
    /// (bigint), such as `EXISTS (SELECT 1 FROM t WHERE t.id = guard_key AND t.version =
    /// guard_version)`. Static, so that no request input ever becomes SQL.
    pub condition: &'static str,
    pub key: String,
    pub version: i64,
}

struct Pending {
    id: String,
    timestamp: i64,
    rec: AuditRecord,
    guard: Option<Precondition>,
    /// `Ok(true)`: committed; `Ok(false)`: the precondition did not hold, nothing was written.
    done: oneshot::Sender<Result<bool, String>>,
}

impl Pending {
    fn condition(&self) -> Option<&'static str> {
        self.guard.as_ref().map(|g| g.condition)
    }

    fn metadata(&self) -> String {
        if self.rec.metadata.is_null() { String::from("{}") } else { self.rec.metadata.to_string() }
    }
}

/// The audit log's writer. Records from concurrent requests are inserted together by a single
/// task, many rows per statement: SQLite has one writer, and a transaction per record would
/// make every request queue for it, each paying a round trip to the connection's thread. Each
/// caller still waits for its own record to be committed, so a caller that must fail closed
/// knows the record is durable.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
}

impl AuditLog {
    /// Starts the writer for `db`; it stops when the last handle is dropped.
    pub fn start(db: Db) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_loop(db, rx));
        Self { tx }
    }

    /// Appends `rec` and waits until it is committed; the error is the caller's to act on.
    pub async fn record(&self, rec: &AuditRecord) -> Result<String, StorageError> {
        match self.submit(rec.clone(), None).await? {
            Some(id) => Ok(id),
            None => Err(StorageError::Unavailable(String::from("the audit record was not written"))),
        }
    }

    /// Appends `rec` only if `pre` holds when it is inserted, and waits until it is committed:
    /// the record's id, or `None` when the precondition did not hold (nothing was written).
    pub async fn record_if(&self, rec: AuditRecord, pre: Precondition) -> Result<Option<String>, StorageError> {
        self.submit(rec, Some(pre)).await
    }

    async fn submit(&self, rec: AuditRecord, guard: Option<Precondition>) -> Result<Option<String>, StorageError> {
        // Time-ordered (v7), so that consecutive records land on the last page of the primary
        // key's index instead of dirtying a random page of it each.
        let id = uuid::Uuid::now_v7().to_string();
        let (done, committed) = oneshot::channel();
        let pending = Pending { id: id.clone(), timestamp: Timestamp::now().as_micros(), rec, guard, done };
        let closed = || StorageError::Unavailable(String::from("the audit writer has stopped"));
        self.tx.send(pending).await.map_err(|_| closed())?;
        match committed.await {
            Ok(Ok(true)) => Ok(Some(id)),
            Ok(Ok(false)) => Ok(None),
            Ok(Err(reason)) => Err(StorageError::Unavailable(reason)),
            Err(_) => Err(closed()),
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

/// Takes the records of the next statement off the front of `queue`: the oldest record and the
/// following ones of its kind (the same precondition, or none), as many as the largest power of
/// two not above their number. The sizes being powers of two, a connection prepares only a few
/// distinct statements; the records left wait for the next statement, oldest first.
fn take_chunk(queue: &mut VecDeque<Pending>) -> Vec<Pending> {
    let Some(kind) = queue.front().map(Pending::condition) else { return Vec::new() };
    let same = queue.iter().filter(|p| p.condition() == kind).count().min(CHUNK);
    let n = 1usize << same.max(1).ilog2();
    let mut chunk = Vec::with_capacity(n);
    let mut rest = VecDeque::with_capacity(queue.len().saturating_sub(n));
    for p in queue.drain(..) {
        if chunk.len() < n && p.condition() == kind {
            chunk.push(p);
        } else {
            rest.push_back(p);
        }
    }
    *queue = rest;
    chunk
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
                let _ = write!(sql, "{sep}?");
            }
            Backend::Postgres => {
                let _ = write!(sql, "{sep}${}", row * per_row + i + 1);
            }
        }
    }
    sql.push(')');
}

/// The insert of `n` records, without (`None`) or with a precondition.
fn insert_sql(backend: Backend, condition: Option<&str>, n: usize) -> String {
    let mut sql = format!("INSERT INTO audit_log ({COLUMNS}) ");
    let per_row = if condition.is_some() { GUARDED_PARAMS } else { PLAIN_PARAMS };
    if condition.is_some() {
        // VALUES columns are called column1, column2, … by SQLite and PostgreSQL alike.
        sql.push_str("SELECT column1, column2, column3, column4, column5, column6, column7, column8, column9, ");
        sql.push_str("column10, column11, column12 FROM (SELECT *, column13 AS guard_key, column14 AS guard_version ");
        sql.push_str("FROM (VALUES ");
    } else {
        sql.push_str("VALUES ");
    }
    for row in 0..n {
        if row > 0 {
            sql.push_str(", ");
        }
        placeholders(&mut sql, backend, row, per_row);
    }
    if let Some(condition) = condition {
        sql.push_str(") AS guard_values) AS guard_rows WHERE ");
        sql.push_str(condition);
    }
    sql
}

/// Which of `ids` are in the log.
fn present_sql(backend: Backend, n: usize) -> String {
    let mut sql = String::from("SELECT id FROM audit_log WHERE id IN ");
    placeholders(&mut sql, backend, 0, n);
    sql
}

async fn write_loop(db: Db, mut rx: mpsc::Receiver<Pending>) {
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut received = Vec::new();
    let mut statements: HashMap<(Option<&'static str>, usize), String> = HashMap::new();
    let backend = db.backend();
    with_db!(&db, |pool| {
        // Kept while records keep coming, so that a statement costs one round trip and not
        // also a pool acquire and release (sqlx pings a connection as it is released).
        let mut conn = None;
        loop {
            if queue.is_empty() {
                let arrived = if conn.is_some() {
                    match tokio::time::timeout(HOLD, rx.recv_many(&mut received, CHUNK)).await {
                        Ok(n) => n,
                        Err(_) => {
                            conn = None;
                            rx.recv_many(&mut received, CHUNK).await
                        }
                    }
                } else {
                    rx.recv_many(&mut received, CHUNK).await
                };
                if arrived == 0 {
                    break;
                }
                queue.extend(received.drain(..));
            }
            // Whatever else is waiting, up to a statement's worth: more stays in the channel, so
            // that a backlog still pushes back on writers.
            while queue.len() < CHUNK {
                match rx.try_recv() {
                    Ok(p) => queue.push_back(p),
                    Err(_) => break,
                }
            }
            let chunk = take_chunk(&mut queue);
            let Some(first) = chunk.first() else { continue };
            let condition = first.condition();
            let sql = statements
                .entry((condition, chunk.len()))
                .or_insert_with(|| insert_sql(backend, condition, chunk.len()));
            let c = match &mut conn {
                Some(c) => c,
                None => match pool.acquire().await {
                    Ok(c) => conn.insert(c),
                    Err(e) => {
                        fail(chunk, &e.into());
                        continue;
                    }
                },
            };
            let metadata: Vec<String> = chunk.iter().map(Pending::metadata).collect();
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            for (p, metadata) in chunk.iter().zip(&metadata) {
                query = query
                    .bind(&p.id)
                    .bind(p.timestamp)
                    .bind(&p.rec.action)
                    .bind(&p.rec.actor)
                    .bind(&p.rec.target)
                    .bind(&p.rec.secret_id)
                    .bind(&p.rec.secret_path)
                    .bind(&p.rec.ip_address)
                    .bind(&p.rec.user_agent)
                    .bind(p.rec.success)
                    .bind(&p.rec.request_id)
                    .bind(metadata);
                if let Some(g) = &p.guard {
                    query = query.bind(&g.key).bind(g.version);
                }
            }
            let inserted = match query.execute(&mut **c).await {
                Ok(done) => done.rows_affected(),
                Err(e) => {
                    // The connection may be what failed; the next statement gets another.
                    conn = None;
                    fail(chunk, &e.into());
                    continue;
                }
            };
            if usize::try_from(inserted).is_ok_and(|n| n == chunk.len()) {
                for p in chunk {
                    let _ = p.done.send(Ok(true));
                }
                continue;
            }
            // Some preconditions did not hold: which records went in decides who was served.
            let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(present_sql(backend, chunk.len())));
            for p in &chunk {
                query = query.bind(&p.id);
            }
            match query.persistent(false).fetch_all(&mut **c).await {
                Ok(present) => {
                    let present: HashSet<String> = present.into_iter().collect();
                    for p in chunk {
                        let written = present.contains(&p.id);
                        let _ = p.done.send(Ok(written));
                    }
                }
                Err(e) => {
                    conn = None;
                    fail(chunk, &e.into());
                }
            }
        }
    });
}

/// Answers every record of `chunk` with the failure to write it.
fn fail(chunk: Vec<Pending>, e: &StorageError) {
    tracing::error!(error = %e, records = chunk.len(), "audit records could not be written");
    for p in chunk {
        let _ = p.done.send(Err(String::from("the audit record could not be written")));
    }
}

/// Entries matching `q`, newest first, and how many match in all.
pub async fn query(db: &Db, q: &AuditQuery) -> Result<(Vec<AuditEntry>, i64), StorageError> {
    // Every filter is a bound parameter; an absent one is a NULL that matches everything.
    const WHERE: &str = "WHERE ($1 IS NULL OR actor = $1) AND ($2 IS NULL OR action = $2) \
        AND ($3 IS NULL OR secret_path = $3) AND ($4 IS NULL OR timestamp >= $4) AND ($5 IS NULL OR timestamp <= $5)";
    let start = q.start.map(Timestamp::as_micros);
    let end = q.end.map(Timestamp::as_micros);
    let limit = q.limit.unwrap_or(i64::MAX).max(0);
    with_db!(db, |pool| {
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM audit_log {WHERE}")))
            .bind(&q.actor)
            .bind(&q.action)
            .bind(&q.secret_path)
            .bind(start)
            .bind(end)
            .fetch_one(pool)
            .await?;
        let rows = sqlx::query_as::<_, AuditEntry>(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM audit_log {WHERE} ORDER BY timestamp DESC, id DESC LIMIT $6 OFFSET $7"
        )))
        .bind(&q.actor)
        .bind(&q.action)
        .bind(&q.secret_path)
        .bind(start)
        .bind(end)
        .bind(limit)
        .bind(q.offset.max(0))
        .fetch_all(pool)
        .await?;
        Ok((rows, total))
    })
}

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

/// A page of the entries matching `base` (its filters; not its limit and offset) and the list
/// request `q` (built against [`AUDIT_LISTING`]).
pub async fn page(db: &Db, base: &AuditQuery, q: &ListQuery) -> Result<Page<AuditEntry>, StorageError> {
    const WHERE: &str = "($1 IS NULL OR actor = $1) AND ($2 IS NULL OR action = $2) \
        AND ($3 IS NULL OR secret_path = $3) AND ($4 IS NULL OR timestamp >= $4) AND ($5 IS NULL OR timestamp <= $5)";
    let start = base.start.map(Timestamp::as_micros);
    let end = base.end.map(Timestamp::as_micros);
    let b = q.build(6);
    let count_sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM audit_log WHERE {WHERE} AND {}", b.filter));
    let list_sql = sqlx::AssertSqlSafe(format!(
        "SELECT * FROM audit_log WHERE {WHERE} AND {} {} {} {}",
        b.filter, b.keyset, b.order, b.window
    ));
    let (rows, total) = with_db!(db, |pool| {
        let count = sqlx::query_scalar(count_sql)
            .bind(&base.actor)
            .bind(&base.action)
            .bind(&base.secret_path)
            .bind(start)
            .bind(end);
        let total: i64 = crate::bind_values!(count, &b.filter_params).fetch_one(pool).await?;
        let list = sqlx::query_as::<_, AuditEntry>(list_sql)
            .bind(&base.actor)
            .bind(&base.action)
            .bind(&base.secret_path)
            .bind(start)
            .bind(end);
        let rows: Vec<AuditEntry> = crate::bind_values!(list, &b.params).fetch_all(pool).await?;
        Ok::<_, sqlx::Error>((rows, total))
    })?;
    Ok(q.finish(rows, Some(total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(guard: Option<&'static str>) -> Pending {
        let (done, _) = oneshot::channel();
        let guard = guard.map(|condition| Precondition { condition, key: String::new(), version: 0 });
        Pending { id: String::new(), timestamp: 0, rec: AuditRecord::default(), guard, done }
    }

    #[test]
    fn chunks_are_powers_of_two_of_one_kind_oldest_first() {
        let mut queue: VecDeque<Pending> = VecDeque::new();
        for i in 0..13 {
            queue.push_back(pending(if i % 4 == 3 { Some("c") } else { None }));
        }
        // 13 records: 10 plain, 3 guarded; the oldest is plain.
        let chunk = take_chunk(&mut queue);
        assert_eq!(chunk.len(), 8);
        assert!(chunk.iter().all(|p| p.guard.is_none()));
        assert_eq!(queue.len(), 5);
        // The guarded ones kept their place, before the plain ones left over.
        assert!(queue.front().is_some_and(|p| p.guard.is_some()));
        let chunk = take_chunk(&mut queue);
        assert_eq!((chunk.len(), chunk.iter().all(|p| p.guard.is_some())), (2, true));
        let sizes: Vec<usize> = std::iter::from_fn(|| Some(take_chunk(&mut queue).len()).filter(|n| *n > 0)).collect();
        assert_eq!(sizes, [2, 1]);
        assert!(take_chunk(&mut queue).is_empty());
    }

    #[test]
    fn statements_have_one_parameter_per_value() {
        let plain = insert_sql(Backend::Postgres, None, 2);
        assert!(plain.ends_with("($13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)"), "{plain}");
        let guarded = insert_sql(Backend::Sqlite, Some("guard_key = guard_version"), 3);
        assert_eq!(guarded.matches('?').count(), 3 * GUARDED_PARAMS);
        assert!(guarded.ends_with("WHERE guard_key = guard_version"), "{guarded}");
        assert_eq!(present_sql(Backend::Postgres, 2), "SELECT id FROM audit_log WHERE id IN ($1, $2)");
    }
}
