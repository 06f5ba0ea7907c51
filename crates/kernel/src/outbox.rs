//! The transactional outbox: a change and the event that describes it are committed together.
//!
//! A store writes the event with [`OutboxTx::write_event`] inside the transaction of the
//! change, and calls [`Outbox::committed`] after the commit. The event gets one pending row per
//! registered consumer. The relay (consumer [`BUS`], started by the kernel) takes its rows and
//! publishes them on the event bus (and through it to Redis and WebSocket subscribers); a
//! durable consumer such as webhooks takes its rows with [`OutboxTx::take_events`] in the
//! transaction where it acts on them, so the action and the acknowledgement commit together.
//!
//! Taking a row deletes it, inside the taker's transaction: a crash before the commit puts it
//! back, and on PostgreSQL `FOR UPDATE SKIP LOCKED` hands each row to one instance only (SQLite
//! has one writer). Per-row state rather than a cursor, because PostgreSQL transactions commit
//! out of the order of their ids. See `docs/events.md`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sqlx::{PgConnection, SqliteConnection};
use tokio::sync::watch;

use crate::clock::Timestamp;
use crate::db::{Db, StorageError};
use crate::events::{Event, EventBatch, EventBus};

/// The consumer that publishes events on the bus.
pub const BUS: &str = "bus";

/// Events taken by one statement at most.
const BATCH: i64 = 256;
/// How often consumers look for rows they were not woken for (another instance's, or left
/// by a crash).
pub const POLL: Duration = Duration::from_secs(1);
/// How long the relay leaves another instance's events to that instance, whose subscribers
/// are the ones waiting for them, before it publishes them itself (that instance may be gone).
const GRACE: Duration = Duration::from_secs(2);
/// Events every consumer has taken are kept this long, then deleted.
const RETAIN: Duration = Duration::from_secs(3600);
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// This process's handle on the outbox: it wakes the consumers of this process when a
/// transaction that wrote events has committed.
#[derive(Debug, Clone)]
pub struct Outbox {
    commits: Arc<watch::Sender<u64>>,
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new()
    }
}

/// Which pending rows a consumer takes.
#[derive(Debug, Clone, Copy)]
pub struct Take<'a> {
    pub consumer: &'a str,
    /// Rows written by this instance are taken at once...
    pub instance: &'a str,
    /// ...others only when written at or before this time (micros); `i64::MAX` for all.
    pub others_before: i64,
    pub limit: i64,
}

impl<'a> Take<'a> {
    /// Every pending row of `consumer`, up to `limit`.
    pub fn all(consumer: &'a str, limit: i64) -> Self {
        Self { consumer, instance: "", others_before: i64::MAX, limit }
    }
}

/// The outbox's SQL on one connection (inside the caller's transaction), for each dialect.
pub trait OutboxTx: Send {
    /// Writes `event` to the outbox, pending for every registered consumer. Call it inside the
    /// transaction of the change the event describes.
    fn write_event<'a>(&'a mut self, event: &'a Event) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a;

    /// Writes the events of `batch` as one *batch* row, pending for every registered consumer
    /// like any row: a change that announces many (a bulk insert of a thousand documents)
    /// writes one outbox row and one pending row per consumer, not a thousand of each.
    /// Consumers take the row's events together, in order. An empty batch writes nothing.
    fn write_batch<'a>(
        &'a mut self,
        batch: &'a EventBatch,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a;

    /// Takes (deletes) up to `take.limit` pending rows of `take.consumer` and returns their
    /// events, oldest first. The rows are gone for good only when the caller's transaction
    /// commits.
    fn take_events<'a>(
        &'a mut self,
        take: Take<'a>,
    ) -> impl Future<Output = Result<Vec<Event>, sqlx::Error>> + Send + 'a;

    /// Whether `take` would find a row. A read, outside any transaction: a consumer asks first,
    /// so that an idle poll takes no write lock (on SQLite, that would hold up other processes
    /// on the same file).
    fn has_pending<'a>(&'a mut self, take: Take<'a>) -> impl Future<Output = Result<bool, sqlx::Error>> + Send + 'a;

    /// Whether `consumer` has anything to act on: while it has not, events get no pending
    /// row for it. Call it in the transaction that changes what it would act on, so that
    /// events committed after that transaction are pending for it again.
    fn set_interest<'a>(
        &'a mut self,
        consumer: &'a str,
        interested: bool,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a;
}

const INSERT_EVENT: &str = "INSERT INTO nexus_outbox (id, kind, source, data, timestamp, origin, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7)";
const INSERT_PENDING: &str = "INSERT INTO nexus_outbox_pending (consumer, event_id, origin, created_at) \
    SELECT name, $1, $2, $3 FROM nexus_outbox_consumers WHERE interested";
const SET_INTEREST: &str = "UPDATE nexus_outbox_consumers SET interested = $2 WHERE name = $1";
const TAKE_WHERE: &str = "consumer = $1 AND (origin = $2 OR created_at <= $3) ORDER BY created_at, event_id LIMIT $4";

