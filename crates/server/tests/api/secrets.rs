//! The secrets manager (`seeds/secrets-manager-api.md`): the seed's workflows on every backend,
//! path rules, versions and check-and-set, policies, encryption at rest, master keys, audit.

use nexus_testkit::reqwest::Method;
use nexus_testkit::{ADMIN_PASSWORD, Backend, Reply, TestServer, backends, json};
use serde_json::Value;

const KEY_A: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const KEY_B: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

/// Logs in through the secrets surface, as the seed does; returns (token, user id).
async fn v1_login(s: &TestServer) -> (String, String) {
    let r = s.post("/api/v1/auth/login", json!({"username": "admin", "password": ADMIN_PASSWORD})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let text = |ptr: &str| r.json.pointer(ptr).and_then(Value::as_str).unwrap_or_default().to_string();
    (text("/token"), text("/user/id"))
}

async fn put(s: &TestServer, token: &str, path: &str, body: Value) -> Reply {
    s.call_as(token, Method::PUT, path, Some(body)).await
}

async fn delete(s: &TestServer, token: &str, path: &str) -> Reply {
    s.call_as(token, Method::DELETE, path, None).await
}

fn assert_v1_error(r: &Reply, status: u16, error: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.json.get("error").and_then(Value::as_str), Some(error), "{}", r.text);
    assert!(r.json.get("message").is_some_and(Value::is_string), "{}", r.text);
}

