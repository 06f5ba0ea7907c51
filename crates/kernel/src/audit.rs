//! The audit log: an append-only record of security-relevant actions. Writers that must fail
//! closed (a secret is not served without its record) check the result of
//! [`AuditLog::record`].

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::clock::Timestamp;
use crate::db::{Db, StorageError};
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
/// Records committed in one transaction at most.
const BATCH: usize = 512;

const INSERT: &str = "INSERT INTO audit_log (id, timestamp, action, actor, target, secret_id, secret_path, \
    ip_address, user_agent, success, request_id, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

struct Pending {
    id: String,
    timestamp: i64,
    rec: AuditRecord,
    done: oneshot::Sender<Result<(), String>>,
}

/// The audit log's writer. Records from concurrent requests are committed together, in one
/// transaction per batch, by a single task: SQLite has one writer, and a transaction per
/// record would make every request queue for it. Each caller still waits for its own record
/// to be committed, so a caller that must fail closed knows the record is durable.
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
        let id = crate::id::uuid();
        let (done, committed) = oneshot::channel();
        let pending = Pending { id: id.clone(), timestamp: Timestamp::now().as_micros(), rec: rec.clone(), done };
        let closed = || StorageError::Unavailable(String::from("the audit writer has stopped"));
        self.tx.send(pending).await.map_err(|_| closed())?;
        match committed.await {
            Ok(Ok(())) => Ok(id),
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

async fn write_loop(db: Db, mut rx: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let result = write_batch(&db, &batch).await.map_err(|e| {
            tracing::error!(error = %e, records = batch.len(), "audit batch could not be written");
            String::from("the audit record could not be written")
        });
        for pending in batch.drain(..) {
            let _ = pending.done.send(result.clone());
        }
    }
}

async fn write_batch(db: &Db, batch: &[Pending]) -> Result<(), StorageError> {
    with_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        for p in batch {
            let metadata = if p.rec.metadata.is_null() { String::from("{}") } else { p.rec.metadata.to_string() };
            sqlx::query(INSERT)
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
                .bind(&metadata)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    })?;
    Ok(())
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
