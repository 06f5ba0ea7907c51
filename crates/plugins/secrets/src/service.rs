//! The secrets service: every operation checks the caller's permission and path policy,
//! encrypts or decrypts, and leaves an audit record — refusals and failures included.

use std::sync::Arc;

use nexus_identity::{Identity, Principal};
use nexus_kernel::Kernel;
use nexus_kernel::audit::{AuditEntry, AuditQuery, AuditRecord};
use nexus_kernel::client::ClientMeta;
use nexus_kernel::clock::Timestamp;
use nexus_kernel::group_commit::{GroupCommit, Sink};
use nexus_kernel::query::{ListQuery, Page};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::cache::{Cached, ReadCache};
use crate::crypto::Key;
use crate::error::SecretsError;
use crate::keyring::Keyring;
use crate::paths;
use crate::policy::Policies;
use crate::store::{
    CachedRead, CreateOutcome, NewSecret, NewVersion, ReadAuditor, SealedRow, SecretRow, SecretStore, VersionRow,
};

/// Largest secret value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Largest metadata object accepted, serialised, in bytes.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// A secret as listed and returned by writes: never with its value.
#[derive(Debug, Clone)]
pub struct SecretMeta {
    pub id: String,
    pub path: String,
    pub metadata: Value,
    pub version: i64,
    pub created_at: Timestamp,
    pub created_by: String,
    pub updated_at: Timestamp,
    pub updated_by: String,
}

impl From<SecretRow> for SecretMeta {
    fn from(r: SecretRow) -> Self {
        Self {
            metadata: parse_metadata(&r.metadata),
            id: r.id,
            path: r.path,
            version: r.version,
            created_at: Timestamp::from_micros(r.created_at),
            created_by: r.created_by,
            updated_at: Timestamp::from_micros(r.updated_at),
            updated_by: r.updated_by,
        }
    }
}

impl SecretMeta {
    /// The metadata of the version `row` holds (the current one unless a version was asked for).
    fn of_sealed(row: &SealedRow, metadata: Value) -> Self {
        Self {
            id: row.id.clone(),
            path: row.path.clone(),
            metadata,
            version: row.v_version.unwrap_or(row.version),
            created_at: Timestamp::from_micros(row.created_at),
            created_by: row.created_by.clone(),
            updated_at: Timestamp::from_micros(row.v_created_at.unwrap_or(row.updated_at)),
            updated_by: row.v_created_by.clone().unwrap_or_else(|| row.updated_by.clone()),
        }
    }
}

/// A decrypted secret. The value is zeroized when this is dropped.
#[derive(Debug)]
pub struct SecretValue {
    pub meta: SecretMeta,
    pub value: Zeroizing<String>,
}

fn parse_metadata(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| json!({}))
}

/// What a caller asks to change; `None` leaves it as it is.
#[derive(Debug, Default)]
pub struct Update {
    pub value: Option<Zeroizing<String>>,
    pub metadata: Option<Value>,
    /// The version the caller expects the secret to be at (check-and-set).
    pub cas: Option<i64>,
}

#[derive(Debug)]
pub struct Secrets {
    kernel: Arc<Kernel>,
    store: Arc<dyn SecretStore>,
    keyring: Keyring,
    policies: Policies,
    cache: Arc<ReadCache>,
    /// Audits the reads served from the cache, many per transaction.
    cached_reads: GroupCommit<CachedRead, bool>,
}

/// Reads served from the cache waiting at once, and how many one transaction audits.
const CACHED_READS_QUEUE: usize = 1024;
const CACHED_READS_BATCH: usize = 256;

/// Writes the audit records of cached reads whose secret is still at the version read.
struct CachedReadAuditor(Box<dyn ReadAuditor>);

impl Sink for CachedReadAuditor {
    type Item = CachedRead;
    type Output = bool;

    async fn commit(&mut self, reads: Vec<CachedRead>) -> Result<Vec<bool>, String> {
        self.0.audit(&reads).await.map_err(|e| e.to_string())
    }

    async fn idle(&mut self) {
        self.0.release();
    }

    fn batch_len(&self, waiting: usize) -> usize {
        nexus_kernel::audit::chunk_len(waiting)
    }
}

/// Who acted, for audit records: a user id, or `anonymous` for a refused unauthenticated call.
fn actor(p: Option<&Principal>) -> &str {
    p.map_or("anonymous", |p| p.user_id.as_str())
}

