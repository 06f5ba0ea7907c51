//! CORS and compression only for the requests that ask for them.
//!
//! Both tower-http layers do work on every request, also when it sent no `Origin` (no CORS
//! applies) or no `Accept-Encoding` (nothing will be compressed): header maps built and
//! merged, predicates run, bodies wrapped. Most API clients send neither, so the application
//! runs them only for the requests that do (`nexus::app`), and adds to the others only the
//! `Vary` header the full layer would have added, so that caches still key the answer on those
//! request headers (unless the answer is `Cache-Control: no-store`, which no cache keeps).

use axum::http::header::{CACHE_CONTROL, VARY};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;

/// What tower-http's `CorsLayer` puts in `Vary` (its `preflight_request_headers`).
pub const CORS_VARY: HeaderValue =
    HeaderValue::from_static("origin, access-control-request-method, access-control-request-headers");
/// What tower-http's `CompressionLayer` puts in `Vary`.
pub const COMPRESSION_VARY: HeaderValue = HeaderValue::from_static("accept-encoding");
/// Both, for an answer that went through neither layer.
pub const CORS_AND_COMPRESSION_VARY: HeaderValue =
    HeaderValue::from_static("origin, access-control-request-method, access-control-request-headers, accept-encoding");

/// Whether an answer says `Cache-Control: no-store`: no cache keeps it, so nothing need key
/// or tag it.
pub fn is_no_store(headers: &HeaderMap) -> bool {
    headers.get(CACHE_CONTROL).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("no-store"))
}

/// Adds `vary` to the answer's `Vary` values, unless no cache keeps the answer.
pub fn add_vary(response: &mut Response, vary: HeaderValue) {
    if !is_no_store(response.headers()) {
        response.headers_mut().append(VARY, vary);
    }
}
