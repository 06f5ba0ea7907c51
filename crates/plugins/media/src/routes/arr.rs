//! `/api/arr/{sonarr,radarr,prowlarr}/…`: the gateway's HTTP edge; the upstream's answer is
//! passed through as it comes (status, headers, streamed body).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use nexus_identity::Auth;
use nexus_web::ApiError;

use crate::arr::Gateway;

/// Response headers of the upstream's connection, not of its answer.
const DROPPED_RESPONSE_HEADERS: &[&str] =
    &["connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection"];

pub async fn forward(State(gateway): State<Arc<Gateway>>, Auth(p): Auth, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let rest = path.strip_prefix("/api/arr/").unwrap_or_default();
    let (service, tail) = match rest.find('/') {
        Some(i) => (rest.get(..i).unwrap_or_default(), rest.get(i..).unwrap_or_default()),
        None => (rest, "/"),
    };
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{tail}?{q}"),
        None => tail.to_string(),
    };
    let headers: Vec<(String, Vec<u8>)> =
        parts.headers.iter().map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec())).collect();
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
        .map_err(|_| ApiError::invalid_field("method", "Unsupported method"))?;
    let body = reqwest::Body::wrap_stream(body.into_data_stream());
    let upstream = gateway.forward(&p, service, method, &path_and_query, &headers, body).await?;
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in upstream.headers() {
        if DROPPED_RESPONSE_HEADERS.contains(&name.as_str()) {
            continue;
        }
        if let (Ok(n), Ok(v)) =
            (HeaderName::from_bytes(name.as_str().as_bytes()), HeaderValue::from_bytes(value.as_bytes()))
        {
            response.headers_mut().append(n, v);
        }
    }
    *response.body_mut() = Body::from_stream(upstream.bytes_stream());
    Ok(response)
}
