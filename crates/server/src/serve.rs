//! Accepting connections and serving HTTP/1.1 on them, with graceful shutdown.
//!
//! Hand-written rather than `axum::serve`: that one clones the connection's whole service
//! stack for every request and drives each connection through the HTTP-version-detecting
//! builder of hyper-util; here every request of a connection calls the one shared
//! application by reference ([`crate::app::Connection`]).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::{App, Connection};

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting, lets every
/// connection finish the request it is serving (idle keep-alive connections close at once),
/// and returns when all have closed. WebSocket connections, once upgraded, are no longer
/// HTTP connections: they end with the event bus.
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    // Dropping `stop` tells every connection to finish; every connection holds a clone of
    // `open`, so `all_closed` completes when the last one ends.
    let (stop, stopping) = watch::channel(());
    let (all_closed, open) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    pause_after(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers are written whole: Nagle's algorithm would only hold the last segment back.
        let _ = tcp.set_nodelay(true);
        let service = Connection { app: app.clone(), peer };
        let mut stopping = stopping.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let connection =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).with_upgrades();
            let mut connection = pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::trace!(%peer, error = %e, "connection ended with an error");
            }
            drop(open);
        });
    }
    drop(listener);
    drop(stop);
    drop(open);
    all_closed.closed().await;
}

/// After a failed `accept`: a connection that went away before it was accepted is nobody's
/// problem; anything else (out of file descriptors, say) would fail again at once, so wait.
async fn pause_after(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "cannot accept connections; trying again in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
