//! The WebSocket endpoint `/ws`, spoken to by a real WebSocket client.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use nexus_testkit::{Backend, TestServer, backends, json};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Ws {
    socket: Socket,
}

/// What the server did next.
#[derive(Debug)]
enum Next {
    Json(Value),
    Closed(Option<u16>),
}

impl Ws {
    async fn connect(s: &TestServer) -> Self {
        let url = s.url("/ws").replacen("http://", "ws://", 1);
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap_or_else(|e| panic!("ws connect: {e}"));
        Self { socket }
    }

    async fn authed(s: &TestServer, token: &str) -> Self {
        let mut ws = Self::connect(s).await;
        ws.send(json!({ "type": "auth", "token": token })).await;
        let reply = ws.recv().await;
        assert_eq!(reply["type"], "auth_success", "{reply}");
        ws
    }

    async fn send(&mut self, v: Value) {
        self.send_raw(Message::text(v.to_string())).await;
    }

    async fn send_raw(&mut self, m: Message) {
        self.socket.send(m).await.unwrap_or_else(|e| panic!("ws send: {e}"));
    }

    async fn next(&mut self, within: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Ok(m) => m,
                Err(_) => panic!("no message from the server within {within:?}"),
            };
            match msg {
                None | Some(Err(_)) => return Next::Closed(None),
                Some(Ok(Message::Text(t))) => {
                    return Next::Json(
                        serde_json::from_str(t.as_str()).unwrap_or_else(|e| panic!("bad JSON {t}: {e}")),
                    );
                }
                Some(Ok(Message::Close(frame))) => return Next::Closed(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => {}
            }
        }
    }

    async fn recv(&mut self) -> Value {
        match self.next(Duration::from_secs(10)).await {
            Next::Json(v) => v,
            Next::Closed(code) => panic!("connection closed ({code:?}) while a message was expected"),
        }
    }

    /// The next message of `kind`, skipping others.
    async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// The next event of type `event_type`, passing over events of earlier changes (logins)
    /// that the outbox relays after their commit.
    async fn recv_event(&mut self, event_type: &str) -> Value {
        loop {
            let v = self.recv_type("event").await;
            if v["data"]["type"] == event_type {
                return v;
            }
        }
    }

    async fn closed(&mut self, within: Duration) -> Option<u16> {
        loop {
            match self.next(within).await {
                Next::Closed(code) => return code,
                Next::Json(_) => {}
            }
        }
    }
}

async fn create_user(s: &TestServer, admin: &str, name: &str) -> Value {
    let body = json!({ "username": name, "email": format!("{name}@example.com"), "password": "user-Pass1" });
    let r = s.post_as(admin, "/api/users", body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json
}

#[tokio::test]
async fn a_subscriber_receives_a_user_created_over_http() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let admin = s.admin_token().await;
        let mut ws = Ws::authed(&s, &admin).await;
        ws.send(json!({ "type": "subscribe", "channel": "user_events", "filters": { "event_types": ["user.*"] } }))
            .await;
        let ack = ws.recv().await;
        assert_eq!(ack["type"], "subscribed", "{ack}");
        assert_eq!(ack["channel"], "user_events");

        let user = create_user(&s, &admin, "wsuser1").await;
        let ev = ws.recv_type("event").await;
        assert_eq!(ev["channel"], "user_events", "{ev}");
        assert!(ev["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(ev["data"]["event_type"], "user.created");
        assert_eq!(ev["data"]["type"], "user.created");
        assert!(ev["data"]["id"].as_str().is_some_and(|id| id.starts_with("evt_")));
        assert_eq!(ev["data"]["payload"]["user_id"], user["id"]);
        assert_eq!(ev["data"]["payload"]["username"], "wsuser1");
        let text = ev.to_string();
        assert!(!text.contains("user-Pass1") && !text.contains("password_hash"), "{text}");

        ws.send(json!({ "type": "unsubscribe", "channel": "user_events" })).await;
        assert_eq!(ws.recv().await["type"], "unsubscribed");
        ws.send(json!({ "type": "unsubscribe", "channel": "user_events" })).await;
        let err = ws.recv().await;
        assert_eq!(err["type"], "error");
        assert_eq!(err["code"], "RESOURCE_NOT_FOUND");
    }
}

#[tokio::test]
async fn each_subscriber_gets_an_event_once_per_channel_and_only_if_permitted() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let viewer = s.user_token("fanviewer", &["viewer"]).await;
    let mut both = Ws::authed(&s, &admin).await;
    for channel in ["user_events", "events"] {
        both.send(json!({ "type": "subscribe", "channel": channel })).await;
        assert_eq!(both.recv().await["type"], "subscribed");
    }
    let mut users = Ws::authed(&s, &admin).await;
    users.send(json!({ "type": "subscribe", "channel": "user_events" })).await;
    assert_eq!(users.recv().await["type"], "subscribed");
    let mut limited = Ws::authed(&s, &viewer).await;
    limited.send(json!({ "type": "subscribe", "channel": "events" })).await;
    assert_eq!(limited.recv().await["type"], "subscribed");
    // Authenticating again as the viewer takes the admin's permissions away from a connection
    // that is already subscribed.
    let mut demoted = Ws::authed(&s, &admin).await;
    demoted.send(json!({ "type": "subscribe", "channel": "events" })).await;
    assert_eq!(demoted.recv().await["type"], "subscribed");
    demoted.send(json!({ "type": "auth", "token": viewer })).await;
    assert_eq!(demoted.recv().await["type"], "auth_success");

    create_user(&s, &admin, "fanout1").await;

    // Once per subscribed channel, the same event on each.
    let a = both.recv_event("user.created").await;
    let b = both.recv_event("user.created").await;
    // The user's event comes from the outbox after its commit; the notice, published on the bus
    // directly, is sent after it so that it can serve as the marker below.
    s.kernel().events.publish("system", "system.notice", json!({}));
    assert_eq!((a["channel"].as_str(), b["channel"].as_str()), (Some("events"), Some("user_events")));
    assert_eq!(a["data"], b["data"]);
    assert_eq!(a["data"]["type"], "user.created");
    let c = users.recv_event("user.created").await;
    assert_eq!(c["data"], a["data"]);
    assert_eq!(c["timestamp"], a["timestamp"]);
    // Those without user.read see the system event first: the user event never came.
    for ws in [&mut limited, &mut demoted] {
        let mut ev = ws.recv_type("event").await;
        while ev["data"]["type"] == "auth.login" {
            ev = ws.recv_type("event").await;
        }
        assert_eq!(ev["data"]["type"], "system.notice", "{ev}");
    }
}