impl Secrets {
    /// Opens the keyring (refusing a wrong master key) and sets up the service.
    pub async fn start(kernel: Arc<Kernel>, identity: &Identity) -> Result<Arc<Self>, SecretsError> {
        let store = crate::store::open(&kernel.db, kernel.outbox.clone());
        let policies = Policies::new(kernel.config.secrets.policies.clone(), identity.roles().clone());
        policies.validate().map_err(SecretsError::MasterKey)?;
        let keyring = Keyring::open(&kernel.config, store.as_ref()).await?;
        // Access to shared paths is denied unless a policy grants it. An installation whose
        // users reached every path before (no policies) keeps its administrators' access and
        // is told, once per start, which roles lost theirs and how to restore it.
        let unreached = policies.unreached_roles();
        if !unreached.is_empty() && !store.key_ids_in_use().await?.is_empty() {
            tracing::warn!(
                roles = %unreached.join(", "),
                "secrets: these roles hold secret permissions but have no `secrets.policies` entry, so they reach \
                 only their holders' own `users/{{user_id}}/` paths; administrators reach every path. Grant paths \
                 with e.g. `secrets.policies.user = [\"team/*\"]` (`[\"*\"]` restores access to every path)"
            );
        }
        let cache = Arc::new(ReadCache::new(&kernel.cache));
        ReadCache::follow(Arc::downgrade(&cache), &kernel.events);
        let cached_reads =
            GroupCommit::start(CachedReadAuditor(store.read_auditor()), CACHED_READS_BATCH, CACHED_READS_QUEUE);
        Ok(Arc::new(Self { kernel, store, keyring, policies, cache, cached_reads }))
    }

    pub fn kernel(&self) -> &Arc<Kernel> {
        &self.kernel
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        action: &str,
        p: Option<&Principal>,
        secret_id: &str,
        path: &str,
        client: &ClientMeta,
        success: bool,
        metadata: Value,
    ) -> AuditRecord {
        AuditRecord {
            action: action.to_string(),
            actor: actor(p).to_string(),
            target: String::new(),
            secret_id: secret_id.to_string(),
            secret_path: path.to_string(),
            ip_address: client.ip.clone(),
            user_agent: client.user_agent.clone(),
            success,
            request_id: client.request_id.clone(),
            metadata,
        }
    }

    /// Records an action whose loss must not undo it.
    #[allow(clippy::too_many_arguments)]
    async fn audit(
        &self,
        action: &str,
        p: Option<&Principal>,
        secret_id: &str,
        path: &str,
        client: &ClientMeta,
        success: bool,
        metadata: Value,
    ) {
        let rec = self.record(action, p, secret_id, path, client, success, metadata);
        self.kernel.audit.record_best_effort(&rec).await;
    }

    /// Records a refused or failed attempt and returns its error.
    async fn refuse(
        &self,
        action: &str,
        p: Option<&Principal>,
        secret_id: &str,
        path: &str,
        client: &ClientMeta,
        error: SecretsError,
    ) -> SecretsError {
        let reason = match &error {
            SecretsError::Storage(_) => String::from("storage error"),
            other => other.to_string(),
        };
        self.audit(action, p, secret_id, path, client, false, json!({ "reason": reason })).await;
        error
    }

    /// Records a call refused before its caller was known (no or a bad credential).
    pub async fn unauthenticated(&self, action: &str, path: &str, client: &ClientMeta, reason: &str) {
        let path = if paths::validate(path).is_ok() { path } else { "" };
        self.audit(action, None, "", path, client, false, json!({ "reason": reason })).await;
    }

    /// Checks path rules and `permission` on `path`.
    fn check(&self, p: &Principal, permission: &str, path: &str) -> Result<(), SecretsError> {
        paths::validate(path).map_err(SecretsError::InvalidPath)?;
        if !p.has(permission) {
            return Err(SecretsError::Forbidden(permission.to_string()));
        }
        if !self.policies.allows(p, permission, path) {
            return Err(SecretsError::Denied { permission: permission.to_string(), path: path.to_string() });
        }
        Ok(())
    }

