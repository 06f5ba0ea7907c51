//! Real-time delivery over the WebSocket endpoint `/ws`: authentication with a JWT or API
//! key, channel subscriptions with filters over the kernel's event bus, and RPC calls into the
//! kernel's registry (core methods registered here, plugin methods as `plugin.<id>.<method>`).
//! The protocol is described in `docs/websocket.md`.

pub mod channels;
mod connection;
mod core_rpc;
mod hub;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use nexus_identity::{Identity, MaybeAuth};
use nexus_kernel::Kernel;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The WebSocket service of one instance.
#[derive(Debug)]
pub struct Realtime {
    kernel: Arc<Kernel>,
    identity: Arc<Identity>,
    connections: AtomicUsize,
    /// Fans the bus's events out to the subscribed connections.
    hub: Arc<hub::Hub>,
}

impl Realtime {
    /// Sets up the service and registers the core RPC methods.
    pub fn start(kernel: Arc<Kernel>, identity: Arc<Identity>) -> Arc<Self> {
        let hub = hub::Hub::new(kernel.events.clone());
        let realtime = Arc::new(Self { kernel, identity, connections: AtomicUsize::new(0), hub });
        core_rpc::register(&realtime);
        realtime
    }

    /// Open WebSocket connections on this instance.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

/// `/ws`.
pub fn routes(realtime: Arc<Realtime>) -> nexus_web::Routes {
    OpenApiRouter::new().routes(routes!(ws)).with_state(realtime)
}

/// Open a WebSocket. Send `{"type": "auth", "token": "…"}` (a JWT or an API key) within the
/// authentication timeout (10 s), then `subscribe`, `unsubscribe`, `rpc` and `ping` messages;
/// see `docs/websocket.md` for every message.
#[utoipa::path(get, path = "/ws", tag = "realtime",
    responses((status = 101, description = "Switching to the WebSocket protocol"),
               (status = 400, description = "Not a WebSocket upgrade request")))]
async fn ws(State(rt): State<Arc<Realtime>>, MaybeAuth(principal): MaybeAuth, upgrade: WebSocketUpgrade) -> Response {
    let cfg = &rt.kernel.config.realtime;
    upgrade
        .max_message_size(cfg.max_message_bytes)
        .max_frame_size(cfg.max_message_bytes)
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .on_upgrade(move |socket| connection::run(rt, socket, principal))
}
