//! Identity on the framework and secrets-manager surfaces: logins, tokens, keys, users, and
//! every way they should fail.

use nexus_testkit::reqwest::Method;
use nexus_testkit::{ADMIN_PASSWORD, Backend, TestServer, backends, json};

#[tokio::test]
async fn seed_login_examples_work_on_both_surfaces() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let r = s.post("/api/auth/login", json!({"username": "admin", "password": ADMIN_PASSWORD})).await;
        assert_eq!(r.status, 200, "{backend:?} {}", r.text);
        for field in ["access_token", "refresh_token", "token_type", "expires_in", "user"] {
            assert!(!r.json[field].is_null(), "{field} missing: {}", r.text);
        }
        assert_eq!(r.json["token_type"], "bearer");
        assert_eq!(r.json["expires_in"], 3600);
        assert_eq!(r.json["user"]["username"], "admin");
        assert_eq!(r.json["user"]["roles"], json!(["admin"]));

        let r = s.post("/api/v1/auth/login", json!({"username": "admin", "password": ADMIN_PASSWORD})).await;
        assert_eq!(r.status, 200);
        let token = r.json["token"].as_str().unwrap_or_default().to_string();
        assert!(!token.is_empty());
        assert_eq!(r.json["user"]["role"], "admin");
        assert!(r.json["user"]["id"].is_string() && r.json["user"]["name"].is_string());
        let expires = r.json["expires_at"].as_str().and_then(nexus_kernel::clock::Timestamp::parse_rfc3339);
        let in_a_day = nexus_kernel::clock::Timestamp::now().add_seconds(24 * 3600);
        assert!(expires.is_some_and(|t| (t.as_unix_seconds() - in_a_day.as_unix_seconds()).abs() < 5));

        let r = s.call_as(&token, Method::POST, "/api/v1/auth/refresh", None).await;
        assert_eq!(r.status, 200);
        assert!(r.json["token"].is_string() && r.json["expires_at"].is_string());
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let s = TestServer::start().await;
    let wrong = s.post("/api/v1/auth/login", json!({"username": "admin", "password": "nope-nope-1"})).await;
    let unknown = s.post("/api/v1/auth/login", json!({"username": "ghost", "password": "nope-nope-1"})).await;
    for r in [&wrong, &unknown] {
        assert_eq!(r.status, 401);
        assert_eq!(r.json["error"], "Unauthorized");
        assert_eq!(r.json["message"], "invalid credentials");
    }
    let r = s.post("/api/auth/login", json!({"username": "ghost", "password": "x"})).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json["error"]["code"], "INVALID_CREDENTIALS");
}

#[tokio::test]
async fn bad_json_is_400_or_415_in_each_dialect() {
    let s = TestServer::start().await;
    // Wrongly typed field: framework dialect names it.
    let r = s.post("/api/auth/login", json!({"username": 5, "password": "x"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["error"]["code"], "VALIDATION_ERROR");
    assert_eq!(r.json["error"]["details"][0]["field"], "username");

    // Missing field: v1 dialect names it too.
    let r = s.post("/api/v1/auth/login", json!({"username": "admin"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["error"], "Bad Request");
    assert_eq!(r.json["code"], "VALIDATION_ERROR");
    assert_eq!(r.json["details"][0]["field"], "password");

    // Malformed JSON.
    let resp = s
        .client
        .post(s.url("/api/auth/login"))
        .header("content-type", "application/json")
        .body("{\"username\": ")
        .send()
        .await
        .map_err(|e| e.to_string());
    let r = nexus_testkit::read(resp.unwrap_or_else(|e| panic!("{e}"))).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["error"]["details"][0]["field"], "body");

    // Not JSON at all.
    let resp = s.client.post(s.url("/api/v1/auth/login")).header("content-type", "text/plain").body("hi").send().await;
    let r = nexus_testkit::read(resp.unwrap_or_else(|e| panic!("{e}"))).await;
    assert_eq!(r.status, 415);
    assert_eq!(r.json["code"], "UNSUPPORTED_MEDIA_TYPE");
    assert_eq!(r.json["success"], false);
}

#[tokio::test]
async fn missing_tampered_none_and_expired_tokens_are_refused() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.auth.access_token_ttl_secs = 1).await;
    let r = s.get("/api/users").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json["error"]["code"], "AUTHENTICATION_REQUIRED");

    let token = s.admin_token().await;
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    // Flip one character of the signature.
    let sig = parts[2].clone();
    let flipped: String =
        sig.chars().enumerate().map(|(i, c)| if i == 3 { if c == 'A' { 'B' } else { 'A' } } else { c }).collect();
    parts[2] = flipped;
    let r = s.get_as(&parts.join("."), "/api/users").await;
    assert_eq!(r.status, 401, "tampered");

    // Same claims, `alg: none`, no signature.
    use base64::Engine;
    let none = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let r = s.get_as(&format!("{none}.{}.", parts[1]), "/api/users").await;
    assert_eq!(r.status, 401, "alg none");

    let r = s.get_as("not-a-jwt", "/api/users").await;
    assert_eq!(r.status, 401, "malformed");

    // The test server allows 5 s of clock leeway; move past it.
    s.kernel().clock.advance(std::time::Duration::from_secs(7));
    let r = s.get_as(&token, "/api/users").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json["error"]["code"], "TOKEN_EXPIRED");
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_whole_session() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let r = s.post("/api/auth/login", json!({"username": "admin", "password": ADMIN_PASSWORD})).await;
        let first = r.json["refresh_token"].as_str().unwrap_or_default().to_string();
        let access = r.json["access_token"].as_str().unwrap_or_default().to_string();

        let r = s.post("/api/auth/refresh", json!({"refresh_token": first})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let second = r.json["refresh_token"].as_str().unwrap_or_default().to_string();
        let second_access = r.json["access_token"].as_str().unwrap_or_default().to_string();
        assert_ne!(first, second);
        assert_eq!(s.get_as(&second_access, "/api/users").await.status, 200);

        // Spending the first token again is theft: the session ends for everyone holding it.
        let r = s.post("/api/auth/refresh", json!({"refresh_token": first})).await;
        assert_eq!(r.status, 401);
        let r = s.post("/api/auth/refresh", json!({"refresh_token": second})).await;
        assert_eq!(r.status, 401, "the rotated token dies with its session");
        assert_eq!(s.get_as(&second_access, "/api/users").await.status, 401);
        assert_eq!(s.get_as(&access, "/api/users").await.status, 401);

        let admin = s.admin_token().await;
        let audit = nexus_kernel::audit::query(
            &s.kernel().db,
            &nexus_kernel::audit::AuditQuery { action: Some("auth.refresh".into()), ..Default::default() },
        )
        .await
        .unwrap_or_default();
        assert!(audit.0.iter().any(|e| !e.success && e.metadata.contains("reused")), "reuse audited");
        drop(admin);
    }
}

