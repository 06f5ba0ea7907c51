//! The list conventions (docs/conventions.md, "Lists") on `GET /api/v1/secrets`,
//! `GET /api/v1/audit` and `GET /v2/users`, next to the parameters their seeds document.

use nexus_testkit::{Reply, TestServer, backends, json};
use serde_json::Value;

/// Percent-encodes everything but unreserved characters.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `key` of every item of the array `list`.
fn col(r: &Reply, list: &str, key: &str) -> Vec<String> {
    r.json[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {}", r.text))
        .iter()
        .map(|i| i[key].as_str().unwrap_or_default().to_string())
        .collect()
}

fn keys(item: &Value) -> Vec<String> {
    let mut k: Vec<String> = item.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    k.sort();
    k
}

/// The field a 400 names, in the v1 (`details` at the top) or framework dialect.
fn bad_field(r: &Reply) -> String {
    assert_eq!(r.status, 400, "{}", r.text);
    let v = r.json.pointer("/details/0/field").or_else(|| r.json.pointer("/error/details/0/field"));
    v.and_then(Value::as_str).unwrap_or_default().to_string()
}

fn allowed(r: &Reply) -> Vec<String> {
    let v = r.json.get("allowed").or_else(|| r.json.pointer("/error/allowed"));
    v.and_then(Value::as_array).into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect()
}

/// Checks the offset `pagination` object.
fn check_offset_page(r: &Reply, page: u64, limit: u64, total: u64, has_next: bool, has_prev: bool) {
    assert_eq!(r.status, 200, "{}", r.text);
    let p = &r.json["pagination"];
    assert_eq!(p["page"], page, "{}", r.text);
    assert_eq!(p["limit"], limit, "{}", r.text);
    assert_eq!(p["total"], total, "{}", r.text);
    assert_eq!(p["total_pages"], total.div_ceil(limit), "{}", r.text);
    assert_eq!(p["has_next"], has_next, "page {page}: {}", r.text);
    assert_eq!(p["has_prev"], has_prev, "page {page}: {}", r.text);
    assert_eq!(r.json["total"], total);
}

/// Walks `base` (a URL with its `?`) by cursor, `limit` 10 over 25 matching rows, checks the
/// cursor fields, and refuses a forged cursor, one of another query and a cursor with `page`.
async fn walk_cursor(s: &TestServer, token: &str, base: &str, list: &str, key: &str) -> Vec<String> {
    let first = s.get_as(token, &format!("{base}&limit=10&cursor=")).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let p = &first.json["pagination"];
    assert_eq!((p["has_more"].clone(), p["limit"].clone()), (json!(true), json!(10)), "{}", first.text);
    assert!(p["prev_cursor"].is_null() && p["cursor"].is_null());
    let next = p["next_cursor"].as_str().unwrap_or_default().to_string();
    let second = s.get_as(token, &format!("{base}&limit=10&cursor={next}")).await;
    let p2 = &second.json["pagination"];
    assert_eq!(p2["has_more"], true, "{}", second.text);
    assert!(p2["prev_cursor"].is_string());
    let third_cursor = p2["next_cursor"].as_str().unwrap_or_default();
    let third = s.get_as(token, &format!("{base}&limit=10&cursor={third_cursor}")).await;
    let p3 = &third.json["pagination"];
    assert_eq!(p3["has_more"], false, "{}", third.text);
    assert!(p3["next_cursor"].is_null());
    let prev = p3["prev_cursor"].as_str().unwrap_or_default();
    let back = s.get_as(token, &format!("{base}&limit=10&cursor={prev}")).await;
    assert_eq!(col(&back, list, key), col(&second, list, key), "back to the middle page");
    let all: Vec<String> = [&first, &second, &third].iter().flat_map(|r| col(r, list, key)).collect();
    assert_eq!(
        [col(&first, list, key).len(), col(&second, list, key).len(), col(&third, list, key).len()],
        [10, 10, 5]
    );

    let mut forged = next.clone().into_bytes();
    if let Some(c) = forged.get_mut(3) {
        *c = if *c == b'A' { b'B' } else { b'A' };
    }
    let forged = String::from_utf8(forged).unwrap_or_default();
    for url in [
        format!("{base}&limit=10&cursor={forged}"),
        format!("{base}&limit=10&cursor=eyJpZCI6MTAwfQ"),
        format!("{base}&limit=10&filter[id][$ne]=x&cursor={next}"),
        format!("{base}&limit=10&cursor={next}&page=2"),
    ] {
        let r = s.get_as(token, &url).await;
        assert_eq!(bad_field(&r), "cursor", "{url}: {}", r.text);
    }
    all
}

#[tokio::test]
async fn secrets_list_pages_filters_and_keeps_the_seed_parameters() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let token = s.admin_token().await;
        for i in 0..25 {
            let body = json!({"path": format!("ls/s{i:02}"), "value": format!("v-{i}")});
            assert_eq!(s.post_as(&token, "/api/v1/secrets", body).await.status, 201);
        }
        let body = json!({"path": "other/x", "value": "secret-value-x"});
        assert_eq!(s.post_as(&token, "/api/v1/secrets", body).await.status, 201);
        let r = s.call_as(
            &token,
            nexus_testkit::reqwest::Method::PUT,
            "/api/v1/secrets/ls/s03",
            Some(json!({"value": "v2"})),
        );
        assert_eq!(r.await.status, 200);

        // Seed: no parameters lists every secret; `prefix` narrows; never values.
        let r = s.get_as(&token, "/api/v1/secrets").await;
        assert_eq!(r.status, 200, "{backend:?}: {}", r.text);
        assert_eq!(r.json["total"], 26);
        assert_eq!(col(&r, "secrets", "path").len(), 26);
        assert_eq!(r.json["pagination"]["limit"], Value::Null, "no limit by default");
        assert_eq!(r.json["pagination"]["has_next"], false);
        assert!(!r.text.contains("v-1") && !r.text.contains("secret-value-x"));
        let r = s.get_as(&token, "/api/v1/secrets?prefix=ls/").await;
        assert_eq!(r.json["total"], 25);
        assert_eq!(col(&r, "secrets", "path").first().map(String::as_str), Some("ls/s00"));

        // First, middle and last offset pages.
        for (page, count, next, prev) in [(1, 10, true, false), (2, 10, true, true), (3, 5, false, true)] {
            let r = s.get_as(&token, &format!("/api/v1/secrets?prefix=ls/&limit=10&page={page}")).await;
            check_offset_page(&r, page, 10, 25, next, prev);
            let paths = col(&r, "secrets", "path");
            assert_eq!(paths.len(), count);
            assert_eq!(paths.first(), Some(&format!("ls/s{:02}", (page - 1) * 10)), "{backend:?}");
        }
        let r = s.get_as(&token, "/api/v1/secrets?limit=500").await;
        assert_eq!(r.json["pagination"]["limit"], 100, "capped: {}", r.text);
        for bad in ["limit=-1", "limit=abc", "limit=0", "page=0"] {
            let r = s.get_as(&token, &format!("/api/v1/secrets?{bad}")).await;
            assert_eq!(r.status, 400, "{bad}: {}", r.text);
        }

        // Cursor pages, newest path first.
        let all = walk_cursor(&s, &token, "/api/v1/secrets?prefix=ls/&sort=-path", "secrets", "path").await;
        assert_eq!(all.first().map(String::as_str), Some("ls/s24"));
        assert_eq!(all.last().map(String::as_str), Some("ls/s00"));

        // Filters, sorting, field selection.
        let r = s.get_as(&token, "/api/v1/secrets?filter[version][$gte]=2&fields=path,version").await;
        assert_eq!(r.json["secrets"], json!([{"path": "ls/s03", "version": 2}]), "{}", r.text);
        let r = s.get_as(&token, "/api/v1/secrets?filter[path][$like]=*x&sort=-updated_at").await;
        assert_eq!(col(&r, "secrets", "path"), ["other/x"]);
        let r = s.get_as(&token, "/api/v1/secrets?filter[path][$in]=ls/s01,ls/s02&sort=-path").await;
        assert_eq!(col(&r, "secrets", "path"), ["ls/s02", "ls/s01"]);
        let r = s.get_as(&token, "/api/v1/secrets?filter[created_at][$lt]=2000-01-01T00:00:00Z").await;
        assert_eq!(r.json["total"], 0);
        let r = s.get_as(&token, "/api/v1/secrets?fields=id,path&limit=1").await;
        assert_eq!(keys(&r.json["secrets"][0]), ["id", "path"]);

        // SQL-looking values are matched literally.
        for (param, value) in [
            ("filter[path]", "ls/s01' OR '1'='1"),
            ("filter[created_by]", "x'); DROP TABLE secrets;--"),
            ("filter[path][$like]", "%"),
            ("filter[path][$like]", "ls_s01"),
        ] {
            let r = s.get_as(&token, &format!("/api/v1/secrets?{}={}", enc(param), enc(value))).await;
            assert_eq!((r.status.as_u16(), r.json["total"].clone()), (200, json!(0)), "{param}={value}: {}", r.text);
        }
        assert_eq!(s.get_as(&token, "/api/v1/secrets").await.json["total"], 26, "the table is still there");

        // Anything undeclared is a 400 listing what is allowed; values can't be asked for.
        for (query, field, expected) in [
            ("filter[value]=x", "filter[value]", "path"),
            ("filter[key_id]=x", "filter[key_id]", "created_by"),
            ("filter[version][$like]=1", "filter[version][$like]", "$gte"),
            ("sort=value", "sort", "updated_at"),
            ("fields=path,value", "fields", "metadata"),
        ] {
            let r = s.get_as(&token, &format!("/api/v1/secrets?{query}")).await;
            assert_eq!(bad_field(&r), field, "{query}");
            assert!(allowed(&r).iter().any(|a| a == expected), "{query}: {}", r.text);
            assert!(!allowed(&r).iter().any(|a| a == "value" || a == "wrapped_key"), "{query}");
        }
    }
}

