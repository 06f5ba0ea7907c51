//! API conventions end to end: rate limits, versions, list pagination / filters / sorting /
//! field selection, batch requests and ETags.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nexus_testkit::reqwest::Method;
use nexus_testkit::{Backend, Reply, TestServer, backends, json, redis_url};
use serde_json::Value;

fn num(r: &Reply, header: &str) -> i64 {
    r.header(header).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no numeric {header}: {:?}", r.headers))
}

/// Creates a user as `admin` and returns its id.
async fn create_user(s: &TestServer, admin: &str, username: &str, full_name: &str, roles: &[&str]) -> String {
    let body = json!({
        "username": username,
        "email": format!("{username}@example.com"),
        "password": "user-Pass1",
        "full_name": full_name,
        "roles": roles,
    });
    let r = s.post_as(admin, "/api/users", body).await;
    assert_eq!(r.status, 201, "creating {username}: {}", r.text);
    r.json.get("id").and_then(Value::as_str).unwrap_or_default().to_string()
}

fn usernames(r: &Reply) -> Vec<String> {
    r.json
        .get("users")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no users in {}", r.text))
        .iter()
        .map(|u| u["username"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn rate_limit_headers_count_down_to_429_and_recover_after_the_window() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.rate_limits.limit = 3;
        c.rate_limits.window_secs = 2;
        // One class for every surface, so that they share the counter.
        c.rate_limits.classes.clear();
    })
    .await;
    crate::fresh_window(&s, 2);
    for expected_remaining in [2, 1, 0] {
        let r = s.get("/api/versions").await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(num(&r, "x-ratelimit-limit"), 3);
        assert_eq!(num(&r, "x-ratelimit-remaining"), expected_remaining);
        assert_eq!(num(&r, "x-ratelimit-window"), 2);
        let reset_after = num(&r, "x-ratelimit-reset-after");
        assert!((1..=2).contains(&reset_after), "reset-after {reset_after}");
        // The reset is an instant on the server's clock, which this test moved.
        let now = s.kernel().clock.unix_seconds();
        assert!((now..=now + 3).contains(&num(&r, "x-ratelimit-reset")));
    }
    let r = s.get("/api/versions").await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(r.json["error"]["limit"], 3);
    assert_eq!(r.json["error"]["window"], "2s");
    let retry_after = num(&r, "retry-after");
    assert_eq!(r.json["error"]["retry_after"], retry_after);
    assert_eq!(num(&r, "x-ratelimit-remaining"), 0);
    assert!(r.json["error"]["request_id"].is_string());

    // Every limited surface shares the counter per client, in its own dialect.
    let r = s.get("/api/v1/status").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json["success"], false);
    assert_eq!(r.json["code"], "RATE_LIMIT_EXCEEDED");
    // Health probes are never limited.
    assert_eq!(s.get("/health").await.status, 200);

    s.kernel().clock.advance(Duration::from_secs(u64::try_from(retry_after).unwrap_or(2)));
    let r = s.get("/api/versions").await;
    assert_eq!(r.status, 200, "after the window: {}", r.text);
    assert_eq!(num(&r, "x-ratelimit-remaining"), 2);
}

