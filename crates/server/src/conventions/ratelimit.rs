//! Rate limits per identity (user or API key), else per client IP, by route class, with the
//! seeds' headers on every limited response and their 429 body.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
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
    anonymous_only: bool,
    /// The constant headers of this class, rendered once.
    limit_header: HeaderValue,
    premium_limit_header: HeaderValue,
    window_header: HeaderValue,
}

impl Class {
    fn new(name: String, patterns: Vec<Pattern>, limit: u32, window: Duration, premium_multiplier: u32) -> Self {
        Self {
            limit_header: HeaderValue::from(limit),
            premium_limit_header: HeaderValue::from(limit.saturating_mul(premium_multiplier)),
            window_header: HeaderValue::from(window.as_secs().max(1)),
            name,
            patterns,
            limit,
            window,
            anonymous_only: false,
        }
    }
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
            .map(|c| {
                let limit = c.limit.unwrap_or(if c.name == "login" {
                    kernel.config.auth.login_attempts_per_minute
                } else {
                    cfg.limit
                });
                let patterns = c.paths.iter().map(|p| Pattern::new(p)).collect();
                let mut class = Class::new(
                    c.name.clone(),
                    patterns,
                    limit,
                    Duration::from_secs(c.window_secs),
                    cfg.premium_multiplier,
                );
                class.anonymous_only = c.anonymous_only;
                class
            })
            .collect();
        let default = Class::new(
            String::from("default"),
            Vec::new(),
            cfg.limit,
            Duration::from_secs(cfg.window_secs),
            cfg.premium_multiplier,
        );
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

    /// Whether requests to `path` are counted at all.
    pub fn applies_to(&self, path: &str) -> bool {
        self.enabled && !self.exempt.iter().any(|p| p.matches(path))
    }

    fn class_for(&self, path: &str) -> &Class {
        self.classes.iter().find(|c| c.patterns.iter().any(|p| p.matches(path))).unwrap_or(&self.default)
    }
}

// Made at compile time: `from_static` checks its text, which need not happen per request.
const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const X_RATELIMIT_RESET_AFTER: HeaderName = HeaderName::from_static("x-ratelimit-reset-after");
const X_RATELIMIT_WINDOW: HeaderName = HeaderName::from_static("x-ratelimit-window");
const X_RATELIMIT_TIER: HeaderName = HeaderName::from_static("x-ratelimit-tier");

/// What the `X-RateLimit-*` headers of an admitted request's answer say. Kept small (the
/// headers are rendered when applied): it travels with every counted request.
#[derive(Debug)]
pub struct Admitted {
    decision: Decision,
    limit: HeaderValue,
    window: HeaderValue,
    premium: bool,
}

impl Admitted {
    fn new(decision: Decision, class: &Class, premium: bool) -> Self {
        let limit = if premium { &class.premium_limit_header } else { &class.limit_header };
        Self { decision, limit: limit.clone(), window: class.window_header.clone(), premium }
    }

    pub fn apply(self, response: &mut Response) {
        let map: &mut HeaderMap = response.headers_mut();
        map.reserve(6);
        for (name, value) in self.headers() {
            map.insert(name, value);
        }
    }

    /// The `X-RateLimit-*` headers. The limit and the window are the ones the decision was
    /// made with, so the class's pre-rendered values are theirs.
    fn headers(self) -> [(HeaderName, HeaderValue); 6] {
        let d = self.decision;
        let tier = if self.premium { "premium" } else { "standard" };
        [
            (X_RATELIMIT_LIMIT, self.limit),
            (X_RATELIMIT_REMAINING, HeaderValue::from(d.remaining)),
            (X_RATELIMIT_RESET, HeaderValue::from(d.reset_at)),
            (X_RATELIMIT_RESET_AFTER, HeaderValue::from(d.reset_after)),
            (X_RATELIMIT_WINDOW, self.window),
            (X_RATELIMIT_TIER, HeaderValue::from_static(tier)),
        ]
    }
}

/// Before routing, for a request [`RateLimits::applies_to`]: counts it, and gives it back
/// with the headers for its answer, or answers 429. It authenticates the caller once and
/// leaves the [`Principal`](nexus_identity::Principal) in the request for the handler's
/// `Auth` extractor. An authenticated request to a class that counts anonymous callers only
/// passes uncounted, without headers.
pub async fn admit(rl: &RateLimits, req: Request) -> Result<(Request, Option<Admitted>), Response> {
    let path = req.uri().path();
    let class = rl.class_for(path);
    let (mut parts, body) = req.into_parts();
    // The counter's key, `<class>:<who>`, built in one allocation: this runs on every request.
    let mut key = String::with_capacity(class.name.len() + 48);
    key.push_str(&class.name);
    key.push(':');
    let mut premium = false;
    let principal = match principal::presented(&parts) {
        Some(presented) => rl.identity.authenticate(&presented).await.ok(),
        None => None,
    };
    match principal {
        Some(p) if class.anonymous_only => {
            parts.extensions.insert(p);
            return Ok((Request::from_parts(parts, body), None));
        }
        Some(p) => {
            match &p.credential {
                Credential::ApiKey { key_id, .. } => {
                    key.push_str("key:");
                    key.push_str(key_id);
                }
                Credential::Token { .. } => {
                    key.push_str("user:");
                    key.push_str(&p.user_id);
                }
            }
            // A premium key gets the premium tier unless it asks for the standard one; the
            // tier header of anyone else is ignored.
            if p.is_premium_key() {
                let tier = parts.headers.get("x-rate-limit-tier").and_then(|v| v.to_str().ok()).unwrap_or("premium");
                premium = !tier.trim().eq_ignore_ascii_case("standard");
            }
            parts.extensions.insert(p);
        }
        None => {
            key.push_str("ip:");
            if let Some(addr) = nexus_web::context::peer() {
                let _ = write!(key, "{}", addr.ip());
            }
        }
    }
    let limit = if premium { class.limit.saturating_mul(rl.premium_multiplier) } else { class.limit };
    let decision = rl.kernel.rate_limits.check(&key, limit, class.window).await;
    let admitted = Admitted::new(decision, class, premium);
    if !decision.allowed {
        let mut err = ApiError::new(
            ErrorCode::RateLimitExceeded,
            format!("Rate limit exceeded. Please retry after {} seconds.", decision.reset_after),
        )
        .with_extra("retry_after", decision.reset_after)
        .with_extra("limit", decision.limit)
        .with_extra("window", window_text(decision.window));
        err = err.with_header(axum::http::header::RETRY_AFTER, HeaderValue::from(decision.reset_after));
        for (name, value) in admitted.headers() {
            err = err.with_header(name, value);
        }
        return Err(err.into_response());
    }
    Ok((Request::from_parts(parts, body), Some(admitted)))
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
