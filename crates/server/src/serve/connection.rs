//! One connection: hyper's HTTP/1.1 state machine over the socket, and a watchdog that closes
//! the connection when a request head takes too long to arrive or the connection sits idle.
//!
//! hyper's own `header_read_timeout` is not used: from hyper 1.4 its clock runs whenever hyper
//! waits for a head, idle keep-alive time included, so it cannot tell a slow client from an
//! idle one, and it resets a timer-wheel entry on every request. Here the socket wrapper and
//! the service note, with two reads of the coarse clock per request, which phase the
//! connection is in and since when ([`Phase`]); the watchdog sleeps until the phase's deadline
//! and rarely wakes.

use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use nexus_kernel::config::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::Done;
use super::rejection::Rejection;
use crate::app::{Answer, Connection};

/// The timeouts of [`ServerConfig`]; `None` where the configuration says 0.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    header_read: Option<Duration>,
    keep_alive: Option<Duration>,
}

impl Limits {
    pub(super) fn of(config: &ServerConfig) -> Self {
        let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        Self { header_read: secs(config.header_read_timeout_secs), keep_alive: secs(config.keep_alive_timeout_secs) }
    }

    /// How long the connection may stay in `phase`; `None`: as long as it likes.
    fn of_phase(self, phase: u8) -> Option<Duration> {
        match phase {
            Phase::NEW | Phase::HEAD => self.header_read,
            Phase::IDLE => self.keep_alive,
            _ => None,
        }
    }

    /// How often a connection serving a request (whose end the watchdog is not told of) is
    /// looked at again; `None` when no timeout is configured at all.
    fn recheck(self) -> Option<Duration> {
        match (self.header_read, self.keep_alive) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What a connection is doing, and since when.
struct Phase {
    phase: AtomicU8,
    /// When the phase began, in nanoseconds on the coarse monotonic clock: its few
    /// milliseconds of grain are nothing to timeouts of seconds, and it is read twice per
    /// request.
    since: AtomicU64,
}

impl Phase {
    /// Accepted, nothing received yet: a client must start its request within the
    /// header-read timeout.
    const NEW: u8 = 0;
    /// Part of a request head received: it must be complete within the header-read timeout
    /// of its first byte.
    const HEAD: u8 = 1;
    /// A request being served, from the call of the application to the end of its response
    /// body: no timeout here (the request timeout bounds the application).
    const BUSY: u8 = 2;
    /// Between requests: closed after the keep-alive timeout.
    const IDLE: u8 = 3;

    fn new() -> Self {
        Self { phase: AtomicU8::new(Self::NEW), since: AtomicU64::new(coarse_nanos()) }
    }

    /// Only the connection's own task touches the phase (hyper drives the socket, the service
    /// and the body from it), so plain loads and stores do: there is no race to resolve.
    fn get(&self) -> u8 {
        self.phase.load(Relaxed)
    }

    fn enter(&self, phase: u8) {
        self.phase.store(phase, Relaxed);
        self.since.store(coarse_nanos(), Relaxed);
    }

    fn busy(&self) {
        self.phase.store(Self::BUSY, Relaxed);
    }

    /// How long until the current phase ends under `limits` (zero: it has), or until the
    /// watchdog looks again; `None`: never.
    fn left(&self, limits: Limits) -> Option<Duration> {
        match limits.of_phase(self.get()) {
            Some(limit) => {
                let end = Duration::from_nanos(self.since.load(Relaxed)) + limit;
                Some(end.saturating_sub(Duration::from_nanos(coarse_nanos())))
            }
            None => limits.recheck(),
        }
    }
}

fn coarse_nanos() -> u64 {
    u64::try_from(nexus_kernel::clock::coarse::monotonic().as_nanos()).unwrap_or(u64::MAX)
}

/// Serves the connection `tcp` from `peer` until it closes, times out or the server stops.
pub(super) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Arc<crate::App>,
    limits: Limits,
    mut stopping: watch::Receiver<()>,
    open: watch::Receiver<()>,
    done: Done,
) {
    // Answers are written whole: Nagle's algorithm would only hold the last segment back.
    let _ = tcp.set_nodelay(true);
    let phase = Arc::new(Phase::new());
    let io = TokioIo::new(Socket::new(tcp, phase.clone(), done));
    let service = Tracked { connection: Connection { app, peer }, phase: phase.clone() };
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service).with_upgrades();
    let mut connection = pin!(connection);
    let mut watchdog = pin!(tokio::time::sleep_until(far_future()));
    let mut watching = match phase.left(limits) {
        Some(left) => {
            watchdog.as_mut().reset(tokio::time::Instant::now() + left);
            true
        }
        None => false,
    };
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            _ = stopping.changed() => {
                connection.as_mut().graceful_shutdown();
                break connection.await;
            }
            () = watchdog.as_mut(), if watching => {
                match phase.left(limits) {
                    Some(left) if !left.is_zero() => watchdog.as_mut().reset(tokio::time::Instant::now() + left),
                    Some(_) => {
                        let waiting_for = if phase.get() == Phase::IDLE { "a next request" } else { "a request head" };
                        tracing::debug!(%peer, "closing a connection that waited too long for {waiting_for}");
                        break Ok(());
                    }
                    None => watching = false,
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::trace!(%peer, error = %e, "connection ended with an error");
    }
    drop(open);
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// The application, noting when each request starts ([`Phase::BUSY`]) and when its response
/// has been sent (the response body is dropped: [`Phase::IDLE`]).
struct Tracked {
    connection: Connection,
    phase: Arc<Phase>,
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<TrackedBody>;
    type Error = std::convert::Infallible;
    type Future = TrackedAnswer;

    fn call(&self, req: Request<Incoming>) -> TrackedAnswer {
        self.phase.busy();
        TrackedAnswer { answer: hyper::service::Service::call(&self.connection, req), phase: Some(self.phase.clone()) }
    }
}

pub(super) struct TrackedAnswer {
    answer: Answer,
    phase: Option<Arc<Phase>>,
}

impl Future for TrackedAnswer {
    type Output = Result<Response<TrackedBody>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Ok(response) = ready!(Pin::new(&mut this.answer).poll(cx));
        let phase = this.phase.take();
        Poll::Ready(Ok(response.map(|body| TrackedBody { body, phase })))
    }
}

/// A response body that ends its request's [`Phase::BUSY`] when hyper drops it, which it does
/// once the body has been written (or the connection failed).
pub(super) struct TrackedBody {
    body: Body,
    phase: Option<Arc<Phase>>,
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        if let Some(phase) = &self.phase {
            phase.enter(Phase::IDLE);
        }
    }
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, noting the first byte of each request head ([`Phase::HEAD`]) and keeping its
/// first bytes, so that a request hyper refuses can be answered in its path's dialect
/// ([`Rejection`]).
struct Socket {
    tcp: TcpStream,
    phase: Arc<Phase>,
    /// The first bytes of the request head being received (method and the start of the
    /// target): enough for the dialect.
    head: [u8; Rejection::HEAD_PREFIX],
    head_len: usize,
    /// Boxed: rare, and the socket outlives an upgrade (a WebSocket's whole life).
    rejection: Option<Box<Rejection>>,
    /// The connection's place under the cap, freed when the socket closes.
    _done: Done,
}

impl Socket {
    fn new(tcp: TcpStream, phase: Arc<Phase>, done: Done) -> Self {
        Self { tcp, phase, head: [0; Rejection::HEAD_PREFIX], head_len: 0, rejection: None, _done: done }
    }

