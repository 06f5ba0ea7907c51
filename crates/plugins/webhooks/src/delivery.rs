//! Delivery: the outbox feeder (bus → `webhook_deliveries`), the worker that leases due
//! deliveries and POSTs them, signing, retries with exponential back-off, and disabling a
//! webhook that keeps failing.
//!
//! At least once: a delivery is marked delivered only after the receiver answered 2xx, and a
//! lease that runs out (a crash mid-attempt) makes it due again. Receivers de-duplicate with
//! the `X-Nexus-Delivery` header, which is the same on every attempt of one delivery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;

use crate::service::Webhooks;
use crate::store::{Attempt, DeliveryRow};
use crate::target;

/// Deliveries attempted at once by one instance.
const CONCURRENCY: i64 = 16;

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return String::from("sha256="),
    };
    mac.update(body);
    format!("sha256={}", nexus_kernel::id::hex(&mac.finalize().into_bytes()))
}

/// The body sent for `payload` (compact JSON of an object): the payload with a last member
/// `"signature": "sha256=<HMAC of the payload without it>"`. Dropping that member from the
/// raw body (the text from `,"signature":` to the closing brace) gives back the signed bytes.
pub fn signed_body(payload: &str, secret: &str) -> String {
    let unsigned = payload.trim();
    let sig = signature(secret, unsigned.as_bytes());
    match unsigned.strip_suffix('}') {
        Some(head) if head.trim_end().ends_with('{') => format!("{head}\"signature\":\"{sig}\"}}"),
        Some(head) => format!("{head},\"signature\":\"{sig}\"}}"),
        None => unsigned.to_string(),
    }
}

/// The wait before retry number `failures` (1 for the first retry): `base · 2^(failures-1)`,
/// at most one hour.
pub fn backoff(base_ms: u64, failures: u32) -> Duration {
    let factor = 1u64 << failures.saturating_sub(1).min(20);
    Duration::from_millis(base_ms.saturating_mul(factor).min(3_600_000))
}

/// Events taken from the outbox by one transaction at most.
const OUTBOX_BATCH: i64 = 128;

/// Turns the events the outbox holds for the webhooks into deliveries, until shutdown: woken
/// by this process's commits, and polling for the rest (other instances' events, and events
/// left by a crash before they were queued).
pub(crate) async fn consume(webhooks: Arc<Webhooks>) {
    let bus = webhooks.kernel.events.clone();
    let mut commits = webhooks.kernel.outbox.commits();
    let closed = bus.closed();
    tokio::pin!(closed);
    loop {
        commits.borrow_and_update();
        match webhooks.queue_from_outbox(OUTBOX_BATCH).await {
            Ok(n) if i64::try_from(n).unwrap_or(i64::MAX) >= OUTBOX_BATCH => continue,
            Ok(_) => {}
            Err(_) if bus.is_closed() => return,
            Err(e) => tracing::warn!(error = %e, "could not queue webhook deliveries from the outbox"),
        }
        tokio::select! {
            () = &mut closed => return,
            _ = commits.changed() => {}
            () = tokio::time::sleep(nexus_kernel::outbox::POLL) => {}
        }
    }
}

