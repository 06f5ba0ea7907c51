//! SQL of the secrets plugin: secrets, their versions and the master-key ring.
//!
//! [`SecretStore`] is the storage contract; [`SqliteStore`] and [`PostgresStore`] implement it,
//! one per SQL dialect. The SQL both dialects understand is written once (the statements below
//! and the body of `dialect_impl!`); what differs (how a check is held until the audit record
//! that depends on it commits) is given to each dialect's implementation.

use std::sync::Arc;

use futures::future::BoxFuture;
use nexus_kernel::audit::{AuditRecord, AuditTx, Guarded};
use nexus_kernel::db::{Db, StorageError};
use nexus_kernel::events::Event;
use nexus_kernel::outbox::{Outbox, OutboxTx};
use nexus_kernel::query::{Field, Keyed, Kind, ListQuery, Listing, Op, Page, Value};
use sqlx::{PgPool, SqlitePool};

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

type Result<T> = std::result::Result<T, StorageError>;

/// The guard of a cached read's audit record: the secret is still the one read (`guard_key`,
/// its id) at the version read (`guard_version`).
pub const CURRENT: &str =
    "EXISTS (SELECT 1 FROM secrets WHERE secrets.id = guard_key AND secrets.version = guard_version)";

/// A read served from a cached copy of secret `id` at `version`, and its audit record.
#[derive(Debug, Clone)]
pub struct CachedRead {
    pub rec: AuditRecord,
    pub id: String,
    pub version: i64,
}

const SECRET_COLUMNS: &str = "id, path, metadata, version, created_at, created_by, updated_at, updated_by";

const INSERT_MASTER_KEY: &str = "INSERT INTO secret_master_keys (id, check_value, state, created_at) \
    VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING";
const INSERT_FIRST_MASTER_KEY: &str = "INSERT INTO secret_master_keys (id, check_value, state, created_at) \
    SELECT $1, $2, 'active', $3 WHERE NOT EXISTS (SELECT 1 FROM secret_master_keys)";
const REWRAP: &str = "UPDATE secrets SET key_id = $1, wrapped_key = $2 WHERE id = $3 AND key_id = $4";
const SEALED: &str = "SELECT s.id, s.path, s.metadata, s.version, s.key_id, s.wrapped_key, s.created_at, \
    s.created_by, s.updated_at, s.updated_by, v.version AS v_version, v.ciphertext AS v_ciphertext, \
    v.created_at AS v_created_at, v.created_by AS v_created_by \
    FROM secrets s LEFT JOIN secret_versions v ON v.secret_id = s.id AND v.version = COALESCE($2, s.version) \
    WHERE s.path = $1";
/// Inserts a secret only while the master key wrapping its data key is the active one.
const INSERT_SECRET: &str = "INSERT INTO secrets (id, path, metadata, version, key_id, wrapped_key, created_at, \
    created_by, updated_at, updated_by) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 \
    WHERE EXISTS (SELECT 1 FROM secret_master_keys WHERE id = $5 AND state = 'active')";
const INSERT_VERSION: &str = "INSERT INTO secret_versions (id, secret_id, version, ciphertext, created_at, \
    created_by) VALUES ($1, $2, $3, $4, $5, $6)";
const NEXT_VERSION: &str = "UPDATE secrets SET version = $1, metadata = $2, updated_at = $3, updated_by = $4 \
    WHERE id = $5 AND version = $6";
const VERSIONS: &str = "SELECT id, secret_id, version, created_at, created_by FROM secret_versions \
    WHERE secret_id = $1 ORDER BY version DESC";

/// Makes the event of a deleted secret from its id.
pub type DeletedEvent<'a> = &'a (dyn Fn(&str) -> Event + Send + Sync);

