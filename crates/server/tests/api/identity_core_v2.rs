//! Identity on the core API v2 surface: `/v2/auth/login`, `/v2/auth/refresh`, `/v2/users` and
//! `/v2/users/{userId}`.

use nexus_kernel::audit::{AuditQuery, query};
use nexus_kernel::clock::Timestamp;
use nexus_testkit::reqwest::Method;
use nexus_testkit::{ADMIN_PASSWORD, Backend, Reply, TestServer, backends, json};
use serde_json::Value;

const USER_PASSWORD: &str = "user-Pass1";

/// A server whose login throttle does not get in the way of tests that log in often.
async fn server(backend: Backend) -> TestServer {
    TestServer::start_with(backend, |c| c.auth.login_attempts_per_minute = 1000).await
}

async fn v2_login(s: &TestServer, email: &str, password: &str, client_id: &str) -> Reply {
    s.post("/v2/auth/login", json!({"email": email, "password": password, "client_id": client_id})).await
}

/// Creates a user through the framework surface and returns their id.
async fn create_user(s: &TestServer, admin: &str, username: &str, roles: &[&str], status: &str) -> String {
    let body = json!({
        "username": username,
        "email": format!("{username}@example.com"),
        "password": USER_PASSWORD,
        "roles": roles,
        "status": status,
    });
    let r = s.post_as(admin, "/api/users", body).await;
    assert_eq!(r.status, 201, "creating {username}: {}", r.text);
    str_of(&r, "id").to_string()
}

/// The single field a 400 in the framework dialect names.
fn named_field(r: &Reply) -> String {
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json.pointer("/error/code"), Some(&json!("VALIDATION_ERROR")), "{}", r.text);
    r.json.pointer("/error/details/0/field").and_then(Value::as_str).unwrap_or_default().to_string()
}

fn str_of<'a>(r: &'a Reply, field: &str) -> &'a str {
    r.json.get(field).and_then(Value::as_str).unwrap_or_default()
}

#[tokio::test]
async fn v2_login_returns_the_union_login_shape() {
    for backend in backends() {
        let s = server(backend).await;
        let r = v2_login(&s, "admin@localhost", ADMIN_PASSWORD, "web-portal").await;
        assert_eq!(r.status, 200, "{backend:?} {}", r.text);
        for field in ["access_token", "refresh_token", "expires_at"] {
            assert!(!str_of(&r, field).is_empty(), "{field} missing: {}", r.text);
        }
        assert_eq!(r.json["token_type"], "bearer");
        assert_eq!(r.json["expires_in"], 3600);
        let expires = Timestamp::parse_rfc3339(str_of(&r, "expires_at"));
        let in_an_hour = Timestamp::now().add_seconds(3600).as_unix_seconds();
        assert!(expires.is_some_and(|t| (t.as_unix_seconds() - in_an_hour).abs() < 5), "{}", r.text);
        let user = &r.json["user"];
        assert!(user["id"].as_str().is_some_and(|id| !id.is_empty()));
        assert_eq!(user["username"], "admin");
        assert_eq!(user["email"], "admin@localhost");
        assert_eq!(user["roles"], json!(["admin"]));

        // The email is matched without regard to case, and the token works on the surface.
        let r = v2_login(&s, " Admin@LOCALHOST ", ADMIN_PASSWORD, "web-portal").await;
        assert_eq!(r.status, 200, "{}", r.text);
        let token = str_of(&r, "access_token");
        let me = s.get_as(token, &format!("/v2/users/{}", r.json["user"]["id"].as_str().unwrap_or_default())).await;
        assert_eq!(me.status, 200, "{}", me.text);
        assert_eq!(me.json["username"], "admin");
    }
}

#[tokio::test]
async fn v2_login_wrong_password_or_unknown_email_is_401() {
    let s = server(Backend::Sqlite).await;
    let wrong = v2_login(&s, "admin@localhost", "wrong-Pass1", "web-portal").await;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    assert_eq!(wrong.json["error"]["code"], "INVALID_CREDENTIALS");
    assert!(wrong.json["error"]["request_id"].as_str().is_some_and(|id| id.starts_with("req_")));
    assert!(wrong.json["error"].get("documentation_url").is_none(), "core v2 speaks the framework dialect");

    let unknown = v2_login(&s, "nobody@example.com", "wrong-Pass1", "web-portal").await;
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.json["error"]["message"], wrong.json["error"]["message"]);
    assert!(unknown.json.get("access_token").is_none());
}

