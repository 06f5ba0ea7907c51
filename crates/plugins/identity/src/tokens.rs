//! Access tokens (JWT, HS256 only), refresh tokens and API keys (opaque, stored hashed).

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use nexus_kernel::clock::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const ISSUER: &str = "nexus";

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
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(..)")
    }
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> Self {
        // Only HS256 is accepted: a token naming `none` or any other algorithm is refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss"]);
        validation.leeway = 5;
        Self { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation }
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding).map_err(|e| e.to_string())
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map(|d| d.claims).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            }
        })
    }
}

/// Claims for a new token of `user` in session `sid`, valid for `ttl_secs`.
pub fn claims(user_id: &str, name: &str, roles: &[String], sid: &str, ttl_secs: u64) -> Claims {
    let now = Timestamp::now();
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

    #[test]
    fn tokens_round_trip_and_tampering_is_caught() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef");
        let token = keys.sign(&claims("u1", "alice", &["user".into()], "s1", 60)).unwrap_or_default();
        assert_eq!(keys.verify(&token).map(|c| c.sub), Ok("u1".to_string()));

        let other = JwtKeys::new(b"another key, another key, another");
        assert_eq!(other.verify(&token).map(|c| c.sub), Err(TokenError::Invalid));

        let expired = keys.sign(&Claims { exp: 1, ..claims("u1", "alice", &[], "s1", 60) }).unwrap_or_default();
        assert_eq!(keys.verify(&expired).map(|c| c.sub), Err(TokenError::Expired));

        // `alg: none` with the same claims is refused.
        let mut parts = token.split('.');
        let _header = parts.next();
        let payload = parts.next().unwrap_or_default();
        let none = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(keys.verify(&format!("{none}.{payload}.")).map(|c| c.sub), Err(TokenError::Invalid));
    }
}
