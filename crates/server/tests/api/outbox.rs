//! The transactional outbox: an acknowledged change's webhook survives `kill -9`, and a
//! change that fails writes no event.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use nexus_kernel::db::Db;
use nexus_kernel::events::Event;
use nexus_kernel::outbox::OutboxTx;
use nexus_testkit::{ADMIN_PASSWORD, TestServer, backends, json};
use serde_json::Value;

/// The real `nexus` binary serving `data` on `port`, with webhooks allowed to reach this host.
fn spawn_nexus(data: &std::path::Path, port: u16) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexus"));
    cmd.args(["--data-dir", &data.to_string_lossy(), "--port", &port.to_string()]);
    for (k, _) in std::env::vars() {
        if k.starts_with("NEXUS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NEXUS_AUTH__ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("NEXUS_WEBHOOKS__ALLOW_PRIVATE", "true")
        .env("NEXUS_WEBHOOKS__RETRY_BASE_MS", "100")
        // A kill in the middle of an attempt leaves its lease (timeout + 10 s) to run out.
        .env("NEXUS_WEBHOOKS__TIMEOUT_SECS", "2")
        .env("NEXUS_LOG_LEVEL", "warn");
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| panic!("cannot run nexus: {e}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn wait_healthy(client: &nexus_testkit::reqwest::Client, base: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ok = client.get(format!("{base}/health")).send().await.is_ok_and(|r| r.status().is_success());
        if ok {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "nexus never became healthy at {base}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(client: &nexus_testkit::reqwest::Client, url: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = client.post(url).json(&body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A receiver on `port` recording the bodies of the webhooks it gets.
async fn receive_on(port: u16) -> Arc<Mutex<Vec<(HeaderMap, String)>>> {
    let got: Arc<Mutex<Vec<(HeaderMap, String)>>> = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((headers, String::from_utf8_lossy(&body).into_owned()));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("receiver cannot bind port {port}: {e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    got
}

#[tokio::test]
async fn an_acknowledged_change_is_delivered_after_kill_9_and_restart() {
    let dir = std::env::temp_dir().join(format!("nexus-outbox-{}-{}", std::process::id(), free_port()));
    let data = dir.join("data");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = nexus_testkit::reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    // Nothing listens on the receiver's port yet: every attempt before the restart fails.
    let receiver_port = free_port();

    let mut child = spawn_nexus(&data, port);
    wait_healthy(&client, &base).await;
    let (status, login) = post(
        &client,
        &format!("{base}/api/auth/login"),
        None,
        json!({ "username": "admin", "password": ADMIN_PASSWORD }),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    let token = login["access_token"].as_str().unwrap_or_default().to_string();
    let hook = json!({ "url": format!("http://127.0.0.1:{receiver_port}/hook"), "events": ["user.created"],
        "secret": "outbox-secret" });
    let (status, created) = post(&client, &format!("{base}/api/webhooks"), Some(&token), hook).await;
    assert_eq!(status, 201, "{created}");

    let user = json!({ "username": "survivor", "email": "survivor@example.com", "password": "user-Pass1" });
    let (status, user) = post(&client, &format!("{base}/api/users"), Some(&token), user).await;
    assert_eq!(status, 201, "{user}");
    // Acknowledged: the process dies at once, with no chance to finish anything.
    child.kill().unwrap_or_else(|e| panic!("kill -9: {e}"));
    child.wait().unwrap_or_else(|e| panic!("{e}"));
    let user_id = user["id"].as_str().unwrap_or_default().to_string();
    assert!(!user_id.is_empty(), "{user}");

    let got = receive_on(receiver_port).await;
    let mut child = spawn_nexus(&data, port);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let delivered = loop {
        let found = got
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(h, body)| (h.clone(), serde_json::from_str::<Value>(body).unwrap_or(Value::Null)))
            .find(|(_, body)| body["type"] == "user.created" && body["data"]["user_id"] == user_id.as_str());
        if let Some(found) = found {
            break found;
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the webhook of the acknowledged change never arrived");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let (headers, body) = delivered;
    assert!(body["id"].as_str().is_some_and(|id| id.starts_with("evt_")), "{body}");
    assert_eq!(headers.get("x-nexus-event-id").and_then(|v| v.to_str().ok()), body["id"].as_str());
    assert_eq!(body["source"], "identity");
}

/// Whether event `id` is in the outbox.
async fn in_outbox(db: &Db, id: &str) -> bool {
    const SQL: &str = "SELECT COUNT(*) FROM nexus_outbox WHERE id = $1";
    let n: i64 = match db {
        Db::Sqlite(pool) => sqlx::query_scalar(SQL).bind(id).fetch_one(pool).await,
        Db::Postgres(pool) => sqlx::query_scalar(SQL).bind(id).fetch_one(pool).await,
    }
    .unwrap_or_else(|e| panic!("{e}"));
    n == 1
}

/// Writes an event in a transaction that then runs `second` and commits if it succeeded.
async fn change_with_event<DB>(pool: &sqlx::Pool<DB>, event: &Event, second: &'static str) -> bool
where
    DB: sqlx::Database,
    DB::Connection: OutboxTx,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let mut tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
    tx.write_event(event).await.unwrap_or_else(|e| panic!("{e}"));
    if sqlx::query(second).execute(&mut *tx).await.is_err() {
        // Dropped without a commit: rolled back.
        return false;
    }
    tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    true
}

#[tokio::test]
async fn a_failed_transaction_writes_no_event_and_a_committed_one_is_published() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let kernel = s.kernel();
        let mut rx = kernel.events.subscribe();
        let failed = kernel.events.envelope("test", "system.failed", json!({}));
        let done = kernel.events.envelope("test", "system.done", json!({}));
        let (first, second) = match &kernel.db {
            Db::Sqlite(pool) => (
                change_with_event(pool, &failed, "INSERT INTO no_such_table VALUES (1)").await,
                change_with_event(pool, &done, "SELECT 1").await,
            ),
            Db::Postgres(pool) => (
                change_with_event(pool, &failed, "INSERT INTO no_such_table VALUES (1)").await,
                change_with_event(pool, &done, "SELECT 1").await,
            ),
        };
        assert!(!first && second, "{backend:?}");
        assert!(!in_outbox(&kernel.db, &failed.id).await, "{backend:?}: the rolled-back event is not in the outbox");
        assert!(in_outbox(&kernel.db, &done.id).await, "{backend:?}");
        kernel.outbox.committed();
        // The committed one reaches the bus with its envelope; the rolled-back one never does.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let event = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("{backend:?}: the committed event never reached the bus"))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_ne!(event.id, failed.id, "{backend:?}");
            if event.id == done.id {
                assert_eq!((event.kind.as_str(), event.source.as_str()), ("system.done", "test"));
                assert_eq!(event.timestamp, done.timestamp);
                break;
            }
        }
    }
}