#[derive(sqlx::FromRow)]
struct EventRow {
    id: String,
    kind: String,
    source: String,
    data: String,
    timestamp: String,
    origin: String,
    batch: bool,
}

impl EventRow {
    /// The row's event, or the events of a batch row, in the order written.
    fn events(self, out: &mut Vec<Event>) {
        if self.batch {
            match serde_json::from_str::<Vec<Event>>(&self.data) {
                Ok(events) => {
                    out.extend(events.into_iter().map(|e| Event { origin: self.origin.clone(), durable: true, ..e }))
                }
                // Written by `write_batch` from envelopes: unreadable means a damaged file, and
                // one damaged row must not stop every later event.
                Err(e) => tracing::error!(row = %self.id, error = %e, "an outbox batch row does not parse; skipped"),
            }
            return;
        }
        out.push(Event {
            id: self.id,
            kind: self.kind,
            data: serde_json::from_str(&self.data).unwrap_or(serde_json::Value::Null),
            timestamp: self.timestamp,
            source: self.source,
            origin: self.origin,
            durable: true,
        });
    }
}

const INSERT_BATCH: &str = "INSERT INTO nexus_outbox (id, kind, source, data, timestamp, origin, created_at, batch) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE)";

fn select_events_sql(n: usize) -> String {
    let placeholders: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
    format!(
        "SELECT id, kind, source, data, timestamp, origin, batch FROM nexus_outbox WHERE id IN ({}) ORDER BY created_at, id",
        placeholders.join(", ")
    )
}

/// The implementation for one dialect; `$lock` is what the row selection adds to claim rows.
macro_rules! outbox_tx {
    ($conn:ty, $lock:expr) => {
        impl OutboxTx for $conn {
            async fn write_event(&mut self, event: &Event) -> Result<(), sqlx::Error> {
                let now = Timestamp::now().as_micros();
                sqlx::query(INSERT_EVENT)
                    .bind(&event.id)
                    .bind(&event.kind)
                    .bind(&event.source)
                    .bind(event.data.to_string())
                    .bind(&event.timestamp)
                    .bind(&event.origin)
                    .bind(now)
                    .execute(&mut *self)
                    .await?;
                sqlx::query(INSERT_PENDING).bind(&event.id).bind(&event.origin).bind(now).execute(&mut *self).await?;
                Ok(())
            }

            async fn write_batch(&mut self, batch: &EventBatch) -> Result<(), sqlx::Error> {
                let Some((id, kind)) = batch.first() else { return Ok(()) };
                let now = Timestamp::now().as_micros();
                sqlx::query(INSERT_BATCH)
                    .bind(id)
                    .bind(kind)
                    .bind(batch.source())
                    .bind(batch.json())
                    .bind(batch.timestamp())
                    .bind(batch.origin())
                    .bind(now)
                    .execute(&mut *self)
                    .await?;
                sqlx::query(INSERT_PENDING).bind(id).bind(batch.origin()).bind(now).execute(&mut *self).await?;
                Ok(())
            }

            async fn set_interest(&mut self, consumer: &str, interested: bool) -> Result<(), sqlx::Error> {
                sqlx::query(SET_INTEREST).bind(consumer).bind(interested).execute(&mut *self).await?;
                Ok(())
            }

            async fn has_pending(&mut self, take: Take<'_>) -> Result<bool, sqlx::Error> {
                let sql = format!("SELECT event_id FROM nexus_outbox_pending WHERE {TAKE_WHERE}");
                let found: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .bind(take.consumer)
                    .bind(take.instance)
                    .bind(take.others_before)
                    .bind(1i64)
                    .fetch_optional(&mut *self)
                    .await?;
                Ok(found.is_some())
            }

            async fn take_events(&mut self, take: Take<'_>) -> Result<Vec<Event>, sqlx::Error> {
                let sql = format!(
                    "DELETE FROM nexus_outbox_pending WHERE consumer = $1 AND event_id IN \
                     (SELECT event_id FROM nexus_outbox_pending WHERE {TAKE_WHERE}{}) RETURNING event_id",
                    $lock
                );
                let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .bind(take.consumer)
                    .bind(take.instance)
                    .bind(take.others_before)
                    .bind(take.limit)
                    .fetch_all(&mut *self)
                    .await?;
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut query = sqlx::query_as::<_, EventRow>(sqlx::AssertSqlSafe(select_events_sql(ids.len())));
                for id in &ids {
                    query = query.bind(id);
                }
                let mut events = Vec::with_capacity(ids.len());
                for row in query.persistent(false).fetch_all(&mut *self).await? {
                    row.events(&mut events);
                }
                Ok(events)
            }
        }
    };
}

outbox_tx!(SqliteConnection, "");
// Another instance's relay skips the rows this one holds instead of waiting for them.
outbox_tx!(PgConnection, " FOR UPDATE SKIP LOCKED");

impl Outbox {
    pub fn new() -> Self {
        Self { commits: Arc::new(watch::channel(0).0) }
    }

