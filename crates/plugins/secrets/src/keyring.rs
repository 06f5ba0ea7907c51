//! The master keys: where they come from, how a wrong one is refused, and how they rotate.
//!
//! The master key comes from `secrets.master_key` (`NEXUS_MASTER_KEY`, base64 of 32 bytes) or
//! from `<data_dir>/master.key` (0600), created at first start. The database keeps, per master
//! key, an id and a check value (a known constant encrypted under the key), never the key: a
//! start with a key that does not open the active check value is refused.
//!
//! Rotation re-wraps every data key, one row at a time, under a new key that is first saved
//! (`<data_dir>/master.key.new`, or `NEXUS_NEW_MASTER_KEY`) and recorded as `pending`. Every row
//! names the key that wraps it, so an interrupted rotation loses nothing: both keys are still
//! at hand, and running the rotation again resumes it. Only when no row is left under an old
//! key does the new key become `active` and replace the key file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nexus_kernel::clock::Timestamp;
use nexus_kernel::config::Config;
use zeroize::Zeroizing;

use crate::crypto::Key;
use crate::error::SecretsError;
use crate::store::SecretStore;

/// Where a rotation takes its new key from when the master key is configured, not a file.
pub const NEW_KEY_ENV: &str = "NEXUS_NEW_MASTER_KEY";

/// The master keys this process holds, by id, and which one wraps new data keys.
#[derive(Debug, Clone)]
pub struct Keyring {
    pub active_id: String,
    keys: HashMap<String, Key>,
}

fn key_file(config: &Config) -> PathBuf {
    config.data_dir.join("master.key")
}

fn pending_file(config: &Config) -> PathBuf {
    config.data_dir.join("master.key.new")
}

fn err(message: impl Into<String>) -> SecretsError {
    SecretsError::MasterKey(message.into())
}

fn read_key_file(path: &Path) -> Result<Option<Key>, SecretsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = Zeroizing::new(text);
            Key::from_base64(&text)
                .map(Some)
                .ok_or_else(|| err(format!("{} does not hold a master key (base64 of 32 bytes)", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Writes a key to a new 0600 file, flushed to disk.
fn write_key_file(path: &Path, key: &Key) -> Result<(), SecretsError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| err(format!("cannot create {}: {e}", path.display())))?;
    let mut text = key.to_base64();
    text.push('\n');
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| err(format!("cannot write {}: {e}", path.display())))
}

/// The configured master key, if any.
fn configured_key(config: &Config) -> Result<Option<Key>, SecretsError> {
    match &config.secrets.master_key {
        None => Ok(None),
        Some(text) => Key::from_base64(text).map(Some).ok_or_else(|| {
            err("configuration key `secrets.master_key` (NEXUS_MASTER_KEY): must be base64 of exactly 32 bytes")
        }),
    }
}

const WRONG_KEY: &str = "the master key does not match the one these secrets are encrypted with (key check failed); \
    refusing to start rather than serve undecryptable secrets. Provide the right key in NEXUS_MASTER_KEY \
    (or secrets.master_key) or restore <data_dir>/master.key";

impl Keyring {
    /// The key for `id`, if this process holds it.
    pub fn key(&self, id: &str) -> Option<&Key> {
        self.keys.get(id)
    }

    pub fn active(&self) -> Option<&Key> {
        self.keys.get(&self.active_id)
    }

    /// Loads the master key(s) and checks them against the database; creates the key (file)
    /// on a database that has none.
    pub async fn open(config: &Config, store: &dyn SecretStore) -> Result<Self, SecretsError> {
        Self::open_with(config, store, None).await
    }

