//! Access tokens (JWT, HS256 only), refresh tokens and API keys (opaque, stored hashed).

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use nexus_kernel::clock::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const ISSUER: &str = "nexus";

/// Seconds an access token is still accepted after its `exp` (clock skew between instances).
const LEEWAY_SECS: i64 = 5;

/// Verified tokens remembered at most (a few hundred bytes each).
const VERIFIED_CAPACITY: u64 = 10_000;

/// How long a verified token is remembered before it is verified in full again.
const VERIFIED_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user's id.
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    /// The session (refresh-token family) this token belongs to; logout revokes it.
    pub sid: String,
    pub roles: Vec<String>,
    pub name: String,
    /// Issue time in microseconds, so revocations are exact within a second.
    pub iat_us: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token")]
    Invalid,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    verified: VerifiedTokens,
}

/// Access tokens whose signature and fixed claims have been checked, so that a token presented
/// again (every request of a session) costs a lookup instead of an HMAC, three base64 decodes
/// and two JSON parses. Only the time-dependent check, expiry, is made again on each use;
/// revocation is checked by the caller on every use either way.
///
/// Entries are found by the token's signature (an HMAC under the signing key: a client that
/// does not hold a token cannot name its entry) and the whole token is then compared in
/// constant time, so nothing about a remembered token leaks through the lookup's timing. Only
/// tokens that verified are remembered, so clients cannot fill the cache with tokens of their
/// own making.
struct VerifiedTokens {
    /// The kernel cache `token` when the service runs (keys are token signatures).
    entries: nexus_kernel::cache::L1<Arc<Verified>>,
}

struct Verified {
    token: Box<str>,
    claims: Arc<Claims>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(..)")
    }
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> Self {
        Self::build(secret, nexus_kernel::cache::L1::standalone("token", verified_builder(), "entries"))
    }

    /// [`new`](Self::new), its verified-token cache registered with the kernel cache as `token`.
    pub fn new_cached(secret: &[u8], cache: &nexus_kernel::cache::Cache) -> Self {
        Self::build(secret, cache.l1("token", verified_builder(), "entries"))
    }

    fn build(secret: &[u8], verified: nexus_kernel::cache::L1<Arc<Verified>>) -> Self {
        // Only HS256 is accepted: a token naming `none` or any other algorithm is refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss"]);
        validation.leeway = LEEWAY_SECS.unsigned_abs();
        // Expiry is judged against the kernel's clock ([`is_expired`]), not the library's.
        validation.validate_exp = false;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            verified: VerifiedTokens { entries: verified },
        }
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding).map_err(|e| e.to_string())
    }

    /// [`verify`](Self::verify), remembering the tokens that pass (see [`VerifiedTokens`]).
    pub fn verify_cached(&self, token: &str, now_secs: i64) -> Result<Arc<Claims>, TokenError> {
        let signature = token.rsplit('.').next().unwrap_or(token);
        if let Some(known) = self.verified.entries.get(signature)
            && same_bytes(known.token.as_bytes(), token.as_bytes())
        {
            if is_expired(known.claims.exp, now_secs) {
                return Err(TokenError::Expired);
            }
            return Ok(known.claims.clone());
        }
        let claims = Arc::new(self.verify(token, now_secs)?);
        let entry = Arc::new(Verified { token: token.into(), claims: claims.clone() });
        self.verified.entries.insert(signature.to_string(), entry);
        Ok(claims)
    }

    /// Checks the signature, issuer and required claims, then the expiry at `now_secs`.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Claims, TokenError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        if is_expired(claims.exp, now_secs) { Err(TokenError::Expired) } else { Ok(claims) }
    }
}

fn verified_builder() -> moka::sync::CacheBuilder<String, Arc<Verified>, moka::sync::Cache<String, Arc<Verified>>> {
    moka::sync::Cache::builder().max_capacity(VERIFIED_CAPACITY).time_to_live(VERIFIED_TTL)
}

/// Whether `a` and `b` are equal, in a time that depends on their lengths only.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The full validation's rule: a token is expired once its `exp` is more than the leeway in
/// the past.
fn is_expired(exp: i64, now_secs: i64) -> bool {
    exp < now_secs.saturating_sub(LEEWAY_SECS)
}

/// Claims for a new token of `user` in session `sid`, issued at `now` and valid for `ttl_secs`.
pub fn claims(user_id: &str, name: &str, roles: &[String], sid: &str, ttl_secs: u64, now: Timestamp) -> Claims {
    let ttl = i64::try_from(ttl_secs).unwrap_or(i64::MAX);
    Claims {
        iss: ISSUER.to_string(),
        sub: user_id.to_string(),
        iat: now.as_unix_seconds(),
        exp: now.add_seconds(ttl).as_unix_seconds(),
        jti: nexus_kernel::id::uuid(),
        sid: sid.to_string(),
        roles: roles.to_vec(),
        name: name.to_string(),
        iat_us: now.as_micros(),
    }
}