/// Storage of the secrets plugin.
pub trait SecretStore: Send + Sync + std::fmt::Debug {
    // ---- master keys ----
    fn master_keys(&self) -> BoxFuture<'_, Result<Vec<MasterKeyRow>>>;
    /// Records a master key; `false` when a key with that id exists already.
    fn insert_master_key<'a>(
        &'a self,
        id: &'a str,
        check: &'a [u8],
        state: &'a str,
        at: i64,
    ) -> BoxFuture<'a, Result<bool>>;
    /// Records the first master key, unless another instance recorded one meanwhile.
    fn insert_first_master_key<'a>(&'a self, id: &'a str, check: &'a [u8], at: i64) -> BoxFuture<'a, Result<bool>>;
    /// The master keys that wrap at least one data key.
    fn key_ids_in_use(&self) -> BoxFuture<'_, Result<Vec<String>>>;
    /// How many data keys are wrapped by a key other than `key_id`.
    fn count_not_wrapped_by<'a>(&'a self, key_id: &'a str) -> BoxFuture<'a, Result<i64>>;
    /// Up to `limit` data keys wrapped by a key other than `key_id`.
    fn not_wrapped_by<'a>(&'a self, key_id: &'a str, limit: i64) -> BoxFuture<'a, Result<Vec<WrappedRow>>>;
    /// Replaces one wrapped data key, if it is still wrapped by `old_key_id`.
    fn rewrap<'a>(
        &'a self,
        id: &'a str,
        old_key_id: &'a str,
        new_key_id: &'a str,
        wrapped: &'a [u8],
    ) -> BoxFuture<'a, Result<bool>>;
    /// Makes `new_id` the active key and retires every other, in one transaction.
    fn activate_master_key<'a>(&'a self, new_id: &'a str) -> BoxFuture<'a, Result<()>>;

    // ---- secrets ----
    /// A page of the secrets under `prefix` (all without one) within `scope`, by the list
    /// request `q` ([`SECRET_LISTING`]). Every value is bound; only declared columns are written.
    fn list_page<'a>(
        &'a self,
        prefix: Option<&'a str>,
        scope: &'a Scope,
        q: &'a ListQuery,
    ) -> BoxFuture<'a, Result<Page<SecretRow>>>;
    /// The secret at `path` with `version` (the current one when `None`).
    fn sealed<'a>(&'a self, path: &'a str, version: Option<i64>) -> BoxFuture<'a, Result<Option<SealedRow>>>;
    /// Inserts a secret and its first version, wrapped by `new.key_id` only while that key is
    /// active, and writes `event` to the outbox, in one transaction.
    fn create<'a>(&'a self, new: &'a NewSecret<'a>, event: &'a Event) -> BoxFuture<'a, Result<CreateOutcome>>;
    /// Adds version `expected_version + 1`, if the secret is still at `expected_version`, and
    /// then writes `event` to the outbox, in one transaction.
    fn add_version<'a>(&'a self, v: &'a NewVersion<'a>, event: &'a Event) -> BoxFuture<'a, Result<bool>>;
    /// Deletes the secret at `path` with all its versions and writes the event `event` makes
    /// of its id to the outbox, in one transaction; its id, if there was one.
    fn delete<'a>(&'a self, path: &'a str, event: DeletedEvent<'a>) -> BoxFuture<'a, Result<Option<String>>>;
    /// A writer of the audit records of reads served from cached copies.
    fn read_auditor(&self) -> Box<dyn ReadAuditor>;
    /// The id of the secret at `path`.
    fn id_of<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Option<String>>>;
    /// Every version of secret `secret_id`, newest first.
    fn versions<'a>(&'a self, secret_id: &'a str) -> BoxFuture<'a, Result<Vec<VersionRow>>>;
}

/// Writes the audit record of each read served from a cached copy whose secret is still at
/// the version read, tested by the statement that inserts the record: a write acknowledged
/// before the record is never missed. One statement serves many reads; a transaction per read
/// (BEGIN IMMEDIATE, check, insert) serialised all cached reads on the write lock (4k reads/s
/// with a 200 ms p99, against 30k), and a transaction per batch still cost five round trips
/// to the connection's thread per batch (a quarter of the reads' throughput).
pub trait ReadAuditor: Send {
    /// For each of `reads`, whether its secret was current (and its record written).
    fn audit<'a>(&'a mut self, reads: &'a [CachedRead]) -> BoxFuture<'a, Result<Vec<bool>>>;
    /// Gives back the connection kept between batches.
    fn release(&mut self);
}

/// The store for `db`'s dialect; `outbox` is told of every event committed.
pub fn open(db: &Db, outbox: Outbox) -> Arc<dyn SecretStore> {
    match db {
        Db::Sqlite(pool) => Arc::new(SqliteStore { pool: pool.clone(), outbox }),
        Db::Postgres(pool) => Arc::new(PostgresStore { pool: pool.clone(), outbox }),
    }
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    outbox: Outbox,
}

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    outbox: Outbox,
}

/// The `WHERE` clause (and its bound values) of a listing under `prefix` within `scope`.
fn list_base(prefix: Option<&str>, scope: &Scope) -> (String, Vec<Value>) {
    let mut params: Vec<Value> = Vec::new();
    let param = |v: &str, params: &mut Vec<Value>| {
        params.push(Value::Text(v.to_string()));
        format!("${}", params.len())
    };
    let mut base = Vec::new();
    if let Some(prefix) = prefix {
        let p = param(prefix, &mut params);
        base.push(format!("substr(path, 1, length({p})) = {p}"));
    }
    if let Scope::Only { exact, prefixes } = scope {
        let mut any = Vec::new();
        for path in exact {
            any.push(format!("path = {}", param(path, &mut params)));
        }
        for prefix in prefixes {
            let p = param(prefix, &mut params);
            any.push(format!("substr(path, 1, length({p})) = {p}"));
        }
        base.push(if any.is_empty() { String::from("1 = 0") } else { format!("({})", any.join(" OR ")) });
    }
    let base = if base.is_empty() { String::from("1 = 1") } else { base.join(" AND ") };
    (base, params)
}

