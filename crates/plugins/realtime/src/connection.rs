//! One WebSocket connection: authentication, subscriptions, event forwarding, RPC, keep-alive.
//!
//! Everything sent to the client goes through one bounded queue drained by a writer task:
//! this connection's own replies, and the events the hub (`hub.rs`) pushes into it. A client
//! that does not read fills its queue; it is then closed instead of being allowed to slow the
//! bus or anyone else (close code 4008). Close frames skip the queue.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{SinkExt, StreamExt};
use nexus_identity::Principal;
use nexus_identity::principal::Presented;
use nexus_kernel::rpc::RpcCall;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::Realtime;
use crate::channels::Filters;
use crate::hub::{Hub, Overflow, Subscriber};

/// Close codes sent by the server.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const TOO_BIG: u16 = 1009;
    /// Not authenticated within the timeout.
    pub const AUTH_TIMEOUT: u16 = 4001;
    /// The client did not keep up with its events.
    pub const SLOW_CONSUMER: u16 = 4008;
}

struct Outbox {
    queue: mpsc::Sender<Message>,
    close: Option<oneshot::Sender<CloseFrame>>,
    /// Raised once the queue overflowed, here or in the hub.
    overflow: Arc<Overflow>,
}

impl Outbox {
    /// Queues `value` as a text message; a full queue marks the client as a slow consumer.
    fn send(&mut self, value: &Value) {
        if self.overflow.is_raised() {
            return;
        }
        let text = Utf8Bytes::from(value.to_string());
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(Message::Text(text)) {
            self.overflow.raise();
        }
    }

    fn close(&mut self, code: u16, reason: &str) {
        if let Some(tx) = self.close.take() {
            let _ = tx.send(CloseFrame { code, reason: Utf8Bytes::from(reason) });
        }
    }
}

struct State {
    /// This connection's id in the hub.
    id: u64,
    principal: Option<Arc<Principal>>,
    /// Shared with the hub's copy ([`Subscriber`]). Behind an `Arc` also because a map node
    /// holds room for 11 values: inline, one subscription's node took 2 KB.
    subscriptions: BTreeMap<String, Arc<Filters>>,
    /// Raised by the hub when it found the send queue full.
    overflow: Arc<Overflow>,
}

impl State {
    /// Tells the hub what this connection receives now: its subscriptions under its current
    /// permissions, or nothing.
    fn sync(&self, hub: &Arc<Hub>, out: &Outbox) {
        match &self.principal {
            Some(principal) if !self.subscriptions.is_empty() => hub.set(
                self.id,
                Subscriber {
                    principal: principal.clone(),
                    subscriptions: self
                        .subscriptions
                        .iter()
                        .filter_map(|(channel, filters)| hub.channels.position(channel).map(|i| (i, filters.clone())))
                        .collect(),
                    queue: out.queue.clone(),
                    overflow: self.overflow.clone(),
                },
            ),
            _ => hub.remove(self.id),
        }
    }
}

/// Takes the connection out of the hub however its task ends.
struct Leave<'a> {
    hub: &'a Hub,
    id: u64,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.hub.remove(self.id);
    }
}

/// Serves one upgraded connection until either side closes it.
pub async fn run(rt: Arc<Realtime>, socket: WebSocket, principal: Option<Principal>) {
    rt.connections.fetch_add(1, Ordering::Relaxed);
    serve(&rt, socket, principal).await;
    rt.connections.fetch_sub(1, Ordering::Relaxed);
}

