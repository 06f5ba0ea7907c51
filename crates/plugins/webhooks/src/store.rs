//! SQL of the webhooks plugin: webhooks and their delivery outbox.
//!
//! [`WebhookStore`] is the storage contract; [`SqliteStore`] and [`PostgresStore`] implement it,
//! one per SQL dialect. The SQL both dialects understand is written once (the statements below
//! and the body of `dialect_impl!`); what differs is given to each dialect's implementation.

use std::sync::Arc;

use futures::future::BoxFuture;
use nexus_kernel::db::{Db, StorageError};
use nexus_kernel::events::Event;
use nexus_kernel::outbox::{Outbox, OutboxTx, Take};
use sqlx::{PgPool, SqlitePool};

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

/// The outbox consumer whose pending events become deliveries.
pub const CONSUMER: &str = "webhooks";

/// Whether any webhook is active: the outbox writes webhook rows only while one is (see
/// [`OutboxTx::set_interest`]), set in the transaction of every change to that.
const ANY_ACTIVE: &str = "SELECT EXISTS (SELECT 1 FROM webhooks WHERE active = $1)";

const INSERT_WEBHOOK: &str = "INSERT INTO webhooks (id, owner_id, url, events, secret, description, active, \
    failure_count, disabled_reason, disabled_at, last_delivery_at, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
const UPDATE_WEBHOOK: &str = "UPDATE webhooks SET url = $2, events = $3, secret = $4, description = $5, active = $6, \
    failure_count = $7, disabled_reason = $8, disabled_at = $9, updated_at = $10 WHERE id = $1";
const ENQUEUE: &str = "INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, payload, status, attempts, \
    next_attempt_at, locked_until, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9, $9) ON CONFLICT (webhook_id, event_id) DO NOTHING";
const DUE: &str = "((status = 'pending' AND next_attempt_at <= $1) OR (status = 'delivering' AND locked_until <= $1))";
const NEXT_DUE: &str = "SELECT MIN(CASE WHEN status = 'pending' THEN next_attempt_at ELSE locked_until END) \
    FROM webhook_deliveries WHERE status IN ('pending', 'delivering')";
const RECORD_ATTEMPT: &str = "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, next_attempt_at = $3, \
    locked_until = NULL, last_status = $4, last_error = $5, duration_ms = $6, updated_at = $7, delivered_at = $8 \
    WHERE id = $1";
const STREAK_RESET: &str =
    "UPDATE webhooks SET failure_count = 0, last_delivery_at = $2 WHERE id = $1 RETURNING failure_count";
const STREAK_GROW: &str = "UPDATE webhooks SET failure_count = failure_count + 1, last_delivery_at = $2 WHERE id = $1 \
    RETURNING failure_count";
const CANCEL: &str = "UPDATE webhook_deliveries SET status = 'cancelled', locked_until = NULL, last_error = $2, \
    updated_at = $3 WHERE id = $1";
const DISABLE: &str =
    "UPDATE webhooks SET active = $2, disabled_reason = $3, disabled_at = $4, updated_at = $4 WHERE id = $1";
const CANCEL_QUEUED: &str = "UPDATE webhook_deliveries SET status = 'cancelled', locked_until = NULL, \
    last_error = COALESCE(last_error, $2), updated_at = $3 WHERE webhook_id = $1 AND status = 'pending'";
const COUNT_DELIVERIES: &str =
    "SELECT COUNT(*) FROM webhook_deliveries WHERE webhook_id = $1 AND ($2 IS NULL OR status = $2)";

/// Turns an event into the deliveries to queue, given the active webhooks.
pub type Plan<'a> = &'a (dyn Fn(&[WebhookRow], &Event) -> Vec<DeliveryRow> + Send + Sync);

type Result<T> = std::result::Result<T, StorageError>;

