//! SQL of the secrets plugin: secrets, their versions and the master-key ring.

use nexus_kernel::audit::{AuditRecord, AuditTx};
use nexus_kernel::db::{Db, StorageError};
use nexus_kernel::events::Event;
use nexus_kernel::outbox::{Outbox, OutboxTx};
use nexus_kernel::query::{Field, Keyed, Kind, ListQuery, Listing, Op, Page, Value};
use nexus_kernel::with_db;

use crate::policy::Scope;

/// A secret without its value.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SecretRow {
    pub id: String,
    pub path: String,
    pub metadata: String,
    pub version: i64,
    pub created_at: i64,
    pub created_by: String,
    pub updated_at: i64,
    pub updated_by: String,
}

/// A secret with one version's ciphertext (absent when that version does not exist) and its
/// wrapped data key: everything a read needs, in one query.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SealedRow {
    pub id: String,
    pub path: String,
    pub metadata: String,
    pub version: i64,
    pub key_id: String,
    pub wrapped_key: Vec<u8>,
    pub created_at: i64,
    pub created_by: String,
    pub updated_at: i64,
    pub updated_by: String,
    pub v_version: Option<i64>,
    pub v_ciphertext: Option<Vec<u8>>,
    pub v_created_at: Option<i64>,
    pub v_created_by: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VersionRow {
    pub id: String,
    pub secret_id: String,
    pub version: i64,
    pub created_at: i64,
    pub created_by: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MasterKeyRow {
    pub id: String,
    pub check_value: Vec<u8>,
    pub state: String,
}

/// A data key to re-wrap during a master key rotation.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WrappedRow {
    pub id: String,
    pub key_id: String,
    pub wrapped_key: Vec<u8>,
}

/// A new secret with its first version.
#[derive(Debug, Clone)]
pub struct NewSecret<'a> {
    pub row: &'a SecretRow,
    pub key_id: &'a str,
    pub wrapped_key: &'a [u8],
    pub version_id: &'a str,
    pub ciphertext: &'a [u8],
}

/// A new version of an existing secret.
#[derive(Debug, Clone)]
pub struct NewVersion<'a> {
    pub secret_id: &'a str,
    pub expected_version: i64,
    pub metadata: &'a str,
    pub version_id: &'a str,
    pub ciphertext: &'a [u8],
    pub at: i64,
    pub by: &'a str,
}

/// Why a create did not happen.
#[derive(Debug)]
pub enum CreateOutcome {
    Created,
    /// The path is taken.
    Exists,
    /// The master key this process wraps with is no longer the active one (rotated meanwhile).
    StaleKey,
}

/// What `GET /api/v1/secrets` allows to filter, sort and select (never values). No default
/// limit: the seed lists every secret.
pub const SECRET_LISTING: Listing = Listing {
    name: "secrets",
    fields: &[
        Field { name: "id", column: "id", kind: Kind::Text, ops: Op::EQUALITY, sortable: true },
        Field { name: "path", column: "path", kind: Kind::Text, ops: Op::TEXT, sortable: true },
        Field { name: "version", column: "version", kind: Kind::Int, ops: Op::ORDERED, sortable: true },
        Field { name: "created_at", column: "created_at", kind: Kind::Time, ops: Op::ORDERED, sortable: true },
        Field { name: "updated_at", column: "updated_at", kind: Kind::Time, ops: Op::ORDERED, sortable: true },
        Field { name: "created_by", column: "created_by", kind: Kind::Text, ops: Op::TEXT, sortable: true },
        Field { name: "updated_by", column: "updated_by", kind: Kind::Text, ops: Op::TEXT, sortable: true },
    ],
    unique: "id",
    default_sort: "path",
    default_limit: 0,
    select: &["id", "path", "metadata", "version", "created_at", "created_by", "updated_at", "updated_by"],
};

impl Keyed for SecretRow {
    fn key(&self, field: &str) -> Value {
        match field {
            "path" => Value::Text(self.path.clone()),
            "version" => Value::Int(self.version),
            "created_at" => Value::Int(self.created_at),
            "updated_at" => Value::Int(self.updated_at),
            "created_by" => Value::Text(self.created_by.clone()),
            "updated_by" => Value::Text(self.updated_by.clone()),
            _ => Value::Text(self.id.clone()),
        }
    }
}

