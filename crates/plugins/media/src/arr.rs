//! The *arr gateway: `/api/arr/{sonarr,radarr,prowlarr}/…` forwarded to the configured server
//! (`media.arr.<name>.url`) with its API key injected as `X-Api-Key`, bodies streamed both ways,
//! under a timeout, with per-service metrics and the `media.arr` permission.

use std::collections::BTreeMap;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use nexus_identity::Principal;
use nexus_kernel::config::ArrUpstream;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::MediaError;

pub const ARR: &str = "media.arr";
pub const SERVICES: &[&str] = &["sonarr", "radarr", "prowlarr"];

/// Request headers that are the connection's or the caller's own, never forwarded.
const DROPPED_REQUEST_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "authorization",
    "x-api-key",
    "cookie",
    "content-length",
];

#[derive(Debug)]
pub struct Gateway {
    /// Built at the first forward: building loads the system's CA roots, a good part of
    /// start-up's time, for a gateway most installations never configure.
    client: OnceLock<reqwest::Client>,
    timeout: Duration,
    /// Replaced whole when an operator changes `media.arr` (see [`Gateway::set_upstreams`]).
    upstreams: RwLock<BTreeMap<String, ArrUpstream>>,
    requests: Family<Vec<(String, String)>, Counter>,
}

impl Gateway {
    pub fn new(kernel: &nexus_kernel::Kernel) -> Self {
        let timeout = Duration::from_secs(kernel.config.media.arr_timeout_secs.max(1));
        let requests = Family::default();
        kernel.metrics.register("nexus_media_arr_requests", "Requests forwarded to *arr servers", requests.clone());
        let gateway = Self { client: OnceLock::new(), timeout, upstreams: RwLock::default(), requests };
        gateway.set_upstreams(&kernel.config.media.arr);
        gateway
    }

    /// Forwards to `upstreams` from now on: a URL or key changed through the API applies
    /// without a restart.
    pub fn set_upstreams(&self, upstreams: &BTreeMap<String, ArrUpstream>) {
        let by_name = upstreams.iter().map(|(name, u)| (name.to_ascii_lowercase(), u.clone())).collect();
        if let Ok(mut current) = self.upstreams.write() {
            *current = by_name;
        }
    }

    fn client(&self) -> &reqwest::Client {
        self.client.get_or_init(|| {
            reqwest::Client::builder()
                .timeout(self.timeout)
                .connect_timeout(self.timeout.min(Duration::from_secs(10)))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default()
        })
    }

    /// The configured server of `service`, if it has a URL.
    fn upstream(&self, service: &str) -> Option<ArrUpstream> {
        let upstreams = self.upstreams.read().ok()?;
        upstreams.get(service).filter(|u| !u.url.trim().is_empty()).cloned()
    }

    fn count(&self, service: &str, outcome: &str) {
        self.requests
            .get_or_create(&vec![
                (String::from("service"), service.to_string()),
                (String::from("outcome"), outcome.to_string()),
            ])
            .inc();
    }

    /// Whether `service` has a server configured.
    pub fn configured(&self, service: &str) -> bool {
        self.upstream(service).is_some()
    }

    /// Sends a JSON body to `service` on Nexus's own behalf (an approved request); the
    /// upstream's status.
    pub(crate) async fn send(&self, service: &str, path: &str, body: &serde_json::Value) -> Result<u16, MediaError> {
        let Some(upstream) = self.upstream(service) else {
            return Err(MediaError::ArrNotConfigured(service.to_string()));
        };
        let url = format!("{}{}", upstream.url.trim_end_matches('/'), path);
        let mut req = self.client().post(&url).json(body);
        if let Some(key) = upstream.api_key.as_deref().filter(|k| !k.is_empty()) {
            req = req.header("X-Api-Key", key);
        }
        match req.send().await {
            Ok(r) => {
                self.count(service, &format!("{}xx", r.status().as_u16() / 100));
                Ok(r.status().as_u16())
            }
            Err(_) => {
                self.count(service, "unreachable");
                let at = nexus_kernel::config::mask_url(&upstream.url);
                Err(MediaError::ArrUnreachable(format!("{service} at {at} is unreachable")))
            }
        }
    }

    /// Forwards one request; `path_and_query` is what follows `/api/arr/{service}`.
    pub async fn forward(
        &self,
        p: &Principal,
        service: &str,
        method: reqwest::Method,
        path_and_query: &str,
        headers: &[(String, Vec<u8>)],
        body: reqwest::Body,
    ) -> Result<reqwest::Response, MediaError> {
        if !p.has(ARR) {
            return Err(MediaError::Forbidden(ARR.to_string()));
        }
        let service = service.to_ascii_lowercase();
        if !SERVICES.contains(&service.as_str()) {
            return Err(MediaError::NotFound("*arr service"));
        }
        let Some(upstream) = self.upstream(&service) else {
            self.count(&service, "unconfigured");
            return Err(MediaError::ArrNotConfigured(service));
        };
        let url = format!("{}{}", upstream.url.trim_end_matches('/'), path_and_query);
        let mut req = self.client().request(method, &url);
        for (name, value) in headers {
            if !DROPPED_REQUEST_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                req = req.header(name.as_str(), value.as_slice());
            }
        }
        if let Some(key) = upstream.api_key.as_deref().filter(|k| !k.is_empty()) {
            req = req.header("X-Api-Key", key);
        }
        match req.body(body).send().await {
            Ok(response) => {
                self.count(&service, &format!("{}xx", response.status().as_u16() / 100));
                Ok(response)
            }
            Err(e) => {
                self.count(&service, if e.is_timeout() { "timeout" } else { "unreachable" });
                // The upstream's address is configuration, not a secret (a password in it is
                // masked); its key is never shown.
                let why = if e.is_timeout() { "did not answer in time" } else { "is unreachable" };
                let at = nexus_kernel::config::mask_url(&upstream.url);
                Err(MediaError::ArrUnreachable(format!("{service} at {at} {why}")))
            }
        }
    }
}
