//! The audit log: an append-only record of security-relevant actions. Writers that must fail
//! closed (a secret is not served without its record) check the result of [`record`].

use serde::Serialize;

use crate::clock::Timestamp;
use crate::db::{Db, StorageError};
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

/// Appends `rec`; the error is the caller's to act on.
pub async fn record(db: &Db, rec: &AuditRecord) -> Result<String, StorageError> {
    let id = crate::id::uuid();
    let metadata = if rec.metadata.is_null() { String::from("{}") } else { rec.metadata.to_string() };
    with_db!(db, |pool| {
        sqlx::query(
            "INSERT INTO audit_log (id, timestamp, action, actor, target, secret_id, secret_path, ip_address, \
             user_agent, success, request_id, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&id)
        .bind(Timestamp::now().as_micros())
        .bind(&rec.action)
        .bind(&rec.actor)
        .bind(&rec.target)
        .bind(&rec.secret_id)
        .bind(&rec.secret_path)
        .bind(&rec.ip_address)
        .bind(&rec.user_agent)
        .bind(rec.success)
        .bind(&rec.request_id)
        .bind(&metadata)
        .execute(pool)
        .await
        .map(|_| ())
    })?;
    Ok(id)
}

/// Appends `rec`, logging (never propagating) a failure: for records whose loss must not
/// fail the action they describe.
pub async fn record_best_effort(db: &Db, rec: &AuditRecord) {
    if let Err(e) = record(db, rec).await {
        tracing::error!(error = %e, action = %rec.action, "audit record could not be written");
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