async fn create(s: &TestServer, token: &str, path: &str, value: &str) -> Reply {
    let r = s.post_as(token, "/api/v1/secrets", json!({"path": path, "value": value})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r
}

#[tokio::test]
async fn seed_complete_workflow_on_every_backend() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let (token, admin_id) = v1_login(&s).await;

        // 2. Create
        let body = json!({"path": "myapp/database/password", "value": "db-password-123",
            "metadata": {"environment": "production"}});
        let r = s.post_as(&token, "/api/v1/secrets", body.clone()).await;
        assert_eq!(r.status, 201, "{backend:?}: {}", r.text);
        let id = r.json["id"].as_str().unwrap_or_default().to_string();
        assert_eq!(id.len(), 36);
        assert_eq!(r.json["path"], "myapp/database/password");
        assert_eq!(r.json["metadata"], json!({"environment": "production"}));
        assert_eq!(r.json["version"], 1);
        assert_eq!(r.json["created_by"], admin_id.as_str());
        assert_eq!(r.json["updated_by"], admin_id.as_str());
        for f in ["created_at", "updated_at"] {
            assert!(r.json[f].as_str().is_some_and(|t| t.ends_with('Z')), "{f}: {}", r.text);
        }
        assert!(r.json.get("value").is_none(), "create must not echo the value");
        let dup = s.post_as(&token, "/api/v1/secrets", body).await;
        assert_v1_error(&dup, 409, "Conflict");
        assert_eq!(dup.json["message"], "secret already exists");

        // 3. Read
        let r = s.get_as(&token, "/api/v1/secrets/myapp/database/password").await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["value"], "db-password-123");
        assert_eq!(r.json["id"], id.as_str());
        assert_eq!(r.json["version"], 1);
        assert_eq!(r.json["metadata"]["environment"], "production");

        // 4. Update: a new version; metadata kept when not given
        let r =
            put(&s, &token, "/api/v1/secrets/myapp/database/password", json!({"value": "new-db-password-456"})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["version"], 2);
        assert_eq!(r.json["metadata"]["environment"], "production");
        assert!(r.json.get("value").is_none());
        let r = s.get_as(&token, "/api/v1/secrets/myapp/database/password").await;
        assert_eq!(r.json["value"], "new-db-password-456");
        assert_eq!(r.json["version"], 2);
        // metadata only: value unchanged, still a new version
        let r = put(
            &s,
            &token,
            "/api/v1/secrets/myapp/database/password",
            json!({"metadata": {"description": "Updated", "rotated": "2025-12-04"}}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["version"], 3);
        assert_eq!(r.json["metadata"], json!({"description": "Updated", "rotated": "2025-12-04"}));
        let r = s.get_as(&token, "/api/v1/secrets/myapp/database/password").await;
        assert_eq!(r.json["value"], "new-db-password-456");

        // 5. Versions
        let r = s.get_as(&token, "/api/v1/secrets/myapp/database/password/versions").await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["total"], 3);
        let versions = r.json["versions"].as_array().cloned().unwrap_or_default();
        let numbers: Vec<i64> = versions.iter().filter_map(|v| v["version"].as_i64()).collect();
        assert_eq!(numbers, vec![3, 2, 1]);
        for v in &versions {
            assert_eq!(v["secret_id"], id.as_str());
            assert_eq!(v["created_by"], admin_id.as_str());
            assert!(v["id"].is_string() && v["created_at"].is_string());
            assert!(v.get("value").is_none() && !r.text.contains("db-password"));
        }

        // 6. List, with and without prefix; never values
        create(&s, &token, "prod/api/key", "k-1").await;
        let r = s.get_as(&token, "/api/v1/secrets").await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["total"], 2);
        assert!(!r.text.contains("new-db-password-456") && !r.text.contains("k-1"));
        assert!(r.json["secrets"].as_array().is_some_and(|a| a.iter().all(|s| s.get("value").is_none())));
        let r = s.get_as(&token, "/api/v1/secrets?prefix=prod/").await;
        assert_eq!(r.json["total"], 1, "{}", r.text);
        assert_eq!(r.json["secrets"][0]["path"], "prod/api/key");
        assert_eq!(r.json["secrets"][0]["metadata"], json!({}));

        // 7. Delete
        let r = delete(&s, &token, "/api/v1/secrets/myapp/database/password").await;
        assert_eq!(r.status, 204, "{}", r.text);
        assert!(r.text.is_empty());
        let r = s.get_as(&token, "/api/v1/secrets/myapp/database/password").await;
        assert_v1_error(&r, 404, "Not Found");
        assert_eq!(r.json["message"], "secret not found");
        let r = delete(&s, &token, "/api/v1/secrets/myapp/database/password").await;
        assert_eq!(r.json["message"], "secret not found");
        assert_eq!(r.status, 404);
        let r = put(&s, &token, "/api/v1/secrets/myapp/database/password", json!({"value": "x"})).await;
        assert_eq!(r.status, 404);
        let r = s.get_as(&token, "/api/v1/secrets/myapp/database/password/versions").await;
        assert_eq!(r.status, 404);
        // The path is free again.
        create(&s, &token, "myapp/database/password", "again").await;

        // Unauthenticated calls are 401 in the v1 dialect.
        let r = s.get("/api/v1/secrets").await;
        assert_v1_error(&r, 401, "Unauthorized");
        // ...before anything about the request is judged.
        let r = s.post("/api/v1/secrets", json!({"nonsense": true})).await;
        assert_v1_error(&r, 401, "Unauthorized");
        let r = s.get("/api/v1/secrets/a/b?version=abc").await;
        assert_eq!(r.status, 401);
    }
}

#[tokio::test]
async fn seed_api_key_workflow_on_every_backend() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let (token, _) = v1_login(&s).await;
        create(&s, &token, "svc/token", "tok-123").await;
        let r = s.post_as(&token, "/api/v1/apikeys", json!({"name": "My Service"})).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let key = r.json["key"].as_str().unwrap_or_default().to_string();
        assert!(key.starts_with("nx_"));
        let with_key = |method: Method, path: &str, body: Option<Value>| {
            let key = key.clone();
            let path = path.to_string();
            let s = &s;
            async move { s.call(method, &path, body, &[("X-Nexus-API-Key", key.as_str())]).await }
        };
        let r = with_key(Method::GET, "/api/v1/secrets", None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["total"], 1);
        let r = with_key(Method::GET, "/api/v1/secrets/svc/token", None).await;
        assert_eq!(r.json["value"], "tok-123", "{}", r.text);
        let r = with_key(Method::POST, "/api/v1/secrets", Some(json!({"path": "svc/other", "value": "v"}))).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = s.get_as(&token, "/api/v1/apikeys").await;
        assert_eq!(r.json["total"], 1, "{}", r.text);
        assert_eq!(r.json["keys"][0]["name"], "My Service");
        assert!(!r.text.contains(&key));
    }
}

