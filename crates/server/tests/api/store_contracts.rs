//! Contract tests of the stores: each store trait behaves the same on every dialect (SQLite, and
//! PostgreSQL when `NEXUS_TEST_POSTGRES_URL` is set), on a database of its own with no server.

use nexus_kernel::db::Db;
use nexus_kernel::events::{Event, EventBatch, EventBus};
use nexus_kernel::outbox::{Outbox, OutboxTx, Take};
use nexus_testkit::{Backend, TestDb, backends, json};
use nexus_webhooks::store::{Attempt, DeliveryRow, WebhookRow};

async fn webhooks_db(backend: Backend) -> TestDb {
    TestDb::open(backend, &[&nexus_kernel::MIGRATIONS, &nexus_webhooks::MIGRATIONS]).await
}

fn webhook(id: &str, owner: &str, created_at: i64) -> WebhookRow {
    WebhookRow {
        id: id.to_string(),
        owner_id: owner.to_string(),
        url: String::from("https://example.com/hook"),
        events: String::from(r#"["user.*"]"#),
        secret: String::from("s"),
        description: String::new(),
        active: true,
        failure_count: 0,
        disabled_reason: None,
        disabled_at: None,
        last_delivery_at: None,
        created_at,
        updated_at: created_at,
    }
}

fn delivery(id: &str, webhook_id: &str, event_id: &str, due: i64) -> DeliveryRow {
    DeliveryRow {
        id: id.to_string(),
        webhook_id: webhook_id.to_string(),
        event_id: event_id.to_string(),
        event_type: String::from("user.created"),
        payload: String::from("{}"),
        status: String::from("pending"),
        attempts: 0,
        next_attempt_at: due,
        locked_until: None,
        last_status: None,
        last_error: None,
        duration_ms: None,
        created_at: due,
        updated_at: due,
        delivered_at: None,
    }
}

/// Writes `event` to the outbox in a transaction of its own.
async fn write(db: &Db, event: &Event) {
    match db {
        Db::Sqlite(pool) => {
            let mut tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
            tx.write_event(event).await.unwrap_or_else(|e| panic!("{e}"));
            tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
        }
        Db::Postgres(pool) => {
            let mut tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
            tx.write_event(event).await.unwrap_or_else(|e| panic!("{e}"));
            tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// Takes (and acknowledges) up to `limit` events of `consumer`.
async fn take(db: &Db, consumer: &str, limit: i64) -> Vec<Event> {
    match db {
        Db::Sqlite(pool) => {
            let mut tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
            let events = tx.take_events(Take::all(consumer, limit)).await.unwrap_or_else(|e| panic!("{e}"));
            tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
            events
        }
        Db::Postgres(pool) => {
            let mut tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
            let events = tx.take_events(Take::all(consumer, limit)).await.unwrap_or_else(|e| panic!("{e}"));
            tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
            events
        }
    }
}

#[tokio::test]
async fn webhook_store_keeps_webhooks() {
    for backend in backends() {
        let t = webhooks_db(backend).await;
        let store = nexus_webhooks::store::open(&t.db, Outbox::new());
        store.insert_webhook(&webhook("wh_a", "u1", 1)).await.unwrap_or_else(|e| panic!("{e}"));
        store.insert_webhook(&webhook("wh_b", "u2", 2)).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(store.insert_webhook(&webhook("wh_a", "u1", 3)).await.is_err_and(|e| e.is_unique_violation()));

        let mut changed = webhook("wh_a", "u1", 1);
        changed.url = String::from("https://example.com/other");
        changed.active = false;
        assert!(store.update_webhook(&changed).await.unwrap_or_else(|e| panic!("{e}")));
        assert!(!store.update_webhook(&webhook("wh_none", "u1", 1)).await.unwrap_or_else(|e| panic!("{e}")));
        let got = store.webhook("wh_a").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("gone"));
        assert_eq!((got.url.as_str(), got.active), ("https://example.com/other", false), "{backend:?}");

        let ids = |rows: Vec<WebhookRow>| rows.into_iter().map(|w| w.id).collect::<Vec<_>>();
        assert_eq!(ids(store.list_webhooks(None).await.unwrap_or_default()), ["wh_a", "wh_b"], "{backend:?}");
        assert_eq!(ids(store.list_webhooks(Some("u2")).await.unwrap_or_default()), ["wh_b"], "{backend:?}");
        assert_eq!(ids(store.active_webhooks().await.unwrap_or_default()), ["wh_b"], "{backend:?}");

        store.enqueue(&delivery("d1", "wh_b", "evt_1", 10)).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(store.delete_webhook("wh_b").await.unwrap_or_else(|e| panic!("{e}")));
        assert!(!store.delete_webhook("wh_b").await.unwrap_or_else(|e| panic!("{e}")));
        assert!(store.webhook("wh_b").await.unwrap_or_else(|e| panic!("{e}")).is_none());
        assert!(store.delivery("d1").await.unwrap_or_else(|e| panic!("{e}")).is_none(), "{backend:?}");
    }
}

#[tokio::test]
async fn webhook_store_queues_leases_and_records_deliveries() {
    for backend in backends() {
        let t = webhooks_db(backend).await;
        let store = nexus_webhooks::store::open(&t.db, Outbox::new());
        store.insert_webhook(&webhook("wh_a", "u1", 1)).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(store.enqueue(&delivery("d1", "wh_a", "evt_1", 100)).await.unwrap_or_else(|e| panic!("{e}")));
        // One delivery per (webhook, event).
        assert!(!store.enqueue(&delivery("d2", "wh_a", "evt_1", 100)).await.unwrap_or_else(|e| panic!("{e}")));
        assert!(store.enqueue(&delivery("d3", "wh_a", "evt_2", 300)).await.unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(store.next_due().await.unwrap_or_else(|e| panic!("{e}")), Some(100), "{backend:?}");

        // At 200 only d1 is due; leased until 250, it is not handed out twice.
        let claimed = store.claim_due(200, 250, 10).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(claimed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["d1"], "{backend:?}");
        assert!(store.claim_due(200, 250, 10).await.unwrap_or_else(|e| panic!("{e}")).is_empty());
        // A lease that ran out makes it due again.
        let again = store.claim_due(260, 400, 1).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.len(), 1, "{backend:?}");
        let d1 = again.into_iter().next().unwrap_or_else(|| panic!("no delivery"));

        let failed = Attempt {
            delivered: false,
            status: Some(500),
            error: Some(String::from("HTTP 500")),
            duration_ms: 3,
            now: 270,
            retry_at: Some(500),
        };
        assert_eq!(store.record_attempt(&d1, &failed).await.unwrap_or_else(|e| panic!("{e}")), 1, "{backend:?}");
        let row = store.delivery("d1").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("gone"));
        assert_eq!((row.status.as_str(), row.attempts, row.next_attempt_at), ("pending", 1, 500), "{backend:?}");
        let ok = Attempt { delivered: true, status: Some(200), error: None, duration_ms: 2, now: 510, retry_at: None };
        assert_eq!(store.record_attempt(&row, &ok).await.unwrap_or_else(|e| panic!("{e}")), 0, "{backend:?}");
        let row = store.delivery("d1").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("gone"));
        assert_eq!((row.status.as_str(), row.delivered_at), ("delivered", Some(510)), "{backend:?}");

        store.cancel_delivery("d3", "webhook deleted", 520).await.unwrap_or_else(|e| panic!("{e}"));
        let (rows, total) = store.deliveries("wh_a", None, 10, 0).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((rows.len(), total), (2, 2), "{backend:?}");
        let (rows, total) = store.deliveries("wh_a", Some("cancelled"), 10, 0).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((rows.first().map(|d| d.id.as_str()), total), (Some("d3"), 1), "{backend:?}");
        assert_eq!(store.next_due().await.unwrap_or_else(|e| panic!("{e}")), None, "{backend:?}");
    }
}

#[tokio::test]
async fn webhook_store_turns_outbox_events_into_deliveries_once_and_disables_with_an_event() {
    for backend in backends() {
        let t = webhooks_db(backend).await;
        let store = nexus_webhooks::store::open(&t.db, Outbox::new());
        store.insert_webhook(&webhook("wh_a", "u1", 1)).await.unwrap_or_else(|e| panic!("{e}"));
        let bus = EventBus::new();
        let event = bus.envelope("identity", "user.created", json!({ "user_id": "u9" }));
        write(&t.db, &event).await;
        let plan = |webhooks: &[WebhookRow], e: &Event| -> Vec<DeliveryRow> {
            webhooks.iter().map(|w| delivery(&format!("dlv_{}", w.id), &w.id, &e.id, 5)).collect()
        };
        let taken = store.queue_from_outbox(10, &plan).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(taken, (1, 1), "{backend:?}");
        // Acknowledged with its deliveries: nothing left for the webhooks, and the relay's row is
        // untouched.
        assert_eq!(store.queue_from_outbox(10, &plan).await.unwrap_or_else(|e| panic!("{e}")), (0, 0));
        let delivered = store.delivery("dlv_wh_a").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(delivered.map(|d| d.event_id), Some(event.id.clone()), "{backend:?}");
        let relayed = take(&t.db, nexus_kernel::outbox::BUS, 10).await;
        assert_eq!(relayed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), [event.id.as_str()], "{backend:?}");
        assert_eq!(relayed.first().map(|e| (e.data.clone(), e.timestamp.clone())), Some((event.data, event.timestamp)));

        store.enqueue(&delivery("d_pending", "wh_a", "evt_other", 50)).await.unwrap_or_else(|e| panic!("{e}"));
        let disabled = bus.envelope("webhooks", "webhook.disabled", json!({ "webhook_id": "wh_a" }));
        store.disable("wh_a", "too many failures", 60, &disabled).await.unwrap_or_else(|e| panic!("{e}"));
        let w = store.webhook("wh_a").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("gone"));
        assert_eq!((w.active, w.disabled_reason.as_deref()), (false, Some("too many failures")), "{backend:?}");
        let pending = store.delivery("d_pending").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pending.map(|d| d.status), Some(String::from("cancelled")), "{backend:?}");
        let relayed = take(&t.db, nexus_kernel::outbox::BUS, 10).await;
        assert_eq!(relayed.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["webhook.disabled"], "{backend:?}");
    }
}

