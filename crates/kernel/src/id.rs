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
///
/// Request ids need to be unique, not secret, and one is made for every request: they come
/// from a per-thread generator seeded by the OS rather than from a system call each.
pub fn request_id() -> String {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(u64::from_le_bytes(random_bytes::<8>()));
    }
    // 32 of the 36 alphanumerics, so that each takes five bits of a word: 120 random bits.
    const DIGITS: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = *b"req_________________________";
    STATE.with(|state| {
        for half in out.get_mut(4..).unwrap_or_default().chunks_mut(12) {
            let mut word = splitmix64(state);
            for byte in half {
                *byte = DIGITS.get((word & 31) as usize).copied().unwrap_or(b'a');
                word >>= 5;
            }
        }
    });
    // Only ASCII was written; the fallback cannot happen.
    std::str::from_utf8(&out).map_or_else(|_| String::from("req_"), str::to_owned)
}

/// SplitMix64: a full-period 64-bit generator, ample for ids that only need to be distinct.
fn splitmix64(state: &std::cell::Cell<u64>) -> u64 {
    let s = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
    state.set(s);
    let mut z = s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_strings_have_the_asked_length_and_alphabet() {
        let s = super::random_alphanumeric(100);
        assert_eq!(s.len(), 100);
        assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        let id = super::request_id();
        assert!(id.starts_with("req_") && id.len() == 28, "{id}");
        assert!(id[4..].bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert_ne!(id, super::request_id());
    }
}