    /// [`open`](Self::open), also holding `extra` (a rotation's new key).
    async fn open_with(config: &Config, store: &dyn SecretStore, extra: Option<Key>) -> Result<Self, SecretsError> {
        let configured = configured_key(config)?;
        let file = key_file(config);
        let mut candidates: Vec<Key> = Vec::new();
        let primary = match configured {
            Some(key) => Some(key),
            None => read_key_file(&file)?,
        };
        candidates.extend(primary.iter().cloned());
        if config.secrets.master_key.is_none()
            && let Some(pending) = read_key_file(&pending_file(config))?
        {
            candidates.push(pending);
        }
        candidates.extend(extra);
        let mut rows = store.master_keys().await?;
        if rows.is_empty() {
            let key = match primary {
                Some(key) => key,
                None => {
                    let key = Key::generate();
                    write_key_file(&file, &key)?;
                    tracing::info!(path = %file.display(), "created a new master key file");
                    key
                }
            };
            let id = nexus_kernel::id::uuid();
            if store.insert_first_master_key(&id, &key.check_value(&id), Timestamp::now().as_micros()).await? {
                return Ok(Self { active_id: id.clone(), keys: HashMap::from([(id, key)]) });
            }
            // Another instance recorded its key first: this one must match it.
            candidates = vec![key];
            rows = store.master_keys().await?;
        }
        if candidates.is_empty() {
            return Err(err(format!(
                "no master key: {} is missing and NEXUS_MASTER_KEY is not set, but this database holds \
                 secrets encrypted under a master key; provide it",
                file.display()
            )));
        }
        let mut keys = HashMap::new();
        for row in &rows {
            if let Some(key) = candidates.iter().find(|k| k.verifies(&row.id, &row.check_value)) {
                keys.insert(row.id.clone(), key.clone());
            }
        }
        if keys.is_empty() {
            return Err(err(WRONG_KEY));
        }
        let active_id = rows
            .iter()
            .find(|r| r.state == "active")
            .map(|r| r.id.clone())
            .ok_or_else(|| err("the database records no active master key"))?;
        if !keys.contains_key(&active_id) {
            return Err(err(
                "the master key given is a retired one: the master key was rotated; provide the new key in \
                 NEXUS_MASTER_KEY (or secrets.master_key)",
            ));
        }
        for id in store.key_ids_in_use().await? {
            if !keys.contains_key(&id) {
                return Err(err(format!(
                    "some secrets are wrapped by master key {id}, which was not provided: a master key rotation \
                     is unfinished; run `nexus secrets rotate-master-key` (with {NEW_KEY_ENV} set to the new key \
                     when the key comes from NEXUS_MASTER_KEY) to finish it"
                )));
            }
        }
        let ring = Self { active_id, keys };
        if config.secrets.master_key.is_none() {
            ring.finish_file_swap(config, store).await?;
        }
        Ok(ring)
    }

    /// After a rotation that stopped between activating the new key and renaming its file:
    /// completes the rename once no data key needs the old file any more.
    async fn finish_file_swap(&self, config: &Config, store: &dyn SecretStore) -> Result<(), SecretsError> {
        let pending = pending_file(config);
        let Some(new_key) = read_key_file(&pending)? else { return Ok(()) };
        let active_is_pending = self.active().is_some_and(|k| k.to_base64() == new_key.to_base64());
        if active_is_pending && store.count_not_wrapped_by(&self.active_id).await? == 0 {
            std::fs::rename(&pending, key_file(config))
                .map_err(|e| err(format!("cannot replace the master key file: {e}")))?;
        }
        Ok(())
    }
}

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub new_key_id: String,
    pub rewrapped: u64,
    /// Where the new key is: the key file, or the environment the operator must now update.
    pub key_location: String,
}