    /// A page of the secrets the caller may read, optionally under `prefix`, by the list
    /// request `q` ([`crate::store::SECRET_LISTING`]); never values. The path policies narrow
    /// the query itself, so that totals and pages count only what the caller may see.
    pub async fn list(
        &self,
        p: &Principal,
        prefix: Option<&str>,
        q: &ListQuery,
        client: &ClientMeta,
    ) -> Result<Page<SecretMeta>, SecretsError> {
        const ACTION: &str = "secret.list";
        let prefix = prefix.filter(|s| !s.is_empty());
        let meta = json!({ "prefix": prefix.unwrap_or("") });
        if let Some(prefix) = prefix
            && let Err(e) = paths::validate_prefix(prefix)
        {
            return Err(self.refuse(ACTION, Some(p), "", "", client, SecretsError::field("prefix", e)).await);
        }
        if !p.has("secret.read") {
            let e = SecretsError::Forbidden("secret.read".into());
            return Err(self.refuse(ACTION, Some(p), "", "", client, e).await);
        }
        let scope = self.policies.scope(p, "secret.read");
        let page = match self.store.list_page(prefix, &scope, q).await {
            Ok(page) => page,
            Err(e) => return Err(self.refuse(ACTION, Some(p), "", "", client, e.into()).await),
        };
        self.audit(ACTION, Some(p), "", "", client, true, meta).await;
        Ok(page.map(SecretMeta::from))
    }

    /// The decrypted value of `path` (of `version`, else the current one). Fails closed: no
    /// value leaves without its audit record written.
    pub async fn read(
        &self,
        p: &Principal,
        path: &str,
        version: Option<i64>,
        client: &ClientMeta,
    ) -> Result<SecretValue, SecretsError> {
        const ACTION: &str = "secret.read";
        if let Err(e) = self.check(p, "secret.read", path) {
            return Err(self.refuse(ACTION, Some(p), "", path, client, e).await);
        }
        if version.is_some_and(|v| v < 1) {
            let e = SecretsError::field("version", "must be a positive integer");
            return Err(self.refuse(ACTION, Some(p), "", path, client, e).await);
        }
        if version.is_none()
            && let Some(cached) = self.cache.get(path)
            && let Some(value) = self.serve_cached(p, &cached, client).await?
        {
            return Ok(value);
        }
        let row = match self.store.sealed(path, version).await {
            Ok(Some(row)) => row,
            Ok(None) => {
                return Err(self.refuse(ACTION, Some(p), "", path, client, SecretsError::NotFound("secret")).await);
            }
            Err(e) => return Err(self.refuse(ACTION, Some(p), "", path, client, e.into()).await),
        };
        let value = match self.open_row(&row) {
            Ok(Some(value)) => value,
            Ok(None) => {
                let e = SecretsError::NotFound("secret version");
                return Err(self.refuse(ACTION, Some(p), &row.id, path, client, e).await);
            }
            Err(e) => {
                tracing::error!(secret_id = %row.id, "stored secret failed its integrity check");
                return Err(self.refuse(ACTION, Some(p), &row.id, path, client, e).await);
            }
        };
        let read_version = row.v_version.unwrap_or(row.version);
        // Read from the database within this request, the row is current enough to serve
        // without a precondition: a write it does not show was not acknowledged when the read
        // began.
        let rec = self.record(ACTION, Some(p), &row.id, path, client, true, json!({ "version": read_version }));
        if let Err(e) = self.kernel.audit.record(&rec).await {
            tracing::error!(error = %e, secret_id = %row.id, "audit record of a read failed; value withheld");
            return Err(SecretsError::AuditUnavailable);
        }
        let metadata = parse_metadata(&row.metadata);
        let meta = SecretMeta::of_sealed(&row, metadata.clone());
        if version.is_none() {
            self.cache.insert(row, metadata);
        }
        Ok(SecretValue { meta, value })
    }