/// Queues the local events published on the bus only (not through the outbox: they describe
/// no committed change) for the webhooks they match, until shutdown. Best effort: such an
/// event is lost to webhooks if the process stops before it is queued.
pub(crate) async fn feed(webhooks: Arc<Webhooks>) {
    let bus = webhooks.kernel.events.clone();
    let mut rx = bus.subscribe();
    let closed = bus.closed();
    tokio::pin!(closed);
    loop {
        let event = tokio::select! {
            () = &mut closed => return,
            event = rx.recv() => event,
        };
        match event {
            // `analytics.event` can be a firehose: queued only when `analytics.webhook_events` is on.
            Ok(event) if event.kind == "analytics.event" && !webhooks.kernel.config.analytics.webhook_events => {}
            // Events relayed from other instances are queued by the instance that published them.
            Ok(event) if bus.is_local(&event) && !event.durable => {
                if let Err(e) = webhooks.enqueue(&event).await {
                    tracing::error!(error = %e, kind = %event.kind, "could not queue webhook deliveries");
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "webhook outbox fell behind the event bus"),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Leases and attempts due deliveries until shutdown; an attempt in flight is finished first.
pub(crate) async fn work(webhooks: Arc<Webhooks>) {
    let bus = webhooks.kernel.events.clone();
    let closed = bus.closed();
    tokio::pin!(closed);
    loop {
        if bus.is_closed() {
            return;
        }
        let now = webhooks.kernel.clock.now();
        let lease = now.add_seconds(webhooks.lease_secs()).as_micros();
        let batch = match webhooks.store.claim_due(now.as_micros(), lease, CONCURRENCY).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the webhook outbox");
                Vec::new()
            }
        };
        if batch.is_empty() {
            let wait = match webhooks.store.next_due().await {
                Ok(Some(due)) => Duration::from_micros(u64::try_from(due.saturating_sub(now.as_micros())).unwrap_or(0)),
                _ => Duration::from_secs(5),
            }
            .clamp(Duration::from_millis(20), Duration::from_secs(5));
            tokio::select! {
                () = &mut closed => return,
                () = webhooks.wake.notified() => {}
                // A test that moves the clock makes retries due without waiting for them.
                () = webhooks.kernel.clock.advanced() => {}
                () = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        let mut running = JoinSet::new();
        for delivery in batch {
            let webhooks = webhooks.clone();
            running.spawn(async move { webhooks.attempt(delivery).await });
        }
        while running.join_next().await.is_some() {}
    }
}

impl Webhooks {
    /// Makes one attempt of `d` (already leased) and records its outcome.
    pub(crate) async fn attempt(&self, d: DeliveryRow) {
        let cfg = &self.kernel.config.webhooks;
        let now = || self.kernel.clock.now().as_micros();
        let webhook = match self.store.webhook(&d.webhook_id).await {
            Ok(Some(w)) => w,
            Ok(None) => return self.cancel(&d, "webhook deleted").await,
            Err(e) => return tracing::warn!(error = %e, "could not load a webhook for delivery"),
        };
        if !webhook.active && d.event_type != "webhook.test" {
            return self.cancel(&d, "webhook disabled").await;
        }

        let Some(secret) = self.signing_secret(&webhook) else {
            return self
                .cancel(&d, "the webhook's signing secret cannot be opened with this master key; set a new secret")
                .await;
        };
        let started = Instant::now();
        let outcome = self.post(&webhook.url, &secret, &d).await;
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let (delivered, status, error) = match outcome {
            Ok(status) if (200..300).contains(&status) => (true, Some(i64::from(status)), None),
            Ok(status) => (false, Some(i64::from(status)), Some(format!("HTTP {status}"))),
            Err(e) => (false, None, Some(e)),
        };
        let failures = u32::try_from(d.attempts.saturating_add(1)).unwrap_or(u32::MAX);
        let retry_at = (!delivered && failures < cfg.max_attempts).then(|| {
            let wait = i64::try_from(backoff(cfg.retry_base_ms, failures).as_micros()).unwrap_or(i64::MAX);
            now().saturating_add(wait)
        });
        let attempt = Attempt { delivered, status, error: error.clone(), duration_ms, now: now(), retry_at };
        let streak = match self.store.record_attempt(&d, &attempt).await {
            Ok(streak) => streak,
            Err(e) => return tracing::error!(error = %e, delivery = %d.id, "could not record a webhook attempt"),
        };
        if let Some(error) = &error {
            tracing::info!(delivery = %d.id, webhook = %d.webhook_id, attempt = failures, error = %error, "webhook delivery failed");
        }
        let limit = i64::from(cfg.disable_after_failures);
        if !delivered && webhook.active && limit > 0 && streak >= limit {
            let reason = format!(
                "disabled after {streak} consecutive failed delivery attempts; last error: {}",
                error.as_deref().unwrap_or("unknown")
            );
            let event = self.kernel.events.envelope(
                "webhooks",
                "webhook.disabled",
                json!({ "webhook_id": webhook.id, "owner_id": webhook.owner_id, "reason": reason }),
            );
            if let Err(e) = self.store.disable(&webhook.id, &reason, now(), &event).await {
                return tracing::error!(error = %e, "could not disable a failing webhook");
            }
            tracing::warn!(webhook = %webhook.id, %reason, "webhook disabled");
        }
    }

    async fn cancel(&self, d: &DeliveryRow, reason: &str) {
        if let Err(e) = self.store.cancel_delivery(&d.id, reason, self.kernel.clock.now().as_micros()).await {
            tracing::warn!(error = %e, "could not cancel a webhook delivery");
        }
    }

    /// POSTs the signed payload; the status the receiver answered, or why there was none.
    async fn post(&self, url: &str, secret: &str, d: &DeliveryRow) -> Result<u16, String> {
        let parsed = target::parse(url).map_err(|e| e.0)?;
        target::check(&parsed, self.kernel.config.webhooks.allow_private).await.map_err(|e| e.0)?;
        let body = signed_body(&d.payload, secret);
        let sent = self
            .client()?
            .post(parsed)
            .header("content-type", "application/json")
            .header("x-nexus-signature", signature(secret, body.as_bytes()))
            .header("x-nexus-event", &d.event_type)
            .header("x-nexus-event-id", &d.event_id)
            .header("x-nexus-delivery", &d.id)
            .header("x-nexus-delivery-attempt", (d.attempts + 1).to_string())
            .header("x-nexus-timestamp", self.kernel.clock.unix_seconds().to_string())
            .body(body)
            .send()
            .await;
        match sent {
            Ok(resp) => Ok(resp.status().as_u16()),
            Err(e) if e.is_timeout() => Err(format!("timed out after {} s", self.kernel.config.webhooks.timeout_secs)),
            Err(e) if e.is_connect() => Err(format!("connection failed: {}", root_cause(&e))),
            Err(e) => Err(format!("request failed: {}", root_cause(&e))),
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_member_is_last_and_verifiable() {
        let payload = r#"{"data":{"a":1},"id":"evt_1","type":"user.created"}"#;
        let body = signed_body(payload, "s3cret");
        let (head, _) = body.rsplit_once(",\"signature\":").unwrap_or_default();
        assert_eq!(format!("{head}}}"), payload);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v["signature"], signature("s3cret", payload.as_bytes()));
        assert!(v["signature"].as_str().is_some_and(|s| s.starts_with("sha256=") && s.len() == 71));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(2000, 1), Duration::from_secs(2));
        assert_eq!(backoff(2000, 2), Duration::from_secs(4));
        assert_eq!(backoff(2000, 30), Duration::from_secs(3600));
    }
}