#[tokio::test]
async fn filters_and_the_all_events_channel() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let mut ws = Ws::authed(&s, &admin).await;
    ws.send(json!({ "type": "subscribe", "channel": "plugin_events",
        "filters": { "plugin_id": "analytics_dashboard", "event_types": ["data_update", "alert"] } }))
        .await;
    assert_eq!(ws.recv().await["type"], "subscribed");
    ws.send(json!({ "type": "subscribe", "channel": "events", "filters": { "event_types": ["apikey.*"] } })).await;
    assert_eq!(ws.recv().await["type"], "subscribed");

    let bus = &s.kernel().events;
    bus.publish("other_plugin", "plugin.other_plugin.data_update", json!({}));
    bus.publish("analytics_dashboard", "plugin.analytics_dashboard.ignored", json!({}));
    bus.publish("analytics_dashboard", "plugin.analytics_dashboard.data_update", json!({ "rows": 3 }));
    let ev = ws.recv_type("event").await;
    assert_eq!(ev["channel"], "plugin_events");
    assert_eq!(ev["data"]["plugin_id"], "analytics_dashboard");
    assert_eq!(ev["data"]["event_type"], "plugin.analytics_dashboard.data_update");
    assert_eq!(ev["data"]["payload"]["rows"], 3);

    let r = s.post_as(&admin, "/api/auth/api-keys", json!({ "name": "k1" })).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let ev = ws.recv_type("event").await;
    assert_eq!(ev["channel"], "events");
    assert_eq!(ev["data"]["event_type"], "apikey.created");
    assert!(!ev.to_string().contains(r.json["key"].as_str().unwrap_or("-")), "the key must not travel");

    // An API key authenticates a WebSocket too.
    let key = r.json["key"].as_str().unwrap_or_default().to_string();
    let mut by_key = Ws::authed(&s, &key).await;
    by_key.send(json!({ "type": "ping" })).await;
    assert_eq!(by_key.recv().await["type"], "pong");
}