    /// Serves a read of the current version from a cached row, if the secret is still at that
    /// row's id and version when the read's audit record is written (the same transaction
    /// checks it); `None` when it is not (or the row does not open), and the database must be
    /// read.
    async fn serve_cached(
        &self,
        p: &Principal,
        cached: &Cached,
        client: &ClientMeta,
    ) -> Result<Option<SecretValue>, SecretsError> {
        let row = &cached.row;
        let Ok(Some(value)) = self.open_row(row) else {
            // Whatever is wrong is for the database read to find out and audit.
            self.cache.invalidate(&row.path);
            return Ok(None);
        };
        let read_version = row.v_version.unwrap_or(row.version);
        let rec =
            self.record("secret.read", Some(p), &row.id, &row.path, client, true, json!({ "version": read_version }));
        let read = CachedRead { rec, id: row.id.clone(), version: row.version };
        match self.cached_reads.submit(vec![read]).await.as_deref() {
            Ok([true]) => {}
            Ok(_) => {
                self.cache.invalidate(&row.path);
                return Ok(None);
            }
            Err(e) => {
                tracing::error!(error = %e, secret_id = %row.id, "audit record of a cached read failed; value withheld");
                return Err(SecretsError::AuditUnavailable);
            }
        }
        Ok(Some(SecretValue { meta: SecretMeta::of_sealed(row, cached.metadata.clone()), value }))
    }

    /// The data key of a row.
    fn data_key(&self, row: &SealedRow) -> Result<Key, SecretsError> {
        let master = self.keyring.key(&row.key_id).ok_or(SecretsError::StaleMasterKey)?;
        master.unwrap_key(&row.key_id, &row.id, &row.wrapped_key).map_err(|_| SecretsError::Integrity)
    }

    /// Decrypts the version a row carries; `None` when the row carries none.
    fn open_row(&self, row: &SealedRow) -> Result<Option<Zeroizing<String>>, SecretsError> {
        let (Some(version), Some(ciphertext)) = (row.v_version, row.v_ciphertext.as_deref()) else {
            return Ok(None);
        };
        let data_key = self.data_key(row)?;
        let plain = data_key.decrypt_value(&row.id, version, ciphertext).map_err(|_| SecretsError::Integrity)?;
        let text = std::str::from_utf8(&plain).map_err(|_| SecretsError::Integrity)?;
        Ok(Some(Zeroizing::new(text.to_string())))
    }