/// The storage of the webhooks plugin.
pub trait WebhookStore: Send + Sync + std::fmt::Debug {
    fn insert_webhook<'a>(&'a self, w: &'a WebhookRow) -> BoxFuture<'a, Result<()>>;
    /// Tells the outbox whether any webhook is active (at start: the flag predates nothing
    /// that changed webhooks, e.g. after an upgrade or a restore).
    fn sync_interest(&self) -> BoxFuture<'_, Result<()>>;
    /// Writes the editable fields of `w`; whether it exists.
    fn update_webhook<'a>(&'a self, w: &'a WebhookRow) -> BoxFuture<'a, Result<bool>>;
    fn webhook<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<WebhookRow>>>;
    /// Webhooks of `owner` (every webhook when `None`), oldest first.
    fn list_webhooks<'a>(&'a self, owner: Option<&'a str>) -> BoxFuture<'a, Result<Vec<WebhookRow>>>;
    fn active_webhooks(&self) -> BoxFuture<'_, Result<Vec<WebhookRow>>>;
    /// Deletes webhook `id` with its deliveries; whether it existed.
    fn delete_webhook<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>>;
    /// Adds a delivery to the queue; an event already queued for the webhook is not queued
    /// twice. Returns whether it was added.
    fn enqueue<'a>(&'a self, d: &'a DeliveryRow) -> BoxFuture<'a, Result<bool>>;
    /// Takes up to `limit` events pending for the webhooks in the outbox and queues the
    /// deliveries `plan` makes of each, in one transaction: an event is acknowledged exactly
    /// when its deliveries are stored. Returns (events taken, deliveries queued).
    fn queue_from_outbox<'a>(&'a self, limit: i64, plan: Plan<'a>) -> BoxFuture<'a, Result<(usize, usize)>>;
    /// Leases up to `limit` deliveries that are due (or whose previous lease ran out) until
    /// `lease_until`.
    fn claim_due(&self, now: i64, lease_until: i64, limit: i64) -> BoxFuture<'_, Result<Vec<DeliveryRow>>>;
    /// The earliest time a pending delivery falls due, if any.
    fn next_due(&self) -> BoxFuture<'_, Result<Option<i64>>>;
    /// Records an attempt of delivery `d` and the webhook's success or failure streak.
    /// Returns the webhook's consecutive failures after this attempt.
    fn record_attempt<'a>(&'a self, d: &'a DeliveryRow, a: &'a Attempt) -> BoxFuture<'a, Result<i64>>;
    /// Marks delivery `id` as not attempted because its webhook is gone or disabled.
    fn cancel_delivery<'a>(&'a self, id: &'a str, reason: &'a str, now: i64) -> BoxFuture<'a, Result<()>>;
    /// Disables webhook `id` with `reason`, cancels what it still had queued and writes
    /// `event` to the outbox, in one transaction.
    fn disable<'a>(&'a self, id: &'a str, reason: &'a str, now: i64, event: &'a Event) -> BoxFuture<'a, Result<()>>;
    fn delivery<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<DeliveryRow>>>;
    /// Deliveries of webhook `id`, newest first, optionally of one status; with the total.
    fn deliveries<'a>(
        &'a self,
        webhook_id: &'a str,
        status: Option<&'a str>,
        limit: i64,
        offset: i64,
    ) -> BoxFuture<'a, Result<(Vec<DeliveryRow>, i64)>>;
}

/// The store for `db`'s dialect.
pub fn open(db: &Db, outbox: Outbox) -> Arc<dyn WebhookStore> {
    match db {
        Db::Sqlite(pool) => Arc::new(SqliteStore { pool: pool.clone(), outbox }),
        Db::Postgres(pool) => Arc::new(PostgresStore { pool: pool.clone(), outbox }),
    }
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    outbox: Outbox,
}

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    outbox: Outbox,
}

/// Tells the outbox, in transaction `tx`, whether any webhook is active after it.
macro_rules! sync_interest {
    ($tx:ident) => {{
        let any: bool = sqlx::query_scalar(ANY_ACTIVE).bind(true).fetch_one(&mut *$tx).await?;
        $tx.set_interest(CONSUMER, any).await?;
    }};
}