#[tokio::test]
async fn audit_records_every_action_and_filters_on_every_backend() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let (token, admin_id) = v1_login(&s).await;
        let ua = [("Authorization", format!("Bearer {token}")), ("User-Agent", "nexusctl/1.0.0".into())];
        let headers: Vec<(&str, &str)> = ua.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let body = json!({"path": "prod/database/password", "value": "pw"});
        let r = s.call(Method::POST, "/api/v1/secrets", Some(body), &headers).await;
        assert_eq!(r.status, 201);
        let secret_id = r.json["id"].as_str().unwrap_or_default().to_string();
        let r = s.call(Method::GET, "/api/v1/secrets/prod/database/password", None, &headers).await;
        assert_eq!(r.status, 200);
        let r = s.call(Method::GET, "/api/v1/secrets/prod/nothing", None, &headers).await;
        assert_eq!(r.status, 404);
        s.call(Method::PUT, "/api/v1/secrets/prod/database/password", Some(json!({"value": "pw2"})), &headers).await;
        s.call(Method::GET, "/api/v1/secrets/prod/database/password/versions", None, &headers).await;
        s.call(Method::GET, "/api/v1/secrets", None, &headers).await;
        s.get("/api/v1/secrets/prod/database/password").await; // unauthenticated
        s.call(Method::DELETE, "/api/v1/secrets/prod/database/password", None, &headers).await;

        let r = s.get_as(&token, "/api/v1/audit").await;
        assert_eq!(r.status, 200, "{}", r.text);
        let logs = r.json["logs"].as_array().cloned().unwrap_or_default();
        assert_eq!(r.json["total"].as_u64(), Some(logs.len() as u64));
        let actions: Vec<&str> = logs.iter().filter_map(|l| l["action"].as_str()).collect();
        for a in [
            "auth.login",
            "secret.create",
            "secret.read",
            "secret.update",
            "secret.versions",
            "secret.list",
            "secret.delete",
        ] {
            assert!(actions.contains(&a), "{a} missing from {actions:?}");
        }
        assert!(!r.text.contains("\"pw\"") && !r.text.contains("pw2"), "values never reach the audit log");

        let r = s.get_as(&token, &format!("/api/v1/audit?user={admin_id}&action=secret.read&limit=50")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["total"], 2, "{}", r.text);
        let newest = &r.json["logs"][0];
        assert_eq!(newest["success"], false, "the 404 read is recorded as failed: {}", r.text);
        let ok = &r.json["logs"][1];
        assert_eq!(ok["success"], true);
        assert_eq!(ok["user"], admin_id.as_str());
        assert_eq!(ok["secret_id"], secret_id.as_str());
        assert_eq!(ok["secret_path"], "prod/database/password");
        assert_eq!(ok["ip_address"], "127.0.0.1");
        assert_eq!(ok["user_agent"], "nexusctl/1.0.0");
        assert!(ok["metadata"].is_object() && ok["timestamp"].is_string() && ok["id"].is_string());

        let r = s.get_as(&token, "/api/v1/audit?secret_path=prod/database/password").await;
        let n = r.json["total"].as_i64().unwrap_or(0);
        assert!(n >= 6, "{}", r.text);
        assert!(
            r.json["logs"].as_array().is_some_and(|l| l.iter().all(|e| e["secret_path"] == "prod/database/password"))
        );
        let anon = r.json["logs"].as_array().map(|l| l.iter().filter(|e| e["user"] == "anonymous").count());
        assert_eq!(anon, Some(1), "the unauthenticated read is recorded: {}", r.text);

        let r = s.get_as(&token, "/api/v1/audit?secret_path=prod/database/password&limit=2&offset=1").await;
        assert_eq!(r.json["logs"].as_array().map(Vec::len), Some(2));
        assert_eq!(r.json["total"], n, "total counts every match, not the page");

        let r = s.get_as(&token, "/api/v1/audit?action=auth.login&start_time=2025-12-03T00:00:00Z").await;
        assert!(r.json["total"].as_i64().unwrap_or(0) >= 1, "{}", r.text);
        let r = s.get_as(&token, "/api/v1/audit?start_time=2999-01-01T00:00:00Z").await;
        assert_eq!(r.json["total"], 0);
        let r = s.get_as(&token, "/api/v1/audit?end_time=2000-01-01T00:00:00Z").await;
        assert_eq!(r.json["total"], 0);
        let r = s.get_as(&token, "/api/v1/audit?start_time=yesterday").await;
        assert_v1_error(&r, 400, "Bad Request");
        let r = s.get_as(&token, "/api/v1/audit?limit=-1").await;
        assert_eq!(r.status, 400);
    }
}

