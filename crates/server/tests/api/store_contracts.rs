//! Contract tests of the stores: each store trait behaves the same on every dialect (SQLite, and
//! PostgreSQL when `NEXUS_TEST_POSTGRES_URL` is set), on a database of its own with no server.

use nexus_kernel::db::Db;
use nexus_kernel::events::{Event, EventBus};
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