#[tokio::test]
async fn events_are_pending_for_webhooks_only_while_a_webhook_is_active() {
    for backend in backends() {
        let t = webhooks_db(backend).await;
        let store = nexus_webhooks::store::open(&t.db, Outbox::new());
        store.sync_interest().await.unwrap_or_else(|e| panic!("{e}"));
        let bus = EventBus::new();
        let kinds = |events: Vec<Event>| events.into_iter().map(|e| e.kind).collect::<Vec<_>>();
        let consumer = nexus_webhooks::store::CONSUMER;

        write(&t.db, &bus.envelope("test", "before.any", json!({}))).await;
        store.insert_webhook(&webhook("wh_a", "u1", 1)).await.unwrap_or_else(|e| panic!("{e}"));
        write(&t.db, &bus.envelope("test", "while.active", json!({}))).await;
        let mut off = webhook("wh_a", "u1", 1);
        off.active = false;
        store.update_webhook(&off).await.unwrap_or_else(|e| panic!("{e}"));
        write(&t.db, &bus.envelope("test", "while.inactive", json!({}))).await;
        store.update_webhook(&webhook("wh_a", "u1", 1)).await.unwrap_or_else(|e| panic!("{e}"));
        write(&t.db, &bus.envelope("test", "active.again", json!({}))).await;
        store.delete_webhook("wh_a").await.unwrap_or_else(|e| panic!("{e}"));
        write(&t.db, &bus.envelope("test", "after.delete", json!({}))).await;

        assert_eq!(kinds(take(&t.db, consumer, 10).await), ["while.active", "active.again"], "{backend:?}");
        // The relay to the bus has every event.
        assert_eq!(take(&t.db, nexus_kernel::outbox::BUS, 10).await.len(), 5, "{backend:?}");
    }
}

