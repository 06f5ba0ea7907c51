//! Who is calling, as far as audit records and rate limits need to know.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::header::USER_AGENT;
use axum::http::request::Parts;

use crate::RequestId;

pub use nexus_kernel::client::ClientMeta;

/// Extracts the [`ClientMeta`] of a request; derefs to it, so that handlers hand `&client`
/// to domain operations.
#[derive(Debug, Clone, Default)]
pub struct Client(pub ClientMeta);

impl std::ops::Deref for Client {
    type Target = ClientMeta;

    fn deref(&self) -> &ClientMeta {
        &self.0
    }
}

impl Client {
    pub fn from_parts(parts: &Parts) -> ClientMeta {
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
        ClientMeta { ip, user_agent, request_id }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(Self::from_parts(parts)))
    }
}
