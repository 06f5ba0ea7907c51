//! Webhooks: registration, URL rules, and delivery to a real local HTTP receiver.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use nexus_testkit::reqwest::Method;
use nexus_testkit::{Backend, TestServer, backends, json};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "webhook_secret_key";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A local HTTP receiver answering with `statuses` in turn (the last one repeatedly).
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(statuses: Vec<u16>) -> Self {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let seen = got.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let seen = seen.clone();
                let statuses = statuses.clone();
                async move {
                    let mut seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let n = seen.len();
                    seen.push(Received { headers, body: String::from_utf8_lossy(&body).into_owned() });
                    let code = statuses.get(n).or(statuses.last()).copied().unwrap_or(200);
                    StatusCode::from_u16(code).unwrap_or(StatusCode::OK)
                }
            }),
        );
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("receiver bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url: format!("http://{addr}/hook"), got }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Waits until at least `n` requests arrived.
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(tokio::time::Instant::now() < deadline, "receiver got {} of {n} requests", got.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!("sha256={}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Checks both signatures the way a receiver would.
fn verify(r: &Received, secret: &str) {
    assert_eq!(r.header("x-nexus-signature"), hmac_hex(secret, r.body.as_bytes()), "header signature");
    let (unsigned, _) = r.body.rsplit_once(",\"signature\":").unwrap_or_else(|| panic!("no signature: {}", r.body));
    let unsigned = format!("{unsigned}}}");
    assert_eq!(r.json()["signature"], hmac_hex(secret, unsigned.as_bytes()), "payload signature");
}

async fn allow_private(backend: Backend) -> TestServer {
    TestServer::start_with(backend, |c| c.webhooks.allow_private = true).await
}

async fn create_webhook(s: &TestServer, token: &str, url: &str, events: Value) -> Value {
    let r = s
        .post_as(token, "/api/webhooks", json!({ "url": url, "events": events, "secret": SECRET, "active": true }))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json
}

async fn create_user(s: &TestServer, admin: &str, name: &str) {
    let body = json!({ "username": name, "email": format!("{name}@example.com"), "password": "user-Pass1" });
    let r = s.post_as(admin, "/api/users", body).await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn webhooks_are_registered_listed_changed_and_deleted() {
    for backend in backends() {
        let s = allow_private(backend).await;
        let admin = s.admin_token().await;
        let body = json!({ "url": "http://127.0.0.1:9/hook", "events": ["plugin.installed", "plugin.updated", "user.created"],
            "secret": SECRET, "active": true });
        let r = s.post_as(&admin, "/api/webhooks", body).await;
        assert_eq!(r.status, 201, "{backend:?}: {}", r.text);
        let id = r.json["id"].as_str().unwrap_or_default().to_string();
        assert!(id.starts_with("wh_"));
        assert_eq!(r.json["url"], "http://127.0.0.1:9/hook");
        assert_eq!(r.json["events"], json!(["plugin.installed", "plugin.updated", "user.created"]));
        assert_eq!(r.json["active"], true);
        assert!(r.json["created_at"].is_string());
        assert!(!r.text.contains(SECRET), "a given secret is not echoed");

        let r = s.get_as(&admin, "/api/webhooks").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json["total"], 1);
        assert_eq!(r.json["webhooks"][0]["id"], id.as_str());
        assert!(!r.text.contains(SECRET) && !r.text.contains("\"secret\""), "{}", r.text);

        let r = s.get_as(&admin, &format!("/api/webhooks/{id}")).await;
        assert_eq!(r.status, 200);
        assert!(!r.text.contains(SECRET));

        let r = s
            .call_as(
                &admin,
                Method::PATCH,
                &format!("/api/webhooks/{id}"),
                Some(json!({ "events": ["user.*"], "active": false })),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["events"], json!(["user.*"]));
        assert_eq!(r.json["active"], false);

        // The media platform's registration is the same service; a generated secret is shown once.
        let r = s
            .post_as(
                &admin,
                "/webhooks/register",
                json!({ "url": "http://127.0.0.1:9/other", "events": ["media.added"] }),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let generated = r.json["secret"].as_str().unwrap_or_default().to_string();
        assert!(generated.starts_with("whsec_"));
        let other = r.json["id"].as_str().unwrap_or_default().to_string();
        let r = s.get_as(&admin, &format!("/api/webhooks/{other}")).await;
        assert!(!r.text.contains(&generated));

        let r = s.call_as(&admin, Method::DELETE, &format!("/api/webhooks/{id}"), None).await;
        assert_eq!(r.status, 204);
        let r = s.get_as(&admin, &format!("/api/webhooks/{id}")).await;
        assert_eq!(r.status, 404);
        assert_eq!(r.json["error"]["code"], "RESOURCE_NOT_FOUND");
    }
}

#[tokio::test]
async fn bad_webhooks_are_refused() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let cases = [
        json!({ "url": "ftp://example.com/x", "events": ["user.*"] }),
        json!({ "url": "http://127.0.0.1:8080/hook", "events": ["user.*"] }),
        json!({ "url": "http://169.254.169.254/latest/meta-data", "events": ["user.*"] }),
        json!({ "url": "http://10.0.0.5/hook", "events": ["user.*"] }),
        json!({ "url": "http://[::1]/hook", "events": ["user.*"] }),
        json!({ "url": "http://localhost:8080/hook", "events": ["user.*"] }),
        json!({ "url": "http://93.184.216.34/hook", "events": [] }),
        json!({ "url": "http://93.184.216.34/hook", "events": ["user created"] }),
    ];
    for body in cases {
        let r = s.post_as(&admin, "/api/webhooks", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.json["error"]["code"], "VALIDATION_ERROR");
    }
    let r = s.post_as(&admin, "/api/webhooks", json!({ "url": "http://127.0.0.1/x", "events": ["user.*"] })).await;
    assert!(r.text.contains("allow_private"), "{}", r.text);

    // Viewers cannot register; users cannot subscribe to events they may not see.
    let viewer = s.user_token("hookviewer", &["viewer"]).await;
    let r =
        s.post_as(&viewer, "/api/webhooks", json!({ "url": "http://93.184.216.34/hook", "events": ["user.*"] })).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let user = s.user_token("hookuser", &["user"]).await;
    let r = s.post_as(&user, "/api/webhooks", json!({ "url": "http://93.184.216.34/hook", "events": ["*"] })).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "PERMISSION_DENIED");
    // Nor see each other's webhooks.
    let r = s.get_as(&user, "/api/webhooks").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["total"], 0);
}

#[tokio::test]
async fn a_failed_delivery_is_retried_signed_and_lands() {
    for backend in backends() {
        let receiver = Receiver::start(vec![500, 200]).await;
        let s = allow_private(backend).await;
        let admin = s.admin_token().await;
        let hook = create_webhook(&s, &admin, &receiver.url, json!(["user.*"])).await;
        if backend == Backend::Sqlite {
            // The signing secret is stored sealed: its bytes are nowhere in the database files.
            for file in ["nexus.db", "nexus.db-wal"] {
                let bytes = std::fs::read(s.config.data_dir.join(file)).unwrap_or_default();
                assert!(!bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "{file} holds the secret");
            }
        }
        create_user(&s, &admin, "hooked1").await;

        let got = receiver.wait_for(2, Duration::from_secs(15)).await;
        let (first, second) = (&got[0], &got[1]);
        for r in [first, second] {
            verify(r, SECRET);
            let p = r.json();
            assert_eq!(p["type"], "user.created");
            assert!(p["id"].as_str().is_some_and(|id| id.starts_with("evt_")));
            assert_eq!(p["data"]["username"], "hooked1");
            assert!(p["timestamp"].is_string());
            assert!(p["signature"].as_str().is_some_and(|s| s.starts_with("sha256=")));
            assert_eq!(r.header("x-nexus-event"), "user.created");
            assert_eq!(r.header("content-type"), "application/json");
            assert!(!r.body.contains("user-Pass1"));
        }
        assert_eq!(first.header("x-nexus-delivery"), second.header("x-nexus-delivery"), "one delivery, two attempts");
        assert!(first.header("x-nexus-delivery").starts_with("dlv_"));
        assert_eq!(first.json()["id"], second.json()["id"]);

        let path = format!("/api/webhooks/{}/deliveries", hook["id"].as_str().unwrap_or_default());
        let mut delivered = Value::Null;
        for _ in 0..50 {
            let r = s.get_as(&admin, &path).await;
            assert_eq!(r.status, 200, "{}", r.text);
            if r.json["deliveries"][0]["status"] == "delivered" {
                delivered = r.json["deliveries"][0].clone();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(delivered["attempts"], 2, "{delivered}");
        assert_eq!(delivered["last_status_code"], 200);
        assert_eq!(delivered["event_type"], "user.created");

        // The test endpoint delivers at once.
        let r = s
            .post_as(&admin, &format!("/api/webhooks/{}/test", hook["id"].as_str().unwrap_or_default()), json!({}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["success"], true, "{}", r.text);
        assert_eq!(r.json["event_type"], "webhook.test");
        let got = receiver.wait_for(3, Duration::from_secs(5)).await;
        verify(&got[2], SECRET);
        assert_eq!(got[2].json()["type"], "webhook.test");
    }
}

#[tokio::test]
async fn a_delivery_survives_a_restart_and_arrives_once() {
    for backend in backends() {
        let receiver = Receiver::start(vec![500, 200]).await;
        let mut s = TestServer::start_with(backend, |c| {
            c.webhooks.allow_private = true;
            c.webhooks.retry_base_ms = 3_600_000;
        })
        .await;
        let admin = s.admin_token().await;
        let hook = create_webhook(&s, &admin, &receiver.url, json!(["user.created"])).await;
        create_user(&s, &admin, "restarted1").await;
        receiver.wait_for(1, Duration::from_secs(10)).await;

        // The retry is due in an hour; the server goes away before that and comes back.
        s.restart().await;
        s.kernel().clock.advance(Duration::from_secs(3_601));
        let got = receiver.wait_for(2, Duration::from_secs(20)).await;
        assert_eq!(got[0].header("x-nexus-delivery"), got[1].header("x-nexus-delivery"));
        verify(&got[1], SECRET);

        // Recorded as delivered, so never sent again: the next event is the next request.
        let admin = s.admin_token().await;
        let path = format!("/api/webhooks/{}/deliveries", hook["id"].as_str().unwrap_or_default());
        let deliveries = s.get_as(&admin, &path).await.json;
        assert_eq!(deliveries["deliveries"][0]["status"], "delivered", "{backend:?}: {deliveries}");
        assert_eq!(deliveries["deliveries"][0]["attempts"], 2, "{backend:?}: {deliveries}");
        create_user(&s, &admin, "marker1").await;
        let got = receiver.wait_for(3, Duration::from_secs(20)).await;
        assert_eq!(got.len(), 3, "{backend:?}: delivered exactly once after the failure");
        assert_eq!(got[2].json()["data"]["username"], "marker1", "{backend:?}");
    }
}

#[tokio::test]
async fn a_webhook_that_keeps_failing_is_disabled_with_a_reason() {
    let receiver = Receiver::start(vec![500]).await;
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.webhooks.allow_private = true;
        c.webhooks.retry_base_ms = 100;
        c.webhooks.disable_after_failures = 3;
    })
    .await;
    let admin = s.admin_token().await;
    let hook = create_webhook(&s, &admin, &receiver.url, json!(["user.*"])).await;
    let id = hook["id"].as_str().unwrap_or_default().to_string();
    create_user(&s, &admin, "failing1").await;
    receiver.wait_for(3, Duration::from_secs(10)).await;
    let mut view = Value::Null;
    for _ in 0..50 {
        view = s.get_as(&admin, &format!("/api/webhooks/{id}")).await.json;
        if view["active"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(view["active"], false, "{view}");
    assert!(
        view["disabled_reason"].as_str().is_some_and(|r| r.contains("3 consecutive") && r.contains("HTTP 500")),
        "{view}"
    );
    // A test ping is sent even to a disabled webhook: it is the next request the receiver gets.
    let r = s.post_as(&admin, &format!("/api/webhooks/{id}/test"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let got = receiver.wait_for(4, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 4, "nothing more is sent to a disabled webhook");
    assert_eq!(got[3].json()["type"], "webhook.test");

    // Re-enabling clears the streak.
    let r = s.call_as(&admin, Method::PATCH, &format!("/api/webhooks/{id}"), Some(json!({ "active": true }))).await;
    assert_eq!(r.json["active"], true);
    assert_eq!(r.json["failure_count"], 0);
    assert!(r.json["disabled_reason"].is_null());
}

#[tokio::test]
async fn https_targets_are_attempted_over_tls() {
    // The receiver speaks plain HTTP: a TLS client must fail the handshake rather than send
    // the payload in clear text, and must not claim https is unsupported.
    let receiver = Receiver::start(vec![200]).await;
    let s = allow_private(nexus_testkit::Backend::Sqlite).await;
    let admin = s.admin_token().await;
    let url = receiver.url.replacen("http://", "https://", 1);
    let hook = create_webhook(&s, &admin, &url, json!(["user.*"])).await;
    let r =
        s.post_as(&admin, &format!("/api/webhooks/{}/test", hook["id"].as_str().unwrap_or_default()), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["success"], false, "{}", r.text);
    assert!(!r.text.contains("not supported"), "{}", r.text);
    // A plain request sent now is the first the receiver gets if nothing came in clear text.
    let marker = nexus_testkit::reqwest::Client::new().post(&receiver.url).body("marker").send().await;
    assert!(marker.is_ok(), "{marker:?}");
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].body, "marker", "nothing reached the receiver in clear text");
}
