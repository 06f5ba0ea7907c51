//! The webhooks service: registration and management, and the outbox feeding the delivery
//! worker ([`crate::delivery`]).

use std::sync::Arc;

use nexus_identity::Principal;
use nexus_kernel::Kernel;
use nexus_kernel::clock::Timestamp;
use nexus_kernel::db::StorageError;
use nexus_kernel::error::FieldError;
use nexus_kernel::events::{self, Event};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::error::WebhookError;
use crate::store::{DeliveryRow, WebhookRow, WebhookStore};
use crate::target;

/// A webhook as the API shows it: never with its secret.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: String,
    pub owner_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    pub active: bool,
    pub failure_count: i64,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<Timestamp>,
    pub last_delivery_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<WebhookRow> for Webhook {
    fn from(r: WebhookRow) -> Self {
        Self {
            events: serde_json::from_str(&r.events).unwrap_or_default(),
            id: r.id,
            owner_id: r.owner_id,
            url: r.url,
            description: r.description,
            active: r.active,
            failure_count: r.failure_count,
            disabled_reason: r.disabled_reason,
            disabled_at: r.disabled_at.map(Timestamp::from_micros),
            last_delivery_at: r.last_delivery_at.map(Timestamp::from_micros),
            created_at: Timestamp::from_micros(r.created_at),
            updated_at: Timestamp::from_micros(r.updated_at),
        }
    }
}

/// One delivery of one event to one webhook, with the outcome of its latest attempt.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `delivering`, `delivered`, `failed` (given up) or `cancelled`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<Timestamp>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub duration_ms: Option<i64>,
    pub created_at: Timestamp,
    pub delivered_at: Option<Timestamp>,
}

impl From<DeliveryRow> for Delivery {
    fn from(r: DeliveryRow) -> Self {
        let waiting = r.status == "pending";
        Self {
            id: r.id,
            webhook_id: r.webhook_id,
            event_id: r.event_id,
            event_type: r.event_type,
            status: r.status,
            attempts: r.attempts,
            next_attempt_at: waiting.then(|| Timestamp::from_micros(r.next_attempt_at)),
            last_status_code: r.last_status,
            last_error: r.last_error,
            duration_ms: r.duration_ms,
            created_at: Timestamp::from_micros(r.created_at),
            delivered_at: r.delivered_at.map(Timestamp::from_micros),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<String>,
    pub secret: Option<String>,
    pub active: Option<bool>,
    pub description: Option<String>,
}

/// Changes to a webhook; absent fields stay. Re-activating clears the failure streak.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub secret: Option<String>,
    pub active: Option<bool>,
    pub description: Option<String>,
}

#[derive(Debug)]
pub struct Webhooks {
    pub(crate) kernel: Arc<Kernel>,
    pub(crate) store: Arc<dyn WebhookStore>,
    /// Made on the first delivery: a TLS client loads its trust roots and crypto provider,
    /// memory and start-up time a server that sends no webhooks should not pay.
    client: std::sync::OnceLock<Result<reqwest::Client, String>>,
    /// Wakes the delivery worker when something was queued.
    pub(crate) wake: Notify,
}

const READ: &str = "webhook.read";
const WRITE: &str = "webhook.write";

impl Webhooks {
    pub(crate) fn new(kernel: Arc<Kernel>) -> Self {
        Self {
            store: crate::store::open(&kernel.db, kernel.outbox.clone()),
            kernel,
            client: std::sync::OnceLock::new(),
            wake: Notify::new(),
        }
    }