    fn received(&mut self, bytes: &[u8]) {
        match self.phase.get() {
            Phase::NEW | Phase::IDLE => {
                self.phase.enter(Phase::HEAD);
                self.head_len = 0;
            }
            Phase::HEAD => {}
            _ => return,
        }
        let room = self.head.get_mut(self.head_len..).unwrap_or_default();
        let n = room.len().min(bytes.len());
        if let (Some(to), Some(from)) = (room.get_mut(..n), bytes.get(..n)) {
            to.copy_from_slice(from);
            self.head_len += n;
        }
    }

    /// Whether `first` (the start of what hyper writes) is hyper's own answer to a request it
    /// refused, and if so, starts writing the dialect's answer instead. Such an answer is
    /// written while a request head is being received ([`Phase::HEAD`]: hyper calls the
    /// application for every head it accepts) and has an empty body, which no answer of the
    /// application has at these statuses: the edge gives every error a JSON body.
    fn intercepts(&mut self, first: &[u8]) -> bool {
        if self.phase.get() != Phase::HEAD || self.rejection.is_some() {
            return false;
        }
        let head = self.head.get(..self.head_len).unwrap_or_default();
        self.rejection = Rejection::replace(first, head).map(Box::new);
        self.rejection.is_some()
    }
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.tcp).poll_read(cx, buf))?;
        if let Some(new) = buf.filled().get(before..)
            && !new.is_empty()
        {
            this.received(new);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.intercepts(buf) {
            return Poll::Ready(Ok(buf.len()));
        }
        if let Some(rejection) = &mut this.rejection {
            ready!(rejection.poll_send(&mut this.tcp, cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let total = || bufs.iter().map(|b| b.len()).sum();
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && this.intercepts(first)
        {
            return Poll::Ready(Ok(total()));
        }
        if let Some(rejection) = &mut this.rejection {
            ready!(rejection.poll_send(&mut this.tcp, cx))?;
            return Poll::Ready(Ok(total()));
        }
        Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(rejection) = &mut this.rejection {
            ready!(rejection.poll_send(&mut this.tcp, cx))?;
        }
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(rejection) = &mut this.rejection {
            ready!(rejection.poll_send(&mut this.tcp, cx))?;
        }
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