#[tokio::test]
async fn limits_are_per_identity_and_premium_keys_get_the_premium_tier() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.rate_limits.limit = 50;
        c.rate_limits.premium_multiplier = 10;
    })
    .await;
    let admin = s.admin_token().await;
    let r = s.get_as(&admin, "/api/users").await;
    assert_eq!(r.status, 200);
    assert_eq!(num(&r, "x-ratelimit-limit"), 50);
    let admin_remaining = num(&r, "x-ratelimit-remaining");
    // Anonymous callers count against their IP, apart from the admin's identity.
    let anon = s.get("/api/versions").await;
    assert_eq!(num(&anon, "x-ratelimit-remaining"), 49);
    assert_eq!(num(&s.get_as(&admin, "/api/versions").await, "x-ratelimit-remaining"), admin_remaining - 1);

    let premium = s.post_as(&admin, "/api/auth/api-keys", json!({"name": "p", "premium": true})).await;
    assert_eq!(premium.status, 201, "{}", premium.text);
    let standard = s.post_as(&admin, "/api/auth/api-keys", json!({"name": "s"})).await;
    let premium_key = premium.json["key"].as_str().unwrap_or_default();
    let standard_key = standard.json["key"].as_str().unwrap_or_default();

    let tier = [("X-API-Key", premium_key), ("X-Rate-Limit-Tier", "premium")];
    let r = s.call(Method::GET, "/api/users", None, &tier).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(num(&r, "x-ratelimit-limit"), 500);
    assert_eq!(r.header("x-ratelimit-tier"), Some("premium"));
    // Each key is an identity of its own.
    assert_eq!(num(&r, "x-ratelimit-remaining"), 499);

    let tier = [("X-API-Key", standard_key), ("X-Rate-Limit-Tier", "premium")];
    let r = s.call(Method::GET, "/api/users", None, &tier).await;
    assert_eq!(num(&r, "x-ratelimit-limit"), 50, "the tier header is honoured only for premium keys");
    assert_eq!(r.header("x-ratelimit-tier"), Some("standard"));

    // Login has its class (10 per minute by default) and its headers.
    let r = s.post("/api/auth/login", json!({"username": "admin", "password": "wrong"})).await;
    assert_eq!(num(&r, "x-ratelimit-limit"), 10);
    assert_eq!(num(&r, "x-ratelimit-window"), 60);
}

#[tokio::test]
async fn two_instances_share_one_redis_limit() {
    let Some(url) = redis_url() else {
        eprintln!("NEXUS_TEST_REDIS_URL is not set; skipping");
        return;
    };
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    let prefix = format!("nexus:test:rl:{nanos}:{}:", std::process::id());
    let configure = |c: &mut nexus_kernel::config::Config| {
        c.redis.url = Some(url.clone());
        c.rate_limits.redis_prefix = Some(prefix.clone());
        c.rate_limits.limit = 4;
        c.rate_limits.window_secs = 3600;
    };
    let a = TestServer::start_with(Backend::Sqlite, configure).await;
    let b = TestServer::start_with(Backend::Sqlite, configure).await;
    let mut remaining = Vec::new();
    for server in [&a, &b, &a, &b] {
        let r = server.get("/api/versions").await;
        assert_eq!(r.status, 200, "{}", r.text);
        remaining.push(num(&r, "x-ratelimit-remaining"));
    }
    assert_eq!(remaining, vec![3, 2, 1, 0]);
    assert_eq!(a.get("/api/versions").await.status, 429);
    assert_eq!(b.get("/api/versions").await.status, 429);
}

#[tokio::test]
async fn offset_pages_carry_every_pagination_field() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let admin = s.admin_token().await;
        for i in 0..25 {
            create_user(&s, &admin, &format!("pg_{i:02}"), "Page Tester", &["user"]).await;
        }
        let base = "/api/users?filter[username][$like]=pg_*&sort=username&limit=10";
        let expect = [(1, 10, true, false), (2, 10, true, true), (3, 5, false, true)];
        for (page, count, has_next, has_prev) in expect {
            let r = s.get_as(&admin, &format!("{base}&page={page}")).await;
            assert_eq!(r.status, 200, "{backend:?}: {}", r.text);
            let p = &r.json["pagination"];
            assert_eq!(p["page"], page, "{backend:?}");
            assert_eq!(p["limit"], 10);
            assert_eq!(p["total"], 25);
            assert_eq!(p["total_pages"], 3);
            assert_eq!(p["has_next"], has_next, "{backend:?} page {page}");
            assert_eq!(p["has_prev"], has_prev, "{backend:?} page {page}");
            // The seed's own fields stay.
            assert_eq!(r.json["total"], 25);
            assert_eq!(r.json["page"], page);
            assert_eq!(r.json["limit"], 10);
            let names = usernames(&r);
            assert_eq!(names.len(), count);
            assert_eq!(names.first().map(String::as_str), Some(format!("pg_{:02}", (page - 1) * 10).as_str()));
        }
        // Limits: capped at the maximum; negative, zero or non-numeric are refused.
        let r = s.get_as(&admin, "/api/users?limit=500").await;
        assert_eq!(r.json["pagination"]["limit"], 100, "{}", r.text);
        for bad in ["limit=-1", "limit=abc", "limit=0", "page=0", "page=x"] {
            let r = s.get_as(&admin, &format!("/api/users?{bad}")).await;
            assert_eq!(r.status, 400, "{bad}: {}", r.text);
            assert_eq!(r.json["error"]["code"], "VALIDATION_ERROR");
        }
    }
}