#[tokio::test]
async fn secrets_list_pages_count_only_what_policies_let_the_caller_see() {
    let s = TestServer::start_with(nexus_testkit::Backend::Sqlite, |c| {
        c.auth.roles.insert("developer".into(), vec!["secret.read".into()]);
        c.secrets.policies.insert("developer".into(), vec!["dev/*".into(), "shared/one".into()]);
    })
    .await;
    let admin = s.admin_token().await;
    for path in ["dev/a", "dev/b", "dev/c", "prod/a", "shared/one", "shared/two"] {
        let r = s.post_as(&admin, "/api/v1/secrets", json!({"path": path, "value": "x"})).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let dev = s.user_token("dev1", &["developer"]).await;
    let r = s.get_as(&dev, "/api/v1/secrets").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(col(&r, "secrets", "path"), ["dev/a", "dev/b", "dev/c", "shared/one"]);
    let r = s.get_as(&dev, "/api/v1/secrets?limit=2&page=2").await;
    check_offset_page(&r, 2, 2, 4, false, true);
    assert_eq!(col(&r, "secrets", "path"), ["dev/c", "shared/one"]);
    let r = s.get_as(&dev, "/api/v1/secrets?prefix=shared/").await;
    assert_eq!(col(&r, "secrets", "path"), ["shared/one"]);
}

#[tokio::test]
async fn audit_list_pages_filters_and_keeps_the_seed_parameters() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let token = s.admin_token().await;
        for i in 0..25 {
            let body = json!({"path": format!("au/s{i:02}"), "value": "x"});
            assert_eq!(s.post_as(&token, "/api/v1/secrets", body).await.status, 201);
        }
        let base = "/api/v1/audit?action=secret.create";

        // Seed: no limit by default, `limit` and `offset`, `{logs, total}`.
        let r = s.get_as(&token, base).await;
        assert_eq!(r.status, 200, "{backend:?}: {}", r.text);
        assert_eq!(r.json["total"], 25);
        let everything = col(&r, "logs", "secret_path");
        assert_eq!(everything.len(), 25);
        assert_eq!(everything.first().map(String::as_str), Some("au/s24"), "newest first");
        assert_eq!(r.json["pagination"]["limit"], Value::Null);
        let r = s.get_as(&token, &format!("{base}&limit=10&offset=5")).await;
        check_offset_page(&r, 1, 10, 25, true, true);
        assert_eq!(col(&r, "logs", "secret_path"), everything[5..15].to_vec());
        let r = s.get_as(&token, &format!("{base}&offset=20")).await;
        assert_eq!(col(&r, "logs", "secret_path"), everything[20..].to_vec());

        // First, middle and last pages.
        for (page, next, prev) in [(1u64, true, false), (2, true, true), (3, false, true)] {
            let r = s.get_as(&token, &format!("{base}&limit=10&page={page}")).await;
            check_offset_page(&r, page, 10, 25, next, prev);
            let start = usize::try_from((page - 1) * 10).unwrap_or_default();
            let end = (start + 10).min(25);
            assert_eq!(col(&r, "logs", "secret_path"), everything[start..end].to_vec(), "{backend:?}");
        }
        // Explicit limits follow the conventions: capped; zero, negative, non-numeric refused.
        let r = s.get_as(&token, "/api/v1/audit?limit=500").await;
        assert_eq!(r.json["pagination"]["limit"], 100, "{}", r.text);
        for (bad, field) in [
            ("limit=-1", "limit"),
            ("limit=0", "limit"),
            ("offset=-1", "offset"),
            ("offset=5&page=2", "offset"),
            ("offset=5&cursor=", "offset"),
        ] {
            let r = s.get_as(&token, &format!("/api/v1/audit?{bad}")).await;
            assert_eq!(bad_field(&r), field, "{bad}: {}", r.text);
            assert_eq!(r.json["error"], "Bad Request");
        }
        assert_eq!(s.get_as(&token, "/api/v1/audit?limit=abc").await.status, 400);

        // Cursor pages.
        let all = walk_cursor(&s, &token, base, "logs", "secret_path").await;
        assert_eq!(all, everything);

        // Filters, sorting and fields, with the seed's filters.
        let r = s
            .get_as(&token, &format!("{base}&filter[secret_path][$like]=au/s1*&sort=secret_path&fields=secret_path"))
            .await;
        assert_eq!(r.json["total"], 10, "{}", r.text);
        assert_eq!(r.json["logs"][0], json!({"secret_path": "au/s10"}));
        let r =
            s.get_as(&token, "/api/v1/audit?filter[action][$in]=secret.create,auth.login&filter[success]=true").await;
        assert!(r.json["total"].as_i64().unwrap_or(0) >= 25, "{}", r.text);
        let r = s.get_as(&token, &format!("{base}&filter[timestamp][$lt]=2000-01-01T00:00:00Z")).await;
        assert_eq!(r.json["total"], 0);

        // SQL-looking values are matched literally, in seed parameters and filters alike.
        for (param, value) in [
            ("user", "' OR '1'='1"),
            ("secret_path", "au/s01' OR 1=1 --"),
            ("filter[user]", "admin'; DROP TABLE audit_log;--"),
            ("filter[action][$like]", "secret_create"),
        ] {
            let r = s.get_as(&token, &format!("/api/v1/audit?{}={}", enc(param), enc(value))).await;
            assert_eq!((r.status.as_u16(), r.json["total"].clone()), (200, json!(0)), "{param}={value}: {}", r.text);
        }
        assert_eq!(s.get_as(&token, base).await.json["total"], 25);

        for (query, field, expected) in [
            ("filter[target]=x", "filter[target]", "action"),
            ("filter[success][$gt]=true", "filter[success][$gt]", "$ne"),
            ("sort=metadata", "sort", "timestamp"),
            ("fields=id,request_id", "fields", "user_agent"),
        ] {
            let r = s.get_as(&token, &format!("/api/v1/audit?{query}")).await;
            assert_eq!(bad_field(&r), field, "{query}");
            assert!(allowed(&r).iter().any(|a| a == expected), "{query}: {}", r.text);
        }
    }
}

