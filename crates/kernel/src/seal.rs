//! Credentials in stored configuration, sealed at rest.
//!
//! Configuration changed through the API is stored as JSON (`nexus_plugin_state.config`).
//! Every string under a credential's key ([`crate::config::is_credential_key`]: the keys that
//! are masked when shown) is stored sealed, `sealed:v1:<base64>`, bound to its owner and its
//! place, so a sealed value copied to another key or row does not open.
//!
//! The kernel holds no key of its own: the key is derived from the master key, which the
//! secrets plugin owns (`NEXUS_MASTER_KEY` or its key file). The server hands the kernel a
//! [`KeySource`] at start; the source is asked again until it has a key, because on a fresh
//! data directory the key file appears only when the secrets plugin first starts.

use std::sync::{Arc, OnceLock};

use serde_json::Value;

/// What a sealed value starts with.
pub const SEALED_PREFIX: &str = "sealed:v1:";

/// A key that seals and opens values (AES-256-GCM, in the plugin that owns the master key).
pub trait SealingKey: Send + Sync {
    /// `plaintext` encrypted and bound to `aad`.
    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8>;
    /// What [`seal`](Self::seal) encrypted with the same `aad`; `None` for a wrong key or
    /// modified or moved bytes.
    fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>>;
}

/// Finds the sealing key: `Ok(None)` while there is no master key yet.
pub type KeySource = Arc<dyn Fn() -> Result<Option<Arc<dyn SealingKey>>, String> + Send + Sync>;

/// Why a credential could not be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(
        "`{0}` is a credential and is stored only encrypted, but there is no master key to encrypt it \
         (set NEXUS_MASTER_KEY, or enable the secrets plugin, which creates one)"
    )]
    NoKey(String),
    #[error("the master key cannot be read: {0}")]
    Source(String),
}

/// Seals and opens the credentials of stored configuration.
#[derive(Default)]
pub struct Sealer {
    source: Option<KeySource>,
    key: OnceLock<Arc<dyn SealingKey>>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("has_source", &self.source.is_some()).finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer whose key comes from `source`.
    pub fn new(source: KeySource) -> Self {
        Self { source: Some(source), key: OnceLock::new() }
    }

    /// A sealer without a key: credentials are refused rather than stored readable.
    pub fn without_key() -> Self {
        Self::default()
    }

    fn key(&self) -> Result<Option<Arc<dyn SealingKey>>, SealError> {
        if let Some(key) = self.key.get() {
            return Ok(Some(key.clone()));
        }
        let Some(source) = &self.source else { return Ok(None) };
        match source().map_err(SealError::Source)? {
            Some(key) => Ok(Some(self.key.get_or_init(|| key).clone())),
            None => Ok(None),
        }
    }

    /// Whether `config` can be stored: it holds no credential, or there is a key to seal
    /// them. Checked before a change is applied, so that a change is not applied and then
    /// refused.
    pub fn check(&self, config: &Value) -> Result<(), SealError> {
        match first_credential(&mut config.clone()) {
            Some(path) if self.key()?.is_none() => Err(SealError::NoKey(path)),
            _ => Ok(()),
        }
    }

    /// `config` (JSON text) of `owner` with every credential sealed. Text that is not JSON
    /// holds no keys and is kept as it is.
    pub fn seal_text(&self, owner: &str, config: &str) -> Result<String, SealError> {
        let Ok(mut value) = serde_json::from_str::<Value>(config) else { return Ok(config.to_string()) };
        // The key is asked for only when there is a credential to seal.
        let Some(first) = first_credential(&mut value) else { return Ok(value.to_string()) };
        let key = self.key()?.ok_or(SealError::NoKey(first))?;
        visit(&mut value, "", &mut |path, leaf| *leaf = seal_with(key.as_ref(), owner, path, leaf));
        Ok(value.to_string())
    }