#[tokio::test]
async fn outbox_rows_are_taken_once_per_consumer() {
    for backend in backends() {
        let t = TestDb::open(backend, &[&nexus_kernel::MIGRATIONS]).await;
        let outbox = Outbox::new();
        outbox.register(&t.db, "second").await.unwrap_or_else(|e| panic!("{e}"));
        outbox.register(&t.db, "second").await.unwrap_or_else(|e| panic!("{e}"));
        let bus = EventBus::new();
        let events: Vec<Event> = (0..5).map(|i| bus.envelope("test", "system.n", json!({ "i": i }))).collect();
        for e in &events {
            write(&t.db, e).await;
        }
        let ids = |events: &[Event]| events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        let first = take(&t.db, "bus", 3).await;
        let rest = take(&t.db, "bus", 10).await;
        assert_eq!([ids(&first), ids(&rest)].concat(), ids(&events), "{backend:?}: oldest first, each once");
        assert!(take(&t.db, "bus", 10).await.is_empty());
        // Another consumer has its own rows.
        assert_eq!(ids(&take(&t.db, "second", 10).await), ids(&events), "{backend:?}");
        // Taken by everyone, but not yet old enough to go.
        assert_eq!(nexus_kernel::outbox::prune(&t.db).await.unwrap_or_else(|e| panic!("{e}")), 0);
    }
}

/// Writes `batch` in a transaction of its own.
async fn write_batch(db: &Db, batch: &EventBatch) {
    match db {
        Db::Sqlite(pool) => {
            let mut tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
            tx.write_batch(batch).await.unwrap_or_else(|e| panic!("{e}"));
            tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
        }
        Db::Postgres(pool) => {
            let mut tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
            tx.write_batch(batch).await.unwrap_or_else(|e| panic!("{e}"));
            tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

#[tokio::test]
async fn a_batch_of_events_is_taken_whole_and_in_order() {
    for backend in backends() {
        let t = TestDb::open(backend, &[&nexus_kernel::MIGRATIONS]).await;
        let bus = EventBus::new();
        let single = bus.envelope("test", "system.before", json!({ "i": -1 }));
        write(&t.db, &single).await;
        let mut batch = bus.batch("docs");
        let data: Vec<serde_json::Value> =
            (0..300).map(|i| json!({ "i": i, "text": format!("é\"\\{i}"), "nested": { "a": [i] } })).collect();
        for (i, d) in data.iter().enumerate() {
            // Raw text and values, as callers give them.
            if i % 2 == 0 {
                batch.push("document.inserted", d)
            } else {
                batch.push_raw("document.updated", &d.to_string())
            }
        }
        write_batch(&t.db, &batch).await;
        write_batch(&t.db, &bus.batch("empty")).await;
        let after = bus.envelope("test", "system.after", json!({}));
        write(&t.db, &after).await;

        // A limit of two rows: the single event and the whole batch.
        let first = take(&t.db, "bus", 2).await;
        assert_eq!(first.len(), 301, "{backend:?}");
        let rest = take(&t.db, "bus", 10).await;
        let rest_ids: Vec<&str> = rest.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(rest_ids, [after.id.as_str()], "{backend:?}");
        assert_eq!(first.first().map(|e| e.id.clone()), Some(single.id.clone()));
        let taken = first.get(1..).unwrap_or_default();
        assert_eq!(taken.len(), data.len());
        let mut ids = std::collections::HashSet::new();
        for (i, (event, d)) in taken.iter().zip(&data).enumerate() {
            let kind = if i % 2 == 0 { "document.inserted" } else { "document.updated" };
            assert_eq!((event.kind.as_str(), &event.data, event.source.as_str()), (kind, d, "docs"), "{backend:?}");
            assert_eq!(event.timestamp, batch.timestamp());
            assert_eq!(event.origin, bus.instance_id(), "{backend:?}: the writer's instance");
            assert!(event.durable && event.id.starts_with("evt_") && ids.insert(event.id.clone()));
        }
        assert!(take(&t.db, "bus", 10).await.is_empty(), "{backend:?}: each once");
    }
}

#[tokio::test]
async fn concurrent_takers_share_the_outbox_without_overlap() {
    for backend in backends() {
        let t = TestDb::open(backend, &[&nexus_kernel::MIGRATIONS]).await;
        let bus = EventBus::new();
        let events: Vec<Event> = (0..40).map(|i| bus.envelope("test", "system.n", json!({ "i": i }))).collect();
        for e in &events {
            write(&t.db, e).await;
        }
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let db = t.db.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let batch = take(&db, "bus", 3).await;
                    if batch.is_empty() {
                        return got;
                    }
                    got.extend(batch.into_iter().map(|e| e.id));
                }
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap_or_else(|e| panic!("{e}")));
        }
        all.sort();
        let mut expected: Vec<String> = events.into_iter().map(|e| e.id).collect();
        expected.sort();
        assert_eq!(all, expected, "{backend:?}: every row taken exactly once");
    }
}

