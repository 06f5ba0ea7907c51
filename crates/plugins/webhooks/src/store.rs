//! SQL of the webhooks plugin: webhooks and their delivery outbox.

use nexus_kernel::db::{Db, StorageError};
use nexus_kernel::with_db;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookRow {
    pub id: String,
    pub owner_id: String,
    pub url: String,
    /// JSON array of patterns.
    pub events: String,
    pub secret: String,
    pub description: String,
    pub active: bool,
    pub failure_count: i64,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<i64>,
    pub last_delivery_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub locked_until: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub duration_ms: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub delivered_at: Option<i64>,
}

const WEBHOOK_COLUMNS: &str = "id, owner_id, url, events, secret, description, active, failure_count, \
    disabled_reason, disabled_at, last_delivery_at, created_at, updated_at";
const DELIVERY_COLUMNS: &str = "id, webhook_id, event_id, event_type, payload, status, attempts, next_attempt_at, \
    locked_until, last_status, last_error, duration_ms, created_at, updated_at, delivered_at";

/// The outcome of one attempt, as recorded.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub delivered: bool,
    pub status: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub now: i64,
    /// When failed: the next attempt, or `None` when the delivery is given up.
    pub retry_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub async fn insert_webhook(&self, w: &WebhookRow) -> Result<(), StorageError> {
        with_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO webhooks (id, owner_id, url, events, secret, description, active, failure_count, \
                 disabled_reason, disabled_at, last_delivery_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(&w.id)
            .bind(&w.owner_id)
            .bind(&w.url)
            .bind(&w.events)
            .bind(&w.secret)
            .bind(&w.description)
            .bind(w.active)
            .bind(w.failure_count)
            .bind(&w.disabled_reason)
            .bind(w.disabled_at)
            .bind(w.last_delivery_at)
            .bind(w.created_at)
            .bind(w.updated_at)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Writes the editable fields of `w`.
    pub async fn update_webhook(&self, w: &WebhookRow) -> Result<bool, StorageError> {
        with_db!(&self.db, |pool| {
            let r = sqlx::query(
                "UPDATE webhooks SET url = $2, events = $3, secret = $4, description = $5, active = $6, \
                 failure_count = $7, disabled_reason = $8, disabled_at = $9, updated_at = $10 WHERE id = $1",
            )
            .bind(&w.id)
            .bind(&w.url)
            .bind(&w.events)
            .bind(&w.secret)
            .bind(&w.description)
            .bind(w.active)
            .bind(w.failure_count)
            .bind(&w.disabled_reason)
            .bind(w.disabled_at)
            .bind(w.updated_at)
            .execute(pool)
            .await?;
            Ok(r.rows_affected() > 0)
        })
    }

    pub async fn webhook(&self, id: &str) -> Result<Option<WebhookRow>, StorageError> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1");
        with_db!(&self.db, |pool| Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?))
    }

    /// Webhooks of `owner` (every webhook when `None`), oldest first.
    pub async fn list_webhooks(&self, owner: Option<&str>) -> Result<Vec<WebhookRow>, StorageError> {
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE ($1 IS NULL OR owner_id = $1) ORDER BY created_at, id"
        );
        with_db!(&self.db, |pool| Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(owner).fetch_all(pool).await?))
    }

    pub async fn active_webhooks(&self) -> Result<Vec<WebhookRow>, StorageError> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE active = $1");
        with_db!(&self.db, |pool| Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(true).fetch_all(pool).await?))
    }

    pub async fn delete_webhook(&self, id: &str) -> Result<bool, StorageError> {
        with_db!(&self.db, |pool| {
            sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1").bind(id).execute(pool).await?;
            let r = sqlx::query("DELETE FROM webhooks WHERE id = $1").bind(id).execute(pool).await?;
            Ok(r.rows_affected() > 0)
        })
    }

    /// Adds a delivery to the outbox; an event already queued for the webhook is not queued
    /// twice. Returns whether it was added.
    pub async fn enqueue(&self, d: &DeliveryRow) -> Result<bool, StorageError> {
        with_db!(&self.db, |pool| {
            let r = sqlx::query(
                "INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, payload, status, attempts, \
                 next_attempt_at, locked_until, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9, $9) ON CONFLICT (webhook_id, event_id) DO NOTHING",
            )
            .bind(&d.id)
            .bind(&d.webhook_id)
            .bind(&d.event_id)
            .bind(&d.event_type)
            .bind(&d.payload)
            .bind(&d.status)
            .bind(d.next_attempt_at)
            .bind(d.locked_until)
            .bind(d.created_at)
            .execute(pool)
            .await?;
            Ok(r.rows_affected() > 0)
        })
    }

    /// Leases up to `limit` deliveries that are due (or whose previous lease ran out) until
    /// `lease_until`.
    pub async fn claim_due(&self, now: i64, lease_until: i64, limit: i64) -> Result<Vec<DeliveryRow>, StorageError> {
        let due = "((status = 'pending' AND next_attempt_at <= $1) OR (status = 'delivering' AND locked_until <= $1))";
        let sql = format!(
            "UPDATE webhook_deliveries SET status = 'delivering', locked_until = $2, updated_at = $1 \
             WHERE id IN (SELECT id FROM webhook_deliveries WHERE {due} ORDER BY next_attempt_at LIMIT $3) \
             AND {due} RETURNING {DELIVERY_COLUMNS}"
        );
        with_db!(&self.db, |pool| {
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now).bind(lease_until).bind(limit).fetch_all(pool).await?)
        })
    }

    /// The earliest time a pending delivery falls due, if any.
    pub async fn next_due(&self) -> Result<Option<i64>, StorageError> {
        with_db!(&self.db, |pool| {
            Ok(sqlx::query_scalar(
                "SELECT MIN(CASE WHEN status = 'pending' THEN next_attempt_at ELSE locked_until END) \
                 FROM webhook_deliveries WHERE status IN ('pending', 'delivering')",
            )
            .fetch_one(pool)
            .await?)
        })
    }

    /// Records an attempt of delivery `id` and the webhook's success or failure streak.
    /// Returns the webhook's consecutive failures after this attempt.
    pub async fn record_attempt(&self, d: &DeliveryRow, a: &Attempt) -> Result<i64, StorageError> {
        let status = match (a.delivered, a.retry_at) {
            (true, _) => "delivered",
            (false, Some(_)) => "pending",
            (false, None) => "failed",
        };
        with_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, next_attempt_at = $3, \
                 locked_until = NULL, last_status = $4, last_error = $5, duration_ms = $6, updated_at = $7, \
                 delivered_at = $8 WHERE id = $1",
            )
            .bind(&d.id)
            .bind(status)
            .bind(a.retry_at.unwrap_or(d.next_attempt_at))
            .bind(a.status)
            .bind(&a.error)
            .bind(a.duration_ms)
            .bind(a.now)
            .bind(a.delivered.then_some(a.now))
            .execute(&mut *tx)
            .await?;
            let failures: Option<i64> = if a.delivered {
                sqlx::query_scalar(
                    "UPDATE webhooks SET failure_count = 0, last_delivery_at = $2 WHERE id = $1 RETURNING failure_count",
                )
                .bind(&d.webhook_id)
                .bind(a.now)
                .fetch_optional(&mut *tx)
                .await?
            } else {
                sqlx::query_scalar(
                    "UPDATE webhooks SET failure_count = failure_count + 1, last_delivery_at = $2 WHERE id = $1 \
                     RETURNING failure_count",
                )
                .bind(&d.webhook_id)
                .bind(a.now)
                .fetch_optional(&mut *tx)
                .await?
            };
            tx.commit().await?;
            Ok(failures.unwrap_or(0))
        })
    }

    /// Marks delivery `id` as not attempted because its webhook is gone or disabled.
    pub async fn cancel_delivery(&self, id: &str, reason: &str, now: i64) -> Result<(), StorageError> {
        with_db!(&self.db, |pool| {
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'cancelled', locked_until = NULL, last_error = $2, \
                 updated_at = $3 WHERE id = $1",
            )
            .bind(id)
            .bind(reason)
            .bind(now)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Disables webhook `id` with `reason`, and cancels what it still had queued.
    pub async fn disable(&self, id: &str, reason: &str, now: i64) -> Result<(), StorageError> {
        with_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "UPDATE webhooks SET active = $2, disabled_reason = $3, disabled_at = $4, updated_at = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(false)
            .bind(reason)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'cancelled', locked_until = NULL, \
                 last_error = COALESCE(last_error, $2), updated_at = $3 WHERE webhook_id = $1 AND status = 'pending'",
            )
            .bind(id)
            .bind("webhook disabled")
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    pub async fn delivery(&self, id: &str) -> Result<Option<DeliveryRow>, StorageError> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1");
        with_db!(&self.db, |pool| Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?))
    }

    /// Deliveries of webhook `id`, newest first, optionally of one status; with the total.
    pub async fn deliveries(
        &self,
        webhook_id: &str,
        status: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<DeliveryRow>, i64), StorageError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 AND ($2 IS NULL OR status = $2) \
             ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
        );
        with_db!(&self.db, |pool| {
            let rows = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(webhook_id)
                .bind(status)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            let total: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM webhook_deliveries WHERE webhook_id = $1 AND ($2 IS NULL OR status = $2)",
            )
            .bind(webhook_id)
            .bind(status)
            .fetch_one(pool)
            .await?;
            Ok((rows, total))
        })
    }
}