#[tokio::test]
async fn cursor_pages_walk_forward_and_back_and_refuse_forged_cursors() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let admin = s.admin_token().await;
        for i in 0..25 {
            create_user(&s, &admin, &format!("cur_{i:02}"), "Cursor Tester", &["user"]).await;
        }
        let base = "/api/users?filter[username][$like]=cur_*&sort=-username&limit=10";
        let first = s.get_as(&admin, &format!("{base}&cursor=")).await;
        assert_eq!(first.status, 200, "{}", first.text);
        let p = &first.json["pagination"];
        assert_eq!(p["has_more"], true);
        assert!(p["prev_cursor"].is_null());
        assert!(p["cursor"].is_null());
        assert_eq!(usernames(&first).first().map(String::as_str), Some("cur_24"));
        let next = p["next_cursor"].as_str().unwrap_or_default().to_string();

        let second = s.get_as(&admin, &format!("{base}&cursor={next}")).await;
        assert_eq!(second.status, 200, "{}", second.text);
        let p2 = &second.json["pagination"];
        assert_eq!(p2["has_more"], true);
        assert_eq!(p2["cursor"], next.as_str());
        assert!(p2["prev_cursor"].is_string());
        assert_eq!(usernames(&second).first().map(String::as_str), Some("cur_14"));

        let third_cursor = p2["next_cursor"].as_str().unwrap_or_default();
        let third = s.get_as(&admin, &format!("{base}&cursor={third_cursor}")).await;
        let p3 = &third.json["pagination"];
        assert_eq!(p3["has_more"], false);
        assert!(p3["next_cursor"].is_null());
        assert_eq!(usernames(&third).len(), 5);

        let mut all: Vec<String> = [&first, &second, &third].iter().flat_map(|r| usernames(r)).collect();
        assert_eq!(all.len(), 25);
        all.dedup();
        assert_eq!(all.len(), 25, "no row twice");

        // Back from the last page gives the middle page again.
        let prev = p3["prev_cursor"].as_str().unwrap_or_default();
        let back = s.get_as(&admin, &format!("{base}&cursor={prev}")).await;
        assert_eq!(usernames(&back), usernames(&second), "{}", back.text);
        assert_eq!(back.json["pagination"]["has_more"], true);

        // A forged cursor, a cursor of another query and garbage are 400s.
        let mut forged = next.clone().into_bytes();
        if let Some(c) = forged.get_mut(3) {
            *c = if *c == b'A' { b'B' } else { b'A' };
        }
        let forged = String::from_utf8(forged).unwrap_or_default();
        for (label, url) in [
            ("forged", format!("{base}&cursor={forged}")),
            ("other query", format!("/api/users?sort=username&limit=10&cursor={next}")),
            ("garbage", format!("{base}&cursor=eyJpZCI6MTAwfQ")),
            ("with page", format!("{base}&cursor={next}&page=2")),
        ] {
            let r = s.get_as(&admin, &url).await;
            assert_eq!(r.status, 400, "{label}: {}", r.text);
            assert_eq!(r.json["error"]["details"][0]["field"], "cursor", "{label}");
        }
    }
}

