//! Accepting connections and serving HTTP/1.1 on them, with graceful shutdown.
//!
//! Hand-written rather than `axum::serve`: that one clones the connection's whole service
//! stack for every request and drives each connection through the HTTP-version-detecting
//! builder of hyper-util; here every request of a connection calls the one shared
//! application by reference ([`crate::app::Connection`]).
//!
//! What a client can hold is bounded: the connections served at once (`server.max_connections`,
//! further ones wait in the listen backlog), how long a request head may take to arrive and
//! how long a connection may sit idle ([`connection`]); running out of file descriptors
//! anyway makes the accept loop back off, not spin. Requests hyper itself refuses (a
//! malformed request line, a head too large, a URI too long) are answered in the dialect of
//! their path ([`rejection`]).

mod connection;
mod rejection;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use nexus_kernel::config::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};

use crate::app::App;
use connection::Limits;

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting, lets every
/// connection finish the request it is serving (idle keep-alive connections close at once),
/// and returns when all have closed. WebSocket connections, once upgraded, are no longer
/// HTTP connections: they end with the event bus.
pub async fn serve(listener: TcpListener, app: Arc<App>, config: &ServerConfig, shutdown: impl Future<Output = ()>) {
    let limits = Limits::of(config);
    let cap = connection_cap(config.max_connections);
    let permits = cap.map(|cap| Arc::new(Semaphore::new(cap)));
    // Told each time a connection closes: a descriptor may be free again.
    let closed = Arc::new(Notify::new());
    // Dropping `stop` tells every connection to finish; every connection holds a clone of
    // `open`, so `all_closed` completes when the last one ends.
    let (stop, stopping) = watch::channel(());
    let (all_closed, open) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    let mut backoff = Backoff::default();
    let mut at_cap = false;
    loop {
        let permit = match &permits {
            Some(permits) => {
                let full = permits.available_permits() == 0;
                if full && !at_cap {
                    tracing::warn!(
                        max_connections = cap,
                        "connection limit reached; new connections wait until one closes"
                    );
                }
                at_cap = full;
                tokio::select! {
                    permit = permits.clone().acquire_owned() => permit.ok(),
                    () = &mut shutdown => break,
                }
            }
            None => None,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff.succeeded();
                    accepted
                }
                Err(e) => {
                    tokio::select! {
                        () = backoff.failed(e, &closed) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        let done = Done { _permit: permit, closed: closed.clone() };
        tokio::spawn(connection::serve(tcp, peer, app.clone(), limits, stopping.clone(), open.clone(), done));
    }
    drop(listener);
    drop(stop);
    drop(open);
    all_closed.closed().await;
}

/// Held by a connection's socket, also once upgraded to a WebSocket (which holds a descriptor
/// as much as any connection); dropping it frees the connection's place.
pub(crate) struct Done {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    closed: Arc<Notify>,
}

impl Drop for Done {
    fn drop(&mut self) {
        self.closed.notify_one();
    }
}

/// How many connections are served at once: `configured` (0: no cap), lowered to what the
/// open-file limit leaves once [`reserved_descriptors`] are set aside.
fn connection_cap(configured: usize) -> Option<usize> {
    let room = open_file_limit().map(|limit| limit.saturating_sub(reserved_descriptors(limit)).max(1));
    let room = room.and_then(|room| usize::try_from(room).ok());
    match (configured, room) {
        (0, _) => None,
        (configured, Some(room)) if configured > room => {
            tracing::warn!(
                configured,
                max_connections = room,
                "server.max_connections is more than the open-file limit allows; serving fewer at once"
            );
            Some(room)
        }
        (configured, _) => Some(configured),
    }
}

/// Descriptors kept for everything but client connections: the database pool and its files,
/// outgoing requests (webhooks, Redis, PostgreSQL), logs, the runtime's own.
fn reserved_descriptors(limit: u64) -> u64 {
    (limit / 8).clamp(32, 1024)
}

/// The soft limit on open files, which bounds the connections a process can hold.
fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft)
    }
    #[cfg(not(unix))]
    None
}

/// Raises the process's soft limit on open files to its hard limit, so that the connection cap
/// rather than a low default (often 1,024) decides how many clients are served. Returns the
/// limit now in force.
pub fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(limit) => Some(limit),
            Err(e) => {
                tracing::warn!(error = %e, "cannot raise the open-file limit");
                open_file_limit()
            }
        }
    }
    #[cfg(not(unix))]
    None
}

/// The pause after a failed `accept`.
#[derive(Default)]
struct Backoff {
    /// The failures in a row.
    failures: u32,
    /// When a failure was last logged as an error: at the open-file limit, every closing
    /// connection lets one more in and the next accept fails again, which must not log an
    /// error each time.
    reported: Option<std::time::Instant>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const LONGEST: Duration = Duration::from_secs(1);
    const REPORT_EVERY: Duration = Duration::from_secs(10);

    fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::debug!(failures = self.failures, "accepting connections again");
            self.failures = 0;
        }
    }

    /// A connection that went away before it was accepted is nobody's problem. Anything else
    /// (out of file descriptors, mostly) fails again at once: the listener stays readable, so
    /// retrying at once would spin. Waits until a connection closes (which frees a descriptor)
    /// or for a pause that doubles with each failure in a row, up to a second.
    async fn failed(&mut self, e: std::io::Error, closed: &Notify) {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
        if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
            return;
        }
        let pause = Self::FIRST.saturating_mul(1 << self.failures.min(7)).min(Self::LONGEST);
        if self.reported.is_none_or(|at| at.elapsed() >= Self::REPORT_EVERY) {
            tracing::error!(error = %e, "cannot accept connections; retrying when one closes");
            self.reported = Some(std::time::Instant::now());
        }
        self.failures = self.failures.saturating_add(1);
        tracing::debug!(error = %e, failures = self.failures, pause_ms = pause.as_millis() as u64, "accept failed");
        tokio::select! {
            () = closed.notified() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}
