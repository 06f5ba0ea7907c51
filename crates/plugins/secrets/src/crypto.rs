//! Envelope encryption with AES-256-GCM.
//!
//! Every secret has its own random 256-bit data key. Values are encrypted under the data key
//! with the secret's id and version as associated data; the data key is stored wrapped
//! (encrypted) under the master key with the secret's id and the master key's id as associated
//! data. A ciphertext copied to another row, another version or another secret fails to decrypt.
//!
//! Stored form of every ciphertext: `nonce (12 bytes) || ciphertext || tag (16 bytes)`, with a
//! fresh random nonce for every encryption. Keys and plaintexts live in [`Zeroizing`] buffers.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use zeroize::Zeroizing;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// What a key check value encrypts.
const CHECK_PLAINTEXT: &[u8] = b"nexus master key check v1";

/// Decryption failed: wrong key, or the stored bytes were modified or moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authenticated decryption failed")]
pub struct IntegrityError;

/// A 256-bit AES key, zeroized on drop. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct Key(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(***)")
    }
}

impl Key {
    /// A fresh random key.
    pub fn generate() -> Self {
        Self(Zeroizing::new(nexus_kernel::id::random_bytes::<32>()))
    }

    /// A key from exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(arr)))
    }

    /// Parses base64 (standard, padded or not) of 32 bytes.
    pub fn from_base64(text: &str) -> Option<Self> {
        use base64::Engine;
        let text = text.trim();
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
                .ok()?,
        );
        Self::from_slice(&decoded)
    }

    /// A key for `purpose` derived from this one (HMAC-SHA256 of the purpose under this key),
    /// for data other than secrets that is encrypted under the master key (backups): the
    /// master key itself never leaves this crate.
    pub fn derive(&self, purpose: &str) -> Key {
        use hmac::{KeyInit, Mac};
        let mut bytes = [0u8; 32];
        if let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.0.as_ref()) {
            mac.update(b"nexus:derive:");
            mac.update(purpose.as_bytes());
            bytes.copy_from_slice(&mac.finalize().into_bytes());
        }
        Key(Zeroizing::new(bytes))
    }

    /// Base64 of the key, for writing a key file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        use base64::Engine;
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.0.as_ref()))
    }

    fn cipher(&self) -> Aes256Gcm {
        let key: &[u8; 32] = &self.0;
        Aes256Gcm::new(&(*key).into())
    }

    /// Encrypts `plaintext` bound to `aad` under a fresh nonce.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let nonce = nexus_kernel::id::random_bytes::<NONCE_LEN>();
        // Encryption fails only for inputs beyond 64 GiB, which the body limit rules out;
        // an empty result would then fail to decrypt rather than leak anything.
        let sealed = self.cipher().encrypt(&nonce.into(), Payload { msg: plaintext, aad }).unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts what [`seal`](Self::seal) produced with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(IntegrityError);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| IntegrityError)?;
        self.cipher().decrypt(&nonce.into(), Payload { msg: body, aad }).map(Zeroizing::new).map_err(|_| IntegrityError)
    }

    /// A check value: proves later that a presented key is this one, without storing it.
    pub fn check_value(&self, key_id: &str) -> Vec<u8> {
        self.seal(CHECK_PLAINTEXT, check_aad(key_id).as_bytes())
    }

    /// Whether `check` was made by [`check_value`](Self::check_value) with this key.
    pub fn verifies(&self, key_id: &str, check: &[u8]) -> bool {
        self.open(check, check_aad(key_id).as_bytes()).is_ok_and(|p| p.as_slice() == CHECK_PLAINTEXT)
    }

    /// Wraps `data_key` for secret `secret_id` under this master key `key_id`.
    pub fn wrap(&self, key_id: &str, secret_id: &str, data_key: &Key) -> Vec<u8> {
        self.seal(data_key.0.as_ref(), wrap_aad(key_id, secret_id).as_bytes())
    }

    /// Unwraps what [`wrap`](Self::wrap) produced.
    pub fn unwrap_key(&self, key_id: &str, secret_id: &str, wrapped: &[u8]) -> Result<Key, IntegrityError> {
        let raw = self.open(wrapped, wrap_aad(key_id, secret_id).as_bytes())?;
        Key::from_slice(&raw).ok_or(IntegrityError)
    }

    /// Encrypts a secret's value for `version`.
    pub fn encrypt_value(&self, secret_id: &str, version: i64, value: &[u8]) -> Vec<u8> {
        self.seal(value, value_aad(secret_id, version).as_bytes())
    }

    /// Decrypts a secret's value of `version`.
    pub fn decrypt_value(
        &self,
        secret_id: &str,
        version: i64,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
        self.open(sealed, value_aad(secret_id, version).as_bytes())
    }
}

impl nexus_kernel::seal::SealingKey for Key {
    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        Key::seal(self, plaintext, aad)
    }

    fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        Key::open(self, sealed, aad).ok().map(|plain| plain.to_vec())
    }
}

fn check_aad(key_id: &str) -> String {
    format!("nexus:kcv:{key_id}")
}

fn wrap_aad(key_id: &str, secret_id: &str) -> String {
    format!("nexus:dek:{key_id}:{secret_id}")
}

fn value_aad(secret_id: &str, version: i64) -> String {
    format!("nexus:value:{secret_id}:{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bound_to_their_secret_and_version() {
        let dk = Key::generate();
        let sealed = dk.encrypt_value("s1", 1, b"hunter2");
        assert_eq!(dk.decrypt_value("s1", 1, &sealed).map(|p| p.to_vec()), Ok(b"hunter2".to_vec()));
        assert_eq!(dk.decrypt_value("s1", 2, &sealed).err(), Some(IntegrityError));
        assert_eq!(dk.decrypt_value("s2", 1, &sealed).err(), Some(IntegrityError));
        let mut tampered = sealed.clone();
        if let Some(b) = tampered.last_mut() {
            *b ^= 1;
        }
        assert_eq!(dk.decrypt_value("s1", 1, &tampered).err(), Some(IntegrityError));
        assert_ne!(dk.encrypt_value("s1", 1, b"hunter2"), sealed, "a fresh nonce each time");
    }

    #[test]
    fn wrapping_and_check_values() {
        let mk = Key::generate();
        let other = Key::generate();
        let dk = Key::generate();
        let wrapped = mk.wrap("k1", "s1", &dk);
        assert!(mk.unwrap_key("k1", "s1", &wrapped).is_ok());
        assert!(mk.unwrap_key("k1", "s2", &wrapped).is_err());
        assert!(other.unwrap_key("k1", "s1", &wrapped).is_err());
        let check = mk.check_value("k1");
        assert!(mk.verifies("k1", &check));
        assert!(!other.verifies("k1", &check));
        assert!(Key::from_base64(&mk.to_base64()).is_some_and(|k| k.verifies("k1", &check)));
        assert!(Key::from_base64("c2hvcnQ=").is_none());
        assert_eq!(format!("{mk:?}"), "Key(***)");
    }
}
