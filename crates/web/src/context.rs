//! What the edge knows about the request being served, reachable from anywhere in its task.
//!
//! The request id is here rather than in a tracing span: a span per request cost a tenth of a
//! small request's CPU (its fields are formatted when it opens, it is entered and left on every
//! poll), while a task-local is set once and read only by the rare log line that needs it
//! (the log formatter in `nexus::telemetry` prints it on every line of the request). The route
//! template is noted here by the router for the edge's metrics, instead of travelling back on
//! the response. The peer address is here too, rather than inserted into each request's
//! extensions (axum's `ConnectInfo`): it is known before the request arrives, and few requests
//! read it. Services are not: plugins are handed theirs at start.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::MatchedPath;
use nexus_kernel::plugin::Slot;

tokio::task_local! {
    static REQUEST: Arc<RequestContext>;
}

#[derive(Debug)]
pub struct RequestContext {
    id: String,
    peer: Option<SocketAddr>,
    route: OnceLock<(Template, Arc<Slot>)>,
}

/// A route template: axum's, or one a plugin installed at run time matched itself.
#[derive(Debug)]
enum Template {
    Matched(MatchedPath),
    Dynamic(Arc<str>),
}

impl Template {
    fn as_str(&self) -> &str {
        match self {
            Template::Matched(m) => m.as_str(),
            Template::Dynamic(d) => d,
        }
    }
}

impl RequestContext {
    /// The context of request `id` from `peer`.
    pub fn new(id: String, peer: Option<SocketAddr>) -> Arc<Self> {
        Arc::new(Self { id, peer, route: OnceLock::new() })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The address of the connection's other end (not a proxy's word for the client's).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The template of the route that matched, if one did.
    pub fn route(&self) -> Option<&str> {
        self.route.get().map(|(route, _)| route.as_str())
    }

    /// The plugin whose route matched, if one did.
    pub fn plugin(&self) -> Option<&Arc<Slot>> {
        self.route.get().map(|(_, slot)| slot)
    }

    /// Runs `future` with `self` as the current request. Not an `async fn`: that would be one
    /// more state machine around `future`, and one more copy of it.
    pub fn scope<F: Future>(self: Arc<Self>, future: F) -> impl Future<Output = F::Output> {
        REQUEST.scope(self, future)
    }

    /// Runs `f` with `self` as the current request.
    pub fn sync_scope<R>(self: Arc<Self>, f: impl FnOnce() -> R) -> R {
        REQUEST.sync_scope(self, f)
    }
}

/// Calls `f` with the id of the request this task is serving, if it is serving one.
pub fn with_request_id<R>(f: impl FnOnce(Option<&str>) -> R) -> R {
    match REQUEST.try_with(Arc::clone) {
        Ok(ctx) => f(Some(ctx.id())),
        Err(_) => f(None),
    }
}

/// The id of the request this task is serving, if any.
pub fn request_id() -> Option<String> {
    with_request_id(|id| id.map(str::to_owned))
}

/// The peer address of the connection of the request this task is serving, if known.
pub fn peer() -> Option<SocketAddr> {
    REQUEST.try_with(|ctx| ctx.peer).ok().flatten()
}

/// Notes the route template that matched, and its plugin.
pub(crate) fn note_route(route: &MatchedPath, slot: &Arc<Slot>) {
    let _ = REQUEST.try_with(|ctx| ctx.route.set((Template::Matched(route.clone()), slot.clone())));
}

/// Notes the template of a route matched outside the router (a WebAssembly plugin's), and its
/// plugin, for the edge's metrics and the plugin's traffic.
pub fn note_dynamic_route(template: Arc<str>, slot: &Arc<Slot>) {
    let _ = REQUEST.try_with(|ctx| ctx.route.set((Template::Dynamic(template), slot.clone())));
}
