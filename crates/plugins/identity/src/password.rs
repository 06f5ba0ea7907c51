//! Password hashing (argon2id with OWASP's parameters) and the password policy.

use std::sync::LazyLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

/// OWASP's first recommended argon2id setting: 19 MiB, 2 iterations, 1 lane.
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Verified against when a login names no user, so that an unknown user costs the same
/// argon2 work as a wrong password. Well-formed, with the production parameters; its salt and
/// digest belong to no password, and the outcome is discarded anyway.
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$bmV4dXNEdW1teVNhbHRGb3I$N0tTaGVIYXNoT2ZBbnlQYXNzd29yZEtub3duVG9Bbnk";

/// Hashes in progress at once. Each holds 19 MiB and a core for tens of milliseconds; beyond
/// one per core more in parallel only adds memory (a burst of logins would otherwise allocate
/// gigabytes), so the rest wait their turn.
static HASHING: LazyLock<tokio::sync::Semaphore> = LazyLock::new(|| {
    tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, std::num::NonZero::get))
});

/// The PHC string of `password`. Runs on a blocking thread: a hash takes tens of milliseconds.
pub async fn hash(password: String) -> Result<String, String> {
    let _permit = HASHING.acquire().await.map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || {
        hasher().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Whether `password` matches `phc`. A malformed stored hash never matches.
pub async fn verify(password: String, phc: String) -> bool {
    let Ok(_permit) = HASHING.acquire().await else { return false };
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc).is_ok_and(|parsed| hasher().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .unwrap_or(false)
}

/// Why `password` is refused, if it is.
pub fn policy_violation(password: &str) -> Option<&'static str> {
    let chars = password.chars().count();
    if chars < 8 {
        Some("Password must be at least 8 characters")
    } else if chars > 256 {
        Some("Password must be at most 256 characters")
    } else if !password.chars().any(char::is_alphabetic) || !password.chars().any(|c| c.is_ascii_digit()) {
        Some("Password must contain a letter and a digit")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn hashes_verify_and_reject() {
        let h = super::hash("Secret123!".into()).await.unwrap_or_default();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(super::verify("Secret123!".into(), h.clone()).await);
        assert!(!super::verify("secret123!".into(), h).await);
        assert!(!super::verify("x".into(), "not a hash".into()).await);
    }

    #[tokio::test]
    async fn the_dummy_hash_costs_a_full_verification_and_matches_nothing() {
        // A malformed PHC string would be refused without any hashing: time it alone.
        assert!(argon2::password_hash::phc::PasswordHash::new(super::DUMMY_HASH).is_ok());
        let started = std::time::Instant::now();
        assert!(!super::verify("anything".into(), super::DUMMY_HASH.into()).await);
        let dummy_time = started.elapsed();
        let real = super::hash("Secret123!".into()).await.unwrap_or_default();
        let started = std::time::Instant::now();
        assert!(!super::verify("anything".into(), real).await);
        let real_time = started.elapsed();
        // Same parameters, same work (within generous noise).
        assert!(dummy_time.as_secs_f64() > real_time.as_secs_f64() / 3.0, "{dummy_time:?} vs {real_time:?}");
    }

    #[test]
    fn policy() {
        assert!(super::policy_violation("short1").is_some());
        assert!(super::policy_violation("onlyletters").is_some());
        assert!(super::policy_violation("Pass123!").is_none());
    }
}
