//! The `nexus` server: assembles the kernel, the plugins and the HTTP edge, and runs them.
//! `main.rs` is the command line; tests start servers through [`start`].

mod app;
pub mod conventions;
mod serve;
pub mod telemetry;
pub mod user_cmd;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nexus_kernel::Kernel;
use nexus_kernel::config::Config;
use nexus_kernel::db::MigrationSet;
use nexus_kernel::kernel::KernelError;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use app::{App, app};

/// Every migration set of the built-in plugins, applied at start and by `nexus migrate`.
pub fn migrations() -> Vec<&'static MigrationSet> {
    vec![
        &nexus_kernel::MIGRATIONS,
        &nexus_identity::MIGRATIONS,
        &nexus_secrets::MIGRATIONS,
        &nexus_webhooks::MIGRATIONS,
        &nexus_documents::MIGRATIONS,
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("configuration key `server.host`: {0}")]
    Host(String),
    #[error("identity: {0}")]
    Identity(#[from] nexus_identity::IdentityError),
    #[error("secrets: {0}")]
    Secrets(#[from] nexus_secrets::SecretsError),
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

/// Opens the kernel, binds `server.host:server.port` (port 0 picks a free one) and serves.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    let ip = config.bind_ip().map_err(StartError::Host)?;
    let addr = SocketAddr::new(ip, config.server.port);
    // Bind before opening storage, so a taken port fails fast without touching the data.
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
    let kernel = Kernel::open(config, &migrations()).await?;
    let identity = nexus_identity::Identity::start(kernel.clone()).await?;
    let secrets = nexus_secrets::Secrets::start(kernel.clone(), &identity).await?;
    let realtime = nexus_realtime::Realtime::start(kernel.clone(), identity.clone());
    let webhooks = nexus_webhooks::start(kernel.clone());
    let documents = nexus_documents::start(kernel.clone());
    let app = app(kernel.clone(), identity, secrets, realtime, webhooks.webhooks, documents);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve::serve(listener, app, async move {
        let _ = rx.await;
    }));
    tracing::info!(%addr, backend = kernel.db.backend().name(), "nexus listening");
    Ok(RunningServer { addr, kernel, shutdown: Some(tx), task, background: webhooks.tasks })
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
