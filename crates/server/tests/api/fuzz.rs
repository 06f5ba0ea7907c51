//! Property tests over every parser that takes user input, through the real server: list
//! parameters (filters, sort, fields, cursors), secret paths, batch sub-requests, bearer
//! tokens and WebSocket messages. Whatever arrives, the answer is a success or a 4xx in the
//! surface's dialect — never a 5xx, a panic or a hang — and the server keeps serving.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use nexus_testkit::reqwest::Method;
use nexus_testkit::{TestServer, json};
use proptest::prelude::*;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const CASES: u32 = 96;

/// A runtime and a server on it, shared by the cases of one property.
struct Harness {
    rt: tokio::runtime::Runtime,
    s: TestServer,
    token: String,
}

impl Harness {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let s = rt.block_on(TestServer::start());
        let token = rt.block_on(s.admin_token());
        Self { rt, s, token }
    }

    /// The status of `method path` with `body`, as the admin, or `None` when the client
    /// cannot even form the request (an invalid URL).
    fn status(&self, method: Method, path: &str, body: Option<Value>) -> Option<u16> {
        let url = reqwest_url(&self.s.url(path))?;
        self.rt.block_on(async {
            let mut req = self.s.client.request(method, url).bearer_auth(&self.token);
            if let Some(body) = body {
                req = req.json(&body);
            }
            let r = tokio::time::timeout(Duration::from_secs(30), req.send()).await;
            let r =
                r.unwrap_or_else(|_| panic!("{path}: no answer within 30 s")).unwrap_or_else(|e| panic!("{path}: {e}"));
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            assert!(status < 500, "{path} answered {status}: {text}");
            Some(status)
        })
    }

    fn still_serving(&self) {
        let r = self.rt.block_on(self.s.get("/health"));
        assert_eq!(r.status, 200);
    }
}

fn reqwest_url(url: &str) -> Option<nexus_testkit::reqwest::Url> {
    nexus_testkit::reqwest::Url::parse(url).ok()
}

/// Text that parsers stumble on: operators, brackets, quotes, percent signs, unicode, empty.
fn nasty_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{0,12}",
        "-?[0-9]{1,25}(\\.[0-9]{0,5})?",
        "[\\[\\]\\$%&=,.\\-+*'\"\\\\/ ]{0,12}",
        "\\PC{0,16}",
        Just(String::from("%FF%00")),
        Just(String::from("filter[a][$in]")),
    ]
}

fn encode(text: &str) -> String {
    form_urlencoded_byte_serialize(text)
}

