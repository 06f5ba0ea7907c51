//! `ETag` on successful JSON answers to `GET`, and `304 Not Modified` when the client's
//! `If-None-Match` names the current one. The tag is weak (`W/"…"`): it is computed on the
//! uncompressed body, and compression may apply on the way out.

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;
use sha2::{Digest, Sha256};

/// Bodies larger than this are sent without a tag rather than buffered.
const MAX_TAGGED: u64 = 1024 * 1024;

/// What the answer to a `GET` or `HEAD` needs from its request: the client's `If-None-Match`.
#[derive(Debug)]
pub struct Taggable {
    if_none_match: Option<String>,
}

/// Before routing: `None` when the request's answer is not tagged (not `GET` or `HEAD`).
pub fn taggable(req: &Request) -> Option<Taggable> {
    // Not HEAD: the router answers it without the body, whose hash the tag would be, so a
    // tag there would be the empty body's, unlike the GET's.
    if req.method() != Method::GET {
        return None;
    }
    Some(Taggable { if_none_match: req.headers().get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()).map(str::to_owned) })
}

/// After the handler: whether its answer gets a tag ([`tag`]). Only successful JSON answers
/// of a bounded, known size that may be stored and have no tag of their own do.
pub fn wants_tag(response: &Response) -> bool {
    // Cheapest and most often decisive first. `no-store` answers (health checks) change every
    // time: a tag would cost a hash for nothing.
    if response.status() != StatusCode::OK || nexus_web::conditional::is_no_store(response.headers()) {
        return false;
    }
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let size = axum::body::HttpBody::size_hint(response.body()).upper();
    is_json && !response.headers().contains_key(ETAG) && size.is_some_and(|s| s <= MAX_TAGGED)
}

/// Adds the tag to an answer that [`wants_tag`], or turns it into `304 Not Modified`.
pub async fn tag(taggable: Taggable, response: Response) -> Response {
    let if_none_match = taggable.if_none_match;
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::try_from(MAX_TAGGED).unwrap_or(usize::MAX)).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let digest = Sha256::digest(&bytes);
    let tag = format!("W/\"{}\"", nexus_kernel::id::hex(digest.get(..16).unwrap_or_default()));
    if let Ok(value) = HeaderValue::from_str(&tag) {
        parts.headers.insert(ETAG, value);
    }
    if if_none_match.is_some_and(|inm| matches(&inm, &tag)) {
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove(CONTENT_LENGTH);
        parts.headers.remove(CONTENT_TYPE);
        return Response::from_parts(parts, Body::empty());
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Weak comparison (RFC 9110 §13.1.2): `*`, or any listed tag equal once `W/` is dropped.
fn matches(header: &str, tag: &str) -> bool {
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
    header.split(',').any(|t| t.trim() == "*" || opaque(t) == opaque(tag))
}

#[cfg(test)]
mod tests {
    #[test]
    fn weak_comparison() {
        assert!(super::matches("W/\"abc\"", "W/\"abc\""));
        assert!(super::matches("\"x\", \"abc\"", "W/\"abc\""));
        assert!(super::matches("*", "W/\"abc\""));
        assert!(!super::matches("\"abd\"", "W/\"abc\""));
    }
}