    /// The HTTP client deliveries are sent with; an error if it cannot be built.
    pub(crate) fn client(&self) -> Result<&reqwest::Client, String> {
        let cfg = &self.kernel.config.webhooks;
        let client = self.client.get_or_init(|| {
            reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(cfg.timeout_secs))
                .connect_timeout(std::time::Duration::from_secs(cfg.timeout_secs))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .dns_resolver(target::GuardedResolver { allow_private: cfg.allow_private })
                .user_agent(format!("Nexus-Webhooks/{}", nexus_kernel::VERSION))
                .build()
                .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))
        });
        client.as_ref().map_err(Clone::clone)
    }

    /// Validates a URL against the outbound rules.
    async fn check_url(&self, url: &str, errors: &mut Vec<FieldError>) -> Option<String> {
        let parsed = match target::parse(url) {
            Ok(u) => u,
            Err(e) => {
                errors.push(FieldError::new("url", e.0));
                return None;
            }
        };
        if let Err(e) = target::check(&parsed, self.kernel.config.webhooks.allow_private).await {
            errors.push(FieldError::new("url", e.0));
            return None;
        }
        Some(parsed.to_string())
    }

    fn check_events(actor: &Principal, patterns: &[String], errors: &mut Vec<FieldError>) -> Result<(), WebhookError> {
        if patterns.is_empty() || patterns.len() > 100 {
            errors.push(FieldError::new("events", "Give 1-100 event types or patterns (`user.*`, `*`)"));
        }
        for p in patterns {
            if !events::valid_pattern(p) {
                errors.push(FieldError::new("events", format!("`{p}` is not a valid event type or pattern")));
                continue;
            }
            // A webhook only ever receives events its owner may see.
            for permission in events::permissions_for_pattern(p) {
                if !actor.has(permission) {
                    return Err(WebhookError::Forbidden(permission.to_string()));
                }
            }
        }
        Ok(())
    }

    fn check_secret(secret: &str, errors: &mut Vec<FieldError>) {
        if secret.is_empty() || secret.chars().count() > 512 {
            errors.push(FieldError::new("secret", "The secret must be 1-512 characters"));
        }
    }

    fn check_description(description: &str, errors: &mut Vec<FieldError>) {
        if description.chars().count() > 500 {
            errors.push(FieldError::new("description", "The description must be at most 500 characters"));
        }
    }

    /// `secret` of webhook `id` as it is stored: sealed with the master key (DESIGN: signing
    /// secrets are sealed like every credential at rest).
    fn seal_secret(&self, id: &str, secret: &str) -> Result<String, WebhookError> {
        self.kernel
            .sealer
            .seal_value(&format!("webhook:{id}"), "secret", secret)
            .map_err(|e| WebhookError::Storage(StorageError::from(e)))
    }

    /// The signing secret of a stored webhook, opened; `None` when it does not open (another
    /// master key), and then nothing is signed with it.
    pub fn signing_secret(&self, row: &WebhookRow) -> Option<String> {
        self.kernel.sealer.open_value(&format!("webhook:{}", row.id), "secret", &row.secret)
    }

    /// Registers a webhook; returns it with the generated secret when none was given (shown
    /// this once).
    pub async fn create(&self, actor: &Principal, new: NewWebhook) -> Result<(Webhook, Option<String>), WebhookError> {
        actor.require(WRITE)?;
        let mut errors = Vec::new();
        let url = self.check_url(&new.url, &mut errors).await;
        let mut patterns = new.events.clone();
        patterns.dedup();
        Self::check_events(actor, &patterns, &mut errors)?;
        if let Some(secret) = &new.secret {
            Self::check_secret(secret, &mut errors);
        }
        let description = new.description.clone().unwrap_or_default();
        Self::check_description(&description, &mut errors);
        let Some(url) = url.filter(|_| errors.is_empty()) else { return Err(WebhookError::Invalid(errors)) };
        let generated = new.secret.is_none().then(|| format!("whsec_{}", nexus_kernel::id::random_alphanumeric(32)));
        let now = self.kernel.clock.now().as_micros();
        let id = format!("wh_{}", nexus_kernel::id::random_alphanumeric(16));
        let secret = self.seal_secret(&id, new.secret.as_deref().or(generated.as_deref()).unwrap_or_default())?;
        let row = WebhookRow {
            id,
            owner_id: actor.user_id.clone(),
            url,
            events: json!(patterns).to_string(),
            secret,
            description,
            active: new.active.unwrap_or(true),
            failure_count: 0,
            disabled_reason: None,
            disabled_at: None,
            last_delivery_at: None,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_webhook(&row).await?;
        self.audit(actor, "webhook.create", &row.id, json!({ "url": row.url, "events": patterns })).await;
        Ok((row.into(), generated))
    }

    /// The caller's webhooks (everyone's for an administrator).
    pub async fn list(&self, actor: &Principal) -> Result<Vec<Webhook>, WebhookError> {
        actor.require(READ)?;
        let owner = (!actor.is_admin()).then_some(actor.user_id.as_str());
        Ok(self.store.list_webhooks(owner).await?.into_iter().map(Webhook::from).collect())
    }

    /// Webhook `id` if the caller owns it (or administers); not found otherwise.
    async fn owned(&self, actor: &Principal, id: &str) -> Result<WebhookRow, WebhookError> {
        let row = self.store.webhook(id).await?.ok_or(WebhookError::NotFound)?;
        if row.owner_id != actor.user_id && !actor.is_admin() {
            return Err(WebhookError::NotFound);
        }
        Ok(row)
    }

    pub async fn get(&self, actor: &Principal, id: &str) -> Result<Webhook, WebhookError> {
        actor.require(READ)?;
        Ok(self.owned(actor, id).await?.into())
    }

    pub async fn update(&self, actor: &Principal, id: &str, patch: WebhookPatch) -> Result<Webhook, WebhookError> {
        actor.require(WRITE)?;
        let mut row = self.owned(actor, id).await?;
        let mut errors = Vec::new();
        if let Some(url) = &patch.url
            && let Some(url) = self.check_url(url, &mut errors).await
        {
            row.url = url;
        }
        if let Some(patterns) = &patch.events {
            Self::check_events(actor, patterns, &mut errors)?;
            row.events = json!(patterns).to_string();
        }
        if let Some(secret) = &patch.secret {
            Self::check_secret(secret, &mut errors);
            if errors.is_empty() {
                row.secret = self.seal_secret(id, secret)?;
            }
        }
        if let Some(description) = &patch.description {
            Self::check_description(description, &mut errors);
            row.description.clone_from(description);
        }
        if !errors.is_empty() {
            return Err(WebhookError::Invalid(errors));
        }
        if let Some(active) = patch.active {
            if active && !row.active {
                row.failure_count = 0;
                row.disabled_reason = None;
                row.disabled_at = None;
            }
            row.active = active;
        }
        row.updated_at = self.kernel.clock.now().as_micros();
        if !self.store.update_webhook(&row).await? {
            return Err(WebhookError::NotFound);
        }
        let changed = json!({ "url": patch.url.is_some(), "events": patch.events.is_some(),
            "secret": patch.secret.is_some(), "active": patch.active });
        self.audit(actor, "webhook.update", id, changed).await;
        Ok(row.into())
    }

    pub async fn delete(&self, actor: &Principal, id: &str) -> Result<(), WebhookError> {
        actor.require(WRITE)?;
        self.owned(actor, id).await?;
        if !self.store.delete_webhook(id).await? {
            return Err(WebhookError::NotFound);
        }
        self.audit(actor, "webhook.delete", id, json!({})).await;
        Ok(())
    }

    /// Sends a `webhook.test` event to webhook `id` now and returns the delivery with the
    /// outcome of that first attempt (failures are retried like any other delivery).
    pub async fn test(&self, actor: &Principal, id: &str) -> Result<Delivery, WebhookError> {
        actor.require(WRITE)?;
        let webhook = self.owned(actor, id).await?;
        let now = self.kernel.clock.now();
        let event = self.kernel.events.envelope(
            "webhooks",
            "webhook.test",
            json!({ "webhook_id": webhook.id, "message": "This is a test delivery from Nexus" }),
        );
        let lease = now.add_seconds(self.lease_secs()).as_micros();
        let row = delivery_row(&webhook.id, &event, "delivering", now.as_micros(), Some(lease));
        self.store.enqueue(&row).await?;
        self.attempt(row.clone()).await;
        Ok(self.store.delivery(&row.id).await?.ok_or(WebhookError::NotFound)?.into())
    }

    /// Deliveries of webhook `id`, newest first.
    pub async fn deliveries(
        &self,
        actor: &Principal,
        id: &str,
        status: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Delivery>, i64), WebhookError> {
        actor.require(READ)?;
        self.owned(actor, id).await?;
        let (rows, total) = self.store.deliveries(id, status, limit, offset).await?;
        Ok((rows.into_iter().map(Delivery::from).collect(), total))
    }

    /// Queues `event`, published on the bus only (not through the outbox), for every active
    /// webhook whose patterns match it.
    pub(crate) async fn enqueue(&self, event: &Event) -> Result<usize, WebhookError> {
        let now = self.kernel.clock.now().as_micros();
        let mut queued = 0;
        for d in plan(&self.store.active_webhooks().await?, event, now) {
            if self.store.enqueue(&d).await? {
                queued += 1;
            }
        }
        if queued > 0 {
            self.wake.notify_one();
        }
        Ok(queued)
    }

    /// Queues the deliveries of up to `limit` events the outbox holds for the webhooks; the
    /// number of events taken.
    pub(crate) async fn queue_from_outbox(&self, limit: i64) -> Result<usize, WebhookError> {
        let now = self.kernel.clock.now().as_micros();
        let (taken, queued) =
            self.store.queue_from_outbox(limit, &|webhooks, event| plan(webhooks, event, now)).await?;
        if queued > 0 {
            self.wake.notify_one();
        }
        Ok(taken)
    }

    /// How long a claimed delivery stays with its instance: the request timeout plus room to
    /// record the outcome. A crash mid-attempt delays that delivery by this much, so it is
    /// kept short.
    pub(crate) fn lease_secs(&self) -> i64 {
        i64::try_from(self.kernel.config.webhooks.timeout_secs).unwrap_or(10).saturating_add(10)
    }

    async fn audit(&self, actor: &Principal, action: &str, target: &str, metadata: Value) {
        let rec = nexus_kernel::audit::AuditRecord {
            action: action.to_string(),
            actor: actor.user_id.clone(),
            target: target.to_string(),
            success: true,
            metadata,
            ..Default::default()
        };
        self.kernel.audit.record_best_effort(&rec).await;
    }
}