async fn serve(rt: &Arc<Realtime>, socket: WebSocket, principal: Option<Principal>) {
    let cfg = rt.kernel.config.realtime.clone();
    let (mut sink, mut stream) = socket.split();
    let (queue, mut queue_rx) = mpsc::channel::<Message>(cfg.send_buffer);
    let (close_tx, mut close_rx) = oneshot::channel::<CloseFrame>();

    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                frame = &mut close_rx => {
                    if let Ok(frame) = frame {
                        let send = sink.send(Message::Close(Some(frame)));
                        let _ = tokio::time::timeout(Duration::from_secs(2), send).await;
                    }
                    break;
                }
                msg = queue_rx.recv() => {
                    let Some(msg) = msg else { break };
                    // What is already queued behind it goes out in the same write.
                    let mut ok = sink.feed(msg).await.is_ok();
                    while ok && let Ok(more) = queue_rx.try_recv() {
                        ok = sink.feed(more).await.is_ok();
                    }
                    if !ok || sink.flush().await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
    });

    let overflow = Arc::new(Overflow::default());
    let mut out = Outbox { queue, close: Some(close_tx), overflow: overflow.clone() };
    let mut state = State {
        id: rt.hub.next_id(),
        principal: principal.map(Arc::new),
        subscriptions: BTreeMap::new(),
        overflow: overflow.clone(),
    };
    let _leave = Leave { hub: &rt.hub, id: state.id };
    if let Some(p) = &state.principal {
        out.send(&auth_success(p));
    }

    let auth_deadline = tokio::time::sleep(Duration::from_millis(cfg.auth_timeout_ms));
    tokio::pin!(auth_deadline);
    let closed = rt.kernel.events.closed();
    tokio::pin!(closed);
    let ping_every = Duration::from_secs(cfg.ping_interval_secs.max(1));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    let mut last_seen = Instant::now();

    loop {
        tokio::select! {
            () = &mut closed => {
                out.close(close::GOING_AWAY, "server shutting down");
                break;
            }
            () = &mut auth_deadline, if state.principal.is_none() => {
                out.send(&error("AUTHENTICATION_REQUIRED", "authentication timeout", None));
                out.close(close::AUTH_TIMEOUT, "authentication timeout");
                break;
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > ping_every * 2 {
                    out.close(close::GOING_AWAY, "ping timeout");
                    break;
                }
                if let Err(mpsc::error::TrySendError::Full(_)) = out.queue.try_send(Message::Ping(Default::default())) {
                    overflow.raise();
                }
            }
            // The hub found the queue full: a client that does not read its events.
            () = overflow.raised() => {}
            msg = stream.next() => {
                last_seen = Instant::now();
                match msg {
                    None => break,
                    Some(Err(e)) => {
                        let text = e.to_string();
                        if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
                            out.close(close::TOO_BIG, "message too big");
                        } else {
                            out.close(close::PROTOCOL, "protocol error");
                        }
                        break;
                    }
                    Some(Ok(Message::Text(text))) => handle(rt, &mut state, &mut out, text.as_str()).await,
                    Some(Ok(Message::Binary(_))) => {
                        out.send(&error("VALIDATION_ERROR", "binary messages are not supported; send JSON text", None));
                    }
                    Some(Ok(Message::Close(_))) => break,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                }
            }
        }
        if overflow.is_raised() {
            tracing::info!("closing a WebSocket client that does not keep up with its messages");
            out.close(close::SLOW_CONSUMER, "slow consumer: send buffer full");
            break;
        }
    }
    drop(out);
    let _ = tokio::time::timeout(Duration::from_secs(3), writer).await;
}

fn error(code: &str, message: &str, extra: Option<(&str, Value)>) -> Value {
    let mut v = json!({ "type": "error", "code": code, "message": message });
    if let (Some((k, val)), Some(obj)) = (extra, v.as_object_mut()) {
        obj.insert(k.to_string(), val);
    }
    v
}

fn auth_success(p: &Principal) -> Value {
    json!({
        "type": "auth_success",
        "user": { "id": p.user_id, "username": p.username, "roles": p.roles },
    })
}

async fn handle(rt: &Arc<Realtime>, state: &mut State, out: &mut Outbox, text: &str) {
    let msg: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            out.send(&error("VALIDATION_ERROR", &format!("malformed JSON: {e}"), None));
            return;
        }
    };
    let kind = msg.get("type").and_then(Value::as_str).unwrap_or_default();
    match kind {
        "auth" => authenticate(rt, state, out, &msg).await,
        "ping" => out.send(&json!({ "type": "pong", "timestamp": nexus_kernel::clock::Timestamp::now().to_rfc3339() })),
        "" => out.send(&error("VALIDATION_ERROR", "every message needs a string `type`", None)),
        _ if state.principal.is_none() => {
            out.send(&error(
                "AUTHENTICATION_REQUIRED",
                "authenticate first: {\"type\": \"auth\", \"token\": \"…\"}",
                None,
            ));
        }
        "subscribe" => subscribe(rt, state, out, &msg),
        "unsubscribe" => unsubscribe(rt, state, out, &msg),
        "rpc" => rpc(rt, state, out, msg),
        other => out.send(&error(
            "VALIDATION_ERROR",
            &format!("unknown message type `{other}`; expected auth, subscribe, unsubscribe, rpc or ping"),
            None,
        )),
    }
}

async fn authenticate(rt: &Arc<Realtime>, state: &mut State, out: &mut Outbox, msg: &Value) {
    let Some(token) = msg.get("token").and_then(Value::as_str).map(str::trim).filter(|t| !t.is_empty()) else {
        out.send(&error("VALIDATION_ERROR", "`token` is required", None));
        return;
    };
    let presented = if nexus_identity::tokens::looks_like_api_key(token) {
        Presented::ApiKey(token.to_string())
    } else {
        Presented::Bearer(token.to_string())
    };
    match rt.identity.authenticate(&presented).await {
        Ok(principal) => {
            out.send(&auth_success(&principal));
            state.principal = Some(Arc::new(principal));
            // Authenticating again changes what the existing subscriptions may see.
            state.sync(&rt.hub, out);
        }
        Err(e) => {
            let e = nexus_web::ApiError::from(e);
            out.send(&error(e.code.as_str(), &e.message, Some(("request_type", json!("auth")))));
        }
    }
}