#[tokio::test]
async fn rpc_round_trip_and_errors() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let registered = s.kernel().rpc.register_plugin(
        "analytics",
        "getStats",
        Some("plugin.read"),
        "echo",
        nexus_kernel::rpc::handler(|call: nexus_kernel::rpc::RpcCall| async move {
            Ok(json!({ "echo": call.params, "caller": call.caller.username }))
        }),
    );
    assert!(registered.is_ok());
    let mut ws = Ws::authed(&s, &admin).await;

    ws.send(json!({ "type": "rpc", "id": "req_1", "method": "system.status", "params": {} })).await;
    let r = ws.recv_type("rpc_response").await;
    assert_eq!(r["id"], "req_1");
    assert_eq!(r["result"]["status"], "healthy", "{r}");
    assert_eq!(r["result"]["database"], "connected");

    ws.send(json!({ "type": "rpc", "id": "req_2", "method": "users.list", "params": { "limit": 5 } })).await;
    let r = ws.recv_type("rpc_response").await;
    assert_eq!(r["id"], "req_2");
    assert!(r["result"]["users"].as_array().is_some_and(|u| u.iter().any(|u| u["username"] == "admin")), "{r}");
    let admin_id = r["result"]["users"][0]["id"].clone();

    ws.send(json!({ "type": "rpc", "id": 3, "method": "users.get", "params": { "id": admin_id } })).await;
    let r = ws.recv_type("rpc_response").await;
    assert_eq!(r["id"], 3);
    assert_eq!(r["result"]["username"], "admin");
    assert!(r["result"].get("password_hash").is_none());

    ws.send(json!({ "type": "rpc", "id": "req_123", "method": "plugin.analytics.getStats",
        "params": { "start_date": "2024-01-01", "end_date": "2024-01-31" } }))
        .await;
    let r = ws.recv_type("rpc_response").await;
    assert_eq!(r["id"], "req_123");
    assert_eq!(r["result"]["echo"]["start_date"], "2024-01-01");
    assert_eq!(r["result"]["caller"], "admin");

    ws.send(json!({ "type": "rpc", "id": "req_4", "method": "no.such.method" })).await;
    let r = ws.recv_type("rpc_response").await;
    assert_eq!(r["id"], "req_4");
    assert_eq!(r["error"]["code"], "RESOURCE_NOT_FOUND", "{r}");
    assert!(r.get("result").is_none());

    ws.send(json!({ "type": "rpc", "id": "req_5", "method": "users.get", "params": {} })).await;
    let r = ws.recv_type("rpc_response").await;
    assert_eq!(r["error"]["code"], "VALIDATION_ERROR", "{r}");

    ws.send(json!({ "type": "rpc", "id": "req_6", "method": "users.get", "params": { "id": "nope" } })).await;
    assert_eq!(ws.recv_type("rpc_response").await["error"]["code"], "RESOURCE_NOT_FOUND");

    // Methods carry permissions.
    let viewer = s.user_token("rpcviewer", &["viewer"]).await;
    let mut ws = Ws::authed(&s, &viewer).await;
    ws.send(json!({ "type": "rpc", "id": "v1", "method": "users.list" })).await;
    let r = ws.recv_type("rpc_response").await;
    assert_eq!(r["error"]["code"], "PERMISSION_DENIED", "{r}");
    ws.send(json!({ "type": "rpc", "id": "v2", "method": "system.status" })).await;
    assert_eq!(ws.recv_type("rpc_response").await["result"]["status"], "healthy");
}

#[tokio::test]
async fn a_client_that_does_not_authenticate_is_closed() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.realtime.auth_timeout_ms = 500).await;
    let mut ws = Ws::connect(&s).await;
    ws.send(json!({ "type": "subscribe", "channel": "events" })).await;
    let err = ws.recv().await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "AUTHENTICATION_REQUIRED");
    ws.send(json!({ "type": "auth", "token": "not-a-token" })).await;
    let err = ws.recv().await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["code"], "AUTHENTICATION_REQUIRED");
    let started = std::time::Instant::now();
    assert_eq!(ws.closed(Duration::from_secs(5)).await, Some(4001));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn channels_need_their_permissions() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let viewer = s.user_token("wsviewer", &["viewer"]).await;
    let mut ws = Ws::authed(&s, &viewer).await;
    for channel in ["secret_events", "auth_events", "user_events"] {
        ws.send(json!({ "type": "subscribe", "channel": channel })).await;
        let err = ws.recv().await;
        assert_eq!(err["type"], "error", "{channel}: {err}");
        assert_eq!(err["code"], "PERMISSION_DENIED");
        assert_eq!(err["channel"], channel);
    }
    ws.send(json!({ "type": "subscribe", "channel": "no_such_channel" })).await;
    assert_eq!(ws.recv().await["code"], "VALIDATION_ERROR");
    ws.send(json!({ "type": "subscribe", "channel": "events" })).await;
    assert_eq!(ws.recv().await["type"], "subscribed");
    // The viewer may not see user events, even on the all-events channel…
    create_user(&s, &admin, "hidden1").await;
    // …but sees system events.
    s.kernel().events.publish("system", "system.notice", json!({ "n": 1 }));
    let ev = ws.recv_type("event").await;
    assert_eq!(ev["data"]["event_type"], "system.notice", "{ev}");
}