#[tokio::test]
async fn v2_login_rejects_missing_and_invalid_fields() {
    let s = server(Backend::Sqlite).await;
    let cases = [
        (json!({"password": ADMIN_PASSWORD, "client_id": "app"}), "email"),
        (json!({"email": "admin@localhost", "client_id": "app"}), "password"),
        (json!({"email": "admin@localhost", "password": ADMIN_PASSWORD}), "client_id"),
        (json!({"email": 5, "password": ADMIN_PASSWORD, "client_id": "app"}), "email"),
        (json!({"email": "admin@localhost", "password": ["x"], "client_id": "app"}), "password"),
        (json!({"email": "admin@localhost", "password": ADMIN_PASSWORD, "client_id": 7}), "client_id"),
        (json!({"email": "admin", "password": ADMIN_PASSWORD, "client_id": "app"}), "email"),
        (json!({"email": "  ", "password": ADMIN_PASSWORD, "client_id": "app"}), "email"),
        (json!({"email": "admin@localhost", "password": "", "client_id": "app"}), "password"),
        (json!({"email": "admin@localhost", "password": ADMIN_PASSWORD, "client_id": ""}), "client_id"),
        (json!({"email": "admin@localhost", "password": ADMIN_PASSWORD, "client_id": "x".repeat(129)}), "client_id"),
        (
            json!({"email": "admin@localhost", "password": ADMIN_PASSWORD, "client_id": "app", "ip_address": "not-an-ip"}),
            "ip_address",
        ),
        (
            json!({"email": "admin@localhost", "password": ADMIN_PASSWORD, "client_id": "app", "ip_address": 10}),
            "ip_address",
        ),
        (json!(["email"]), "body"),
    ];
    for (body, field) in cases {
        let r = s.post("/v2/auth/login", body.clone()).await;
        assert_eq!(named_field(&r), field, "{body}: {}", r.text);
    }
    let r = s.call(Method::POST, "/v2/auth/login", None, &[("Content-Type", "application/json")]).await;
    assert_eq!(r.status, 400, "{}", r.text);

    // Several bad fields are all named at once.
    let r = s.post("/v2/auth/login", json!({"email": "nope", "password": "", "client_id": ""})).await;
    assert_eq!(r.status, 400);
    let fields: Vec<&str> =
        r.json["error"]["details"].as_array().into_iter().flatten().filter_map(|d| d["field"].as_str()).collect();
    assert_eq!(fields, ["email", "password", "client_id"], "{}", r.text);
}