/// The payload a webhook receives, before signing: the seed's `id`, `type`, `data`,
/// `timestamp`, plus `event` (the media seed's name for the type) and `source`.
fn payload(event: &Event) -> Value {
    json!({
        "id": event.id,
        "type": event.kind,
        "event": event.kind,
        "data": event.data,
        "timestamp": event.timestamp,
        "source": event.source,
    })
}

/// The deliveries of `event`: one to each of `webhooks` whose patterns match it.
fn plan(webhooks: &[WebhookRow], event: &Event, now: i64) -> Vec<DeliveryRow> {
    webhooks
        .iter()
        .filter(|w| {
            let patterns: Vec<String> = serde_json::from_str(&w.events).unwrap_or_default();
            patterns.iter().any(|p| events::matches(p, &event.kind))
        })
        .map(|w| delivery_row(&w.id, event, "pending", now, None))
        .collect()
}

fn delivery_row(webhook_id: &str, event: &Event, status: &str, now: i64, locked_until: Option<i64>) -> DeliveryRow {
    DeliveryRow {
        id: format!("dlv_{}", nexus_kernel::id::random_alphanumeric(20)),
        webhook_id: webhook_id.to_string(),
        event_id: event.id.clone(),
        event_type: event.kind.clone(),
        payload: payload(event).to_string(),
        status: status.to_string(),
        attempts: 0,
        next_attempt_at: now,
        locked_until,
        last_status: None,
        last_error: None,
        duration_ms: None,
        created_at: now,
        updated_at: now,
        delivered_at: None,
    }
}