/// The implementation of [`WebhookStore`] for one dialect: `$claim_lock` is what that dialect
/// adds to the selection of due deliveries to claim them, `$begin_for_read_then_write` how it
/// begins a transaction that reads before it writes.
macro_rules! dialect_impl {
    ($store:ty, claim_lock = $claim_lock:expr, begin_for_read_then_write = $begin_for_read_then_write:expr) => {
        impl WebhookStore for $store {
            fn sync_interest(&self) -> BoxFuture<'_, Result<()>> {
                Box::pin(async move {
                    // It reads before it writes: on SQLite the write lock is taken first, or
                    // another connection's commit in between fails it at once (BUSY_SNAPSHOT).
                    let mut tx = self.pool.begin_with($begin_for_read_then_write).await?;
                    sync_interest!(tx);
                    tx.commit().await?;
                    Ok(())
                })
            }

            fn insert_webhook<'a>(&'a self, w: &'a WebhookRow) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    sqlx::query(INSERT_WEBHOOK)
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
                        .execute(&mut *tx)
                        .await?;
                    sync_interest!(tx);
                    tx.commit().await?;
                    Ok(())
                })
            }

            fn update_webhook<'a>(&'a self, w: &'a WebhookRow) -> BoxFuture<'a, Result<bool>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    let r = sqlx::query(UPDATE_WEBHOOK)
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
                        .execute(&mut *tx)
                        .await?;
                    sync_interest!(tx);
                    tx.commit().await?;
                    Ok(r.rows_affected() > 0)
                })
            }

            fn webhook<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<WebhookRow>>> {
                Box::pin(async move {
                    let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1");
                    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await?)
                })
            }

            fn list_webhooks<'a>(&'a self, owner: Option<&'a str>) -> BoxFuture<'a, Result<Vec<WebhookRow>>> {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE ($1 IS NULL OR owner_id = $1) \
                         ORDER BY created_at, id"
                    );
                    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(owner).fetch_all(&self.pool).await?)
                })
            }

            fn active_webhooks(&self) -> BoxFuture<'_, Result<Vec<WebhookRow>>> {
                Box::pin(async move {
                    let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE active = $1");
                    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(true).fetch_all(&self.pool).await?)
                })
            }

            fn delete_webhook<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    let r = sqlx::query("DELETE FROM webhooks WHERE id = $1").bind(id).execute(&mut *tx).await?;
                    sync_interest!(tx);
                    tx.commit().await?;
                    Ok(r.rows_affected() > 0)
                })
            }

            fn enqueue<'a>(&'a self, d: &'a DeliveryRow) -> BoxFuture<'a, Result<bool>> {
                Box::pin(async move {
                    let r = sqlx::query(ENQUEUE)
                        .bind(&d.id)
                        .bind(&d.webhook_id)
                        .bind(&d.event_id)
                        .bind(&d.event_type)
                        .bind(&d.payload)
                        .bind(&d.status)
                        .bind(d.next_attempt_at)
                        .bind(d.locked_until)
                        .bind(d.created_at)
                        .execute(&self.pool)
                        .await?;
                    Ok(r.rows_affected() > 0)
                })
            }

            fn queue_from_outbox<'a>(&'a self, limit: i64, plan: Plan<'a>) -> BoxFuture<'a, Result<(usize, usize)>> {
                Box::pin(async move {
                    if !self.pool.acquire().await?.has_pending(Take::all(CONSUMER, limit)).await? {
                        return Ok((0, 0));
                    }
                    let mut tx = self.pool.begin().await?;
                    let events = tx.take_events(Take::all(CONSUMER, limit)).await?;
                    if events.is_empty() {
                        tx.rollback().await?;
                        return Ok((0, 0));
                    }
                    let active = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE active = $1");
                    let webhooks: Vec<WebhookRow> =
                        sqlx::query_as(sqlx::AssertSqlSafe(active)).bind(true).fetch_all(&mut *tx).await?;
                    let mut queued = 0;
                    for event in &events {
                        for d in plan(&webhooks, event) {
                            let r = sqlx::query(ENQUEUE)
                                .bind(&d.id)
                                .bind(&d.webhook_id)
                                .bind(&d.event_id)
                                .bind(&d.event_type)
                                .bind(&d.payload)
                                .bind(&d.status)
                                .bind(d.next_attempt_at)
                                .bind(d.locked_until)
                                .bind(d.created_at)
                                .execute(&mut *tx)
                                .await?;
                            queued += usize::try_from(r.rows_affected()).unwrap_or(0);
                        }
                    }
                    tx.commit().await?;
                    Ok((events.len(), queued))
                })
            }

            fn claim_due(&self, now: i64, lease_until: i64, limit: i64) -> BoxFuture<'_, Result<Vec<DeliveryRow>>> {
                Box::pin(async move {
                    let sql = format!(
                        "UPDATE webhook_deliveries SET status = 'delivering', locked_until = $2, updated_at = $1 \
                         WHERE id IN (SELECT id FROM webhook_deliveries WHERE {DUE} ORDER BY next_attempt_at \
                         LIMIT $3{}) AND {DUE} RETURNING {DELIVERY_COLUMNS}",
                        $claim_lock
                    );
                    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                        .bind(now)
                        .bind(lease_until)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?)
                })
            }

            fn next_due(&self) -> BoxFuture<'_, Result<Option<i64>>> {
                Box::pin(async move { Ok(sqlx::query_scalar(NEXT_DUE).fetch_one(&self.pool).await?) })
            }

            fn record_attempt<'a>(&'a self, d: &'a DeliveryRow, a: &'a Attempt) -> BoxFuture<'a, Result<i64>> {
                Box::pin(async move {
                    let status = match (a.delivered, a.retry_at) {
                        (true, _) => "delivered",
                        (false, Some(_)) => "pending",
                        (false, None) => "failed",
                    };
                    let mut tx = self.pool.begin().await?;
                    sqlx::query(RECORD_ATTEMPT)
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
                    let streak = if a.delivered { STREAK_RESET } else { STREAK_GROW };
                    let failures: Option<i64> =
                        sqlx::query_scalar(streak).bind(&d.webhook_id).bind(a.now).fetch_optional(&mut *tx).await?;
                    tx.commit().await?;
                    Ok(failures.unwrap_or(0))
                })
            }

            fn cancel_delivery<'a>(&'a self, id: &'a str, reason: &'a str, now: i64) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
                    sqlx::query(CANCEL).bind(id).bind(reason).bind(now).execute(&self.pool).await?;
                    Ok(())
                })
            }

            fn disable<'a>(
                &'a self,
                id: &'a str,
                reason: &'a str,
                now: i64,
                event: &'a Event,
            ) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    sqlx::query(DISABLE).bind(id).bind(false).bind(reason).bind(now).execute(&mut *tx).await?;
                    sqlx::query(CANCEL_QUEUED).bind(id).bind("webhook disabled").bind(now).execute(&mut *tx).await?;
                    tx.write_event(event).await?;
                    sync_interest!(tx);
                    tx.commit().await?;
                    self.outbox.committed();
                    Ok(())
                })
            }

            fn delivery<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<DeliveryRow>>> {
                Box::pin(async move {
                    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1");
                    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await?)
                })
            }

            fn deliveries<'a>(
                &'a self,
                webhook_id: &'a str,
                status: Option<&'a str>,
                limit: i64,
                offset: i64,
            ) -> BoxFuture<'a, Result<(Vec<DeliveryRow>, i64)>> {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 \
                         AND ($2 IS NULL OR status = $2) ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
                    );
                    let rows = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                        .bind(webhook_id)
                        .bind(status)
                        .bind(limit)
                        .bind(offset)
                        .fetch_all(&self.pool)
                        .await?;
                    let total: i64 = sqlx::query_scalar(COUNT_DELIVERIES)
                        .bind(webhook_id)
                        .bind(status)
                        .fetch_one(&self.pool)
                        .await?;
                    Ok((rows, total))
                })
            }
        }
    };
}

dialect_impl!(SqliteStore, claim_lock = "", begin_for_read_then_write = "BEGIN IMMEDIATE");
// Instances claiming at once skip each other's rows instead of queueing on their locks.
dialect_impl!(PostgresStore, claim_lock = " FOR UPDATE SKIP LOCKED", begin_for_read_then_write = "BEGIN");