#[tokio::test]
async fn filters_sorting_and_field_selection_are_declared_and_parameterised() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let admin = s.admin_token().await;
        let sneaky = "Robert'); DROP TABLE users;--";
        create_user(&s, &admin, "bobby", sneaky, &["user"]).await;
        create_user(&s, &admin, "alice", "Alice Liddell", &["editor"]).await;
        create_user(&s, &admin, "carol", "Carol 100% Sure", &["user"]).await;

        // SQL-looking values are matched literally.
        let enc = |s: &str| s.replace('%', "%25").replace(' ', "%20").replace(';', "%3B").replace('\'', "%27");
        let r = s.get_as(&admin, &format!("/api/users?filter[full_name]={}", enc(sneaky))).await;
        assert_eq!(r.status, 200, "{backend:?}: {}", r.text);
        assert_eq!(usernames(&r), vec!["bobby"]);
        let r = s.get_as(&admin, &format!("/api/users?filter[username]={}", enc("' OR '1'='1"))).await;
        assert_eq!(r.status, 200);
        assert_eq!(usernames(&r), Vec::<String>::new());
        // `%` and `_` are not wildcards; `*` is.
        let r = s.get_as(&admin, &format!("/api/users?filter[full_name][$like]={}", enc("100%"))).await;
        assert_eq!(usernames(&r), vec!["carol"], "{}", r.text);
        let r = s.get_as(&admin, &format!("/api/users?filter[username][$like]={}", enc("%"))).await;
        assert_eq!(usernames(&r), Vec::<String>::new());
        let r = s.get_as(&admin, "/api/users?filter[username][$like]=A*E").await;
        assert_eq!(usernames(&r), vec!["alice"]);
        // The users table is still there.
        assert_eq!(s.get_as(&admin, "/api/users").await.json["total"], 4);

        let r = s.get_as(&admin, "/api/users?filter[username][$in]=alice,carol&sort=-username").await;
        assert_eq!(usernames(&r), vec!["carol", "alice"]);
        let r = s.get_as(&admin, "/api/users?filter[username][$nin]=alice,carol&sort=username").await;
        assert_eq!(usernames(&r), vec!["admin", "bobby"]);
        let r = s.get_as(&admin, "/api/users?filter[username][$ne]=admin&filter[status]=active&sort=-username").await;
        assert_eq!(usernames(&r), vec!["carol", "bobby", "alice"]);
        let r = s.get_as(&admin, "/api/users?filter[created_at][$gte]=2000-01-01T00:00:00Z&role=editor").await;
        assert_eq!(usernames(&r), vec!["alice"]);
        let r = s.get_as(&admin, "/api/users?filter[created_at][$lt]=2000-01-01T00:00:00Z").await;
        assert_eq!(r.json["total"], 0);

        // Field selection.
        let r = s.get_as(&admin, "/api/users?fields=id,username&sort=username").await;
        let first = &r.json["users"][0];
        let keys: Vec<&String> = first.as_object().map(|o| o.keys().collect()).unwrap_or_default();
        assert_eq!(keys.len(), 2, "{}", r.text);
        assert_eq!(first["username"], "admin");
        assert!(first["id"].is_string());

        // Anything undeclared is a 400 listing what is allowed.
        let cases = [
            ("filter[password_hash]=x", "filter[password_hash]", "username"),
            ("filter[username][$regex]=x", "filter[username][$regex]", "$like"),
            ("filter[status][$gt]=a", "filter[status][$gt]", "$in"),
            ("sort=password_hash", "sort", "created_at"),
            ("fields=id,password_hash", "fields", "email"),
            ("filter[created_at][$gt]=yesterday", "filter[created_at][$gt]", ""),
        ];
        for (query, field, allowed) in cases {
            let r = s.get_as(&admin, &format!("/api/users?{query}")).await;
            assert_eq!(r.status, 400, "{query}: {}", r.text);
            assert_eq!(r.json["error"]["code"], "VALIDATION_ERROR");
            assert_eq!(r.json["error"]["details"][0]["field"], field, "{query}");
            if !allowed.is_empty() {
                let list = r.json["error"]["allowed"].as_array().cloned().unwrap_or_default();
                assert!(list.iter().any(|v| v == allowed), "{query}: {}", r.text);
            }
        }

        // API keys follow the same conventions.
        for name in ["k-one", "k-two", "k-three"] {
            assert_eq!(s.post_as(&admin, "/api/auth/api-keys", json!({"name": name})).await.status, 201);
        }
        let r = s.get_as(&admin, "/api/auth/api-keys?sort=name&limit=2&fields=name").await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["keys"], json!([{"name": "k-one"}, {"name": "k-three"}]));
        assert_eq!(r.json["total"], 3);
        assert_eq!(r.json["pagination"]["total_pages"], 2);
        let r = s.get_as(&admin, "/api/auth/api-keys?filter[name][$like]=*two").await;
        assert_eq!(r.json["keys"].as_array().map(Vec::len), Some(1));
    }
}