#[tokio::test]
async fn instance_store_keeps_one_server_id_and_named_secrets() {
    for backend in backends() {
        let t = TestDb::open(backend, &[&nexus_kernel::MIGRATIONS]).await;
        let store = nexus_kernel::instance::store(&t.db);
        let id = store.server_id().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.server_id().await.unwrap_or_else(|e| panic!("{e}")), id, "{backend:?}");
        let cursor = store.secret("cursor").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cursor.len(), 64, "{backend:?}");
        assert!(cursor.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(store.secret("cursor").await.unwrap_or_else(|e| panic!("{e}")), cursor, "{backend:?}");
        assert_ne!(store.secret("other").await.unwrap_or_else(|e| panic!("{e}")), cursor, "{backend:?}");
    }
}

#[tokio::test]
async fn audit_store_reads_what_the_writer_and_transactions_wrote() {
    use nexus_kernel::audit::{AuditLog, AuditQuery, AuditRecord, AuditTx};
    for backend in backends() {
        let t = TestDb::open(backend, &[&nexus_kernel::MIGRATIONS]).await;
        let log = AuditLog::start(t.db.clone());
        let rec = |action: &str, actor: &str| AuditRecord {
            action: action.to_string(),
            actor: actor.to_string(),
            secret_path: String::from("app/key"),
            success: true,
            metadata: json!({ "n": 1 }),
            ..AuditRecord::default()
        };
        for i in 0..5 {
            log.record(&rec("secret.read", &format!("u{}", i % 2))).await.unwrap_or_else(|e| panic!("{e}"));
        }
        // A record written in a transaction that rolls back is not there; one that commits is.
        match &t.db {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
                tx.write_record(&rec("test.rolled_back", "u9")).await.unwrap_or_else(|e| panic!("{e}"));
                tx.rollback().await.unwrap_or_else(|e| panic!("{e}"));
                let mut tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
                tx.write_record(&rec("test.committed", "u9")).await.unwrap_or_else(|e| panic!("{e}"));
                tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
                tx.write_record(&rec("test.rolled_back", "u9")).await.unwrap_or_else(|e| panic!("{e}"));
                tx.rollback().await.unwrap_or_else(|e| panic!("{e}"));
                let mut tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
                tx.write_record(&rec("test.committed", "u9")).await.unwrap_or_else(|e| panic!("{e}"));
                tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
            }
        }
        let store = nexus_kernel::audit::store(&t.db);
        let q = |actor: Option<&str>, action: Option<&str>| AuditQuery {
            actor: actor.map(str::to_string),
            action: action.map(str::to_string),
            ..AuditQuery::default()
        };
        let (all, total) = store.query(&q(None, None)).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((all.len(), total), (6, 6), "{backend:?}");
        let (rows, total) = store.query(&q(Some("u0"), Some("secret.read"))).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((rows.len(), total), (3, 3), "{backend:?}");
        let (rows, _) = store.query(&q(Some("u9"), None)).await.unwrap_or_else(|e| panic!("{e}"));
        let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(actions, ["test.committed"], "{backend:?}");
        assert!(rows.iter().all(|r| r.metadata == r#"{"n":1}"# && r.secret_path == "app/key"), "{backend:?}");
        let limited = AuditQuery { limit: Some(2), offset: 1, ..AuditQuery::default() };
        let (rows, total) = store.query(&limited).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((rows.len(), total), (2, 6), "{backend:?}");
        assert_eq!(rows.first().map(|r| r.id.clone()), all.get(1).map(|r| r.id.clone()), "{backend:?}: newest first");
    }
}

// ---- identity ----

async fn identity_db(backend: Backend) -> TestDb {
    TestDb::open(backend, &[&nexus_kernel::MIGRATIONS, &nexus_identity::MIGRATIONS]).await
}

fn user_row(id: &str, username: &str, roles: &[&str], created_at: i64) -> nexus_identity::store::UserRow {
    nexus_identity::store::UserRow {
        id: id.to_string(),
        username: username.to_string(),
        email: format!("{username}@Example.com"),
        full_name: String::new(),
        password_hash: String::from("hash"),
        status: String::from("active"),
        metadata: String::from("{}"),
        failed_logins: 0,
        locked_until: None,
        created_at,
        updated_at: created_at,
        last_login: None,
        roles: roles.iter().map(|r| r.to_string()).collect(),
    }
}

/// A list request sorted by `field`, then id, from the start.
fn list_query(listing: &nexus_kernel::query::Listing, field: &str, limit: u32) -> nexus_kernel::query::ListQuery {
    use nexus_kernel::query::{ListQuery, Paging, SortKey};
    let key = |name: &str| SortKey { field: *listing.field(name).unwrap_or_else(|| panic!("{name}")), desc: false };
    ListQuery { conditions: Vec::new(), sort: vec![key(field), key("id")], limit, paging: Paging::Offset { offset: 0 } }
}

#[tokio::test]
async fn identity_store_keeps_users_with_their_roles() {
    use nexus_identity::store::{USER_LISTING, UserFilter};
    for backend in backends() {
        let t = identity_db(backend).await;
        let store = nexus_identity::store::open(&t.db, Outbox::new());
        let bus = EventBus::new();
        let ev = |kind: &str| bus.envelope("identity", kind, json!({}));
        store
            .insert_user(&user_row("u1", "Alice", &["admin", "user"], 1), &ev("user.created"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .insert_user(&user_row("u2", "bob", &["user"], 2), &ev("user.created"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Usernames and emails are unique whatever their case.
        let dup = store.insert_user(&user_row("u3", "ALICE", &["user"], 3), &ev("user.created")).await;
        assert!(dup.is_err_and(|e| e.is_unique_violation()), "{backend:?}");
        assert_eq!(store.count_users().await.unwrap_or_else(|e| panic!("{e}")), 2, "{backend:?}");

        let alice = store.user_by_id("u1").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("no u1"));
        assert_eq!(
            (alice.username.as_str(), alice.roles.clone()),
            ("Alice", vec!["admin".to_string(), "user".to_string()])
        );
        let by_login = |login: &'static str| {
            let store = store.clone();
            async move { store.user_by_login(login).await.unwrap_or_else(|e| panic!("{e}")).map(|u| u.id) }
        };
        assert_eq!(by_login("alice").await.as_deref(), Some("u1"), "{backend:?}");
        assert_eq!(by_login("BOB@example.COM").await.as_deref(), Some("u2"), "{backend:?}");
        assert_eq!(by_login("carol").await, None, "{backend:?}");
        assert!(store.login_taken("alice@example.com", None).await.unwrap_or_else(|e| panic!("{e}")));
        assert!(!store.login_taken("alice@example.com", Some("u1")).await.unwrap_or_else(|e| panic!("{e}")));

        let filter = |role: Option<&str>, search: Option<&str>| UserFilter {
            role: role.map(str::to_string),
            search: search.map(str::to_string),
            limit: 10,
            ..UserFilter::default()
        };
        let ids = |rows: Vec<nexus_identity::store::UserRow>| rows.into_iter().map(|u| u.id).collect::<Vec<_>>();
        let (rows, total) = store.list_users(&filter(None, None)).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((ids(rows), total), (vec!["u1".to_string(), "u2".to_string()], 2), "{backend:?}");
        let (rows, total) = store.list_users(&filter(Some("admin"), None)).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((ids(rows), total), (vec!["u1".to_string()], 1), "{backend:?}");
        // `_` is a literal in a search, not a wildcard.
        let (rows, _) = store.list_users(&filter(None, Some("o_"))).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(rows.is_empty(), "{backend:?}");
        let (rows, _) = store.list_users(&filter(None, Some("BO"))).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ids(rows), ["u2"], "{backend:?}");
        let page = store
            .list_users_page(&filter(Some("user"), None), &list_query(&USER_LISTING, "username", 1))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((page.items.len(), page.total, page.has_next), (1, Some(2), true), "{backend:?}");
        assert_eq!(page.items.first().map(|u| u.roles.len()), Some(2), "{backend:?}: roles attached");

        assert_eq!(store.count_active_with_role("admin", "u2").await.unwrap_or_else(|e| panic!("{e}")), 1);
        assert_eq!(store.count_active_with_role("admin", "u1").await.unwrap_or_else(|e| panic!("{e}")), 0);
        let mut changed = user_row("u2", "bobby", &["admin"], 2);
        changed.updated_at = 5;
        store.update_user(&changed, true, &ev("user.updated")).await.unwrap_or_else(|e| panic!("{e}"));
        let bob = store.user_by_id("u2").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("no u2"));
        assert_eq!((bob.username.as_str(), bob.roles, bob.updated_at), ("bobby", vec!["admin".to_string()], 5));
        assert_eq!(by_login("bobby").await.as_deref(), Some("u2"), "{backend:?}: the folded key follows");

        assert!(store.delete_user("u2", &ev("user.deleted")).await.unwrap_or_else(|e| panic!("{e}")));
        assert!(!store.delete_user("u2", &ev("user.deleted")).await.unwrap_or_else(|e| panic!("{e}")));
        let relayed = take(&t.db, nexus_kernel::outbox::BUS, 10).await;
        let kinds: Vec<&str> = relayed.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["user.created", "user.created", "user.updated", "user.deleted"], "{backend:?}");
    }
}