    /// `config` (JSON text) of `owner` with its sealed credentials opened. A credential that
    /// does not open (another master key, modified bytes) becomes `null`, which unsets it,
    /// and is reported by its key, never its value.
    pub fn open_text(&self, owner: &str, config: &str) -> String {
        let Ok(mut value) = serde_json::from_str::<Value>(config) else { return config.to_string() };
        let mut unopened = Vec::new();
        // Asked for only when something is sealed: most stored rows hold no credential.
        let mut key = None;
        visit_sealed(&mut value, "", &mut |path, leaf| {
            let key = key.get_or_insert_with(|| self.key());
            let opened = leaf
                .as_str()
                .zip(key.as_ref().ok().and_then(Option::as_ref))
                .and_then(|(stored, k)| open_with(k.as_ref(), owner, path, stored));
            match opened {
                Some(plain) => *leaf = Value::String(plain),
                None => {
                    unopened.push(path.to_string());
                    *leaf = Value::Null;
                }
            }
        });
        if let (false, Some(key)) = (unopened.is_empty(), &key) {
            let reason = match key {
                Ok(Some(_)) => String::from("the master key does not open them (another key, or modified)"),
                Ok(None) => String::from("there is no master key"),
                Err(e) => e.to_string(),
            };
            tracing::warn!(owner, keys = ?unopened, %reason, "stored credentials cannot be opened and are ignored");
        }
        value.to_string()
    }
}

impl Sealer {
    /// `value`, the credential of `owner` at `place` (a webhook's signing secret, say), sealed
    /// for storing: `sealed:v1:<base64>`, bound to `owner` and `place`.
    pub fn seal_value(&self, owner: &str, place: &str, value: &str) -> Result<String, SealError> {
        let key = self.key()?.ok_or_else(|| SealError::NoKey(place.to_string()))?;
        Ok(seal_with(key.as_ref(), owner, place, value))
    }

    /// What [`seal_value`](Self::seal_value) sealed for the same `owner` and `place`. A value
    /// stored before it was sealed is returned as it is; one that does not open (another
    /// master key, modified or moved bytes) is `None`, logged by its place, never its value.
    pub fn open_value(&self, owner: &str, place: &str, stored: &str) -> Option<String> {
        if !stored.starts_with(SEALED_PREFIX) {
            return Some(stored.to_string());
        }
        let opened = self.key().ok().flatten().and_then(|key| open_with(key.as_ref(), owner, place, stored));
        if opened.is_none() {
            tracing::warn!(owner, place, "a stored credential cannot be opened (another master key, or modified)");
        }
        opened
    }
}

/// `value` sealed under `key` for `owner` at `place`: `sealed:v1:<base64>`.
fn seal_with(key: &dyn SealingKey, owner: &str, place: &str, value: &str) -> String {
    use base64::Engine;
    let sealed = key.seal(value.as_bytes(), aad(owner, place).as_bytes());
    format!("{SEALED_PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(sealed))
}

/// What [`seal_with`] sealed as `stored`, if it opens under `key` for `owner` at `place`.
fn open_with(key: &dyn SealingKey, owner: &str, place: &str, stored: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(stored.strip_prefix(SEALED_PREFIX)?).ok()?;
    String::from_utf8(key.open(&bytes, aad(owner, place).as_bytes())?).ok()
}

/// The dotted path of the first credential in `value`, if it holds one.
fn first_credential(value: &mut Value) -> Option<String> {
    let mut first = None;
    visit(value, "", &mut |path, _| {
        first.get_or_insert_with(|| path.to_string());
    });
    first
}

fn aad(owner: &str, path: &str) -> String {
    format!("nexus:config:{owner}:{path}")
}

/// Calls `f` on every string under a credential's key, with its dotted path.
fn visit(value: &mut Value, path: &str, f: &mut dyn FnMut(&str, &mut String)) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match v {
                    Value::String(s) if crate::config::is_credential_key(k) => f(&here, s),
                    _ => visit(v, &here, f),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                visit(v, &format!("{path}[{i}]"), f);
            }
        }
        _ => {}
    }
}