#[tokio::test]
async fn batch_mixes_statuses_and_isolates_bad_entries() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let me = create_user(&s, &admin, "batcher", "Batch User", &["user"]).await;
    let token = s.login("batcher", "user-Pass1").await;
    let key = s.post_as(&token, "/api/auth/api-keys", json!({"name": "doomed"})).await;
    let key_id = key.json["id"].as_str().unwrap_or_default().to_string();

    let body = json!({"requests": [
        {"id": "get", "method": "GET", "url": format!("/api/users/{me}")},
        {"id": "create", "method": "POST", "url": "/api/auth/api-keys", "body": {"name": "from-batch"}},
        {"id": "delete", "method": "DELETE", "url": format!("/api/auth/api-keys/{key_id}")},
        {"id": "forbidden", "method": "GET", "url": "/api/users"},
        {"id": "missing", "method": "DELETE", "url": "/api/auth/api-keys/ak_nope"},
        {"id": "v2", "url": format!("/api/v2/users/{me}")},
        {"id": "nested", "method": "POST", "url": "/api/batch", "body": {"requests": []}},
        {"id": "elsewhere", "method": "GET", "url": "http://example.com/api/users"},
        {"id": "malformed", "method": "GET"},
        {"id": "bad-method", "method": "BREW", "url": "/api/users"},
    ]});
    let r = s.post_as(&token, "/api/batch", body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let responses = r.json["responses"].as_array().cloned().unwrap_or_default();
    let got: Vec<(String, i64)> = responses
        .iter()
        .map(|e| (e["id"].as_str().unwrap_or_default().to_string(), e["status"].as_i64().unwrap_or_default()))
        .collect();
    let expected = [
        ("get", 200),
        ("create", 201),
        ("delete", 204),
        ("forbidden", 403),
        ("missing", 404),
        ("v2", 200),
        ("nested", 400),
        ("elsewhere", 400),
        ("malformed", 400),
        ("bad-method", 400),
    ];
    let expected: Vec<(String, i64)> = expected.iter().map(|(i, s)| ((*i).to_string(), *s)).collect();
    assert_eq!(got, expected, "{}", r.text);
    let by_id = |id: &str| responses.iter().find(|e| e["id"] == id).cloned().unwrap_or(Value::Null);
    assert_eq!(by_id("get")["body"]["username"], "batcher");
    assert_eq!(by_id("create")["body"]["name"], "from-batch");
    assert!(by_id("create")["body"]["key"].is_string());
    assert!(by_id("delete")["body"].is_null());
    assert_eq!(by_id("forbidden")["body"]["error"]["code"], "PERMISSION_DENIED");
    assert_eq!(by_id("missing")["body"]["error"]["code"], "RESOURCE_NOT_FOUND");
    assert_eq!(by_id("nested")["body"]["error"]["code"], "VALIDATION_ERROR");
    // The sub-requests really happened, as the caller.
    let keys = s.get_as(&token, "/api/auth/api-keys").await;
    let names: Vec<&str> =
        keys.json["keys"].as_array().map(|a| a.iter().filter_map(|k| k["name"].as_str()).collect()).unwrap_or_default();
    assert_eq!(names, vec!["from-batch"]);

    // Without credentials every sub-request is a 401 of its own.
    let r = s.post("/api/batch", json!({"requests": [{"id": 1, "url": "/api/users"}]})).await;
    assert_eq!(r.json["responses"][0]["status"], 401, "{}", r.text);
    assert_eq!(r.json["responses"][0]["id"], 1);
    // Too many sub-requests, or no list at all, fail the batch as a whole.
    let many: Vec<Value> = (0..51).map(|i| json!({"id": i, "url": "/api/versions"})).collect();
    let r = s.post_as(&token, "/api/batch", json!({ "requests": many })).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = s.post_as(&token, "/api/batch", json!({"nope": []})).await;
    assert_eq!(r.status, 400);
    assert_eq!(s.get_as(&token, "/api/batch").await.status, 405);
}

