//! The analytics service: ingestion (validated per event, acknowledged once committed by the
//! group-commit writer), queries, and the realtime notification of stored events.

use std::collections::HashSet;
use std::sync::Arc;

use nexus_identity::{Identity, Principal};
use nexus_kernel::Kernel;
use nexus_kernel::client::ClientMeta;
use nexus_kernel::clock::Timestamp;
use nexus_kernel::group_commit::{GroupCommit, Sink};
use nexus_kernel::query::{ListQuery, Page};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::error::AnalyticsError;
use crate::event::{self, BodyError, EventError};
use crate::query::{self, FunnelRequest, FunnelStep, Summary, SummaryRequest};
use crate::store::{EventRow, EventStore, Filter, Written};

const READ: &str = "analytics.read";
const WRITE: &str = "analytics.write";

/// Rows the writer commits in one transaction at most (a larger request is still one).
const WRITER_BATCH: usize = 4096;
/// Requests waiting for the writer before further ones wait to be queued.
const WRITER_QUEUE: usize = 1024;

/// The fate of one event of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted {
        index: usize,
        id: String,
    },
    /// Its `event_id` was stored before, under `id`.
    Duplicate {
        index: usize,
        id: String,
    },
}

/// What became of a request's events.
#[derive(Debug, Clone, Default)]
pub struct Ingested {
    pub outcomes: Vec<Outcome>,
    pub errors: Vec<EventError>,
    /// The request was one event, not a list.
    pub single: bool,
}

#[derive(Debug)]
pub struct Analytics {
    pub(crate) kernel: Arc<Kernel>,
    identity: Arc<Identity>,
    pub(crate) store: Arc<dyn EventStore>,
    writer: GroupCommit<EventRow, Written>,
}

/// Commits the rows of many requests together.
struct Writer(Arc<dyn EventStore>);

impl Sink for Writer {
    type Item = EventRow;
    type Output = Written;

    async fn commit(&mut self, items: Vec<EventRow>) -> Result<Vec<Written>, String> {
        self.0.insert(items).await.map_err(|e| e.to_string())
    }
}

impl Analytics {
    /// The service over `kernel`'s database, with its writer; users are looked up in `identity`.
    pub fn new(kernel: Arc<Kernel>, identity: Arc<Identity>) -> Self {
        let store = crate::store::open(&kernel.db);
        let writer = GroupCommit::start(Writer(store.clone()), WRITER_BATCH, WRITER_QUEUE);
        Self { kernel, identity, store, writer }
    }

    pub fn kernel(&self) -> &Arc<Kernel> {
        &self.kernel
    }

    fn require(p: &Principal, permission: &str) -> Result<(), AnalyticsError> {
        if p.has(permission) { Ok(()) } else { Err(AnalyticsError::Forbidden(permission.to_string())) }
    }

    /// Ingests the body of `POST /v2/analytics/events`.
    pub async fn ingest(&self, p: &Principal, body: &[u8], client: &ClientMeta) -> Result<Ingested, AnalyticsError> {
        Self::require(p, WRITE)?;
        let limits = &self.kernel.config.analytics;
        if body.len() > limits.max_request_bytes {
            return Err(AnalyticsError::TooLarge(format!(
                "The request is {} bytes; at most {} are accepted",
                body.len(),
                limits.max_request_bytes
            )));
        }
        let batch = event::split(body, limits.max_batch_events).map_err(|e| match e {
            BodyError::Malformed(message) => AnalyticsError::field("body", message),
            BodyError::TooManyEvents { given, max } => {
                AnalyticsError::TooLarge(format!("The request carries {given} events; at most {max} are accepted"))
            }
        })?;
        let mut ingested = self.ingest_events(p, &batch.events, 0, client).await?;
        ingested.single = batch.single;
        if ingested.outcomes.is_empty() {
            return Err(AnalyticsError::Refused(ingested.errors));
        }
        Ok(ingested)
    }