#[tokio::test]
async fn v2_login_keeps_the_reported_ip_address_out_of_the_client_address() {
    let s = server(Backend::Sqlite).await;
    let body = json!({
        "email": "admin@localhost",
        "password": ADMIN_PASSWORD,
        "client_id": "web-portal",
        "ip_address": "203.0.113.7",
    });
    let r = s.post("/v2/auth/login", body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let admin_id = r.json["user"]["id"].as_str().unwrap_or_default().to_string();

    let (entries, _) = query(&s.kernel().db, &AuditQuery { actor: Some(admin_id.clone()), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("audit query failed: {e}"));
    let login = entries.iter().find(|e| e.action == "auth.login" && e.success);
    assert!(
        login.is_some_and(|e| e.ip_address == "127.0.0.1" && e.metadata.contains("203.0.113.7")),
        "the claimed address is kept in the metadata only: {entries:?}"
    );
    assert!(entries.iter().all(|e| e.ip_address != "203.0.113.7"), "the claimed address is never the client address");
}

#[tokio::test]
async fn v2_refresh_rotates_and_a_reused_token_revokes_the_session() {
    for backend in backends() {
        let s = server(backend).await;
        let login = v2_login(&s, "admin@localhost", ADMIN_PASSWORD, "mobile-app").await;
        assert_eq!(login.status, 200, "{backend:?} {}", login.text);
        let first = str_of(&login, "refresh_token").to_string();

        let body = json!({"refresh_token": first, "client_id": "mobile-app", "device_id": "phone-1"});
        let r = s.post("/v2/auth/refresh", body.clone()).await;
        assert_eq!(r.status, 200, "{backend:?} {}", r.text);
        assert_eq!(r.json["token_type"], "bearer");
        assert_eq!(r.json["expires_in"], 3600);
        assert_eq!(r.json["user"]["username"], "admin");
        assert!(!str_of(&r, "expires_at").is_empty());
        let second = str_of(&r, "refresh_token").to_string();
        let access = str_of(&r, "access_token").to_string();
        assert!(!second.is_empty() && second != first, "a new refresh token every time");
        let admin_id = r.json["user"]["id"].as_str().unwrap_or_default().to_string();
        assert_eq!(s.get_as(&access, &format!("/v2/users/{admin_id}")).await.status, 200);

        // The spent token again: refused, and the session it belongs to ends with it.
        let reuse = s.post("/v2/auth/refresh", body).await;
        assert_eq!(reuse.status, 401, "{backend:?} {}", reuse.text);
        let r = s.post("/v2/auth/refresh", json!({"refresh_token": second, "client_id": "mobile-app"})).await;
        assert_eq!(r.status, 401, "{backend:?}: the rotated token is revoked too: {}", r.text);
        assert_eq!(s.get_as(&access, &format!("/v2/users/{admin_id}")).await.status, 401);
    }
}

#[tokio::test]
async fn v2_refresh_checks_its_fields_and_the_client() {
    let s = server(Backend::Sqlite).await;
    let login = v2_login(&s, "admin@localhost", ADMIN_PASSWORD, "app-a").await;
    let token = str_of(&login, "refresh_token").to_string();

    let cases = [
        (json!({"client_id": "app-a"}), "refresh_token"),
        (json!({"refresh_token": token}), "client_id"),
        (json!({"refresh_token": token, "client_id": ""}), "client_id"),
        (json!({"refresh_token": 5, "client_id": "app-a"}), "refresh_token"),
        (json!({"refresh_token": token, "client_id": "app-a", "device_id": 5}), "device_id"),
    ];
    for (body, field) in cases {
        let r = s.post("/v2/auth/refresh", body.clone()).await;
        assert_eq!(named_field(&r), field, "{body}: {}", r.text);
    }

    let r = s.post("/v2/auth/refresh", json!({"refresh_token": "0".repeat(64), "client_id": "app-a"})).await;
    assert_eq!(r.status, 401, "unknown token: {}", r.text);

    // A token issued to app-a is refused to app-b.
    let r = s.post("/v2/auth/refresh", json!({"refresh_token": token, "client_id": "app-b"})).await;
    assert_eq!(r.status, 401, "{}", r.text);
}

#[tokio::test]
async fn v2_users_list_paginates_and_filters() {
    for backend in backends() {
        let s = server(backend).await;
        let admin = s.admin_token().await;
        create_user(&s, &admin, "alice", &["user"], "active").await;
        create_user(&s, &admin, "bob", &["editor"], "active").await;
        create_user(&s, &admin, "carol", &["user"], "inactive").await;

        let r = s.get_as(&admin, "/v2/users").await;
        assert_eq!(r.status, 200, "{backend:?} {}", r.text);
        assert_eq!(r.json["total"], 4);
        assert_eq!(r.json["limit"], 20);
        assert_eq!(r.json["offset"], 0);
        let users = r.json["users"].as_array().cloned().unwrap_or_default();
        assert_eq!(users.len(), 4);
        for user in &users {
            for field in ["id", "username", "email", "roles", "status", "created_at"] {
                assert!(!user[field].is_null(), "{field} missing: {user}");
            }
            assert!(user.get("password_hash").is_none() && user.get("password").is_none());
            assert!(user.get("permissions").is_none(), "the list does not carry permissions");
        }

        let page1 = s.get_as(&admin, "/v2/users?limit=2&offset=0").await;
        let page2 = s.get_as(&admin, "/v2/users?limit=2&offset=2").await;
        let page3 = s.get_as(&admin, "/v2/users?limit=2&offset=4").await;
        assert_eq!((page1.json["limit"].clone(), page2.json["offset"].clone()), (json!(2), json!(2)));
        let names = |r: &Reply| -> Vec<String> {
            r.json["users"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u["username"].as_str().map(String::from))
                .collect()
        };
        let (n1, n2) = (names(&page1), names(&page2));
        assert_eq!((n1.len(), n2.len()), (2, 2), "{backend:?}");
        assert!(n1.iter().all(|n| !n2.contains(n)), "pages do not overlap: {n1:?} {n2:?}");
        assert!(names(&page3).is_empty());
        assert_eq!(page3.json["total"], 4);

        let r = s.get_as(&admin, "/v2/users?role=editor").await;
        assert_eq!((names(&r), r.json["total"].clone()), (vec!["bob".to_string()], json!(1)), "{backend:?}");
        let r = s.get_as(&admin, "/v2/users?status=inactive").await;
        assert_eq!(names(&r), ["carol"], "{backend:?}");
        let r = s.get_as(&admin, "/v2/users?status=active&role=user").await;
        assert_eq!(names(&r), ["alice"], "{backend:?}");
        let r = s.get_as(&admin, "/v2/users?role=nosuchrole").await;
        assert_eq!((r.status.as_u16(), r.json["total"].clone()), (200, json!(0)));
    }
}

#[tokio::test]
async fn v2_users_list_rejects_bad_paging() {
    let s = server(Backend::Sqlite).await;
    let admin = s.admin_token().await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=2.5", "limit"),
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
    ] {
        let r = s.get_as(&admin, &format!("/v2/users?{query}")).await;
        assert_eq!(named_field(&r), field, "{query}: {}", r.text);
    }
    assert_eq!(s.get_as(&admin, "/v2/users?limit=100&offset=0").await.status, 200);
    assert_eq!(s.get_as(&admin, "/v2/users?limit=1").await.json["users"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn v2_users_need_user_read() {
    let s = server(Backend::Sqlite).await;
    let r = s.get("/v2/users").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json["error"]["code"], "AUTHENTICATION_REQUIRED");

    let viewer = s.user_token("vera", &["viewer"]).await;
    let r = s.get_as(&viewer, "/v2/users").await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "PERMISSION_DENIED");
    assert!(r.json["error"]["message"].as_str().is_some_and(|m| m.contains("user.read")));

    let editor = s.user_token("eddie", &["editor"]).await;
    assert_eq!(s.get_as(&editor, "/v2/users").await.status, 200, "editors hold user.read");
}

#[tokio::test]
async fn v2_get_user_with_permissions_and_activity() {
    for backend in backends() {
        let s = server(backend).await;
        let admin = s.admin_token().await;
        let alice = create_user(&s, &admin, "alice", &["user"], "active").await;
        let login = v2_login(&s, "alice@example.com", USER_PASSWORD, "web-portal").await;
        assert_eq!(login.status, 200, "{backend:?} {}", login.text);

        let r = s.get_as(&admin, &format!("/v2/users/{alice}")).await;
        assert_eq!(r.status, 200, "{backend:?} {}", r.text);
        assert_eq!(r.json["id"], alice.as_str());
        assert_eq!(r.json["username"], "alice");
        assert_eq!(r.json["email"], "alice@example.com");
        assert_eq!(r.json["roles"], json!(["user"]));
        assert_eq!(r.json["status"], "active");
        assert!(r.json["last_login"].is_string(), "{}", r.text);
        assert!(r.json.get("permissions").is_none() && r.json.get("activity").is_none(), "{}", r.text);

        let r = s.get_as(&admin, &format!("/v2/users/{alice}?include_permissions=true")).await;
        let perms = r.json["permissions"].as_array().cloned().unwrap_or_default();
        assert!(perms.contains(&json!("content.read")) && !perms.contains(&json!("user.write")), "{}", r.text);
        assert!(r.json.get("activity").is_none());

        let r = s.get_as(&admin, &format!("/v2/users/{alice}?include_activity=true&include_permissions=false")).await;
        assert!(r.json.get("permissions").is_none(), "{}", r.text);
        let activity = r.json["activity"].as_array().cloned().unwrap_or_default();
        let login_entry = activity.iter().find(|a| a["action"] == "auth.login");
        assert!(
            login_entry.is_some_and(|a| a["success"] == true && a["timestamp"].is_string()),
            "{backend:?} {}",
            r.text
        );
        assert!(activity.len() <= 20);

        let r = s.get_as(&admin, &format!("/v2/users/{alice}?include_permissions=1&include_activity=1")).await;
        assert!(r.json["permissions"].is_array() && r.json["activity"].is_array(), "{}", r.text);

        let r = s.get_as(&admin, &format!("/v2/users/{alice}?include_permissions=maybe")).await;
        assert_eq!(named_field(&r), "include_permissions");

        let r = s.get_as(&admin, "/v2/users/no-such-user").await;
        assert_eq!(r.status, 404, "{}", r.text);
        assert_eq!(r.json["error"]["code"], "RESOURCE_NOT_FOUND");
    }
}

#[tokio::test]
async fn v2_get_user_is_open_to_the_user_themself_only() {
    let s = server(Backend::Sqlite).await;
    let admin = s.admin_token().await;
    let vera = create_user(&s, &admin, "vera", &["viewer"], "active").await;
    let other = create_user(&s, &admin, "otto", &["user"], "active").await;
    let login = v2_login(&s, "vera@example.com", USER_PASSWORD, "web-portal").await;
    let token = str_of(&login, "access_token").to_string();

    let r = s.get_as(&token, &format!("/v2/users/{vera}?include_permissions=true&include_activity=true")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json["permissions"].as_array().is_some_and(|p| p.contains(&json!("content.read"))));
    assert!(r.json["activity"].is_array());

    let r = s.get_as(&token, &format!("/v2/users/{other}")).await;
    assert_eq!(r.status, 403, "{}", r.text);
    // Another user's id that does not exist is a 403 too: existence is not revealed.
    assert_eq!(s.get_as(&token, "/v2/users/no-such-user").await.status, 403);
}
