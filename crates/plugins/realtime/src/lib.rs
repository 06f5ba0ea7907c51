//! Real-time delivery over the WebSocket endpoint `/ws`: authentication with a JWT or API
//! key, channel subscriptions with filters over the kernel's event bus, and RPC calls into the
//! kernel's registry (core methods registered here, plugin methods as `plugin.<id>.<method>`).
//! The protocol is described in `docs/websocket.md`.

pub mod channels;
mod connection;
mod core_rpc;
mod hub;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use nexus_identity::{Identity, MaybeAuth};
use nexus_kernel::Kernel;
use nexus_kernel::plugin::{ChannelSpec, Manifest};
use nexus_web::plugin::{BoxFuture, Plugin, StartContext, StartError, Started};
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
    /// Where connections and the hub run; started with the first connection.
    runtime: OnceLock<FanOutRuntime>,
}

/// The runtime that WebSocket connections run on, apart from the one serving HTTP.
///
/// One event to 1,000 subscribers wakes 1,000 writer tasks. On the HTTP runtime those wakes
/// would queue ahead of every request continuation woken after them (a database answer, say),
/// so each await of a request in flight would wait for a whole fan-out round. On their own
/// runtime the fan-out and the requests are separate threads, which the operating system
/// shares the cores between.
#[derive(Debug)]
struct FanOutRuntime(Option<tokio::runtime::Runtime>);

impl FanOutRuntime {
    fn start(threads: usize) -> std::io::Result<Self> {
        let threads = match threads {
            0 => (std::thread::available_parallelism().map_or(1, usize::from) / 2).max(1),
            n => n,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("nexus-ws")
            .enable_all()
            .build()?;
        Ok(Self(Some(runtime)))
    }
}

impl Drop for FanOutRuntime {
    fn drop(&mut self) {
        // A runtime dropped the usual way blocks, which panics inside another runtime.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Realtime {
    /// Sets up the service and registers the core RPC methods.
    pub fn start(kernel: Arc<Kernel>, identity: Arc<Identity>) -> Arc<Self> {
        let channels = channels::ChannelTable::from_registry(&kernel.plugins);
        let hub = hub::Hub::new(kernel.events.clone(), channels);
        let realtime =
            Arc::new(Self { kernel, identity, connections: AtomicUsize::new(0), hub, runtime: OnceLock::new() });
        core_rpc::register(&realtime);
        realtime
    }

    /// Runs an upgraded connection on the fan-out runtime (or, should its thread not start,
    /// on the current one).
    fn spawn_connection(
        self: Arc<Self>,
        socket: axum::extract::ws::WebSocket,
        principal: Option<nexus_identity::Principal>,
    ) {
        let runtime = self.runtime.get_or_init(|| {
            FanOutRuntime::start(self.kernel.config.realtime.threads).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot start the WebSocket runtime; connections share the HTTP one");
                FanOutRuntime(None)
            })
        });
        let connection = connection::run(self.clone(), socket, principal);
        match &runtime.0 {
            Some(runtime) => drop(runtime.spawn(connection)),
            None => drop(tokio::spawn(connection)),
        }
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

/// The plugin: `/ws`, and the `events` channel that carries everything.
#[derive(Debug, Default)]
pub struct RealtimePlugin;

/// Its configuration is applied at the next start.
impl nexus_kernel::plugin::Reconfigure for RealtimePlugin {}

impl Plugin for RealtimePlugin {
    fn manifest(&self) -> Manifest {
        Manifest::builtin(
            "realtime",
            "Realtime",
            "core",
            "WebSocket endpoint: channels, filtered subscriptions and RPC",
        )
        .depends_on("identity", "*")
        .channel(ChannelSpec::new("events", None, &["*"]))
        .config_type::<nexus_kernel::config::RealtimeConfig>()
    }

    fn start<'a>(&'a self, ctx: &'a mut StartContext) -> BoxFuture<'a, Result<Started, StartError>> {
        Box::pin(async move {
            let identity = ctx.require::<Arc<Identity>>()?;
            let realtime = Realtime::start(ctx.kernel.clone(), identity);
            Ok(Started::routes(routes(realtime)).tag("realtime", "WebSocket: events and RPC"))
        })
    }
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
        .on_upgrade(move |socket| async move { rt.spawn_connection(socket, principal) })
}
