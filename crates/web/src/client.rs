//! Who is calling, as far as audit records and rate limits need to know.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::header::USER_AGENT;
use axum::http::request::Parts;

use crate::RequestId;

/// The caller's address, user agent and the request id, for audit records.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    /// The peer address of the connection (proxies are not trusted to speak for it).
    pub ip: String,
    pub user_agent: String,
    pub request_id: String,
}

impl ClientMeta {
    pub fn from_parts(parts: &Parts) -> Self {
        let ip = crate::context::peer().map(|addr| addr.ip().to_string()).unwrap_or_default();
        let user_agent = parts
            .headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect())
            .unwrap_or_default();
        // A batch sub-request carries its own id; any other request has its edge's.
        let request_id = match parts.extensions.get::<RequestId>() {
            Some(RequestId(id)) => id.clone(),
            None => crate::context::request_id().unwrap_or_default(),
        };
        Self { ip, user_agent, request_id }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientMeta {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_parts(parts))
    }
}
