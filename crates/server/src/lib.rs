//! The `nexus` server: assembles the kernel, the plugins and the HTTP edge, and runs them.
//! `main.rs` is the command line; tests start servers through [`start`].

pub mod alloc;
pub mod analytics_cmd;
mod app;
pub mod backup_cmd;
pub mod conventions;
pub mod memory;
mod openapi;
pub mod plugin_cmd;
pub mod plugins;
mod serve;
pub mod telemetry;
pub mod user_cmd;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_kernel::Kernel;
use nexus_kernel::config::Config;
use nexus_kernel::db::MigrationSet;
use nexus_kernel::kernel::KernelError;
use nexus_kernel::plugin::Manifest;
use nexus_kernel::plugin::{Handles, Reconfigure};
use nexus_web::plugin::{Plugin, Services, StartContext};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use app::{App, app};
pub use serve::raise_open_file_limit;

/// Every migration set of the built-in plugins, applied at start and by `nexus migrate`.
pub fn migrations() -> Vec<&'static MigrationSet> {
    plugins::migrations(&plugins::builtin())
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("configuration key `server.host`: {0}")]
    Host(String),
    #[error(transparent)]
    Plugins(#[from] nexus_kernel::plugin::OrderError),
    #[error(transparent)]
    Plugin(#[from] nexus_web::plugin::StartError),
    #[error("configuration key `{0}`: no plugin has this id")]
    UnknownSection(String),
}

/// A server accepting connections on [`addr`](Self::addr).
#[derive(Debug)]
pub struct RunningServer {
    pub addr: SocketAddr,
    pub kernel: Arc<Kernel>,
    shutdown: Option<oneshot::Sender<()>>,
    /// Background services (webhook delivery) that end when the event bus closes.
    background: Vec<JoinHandle<()>>,
    task: JoinHandle<()>,
}

/// Opens the kernel, binds `server.host:server.port` (port 0 picks a free one) and serves
/// the built-in plugins.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    start_with(config, plugins::builtin()).await
}

/// [`start`] with the plugins `plugins` instead of the built-in ones.
pub async fn start_with(config: Config, plugins: Vec<Arc<dyn Plugin>>) -> Result<RunningServer, StartError> {
    let manifests: Vec<Manifest> = plugins.iter().map(|p| p.manifest()).collect();
    let order = nexus_kernel::plugin::start_order(&manifests.iter().collect::<Vec<_>>())?;
    if let Some(unknown) = config.plugins.keys().find(|k| !manifests.iter().any(|m| &m.config_key == *k)) {
        return Err(StartError::UnknownSection(unknown.clone()));
    }
    let ordered: Vec<Arc<dyn Plugin>> = order.iter().filter_map(|&i| plugins.get(i).cloned()).collect();
    let ordered_manifests: Vec<Manifest> = order.iter().filter_map(|&i| manifests.get(i).cloned()).collect();
    let ip = config.bind_ip().map_err(StartError::Host)?;
    let addr = SocketAddr::new(ip, config.server.port);
    // Bind before opening storage, so a taken port fails fast without touching the data.
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
    let sealer = nexus_secrets::keyring::config_sealer(&config);
    let new_database = nexus_kernel::db::sqlite_file_missing(&config.database_url());
    for plugin in &ordered {
        plugin.prepare(&config, new_database);
    }
    let since = Instant::now();
    let kernel = Kernel::open(config, &ordered_manifests, &plugins::migrations(&ordered), sealer).await?;
    tracing::debug!(ms = since.elapsed().as_secs_f64() * 1e3, "storage opened and migrated");
    let mut services = Services::default();
    services.provide(Handles::new(ordered.iter().map(|p| (p.manifest().id, p.clone() as Arc<dyn Reconfigure>))));
    let mut started = Vec::with_capacity(ordered.len());
    let mut background = Vec::new();
    let mut before_serving = Vec::new();
    for plugin in &ordered {
        let id = plugin.manifest().id;
        let Some(slot) = kernel.plugins.get(&id) else { continue };
        let since = Instant::now();
        let mut ctx = StartContext::new(kernel.clone(), slot.clone(), &mut services);
        let mut result = plugin.start(&mut ctx).await?;
        tracing::debug!(plugin = %id, ms = since.elapsed().as_secs_f64() * 1e3, "plugin started");
        background.append(&mut result.tasks);
        before_serving.extend(result.before_serving.drain(..).map(|work| (id.clone(), work)));
        started.push((slot, result));
    }
    // Every plugin has registered how its tasks resume: tasks an earlier process left
    // running are resumed or failed now.
    if let Err(e) = kernel.tasks.recover().await {
        tracing::warn!(error = %e, "interrupted tasks not recovered");
    }
    let identity = services
        .get::<Arc<nexus_identity::Identity>>()
        .ok_or_else(|| nexus_web::plugin::StartError { plugin: "identity".into(), reason: "not started".into() })?;
    let app = app(kernel.clone(), identity, started);
    for (plugin, work) in before_serving {
        let reason = match work.await {
            Ok(Ok(())) => continue,
            Ok(Err(reason)) => reason,
            Err(e) => format!("its start-up work failed: {e}"),
        };
        return Err(nexus_web::plugin::StartError { plugin, reason }.into());
    }
    let (tx, rx) = oneshot::channel::<()>();
    let serving = kernel.clone();
    let task = tokio::spawn(async move {
        serve::serve(listener, app, &serving.config.server, async move {
            let _ = rx.await;
        })
        .await;
    });
    tracing::info!(%addr, backend = kernel.db.backend().name(), "nexus listening");
    Ok(RunningServer { addr, kernel, shutdown: Some(tx), task, background })
}

impl RunningServer {
    /// Stops accepting connections and waits for in-flight requests, at most the configured
    /// grace period; then closes storage.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let grace = Duration::from_secs(self.kernel.config.server.shutdown_grace_secs);
        match tokio::time::timeout(grace, &mut self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
            Err(_) => {
                tracing::warn!(?grace, "in-flight requests still running after the grace period; stopping anyway");
                self.task.abort();
            }
        }
        // Background services and WebSocket connections stop; a webhook attempt in flight is
        // finished and recorded first (bounded by the webhook timeout).
        self.kernel.events.close();
        let wait = Duration::from_secs(self.kernel.config.webhooks.timeout_secs + 5);
        for task in self.background.drain(..) {
            if tokio::time::timeout(wait, task).await.is_err() {
                tracing::warn!("a background service did not stop in time");
            }
        }
        self.kernel.db.close().await;
    }

    /// Serves until SIGINT or SIGTERM arrives on `signals`, then shuts down gracefully.
    pub async fn run_until_signal(self, signals: ShutdownSignals) {
        signals.recv().await;
        tracing::info!("shutdown requested; draining in-flight requests");
        self.shutdown().await;
        tracing::info!("nexus stopped");
    }
}

/// SIGINT and SIGTERM listeners. Registered before the server binds: a signal that arrives
/// once the first request can be answered must drain the server, not kill it outright.
#[derive(Debug)]
pub struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Must be called inside the Tokio runtime.
    pub fn register() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! { _ = self.interrupt.recv() => {}, _ = self.terminate.recv() => {} }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