#[tokio::test]
async fn audit_is_admin_only() {
    let s = TestServer::start().await;
    let user = s.user_token("alice", &["user"]).await;
    let r = s.get_as(&user, "/api/v1/audit").await;
    assert_v1_error(&r, 403, "Forbidden");
    assert_eq!(r.json["message"], "admin access required");
    let admin = s.admin_token().await;
    let r = s.get_as(&admin, "/api/v1/audit?action=audit.list").await;
    assert!(r.json["logs"].as_array().is_some_and(|l| l.iter().any(|e| e["success"] == false)), "{}", r.text);
}

#[tokio::test]
async fn path_rules_are_enforced_with_400() {
    let s = TestServer::start().await;
    let token = s.admin_token().await;
    let long = "a".repeat(600);
    for bad in ["", "/lead", "trail/", "a//b", "a/../b", "..", "a/./b", "sp ace", "a/versions", "ü", long.as_str()] {
        let r = s.post_as(&token, "/api/v1/secrets", json!({"path": bad, "value": "v"})).await;
        assert_v1_error(&r, 400, "Bad Request");
        assert!(r.json["message"].as_str().is_some_and(|m| m.contains("path")), "{bad}: {}", r.text);
    }
    // Dot segments sent raw (an HTTP client library would normalise them away).
    for raw in ["/api/v1/secrets/a/../b", "/api/v1/secrets/a/%2E%2E/b", "/api/v1/secrets/./a"] {
        let status = raw_get(&s, raw, &token).await;
        assert_eq!(status, 400, "{raw}");
    }
    for url in ["/api/v1/secrets/a//b", "/api/v1/secrets/a%20b", "/api/v1/secrets/x/"] {
        let r = s.get_as(&token, url).await;
        assert_eq!(r.status, 400, "{url}: {}", r.text);
        let r = put(&s, &token, url, json!({"value": "v"})).await;
        assert_eq!(r.status, 400, "{url}: {}", r.text);
        let r = delete(&s, &token, url).await;
        assert_eq!(r.status, 400, "{url}: {}", r.text);
    }
    // Good paths, including dots and a segment named `versions` before the last.
    for good in ["a", "A-b_c.d/e", "versions/x", "x/.hidden", "deep/a/b/c/d/e/f"] {
        create(&s, &token, good, "v").await;
        let r = s.get_as(&token, &format!("/api/v1/secrets/{good}")).await;
        assert_eq!(r.json["value"], "v", "{good}: {}", r.text);
    }
    // Other bad bodies.
    let r = s.post_as(&token, "/api/v1/secrets", json!({"path": "m/x", "value": "v", "metadata": [1]})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = s.post_as(&token, "/api/v1/secrets", json!({"path": "m/y"})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = put(&s, &token, "/api/v1/secrets/a", json!({})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = s.get_as(&token, "/api/v1/secrets?prefix=%00").await;
    assert_eq!(r.status, 400, "{}", r.text);
}

/// Sends `GET target` as written, without any client-side normalisation; returns the status.
async fn raw_get(s: &TestServer, target: &str, token: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.url("").trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap_or_else(|e| panic!("{e}"));
    let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
    let mut buf = Vec::new();
    let _ = conn.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn cas_conflicts_and_older_versions_are_readable() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let token = s.admin_token().await;
        create(&s, &token, "app/key", "one").await;
        let r = put(&s, &token, "/api/v1/secrets/app/key", json!({"value": "two", "cas": 1})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["version"], 2);
        let r = put(&s, &token, "/api/v1/secrets/app/key", json!({"value": "three", "cas": 1})).await;
        assert_v1_error(&r, 409, "Conflict");
        assert_eq!(r.json["current_version"], 2, "{}", r.text);
        let r = s.get_as(&token, "/api/v1/secrets/app/key").await;
        assert_eq!(r.json["value"], "two");
        // A value is neither cacheable nor tagged with a digest of itself.
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.header("etag"), None);

        let r = s.get_as(&token, "/api/v1/secrets/app/key?version=1").await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["value"], "one");
        assert_eq!(r.json["version"], 1);
        let r = s.get_as(&token, "/api/v1/secrets/app/key?version=9").await;
        assert_v1_error(&r, 404, "Not Found");
        assert_eq!(r.json["message"], "secret version not found");
        let r = s.get_as(&token, "/api/v1/secrets/app/key?version=0").await;
        assert_eq!(r.status, 400);
        let r = s.get_as(&token, "/api/v1/secrets/app/key?version=abc").await;
        assert_eq!(r.status, 400);

        // Concurrent writers without cas all land, each as its own version.
        let mut writes = Vec::new();
        for i in 0..8 {
            let req = s
                .client
                .put(s.url("/api/v1/secrets/app/key"))
                .bearer_auth(&token)
                .json(&json!({"value": format!("v{i}")}));
            writes.push(tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }));
        }
        let mut statuses = Vec::new();
        for w in writes {
            statuses.push(w.await.unwrap_or(0));
        }
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        let r = s.get_as(&token, "/api/v1/secrets/app/key/versions").await;
        assert_eq!(r.json["total"], 10, "{}", r.text);
    }
}

