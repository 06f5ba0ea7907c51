//! The authenticated caller, and the extractor every protected handler takes.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use nexus_web::ApiError;

use crate::error::IdentityError;
use crate::service::Identity;

pub use nexus_kernel::principal::{Credential, Principal};

/// The credential a request carries, unverified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    Bearer(String),
    ApiKey(String),
}

/// Reads the credential from `Authorization: Bearer …`, `Authorization: MediaBrowser Token="…"`,
/// `X-API-Key`, `X-Nexus-API-Key` or `X-Emby-Token`.
pub fn presented(parts: &Parts) -> Option<Presented> {
    // One pass over the headers instead of a lookup per candidate name (this runs on every
    // request); the first value of each name counts, as `HeaderMap::get` would have it.
    let mut found: [Option<Option<&str>>; 5] = [None; 5];
    for (name, value) in &parts.headers {
        let slot = match name.as_str() {
            "x-api-key" => 0,
            "x-nexus-api-key" => 1,
            "x-emby-token" => 2,
            "x-mediabrowser-token" => 3,
            "authorization" => 4,
            _ => continue,
        };
        if let Some(entry) = found.get_mut(slot)
            && entry.is_none()
        {
            *entry = Some(value.to_str().ok().map(str::trim));
        }
    }
    // A value that is not visible ASCII counts as absent.
    let [api_key, nexus_key, emby, media_browser, authorization] = found.map(Option::flatten);
    for key in [api_key, nexus_key].into_iter().flatten() {
        if !key.is_empty() {
            return Some(Presented::ApiKey(key.to_string()));
        }
    }
    // Jellyfin and Emby clients send their token in a header of their own.
    if let Some(token) = emby.or(media_browser).filter(|t| !t.is_empty()) {
        return Some(classify(token.to_string()));
    }
    let Some(auth) = authorization else { return media_query_key(parts) };
    let token = if let Some(rest) = strip_prefix_ci(auth, "bearer ") {
        rest.trim().to_string()
    } else if let Some(rest) = strip_prefix_ci(auth, "mediabrowser ").or_else(|| strip_prefix_ci(auth, "emby ")) {
        media_browser_token(rest)?
    } else {
        return None;
    };
    if token.is_empty() {
        return None;
    }
    Some(classify(token))
}

/// Jellyfin's `ApiKey` (and deprecated `api_key`) query parameter, read on `/api/media/…`
/// only: media players put the token in stream and socket URLs, which cannot carry headers.
fn media_query_key(parts: &Parts) -> Option<Presented> {
    let path = parts.uri.path();
    if !path.get(..11).is_some_and(|p| p.eq_ignore_ascii_case("/api/media/")) {
        return None;
    }
    parts.uri.query()?.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        let named = name.eq_ignore_ascii_case("apikey") || name.eq_ignore_ascii_case("api_key");
        // Tokens and keys are URL-safe; an encoded one is not ours.
        (named && !value.is_empty() && !value.contains('%')).then(|| classify(value.to_string()))
    })
}

fn classify(token: String) -> Presented {
    if crate::tokens::looks_like_api_key(&token) { Presented::ApiKey(token) } else { Presented::Bearer(token) }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| s.get(prefix.len()..)).flatten()
}

/// The `Token="…"` parameter of a MediaBrowser authorization header.
fn media_browser_token(params: &str) -> Option<String> {
    params.split(',').find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim().eq_ignore_ascii_case("token").then(|| value.trim().trim_matches('"').to_string())
    })
}

/// What verifies the callers of a router's routes: the identity service, handed to the router
/// when the application is built (the server puts it in every request to a plugin's routes,
/// as an extension) rather than looked up per request. A plugin's handlers need nothing more
/// than the extractor; a router served outside the server's plugin list needs
/// `.route_layer(axum::Extension(Authenticator::new(identity)))`.
#[derive(Debug, Clone)]
pub struct Authenticator(Arc<Identity>);

impl Authenticator {
    pub fn new(identity: Arc<Identity>) -> Self {
        Self(identity)
    }

    pub fn identity(&self) -> &Arc<Identity> {
        &self.0
    }
}

/// Extracts the authenticated caller; 401 in the path's dialect when there is none.
///
/// A [`Principal`] that a middleware already authenticated (the rate limiter does) is taken
/// out of the request rather than copied, and one authenticated here is not put back: a
/// handler takes its caller once, and a second extractor would simply authenticate again.
/// Otherwise the caller is verified by the [`Authenticator`] that the request carries; a
/// route without it answers 500, a wiring error a test finds at once.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(principal) = parts.extensions.remove::<Principal>() {
            return Ok(Auth(principal));
        }
        let presented = presented(parts).ok_or(IdentityError::Unauthenticated)?;
        let authenticator = parts
            .extensions
            .get::<Authenticator>()
            .ok_or_else(|| ApiError::internal("this route is not behind the identity layer"))?;
        Ok(Auth(authenticator.0.authenticate(&presented).await?))
    }
}