#[tokio::test]
async fn identity_store_locks_logins_and_spends_and_revokes_refresh_tokens() {
    use nexus_identity::store::RefreshRow;
    use nexus_kernel::clock::Timestamp;
    for backend in backends() {
        let t = identity_db(backend).await;
        let store = nexus_identity::store::open(&t.db, Outbox::new());
        let bus = EventBus::new();
        store
            .insert_user(&user_row("u1", "alice", &["user"], 1), &bus.envelope("identity", "user.created", json!({})))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Three failures in a row lock the account; the count starts again.
        let fail = || store.record_login_failure("u1", 3, 900);
        assert!(!fail().await.unwrap_or_else(|e| panic!("{e}")));
        assert!(!fail().await.unwrap_or_else(|e| panic!("{e}")));
        assert!(fail().await.unwrap_or_else(|e| panic!("{e}")), "{backend:?}");
        let u = store.user_by_id("u1").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("no u1"));
        assert_eq!((u.failed_logins, u.locked_until), (0, Some(900)), "{backend:?}");
        store.record_login_success("u1", Timestamp::from_micros(950)).await.unwrap_or_else(|e| panic!("{e}"));
        let u = store.user_by_id("u1").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("no u1"));
        assert_eq!((u.locked_until, u.last_login), (None, Some(950)), "{backend:?}");

        let refresh = |hash: &str, family: &str| RefreshRow {
            token_hash: hash.to_string(),
            family_id: family.to_string(),
            user_id: String::from("u1"),
            client_id: String::new(),
            device_id: String::new(),
            expires_at: 10_000,
            used_at: None,
            revoked_at: None,
        };
        let now = Timestamp::from_micros(1_000);
        let login = bus.envelope("identity", "auth.login", json!({}));
        store.insert_refresh(&refresh("h1", "f1"), now, Some(&login)).await.unwrap_or_else(|e| panic!("{e}"));
        store.insert_refresh(&refresh("h2", "f1"), now, None).await.unwrap_or_else(|e| panic!("{e}"));
        store.insert_refresh(&refresh("h3", "f2"), now, None).await.unwrap_or_else(|e| panic!("{e}"));
        store.insert_refresh(&refresh("h4", "f3"), now, None).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(take(&t.db, nexus_kernel::outbox::BUS, 10).await.len(), 2, "{backend:?}: created and login");

        assert!(store.spend_refresh("h1", now).await.unwrap_or_else(|e| panic!("{e}")));
        assert!(!store.spend_refresh("h1", now).await.unwrap_or_else(|e| panic!("{e}")), "{backend:?}: spent once");
        let h1 = store.refresh_by_hash("h1").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("h1"));
        assert_eq!((h1.family_id.as_str(), h1.used_at), ("f1", Some(1_000)), "{backend:?}");

        store.revoke_family("f2", now).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!store.spend_refresh("h3", now).await.unwrap_or_else(|e| panic!("{e}")), "{backend:?}: revoked");
        // Every session but f1 is ended; f2 already was, so only f3 is reported.
        let others = store.revoke_other_families("u1", "f1", now).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(others, ["f3"], "{backend:?}");
        assert!(store.spend_refresh("h2", now).await.unwrap_or_else(|e| panic!("{e}")), "{backend:?}: kept");
        store.insert_refresh(&refresh("h5", "f1"), now, None).await.unwrap_or_else(|e| panic!("{e}"));
        store.revoke_user_families("u1", now).await.unwrap_or_else(|e| panic!("{e}"));
        let h5 = store.refresh_by_hash("h5").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("h5"));
        assert_eq!(h5.revoked_at, Some(1_000), "{backend:?}");

        let far = Timestamp::now().as_micros() + 3_600_000_000;
        store.insert_revocation("session", "f1", 1_000, far).await.unwrap_or_else(|e| panic!("{e}"));
        store.insert_revocation("user", "u1", 2_000, 5).await.unwrap_or_else(|e| panic!("{e}"));
        let rows = store.revocations_since(0).await.unwrap_or_else(|e| panic!("{e}"));
        let seen: Vec<(String, String, i64)> = rows.into_iter().map(|r| (r.kind, r.subject, r.not_before)).collect();
        assert_eq!(seen, [(String::from("session"), String::from("f1"), 1_000)], "{backend:?}: expired ones left out");
        assert!(store.revocations_since(far).await.unwrap_or_else(|e| panic!("{e}")).is_empty());
        store.purge_expired(Timestamp::from_micros(20_000)).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(store.refresh_by_hash("h2").await.unwrap_or_else(|e| panic!("{e}")).is_none(), "{backend:?}");
        assert_eq!(store.revocations_since(0).await.unwrap_or_else(|e| panic!("{e}")).len(), 1, "{backend:?}");
    }
}