#[tokio::test]
async fn batch_sub_requests_are_rate_limited_each() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.rate_limits.limit = 4).await;
    let requests: Vec<Value> = (0..6).map(|i| json!({"id": i, "url": "/api/versions"})).collect();
    let r = s.post("/api/batch", json!({ "requests": requests })).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let statuses: Vec<i64> = r.json["responses"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["status"].as_i64()).collect())
        .unwrap_or_default();
    assert_eq!(statuses, vec![200, 200, 200, 200, 429, 429]);
    assert_eq!(r.json["responses"][5]["body"]["error"]["code"], "RATE_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn versions_are_listed_negotiated_and_refused_by_name() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.api.versions.sunset_dates.insert("1.1".into(), "2099-12-31".into());
    })
    .await;
    let admin = s.admin_token().await;
    let r = s.get("/api/versions").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["current"], "2.0");
    assert_eq!(r.json["supported"], json!(["1.0", "1.1", "2.0"]));
    assert_eq!(r.json["deprecated"], json!(["0.9"]));
    assert_eq!(r.json["sunset_dates"]["1.0"], "2024-12-31");

    let plain = s.get_as(&admin, "/api/users").await;
    let v2 = s.get_as(&admin, "/api/v2/users").await;
    assert_eq!(v2.status, 200, "{}", v2.text);
    assert_eq!(v2.json["total"], plain.json["total"]);
    assert_eq!(v2.header("x-api-version"), Some("2.0"));
    assert_eq!(plain.header("x-api-version"), Some("2.0"));
    assert!(plain.header("deprecation").is_none());
    assert_eq!(s.get("/api/v2/versions").await.json["current"], "2.0");

    let auth = format!("Bearer {admin}");
    let call = |headers: Vec<(&'static str, String)>| {
        let auth = auth.clone();
        let s = &s;
        async move {
            let mut all: Vec<(&str, &str)> = vec![("Authorization", auth.as_str())];
            all.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
            s.call(Method::GET, "/api/users", None, &all).await
        }
    };
    let r = call(vec![("X-API-Version", "2.0".into())]).await;
    assert_eq!(r.status, 200);
    let r = call(vec![("Accept", "application/vnd.nexus.v2+json".into())]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-api-version"), Some("2.0"));

    // Deprecated: answered, with Deprecation and Sunset.
    let r = call(vec![("X-API-Version", "1.1".into())]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("deprecation"), Some("true"));
    assert!(r.header("sunset").is_some_and(|v| v.contains("2099") && v.ends_with("GMT")), "{:?}", r.headers);
    let r = call(vec![("X-API-Version", "0.9".into())]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("deprecation"), Some("true"));

    // Sunset or unknown: 400 naming the versions served.
    for (label, reply) in [
        ("sunset", call(vec![("X-API-Version", "1.0".into())]).await),
        ("unknown", call(vec![("X-API-Version", "3.0".into())]).await),
        ("accept", call(vec![("Accept", "application/vnd.nexus.v7+json".into())]).await),
        ("url", s.get_as(&admin, "/api/v9/users").await),
    ] {
        assert_eq!(reply.status, 400, "{label}: {}", reply.text);
        assert_eq!(reply.json["error"]["code"], "VALIDATION_ERROR");
        let supported = reply.json["error"]["supported_versions"].as_array().cloned().unwrap_or_default();
        assert!(supported.iter().any(|v| v == "2.0"), "{label}: {}", reply.text);
        assert!(!supported.iter().any(|v| v == "1.0"), "{label}: 1.0 is sunset");
        assert!(reply.json["error"]["details"][0]["message"].as_str().is_some_and(|m| m.contains("2.0")));
    }
}

