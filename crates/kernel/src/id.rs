//! Identifiers and random tokens.

use std::fmt::Write as _;

/// A new random UUID (v4) as text, the form ids take in the database and on the wire.
pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `n` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The OS generator failing means the machine cannot do cryptography at all; no request
    // can be served safely, so this is the one place a panic is the right answer.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut buf).expect("operating system random number generator unavailable");
    buf
}

const ALPHANUMERIC: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A random lower-case alphanumeric string of `len` characters (unbiased).
pub fn random_alphanumeric(len: usize) -> String {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for byte in random_bytes::<32>() {
            // 252 is the largest multiple of 36 below 256: rejecting above it keeps the
            // distribution uniform.
            if byte < 252 && out.len() < len {
                let idx = usize::from(byte) % ALPHANUMERIC.len();
                if let Some(&c) = ALPHANUMERIC.get(idx) {
                    out.push(char::from(c));
                }
            }
        }
    }
    out
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A fresh request id: `req_` and 24 random alphanumerics.
pub fn request_id() -> String {
    format!("req_{}", random_alphanumeric(24))
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_strings_have_the_asked_length_and_alphabet() {
        let s = super::random_alphanumeric(100);
        assert_eq!(s.len(), 100);
        assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert!(super::request_id().starts_with("req_"));
    }
}