    /// Validates and stores `events` (numbered from `first_index`), returning once the accepted
    /// ones are committed. Used by the API and by `nexus analytics import`.
    pub async fn ingest_events(
        &self,
        p: &Principal,
        events: &[&RawValue],
        first_index: usize,
        client: &ClientMeta,
    ) -> Result<Ingested, AnalyticsError> {
        Self::require(p, WRITE)?;
        let limits = &self.kernel.config.analytics;
        let now = Timestamp::now();
        let mut errors = Vec::new();
        let mut valid = Vec::with_capacity(events.len());
        for (i, raw) in events.iter().enumerate() {
            match event::validate(first_index + i, raw, limits, now) {
                Ok(e) => valid.push((first_index + i, e)),
                Err(e) => errors.push(e),
            }
        }
        if valid.is_empty() {
            return Ok(Ingested { outcomes: Vec::new(), errors, single: false });
        }
        let linked = self.nexus_users(valid.iter().filter_map(|(_, e)| e.user_id.as_deref())).await;
        let (ip, agent) = if limits.record_client {
            (
                Some(client.ip.clone()).filter(|s| !s.is_empty()),
                Some(client.user_agent.clone()).filter(|s| !s.is_empty()),
            )
        } else {
            (None, None)
        };
        let mut indexes = Vec::with_capacity(valid.len());
        let rows: Vec<EventRow> = valid
            .into_iter()
            .map(|(index, e)| {
                indexes.push(index);
                let linked_user_id = e.user_id.as_ref().filter(|u| linked.contains(u.as_str())).cloned();
                EventRow {
                    // Time-ordered, so that inserts append to the primary key's index.
                    id: uuid::Uuid::now_v7().to_string(),
                    event_key: e.event_id,
                    ts: e.timestamp.unwrap_or(now).as_micros(),
                    received_at: now.as_micros(),
                    event_name: e.event_name,
                    event_category: e.event_category,
                    user_id: e.user_id,
                    linked_user_id,
                    source: e.source,
                    properties: Value::Object(e.properties).to_string(),
                    ip_address: ip.clone(),
                    user_agent: agent.clone(),
                }
            })
            .collect();
        let written = self.writer.submit(rows.clone()).await?;
        let mut outcomes = Vec::with_capacity(rows.len());
        let mut stored = Vec::with_capacity(rows.len());
        for ((index, row), w) in indexes.into_iter().zip(rows).zip(written) {
            match w {
                Written::Inserted => {
                    outcomes.push(Outcome::Accepted { index, id: row.id.clone() });
                    stored.push(row);
                }
                Written::Duplicate(id) => outcomes.push(Outcome::Duplicate { index, id }),
            }
        }
        self.publish(&stored);
        Ok(Ingested { outcomes, errors, single: false })
    }