/// The caller if they authenticated, `None` if they sent no credential; a credential that
/// does not verify is still a 401.
#[derive(Debug, Clone)]
pub struct MaybeAuth(pub Option<Principal>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if presented(parts).is_none() && parts.extensions.get::<Principal>().is_none() {
            return Ok(MaybeAuth(None));
        }
        Auth::from_request_parts(parts, state).await.map(|Auth(p)| MaybeAuth(Some(p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut req = axum::http::Request::builder();
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(()).map(|r| r.into_parts().0).unwrap_or_else(|_| axum::http::Request::new(()).into_parts().0)
    }

    #[test]
    fn every_documented_header_is_read() {
        assert_eq!(presented(&parts(&[("Authorization", "Bearer abc")])), Some(Presented::Bearer("abc".into())));
        assert_eq!(
            presented(&parts(&[("Authorization", "bearer sk_live_x")])),
            Some(Presented::ApiKey("sk_live_x".into()))
        );
        assert_eq!(presented(&parts(&[("X-API-Key", "nexus_key_1")])), Some(Presented::ApiKey("nexus_key_1".into())));
        assert_eq!(presented(&parts(&[("X-Nexus-API-Key", "nx_1")])), Some(Presented::ApiKey("nx_1".into())));
        assert_eq!(
            presented(&parts(&[("Authorization", r#"MediaBrowser Client="web", Token="jwt.here""#)])),
            Some(Presented::Bearer("jwt.here".into()))
        );
        assert_eq!(presented(&parts(&[("Authorization", "Basic abc")])), None);
        // Precedence: API-key headers, then the media clients' own, then Authorization.
        assert_eq!(
            presented(&parts(&[("Authorization", "Bearer jwt"), ("X-Nexus-API-Key", "nx_2"), ("X-API-Key", "nx_1")])),
            Some(Presented::ApiKey("nx_1".into()))
        );
        assert_eq!(
            presented(&parts(&[("Authorization", "Bearer jwt"), ("X-API-Key", " "), ("X-Emby-Token", "t1")])),
            Some(Presented::Bearer("t1".into()))
        );
        assert_eq!(
            presented(&parts(&[("X-MediaBrowser-Token", "t2"), ("Authorization", "Bearer jwt")])),
            Some(Presented::Bearer("t2".into()))
        );
        assert_eq!(
            presented(&parts(&[("X-Emby-Token", ""), ("Authorization", "Bearer jwt")])),
            Some(Presented::Bearer("jwt".into()))
        );
        assert_eq!(presented(&parts(&[])), None);
    }

    mod properties {
        use proptest::prelude::*;

        use super::{parts, presented};
        use crate::tokens::{JwtKeys, claims};

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

            /// Whatever the credential headers hold: no panic, and what is found is non-empty.
            #[test]
            fn credential_headers_never_panic(
                value in "[ -~]{0,80}",
                scheme in prop::sample::select(vec!["Bearer ", "bearer ", "MediaBrowser ", "Emby ", "Basic ", ""]),
                header in prop::sample::select(vec!["Authorization", "X-API-Key", "X-Nexus-API-Key", "X-Emby-Token"]),
            ) {
                let found = presented(&parts(&[(header, &format!("{scheme}{value}"))]));
                if let Some(super::Presented::Bearer(t) | super::Presented::ApiKey(t)) = found {
                    prop_assert!(!t.is_empty());
                }
            }

            /// Any string presented as a JWT is refused, without a panic; a signed token with one
            /// byte changed is refused too.
            #[test]
            fn arbitrary_and_altered_tokens_are_refused(garbage in any::<String>(), at in any::<prop::sample::Index>(), byte in 0x21u8..0x7f) {
                let keys = JwtKeys::new(&[7u8; 32]);
                prop_assert!(keys.verify(&garbage, 1_000).is_err());
                let now = nexus_kernel::clock::Timestamp::from_micros(1_000_000_000);
                let token = keys.sign(&claims("u1", "alice", &["user".to_string()], "s1", 3600, now));
                let token = token.map_err(TestCaseError::fail)?;
                let mut altered = token.clone().into_bytes();
                let i = at.index(altered.len());
                prop_assume!(altered.get(i) != Some(&byte));
                if let Some(b) = altered.get_mut(i) {
                    *b = byte;
                }
                let altered = String::from_utf8_lossy(&altered).into_owned();
                prop_assert!(keys.verify(&altered, 1_001).is_err(), "{} accepted", altered);
                prop_assert!(keys.verify(&token, 1_001).is_ok());
            }
        }
    }
}