#[tokio::test]
async fn etags_answer_304_until_the_resource_changes() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let id = create_user(&s, &admin, "tagged", "Tagged User", &["user"]).await;
    let path = format!("/api/users/{id}");
    let r = s.get_as(&admin, &path).await;
    assert_eq!(r.status, 200);
    let tag = r.header("etag").unwrap_or_default().to_string();
    assert!(tag.starts_with("W/\""), "{tag}");
    let auth = format!("Bearer {admin}");
    let headers = [("Authorization", auth.as_str()), ("If-None-Match", tag.as_str())];
    let r = s.call(Method::GET, &path, None, &headers).await;
    assert_eq!(r.status, 304);
    assert!(r.text.is_empty());
    assert_eq!(r.header("etag"), Some(tag.as_str()));

    let r = s.call_as(&admin, Method::PUT, &path, Some(json!({"full_name": "Renamed"}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.call(Method::GET, &path, None, &headers).await;
    assert_eq!(r.status, 200);
    assert_ne!(r.header("etag"), Some(tag.as_str()));
    assert_eq!(r.json["full_name"], "Renamed");

    // Compression is honoured per Accept-Encoding, for answers long enough to gain from it.
    for name in ["more1", "more2", "more3"] {
        create_user(&s, &admin, name, "Another User With A Name", &["user"]).await;
    }
    let headers = [("Authorization", auth.as_str()), ("Accept-Encoding", "gzip")];
    let r = s.call(Method::GET, "/api/users", None, &headers).await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
}

#[tokio::test]
async fn request_bodies_with_unknown_fields_are_refused_naming_them() {
    let s = TestServer::start_with(nexus_testkit::Backend::Sqlite, |c| c.webhooks.allow_private = true).await;
    let admin = s.admin_token().await;
    let cases = [
        ("/api/webhooks", json!({ "url": "http://127.0.0.1:9/x", "events": ["user.*"], "is_admin": true }), "is_admin"),
        ("/api/database/query", json!({ "collection": "p", "operation": "find", "filtre": {} }), "filtre"),
        ("/api/database/collections", json!({ "name": "c1", "owner": "me" }), "owner"),
        ("/api/batch", json!({ "requests": [], "atomic": true }), "atomic"),
    ];
    for (path, body, field) in cases {
        let r = s.post_as(&admin, path, body).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text);
        assert_eq!(r.json["error"]["code"], "VALIDATION_ERROR", "{path}: {}", r.text);
        assert_eq!(r.json["error"]["details"][0]["field"], field, "{path}: {}", r.text);
    }
    // A batch sub-request is a body too.
    let r = s.post_as(&admin, "/api/batch", json!({ "requests": [{ "url": "/health", "verb": "GET" }] })).await;
    assert!(r.status == 400 || r.json["responses"][0]["status"] == 400, "{}", r.text);
    assert!(r.text.contains("verb"), "{}", r.text);

    // Free-form objects keep their fields: documents and event properties.
    let r = s
        .post_as(
            &admin,
            "/api/database/query",
            json!({ "collection": "p", "operation": "insert_one",
            "document": { "anything": 1, "is_admin": true } }),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let r = s
        .post_as(
            &admin,
            "/v2/analytics/events",
            json!({ "event_name": "a", "event_category": "b",
            "properties": { "whatever": true } }),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    // An unknown event field is refused for that event, named.
    let r = s
        .post_as(&admin, "/v2/analytics/events", json!({ "event_name": "a", "event_category": "b", "colour": "red" }))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("colour"), "{}", r.text);
}

#[tokio::test]
async fn authenticated_secrets_clients_are_not_limited_by_default_and_anonymous_ones_are() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let r = s.post_as(&admin, "/api/v1/secrets", json!({ "path": "app/poll", "value": "v" })).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Twice the old hourly default, in well under a minute, as an exporting CLI or a poller does.
    let url = s.url("/api/v1/secrets/app/poll");
    let client = s.client.clone();
    let statuses = futures::future::join_all((0..16).map(|_| {
        let (client, url, admin) = (client.clone(), url.clone(), admin.clone());
        async move {
            let mut seen = Vec::new();
            for _ in 0..320 {
                let r = client.get(&url).bearer_auth(&admin).send().await.unwrap_or_else(|e| panic!("{e}"));
                seen.push((r.status().as_u16(), r.headers().contains_key("x-ratelimit-limit")));
            }
            seen
        }
    }))
    .await;
    let all: Vec<(u16, bool)> = statuses.into_iter().flatten().collect();
    assert_eq!(all.len(), 5_120);
    assert!(all.iter().all(|(status, _)| *status == 200), "{:?}", all.iter().find(|(st, _)| *st != 200));
    assert!(all.iter().all(|(_, limited)| !limited), "no limit headers for an authenticated secrets client");

    // Without a credential the caller is counted per IP.
    let r = s.get("/api/v1/secrets/app/poll").await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.header("x-ratelimit-limit"), Some("600"), "{}", r.text);
    // The framework surface keeps its documented default.
    let r = s.get_as(&admin, "/api/users").await;
    assert_eq!(r.header("x-ratelimit-limit"), Some("1000"));
}
