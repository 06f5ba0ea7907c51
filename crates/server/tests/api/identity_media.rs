//! Identity on the media platform surface: `/auth/login`, `/auth/refresh`, `/auth/api-keys`,
//! the Jellyfin-style `/api/media/Users/authenticatebyname`, and `/api/user/profile`.

use nexus_kernel::clock::Timestamp;
use nexus_testkit::reqwest::Method;
use nexus_testkit::{ADMIN_PASSWORD, Backend, Reply, TestServer, backends, json};
use serde_json::Value;

/// A server whose login throttle does not get in the way of tests that log in often.
async fn server(backend: Backend) -> TestServer {
    TestServer::start_with(backend, |c| c.auth.login_attempts_per_minute = 1000).await
}

fn str_of<'a>(r: &'a Reply, field: &str) -> &'a str {
    r.json.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// Asserts `r` is an error in the media dialect with `status` and media `code`.
fn assert_media_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    let field = |name: &str| r.json.pointer(&format!("/error/{name}")).and_then(Value::as_str).unwrap_or_default();
    assert_eq!(field("code"), code, "{}", r.text);
    assert!(!field("message").is_empty(), "{}", r.text);
    assert_eq!(field("documentation_url"), format!("/api/errors/{code}"), "{}", r.text);
    assert!(field("request_id").starts_with("req_"), "{}", r.text);
    assert!(Timestamp::parse_rfc3339(field("timestamp")).is_some(), "{}", r.text);
}

async fn media_login(s: &TestServer, username: &str, password: &str) -> Reply {
    s.post("/auth/login", json!({"username": username, "password": password, "device_id": "desktop_browser"})).await
}