/// Re-wraps every data key under a new master key; resumable (see the module documentation).
/// `progress(done, total)` is called as rows are re-wrapped.
pub async fn rotate(
    config: &Config,
    store: &dyn SecretStore,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Rotation, SecretsError> {
    let from_env = config.secrets.master_key.is_some();
    let new_key = if from_env {
        let text = Zeroizing::new(std::env::var(NEW_KEY_ENV).map_err(|_| {
            err(format!(
                "the master key comes from NEXUS_MASTER_KEY: set {NEW_KEY_ENV} to the new key (base64 of 32 bytes)"
            ))
        })?);
        Key::from_base64(&text).ok_or_else(|| err(format!("{NEW_KEY_ENV} must be base64 of exactly 32 bytes")))?
    } else {
        let pending = pending_file(config);
        match read_key_file(&pending)? {
            Some(key) => key,
            None => {
                let key = Key::generate();
                write_key_file(&pending, &key)?;
                key
            }
        }
    };
    let mut ring = Keyring::open_with(config, store, Some(new_key.clone())).await?;
    // Resume with the id the new key was recorded under, or record it as pending.
    let rows = store.master_keys().await?;
    let new_id = match rows.iter().find(|r| new_key.verifies(&r.id, &r.check_value)) {
        Some(row) => row.id.clone(),
        None => {
            let id = nexus_kernel::id::uuid();
            store.insert_master_key(&id, &new_key.check_value(&id), "pending", Timestamp::now().as_micros()).await?;
            id
        }
    };
    ring.keys.insert(new_id.clone(), new_key.clone());
    let total = u64::try_from(store.count_not_wrapped_by(&new_id).await?).unwrap_or(0);
    let mut done = 0u64;
    progress(done, total);
    // Twice: once before activating the new key, and once after, for rows a running server
    // created under the old key in between.
    for pass in 0..2 {
        loop {
            let batch = store.not_wrapped_by(&new_id, 200).await?;
            if batch.is_empty() {
                break;
            }
            for row in batch {
                let old = ring.key(&row.key_id).ok_or_else(|| {
                    err(format!("secret {} is wrapped by master key {}, which is not available", row.id, row.key_id))
                })?;
                let data_key = old.unwrap_key(&row.key_id, &row.id, &row.wrapped_key).map_err(|_| {
                    err(format!("the data key of secret {} fails its integrity check; rotation stopped", row.id))
                })?;
                let wrapped = new_key.wrap(&new_id, &row.id, &data_key);
                if store.rewrap(&row.id, &row.key_id, &new_id, &wrapped).await? {
                    done += 1;
                    progress(done, total.max(done));
                }
            }
        }
        if pass == 0 {
            store.activate_master_key(&new_id).await?;
        }
    }
    let key_location = if from_env {
        format!("set NEXUS_MASTER_KEY to the value of {NEW_KEY_ENV} before the next start")
    } else {
        let file = key_file(config);
        match std::fs::rename(pending_file(config), &file) {
            Ok(()) => {}
            // Already renamed when the keyring was opened (a resumed rotation).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(format!("cannot replace the master key file: {e}"))),
        }
        file.display().to_string()
    };
    Ok(Rotation { new_key_id: new_id, rewrapped: done, key_location })
}

/// What the key sealing stored configuration credentials is derived for.
const CONFIG_PURPOSE: &str = "plugin-config";

/// The kernel's sealer of configuration credentials (see `nexus_kernel::seal`), keyed by a
/// key derived from the master key of `config`: the one in effect when the process started,
/// so a master key stored through the API is itself sealed under the key it replaces.
pub fn config_sealer(config: &Config) -> nexus_kernel::seal::Sealer {
    let config = config.clone();
    nexus_kernel::seal::Sealer::new(std::sync::Arc::new(move || {
        derived_key(&config, CONFIG_PURPOSE)
            .map(|key| key.map(|k| std::sync::Arc::new(k) as std::sync::Arc<dyn nexus_kernel::seal::SealingKey>))
            .map_err(|e| e.to_string())
    }))
}

/// A key for `purpose` derived from the master key in effect (`secrets.master_key`, else the
/// key file), for other plugins' encrypted data (backups). `None` when there is no master key
/// yet (the secrets plugin creates the key file at its first start).
pub fn derived_key(config: &Config, purpose: &str) -> Result<Option<Key>, SecretsError> {
    let master = match configured_key(config)? {
        Some(key) => Some(key),
        None => read_key_file(&key_file(config))?,
    };
    Ok(master.map(|k| k.derive(purpose)))
}