#[tokio::test]
async fn identity_store_keeps_and_revokes_api_keys() {
    use nexus_identity::store::{API_KEY_LISTING, ApiKeyRow};
    use nexus_kernel::clock::Timestamp;
    for backend in backends() {
        let t = identity_db(backend).await;
        let store = nexus_identity::store::open(&t.db, Outbox::new());
        let bus = EventBus::new();
        let ev = |kind: &str| bus.envelope("identity", kind, json!({}));
        store
            .insert_user(&user_row("u1", "alice", &["user"], 1), &ev("user.created"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let key = |id: &str, created_at: i64| ApiKeyRow {
            id: id.to_string(),
            user_id: String::from("u1"),
            name: format!("key {id}"),
            prefix: String::from("nx_abc"),
            scopes: String::from(r#"["secret.read"]"#),
            premium: false,
            created_at,
            expires_at: None,
            last_used: None,
            revoked_at: None,
        };
        store.insert_api_key(&key("k1", 10), "hash1", &ev("apikey.created")).await.unwrap_or_else(|e| panic!("{e}"));
        store.insert_api_key(&key("k2", 20), "hash2", &ev("apikey.created")).await.unwrap_or_else(|e| panic!("{e}"));
        let found = store.api_key_by_hash("hash2").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(found.map(|k| (k.id, k.scopes)), Some((String::from("k2"), String::from(r#"["secret.read"]"#))));
        let ids = |rows: Vec<ApiKeyRow>| rows.into_iter().map(|k| k.id).collect::<Vec<_>>();
        assert_eq!(ids(store.api_keys_of("u1").await.unwrap_or_default()), ["k2", "k1"], "{backend:?}: newest first");

        assert!(
            !store
                .revoke_api_key("k1", Some("u9"), Timestamp::from_micros(30), &ev("apikey.revoked"))
                .await
                .unwrap_or(true)
        );
        assert!(
            store
                .revoke_api_key("k1", Some("u1"), Timestamp::from_micros(30), &ev("apikey.revoked"))
                .await
                .unwrap_or(false)
        );
        assert!(
            !store.revoke_api_key("k1", None, Timestamp::from_micros(31), &ev("apikey.revoked")).await.unwrap_or(true)
        );
        assert_eq!(ids(store.api_keys_of("u1").await.unwrap_or_default()), ["k2"], "{backend:?}");
        let revoked = store.api_key_by_hash("hash1").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(revoked.and_then(|k| k.revoked_at), Some(30), "{backend:?}");
        let page = store
            .api_keys_page("u1", &list_query(&API_KEY_LISTING, "name", 10))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((ids(page.items), page.total), (vec![String::from("k2")], Some(1)), "{backend:?}");

        store.touch_api_key("k2", Timestamp::from_micros(40)).await.unwrap_or_else(|e| panic!("{e}"));
        let touched = store.api_key_by_hash("hash2").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(touched.and_then(|k| k.last_used), Some(40), "{backend:?}");
        let kinds: Vec<String> = take(&t.db, nexus_kernel::outbox::BUS, 10).await.into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["user.created", "apikey.created", "apikey.created", "apikey.revoked"], "{backend:?}");
    }
}

// ---- secrets ----

async fn secrets_db(backend: Backend) -> TestDb {
    TestDb::open(backend, &[&nexus_kernel::MIGRATIONS, &nexus_secrets::MIGRATIONS]).await
}

fn secret_row(id: &str, path: &str) -> nexus_secrets::store::SecretRow {
    nexus_secrets::store::SecretRow {
        id: id.to_string(),
        path: path.to_string(),
        metadata: String::from("{}"),
        version: 1,
        created_at: 1,
        created_by: String::from("u1"),
        updated_at: 1,
        updated_by: String::from("u1"),
    }
}

#[tokio::test]
async fn secret_store_keeps_master_keys_and_rewraps_data_keys() {
    use nexus_secrets::store::{CreateOutcome, NewSecret};
    for backend in backends() {
        let t = secrets_db(backend).await;
        let store = nexus_secrets::store::open(&t.db, Outbox::new());
        assert!(store.insert_first_master_key("mk1", b"check1", 1).await.unwrap_or_else(|e| panic!("{e}")));
        // Only the first of several starting instances records one.
        assert!(!store.insert_first_master_key("mk9", b"check9", 2).await.unwrap_or_else(|e| panic!("{e}")));
        assert!(store.insert_master_key("mk2", b"check2", "pending", 3).await.unwrap_or_else(|e| panic!("{e}")));
        assert!(!store.insert_master_key("mk2", b"other", "pending", 4).await.unwrap_or_else(|e| panic!("{e}")));
        let keys = store.master_keys().await.unwrap_or_else(|e| panic!("{e}"));
        let states: Vec<(String, String)> = keys.into_iter().map(|k| (k.id, k.state)).collect();
        assert_eq!(states, [("mk1".into(), "active".into()), ("mk2".into(), "pending".into())], "{backend:?}");

        let bus = EventBus::new();
        let create = |id: &'static str, key_id: &'static str| {
            let store = store.clone();
            // Each its own event: an event id is written to the outbox once.
            let event = bus.envelope("secrets", "secret.created", json!({}));
            async move {
                let row = secret_row(id, &format!("app/{id}"));
                let new = NewSecret {
                    row: &row,
                    key_id,
                    wrapped_key: b"wrapped",
                    version_id: &format!("v_{id}"),
                    ciphertext: b"c",
                };
                store.create(&new, &event).await.unwrap_or_else(|e| panic!("{e}"))
            }
        };
        assert!(matches!(create("s1", "mk1").await, CreateOutcome::Created), "{backend:?}");
        assert!(matches!(create("s2", "mk2").await, CreateOutcome::StaleKey), "{backend:?}: mk2 is not active");
        assert!(matches!(create("s3", "mk1").await, CreateOutcome::Created), "{backend:?}");
        assert_eq!(store.key_ids_in_use().await.unwrap_or_default(), ["mk1"], "{backend:?}");
        assert_eq!(store.count_not_wrapped_by("mk2").await.unwrap_or(-1), 2, "{backend:?}");

        let batch = store.not_wrapped_by("mk2", 1).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(batch.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["s1"], "{backend:?}");
        assert!(store.rewrap("s1", "mk1", "mk2", b"rewrapped").await.unwrap_or_else(|e| panic!("{e}")));
        assert!(!store.rewrap("s1", "mk1", "mk2", b"again").await.unwrap_or_else(|e| panic!("{e}")), "{backend:?}");
        assert_eq!(store.count_not_wrapped_by("mk2").await.unwrap_or(-1), 1, "{backend:?}");
        store.activate_master_key("mk2").await.unwrap_or_else(|e| panic!("{e}"));
        let keys = store.master_keys().await.unwrap_or_else(|e| panic!("{e}"));
        let states: Vec<&str> = keys.iter().map(|k| k.state.as_str()).collect();
        assert_eq!(states, ["retired", "active"], "{backend:?}");
        let s1 = store.sealed("app/s1", None).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("s1"));
        assert_eq!((s1.key_id.as_str(), s1.wrapped_key.as_slice()), ("mk2", b"rewrapped".as_slice()), "{backend:?}");
    }
}

#[tokio::test]
async fn secret_store_versions_lists_and_deletes_secrets() {
    use nexus_secrets::policy::Scope;
    use nexus_secrets::store::{CreateOutcome, NewSecret, NewVersion, SECRET_LISTING};
    for backend in backends() {
        let t = secrets_db(backend).await;
        let store = nexus_secrets::store::open(&t.db, Outbox::new());
        store.insert_first_master_key("mk1", b"check", 1).await.unwrap_or_else(|e| panic!("{e}"));
        let bus = EventBus::new();
        let ev = |kind: &str| bus.envelope("secrets", kind, json!({}));
        for (id, path) in [("s1", "app/db"), ("s2", "app/api"), ("s3", "other/x")] {
            let row = secret_row(id, path);
            let new = NewSecret {
                row: &row,
                key_id: "mk1",
                wrapped_key: b"w",
                version_id: &format!("v1_{id}"),
                ciphertext: b"one",
            };
            let created = store.create(&new, &ev("secret.created")).await.unwrap_or_else(|e| panic!("{e}"));
            assert!(matches!(created, CreateOutcome::Created), "{backend:?}");
        }
        let row = secret_row("s9", "app/db");
        let taken = NewSecret { row: &row, key_id: "mk1", wrapped_key: b"w", version_id: "v1_s9", ciphertext: b"x" };
        let outcome = store.create(&taken, &ev("secret.created")).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(outcome, CreateOutcome::Exists), "{backend:?}: the path is taken");

        let v2 = NewVersion {
            secret_id: "s1",
            expected_version: 1,
            metadata: r#"{"env":"prod"}"#,
            version_id: "v2_s1",
            ciphertext: b"two",
            at: 7,
            by: "u2",
        };
        assert!(store.add_version(&v2, &ev("secret.updated")).await.unwrap_or_else(|e| panic!("{e}")));
        // A writer that read version 1 too loses (check-and-set).
        let stale = NewVersion { version_id: "v2_other", ..v2.clone() };
        assert!(
            !store.add_version(&stale, &ev("secret.updated")).await.unwrap_or_else(|e| panic!("{e}")),
            "{backend:?}"
        );
        let current =
            store.sealed("app/db", None).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("db"));
        assert_eq!(
            (current.version, current.v_ciphertext.as_deref(), current.updated_by.as_str()),
            (2, Some(b"two".as_slice()), "u2")
        );
        let first =
            store.sealed("app/db", Some(1)).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("db"));
        assert_eq!((first.v_version, first.v_ciphertext.as_deref()), (Some(1), Some(b"one".as_slice())), "{backend:?}");
        let missing =
            store.sealed("app/db", Some(5)).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("db"));
        assert_eq!(missing.v_version, None, "{backend:?}: no such version");
        let versions: Vec<i64> =
            store.versions("s1").await.unwrap_or_default().into_iter().map(|v| v.version).collect();
        assert_eq!(versions, [2, 1], "{backend:?}");
        assert_eq!(store.id_of("app/api").await.unwrap_or_default().as_deref(), Some("s2"), "{backend:?}");

        let paths = |page: nexus_kernel::query::Page<nexus_secrets::store::SecretRow>| {
            page.items.into_iter().map(|r| r.path).collect::<Vec<_>>()
        };
        let q = list_query(&SECRET_LISTING, "path", 10);
        let all = store.list_page(None, &Scope::All, &q).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(paths(all), ["app/api", "app/db", "other/x"], "{backend:?}");
        let under = store.list_page(Some("app/"), &Scope::All, &q).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(paths(under), ["app/api", "app/db"], "{backend:?}");
        let scope = Scope::Only { exact: vec![String::from("app/db")], prefixes: vec![String::from("other/")] };
        let scoped = store.list_page(None, &scope, &q).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(paths(scoped), ["app/db", "other/x"], "{backend:?}");
        let nothing = Scope::Only { exact: Vec::new(), prefixes: Vec::new() };
        assert!(store.list_page(None, &nothing, &q).await.unwrap_or_else(|e| panic!("{e}")).items.is_empty());

        let deleted = |id: &str| bus.envelope("secrets", "secret.deleted", json!({ "id": id }));
        assert_eq!(store.delete("app/db", &deleted).await.unwrap_or_else(|e| panic!("{e}")).as_deref(), Some("s1"));
        assert_eq!(store.delete("app/db", &deleted).await.unwrap_or_else(|e| panic!("{e}")), None, "{backend:?}");
        assert!(store.versions("s1").await.unwrap_or_default().is_empty(), "{backend:?}: versions go with it");
        let relayed = take(&t.db, nexus_kernel::outbox::BUS, 20).await;
        let kinds: Vec<&str> = relayed.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["secret.created", "secret.created", "secret.created", "secret.updated", "secret.deleted"]);
        assert_eq!(relayed.last().map(|e| e.data.clone()), Some(json!({ "id": "s1" })), "{backend:?}");
    }
}

