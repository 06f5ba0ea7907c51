//! The edge: the outermost middleware of every request. It assigns the request id, renders
//! every error in the dialect of the surface that owns the path (including the ones produced
//! outside any handler: unknown route, wrong method, oversized body, timeout, panic), records
//! metrics and carries the request id into every log line.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use nexus_kernel::Kernel;
use tracing::Instrument;

use crate::RequestId;
use crate::dialect::Dialect;
use crate::error::{ApiError, ErrorCode};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The route template a request matched, passed from the router back out to the edge.
#[derive(Debug, Clone)]
struct MatchedRoute(Arc<str>);

/// Route-level middleware: notes which route template matched, for the metrics label.
pub async fn note_route(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| Arc::<str>::from(m.as_str()));
    let mut response = next.run(req).await;
    if let Some(route) = route {
        response.extensions_mut().insert(MatchedRoute(route));
    }
    response
}

/// Outermost middleware; see the module documentation.
pub async fn edge(State(kernel): State<Arc<Kernel>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(nexus_kernel::id::request_id);
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let method = req.method().clone();
    let path = req.uri().path().to_owned();

    let span = tracing::info_span!("request", request_id = %request_id, method = %method, path = %path);
    let response = next.run(req).instrument(span.clone()).await;
    let mut response = render_error(response, &path, &method, &request_id);

    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let status = response.status();
    let route = response.extensions().get::<MatchedRoute>().map(|r| r.0.clone());
    let elapsed = started.elapsed();
    kernel.metrics.observe_request(
        method.as_str(),
        route.as_deref().unwrap_or("unmatched"),
        status.as_u16(),
        elapsed.as_secs_f64(),
    );
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), elapsed_ms = elapsed.as_millis() as u64, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), elapsed_ms = elapsed.as_millis() as u64, "request served");
        }
    });
    response
}

/// Client-supplied ids are echoed and logged, so only short, plain ones are taken.
fn acceptable_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Writes the body of an error response in the path's dialect. A response that carries an
/// [`ApiError`] is rendered from it; any other error status without a JSON body (produced by
/// routing or a tower layer) is rendered from its status.
pub fn render_error(response: Response, path: &str, method: &axum::http::Method, request_id: &str) -> Response {
    let dialect = Dialect::for_path(path);
    if let Some(error) = response.extensions().get::<ApiError>() {
        return keep_headers(dialect.render(error, request_id), &response);
    }
    let status = response.status();
    if status.as_u16() < 400 || is_json(&response) {
        return response;
    }
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::not_found(format!("No route for {method} {path}")),
        StatusCode::METHOD_NOT_ALLOWED => {
            ApiError::new(ErrorCode::MethodNotAllowed, format!("{method} is not allowed on {path}"))
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "Request body exceeds the size limit")
        }
        StatusCode::REQUEST_TIMEOUT => ApiError::new(ErrorCode::RequestTimeout, "The request took too long"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::new(ErrorCode::UnsupportedMediaType, "Unsupported Content-Type for this endpoint")
        }
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::invalid_field("body", "The request body is invalid"),
        StatusCode::INTERNAL_SERVER_ERROR => ApiError::new(ErrorCode::InternalError, "An internal error occurred"),
        other => {
            let mut e = ApiError::new(ErrorCode::for_status(other), crate::dialect::reason(other));
            e.status = other;
            e
        }
    };
    keep_headers(dialect.render(&error, request_id), &response)
}

/// Carries over headers of the original response that still apply (`Allow`, `Retry-After`, …).
fn keep_headers(mut rendered: Response, original: &Response) -> Response {
    for (name, value) in original.headers() {
        if name != CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH && !rendered.headers().contains_key(name)
        {
            rendered.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rendered
}

fn is_json(response: &Response<Body>) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.contains("+json"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_screened() {
        assert!(super::acceptable_request_id("req_abc-123"));
        assert!(!super::acceptable_request_id(""));
        assert!(!super::acceptable_request_id("a b"));
        assert!(!super::acceptable_request_id(&"x".repeat(200)));
    }
}