/// A [`ReadAuditor`] on one dialect's pool: it keeps a connection while reads keep coming.
macro_rules! read_auditor {
    ($name:ident, $pool:ty, $conn:ty) => {
        struct $name {
            pool: $pool,
            conn: Option<$conn>,
        }

        impl ReadAuditor for $name {
            fn audit<'a>(&'a mut self, reads: &'a [CachedRead]) -> BoxFuture<'a, Result<Vec<bool>>> {
                Box::pin(async move {
                    let guarded: Vec<Guarded<'_>> =
                        reads.iter().map(|r| Guarded { rec: &r.rec, key: r.id.as_str(), version: r.version }).collect();
                    let conn = match &mut self.conn {
                        Some(conn) => conn,
                        None => self.conn.insert(self.pool.acquire().await?),
                    };
                    let written = conn.write_records_if(&guarded, CURRENT).await;
                    if written.is_err() {
                        // The connection may be what failed; the next batch gets another.
                        self.conn = None;
                    }
                    Ok(written?)
                })
            }

            fn release(&mut self) {
                self.conn = None;
            }
        }
    };
}

read_auditor!(SqliteReadAuditor, SqlitePool, sqlx::pool::PoolConnection<sqlx::Sqlite>);
read_auditor!(PostgresReadAuditor, PgPool, sqlx::pool::PoolConnection<sqlx::Postgres>);

