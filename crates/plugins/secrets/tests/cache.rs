//! Reads of current versions are served from a cache of sealed rows, yet never stale: a write
//! acknowledged by another instance on the same database (here without Redis, so without any
//! notification) is seen by the next read, and every read served has exactly one audit record.

// JSON values index to `Null` instead of panicking; tests read responses that way.
#![allow(clippy::indexing_slicing)]

use std::sync::Arc;

use nexus_kernel::audit::AuditRecord;
use nexus_secrets::store::CachedRead;
use nexus_testkit::reqwest::Method;
use nexus_testkit::{Backend, Reply, TestServer, backends, json};
use serde_json::Value;

/// Two instances on one database: `b` shares `a`'s data directory (its SQLite file, master key
/// and token key) and, on PostgreSQL, `a`'s schema.
async fn pair(backend: Backend) -> (TestServer, TestServer) {
    let a = TestServer::start_on(backend).await;
    let (dir, url) = (a.config.data_dir.clone(), a.config.database.url.clone());
    let b = TestServer::start_with(backend, move |c| {
        c.data_dir = dir;
        c.database.url = url;
    })
    .await;
    (a, b)
}

async fn read(s: &TestServer, token: &str, path: &str) -> Reply {
    s.get_as(token, &format!("/api/v1/secrets/{path}")).await
}