    /// Which of `user_ids` name a Nexus user. User ids are UUIDs, so nothing else is looked up.
    async fn nexus_users<'a>(&self, user_ids: impl Iterator<Item = &'a str>) -> HashSet<String> {
        let candidates: HashSet<&str> = user_ids.filter(|u| uuid::Uuid::parse_str(u).is_ok()).collect();
        let mut found = HashSet::new();
        for id in candidates {
            if self.identity.get_user(id).await.is_ok() {
                found.insert(id.to_string());
            }
        }
        found
    }

    /// Tells the event bus (WebSocket channel `analytics`, and webhooks when
    /// `analytics.webhook_events` is on) about newly stored events. The one place events leave
    /// the plugin, so that it can move onto a durable outbox.
    fn publish(&self, stored: &[EventRow]) {
        for row in stored {
            let data = json!({
                "id": row.id,
                "event_name": row.event_name,
                "event_category": row.event_category,
                "timestamp": Timestamp::from_micros(row.ts).to_rfc3339(),
                "user_id": row.user_id,
                "source": row.source,
                "properties": serde_json::from_str::<Value>(&row.properties).unwrap_or_default(),
            });
            self.kernel.events.publish("analytics", "analytics.event", data);
        }
    }

    /// A page of events.
    pub async fn list(
        &self,
        p: &Principal,
        filter: &Filter,
        q: &ListQuery,
        count: bool,
    ) -> Result<Page<EventRow>, AnalyticsError> {
        Self::require(p, READ)?;
        Ok(self.store.page(filter, q, count).await?)
    }

    pub async fn summary(&self, p: &Principal, req: &SummaryRequest) -> Result<Summary, AnalyticsError> {
        Self::require(p, READ)?;
        let spec = query::summary_spec(req)?;
        let answer = match crate::rollup::plan(&spec.spec) {
            Some(plan) => match self.summary_from_rollups(&spec.spec, &plan).await {
                Ok(answer) => answer,
                // Two instances numbering the same new user at once, say: the raw events
                // answer the same, only slower.
                Err(e) => {
                    tracing::warn!(error = %e, "could not use the rollups; summarising the raw events");
                    self.store.summary(&spec.spec).await?
                }
            },
            None => self.store.summary(&spec.spec).await?,
        };
        Ok(query::summary(spec, answer.0, answer.1))
    }

    /// The summary from the hourly rollups (recomputing stale hours first) and the raw events
    /// of the partial hours at the ends (`crate::rollup`).
    async fn summary_from_rollups(
        &self,
        spec: &crate::store::SummarySpec,
        plan: &crate::rollup::Plan,
    ) -> Result<crate::store::SummaryAnswer, nexus_kernel::db::StorageError> {
        let (first, last) = plan.hours;
        let rows = if first < last {
            self.store.refresh_rollups(first, last).await?;
            self.store.rollups(first, last, &spec.filter).await?
        } else {
            Vec::new()
        };
        let mut edges = Vec::new();
        for (from, to) in &plan.edges {
            edges.extend(self.store.edge_rows(*from, *to, &spec.filter).await?);
        }
        let mut users: Vec<String> = edges.iter().filter_map(|e| e.4.clone()).collect();
        users.sort_unstable();
        users.dedup();
        let numbers = self.store.user_numbers(&users).await?;
        Ok(crate::rollup::combine(spec, &rows, &edges, &numbers))
    }

    pub async fn funnel(&self, p: &Principal, req: &FunnelRequest) -> Result<Vec<FunnelStep>, AnalyticsError> {
        Self::require(p, READ)?;
        let rows = self.store.funnel_rows(&req.steps, req.from.as_micros(), req.to.as_micros()).await?;
        Ok(query::funnel(&req.steps, req.window_secs, &rows))
    }

    /// Events with `from <= timestamp < to` in time order, `page` at a time, handed to `each`
    /// (for `nexus analytics export`).
    pub async fn export(
        &self,
        p: &Principal,
        from: Timestamp,
        to: Timestamp,
        page: i64,
        mut each: impl FnMut(&EventRow) -> std::io::Result<()>,
    ) -> Result<u64, AnalyticsError> {
        Self::require(p, READ)?;
        let mut after: Option<(i64, String)> = None;
        let mut n = 0u64;
        loop {
            let rows = self.store.export(from.as_micros(), to.as_micros(), after.as_ref(), page).await?;
            for row in &rows {
                each(row).map_err(|e| AnalyticsError::field("output", e.to_string()))?;
                n += 1;
            }
            match rows.last() {
                Some(last) if i64::try_from(rows.len()).unwrap_or(i64::MAX) >= page => {
                    after = Some((last.ts, last.id.clone()));
                }
                _ => return Ok(n),
            }
        }
    }

    /// One retention pass: deletes events older than `analytics.retention_days`, in small
    /// batches so that ingestion is never held up for long; returns how many went.
    pub async fn apply_retention(&self) -> Result<u64, AnalyticsError> {
        const BATCH: i64 = 1000;
        let days = self.kernel.config.analytics.retention_days;
        if days == 0 {
            return Ok(0);
        }
        let keep = i64::try_from(days).unwrap_or(i64::MAX).saturating_mul(86_400);
        let cutoff = Timestamp::now().add_seconds(-keep).as_micros();
        let mut deleted = 0;
        loop {
            let n = self.store.delete_before(cutoff, BATCH).await?;
            deleted += n;
            if n < BATCH.unsigned_abs() {
                return Ok(deleted);
            }
            tokio::task::yield_now().await;
        }
    }
}

/// Runs retention passes until the event bus closes (shutdown).
pub(crate) async fn retain(analytics: Arc<Analytics>) {
    let bus = analytics.kernel.events.clone();
    let closed = bus.closed();
    tokio::pin!(closed);
    let every = std::time::Duration::from_secs(analytics.kernel.config.analytics.retention_interval_secs);
    loop {
        match analytics.apply_retention().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "analytics retention removed old events"),
            Err(e) => tracing::warn!(error = %e, "analytics retention pass failed"),
        }
        tokio::select! {
            () = &mut closed => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