/// The implementation of [`SecretStore`] for one dialect; `$auditor` is its [`ReadAuditor`].
macro_rules! dialect_impl {
    ($store:ty, $auditor:ident) => {
        impl SecretStore for $store {
            fn master_keys(&self) -> BoxFuture<'_, Result<Vec<MasterKeyRow>>> {
                Box::pin(async move {
                    Ok(sqlx::query_as("SELECT id, check_value, state FROM secret_master_keys ORDER BY created_at")
                        .fetch_all(&self.pool)
                        .await?)
                })
            }

            fn insert_master_key<'a>(
                &'a self,
                id: &'a str,
                check: &'a [u8],
                state: &'a str,
                at: i64,
            ) -> BoxFuture<'a, Result<bool>> {
                Box::pin(async move {
                    let r = sqlx::query(INSERT_MASTER_KEY)
                        .bind(id)
                        .bind(check)
                        .bind(state)
                        .bind(at)
                        .execute(&self.pool)
                        .await?;
                    Ok(r.rows_affected() == 1)
                })
            }

            fn insert_first_master_key<'a>(
                &'a self,
                id: &'a str,
                check: &'a [u8],
                at: i64,
            ) -> BoxFuture<'a, Result<bool>> {
                Box::pin(async move {
                    let r =
                        sqlx::query(INSERT_FIRST_MASTER_KEY).bind(id).bind(check).bind(at).execute(&self.pool).await?;
                    Ok(r.rows_affected() == 1)
                })
            }

            fn key_ids_in_use(&self) -> BoxFuture<'_, Result<Vec<String>>> {
                Box::pin(async move {
                    Ok(sqlx::query_scalar("SELECT DISTINCT key_id FROM secrets").fetch_all(&self.pool).await?)
                })
            }

            fn count_not_wrapped_by<'a>(&'a self, key_id: &'a str) -> BoxFuture<'a, Result<i64>> {
                Box::pin(async move {
                    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM secrets WHERE key_id <> $1")
                        .bind(key_id)
                        .fetch_one(&self.pool)
                        .await?)
                })
            }

            fn not_wrapped_by<'a>(&'a self, key_id: &'a str, limit: i64) -> BoxFuture<'a, Result<Vec<WrappedRow>>> {
                Box::pin(async move {
                    Ok(sqlx::query_as(
                        "SELECT id, key_id, wrapped_key FROM secrets WHERE key_id <> $1 ORDER BY id LIMIT $2",
                    )
                    .bind(key_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
                })
            }

            fn rewrap<'a>(
                &'a self,
                id: &'a str,
                old_key_id: &'a str,
                new_key_id: &'a str,
                wrapped: &'a [u8],
            ) -> BoxFuture<'a, Result<bool>> {
                Box::pin(async move {
                    let r = sqlx::query(REWRAP)
                        .bind(new_key_id)
                        .bind(wrapped)
                        .bind(id)
                        .bind(old_key_id)
                        .execute(&self.pool)
                        .await?;
                    Ok(r.rows_affected() == 1)
                })
            }

            fn activate_master_key<'a>(&'a self, new_id: &'a str) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    sqlx::query(
                        "UPDATE secret_master_keys SET state = 'retired' WHERE id <> $1 AND state <> 'retired'",
                    )
                    .bind(new_id)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("UPDATE secret_master_keys SET state = 'active' WHERE id = $1")
                        .bind(new_id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(())
                })
            }

            fn list_page<'a>(
                &'a self,
                prefix: Option<&'a str>,
                scope: &'a Scope,
                q: &'a ListQuery,
            ) -> BoxFuture<'a, Result<Page<SecretRow>>> {
                Box::pin(async move {
                    let (base, base_params) = list_base(prefix, scope);
                    let b = q.build(base_params.len() + 1);
                    let count_sql =
                        sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM secrets WHERE {base} AND {}", b.filter));
                    let list_sql = sqlx::AssertSqlSafe(format!(
                        "SELECT {SECRET_COLUMNS} FROM secrets WHERE {base} AND {} {} {} {}",
                        b.filter, b.keyset, b.order, b.window
                    ));
                    let count = nexus_kernel::bind_values!(sqlx::query_scalar(count_sql), &base_params);
                    let total: i64 = nexus_kernel::bind_values!(count, &b.filter_params).fetch_one(&self.pool).await?;
                    let list = nexus_kernel::bind_values!(sqlx::query_as(list_sql), &base_params);
                    let rows: Vec<SecretRow> =
                        nexus_kernel::bind_values!(list, &b.params).fetch_all(&self.pool).await?;
                    Ok(q.finish(rows, Some(total)))
                })
            }

            fn sealed<'a>(&'a self, path: &'a str, version: Option<i64>) -> BoxFuture<'a, Result<Option<SealedRow>>> {
                Box::pin(async move {
                    Ok(sqlx::query_as(SEALED).bind(path).bind(version).fetch_optional(&self.pool).await?)
                })
            }

            fn create<'a>(&'a self, new: &'a NewSecret<'a>, event: &'a Event) -> BoxFuture<'a, Result<CreateOutcome>> {
                Box::pin(async move {
                    let r = new.row;
                    let result = async {
                        let mut tx = self.pool.begin().await?;
                        let done = sqlx::query(INSERT_SECRET)
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
                            return Ok::<_, StorageError>(false);
                        }
                        sqlx::query(INSERT_VERSION)
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
                    .await;
                    match result {
                        Ok(true) => {
                            self.outbox.committed();
                            Ok(CreateOutcome::Created)
                        }
                        Ok(false) => Ok(CreateOutcome::StaleKey),
                        Err(e) if e.is_unique_violation() => Ok(CreateOutcome::Exists),
                        Err(e) => Err(e),
                    }
                })
            }

            fn add_version<'a>(&'a self, v: &'a NewVersion<'a>, event: &'a Event) -> BoxFuture<'a, Result<bool>> {
                Box::pin(async move {
                    let next = v.expected_version + 1;
                    let result = async {
                        let mut tx = self.pool.begin().await?;
                        let done = sqlx::query(NEXT_VERSION)
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
                            return Ok::<_, StorageError>(false);
                        }
                        sqlx::query(INSERT_VERSION)
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
                    .await;
                    match result {
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
                })
            }

            fn delete<'a>(&'a self, path: &'a str, event: DeletedEvent<'a>) -> BoxFuture<'a, Result<Option<String>>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    let id: Option<String> = sqlx::query_scalar("DELETE FROM secrets WHERE path = $1 RETURNING id")
                        .bind(path)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let Some(id) = id else {
                        tx.rollback().await?;
                        return Ok(None);
                    };
                    tx.write_event(&event(&id)).await?;
                    tx.commit().await?;
                    self.outbox.committed();
                    Ok(Some(id))
                })
            }

            fn read_auditor(&self) -> Box<dyn ReadAuditor> {
                Box::new($auditor { pool: self.pool.clone(), conn: None })
            }

            fn id_of<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
                Box::pin(async move {
                    Ok(sqlx::query_scalar("SELECT id FROM secrets WHERE path = $1")
                        .bind(path)
                        .fetch_optional(&self.pool)
                        .await?)
                })
            }

            fn versions<'a>(&'a self, secret_id: &'a str) -> BoxFuture<'a, Result<Vec<VersionRow>>> {
                Box::pin(async move { Ok(sqlx::query_as(VERSIONS).bind(secret_id).fetch_all(&self.pool).await?) })
            }
        }
    };
}

dialect_impl!(SqliteStore, SqliteReadAuditor);
dialect_impl!(PostgresStore, PostgresReadAuditor);