#[tokio::test]
async fn v2_users_list_pages_filters_and_keeps_the_seed_parameters() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let admin = s.admin_token().await;
        let sneaky = "Robert'); DROP TABLE users;--";
        for i in 0..24 {
            let role = if i % 4 == 0 { "editor" } else { "user" };
            let full_name = if i == 7 { sneaky.to_string() } else { format!("V2 User {i}") };
            let body = json!({"username": format!("v2u_{i:02}"), "email": format!("v2u_{i:02}@example.com"),
                "password": "user-Pass1", "full_name": full_name, "roles": [role]});
            assert_eq!(s.post_as(&admin, "/api/users", body).await.status, 201);
        }
        // 25 users with the admin, oldest first by default.

        // Seed parameters and shape.
        let r = s.get_as(&admin, "/v2/users?limit=10&offset=10").await;
        check_offset_page(&r, 2, 10, 25, true, true);
        assert_eq!((r.json["limit"].clone(), r.json["offset"].clone()), (json!(10), json!(10)));
        assert_eq!(col(&r, "users", "username").first().map(String::as_str), Some("v2u_09"));
        let r = s.get_as(&admin, "/v2/users?role=editor&status=active").await;
        assert_eq!(r.json["total"], 6, "{}", r.text);
        assert_eq!(r.json["limit"], 20);
        assert_eq!(r.json["offset"], 0);
        let r = s.get_as(&admin, &format!("/v2/users?role={}", enc("' OR '1'='1"))).await;
        assert_eq!((r.status.as_u16(), r.json["total"].clone()), (200, json!(0)));

        // First, middle, last pages.
        for (page, count, next, prev) in [(1u64, 10, true, false), (2, 10, true, true), (3, 5, false, true)] {
            let r = s.get_as(&admin, &format!("/v2/users?limit=10&page={page}&sort=username")).await;
            check_offset_page(&r, page, 10, 25, next, prev);
            assert_eq!(r.json["offset"], (page - 1) * 10);
            assert_eq!(col(&r, "users", "username").len(), count);
        }

        // Cursor pages.
        let all = walk_cursor(&s, &admin, "/v2/users?sort=-username", "users", "username").await;
        assert_eq!(all.first().map(String::as_str), Some("v2u_23"));
        assert_eq!(all.last().map(String::as_str), Some("admin"));

        // Filters, sorting, fields; SQL-looking values literal.
        let r = s.get_as(&admin, &format!("/v2/users?filter[full_name]={}", enc(sneaky))).await;
        assert_eq!(col(&r, "users", "username"), ["v2u_07"], "{}", r.text);
        let r = s.get_as(&admin, &format!("/v2/users?filter[username]={}", enc("' OR 1=1 --"))).await;
        assert_eq!(r.json["total"], 0);
        let r = s
            .get_as(&admin, "/v2/users?filter[username][$like]=v2u_1*&role=editor&sort=-username&fields=username")
            .await;
        assert_eq!(r.json["users"], json!([{"username": "v2u_16"}, {"username": "v2u_12"}]), "{}", r.text);

        for (query, field, expected) in [
            ("filter[password_hash]=x", "filter[password_hash]", "username"),
            ("sort=password_hash", "sort", "created_at"),
            ("fields=id,password_hash", "fields", "email"),
            ("offset=5&page=2", "offset", ""),
            ("offset=5&cursor=", "offset", ""),
            ("limit=101", "limit", ""),
        ] {
            let r = s.get_as(&admin, &format!("/v2/users?{query}")).await;
            assert_eq!(bad_field(&r), field, "{query}: {}", r.text);
            if !expected.is_empty() {
                assert!(allowed(&r).iter().any(|a| a == expected), "{query}: {}", r.text);
            }
        }
    }
}