#[tokio::test]
async fn secret_store_audits_a_cached_read_only_while_its_version_is_current() {
    use nexus_kernel::audit::AuditRecord;
    use nexus_secrets::store::{CachedRead, NewSecret, NewVersion};
    for backend in backends() {
        let t = secrets_db(backend).await;
        let store = nexus_secrets::store::open(&t.db, Outbox::new());
        store.insert_first_master_key("mk1", b"check", 1).await.unwrap_or_else(|e| panic!("{e}"));
        let bus = EventBus::new();
        let row = secret_row("s1", "app/db");
        let new = NewSecret { row: &row, key_id: "mk1", wrapped_key: b"w", version_id: "v1", ciphertext: b"one" };
        store
            .create(&new, &bus.envelope("secrets", "secret.created", json!({})))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let rec = |request_id: &str| AuditRecord {
            action: String::from("secret.read"),
            actor: String::from("u1"),
            secret_path: String::from("app/db"),
            request_id: request_id.to_string(),
            success: true,
            ..AuditRecord::default()
        };
        let read =
            |request_id: &str, id: &str, version: i64| CachedRead { rec: rec(request_id), id: id.to_string(), version };
        let mut auditor = store.read_auditor();
        assert_eq!(
            auditor.audit(&[read("r1", "s1", 1)]).await.unwrap_or_else(|e| panic!("{e}")),
            [true],
            "{backend:?}"
        );
        let v2 = NewVersion {
            secret_id: "s1",
            expected_version: 1,
            metadata: "{}",
            version_id: "v2",
            ciphertext: b"two",
            at: 2,
            by: "u1",
        };
        store
            .add_version(&v2, &bus.envelope("secrets", "secret.updated", json!({})))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            auditor.audit(&[read("r2", "s1", 1)]).await.unwrap_or_else(|e| panic!("{e}")),
            [false],
            "{backend:?}"
        );
        assert_eq!(
            auditor.audit(&[read("r3", "gone", 1)]).await.unwrap_or_else(|e| panic!("{e}")),
            [false],
            "{backend:?}"
        );
        // Many reads in one transaction: each is judged on its own, only the current ones
        // leave a record.
        let mixed = vec![read("r4", "s1", 2), read("r5", "s1", 1), read("r6", "gone", 1), read("r7", "s1", 2)];
        assert_eq!(
            auditor.audit(&mixed).await.unwrap_or_else(|e| panic!("{e}")),
            [true, false, false, true],
            "{backend:?}"
        );
        assert!(auditor.audit(&[]).await.unwrap_or_else(|e| panic!("{e}")).is_empty());
        let audit = nexus_kernel::audit::store(&t.db);
        let (rows, total) =
            audit.query(&nexus_kernel::audit::AuditQuery::default()).await.unwrap_or_else(|e| panic!("{e}"));
        let mut written: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
        written.sort_unstable();
        assert_eq!((written, total), (vec!["r1", "r4", "r7"], 3), "{backend:?}");
    }
}