/// Calls `f` on every sealed value, with its dotted path.
fn visit_sealed(value: &mut Value, path: &str, f: &mut dyn FnMut(&str, &mut Value)) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                if v.as_str().is_some_and(|s| s.starts_with(SEALED_PREFIX)) {
                    f(&here, v);
                } else {
                    visit_sealed(v, &here, f);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                visit_sealed(v, &format!("{path}[{i}]"), f);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Binds to `aad` without hiding anything: enough to test where sealing applies.
    struct Plain(u8);

    impl SealingKey for Plain {
        fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
            let mut out = vec![self.0];
            out.extend_from_slice(&sha(aad));
            out.extend(plaintext.iter().map(|b| b ^ 0x5a));
            out
        }

        fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
            let (id, rest) = sealed.split_first()?;
            let (tag, body) = rest.split_at_checked(32)?;
            (*id == self.0 && tag == sha(aad).as_slice()).then(|| body.iter().map(|b| b ^ 0x5a).collect())
        }
    }

    fn sha(bytes: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        sha2::Sha256::digest(bytes).to_vec()
    }

    fn sealer(id: u8) -> Sealer {
        Sealer::new(Arc::new(move || Ok(Some(Arc::new(Plain(id)) as Arc<dyn SealingKey>))))
    }

    #[test]
    fn credentials_are_sealed_and_open_again_other_keys_stay_readable() {
        let text = r#"{"arr":{"sonarr":{"url":"http://s","api_key":"k-123"}},"timeout":5}"#;
        let sealed = sealer(1).seal_text("media", text).unwrap_or_default();
        assert!(!sealed.contains("k-123"), "{sealed}");
        assert!(sealed.contains("http://s") && sealed.contains(SEALED_PREFIX), "{sealed}");
        let opened: Value = serde_json::from_str(&sealer(1).open_text("media", &sealed)).unwrap_or_default();
        assert_eq!(opened["arr"]["sonarr"]["api_key"], "k-123");
        assert_eq!(opened["timeout"], 5);
    }

    #[test]
    fn a_value_under_another_key_owner_or_master_key_does_not_open() {
        let sealed = sealer(1).seal_text("media", r#"{"a":{"api_key":"x"}}"#).unwrap_or_default();
        let moved = sealed.replace("\"a\"", "\"b\"");
        let opened: Value = serde_json::from_str(&sealer(1).open_text("media", &moved)).unwrap_or_default();
        assert_eq!(opened["b"]["api_key"], Value::Null);
        let opened: Value = serde_json::from_str(&sealer(1).open_text("other", &sealed)).unwrap_or_default();
        assert_eq!(opened["a"]["api_key"], Value::Null);
        let opened: Value = serde_json::from_str(&sealer(2).open_text("media", &sealed)).unwrap_or_default();
        assert_eq!(opened["a"]["api_key"], Value::Null);
    }

    #[test]
    fn a_single_value_opens_only_for_its_owner_place_and_key_and_plain_values_stay_readable() {
        let sealed = sealer(1).seal_value("webhook:wh_a", "secret", "whsec_1").unwrap_or_default();
        assert!(sealed.starts_with(SEALED_PREFIX) && !sealed.contains("whsec_1"), "{sealed}");
        assert_eq!(sealer(1).open_value("webhook:wh_a", "secret", &sealed).as_deref(), Some("whsec_1"));
        assert_eq!(sealer(1).open_value("webhook:wh_b", "secret", &sealed), None);
        assert_eq!(sealer(2).open_value("webhook:wh_a", "secret", &sealed), None);
        assert_eq!(sealer(1).open_value("webhook:wh_a", "secret", "stored-before").as_deref(), Some("stored-before"));
        assert!(matches!(Sealer::without_key().seal_value("w", "secret", "s"), Err(SealError::NoKey(_))));
    }

    #[test]
    fn without_a_key_credentials_are_refused_and_the_rest_is_stored() {
        let none = Sealer::without_key();
        assert_eq!(none.seal_text("m", r#"{"url":"u"}"#), Ok(String::from(r#"{"url":"u"}"#)));
        assert!(
            matches!(none.seal_text("m", r#"{"x":{"password":"p"}}"#), Err(SealError::NoKey(k)) if k == "x.password")
        );
    }
}