fn form_urlencoded_byte_serialize(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn list_query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just(String::from("page")),
        Just(String::from("limit")),
        Just(String::from("cursor")),
        Just(String::from("sort")),
        Just(String::from("fields")),
        Just(String::from("search")),
        Just(String::from("status")),
        Just(String::from("role")),
        "filter\\[(username|email|created_at|status|[a-z]{1,6})\\](\\[\\$(eq|ne|gt|gte|lt|lte|in|nin|like|[a-z]{1,4})\\])?",
        nasty_text(),
    ];
    // Some pairs raw (undecoded garbage), most percent-encoded.
    prop::collection::vec((key, nasty_text(), any::<bool>()), 0..6).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v, raw)| {
                if raw {
                    format!("{}={}", encode(&k), v.replace(['#', ' '], ""))
                } else {
                    format!("{}={}", encode(&k), encode(&v))
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        nasty_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(nasty_text(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn sub_request() -> impl Strategy<Value = Value> {
    let method = prop_oneof![
        Just(json!("GET")),
        Just(json!("POST")),
        Just(json!("DELETE")),
        Just(json!("BREW")),
        Just(json!(7)),
        Just(Value::Null),
    ];
    let url = prop_oneof![
        Just(json!("/api/users")),
        Just(json!("/api/batch")),
        Just(json!("/health")),
        Just(json!("http://example.com/x")),
        Just(json!("//evil")),
        nasty_text().prop_map(|t| json!(format!("/api/{t}"))),
        json_value(),
    ];
    (method, url, json_value(), json_value(), any::<bool>()).prop_map(|(method, url, id, body, headers)| {
        let mut r = json!({ "method": method, "url": url, "id": id, "body": body });
        if headers {
            r["headers"] = json!({ "Authorization": "Bearer nope", "X-Any": "1" });
        }
        r
    })
}

#[test]
fn list_parameters_are_answered_with_a_page_or_a_4xx() {
    let h = Harness::new();
    let paths = ["/api/users", "/v2/users", "/api/v1/secrets", "/api/v1/audit", "/api/webhooks"];
    proptest!(ProptestConfig::with_cases(CASES), |(q in list_query(), i in 0..5usize)| {
        let path = paths[i % paths.len()];
        h.status(Method::GET, &format!("{path}?{q}"), None);
    });
    h.still_serving();
}

#[test]
fn secret_paths_are_answered_with_a_secret_a_404_or_a_4xx() {
    let h = Harness::new();
    proptest!(ProptestConfig::with_cases(CASES), |(segments in prop::collection::vec(nasty_text(), 0..5), raw in any::<bool>())| {
        let path = if raw { segments.join("/") } else { segments.iter().map(|s| encode(s)).collect::<Vec<_>>().join("/") };
        let path = path.replace(['#', '?', ' '], "");
        h.status(Method::GET, &format!("/api/v1/secrets/{path}"), None);
        h.status(Method::PUT, &format!("/api/v1/secrets/{path}"), Some(json!({ "value": "v" })));
    });
    h.still_serving();
}

#[test]
fn batches_of_any_shape_are_answered_with_results_or_a_4xx() {
    let h = Harness::new();
    proptest!(ProptestConfig::with_cases(CASES), |(subs in prop::collection::vec(sub_request(), 0..5), body in json_value(), whole in any::<bool>())| {
        let batch = if whole { body } else { json!({ "requests": subs }) };
        h.status(Method::POST, "/api/batch", Some(batch));
    });
    h.still_serving();
}

#[test]
fn any_bearer_token_is_a_401_never_a_5xx() {
    let h = Harness::new();
    let segment = "[A-Za-z0-9_\\-=+/]{0,40}";
    proptest!(ProptestConfig::with_cases(CASES), |(parts in prop::collection::vec(segment, 1..5), prefix in prop_oneof![Just("Bearer "), Just("bearer "), Just(""), Just("MediaBrowser Token=")])| {
        let token = parts.join(".");
        let status = h.rt.block_on(async {
            let r = h.s.client.get(h.s.url("/api/users")).header("Authorization", format!("{prefix}{token}")).send().await;
            r.map(|r| r.status().as_u16()).unwrap_or(400)
        });
        prop_assert!(status == 401 || status == 400, "token {prefix}{token}: {status}");
    });
    h.still_serving();
}

#[test]
fn websocket_messages_of_any_shape_get_an_error_message_not_a_crash() {
    let h = Harness::new();
    let url = h.s.url("/ws").replacen("http://", "ws://", 1);
    let (socket, _) =
        h.rt.block_on(tokio_tungstenite::connect_async(url)).unwrap_or_else(|e| panic!("ws connect: {e}"));
    // proptest's cases run in a `Fn` closure.
    let socket = std::sync::Mutex::new(socket);
    let send = |text: String| {
        let mut socket = socket.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        h.rt.block_on(socket.send(Message::text(text.clone()))).unwrap_or_else(|e| panic!("{text}: {e}"));
    };
    send(json!({ "type": "auth", "token": h.token }).to_string());
    let message = prop_oneof![
        json_value().prop_map(|v| v.to_string()),
        (prop_oneof![Just("subscribe"), Just("unsubscribe"), Just("rpc"), Just("auth"), Just("nope")], json_value())
            .prop_map(|(t, v)| json!({ "type": t, "channel": v, "method": v, "params": v, "id": v }).to_string()),
        "\\PC{0,40}",
    ];
    proptest!(ProptestConfig::with_cases(CASES), |(text in message)| {
        send(text);
    });
    // Still open and answering: a ping after all of it gets its pong.
    send(json!({ "type": "ping" }).to_string());
    let mut socket = socket.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let pong = h.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(Ok(m)) = socket.next().await {
                if let Message::Text(t) = m
                    && serde_json::from_str::<Value>(t.as_str()).is_ok_and(|v| v["type"] == "pong")
                {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false)
    });
    assert!(pong, "the connection stopped answering");
    h.still_serving();
}