async fn update(s: &TestServer, token: &str, path: &str, body: Value) {
    let r = s.call_as(token, Method::PUT, &format!("/api/v1/secrets/{path}"), Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

async fn create(s: &TestServer, token: &str, path: &str, value: &str) -> String {
    let r = s.post_as(token, "/api/v1/secrets", json!({"path": path, "value": value})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["id"].as_str().unwrap_or_default().to_string()
}

/// The successful `secret.read` records of `path`.
async fn reads_audited(s: &TestServer, token: &str, path: &str) -> usize {
    let r = s.get_as(token, &format!("/api/v1/audit?action=secret.read&secret_path={path}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["logs"].as_array().map_or(0, |logs| logs.iter().filter(|l| l["success"] == true).count())
}

#[tokio::test]
async fn a_write_through_another_instance_is_seen_by_the_next_read() {
    for backend in backends() {
        let (a, b) = pair(backend).await;
        let (ta, tb) = (a.admin_token().await, b.admin_token().await);
        let path = "cache/db/password";
        let first_id = create(&a, &ta, path, "value-1").await;
        let mut served = 0;
        // The second read is served from the cache.
        for _ in 0..2 {
            let r = read(&a, &ta, path).await;
            assert_eq!((r.status.as_u16(), r.json["value"].as_str()), (200, Some("value-1")), "{}", r.text);
            served += 1;
        }
        for i in 2..12 {
            let value = format!("value-{i}");
            update(&b, &tb, path, json!({ "value": value })).await;
            let r = read(&a, &ta, path).await;
            assert_eq!(r.json["value"].as_str(), Some(value.as_str()), "{backend:?}: {}", r.text);
            assert_eq!(r.json["version"], i, "{}", r.text);
            served += 1;
            // And again, now from the cache.
            let r = read(&a, &ta, path).await;
            assert_eq!(r.json["value"].as_str(), Some(value.as_str()), "{backend:?}: {}", r.text);
            served += 1;
        }
        // A metadata-only update is a new version too.
        update(&b, &tb, path, json!({ "metadata": {"owner": "b"} })).await;
        let r = read(&a, &ta, path).await;
        assert_eq!((r.json["version"].as_i64(), &r.json["metadata"]), (Some(12), &json!({"owner": "b"})), "{}", r.text);
        served += 1;
        // Deleted elsewhere: gone here.
        let r = b.call_as(&tb, Method::DELETE, &format!("/api/v1/secrets/{path}"), None).await;
        assert_eq!(r.status, 204, "{}", r.text);
        let r = read(&a, &ta, path).await;
        assert_eq!(r.status, 404, "{backend:?}: {}", r.text);
        // Created again elsewhere: a new secret at the same path, at version 1 again.
        let second_id = create(&b, &tb, path, "reborn").await;
        assert_ne!(first_id, second_id);
        let r = read(&a, &ta, path).await;
        assert_eq!((r.json["value"].as_str(), r.json["id"].as_str()), (Some("reborn"), Some(second_id.as_str())));
        served += 1;
        // Writes here are seen here at once.
        update(&a, &ta, path, json!({ "value": "local" })).await;
        assert_eq!(read(&a, &ta, path).await.json["value"], "local");
        served += 1;
        assert_eq!(reads_audited(&a, &ta, path).await, served, "{backend:?}: one record per read served");
    }
}

#[tokio::test]
async fn concurrent_reads_during_writes_elsewhere_each_have_one_record() {
    for backend in backends() {
        let (a, b) = pair(backend).await;
        let (ta, tb) = (a.admin_token().await, b.admin_token().await);
        let path = "cache/busy";
        create(&a, &ta, path, "v-0").await;
        let a = Arc::new(a);
        let mut readers = Vec::new();
        for _ in 0..8 {
            let (a, ta) = (a.clone(), ta.clone());
            readers.push(tokio::spawn(async move {
                let (mut ok, mut last) = (0usize, 0i64);
                for _ in 0..25 {
                    let r = read(&a, &ta, path).await;
                    assert_eq!(r.status, 200, "{}", r.text);
                    let version = r.json["version"].as_i64().unwrap_or_default();
                    // Each reader's reads follow one another, so it never goes back in time.
                    assert!(version >= last, "version {version} after {last}");
                    assert_eq!(r.json["value"], format!("v-{}", version - 1), "{}", r.text);
                    last = version;
                    ok += 1;
                }
                ok
            }));
        }
        for i in 1..=10 {
            update(&b, &tb, path, json!({ "value": format!("v-{i}") })).await;
            // Once the write is acknowledged, no read that starts may show an older version.
            let r = read(&a, &ta, path).await;
            assert_eq!(r.json["version"], i + 1, "{backend:?}: {}", r.text);
        }
        let mut served = 10;
        for r in readers {
            served += r.await.unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(reads_audited(&a, &ta, path).await, served, "{backend:?}");
    }
}

#[tokio::test]
async fn the_audit_record_of_a_cached_read_is_written_only_while_the_copy_is_current() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let token = s.admin_token().await;
        let id = create(&s, &token, "cache/pre", "v").await;
        let store = nexus_secrets::store::open(&s.kernel().db, nexus_kernel::outbox::Outbox::new());
        // Enough at once that several share a statement, some holding and some not.
        let reads: Vec<CachedRead> = (0..64i64)
            .map(|i| {
                let (key, version) = if i % 3 == 0 { (String::from("no-such-id"), 1) } else { (id.clone(), 1 + i % 2) };
                let rec = AuditRecord {
                    action: String::from("test.precondition"),
                    actor: String::from("tester"),
                    request_id: format!("req-{i}"),
                    success: true,
                    ..AuditRecord::default()
                };
                CachedRead { rec, id: key, version }
            })
            .collect();
        let written = store.read_auditor().audit(&reads).await.unwrap_or_else(|e| panic!("{e}"));
        let holds: Vec<bool> = (0..64i64).map(|i| i % 3 != 0 && i % 2 == 0).collect();
        assert_eq!(written, holds, "{backend:?}");
        let expected = holds.iter().filter(|h| **h).count();
        let r = s.get_as(&token, "/api/v1/audit?action=test.precondition").await;
        assert_eq!(r.json["total"], expected, "{backend:?}: {}", r.text);
    }
}

#[tokio::test]
async fn a_cached_read_whose_audit_record_cannot_be_written_returns_no_value() {
    let s = TestServer::start_on(Backend::Sqlite).await;
    let token = s.admin_token().await;
    let id = create(&s, &token, "cache/closed", "must-not-leak").await;
    assert_eq!(read(&s, &token, "cache/closed").await.json["value"], "must-not-leak");
    let nexus_kernel::db::Db::Sqlite(pool) = &s.kernel().db else { panic!("not SQLite") };
    let block = "CREATE TRIGGER block_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'audit down'); END";
    sqlx::query(block).execute(pool).await.unwrap_or_else(|e| panic!("{e}"));
    let r = read(&s, &token, "cache/closed").await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(!r.text.contains("must-not-leak"));
    sqlx::query("DROP TRIGGER block_audit").execute(pool).await.unwrap_or_else(|e| panic!("{e}"));
    let r = read(&s, &token, "cache/closed").await;
    assert_eq!((r.json["value"].as_str(), r.json["id"].as_str()), (Some("must-not-leak"), Some(id.as_str())));
    assert_eq!(reads_audited(&s, &token, "cache/closed").await, 2);
}