#[tokio::test]
async fn path_policies_limit_a_role_to_a_prefix() {
    for backend in backends() {
        let s = TestServer::start_with(backend, |c| {
            c.auth.roles.insert("dba".into(), vec!["secret.read".into(), "secret.write".into()]);
            c.secrets.policies.insert("dba".into(), vec!["prod/database/*".into()]);
        })
        .await;
        let admin = s.admin_token().await;
        create(&s, &admin, "prod/database/password", "db").await;
        create(&s, &admin, "prod/api/key", "api").await;
        let dba = s.user_token("dba1", &["dba"]).await;
        let r = s.get_as(&dba, "/api/v1/secrets/prod/database/password").await;
        assert_eq!(r.json["value"], "db", "{}", r.text);
        let r = s.post_as(&dba, "/api/v1/secrets", json!({"path": "prod/database/replica", "value": "r"})).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = s.get_as(&dba, "/api/v1/secrets/prod/api/key").await;
        assert_v1_error(&r, 403, "Forbidden");
        assert!(!r.text.contains("api\""));
        let r = s.post_as(&dba, "/api/v1/secrets", json!({"path": "prod/api/other", "value": "x"})).await;
        assert_eq!(r.status, 403, "{}", r.text);
        let r = put(&s, &dba, "/api/v1/secrets/prod/api/key", json!({"value": "x"})).await;
        assert_eq!(r.status, 403, "{}", r.text);
        let r = delete(&s, &dba, "/api/v1/secrets/prod/database/replica").await;
        assert_eq!(r.status, 403, "dba has no secret.delete: {}", r.text);
        let r = s.get_as(&dba, "/api/v1/secrets").await;
        let paths: Vec<&str> = r.json["secrets"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s["path"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(paths, vec!["prod/database/password", "prod/database/replica"], "{}", r.text);
        // A role without the permission at all.
        let viewer = s.user_token("viewer1", &["viewer"]).await;
        let r = s.get_as(&viewer, "/api/v1/secrets/prod/database/password").await;
        assert_eq!(r.status, 403, "{}", r.text);
        // Denials are audited as failures.
        let r = s.get_as(&admin, "/api/v1/audit?secret_path=prod/api/key&action=secret.read").await;
        assert_eq!(r.json["logs"][0]["success"], false, "{}", r.text);
    }
}

/// Runs a statement on the test server's own database.
async fn exec(s: &TestServer, sql: &str, bytes: Vec<u8>, id: &str) {
    match &s.kernel().db {
        nexus_kernel::db::Db::Sqlite(pool) => {
            sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .bind(bytes)
                .bind(id)
                .execute(pool)
                .await
                .map(|_| ())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        nexus_kernel::db::Db::Postgres(pool) => {
            sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .bind(bytes)
                .bind(id)
                .execute(pool)
                .await
                .map(|_| ())
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

async fn ciphertext(s: &TestServer, secret_id: &str, version: i64) -> Vec<u8> {
    let sql = "SELECT ciphertext FROM secret_versions WHERE secret_id = $1 AND version = $2";
    match &s.kernel().db {
        nexus_kernel::db::Db::Sqlite(pool) => {
            sqlx::query_scalar(sql).bind(secret_id).bind(version).fetch_one(pool).await
        }
        nexus_kernel::db::Db::Postgres(pool) => {
            sqlx::query_scalar(sql).bind(secret_id).bind(version).fetch_one(pool).await
        }
    }
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn tampered_or_moved_ciphertext_is_detected() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let token = s.admin_token().await;
        let id = create(&s, &token, "t/one", "first").await.json["id"].as_str().unwrap_or_default().to_string();
        put(&s, &token, "/api/v1/secrets/t/one", json!({"value": "second"})).await;
        // Flip one bit of the current version.
        let mut c2 = ciphertext(&s, &id, 2).await;
        if let Some(b) = c2.get_mut(20) {
            *b ^= 0x01;
        }
        exec(&s, "UPDATE secret_versions SET ciphertext = $1 WHERE secret_id = $2 AND version = 2", c2, &id).await;
        let r = s.get_as(&token, "/api/v1/secrets/t/one").await;
        assert_v1_error(&r, 409, "Conflict");
        assert!(r.json["message"].as_str().is_some_and(|m| m.contains("integrity")), "{}", r.text);
        assert!(!r.text.contains("second") && !r.text.contains("first"));
        // Version 1 is untouched.
        let r = s.get_as(&token, "/api/v1/secrets/t/one?version=1").await;
        assert_eq!(r.json["value"], "first");
        // Version 1's ciphertext moved into version 2's row fails too (version bound as AAD)...
        let c1 = ciphertext(&s, &id, 1).await;
        exec(&s, "UPDATE secret_versions SET ciphertext = $1 WHERE secret_id = $2 AND version = 2", c1.clone(), &id)
            .await;
        let r = s.get_as(&token, "/api/v1/secrets/t/one").await;
        assert_eq!(r.status, 409, "{}", r.text);
        // ...and so does it moved into another secret (id bound as AAD).
        let other = create(&s, &token, "t/two", "other").await.json["id"].as_str().unwrap_or_default().to_string();
        exec(&s, "UPDATE secret_versions SET ciphertext = $1 WHERE secret_id = $2 AND version = 1", c1, &other).await;
        let r = s.get_as(&token, "/api/v1/secrets/t/two").await;
        assert_eq!(r.status, 409, "{}", r.text);
        // The failure is audited.
        let r = s.get_as(&token, "/api/v1/audit?secret_path=t/two&action=secret.read").await;
        assert_eq!(r.json["logs"][0]["success"], false, "{}", r.text);
    }
}

#[tokio::test]
async fn restart_with_the_same_master_key_reads_everything_back() {
    for backend in backends() {
        for configured in [false, true] {
            let mut s = TestServer::start_with(backend, |c| {
                if configured {
                    c.secrets.master_key = Some(KEY_A.into());
                }
            })
            .await;
            let token = s.admin_token().await;
            for i in 0..5 {
                create(&s, &token, &format!("r/{i}"), &format!("value-{i}")).await;
            }
            put(&s, &token, "/api/v1/secrets/r/0", json!({"value": "value-0b"})).await;
            let key_file = s.config.data_dir.join("master.key");
            assert_eq!(key_file.is_file(), !configured, "a key file only without NEXUS_MASTER_KEY");
            #[cfg(unix)]
            if !configured {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&key_file).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
                assert_eq!(mode, 0o600);
            }
            s.restart().await;
            let token = s.admin_token().await;
            for i in 1..5 {
                let r = s.get_as(&token, &format!("/api/v1/secrets/r/{i}")).await;
                assert_eq!(r.json["value"], format!("value-{i}"), "{backend:?}: {}", r.text);
            }
            assert_eq!(s.get_as(&token, "/api/v1/secrets/r/0").await.json["value"], "value-0b");
            assert_eq!(s.get_as(&token, "/api/v1/secrets/r/0?version=1").await.json["value"], "value-0");
        }
    }
}

#[tokio::test]
async fn a_wrong_master_key_refuses_to_start() {
    for backend in backends() {
        let s = TestServer::start_with(backend, |c| c.secrets.master_key = Some(KEY_A.into())).await;
        let token = s.admin_token().await;
        create(&s, &token, "w/x", "v").await;
        let mut wrong = s.config.clone();
        wrong.server.port = 0;
        wrong.secrets.master_key = Some(KEY_B.into());
        let err = nexus::start(wrong.clone()).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("master key does not match"), "{backend:?}: {err}");
        assert!(!err.contains(KEY_B) && !err.contains(KEY_A));
        wrong.secrets.master_key = Some("not base64".into());
        let err = nexus::start(wrong.clone()).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("NEXUS_MASTER_KEY"), "{err}");
        // Without any key, and without a key file, it refuses too.
        wrong.secrets.master_key = None;
        let err = nexus::start(wrong).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("no master key"), "{err}");
    }
    // A key file replaced by another key.
    let mut s = TestServer::start().await;
    let token = s.admin_token().await;
    create(&s, &token, "f/x", "v").await;
    let file = s.config.data_dir.join("master.key");
    std::fs::write(&file, format!("{KEY_B}\n")).unwrap_or_else(|e| panic!("{e}"));
    let mut wrong = s.config.clone();
    wrong.server.port = 0;
    let err = nexus::start(wrong).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("master key does not match"), "{err}");
    let _ = &mut s;
}

