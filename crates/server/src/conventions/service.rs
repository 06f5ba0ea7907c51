//! The conventions as one service around the router: the request timeout, batch, then
//! version negotiation, rate limits and ETags; on the way out, ETags, rate-limit headers,
//! version headers. One hand-written service instead of a layer each, because every request
//! passes all of them and each layer costs a copy of the request, a future of its own, and a
//! clone of itself per request. The edge calls it by reference ([`Conventions::answer`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nexus_kernel::Kernel;
use nexus_web::ApiError;
use tower::Service;

use super::batch::{self, BatchState};
use super::ratelimit::{self, RateLimits};
use super::{etag, version};

/// The conventions around the routes. Without `batch`, batches are not recognised and there is
/// no timeout: that is the service sub-requests of a batch run through, within the batch's
/// own timeout.
#[derive(Clone)]
pub struct Conventions {
    /// Always ready (as routers are): it is called without `poll_ready`.
    routes: Router,
    kernel: Arc<Kernel>,
    rate_limits: Arc<RateLimits>,
    batch: Option<Arc<BatchState>>,
    /// `server.request_timeout_secs`: a request still running then is answered 408.
    timeout: Option<Duration>,
}

impl Conventions {
    pub fn new(routes: Router, kernel: Arc<Kernel>, rate_limits: Arc<RateLimits>) -> Self {
        Self { routes, kernel, rate_limits, batch: None, timeout: None }
    }

    /// The outermost conventions: also answers `POST /api/batch`, running the sub-requests
    /// through `state.core`, and answers 408 to a request still running after
    /// `server.request_timeout_secs`.
    pub fn with_batch(self, state: BatchState) -> Self {
        let timeout = Some(Duration::from_secs(self.kernel.config.server.request_timeout_secs));
        Self { batch: Some(Arc::new(state)), timeout, ..self }
    }

    /// The conventions' answer to `req`. What needs no waiting (batch recognition, version
    /// negotiation, whether rate limits apply) is decided here, so that the future holds only
    /// what this request needs.
    pub fn answer(&self, mut req: Request) -> impl Future<Output = Response> + Send + 'static {
        let routes = self.routes.clone();
        let plan = match self.batch.as_ref().filter(|_| batch::is_batch(&req)) {
            Some(state) => Plan::Batch(state.clone()),
            None => match version::resolve(&self.kernel, &mut req) {
                Err(refused) => Plan::Refused(refused),
                Ok(negotiated) => Plan::Route {
                    negotiated,
                    rate_limits: self.rate_limits.applies_to(req.uri().path()).then(|| self.rate_limits.clone()),
                },
            },
        };
        Within { answer: answer(routes, plan, req), timeout: self.timeout, timer: None }
    }
}

/// CORS wraps the conventions as a tower service (`crate::app`).
impl Service<Request> for Conventions {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The routes are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let answer = self.answer(req);
        Box::pin(async move { Ok(answer.await) })
    }
}

/// What the conventions do with one request, decided before it waits for anything.
enum Plan {
    Batch(Arc<BatchState>),
    Refused(ApiError),
    Route { negotiated: Option<version::Negotiated>, rate_limits: Option<Arc<RateLimits>> },
}

/// The conventions around one request. A plain `async fn`, moved into the edge's box once: its
/// state holds the request and the router's future, and nothing twice.
async fn answer(mut routes: Router, plan: Plan, mut req: Request) -> Response {
    let (negotiated, rate_limits) = match plan {
        // Boxed: a batch's future is large, and this one is moved on every request.
        Plan::Batch(state) => return Box::pin(batch::answer(&state, req)).await,
        Plan::Refused(refused) => return refused.into_response(),
        Plan::Route { negotiated, rate_limits } => (negotiated, rate_limits),
    };
    let mut admitted = None;
    if let Some(rate_limits) = rate_limits {
        // Boxed: authenticating and counting (Redis) make a large future, and most exempt
        // requests (health checks) should not carry its size.
        match Box::pin(ratelimit::admit(&rate_limits, req)).await {
            Ok((counted, headers)) => {
                req = counted;
                admitted = headers;
            }
            Err(limited) => return limited,
        }
    }
    let taggable = etag::taggable(&req);
    let Ok(mut response) = routes.call(req).await;
    if let Some(admitted) = admitted {
        admitted.apply(&mut response);
    }
    if let Some(taggable) = taggable
        && etag::wants_tag(&response)
    {
        // Boxed: buffering and hashing the body makes a large future, which the untagged
        // answers should not carry.
        response = Box::pin(etag::tag(taggable, response)).await;
    }
    if let Some(negotiated) = negotiated {
        negotiated.apply(&mut response);
    }
    response
}

pin_project_lite::pin_project! {
    /// `answer`, or `408 Request Timeout` (rendered by the edge in the path's dialect) once
    /// `timeout` (if any) has passed. Most requests are answered on their first poll: the timer (a
    /// clock read, a timer entry) is only set up, and boxed, for one that is not. The timeout
    /// thus counts from the end of the first poll, which is microseconds after the start.
    struct Within<F> {
        #[pin]
        answer: F,
        timeout: Option<Duration>,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<F: Future<Output = Response>> Future for Within<F> {
    type Output = Response;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(response) = this.answer.poll(cx) {
            return Poll::Ready(response);
        }
        let Some(timeout) = *this.timeout else { return Poll::Pending };
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(StatusCode::REQUEST_TIMEOUT.into_response()),
            Poll::Pending => Poll::Pending,
        }
    }
}