#[tokio::test]
async fn logout_revokes_the_token_and_its_refresh_chain() {
    let s = TestServer::start().await;
    let r = s.post("/api/auth/login", json!({"username": "admin", "password": ADMIN_PASSWORD})).await;
    let access = r.json["access_token"].as_str().unwrap_or_default().to_string();
    let refresh = r.json["refresh_token"].as_str().unwrap_or_default().to_string();
    let r = s.call_as(&access, Method::POST, "/api/auth/logout", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["message"], "Successfully logged out");
    assert_eq!(s.get_as(&access, "/api/users").await.status, 401);
    assert_eq!(s.post("/api/auth/refresh", json!({"refresh_token": refresh})).await.status, 401);
    // Another session of the same user is untouched.
    let other = s.admin_token().await;
    assert_eq!(s.get_as(&other, "/api/users").await.status, 200);
}

#[tokio::test]
async fn logout_on_one_instance_reaches_another_on_the_same_database() {
    let Some(_) = nexus_testkit::postgres_url() else { return };
    // Instances sharing a database share its keys too.
    let share = |c: &mut nexus_kernel::config::Config| {
        c.auth.jwt_secret = Some("k".repeat(40));
        c.secrets.master_key = Some(String::from("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="));
    };
    let a = TestServer::start_with(Backend::Postgres, share).await;
    let shared = a.config.database.url.clone();
    let b = TestServer::start_with(Backend::Sqlite, |c| {
        share(c);
        c.database.url = shared;
    })
    .await;
    let token = a.admin_token().await;
    assert_eq!(b.get_as(&token, "/api/users").await.status, 200, "a token works on every instance");
    assert_eq!(a.call_as(&token, Method::POST, "/api/auth/logout", None).await.status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while b.get_as(&token, "/api/users").await.status != 401 {
        assert!(std::time::Instant::now() < deadline, "revocation did not cross instances");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn api_keys_are_shown_once_work_everywhere_and_die_when_revoked() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let admin = s.admin_token().await;
        let r = s
            .post_as(
                &admin,
                "/api/v1/apikeys",
                json!({"name": "CI/CD Pipeline", "expires_in": 2_592_000_000_000_000u64}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let key = r.json["key"].as_str().unwrap_or_default().to_string();
        let id = r.json["id"].as_str().unwrap_or_default().to_string();
        assert!(key.starts_with("nx_"));
        assert_eq!(r.json["prefix"].as_str().map(str::len), Some(8));
        assert!(key.starts_with(r.json["prefix"].as_str().unwrap_or("-")));
        assert!(r.json["expires_at"].is_string());

        // The key authenticates on every surface, through every documented header.
        for header in ["X-Nexus-API-Key", "X-API-Key"] {
            let r = s.call(Method::GET, "/api/v1/apikeys", None, &[(header, key.as_str())]).await;
            assert_eq!(r.status, 200, "{header}");
        }
        assert_eq!(s.get_as(&key, "/api/users").await.status, 200);

        let r = s.get_as(&admin, "/api/v1/apikeys").await;
        assert_eq!(r.json["total"], 1);
        assert!(!r.text.contains(&key), "listing never shows the key");
        assert!(r.json["keys"][0]["last_used"].is_string() || r.json["keys"][0]["last_used"].is_null());

        let r = s.call_as(&admin, Method::DELETE, &format!("/api/v1/apikeys?id={id}"), None).await;
        assert_eq!(r.status, 204);
        let r = s.call(Method::GET, "/api/v1/apikeys", None, &[("X-Nexus-API-Key", key.as_str())]).await;
        assert_eq!(r.status, 401);
        let r = s.call_as(&admin, Method::DELETE, "/api/v1/apikeys", None).await;
        assert_eq!(r.status, 400);
        let r = s.call_as(&admin, Method::DELETE, "/api/v1/apikeys?id=ak_live_nothing", None).await;
        assert_eq!(r.status, 404);
    }
}

#[tokio::test]
async fn a_key_stops_working_when_it_expires() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    // One second, in the secrets seed's nanoseconds.
    let r = s.post_as(&admin, "/api/v1/apikeys", json!({"name": "short-lived", "expires_in": 1_000_000_000u64})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let key = r.json["key"].as_str().unwrap_or_default().to_string();
    assert_eq!(s.get_as(&key, "/api/users").await.status, 200);

    s.kernel().clock.advance(std::time::Duration::from_millis(1500));
    // Also after the key was used (and its owner looked up) once.
    let r = s.get_as(&key, "/api/users").await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "TOKEN_EXPIRED");
    assert!(!r.text.contains(&key), "the key is never echoed");
    let r = s.call(Method::GET, "/api/v1/apikeys", None, &[("X-Nexus-API-Key", key.as_str())]).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn framework_keys_carry_scopes_that_never_exceed_the_owner() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let r = s
        .post_as(
            &admin,
            "/api/auth/api-keys",
            json!({"name": "Production API Key", "expires_at": "2099-12-31T23:59:59Z", "scopes": ["read"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.json["id"].as_str().is_some_and(|i| i.starts_with("ak_live_")));
    let key = r.json["key"].as_str().unwrap_or_default().to_string();
    assert!(key.starts_with("sk_live_"));
    assert_eq!(r.json["scopes"], json!(["read"]));
    assert_eq!(r.json["expires_at"], "2099-12-31T23:59:59Z");

    // Read scope: listing users works, creating one does not.
    let r = s.call(Method::GET, "/api/users", None, &[("X-API-Key", key.as_str())]).await;
    assert_eq!(r.status, 200);
    let body = json!({"username": "scoped", "email": "scoped@example.com", "password": "Pass123!"});
    let r = s.call(Method::POST, "/api/users", Some(body), &[("X-API-Key", key.as_str())]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json["error"]["code"], "PERMISSION_DENIED");

    // A viewer's key with write scope still cannot write.
    let viewer = s.user_token("vera", &["viewer"]).await;
    let r = s.post_as(&viewer, "/api/auth/api-keys", json!({"name": "mine", "scopes": ["write", "user.write"]})).await;
    let vkey = r.json["key"].as_str().unwrap_or_default().to_string();
    let body = json!({"username": "sneaky", "email": "sneaky@example.com", "password": "Pass123!"});
    let r = s.call(Method::POST, "/api/users", Some(body), &[("X-API-Key", vkey.as_str())]).await;
    assert_eq!(r.status, 403);

    // Expired keys and bad input.
    let r = s.post_as(&admin, "/api/auth/api-keys", json!({"name": "old", "expires_at": "2001-01-01T00:00:00Z"})).await;
    assert_eq!(r.status, 400);
    let r = s.post_as(&admin, "/api/auth/api-keys", json!({"name": "x", "expires_at": "tomorrow"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["error"]["details"][0]["field"], "expires_at");
    let r = s.post_as(&admin, "/api/auth/api-keys", json!({"name": "x", "scopes": ["fly"]})).await;
    assert_eq!(r.status, 400);
    let r = s.post_as(&viewer, "/api/auth/api-keys", json!({"name": "x", "premium": true})).await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn users_crud_with_filters_conflicts_and_permissions() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let admin = s.admin_token().await;
        let r = s
            .post_as(
                &admin,
                "/api/users",
                json!({"username": "jane.smith", "email": "jane.smith@example.com", "password": "SecurePassword123!",
                       "full_name": "Jane Smith", "roles": ["user"], "metadata": {"department": "Marketing", "location": "London"}}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        for field in ["id", "username", "email", "full_name", "roles", "status", "created_at"] {
            assert!(!r.json[field].is_null(), "{field}");
        }
        assert!(!r.text.contains("password"), "no password or hash in responses");
        let jane = r.json["id"].as_str().unwrap_or_default().to_string();

        // Duplicates, case-insensitively.
        let dup = json!({"username": "Jane.Smith", "email": "other@example.com", "password": "Pass123!"});
        let r = s.post_as(&admin, "/api/users", dup).await;
        assert_eq!(r.status, 409);
        assert_eq!(r.json["error"]["code"], "CONFLICT");
        let dup = json!({"username": "someone", "email": "JANE.SMITH@example.com", "password": "Pass123!"});
        assert_eq!(s.post_as(&admin, "/api/users", dup).await.status, 409);

        // Validation names every bad field.
        let bad = json!({"username": "x", "email": "not-an-email", "password": "short", "roles": ["wizard"]});
        let r = s.post_as(&admin, "/api/users", bad).await;
        assert_eq!(r.status, 400);
        let fields: Vec<&str> =
            r.json["error"]["details"].as_array().into_iter().flatten().filter_map(|d| d["field"].as_str()).collect();
        for f in ["username", "email", "password", "roles"] {
            assert!(fields.contains(&f), "{f} not named in {fields:?}");
        }

        // Read it back with permissions; filter and search the list.
        let r = s.get_as(&admin, &format!("/api/users/{jane}")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json["metadata"]["department"], "Marketing");
        assert!(r.json["permissions"].as_array().is_some_and(|p| p.iter().any(|x| x == "content.read")));
        let r = s.get_as(&admin, "/api/users?role=user&status=active&search=SMITH").await;
        assert_eq!(r.json["total"], 1);
        assert_eq!(r.json["users"][0]["username"], "jane.smith");
        let r = s.get_as(&admin, "/api/users?search=%25").await;
        assert_eq!(r.json["total"], 0, "LIKE wildcards in search are literal");
        let r = s.get_as(&admin, "/api/users?limit=abc").await;
        assert_eq!(r.status, 400);
        assert_eq!(r.json["error"]["details"][0]["field"], "limit");
        assert_eq!(s.get_as(&admin, "/api/users?limit=0").await.status, 400);

        // Update: the seed's example; then a user without user.write is refused.
        let r = s
            .call_as(
                &admin,
                Method::PUT,
                &format!("/api/users/{jane}"),
                Some(json!({"full_name": "Jane Smith-Johnson", "email": "jane.johnson@example.com", "roles": ["user", "editor"],
                            "metadata": {"department": "Executive", "location": "London"}})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["full_name"], "Jane Smith-Johnson");
        assert_eq!(r.json["roles"], json!(["editor", "user"]));
        let jane_token = s.login("jane.smith", "SecurePassword123!").await;
        let r = s.call_as(&jane_token, Method::DELETE, &format!("/api/users/{jane}"), None).await;
        assert_eq!(r.status, 403);
        // Self-service: own name yes, own roles no.
        let r =
            s.call_as(&jane_token, Method::PUT, &format!("/api/users/{jane}"), Some(json!({"full_name": "J"}))).await;
        assert_eq!(r.status, 200);
        let r =
            s.call_as(&jane_token, Method::PUT, &format!("/api/users/{jane}"), Some(json!({"roles": ["admin"]}))).await;
        assert_eq!(r.status, 403);

        let r = s.call_as(&admin, Method::DELETE, &format!("/api/users/{jane}"), None).await;
        assert_eq!(r.status, 204);
        assert_eq!(s.get_as(&admin, &format!("/api/users/{jane}")).await.status, 404);
        assert_eq!(s.get_as(&jane_token, "/api/users").await.status, 401, "a deleted user's tokens die");
    }
}

#[tokio::test]
async fn the_last_admin_cannot_be_deleted_or_demoted() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let r = s.get_as(&admin, "/api/users?role=admin").await;
    let id = r.json["users"][0]["id"].as_str().unwrap_or_default().to_string();
    let r = s.call_as(&admin, Method::DELETE, &format!("/api/users/{id}"), None).await;
    assert_eq!(r.status, 409);
    let r = s.call_as(&admin, Method::PUT, &format!("/api/users/{id}"), Some(json!({"roles": ["user"]}))).await;
    assert_eq!(r.status, 409);
    let r = s.call_as(&admin, Method::PUT, &format!("/api/users/{id}"), Some(json!({"status": "suspended"}))).await;
    assert_eq!(r.status, 409);
    // With a second admin, the first may step down.
    let second = json!({"username": "root2", "email": "root2@example.com", "password": "Pass123!", "roles": ["admin"]});
    assert_eq!(s.post_as(&admin, "/api/users", second).await.status, 201);
    let r = s.call_as(&admin, Method::PUT, &format!("/api/users/{id}"), Some(json!({"roles": ["user"]}))).await;
    assert_eq!(r.status, 200);
    assert_eq!(s.get_as(&admin, "/api/users").await.status, 401, "a demoted user's old token is revoked");
}

#[tokio::test]
async fn suspended_users_cannot_log_in_and_accounts_lock_after_failures() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.auth.lockout_threshold = 3;
        c.auth.login_attempts_per_minute = 100;
    })
    .await;
    let admin = s.admin_token().await;
    let body = json!({"username": "sam", "email": "sam@example.com", "password": "Pass123!"});
    let id = s.post_as(&admin, "/api/users", body).await.json["id"].as_str().unwrap_or_default().to_string();
    let sam = s.login("sam", "Pass123!").await;

    s.call_as(&admin, Method::PUT, &format!("/api/users/{id}"), Some(json!({"status": "suspended"}))).await;
    let r = s.post("/api/auth/login", json!({"username": "sam", "password": "Pass123!"})).await;
    assert_eq!(r.status, 401);
    assert!(r.json["error"]["message"].as_str().is_some_and(|m| m.contains("suspended")));
    assert_eq!(s.get_as(&sam, "/api/auth/api-keys").await.status, 401, "suspension revokes tokens");
    s.call_as(&admin, Method::PUT, &format!("/api/users/{id}"), Some(json!({"status": "active"}))).await;

    for _ in 0..3 {
        let r = s.post("/api/auth/login", json!({"username": "sam", "password": "wrong-Pass1"})).await;
        assert_eq!(r.status, 401);
    }
    let r = s.post("/api/auth/login", json!({"username": "sam", "password": "Pass123!"})).await;
    assert_eq!(r.status, 401, "locked even with the right password");
    assert!(r.json["error"]["message"].as_str().is_some_and(|m| m.contains("locked")));
}

#[tokio::test]
async fn logins_are_throttled_per_client_with_retry_after() {
    let s = TestServer::start().await;
    // The login budget is per clock minute: all attempts must fall into one.
    crate::fresh_window(&s, 60);
    let mut last = None;
    for _ in 0..11 {
        last = Some(s.post("/api/auth/login", json!({"username": "ghost", "password": "x"})).await);
    }
    let r = last.unwrap_or_else(|| unreachable!());
    assert_eq!(r.status, 429);
    assert_eq!(r.json["error"]["code"], "RATE_LIMIT_EXCEEDED");
    assert!(r.json["error"]["retry_after"].as_u64().is_some_and(|s| (1..=60).contains(&s)));
    assert_eq!(r.json["error"]["limit"], 10);
    assert!(r.header("retry-after").is_some());
    // The v1 surface shares the budget and answers in its own dialect.
    let r = s.post("/api/v1/auth/login", json!({"username": "admin", "password": ADMIN_PASSWORD})).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json["code"], "RATE_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn identity_actions_are_audited_without_secrets() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    s.post("/api/auth/login", json!({"username": "admin", "password": "wrong-Pass1"})).await;
    let body = json!({"username": "ann", "email": "ann@example.com", "password": "Pass123!"});
    let id = s.post_as(&admin, "/api/users", body).await.json["id"].as_str().unwrap_or_default().to_string();
    s.call_as(&admin, Method::PUT, &format!("/api/users/{id}"), Some(json!({"full_name": "Ann"}))).await;
    let key = s.post_as(&admin, "/api/auth/api-keys", json!({"name": "k"})).await;
    let key_id = key.json["id"].as_str().unwrap_or_default().to_string();
    s.call_as(&admin, Method::DELETE, &format!("/api/auth/api-keys/{key_id}"), None).await;
    s.call_as(&admin, Method::DELETE, &format!("/api/users/{id}"), None).await;
    s.call_as(&admin, Method::POST, "/api/auth/logout", None).await;

    let (entries, _) = nexus_kernel::audit::query(&s.kernel().db, &Default::default()).await.unwrap_or_default();
    let seen = |action: &str, success: bool| entries.iter().any(|e| e.action == action && e.success == success);
    for action in
        ["auth.login", "user.create", "user.update", "apikey.create", "apikey.revoke", "user.delete", "auth.logout"]
    {
        assert!(seen(action, true), "{action} not audited");
    }
    assert!(seen("auth.login", false), "failed login not audited");
    let requests = entries.iter().filter(|e| e.actor != "system");
    assert!(
        requests.clone().count() > 0 && requests.clone().all(|e| !e.ip_address.is_empty()),
        "client address recorded"
    );
    let dump = format!("{entries:?}");
    for secret in [ADMIN_PASSWORD, "Pass123!", "wrong-Pass1", key.json["key"].as_str().unwrap_or("-")] {
        assert!(!dump.contains(secret), "audit leaks a secret");
    }
}

#[tokio::test]
async fn first_start_without_a_password_generates_one_in_a_private_file() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.auth.admin_password = None).await;
    let path = s.config.data_dir.join("admin-password");
    let password = std::fs::read_to_string(&path).unwrap_or_default().trim().to_string();
    assert!(password.len() >= 20);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(mode, 0o600);
        let key_mode =
            std::fs::metadata(s.config.data_dir.join("jwt.key")).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(key_mode, 0o600);
    }
    assert_eq!(s.post("/api/auth/login", json!({"username": "admin", "password": password})).await.status, 200);
}

#[tokio::test]
async fn a_refresh_token_is_bound_to_its_client_and_a_wrong_client_cannot_burn_it() {
    let s = TestServer::start().await;
    let r = s.post("/api/auth/login", json!({"username": "admin", "password": ADMIN_PASSWORD})).await;
    let token = r.json["refresh_token"].as_str().unwrap_or_default().to_string();
    for (path, body) in [
        ("/v2/auth/refresh", json!({"refresh_token": token, "client_id": "someone-else"})),
        ("/auth/refresh", json!({"refresh_token": token})),
    ] {
        assert_eq!(s.post(path, body).await.status, 401, "{path}");
    }
    let r = s.post("/api/auth/refresh", json!({"refresh_token": token})).await;
    assert_eq!(r.status, 200, "the rightful client still refreshes: {}", r.text);
}

#[tokio::test]
async fn jellyfin_clients_are_understood() {
    let s = TestServer::start().await;
    let r = s.post("/api/media/Users/AuthenticateByName", json!({"Username": "admin", "Pw": ADMIN_PASSWORD})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let token = r.json["AccessToken"].as_str().unwrap_or_default().to_string();
    let r = s.call(Method::GET, "/api/user/profile", None, &[("X-Emby-Token", token.as_str())]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["username"], "admin");
}

#[tokio::test]
async fn the_openapi_document_declares_the_security_schemes_it_uses() {
    let s = TestServer::start().await;
    let doc = s.get("/openapi.json").await.json;
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["api_key"]["name"], "X-API-Key");
    for path in ["/api/auth/login", "/api/v1/auth/login", "/v2/auth/login", "/auth/login", "/api/users/{user_id}"] {
        assert!(doc["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
}

/// Creates a user as admin and returns their id.
async fn create_user(s: &TestServer, admin: &str, username: &str) -> String {
    let body = json!({"username": username, "email": format!("{username}@example.com"), "password": "user-Pass1",
                      "full_name": "Before", "roles": ["user"]});
    let r = s.post_as(admin, "/api/users", body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["id"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_user_read_right_after_a_change_shows_the_change() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let admin = s.admin_token().await;
        let id = create_user(&s, &admin, "fresh.reader").await;
        let path = format!("/api/users/{id}");
        let read = |field: &'static str| {
            let (s, admin, path) = (&s, &admin, &path);
            async move {
                let r = s.get_as(admin, path).await;
                assert_eq!(r.status, 200, "{backend:?}: {}", r.text);
                r.json[field].clone()
            }
        };
        // Each read below follows a change acknowledged by this instance, after the user was
        // read (and so remembered) before it.
        assert_eq!(read("full_name").await, "Before");
        assert_eq!(read("last_login").await, json!(null));
        let r = s.call_as(&admin, Method::PUT, &path, Some(json!({"full_name": "After"}))).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(read("full_name").await, "After", "{backend:?}: profile change");
        let r = s.call_as(&admin, Method::PUT, &path, Some(json!({"roles": ["editor"]}))).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(read("roles").await, json!(["editor"]), "{backend:?}: role change");
        assert!(read("permissions").await.as_array().is_some_and(|p| p.contains(&json!("content.publish"))));
        let r = s.call_as(&admin, Method::PUT, &path, Some(json!({"status": "suspended"}))).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(read("status").await, "suspended", "{backend:?}: status change");
        let r =
            s.call_as(&admin, Method::PUT, &path, Some(json!({"status": "active", "password": "other-Pass2"}))).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(read("status").await, "active");
        let user = s.login("fresh.reader", "other-Pass2").await;
        assert!(read("last_login").await.is_string(), "{backend:?}: a login sets last_login");
        // The other surfaces reading users see the same.
        let r = s.get_as(&user, &format!("/v2/users/{id}")).await;
        assert_eq!(r.json["full_name"], "After", "{}", r.text);
        let r = s.get_as(&user, "/api/user/profile").await;
        assert_eq!(r.json["roles"], json!(["editor"]), "{}", r.text);
        assert_eq!(s.call_as(&admin, Method::DELETE, &path, None).await.status, 204);
        let r = s.get_as(&admin, &path).await;
        assert_eq!(r.status, 404, "{backend:?}: a deleted user is gone at once: {}", r.text);
    }
}

/// Two instances on one database (PostgreSQL when configured, else one SQLite file), with
/// Redis for both when `redis` is given.
async fn two_instances(redis: Option<String>) -> (TestServer, TestServer) {
    let backend = if nexus_testkit::postgres_url().is_some() { Backend::Postgres } else { Backend::Sqlite };
    let share = move |c: &mut nexus_kernel::config::Config| {
        c.auth.jwt_secret = Some("k".repeat(40));
        c.secrets.master_key = Some(String::from("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="));
        c.redis.url = redis.clone();
    };
    let a = TestServer::start_with(backend, share.clone()).await;
    let db = a.config.database_url();
    let b = TestServer::start_with(Backend::Sqlite, |c| {
        share(c);
        c.database.url = Some(db);
    })
    .await;
    (a, b)
}

#[tokio::test]
async fn user_changes_made_elsewhere_are_seen_within_a_second() {
    use std::time::{Duration, Instant};
    // The bound documented in crates/plugins/identity/src/service/cache.rs.
    const BOUND: Duration = Duration::from_secs(1);
    let (a, b) = two_instances(None).await;
    let admin = a.admin_token().await;
    let id = create_user(&a, &admin, "remote.change").await;
    let path = format!("/api/users/{id}");
    for (i, change) in [json!({"full_name": "Renamed"}), json!({"roles": ["viewer"]}), json!({"status": "inactive"})]
        .into_iter()
        .enumerate()
    {
        // `a` remembers the user; `b` changes it.
        assert_eq!(a.get_as(&admin, &path).await.status, 200);
        let r = b.call_as(&admin, Method::PUT, &path, Some(change.clone())).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let acknowledged = Instant::now();
        tokio::time::sleep(BOUND.saturating_sub(acknowledged.elapsed()) + Duration::from_millis(20)).await;
        let r = a.get_as(&admin, &path).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let Some((field, value)) = change.as_object().and_then(|o| o.iter().next()) else { continue };
        assert_eq!(&r.json[field], value, "change {i} not seen on the other instance after {BOUND:?}");
    }
    assert_eq!(a.get_as(&admin, &path).await.status, 200);
    assert_eq!(b.call_as(&admin, Method::DELETE, &path, None).await.status, 204);
    tokio::time::sleep(BOUND + Duration::from_millis(20)).await;
    assert_eq!(a.get_as(&admin, &path).await.status, 404, "deletion not seen on the other instance");
}

#[tokio::test]
async fn with_redis_user_changes_reach_other_instances_before_the_bound() {
    use std::time::{Duration, Instant};
    let Some(redis) = nexus_testkit::redis_url() else {
        eprintln!("NEXUS_TEST_REDIS_URL is not set; skipping");
        return;
    };
    let (a, b) = two_instances(Some(redis)).await;
    let admin = a.admin_token().await;
    let id = create_user(&a, &admin, "pushed.change").await;
    let path = format!("/api/users/{id}");
    assert_eq!(a.get_as(&admin, &path).await.full_name(), "Before");
    let remembered = Instant::now();
    let r = b.call_as(&admin, Method::PUT, &path, Some(json!({"full_name": "Pushed"}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Without the event, `a` would answer from memory until a second after `remembered`.
    loop {
        if a.get_as(&admin, &path).await.full_name() == "Pushed" {
            break;
        }
        assert!(remembered.elapsed() < Duration::from_millis(800), "the change did not arrive through Redis");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

trait FullName {
    fn full_name(&self) -> String;
}

impl FullName for nexus_testkit::Reply {
    fn full_name(&self) -> String {
        self.json["full_name"].as_str().unwrap_or_default().to_string()
    }
}

#[tokio::test]
async fn updates_keep_usernames_and_emails_unique_and_leave_untouched_fields_alone() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let mut ids = Vec::new();
    for name in ["ann", "ben"] {
        let body = json!({"username": name, "email": format!("{name}@example.com"), "password": "Pass123!",
            "roles": ["user", "editor"]});
        let r = s.post_as(&admin, "/api/users", body).await;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.json["id"].as_str().unwrap_or_default().to_string());
    }
    let ann = format!("/api/users/{}", ids[0]);
    for taken in [json!({"username": "BEN"}), json!({"email": "Ben@Example.com"})] {
        let r = s.call_as(&admin, Method::PUT, &ann, Some(taken.clone())).await;
        assert_eq!(r.status, 409, "{taken}: {}", r.text);
        assert_eq!(r.json["error"]["code"], "CONFLICT");
    }
    // A user's own username and email, in another case, are still theirs.
    let r = s.call_as(&admin, Method::PUT, &ann, Some(json!({"username": "Ann", "email": "ANN@example.com"}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["username"], "Ann");
    // A change of another field keeps the roles.
    let r = s.call_as(&admin, Method::PUT, &ann, Some(json!({"full_name": "Ann Lee"}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.get_as(&admin, &ann).await;
    assert_eq!(r.json["full_name"], "Ann Lee");
    let mut roles: Vec<String> = serde_json::from_value(r.json["roles"].clone()).unwrap_or_default();
    roles.sort();
    assert_eq!(roles, ["editor", "user"]);
    // A new username frees the old one.
    let r = s.call_as(&admin, Method::PUT, &ann, Some(json!({"username": "anna"}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.call_as(&admin, Method::PUT, &format!("/api/users/{}", ids[1]), Some(json!({"username": "ann"}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// Logs `username` in through the framework surface; (access token, refresh token).
async fn session(s: &TestServer, username: &str, password: &str) -> (String, String) {
    let r = s.post("/api/auth/login", json!({"username": username, "password": password})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let text = |k: &str| r.json[k].as_str().unwrap_or_default().to_string();
    (text("access_token"), text("refresh_token"))
}

fn assert_field_error(r: &nexus_testkit::Reply, field: &str) {
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "VALIDATION_ERROR", "{}", r.text);
    let named = r.json["error"]["details"].as_array().into_iter().flatten().any(|d| d["field"] == field);
    assert!(named, "{field} not named: {}", r.text);
}

#[tokio::test]
async fn changing_ones_own_password_needs_the_current_one_and_ends_the_other_sessions() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let admin = s.admin_token().await;
        let id = create_user(&s, &admin, "carol").await;
        let path = format!("/api/users/{id}");
        let (this, this_refresh) = session(&s, "carol", "user-Pass1").await;
        let (other, other_refresh) = session(&s, "carol", "user-Pass1").await;

        // A bearer token alone is not enough.
        let r = s.call_as(&this, Method::PUT, &path, Some(json!({"password": "new-Pass2"}))).await;
        assert_field_error(&r, "current_password");
        let wrong = json!({"password": "new-Pass2", "current_password": "not-it-9"});
        assert_field_error(&s.call_as(&this, Method::PUT, &path, Some(wrong)).await, "current_password");
        s.login("carol", "user-Pass1").await;
        assert_eq!(s.get_as(&other, &path).await.status, 200, "{backend:?}: refusals revoke nothing");

        let proved = json!({"password": "new-Pass2", "current_password": "user-Pass1"});
        let r = s.call_as(&this, Method::PUT, &path, Some(proved)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        // This session goes on; every other one, its refresh token included, is over.
        assert_eq!(s.get_as(&this, &path).await.status, 200, "{backend:?}");
        assert_eq!(s.get_as(&other, &path).await.status, 401, "{backend:?}");
        let r = s.post("/api/auth/refresh", json!({"refresh_token": other_refresh})).await;
        assert_eq!(r.status, 401, "{backend:?}: {}", r.text);
        let r = s.post("/api/auth/refresh", json!({"refresh_token": this_refresh})).await;
        assert_eq!(r.status, 200, "{backend:?}: {}", r.text);
        let r = s.post("/api/auth/login", json!({"username": "carol", "password": "user-Pass1"})).await;
        assert_eq!(r.status, 401, "{backend:?}: the old password is gone");
        s.login("carol", "new-Pass2").await;

        // The email too; other fields need no proof.
        let r = s.call_as(&this, Method::PUT, &path, Some(json!({"email": "carol@elsewhere.example"}))).await;
        assert_field_error(&r, "current_password");
        let r = s.call_as(&this, Method::PUT, &path, Some(json!({"email": "CAROL@example.com"}))).await;
        assert_eq!(r.status, 200, "{backend:?}: the same address in another case is no change: {}", r.text);
        let proved = json!({"email": "carol@elsewhere.example", "current_password": "new-Pass2"});
        let r = s.call_as(&this, Method::PUT, &path, Some(proved)).await;
        assert_eq!((r.status.as_u16(), r.json["email"].as_str()), (200, Some("carol@elsewhere.example")), "{}", r.text);
        let r = s.call_as(&this, Method::PUT, &path, Some(json!({"full_name": "Carol C."}))).await;
        assert_eq!(r.status, 200, "{}", r.text);
        // An API key of hers cannot change the password without proof either.
        let key = s.post_as(&this, "/api/auth/api-keys", json!({"name": "k"})).await;
        let key = key.json["key"].as_str().unwrap_or_default().to_string();
        let r = s
            .client
            .put(s.url(&path))
            .header("X-API-Key", &key)
            .json(&json!({"password": "third-Pass3"}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 400, "{backend:?}");
    }
}

#[tokio::test]
async fn wrong_current_passwords_count_as_failed_logins() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.auth.lockout_threshold = 2;
        c.auth.login_attempts_per_minute = 100;
    })
    .await;
    let admin = s.admin_token().await;
    let id = create_user(&s, &admin, "dave").await;
    let dave = s.login("dave", "user-Pass1").await;
    for guess in ["guess-One1", "guess-Two2"] {
        let body = json!({"password": "new-Pass2", "current_password": guess});
        assert_field_error(
            &s.call_as(&dave, Method::PUT, &format!("/api/users/{id}"), Some(body)).await,
            "current_password",
        );
    }
    let r = s.post("/api/auth/login", json!({"username": "dave", "password": "user-Pass1"})).await;
    assert_eq!(r.status, 401, "locked: {}", r.text);
    let body = json!({"password": "new-Pass2", "current_password": "user-Pass1"});
    let r = s.call_as(&dave, Method::PUT, &format!("/api/users/{id}"), Some(body)).await;
    assert_eq!(r.status, 401, "the right password does not help while locked: {}", r.text);
}

#[tokio::test]
async fn an_administrator_sets_another_users_password_without_theirs_and_it_is_audited() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let admin = s.admin_token().await;
        let id = create_user(&s, &admin, "erin").await;
        let other = create_user(&s, &admin, "frank").await;
        let erin = s.login("erin", "user-Pass1").await;
        // Without `user.write`, not even with a password.
        let body = json!({"password": "taken-Over1", "current_password": "user-Pass1"});
        let r = s.call_as(&erin, Method::PUT, &format!("/api/users/{other}"), Some(body)).await;
        assert_eq!(r.status, 403, "{backend:?}: {}", r.text);

        let r =
            s.call_as(&admin, Method::PUT, &format!("/api/users/{id}"), Some(json!({"password": "reset-Pass1"}))).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(s.get_as(&erin, &format!("/api/users/{id}")).await.status, 401, "{backend:?}: her sessions end");
        s.login("erin", "reset-Pass1").await;

        let r = s.post("/api/auth/login", json!({"username": "admin", "password": ADMIN_PASSWORD})).await;
        let admin_id = r.json["user"]["id"].as_str().map(str::to_string);
        assert!(admin_id.is_some(), "{}", r.text);
        let (entries, _) = nexus_kernel::audit::query(&s.kernel().db, &Default::default()).await.unwrap_or_default();
        let changes: Vec<_> = entries.iter().filter(|e| e.action == "user.password_change").collect();
        assert_eq!(changes.len(), 1, "{backend:?}: {changes:?}");
        assert!(changes.iter().all(|e| e.target == id && e.success && e.metadata.contains("administrator")));
        if let Some(admin_id) = admin_id {
            assert!(changes.iter().all(|e| e.actor == admin_id), "{backend:?}: {changes:?}");
        }
        assert!(!format!("{entries:?}").contains("reset-Pass1"), "the password is not in the audit log");
    }
}

/// Polls `instance` with `token` until it refuses it; how long that took after `since`.
async fn refused_within(
    instance: &TestServer,
    path: &str,
    auth: (&str, &str),
    since: std::time::Instant,
    bound: std::time::Duration,
) -> std::time::Duration {
    loop {
        let r = instance
            .client
            .get(instance.url(path))
            .header(auth.0, auth.1)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let elapsed = since.elapsed();
        if r.status() == 401 {
            return elapsed;
        }
        assert!(elapsed < bound, "still accepted on the other instance after {elapsed:?}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn with_redis_revocations_reach_another_instance_within_100_ms() {
    use std::time::{Duration, Instant};
    const BOUND: Duration = Duration::from_millis(100);
    let (Some(_), Some(redis)) = (nexus_testkit::postgres_url(), nexus_testkit::redis_url()) else {
        eprintln!("NEXUS_TEST_POSTGRES_URL and NEXUS_TEST_REDIS_URL are not both set; skipping");
        return;
    };
    let (a, b) = two_instances(Some(redis)).await;
    let admin = a.admin_token().await;
    let bearer = |t: &str| format!("Bearer {t}");

    // Logout on `a`.
    let token = a.admin_token().await;
    assert_eq!(b.get_as(&token, "/api/users").await.status, 200, "a token works on every instance");
    let r = a.call_as(&token, Method::POST, "/api/auth/logout", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let took = refused_within(&b, "/api/users", ("Authorization", &bearer(&token)), Instant::now(), BOUND).await;
    eprintln!("logout seen on the other instance after {took:?}");

    // A password changed on `a`: by the user (their other session ends), then by an administrator.
    let id = create_user(&a, &admin, "moving.target").await;
    let path = format!("/api/users/{id}");
    let (this, _) = session(&a, "moving.target", "user-Pass1").await;
    let (other, _) = session(&a, "moving.target", "user-Pass1").await;
    assert_eq!(b.get_as(&other, &path).await.status, 200);
    let body = json!({"password": "moved-Pass2", "current_password": "user-Pass1"});
    assert_eq!(a.call_as(&this, Method::PUT, &path, Some(body)).await.status, 200);
    let took = refused_within(&b, &path, ("Authorization", &bearer(&other)), Instant::now(), BOUND).await;
    eprintln!("own password change seen on the other instance after {took:?}");
    assert_eq!(b.get_as(&this, &path).await.status, 200, "the session that changed it goes on everywhere");
    let r = a.call_as(&admin, Method::PUT, &path, Some(json!({"password": "reset-Pass3"}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let took = refused_within(&b, &path, ("Authorization", &bearer(&this)), Instant::now(), BOUND).await;
    eprintln!("administrator's password change seen on the other instance after {took:?}");

    // An API key revoked on `a`, after `b` has it in memory.
    let key = a.post_as(&admin, "/api/auth/api-keys", json!({"name": "short-lived"})).await;
    let (key_id, key) = (key.json["id"].as_str().unwrap_or_default(), key.json["key"].as_str().unwrap_or_default());
    let used =
        b.client.get(b.url("/api/users")).header("X-API-Key", key).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(used.status(), 200);
    let r = a.call_as(&admin, Method::DELETE, &format!("/api/auth/api-keys/{key_id}"), None).await;
    assert!(r.status.is_success(), "{}", r.text);
    let took = refused_within(&b, "/api/users", ("X-API-Key", key), Instant::now(), BOUND).await;
    eprintln!("key revocation seen on the other instance after {took:?}");
}

#[tokio::test]
async fn unknown_fields_in_identity_bodies_are_refused_by_name() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let id = create_user(&s, &admin, "greta").await;
    let greta = s.login("greta", "user-Pass1").await;
    // The attack the review found: a field the endpoint does not know was silently dropped.
    let r = s.call_as(&greta, Method::PUT, &format!("/api/users/{id}"), Some(json!({"is_admin": true}))).await;
    assert_field_error(&r, "is_admin");
    let body = json!({"username": "hans", "email": "hans@example.com", "password": "user-Pass1", "is_admin": true});
    assert_field_error(&s.post_as(&admin, "/api/users", body).await, "is_admin");
    assert_field_error(&s.post_as(&greta, "/api/auth/api-keys", json!({"name": "k", "owner": "admin"})).await, "owner");
    let r = s.post("/api/auth/login", json!({"username": "greta", "password": "user-Pass1", "role": "admin"})).await;
    assert_field_error(&r, "role");
    // Free-form objects stay free-form.
    let r = s
        .call_as(&greta, Method::PUT, &format!("/api/users/{id}"), Some(json!({"metadata": {"is_admin": true}})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Every surface, in its own dialect.
    let r = s
        .post(
            "/v2/auth/login",
            json!({"email": "greta@example.com", "password": "user-Pass1", "client_id": "c", "x": 1}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("unknown field `x`"), "{}", r.text);
    let r = s.post("/api/v1/auth/login", json!({"username": "greta", "password": "user-Pass1", "admin": true})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("admin"), "{}", r.text);
    let r = s.post("/auth/login", json!({"username": "greta", "password": "user-Pass1", "tier": "premium"})).await;
    assert_eq!(r.status, 400, "{}", r.text);
}