#[tokio::test]
async fn values_never_reach_the_database_file_in_plaintext() {
    let s = TestServer::start_on(Backend::Sqlite).await;
    let token = s.admin_token().await;
    let value = "correct-horse-battery-staple-7f3kq9";
    create(&s, &token, "plain/check", value).await;
    put(&s, &token, "/api/v1/secrets/plain/check", json!({"metadata": {"a": "b"}})).await;
    let r = s.get_as(&token, "/api/v1/secrets/plain/check").await;
    assert_eq!(r.json["value"], value);
    let mut found = Vec::new();
    for name in ["nexus.db", "nexus.db-wal", "nexus.db-shm"] {
        let bytes = std::fs::read(s.config.data_dir.join(name)).unwrap_or_default();
        if bytes.windows(value.len()).any(|w| w == value.as_bytes()) {
            found.push(name);
        }
    }
    assert!(found.is_empty(), "plaintext found in {found:?}");
}

#[tokio::test]
async fn a_read_whose_audit_record_cannot_be_written_returns_no_value() {
    let s = TestServer::start_on(Backend::Sqlite).await;
    let token = s.admin_token().await;
    create(&s, &token, "fc/x", "must-not-leak").await;
    let block = "CREATE TRIGGER block_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'audit down'); END";
    if let nexus_kernel::db::Db::Sqlite(pool) = &s.kernel().db {
        sqlx::query(block).execute(pool).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let r = s.get_as(&token, "/api/v1/secrets/fc/x").await;
    assert_v1_error(&r, 503, "Service Unavailable");
    assert!(!r.text.contains("must-not-leak"));
    if let nexus_kernel::db::Db::Sqlite(pool) = &s.kernel().db {
        sqlx::query("DROP TRIGGER block_audit").execute(pool).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let r = s.get_as(&token, "/api/v1/secrets/fc/x").await;
    assert_eq!(r.json["value"], "must-not-leak");
}

#[tokio::test]
async fn events_announce_changes_without_values() {
    let s = TestServer::start().await;
    let mut rx = s.kernel().events.subscribe();
    let token = s.admin_token().await;
    create(&s, &token, "ev/x", "event-secret").await;
    put(&s, &token, "/api/v1/secrets/ev/x", json!({"value": "event-secret-2"})).await;
    delete(&s, &token, "/api/v1/secrets/ev/x").await;
    // Events come from the outbox once their change commits: promptly, not synchronously.
    let mut kinds = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while kinds.len() < 3 {
        let Ok(Ok(e)) = tokio::time::timeout_at(deadline, rx.recv()).await else { break };
        if e.source == "secrets" {
            assert!(!e.data.to_string().contains("event-secret"));
            assert_eq!(e.data["path"], "ev/x");
            kinds.push(e.kind.clone());
        }
    }
    assert_eq!(kinds, vec!["secret.created", "secret.updated", "secret.deleted"]);
}

#[tokio::test]
async fn rotate_master_key_rewraps_every_data_key() {
    let mut s = TestServer::start_on(Backend::Sqlite).await;
    let token = s.admin_token().await;
    for i in 0..30 {
        create(&s, &token, &format!("rot/{i}"), &format!("rv-{i}")).await;
    }
    let old_key = std::fs::read_to_string(s.config.data_dir.join("master.key")).unwrap_or_default();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nexus"));
    for (k, _) in std::env::vars() {
        if k.starts_with("NEXUS_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["secrets", "rotate-master-key", "--data-dir", &s.config.data_dir.to_string_lossy()]);
    // Off this runtime: it also runs the server, whose outbox relay may be inside a transaction
    // the command has to wait for.
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("30 data keys re-wrapped"), "{stdout}");
    let new_key = std::fs::read_to_string(s.config.data_dir.join("master.key")).unwrap_or_default();
    assert_ne!(old_key.trim(), new_key.trim());
    assert!(!s.config.data_dir.join("master.key.new").exists());
    s.restart().await;
    let token = s.admin_token().await;
    for i in 0..30 {
        let r = s.get_as(&token, &format!("/api/v1/secrets/rot/{i}")).await;
        assert_eq!(r.json["value"], format!("rv-{i}"), "{}", r.text);
    }
    // The old key no longer opens this database.
    let mut wrong = s.config.clone();
    wrong.server.port = 0;
    wrong.secrets.master_key = Some(old_key.trim().to_string());
    let err = nexus::start(wrong).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("retired"), "{err}");
}

#[tokio::test]
async fn the_binary_refuses_a_wrong_nexus_master_key_with_one_clear_line() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.secrets.master_key = Some(KEY_A.into())).await;
    let token = s.admin_token().await;
    create(&s, &token, "bin/x", "v").await;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nexus"));
    for (k, _) in std::env::vars() {
        if k.starts_with("NEXUS_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["--data-dir", &s.config.data_dir.to_string_lossy(), "--port", "0"])
        .env("NEXUS_MASTER_KEY", KEY_B)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{e}"));
    // Off this runtime, which also runs the server the command shares the database with.
    let out = tokio::task::spawn_blocking(move || crate::output_within(child, std::time::Duration::from_secs(20)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("master key does not match"), "{err}");
    assert!(!err.contains(KEY_A) && !err.contains(KEY_B));
}