#[tokio::test]
async fn media_login_returns_the_documented_shape() {
    for backend in backends() {
        let s = server(backend).await;
        let r = media_login(&s, "admin", ADMIN_PASSWORD).await;
        assert_eq!(r.status, 200, "{backend:?} {}", r.text);
        assert!(!str_of(&r, "access_token").is_empty() && !str_of(&r, "refresh_token").is_empty());
        assert_eq!(r.json["expires_in"], 3600);
        assert_eq!(r.json["token_type"], "Bearer");
        assert!(r.json["expires_at"].as_str().and_then(Timestamp::parse_rfc3339).is_some());
        assert!(r.json["user"]["id"].as_str().is_some_and(|id| !id.is_empty()));
        assert_eq!(r.json["user"]["username"], "admin");
        assert_eq!(r.json["user"]["roles"], json!(["admin"]));

        let profile = s.get_as(str_of(&r, "access_token"), "/api/user/profile").await;
        assert_eq!(profile.status, 200, "{}", profile.text);
        assert_eq!(profile.json["username"], "admin");

        // Without a device id, too.
        let r = s.post("/auth/login", json!({"username": "admin", "password": ADMIN_PASSWORD})).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
}

#[tokio::test]
async fn media_auth_errors_use_the_media_dialect() {
    let s = server(Backend::Sqlite).await;
    let r = media_login(&s, "admin", "wrong-Pass1").await;
    assert_media_error(&r, 401, "UNAUTHORIZED");
    let r = media_login(&s, "nobody", "wrong-Pass1").await;
    assert_media_error(&r, 401, "UNAUTHORIZED");

    let r = s.post("/auth/login", json!({"username": "admin"})).await;
    assert_media_error(&r, 400, "INVALID_REQUEST");
    assert!(r.json["error"]["details"].as_str().is_some_and(|d| d.contains("password")), "{}", r.text);
    let r = s.post("/auth/login", json!({"username": 5, "password": "x"})).await;
    assert_media_error(&r, 400, "INVALID_REQUEST");
    assert!(r.json["error"]["details"].as_str().is_some_and(|d| d.contains("username")), "{}", r.text);
    let r = s.post("/auth/login", json!({"username": "", "password": "x"})).await;
    assert_media_error(&r, 400, "INVALID_REQUEST");
    let r = s.post("/auth/login", json!({"username": "admin", "password": "x", "device_id": false})).await;
    assert!(r.json["error"]["details"].as_str().is_some_and(|d| d.contains("device_id")), "{}", r.text);

    let r = s.post("/auth/refresh", json!({})).await;
    assert_media_error(&r, 400, "INVALID_REQUEST");
    let r = s.post("/auth/refresh", json!({"refresh_token": "def456"})).await;
    assert_media_error(&r, 401, "UNAUTHORIZED");

    let r = s.post("/auth/api-keys", json!({"name": "x"})).await;
    assert_media_error(&r, 401, "UNAUTHORIZED");
}

#[tokio::test]
async fn media_refresh_rotates_and_a_reused_token_revokes_the_session() {
    for backend in backends() {
        let s = server(backend).await;
        let login = media_login(&s, "admin", ADMIN_PASSWORD).await;
        let first = str_of(&login, "refresh_token").to_string();

        let r = s.post("/auth/refresh", json!({"refresh_token": first})).await;
        assert_eq!(r.status, 200, "{backend:?} {}", r.text);
        assert_eq!(r.json["token_type"], "Bearer");
        assert_eq!(r.json["expires_in"], 3600);
        assert_eq!(r.json["user"]["username"], "admin");
        let second = str_of(&r, "refresh_token").to_string();
        let access = str_of(&r, "access_token").to_string();
        assert!(!second.is_empty() && second != first);
        assert_eq!(s.get_as(&access, "/api/user/profile").await.status, 200);

        let reuse = s.post("/auth/refresh", json!({"refresh_token": first})).await;
        assert_media_error(&reuse, 401, "UNAUTHORIZED");
        let r = s.post("/auth/refresh", json!({"refresh_token": second})).await;
        assert_media_error(&r, 401, "UNAUTHORIZED");
        assert_eq!(s.get_as(&access, "/api/user/profile").await.status, 401, "the session's access token ends too");
    }
}

#[tokio::test]
async fn media_refresh_takes_only_media_refresh_tokens() {
    let s = server(Backend::Sqlite).await;
    let v2 = s
        .post("/v2/auth/login", json!({"email": "admin@localhost", "password": ADMIN_PASSWORD, "client_id": "app"}))
        .await;
    let r = s.post("/auth/refresh", json!({"refresh_token": str_of(&v2, "refresh_token")})).await;
    assert_media_error(&r, 401, "UNAUTHORIZED");
}

#[tokio::test]
async fn media_api_key_works_with_x_api_key_and_media_browser_headers() {
    for backend in backends() {
        let s = server(backend).await;
        let user = s.user_token("alice", &["user"]).await;
        let body = json!({"name": "Mobile App Access", "permissions": ["read", "write"], "expires_in": 2_592_000});
        let r = s.post_as(&user, "/auth/api-keys", body).await;
        assert_eq!(r.status, 201, "{backend:?} {}", r.text);
        let key = str_of(&r, "api_key").to_string();
        assert!(key.starts_with("nexus_key_") && key.len() > 30, "{key}");
        assert!(!str_of(&r, "key_id").is_empty());
        assert_eq!(r.json["name"], "Mobile App Access");
        assert_eq!(r.json["permissions"], json!(["read", "write"]));
        let expires = r.json["expires_at"].as_str().and_then(Timestamp::parse_rfc3339);
        let in_30_days = Timestamp::now().add_seconds(2_592_000).as_unix_seconds();
        assert!(expires.is_some_and(|t| (t.as_unix_seconds() - in_30_days).abs() < 5), "{}", r.text);

        let by_header = s.call(Method::GET, "/api/user/profile", None, &[("X-API-Key", key.as_str())]).await;
        assert_eq!(by_header.status, 200, "{backend:?} {}", by_header.text);
        assert_eq!(by_header.json["username"], "alice");
        assert_eq!(by_header.json["email"], "alice@example.com");
        assert!(by_header.json["id"].is_string() && by_header.json["full_name"].is_string());
        assert_eq!(by_header.json["roles"], json!(["user"]));
        let perms = by_header.json["permissions"].as_array().cloned().unwrap_or_default();
        assert!(perms.contains(&json!("content.read")) && perms.contains(&json!("content.write")));
        assert!(!perms.contains(&json!("user.write")), "a key never exceeds its owner: {perms:?}");

        let media_browser = format!(r#"MediaBrowser Client="Jellyfin Web", Device="Firefox", Token="{key}""#);
        let r = s.call(Method::GET, "/api/user/profile", None, &[("Authorization", media_browser.as_str())]).await;
        assert_eq!(r.status, 200, "{backend:?} {}", r.text);
        assert_eq!(r.json["username"], "alice");

        // A read-only key shows (and holds) only read permissions.
        let r = s.post_as(&user, "/auth/api-keys", json!({"name": "ro", "permissions": ["read"]})).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert!(r.json["expires_at"].is_null());
        let read_only = str_of(&r, "api_key").to_string();
        let r = s.call(Method::GET, "/api/user/profile", None, &[("X-API-Key", read_only.as_str())]).await;
        let perms = r.json["permissions"].as_array().cloned().unwrap_or_default();
        assert!(perms.contains(&json!("content.read")) && !perms.contains(&json!("content.write")), "{perms:?}");
    }
}

#[tokio::test]
async fn media_api_key_requests_are_validated() {
    let s = server(Backend::Sqlite).await;
    let user = s.user_token("alice", &["user"]).await;
    let cases = [
        (json!({"permissions": ["read"]}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "k", "permissions": ["bogus"]}), "permissions"),
        (json!({"name": "k", "permissions": "read"}), "permissions"),
        (json!({"name": "k", "expires_in": 0}), "expires_in"),
        (json!({"name": "k", "expires_in": -5}), "expires_in"),
        (json!({"name": "k", "expires_in": "soon"}), "expires_in"),
        (json!({"name": "k", "expires_in": u64::MAX}), "expires_in"),
        (json!({"name": "k", "premium": "yes"}), "premium"),
    ];
    for (body, field) in cases {
        let r = s.post_as(&user, "/auth/api-keys", body.clone()).await;
        assert_media_error(&r, 400, "INVALID_REQUEST");
        let details = r.json["error"]["details"].as_str().unwrap_or_default();
        assert!(details.starts_with(&format!("{field}:")), "{body}: {details}");
    }

    // Premium keys need auth.admin.
    let r = s.post_as(&user, "/auth/api-keys", json!({"name": "k", "premium": true})).await;
    assert_media_error(&r, 403, "FORBIDDEN");
    let admin = s.admin_token().await;
    let r = s.post_as(&admin, "/auth/api-keys", json!({"name": "k", "premium": true})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(str_of(&r, "api_key").starts_with("nexus_premium_key_"));
    assert_eq!(r.json["premium"], true);
}

#[tokio::test]
async fn jellyfin_authenticate_by_name() {
    for backend in backends() {
        let s = server(backend).await;
        let r = s.post("/api/media/Users/authenticatebyname", json!({"Username": "admin", "Pw": ADMIN_PASSWORD})).await;
        assert_eq!(r.status, 200, "{backend:?} {}", r.text);
        let server_id = s.kernel().server_id.clone();
        let token = str_of(&r, "AccessToken").to_string();
        assert!(!token.is_empty());
        assert_eq!(r.json["ServerId"], server_id.as_str());
        let user = &r.json["User"];
        assert!(user["Id"].as_str().is_some_and(|id| !id.is_empty()));
        assert_eq!(user["Name"], "admin");
        assert_eq!(user["ServerId"], server_id.as_str());
        assert_eq!(user["HasPassword"], true);
        assert_eq!(user["Policy"]["IsAdministrator"], true);

        let header = format!(r#"MediaBrowser Token="{token}""#);
        let profile = s.call(Method::GET, "/api/user/profile", None, &[("Authorization", header.as_str())]).await;
        assert_eq!(profile.status, 200, "{backend:?} {}", profile.text);
        assert_eq!(profile.json["id"], user["Id"]);
        assert_eq!(profile.json["username"], "admin");
    }
}

#[tokio::test]
async fn jellyfin_non_admins_and_failures() {
    let s = server(Backend::Sqlite).await;
    s.user_token("alice", &["user"]).await;
    let r = s.post("/api/media/Users/authenticatebyname", json!({"Username": "alice", "Pw": "user-Pass1"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["User"]["Policy"]["IsAdministrator"], false);

    let r = s.post("/api/media/Users/authenticatebyname", json!({"Username": "admin", "Pw": "wrong-Pass1"})).await;
    assert_media_error(&r, 401, "UNAUTHORIZED");
    assert!(r.json.get("AccessToken").is_none());
    let r = s.post("/api/media/Users/authenticatebyname", json!({"Username": "admin", "Pw": ""})).await;
    assert_media_error(&r, 401, "UNAUTHORIZED");

    let r = s.post("/api/media/Users/authenticatebyname", json!({"Pw": "x"})).await;
    assert_media_error(&r, 400, "INVALID_REQUEST");
    assert!(r.json["error"]["details"].as_str().is_some_and(|d| d.starts_with("Username:")), "{}", r.text);
}

#[tokio::test]
async fn user_profile_needs_a_valid_credential() {
    let s = server(Backend::Sqlite).await;
    let r = s.get("/api/user/profile").await;
    assert_eq!(r.status, 401, "{}", r.text);
    let r = s.call(Method::GET, "/api/user/profile", None, &[("X-API-Key", "nexus_key_not-a-real-key")]).await;
    assert_eq!(r.status, 401, "{}", r.text);
    let r = s.call(Method::GET, "/api/user/profile", None, &[("Authorization", r#"MediaBrowser Token="nope""#)]).await;
    assert_eq!(r.status, 401, "{}", r.text);

    // A revoked key stops working.
    let admin = s.admin_token().await;
    let r = s.post_as(&admin, "/auth/api-keys", json!({"name": "temp", "permissions": ["read"]})).await;
    let key = str_of(&r, "api_key").to_string();
    let key_id = str_of(&r, "key_id").to_string();
    let ok = s.call(Method::GET, "/api/user/profile", None, &[("X-API-Key", key.as_str())]).await;
    assert_eq!(ok.status, 200);
    let r = s.call_as(&admin, Method::DELETE, &format!("/api/auth/api-keys/{key_id}"), None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.call(Method::GET, "/api/user/profile", None, &[("X-API-Key", key.as_str())]).await;
    assert_eq!(r.status, 401, "{}", r.text);
}
