//! Who is calling, as far as audit records and rate limits need to know: the caller's
//! address, user agent and the request id. Surfaces fill it in from the request.

/// The caller's address, user agent and the request id, for audit records.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    /// The peer address of the connection (proxies are not trusted to speak for it).
    pub ip: String,
    pub user_agent: String,
    pub request_id: String,
}