fn subscribe(rt: &Arc<Realtime>, state: &mut State, out: &mut Outbox, msg: &Value) {
    let Some(principal) = &state.principal else { return };
    let channel = msg.get("channel").and_then(Value::as_str).unwrap_or_default().to_string();
    let with_channel = Some(("channel", json!(channel)));
    let Some(permission) = rt.hub.channels.lookup(&channel) else {
        let known = rt.hub.channels.names();
        let message = format!("unknown channel `{channel}`; known: {}", known.join(", "));
        out.send(&error("VALIDATION_ERROR", &message, with_channel));
        return;
    };
    if let Some(permission) = permission
        && !principal.has(permission)
    {
        let message = format!("channel `{channel}` requires the `{permission}` permission");
        out.send(&error("PERMISSION_DENIED", &message, with_channel));
        return;
    }
    let mut filters = match msg.get("filters") {
        None | Some(Value::Null) => Filters::default(),
        Some(v) => match serde_json::from_value::<Filters>(v.clone()) {
            Ok(f) => f,
            Err(e) => {
                out.send(&error("VALIDATION_ERROR", &format!("invalid filters: {e}"), with_channel));
                return;
            }
        },
    };
    if let Err(why) = filters.validate() {
        out.send(&error("VALIDATION_ERROR", &format!("invalid filters: {why}"), with_channel));
        return;
    }
    if let Some(query) = &filters.query {
        let Some(language) = rt.hub.channels.query_language(&channel) else {
            let message = format!("invalid filters: channel `{channel}` takes no `query`");
            out.send(&error("VALIDATION_ERROR", &message, with_channel));
            return;
        };
        match language.0.compile(query) {
            Ok(test) => filters.test = Some(crate::channels::Test(test)),
            Err(why) => {
                out.send(&error("VALIDATION_ERROR", &format!("invalid filters.query: {why}"), with_channel));
                return;
            }
        }
    }
    // The acknowledgement is queued before the hub may queue the channel's first event.
    out.send(&json!({ "type": "subscribed", "channel": channel, "filters": filters.to_json() }));
    state.subscriptions.insert(channel, Arc::new(filters));
    state.sync(&rt.hub, out);
}

fn unsubscribe(rt: &Arc<Realtime>, state: &mut State, out: &mut Outbox, msg: &Value) {
    let channel = msg.get("channel").and_then(Value::as_str).unwrap_or_default().to_string();
    if state.subscriptions.remove(&channel).is_none() {
        out.send(&error(
            "RESOURCE_NOT_FOUND",
            &format!("not subscribed to `{channel}`"),
            Some(("channel", json!(channel))),
        ));
        return;
    }
    state.sync(&rt.hub, out);
    out.send(&json!({ "type": "unsubscribed", "channel": channel }));
}

fn rpc(rt: &Arc<Realtime>, state: &State, out: &mut Outbox, msg: Value) {
    let Some(principal) = &state.principal else { return };
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let reply_error = |out: &mut Outbox, code: &str, message: String| {
        out.send(&json!({ "type": "rpc_response", "id": id, "error": { "code": code, "message": message } }));
    };
    let Some(name) = msg.get("method").and_then(Value::as_str) else {
        reply_error(out, "VALIDATION_ERROR", "`method` is required".into());
        return;
    };
    let Some(method) = rt.kernel.rpc.get(name) else {
        reply_error(out, "RESOURCE_NOT_FOUND", format!("no RPC method `{name}`"));
        return;
    };
    if let Some(permission) = &method.permission
        && !principal.has(permission)
    {
        reply_error(out, "PERMISSION_DENIED", format!("method `{name}` requires the `{permission}` permission"));
        return;
    }
    let call = RpcCall {
        caller: Principal::clone(principal),
        params: msg.get("params").cloned().unwrap_or_else(|| json!({})),
    };
    // Methods run beside the connection, so a slow one never holds up its events.
    let queue = out.queue.clone();
    tokio::spawn(async move {
        let reply = match (method.handler)(call).await {
            Ok(result) => json!({ "type": "rpc_response", "id": id, "result": result }),
            Err(e) => {
                json!({ "type": "rpc_response", "id": id, "error": { "code": e.code.as_str(), "message": e.message } })
            }
        };
        let _ = queue.try_send(Message::Text(Utf8Bytes::from(reply.to_string())));
    });
}