    /// Wakes this process's consumers: call after committing a transaction that wrote events.
    pub fn committed(&self) {
        self.commits.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A signal that changes whenever [`committed`](Self::committed) is called.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// Registers `consumer`: every event written from now on is pending for it until it takes
    /// it, across restarts.
    pub async fn register(&self, db: &Db, consumer: &str) -> Result<(), StorageError> {
        store(db).register(consumer).await
    }

    /// Starts the relay: it publishes every committed event on `bus` until `bus` closes.
    pub fn start_relay(&self, db: Db, bus: EventBus) -> tokio::task::JoinHandle<()> {
        tokio::spawn(relay(db, bus, self.commits()))
    }
}

async fn relay(db: Db, bus: EventBus, mut commits: watch::Receiver<u64>) {
    let store = store(&db);
    let closed = bus.closed();
    tokio::pin!(closed);
    let mut pruned = Instant::now();
    loop {
        commits.borrow_and_update();
        let relayed = store.relay_batch(&bus).await;
        match relayed {
            // More may be waiting.
            Ok(n) if n >= BATCH => continue,
            Ok(_) => {}
            Err(e) if bus.is_closed() => return tracing::debug!(error = %e, "outbox relay stopped"),
            Err(e) => tracing::warn!(error = %e, "could not relay events from the outbox"),
        }
        if pruned.elapsed() >= PRUNE_EVERY {
            pruned = Instant::now();
            if let Err(e) = store.prune(retained_since()).await {
                tracing::warn!(error = %e, "could not prune the outbox");
            }
        }
        tokio::select! {
            () = &mut closed => return,
            _ = commits.changed() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// The outbox's own statements, outside a caller's transaction, for each dialect.
pub trait OutboxStore: Send + Sync {
    /// Registers `consumer` (once; again is a no-op).
    fn register<'a>(&'a self, consumer: &'a str) -> BoxFuture<'a, Result<(), StorageError>>;
    /// Deletes the events every consumer has taken that were written before `before` (micros).
    fn prune(&self, before: i64) -> BoxFuture<'_, Result<u64, StorageError>>;
    /// Takes a batch of the relay's rows, publishes their events on `bus` and commits; the
    /// number taken. Published before the commit: a crash between the two publishes them again
    /// after a restart (at least once), rather than never.
    fn relay_batch<'a>(&'a self, bus: &'a EventBus) -> BoxFuture<'a, Result<i64, StorageError>>;
}

const REGISTER: &str =
    "INSERT INTO nexus_outbox_consumers (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
const PRUNE: &str = "DELETE FROM nexus_outbox WHERE created_at < $1 AND NOT EXISTS \
    (SELECT 1 FROM nexus_outbox_pending p WHERE p.event_id = nexus_outbox.id)";

#[derive(Debug, Clone)]
pub struct SqliteOutbox(pub sqlx::SqlitePool);

#[derive(Debug, Clone)]
pub struct PostgresOutbox(pub sqlx::PgPool);

macro_rules! outbox_store {
    ($store:ty) => {
        impl OutboxStore for $store {
            fn register<'a>(&'a self, consumer: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
                Box::pin(async move {
                    let now = Timestamp::now().as_micros();
                    sqlx::query(REGISTER).bind(consumer).bind(now).execute(&self.0).await?;
                    Ok(())
                })
            }

            fn prune(&self, before: i64) -> BoxFuture<'_, Result<u64, StorageError>> {
                Box::pin(async move { Ok(sqlx::query(PRUNE).bind(before).execute(&self.0).await?.rows_affected()) })
            }

            fn relay_batch<'a>(&'a self, bus: &'a EventBus) -> BoxFuture<'a, Result<i64, StorageError>> {
                Box::pin(async move {
                    let others_before = Timestamp::now().as_micros().saturating_sub(micros(GRACE));
                    let take = Take { consumer: BUS, instance: bus.instance_id(), others_before, limit: BATCH };
                    if !self.0.acquire().await?.has_pending(take).await? {
                        return Ok(0);
                    }
                    let mut tx = self.0.begin().await?;
                    let events = tx.take_events(take).await?;
                    if events.is_empty() {
                        tx.rollback().await?;
                        return Ok(0);
                    }
                    let n = i64::try_from(events.len()).unwrap_or(i64::MAX);
                    for event in events {
                        bus.publish_from_outbox(Arc::new(event));
                    }
                    tx.commit().await?;
                    Ok(n)
                })
            }
        }
    };
}

outbox_store!(SqliteOutbox);
outbox_store!(PostgresOutbox);

/// The outbox store for `db`'s dialect.
pub fn store(db: &Db) -> Box<dyn OutboxStore> {
    match db {
        Db::Sqlite(pool) => Box::new(SqliteOutbox(pool.clone())),
        Db::Postgres(pool) => Box::new(PostgresOutbox(pool.clone())),
    }
}

/// Events written before this (micros) and taken by every consumer may go.
fn retained_since() -> i64 {
    Timestamp::now().as_micros().saturating_sub(micros(RETAIN))
}

/// Deletes events that every consumer has taken, once they are older than an hour.
pub async fn prune(db: &Db) -> Result<u64, StorageError> {
    store(db).prune(retained_since()).await
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