/// A fresh opaque token: 256 random bits, hex.
pub fn opaque_token() -> String {
    nexus_kernel::id::hex(&nexus_kernel::id::random_bytes::<32>())
}

/// The stored form of an opaque token or API key. Tokens carry 256 bits of entropy, so a
/// fast hash is enough: nothing can be guessed from it.
pub fn digest(token: &str) -> String {
    nexus_kernel::id::hex(&Sha256::digest(token.as_bytes()))
}

/// The prefixes API keys carry, one per surface that issues them.
pub const API_KEY_PREFIXES: &[&str] = &["sk_live_", "nx_", "nexus_key_", "nexus_premium_key_"];

pub fn looks_like_api_key(token: &str) -> bool {
    API_KEY_PREFIXES.iter().any(|p| token.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn now() -> i64 {
        Timestamp::now().as_unix_seconds()
    }

    #[test]
    fn tokens_round_trip_and_tampering_is_caught() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef");
        let token = keys.sign(&claims("u1", "alice", &["user".into()], "s1", 60, Timestamp::now())).unwrap_or_default();
        assert_eq!(keys.verify(&token, now()).map(|c| c.sub), Ok("u1".to_string()));

        let other = JwtKeys::new(b"another key, another key, another");
        assert_eq!(other.verify(&token, now()).map(|c| c.sub), Err(TokenError::Invalid));

        let expired =
            keys.sign(&Claims { exp: 1, ..claims("u1", "alice", &[], "s1", 60, Timestamp::now()) }).unwrap_or_default();
        assert_eq!(keys.verify(&expired, now()).map(|c| c.sub), Err(TokenError::Expired));

        // `alg: none` with the same claims is refused.
        let mut parts = token.split('.');
        let _header = parts.next();
        let payload = parts.next().unwrap_or_default();
        let none = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(keys.verify(&format!("{none}.{payload}."), now()).map(|c| c.sub), Err(TokenError::Invalid));
    }

    #[test]
    fn remembered_tokens_are_checked_like_fresh_ones() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef");
        let token = keys.sign(&claims("u1", "alice", &["user".into()], "s1", 60, Timestamp::now())).unwrap_or_default();
        for _ in 0..2 {
            assert_eq!(keys.verify_cached(&token, now()).map(|c| c.sub.clone()), Ok("u1".to_string()));
        }
        // Once the genuine token is remembered, neither a changed signature nor `alg: none`
        // over the same claims gets through.
        let mut tampered = token.clone();
        let last = if tampered.ends_with('A') { 'B' } else { 'A' };
        tampered.pop();
        tampered.push(last);
        assert_eq!(keys.verify_cached(&tampered, now()).map(|c| c.sub.clone()), Err(TokenError::Invalid));
        let payload = token.split('.').nth(1).unwrap_or_default();
        let none = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(
            keys.verify_cached(&format!("{none}.{payload}."), now()).map(|c| c.sub.clone()),
            Err(TokenError::Invalid)
        );
        let other = JwtKeys::new(b"another key, another key, another");
        assert_eq!(other.verify_cached(&token, now()).map(|c| c.sub.clone()), Err(TokenError::Invalid));
    }

    #[test]
    fn byte_comparison() {
        let long = b"a token that is longer than a few words, with a tail";
        assert!(same_bytes(long, long) && same_bytes(b"", b"") && same_bytes(b"abc", b"abc"));
        for i in 0..long.len() {
            let mut other = *long;
            if let Some(b) = other.get_mut(i) {
                *b ^= 1;
            }
            assert!(!same_bytes(long, &other), "difference at {i}");
        }
        assert!(!same_bytes(b"abc", b"abcd") && !same_bytes(b"abcdefghi", b"abcdefghj"));
    }

    #[test]
    fn remembered_expiry_follows_the_full_validation() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef");
        let now = Timestamp::now().as_unix_seconds();
        for exp in [now - 7, now - 4, now + 60] {
            let token = keys
                .sign(&Claims { exp, ..claims("u1", "alice", &[], "s1", 60, Timestamp::now()) })
                .unwrap_or_default();
            let full = keys.verify(&token, now).map(|_| ());
            assert_eq!(full == Err(TokenError::Expired), is_expired(exp, now), "exp = now{:+}", exp - now);
        }
    }
}