#[tokio::test]
async fn malformed_frames_get_errors_and_the_connection_stays_open() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.realtime.max_message_bytes = 4096).await;
    let admin = s.admin_token().await;
    let mut ws = Ws::authed(&s, &admin).await;
    ws.send_raw(Message::text("{not json")).await;
    let err = ws.recv().await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "VALIDATION_ERROR");
    ws.send(json!({ "type": "bogus" })).await;
    assert_eq!(ws.recv().await["type"], "error");
    ws.send(json!({ "no_type": 1 })).await;
    assert_eq!(ws.recv().await["type"], "error");
    ws.send_raw(Message::binary(vec![1u8, 2, 3])).await;
    assert_eq!(ws.recv().await["type"], "error");
    ws.send(json!({ "type": "subscribe", "channel": "events", "filters": { "event_types": ["bad pattern"] } })).await;
    assert_eq!(ws.recv().await["code"], "VALIDATION_ERROR");
    ws.send(json!({ "type": "ping" })).await;
    assert_eq!(ws.recv().await["type"], "pong");

    // Past the size limit the connection is closed with 1009.
    ws.send_raw(Message::text("x".repeat(10_000))).await;
    assert_eq!(ws.closed(Duration::from_secs(5)).await, Some(1009));
}

#[tokio::test]
async fn a_slow_consumer_is_disconnected_without_slowing_others() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.realtime.send_buffer = 8).await;
    let admin = s.admin_token().await;
    let mut slow = Ws::authed(&s, &admin).await;
    slow.send(json!({ "type": "subscribe", "channel": "system_events" })).await;
    assert_eq!(slow.recv().await["type"], "subscribed");
    let mut fast = Ws::authed(&s, &admin).await;
    fast.send(
        json!({ "type": "subscribe", "channel": "system_events", "filters": { "event_types": ["system.last"] } }),
    )
    .await;
    assert_eq!(fast.recv().await["type"], "subscribed");

    let filler = "x".repeat(2048);
    for i in 0..20_000 {
        s.kernel().events.publish("system", "system.flood", json!({ "i": i, "filler": filler }));
        if i % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    s.kernel().events.publish("system", "system.last", json!({}));
    let ev = fast.recv_type("event").await;
    assert_eq!(ev["data"]["event_type"], "system.last");
    assert_eq!(slow.closed(Duration::from_secs(20)).await, Some(4008));
}

#[tokio::test]
async fn events_cross_instances_through_redis() {
    let Some(redis) = nexus_testkit::redis_url() else {
        eprintln!("NEXUS_TEST_REDIS_URL is not set; skipping");
        return;
    };
    let secret = "a-shared-jwt-secret-of-at-least-32-characters";
    const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let r1 = redis.clone();
    let a = TestServer::start_with(Backend::Sqlite, |c| {
        c.redis.url = Some(r1);
        c.auth.jwt_secret = Some(secret.into());
        c.secrets.master_key = Some(MASTER_KEY.into());
    })
    .await;
    // The second instance shares the first one's database, as instances behind a load
    // balancer do.
    let db = a.config.database_url();
    let b = TestServer::start_with(Backend::Sqlite, |c| {
        c.redis.url = Some(redis);
        c.auth.jwt_secret = Some(secret.into());
        c.secrets.master_key = Some(MASTER_KEY.into());
        c.database.url = Some(db);
    })
    .await;
    let admin = a.admin_token().await;
    let mut ws = Ws::authed(&b, &admin).await;
    ws.send(json!({ "type": "subscribe", "channel": "user_events" })).await;
    assert_eq!(ws.recv().await["type"], "subscribed");
    create_user(&a, &admin, "crossinstance").await;
    let ev = ws.recv_type("event").await;
    assert_eq!(ev["data"]["event_type"], "user.created");
    assert_eq!(ev["data"]["payload"]["username"], "crossinstance");

    // Published on b itself: delivered once, not echoed back through Redis.
    let mut on_a = a.kernel().events.subscribe();
    b.kernel().events.publish("system", "user.echo_check", json!({}));
    let ev = ws.recv_type("event").await;
    assert_eq!(ev["data"]["event_type"], "user.echo_check");
    // Once a has it, Redis has fanned it out to b's subscription too; a marker published
    // through Redis after that reaches b after any echo would have.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, on_a.recv()).await {
            Ok(Ok(e)) if e.kind == "user.echo_check" => break,
            Ok(Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            other => panic!("a never saw b's event through Redis: {other:?}"),
        }
    }
    a.kernel().events.publish("system", "user.marker", json!({}));
    let next = ws.recv_type("event").await;
    assert_eq!(next["data"]["event_type"], "user.marker", "an event came twice: {next}");
}

#[tokio::test]
async fn open_connections_are_closed_at_shutdown_without_delaying_it() {
    let mut s = TestServer::start().await;
    let admin = s.admin_token().await;
    let mut ws = Ws::authed(&s, &admin).await;
    ws.send(json!({ "type": "subscribe", "channel": "events" })).await;
    assert_eq!(ws.recv().await["type"], "subscribed");
    let started = std::time::Instant::now();
    s.restart().await;
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown waited {:?}", started.elapsed());
    assert_eq!(ws.closed(Duration::from_secs(5)).await, Some(1001));
}
