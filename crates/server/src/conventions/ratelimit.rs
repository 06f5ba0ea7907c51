//! Rate limits per identity (user or API key), else per client IP, by route class, with the
//! seeds' headers on every limited response and their 429 body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nexus_identity::Identity;
use nexus_identity::principal::{self, Credential};
use nexus_kernel::Kernel;
use nexus_kernel::ratelimit::Decision;
use nexus_web::{ApiError, ErrorCode};

/// A path pattern: `/x/*` (`/x` and below), `/x*` (any path starting so) or exact.
#[derive(Debug, Clone)]
enum Pattern {
    Under(String),
    Prefix(String),
    Exact(String),
}

impl Pattern {
    fn new(text: &str) -> Self {
        if let Some(base) = text.strip_suffix("/*") {
            Pattern::Under(base.to_string())
        } else if let Some(prefix) = text.strip_suffix('*') {
            Pattern::Prefix(prefix.to_string())
        } else {
            Pattern::Exact(text.to_string())
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Pattern::Under(base) => {
                path == base || path.strip_prefix(base.as_str()).is_some_and(|rest| rest.starts_with('/'))
            }
            Pattern::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Pattern::Exact(exact) => path == exact,
        }
    }
}

#[derive(Debug, Clone)]
struct Class {
    name: String,
    patterns: Vec<Pattern>,
    limit: u32,
    window: Duration,
}

/// The configured limits, resolved once at start.
#[derive(Debug)]
pub struct RateLimits {
    kernel: Arc<Kernel>,
    identity: Arc<Identity>,
    enabled: bool,
    exempt: Vec<Pattern>,
    classes: Vec<Class>,
    default: Class,
    premium_multiplier: u32,
}

impl RateLimits {
    pub fn new(kernel: Arc<Kernel>, identity: Arc<Identity>) -> Arc<Self> {
        let cfg = &kernel.config.rate_limits;
        let classes = cfg
            .classes
            .iter()
            .map(|c| Class {
                name: c.name.clone(),
                patterns: c.paths.iter().map(|p| Pattern::new(p)).collect(),
                limit: c.limit.unwrap_or(if c.name == "login" {
                    kernel.config.auth.login_attempts_per_minute
                } else {
                    cfg.limit
                }),
                window: Duration::from_secs(c.window_secs),
            })
            .collect();
        let default = Class {
            name: String::from("default"),
            patterns: Vec::new(),
            limit: cfg.limit,
            window: Duration::from_secs(cfg.window_secs),
        };
        Arc::new(Self {
            enabled: cfg.enabled,
            exempt: cfg.exempt.iter().map(|p| Pattern::new(p)).collect(),
            classes,
            default,
            premium_multiplier: cfg.premium_multiplier,
            identity,
            kernel,
        })
    }

    fn class_for(&self, path: &str) -> &Class {
        self.classes.iter().find(|c| c.patterns.iter().any(|p| p.matches(path))).unwrap_or(&self.default)
    }
}

/// Route-level middleware: counts the request and adds the `X-RateLimit-*` headers, or answers
/// 429. It authenticates the caller once and leaves the [`Principal`](nexus_identity::Principal)
/// in the request for the handler's `Auth` extractor.
pub async fn limit(State(rl): State<Arc<RateLimits>>, req: Request, next: Next) -> Response {
    if !rl.enabled {
        return next.run(req).await;
    }
    let path = req.uri().path();
    if rl.exempt.iter().any(|p| p.matches(path)) {
        return next.run(req).await;
    }
    let class = rl.class_for(path).clone();
    let (mut parts, body) = req.into_parts();
    let mut who = None;
    let mut premium = false;
    if let Some(presented) = principal::presented(&parts)
        && let Ok(p) = rl.identity.authenticate(&presented).await
    {
        who = Some(match &p.credential {
            Credential::ApiKey { key_id, .. } => format!("key:{key_id}"),
            Credential::Token { .. } => format!("user:{}", p.user_id),
        });
        // A premium key gets the premium tier unless it asks for the standard one; the
        // tier header of anyone else is ignored.
        let tier = parts.headers.get("x-rate-limit-tier").and_then(|v| v.to_str().ok()).unwrap_or("premium");
        premium = p.is_premium_key() && !tier.trim().eq_ignore_ascii_case("standard");
        parts.extensions.insert(p);
    }
    let who = who.unwrap_or_else(|| {
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(a)| a.ip().to_string());
        format!("ip:{}", ip.unwrap_or_default())
    });
    let limit = if premium { class.limit.saturating_mul(rl.premium_multiplier) } else { class.limit };
    let decision = rl.kernel.rate_limits.check(&format!("{}:{who}", class.name), limit, class.window).await;
    let tier = if premium { "premium" } else { "standard" };
    if !decision.allowed {
        let mut err = ApiError::new(
            ErrorCode::RateLimitExceeded,
            format!("Rate limit exceeded. Please retry after {} seconds.", decision.reset_after),
        )
        .with_extra("retry_after", decision.reset_after)
        .with_extra("limit", decision.limit)
        .with_extra("window", window_text(decision.window));
        err = err.with_header(axum::http::header::RETRY_AFTER, HeaderValue::from(decision.reset_after));
        for (name, value) in headers(&decision, tier) {
            err = err.with_header(name, value);
        }
        return err.into_response();
    }
    let mut response = next.run(Request::from_parts(parts, body)).await;
    let map: &mut HeaderMap = response.headers_mut();
    for (name, value) in headers(&decision, tier) {
        map.insert(name, value);
    }
    response
}

fn headers(d: &Decision, tier: &'static str) -> [(HeaderName, HeaderValue); 6] {
    [
        (HeaderName::from_static("x-ratelimit-limit"), HeaderValue::from(d.limit)),
        (HeaderName::from_static("x-ratelimit-remaining"), HeaderValue::from(d.remaining)),
        (HeaderName::from_static("x-ratelimit-reset"), HeaderValue::from(d.reset_at)),
        (HeaderName::from_static("x-ratelimit-reset-after"), HeaderValue::from(d.reset_after)),
        (HeaderName::from_static("x-ratelimit-window"), HeaderValue::from(d.window)),
        (HeaderName::from_static("x-ratelimit-tier"), HeaderValue::from_static(tier)),
    ]
}

/// `3600` → `1h`, `60` → `1m`, else seconds (`90s`).
fn window_text(secs: u64) -> String {
    if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_documented() {
        assert!(Pattern::new("/api/xr/*").matches("/api/xr/session/start"));
        assert!(Pattern::new("/api/xr/*").matches("/api/xr"));
        assert!(!Pattern::new("/api/xr/*").matches("/api/xray"));
        assert!(Pattern::new("/docs*").matches("/docs/index.html"));
        assert!(Pattern::new("/health").matches("/health"));
        assert!(!Pattern::new("/health").matches("/healthz"));
        assert_eq!(window_text(3600), "1h");
        assert_eq!(window_text(60), "1m");
        assert_eq!(window_text(2), "2s");
    }
}