/// Whether the secret is still the one read (its id) at the version read.
const CURRENT: &str = "SELECT 1 FROM secrets WHERE id = $1 AND version = $2";

const SECRET_COLUMNS: &str = "id, path, metadata, version, created_at, created_by, updated_at, updated_by";

#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    outbox: Outbox,
}

impl Store {
    pub fn new(db: Db, outbox: Outbox) -> Self {
        Self { db, outbox }
    }

    // ---- master keys ----

    pub async fn master_keys(&self) -> Result<Vec<MasterKeyRow>, StorageError> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as("SELECT id, check_value, state FROM secret_master_keys ORDER BY created_at")
                .fetch_all(pool)
                .await
        })?)
    }

    /// Records a master key; `false` when a key with that id exists already.
    pub async fn insert_master_key(&self, id: &str, check: &[u8], state: &str, at: i64) -> Result<bool, StorageError> {
        let done = with_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO secret_master_keys (id, check_value, state, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(check)
            .bind(state)
            .bind(at)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(done == 1)
    }

    /// Records the first master key, unless another instance recorded one meanwhile.
    pub async fn insert_first_master_key(&self, id: &str, check: &[u8], at: i64) -> Result<bool, StorageError> {
        let done = with_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO secret_master_keys (id, check_value, state, created_at) SELECT $1, $2, 'active', $3 \
                 WHERE NOT EXISTS (SELECT 1 FROM secret_master_keys)",
            )
            .bind(id)
            .bind(check)
            .bind(at)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(done == 1)
    }

    /// The master keys that wrap at least one data key.
    pub async fn key_ids_in_use(&self) -> Result<Vec<String>, StorageError> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_scalar("SELECT DISTINCT key_id FROM secrets").fetch_all(pool).await
        })?)
    }

    /// How many data keys are wrapped by a key other than `key_id`.
    pub async fn count_not_wrapped_by(&self, key_id: &str) -> Result<i64, StorageError> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM secrets WHERE key_id <> $1").bind(key_id).fetch_one(pool).await
        })?)
    }

    /// Up to `limit` data keys wrapped by a key other than `key_id`.
    pub async fn not_wrapped_by(&self, key_id: &str, limit: i64) -> Result<Vec<WrappedRow>, StorageError> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as("SELECT id, key_id, wrapped_key FROM secrets WHERE key_id <> $1 ORDER BY id LIMIT $2")
                .bind(key_id)
                .bind(limit)
                .fetch_all(pool)
                .await
        })?)
    }

    /// Replaces one wrapped data key, if it is still wrapped by `old_key_id`.
    pub async fn rewrap(
        &self,
        id: &str,
        old_key_id: &str,
        new_key_id: &str,
        wrapped: &[u8],
    ) -> Result<bool, StorageError> {
        let done = with_db!(&self.db, |pool| {
            sqlx::query("UPDATE secrets SET key_id = $1, wrapped_key = $2 WHERE id = $3 AND key_id = $4")
                .bind(new_key_id)
                .bind(wrapped)
                .bind(id)
                .bind(old_key_id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(done == 1)
    }

    /// Makes `new_id` the active key and retires every other, in one transaction.
    pub async fn activate_master_key(&self, new_id: &str) -> Result<(), StorageError> {
        with_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE secret_master_keys SET state = 'retired' WHERE id <> $1 AND state <> 'retired'")
                .bind(new_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE secret_master_keys SET state = 'active' WHERE id = $1")
                .bind(new_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })?;
        Ok(())
    }

    // ---- secrets ----

    /// A page of the secrets under `prefix` (all without one) within `scope`, by the list
    /// request `q` ([`SECRET_LISTING`]). Every value is bound; only declared columns are written.
    pub async fn list_page(
        &self,
        prefix: Option<&str>,
        scope: &Scope,
        q: &ListQuery,
    ) -> Result<Page<SecretRow>, StorageError> {
        let mut base_params: Vec<Value> = Vec::new();
        let param = |v: &str, params: &mut Vec<Value>| {
            params.push(Value::Text(v.to_string()));
            format!("${}", params.len())
        };
        let mut base = Vec::new();
        if let Some(prefix) = prefix {
            let p = param(prefix, &mut base_params);
            base.push(format!("substr(path, 1, length({p})) = {p}"));
        }
        if let Scope::Only { exact, prefixes } = scope {
            let mut any = Vec::new();
            for path in exact {
                any.push(format!("path = {}", param(path, &mut base_params)));
            }
            for prefix in prefixes {
                let p = param(prefix, &mut base_params);
                any.push(format!("substr(path, 1, length({p})) = {p}"));
            }
            base.push(if any.is_empty() { String::from("1 = 0") } else { format!("({})", any.join(" OR ")) });
        }
        let base = if base.is_empty() { String::from("1 = 1") } else { base.join(" AND ") };
        let b = q.build(base_params.len() + 1);
        let count_sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM secrets WHERE {base} AND {}", b.filter));
        let list_sql = sqlx::AssertSqlSafe(format!(
            "SELECT {SECRET_COLUMNS} FROM secrets WHERE {base} AND {} {} {} {}",
            b.filter, b.keyset, b.order, b.window
        ));
        let (rows, total) = with_db!(&self.db, |pool| {
            let count = nexus_kernel::bind_values!(sqlx::query_scalar(count_sql), &base_params);
            let total: i64 = nexus_kernel::bind_values!(count, &b.filter_params).fetch_one(pool).await?;
            let list = nexus_kernel::bind_values!(sqlx::query_as(list_sql), &base_params);
            let rows: Vec<SecretRow> = nexus_kernel::bind_values!(list, &b.params).fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((rows, total))
        })?;
        Ok(q.finish(rows, Some(total)))
    }

    /// The secret at `path` with `version` (the current one when `None`).
    pub async fn sealed(&self, path: &str, version: Option<i64>) -> Result<Option<SealedRow>, StorageError> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT s.id, s.path, s.metadata, s.version, s.key_id, s.wrapped_key, s.created_at, s.created_by, \
                 s.updated_at, s.updated_by, v.version AS v_version, v.ciphertext AS v_ciphertext, \
                 v.created_at AS v_created_at, v.created_by AS v_created_by \
                 FROM secrets s LEFT JOIN secret_versions v ON v.secret_id = s.id AND v.version = COALESCE($2, s.version) \
                 WHERE s.path = $1",
            )
            .bind(path)
            .bind(version)
            .fetch_optional(pool)
            .await
        })?)
    }

    /// Inserts a secret and its first version, wrapped by `key_id` only while that key is
    /// active, and writes `event` to the outbox, in one transaction.
    pub async fn create(&self, new: &NewSecret<'_>, event: &Event) -> Result<CreateOutcome, StorageError> {
        let r = new.row;
        let result = with_db!(&self.db, |pool| async {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(
                "INSERT INTO secrets (id, path, metadata, version, key_id, wrapped_key, created_at, created_by, \
                 updated_at, updated_by) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 \
                 WHERE EXISTS (SELECT 1 FROM secret_master_keys WHERE id = $5 AND state = 'active')",
            )
            .bind(&r.id)
            .bind(&r.path)
            .bind(&r.metadata)
            .bind(r.version)
            .bind(new.key_id)
            .bind(new.wrapped_key)
            .bind(r.created_at)
            .bind(&r.created_by)
            .bind(r.updated_at)
            .bind(&r.updated_by)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                tx.rollback().await?;
                return Ok::<_, sqlx::Error>(false);
            }
            sqlx::query(
                "INSERT INTO secret_versions (id, secret_id, version, ciphertext, created_at, created_by) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(new.version_id)
            .bind(&r.id)
            .bind(r.version)
            .bind(new.ciphertext)
            .bind(r.created_at)
            .bind(&r.created_by)
            .execute(&mut *tx)
            .await?;
            tx.write_event(event).await?;
            tx.commit().await?;
            Ok(true)
        }
        .await);
        match result.map_err(StorageError::from) {
            Ok(true) => {
                self.outbox.committed();
                Ok(CreateOutcome::Created)
            }
            Ok(false) => Ok(CreateOutcome::StaleKey),
            Err(e) if e.is_unique_violation() => Ok(CreateOutcome::Exists),
            Err(e) => Err(e),
        }
    }

    /// Adds version `expected_version + 1`, if the secret is still at `expected_version`, and
    /// then writes `event` to the outbox, in one transaction.
    pub async fn add_version(&self, v: &NewVersion<'_>, event: &Event) -> Result<bool, StorageError> {
        let next = v.expected_version + 1;
        let result = with_db!(&self.db, |pool| async {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(
                "UPDATE secrets SET version = $1, metadata = $2, updated_at = $3, updated_by = $4 \
                 WHERE id = $5 AND version = $6",
            )
            .bind(next)
            .bind(v.metadata)
            .bind(v.at)
            .bind(v.by)
            .bind(v.secret_id)
            .bind(v.expected_version)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                tx.rollback().await?;
                return Ok::<_, sqlx::Error>(false);
            }
            sqlx::query(
                "INSERT INTO secret_versions (id, secret_id, version, ciphertext, created_at, created_by) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(v.version_id)
            .bind(v.secret_id)
            .bind(next)
            .bind(v.ciphertext)
            .bind(v.at)
            .bind(v.by)
            .execute(&mut *tx)
            .await?;
            tx.write_event(event).await?;
            tx.commit().await?;
            Ok(true)
        }
        .await);
        match result.map_err(StorageError::from) {
            Ok(done) => {
                if done {
                    self.outbox.committed();
                }
                Ok(done)
            }
            // A concurrent writer inserted the same version first.
            Err(e) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes the secret at `path` with all its versions and writes the event `event` makes
    /// of its id to the outbox, in one transaction; its id, if there was one.
    pub async fn delete(
        &self,
        path: &str,
        event: impl FnOnce(&str) -> Event + Send,
    ) -> Result<Option<String>, StorageError> {
        let id = with_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let id: Option<String> = sqlx::query_scalar("DELETE FROM secrets WHERE path = $1 RETURNING id")
                .bind(path)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(id) = &id {
                tx.write_event(&event(id)).await?;
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            Ok::<_, sqlx::Error>(id)
        })?;
        if id.is_some() {
            self.outbox.committed();
        }
        Ok(id)
    }

    /// Writes `rec`, the audit record of a read served from a cached copy, if secret `id` is
    /// still at `version`, in one transaction: whether it was (and the record written). The
    /// check and the record see the same state, so a write that was acknowledged before the
    /// record is never missed.
    pub async fn audit_if_current(&self, rec: &AuditRecord, id: &str, version: i64) -> Result<bool, StorageError> {
        match &self.db {
            Db::Sqlite(pool) => {
                // The write lock first: no writer can commit between the check and the record.
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let current: Option<i32> =
                    sqlx::query_scalar(CURRENT).bind(id).bind(version).fetch_optional(&mut *tx).await?;
                if current.is_none() {
                    // Explicitly: a dropped transaction may keep its lock until the connection
                    // is used again.
                    tx.rollback().await?;
                    return Ok(false);
                }
                tx.write_record(rec).await?;
                tx.commit().await?;
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                // The row stays as checked until the record commits: a writer waits for it.
                let current: Option<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{CURRENT} FOR SHARE")))
                    .bind(id)
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?;
                if current.is_none() {
                    // Explicitly: a dropped transaction may keep its lock until the connection
                    // is used again.
                    tx.rollback().await?;
                    return Ok(false);
                }
                tx.write_record(rec).await?;
                tx.commit().await?;
            }
        }
        Ok(true)
    }

    /// Whether secret `id` is still at `version` (a plain read: concurrent readers share it).
    pub async fn is_current(&self, id: &str, version: i64) -> Result<bool, StorageError> {
        let current: Option<i32> = with_db!(&self.db, |pool| {
            sqlx::query_scalar(CURRENT).bind(id).bind(version).fetch_optional(pool).await
        })?;
        Ok(current.is_some())
    }

    /// The id of the secret at `path`.
    pub async fn id_of(&self, path: &str) -> Result<Option<String>, StorageError> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_scalar("SELECT id FROM secrets WHERE path = $1").bind(path).fetch_optional(pool).await
        })?)
    }

    /// Every version of secret `secret_id`, newest first.
    pub async fn versions(&self, secret_id: &str) -> Result<Vec<VersionRow>, StorageError> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT id, secret_id, version, created_at, created_by FROM secret_versions \
                 WHERE secret_id = $1 ORDER BY version DESC",
            )
            .bind(secret_id)
            .fetch_all(pool)
            .await
        })?)
    }
}