    fn validate_value(value: &str) -> Result<(), SecretsError> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(SecretsError::field("value", format!("must be at most {MAX_VALUE_BYTES} bytes")));
        }
        Ok(())
    }

    fn metadata_text(metadata: Option<&Value>) -> Result<Option<String>, SecretsError> {
        match metadata {
            None | Some(Value::Null) => Ok(None),
            Some(v @ Value::Object(_)) => {
                let text = v.to_string();
                if text.len() > MAX_METADATA_BYTES {
                    return Err(SecretsError::field("metadata", format!("must be at most {MAX_METADATA_BYTES} bytes")));
                }
                Ok(Some(text))
            }
            Some(_) => Err(SecretsError::field("metadata", "must be an object")),
        }
    }

    /// Creates the secret at `path` as version 1.
    pub async fn create(
        &self,
        p: &Principal,
        path: &str,
        value: Zeroizing<String>,
        metadata: Option<Value>,
        client: &ClientMeta,
    ) -> Result<SecretMeta, SecretsError> {
        const ACTION: &str = "secret.create";
        let checked = self.check(p, "secret.write", path).and_then(|()| {
            Self::validate_value(&value)?;
            Self::metadata_text(metadata.as_ref())
        });
        let metadata = match checked {
            Ok(m) => m.unwrap_or_else(|| String::from("{}")),
            Err(e) => return Err(self.refuse(ACTION, Some(p), "", path, client, e).await),
        };
        let master = self.keyring.active().ok_or(SecretsError::StaleMasterKey)?;
        let now = Timestamp::now().as_micros();
        let row = SecretRow {
            id: nexus_kernel::id::uuid(),
            path: path.to_string(),
            metadata,
            version: 1,
            created_at: now,
            created_by: p.user_id.clone(),
            updated_at: now,
            updated_by: p.user_id.clone(),
        };
        let data_key = Key::generate();
        let wrapped = master.wrap(&self.keyring.active_id, &row.id, &data_key);
        let ciphertext = data_key.encrypt_value(&row.id, 1, value.as_bytes());
        drop(value);
        let new = NewSecret {
            row: &row,
            key_id: &self.keyring.active_id,
            wrapped_key: &wrapped,
            version_id: &nexus_kernel::id::uuid(),
            ciphertext: &ciphertext,
        };
        let event = self.kernel.events.envelope(
            "secrets",
            "secret.created",
            json!({ "id": row.id, "path": row.path, "version": 1, "user": p.user_id }),
        );
        let outcome = match self.store.create(&new, &event).await {
            Ok(o) => o,
            Err(e) => return Err(self.refuse(ACTION, Some(p), "", path, client, e.into()).await),
        };
        match outcome {
            CreateOutcome::Created => self.cache.invalidate(path),
            CreateOutcome::Exists => {
                return Err(self.refuse(ACTION, Some(p), "", path, client, SecretsError::Exists).await);
            }
            CreateOutcome::StaleKey => {
                return Err(self.refuse(ACTION, Some(p), "", path, client, SecretsError::StaleMasterKey).await);
            }
        }
        self.audit(ACTION, Some(p), &row.id, path, client, true, json!({ "version": 1 })).await;
        Ok(row.into())
    }

    /// Writes a new version of `path`: the new value, or the current one again.
    pub async fn update(
        &self,
        p: &Principal,
        path: &str,
        update: Update,
        client: &ClientMeta,
    ) -> Result<SecretMeta, SecretsError> {
        const ACTION: &str = "secret.update";
        let checked = self.check(p, "secret.write", path).and_then(|()| {
            if update.value.is_none() && update.metadata.is_none() {
                return Err(SecretsError::field("body", "give `value`, `metadata` or both"));
            }
            if let Some(v) = &update.value {
                Self::validate_value(v)?;
            }
            if update.cas.is_some_and(|c| c < 0) {
                return Err(SecretsError::field("cas", "must be a version number (0 or more)"));
            }
            Self::metadata_text(update.metadata.as_ref())
        });
        let new_metadata = match checked {
            Ok(m) => m,
            Err(e) => return Err(self.refuse(ACTION, Some(p), "", path, client, e).await),
        };
        // A concurrent writer can win between reading and writing; without `cas`, try again.
        for attempt in 0..32u64 {
            if attempt > 0 {
                // Back off a little, with jitter, so that racing writers spread out.
                let [byte] = nexus_kernel::id::random_bytes::<1>();
                let jitter = u64::from(byte % 8);
                tokio::time::sleep(std::time::Duration::from_millis(attempt.min(10) + jitter)).await;
            }
            let row = match self.store.sealed(path, None).await {
                Ok(Some(row)) => row,
                Ok(None) => {
                    return Err(self.refuse(ACTION, Some(p), "", path, client, SecretsError::NotFound("secret")).await);
                }
                Err(e) => return Err(self.refuse(ACTION, Some(p), "", path, client, e.into()).await),
            };
            if let Some(expected) = update.cas
                && expected != row.version
            {
                let e = SecretsError::VersionMismatch { expected, current: row.version };
                return Err(self.refuse(ACTION, Some(p), &row.id, path, client, e).await);
            }
            let sealed = self.reseal(&row, update.value.as_deref().map(String::as_str));
            let ciphertext = match sealed {
                Ok(c) => c,
                Err(e) => return Err(self.refuse(ACTION, Some(p), &row.id, path, client, e).await),
            };
            let metadata = new_metadata.clone().unwrap_or_else(|| row.metadata.clone());
            let now = Timestamp::now().as_micros();
            let version_id = nexus_kernel::id::uuid();
            let new = NewVersion {
                secret_id: &row.id,
                expected_version: row.version,
                metadata: &metadata,
                version_id: &version_id,
                ciphertext: &ciphertext,
                at: now,
                by: &p.user_id,
            };
            let event = self.kernel.events.envelope(
                "secrets",
                "secret.updated",
                json!({ "id": row.id, "path": row.path, "version": row.version + 1, "user": p.user_id }),
            );
            match self.store.add_version(&new, &event).await {
                Ok(true) => {}
                Ok(false) if update.cas.is_some() => {
                    let e = SecretsError::VersionMismatch { expected: row.version, current: row.version + 1 };
                    return Err(self.refuse(ACTION, Some(p), &row.id, path, client, e).await);
                }
                Ok(false) => continue,
                Err(e) => return Err(self.refuse(ACTION, Some(p), &row.id, path, client, e.into()).await),
            }
            self.cache.invalidate(path);
            let version = row.version + 1;
            let changed = json!({ "version": version, "value_changed": update.value.is_some(),
                "metadata_changed": update.metadata.is_some() });
            self.audit(ACTION, Some(p), &row.id, path, client, true, changed).await;
            return Ok(SecretMeta {
                metadata: parse_metadata(&metadata),
                id: row.id,
                path: row.path,
                version,
                created_at: Timestamp::from_micros(row.created_at),
                created_by: row.created_by,
                updated_at: Timestamp::from_micros(now),
                updated_by: p.user_id.clone(),
            });
        }
        Err(self.refuse(ACTION, Some(p), "", path, client, SecretsError::Concurrent).await)
    }

    /// The ciphertext of the next version of `row`: `value`, or the current value again.
    fn reseal(&self, row: &SealedRow, value: Option<&str>) -> Result<Vec<u8>, SecretsError> {
        let data_key = self.data_key(row)?;
        let next = row.version + 1;
        match value {
            Some(v) => Ok(data_key.encrypt_value(&row.id, next, v.as_bytes())),
            None => {
                let current = self.open_row(row)?.ok_or(SecretsError::Integrity)?;
                Ok(data_key.encrypt_value(&row.id, next, current.as_bytes()))
            }
        }
    }

    /// Deletes `path` with every version.
    pub async fn delete(&self, p: &Principal, path: &str, client: &ClientMeta) -> Result<(), SecretsError> {
        const ACTION: &str = "secret.delete";
        if let Err(e) = self.check(p, "secret.delete", path) {
            return Err(self.refuse(ACTION, Some(p), "", path, client, e).await);
        }
        let deleted = |id: &str| {
            self.kernel.events.envelope(
                "secrets",
                "secret.deleted",
                json!({ "id": id, "path": path, "user": p.user_id }),
            )
        };
        let id = match self.store.delete(path, &deleted).await {
            Ok(Some(id)) => {
                self.cache.invalidate(path);
                id
            }
            Ok(None) => {
                return Err(self.refuse(ACTION, Some(p), "", path, client, SecretsError::NotFound("secret")).await);
            }
            Err(e) => return Err(self.refuse(ACTION, Some(p), "", path, client, e.into()).await),
        };
        self.audit(ACTION, Some(p), &id, path, client, true, json!({})).await;
        Ok(())
    }

    /// The version history of `path`, newest first, without values.
    pub async fn versions(
        &self,
        p: &Principal,
        path: &str,
        client: &ClientMeta,
    ) -> Result<Vec<VersionRow>, SecretsError> {
        const ACTION: &str = "secret.versions";
        if let Err(e) = self.check(p, "secret.read", path) {
            return Err(self.refuse(ACTION, Some(p), "", path, client, e).await);
        }
        let id = match self.store.id_of(path).await {
            Ok(Some(id)) => id,
            Ok(None) => {
                return Err(self.refuse(ACTION, Some(p), "", path, client, SecretsError::NotFound("secret")).await);
            }
            Err(e) => return Err(self.refuse(ACTION, Some(p), "", path, client, e.into()).await),
        };
        let versions = match self.store.versions(&id).await {
            Ok(v) => v,
            Err(e) => return Err(self.refuse(ACTION, Some(p), &id, path, client, e.into()).await),
        };
        self.audit(ACTION, Some(p), &id, path, client, true, json!({})).await;
        Ok(versions)
    }

    /// Refuses (and audits the refusal) unless `p` is an admin or holds `audit.read`.
    pub async fn may_read_audit(&self, p: &Principal, client: &ClientMeta) -> Result<(), SecretsError> {
        if !(p.is_admin() || p.has("audit.read")) {
            return Err(self.refuse("audit.list", Some(p), "", "", client, SecretsError::AdminRequired).await);
        }
        Ok(())
    }

    /// A page of audit log entries matching `q` and the list request `list`
    /// ([`nexus_kernel::audit::AUDIT_LISTING`]); admins and holders of `audit.read` only.
    pub async fn audit_log(
        &self,
        p: &Principal,
        q: &AuditQuery,
        list: &ListQuery,
        client: &ClientMeta,
    ) -> Result<Page<AuditEntry>, SecretsError> {
        const ACTION: &str = "audit.list";
        self.may_read_audit(p, client).await?;
        let result = nexus_kernel::audit::page(&self.kernel.db, q, list).await;
        let result = match result {
            Ok(r) => r,
            Err(e) => return Err(self.refuse(ACTION, Some(p), "", "", client, e.into()).await),
        };
        self.audit(ACTION, Some(p), "", "", client, true, json!({})).await;
        Ok(result)
    }
}
