//! Where installed plugins and their key-value stores are kept: one row per plugin (the
//! package in effect and the previous one) and one row per key. Both dialects share every
//! statement but the atomic increment.

use nexus_kernel::db::{Db, StorageError};
use nexus_kernel::events::Event;
use nexus_kernel::outbox::{Outbox, OutboxTx as _};

/// An installed plugin as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstalledRow {
    pub id: String,
    pub version: String,
    pub sha256: String,
    pub package: Vec<u8>,
    /// JSON array of capabilities.
    pub grants: String,
    pub installed_at: i64,
    pub previous_version: Option<String>,
    pub previous_sha256: Option<String>,
    pub previous_package: Option<Vec<u8>>,
    pub previous_grants: Option<String>,
}

#[derive(Debug, Clone)]
pub struct WasmStore {
    db: Db,
    outbox: Outbox,
}

const SELECT: &str = "SELECT id, version, sha256, package, grants, installed_at, previous_version, previous_sha256, \
     previous_package, previous_grants FROM nexus_wasm_plugins";

const SELECT_ONE: &str = "SELECT id, version, sha256, package, grants, installed_at, previous_version, \
     previous_sha256, previous_package, previous_grants FROM nexus_wasm_plugins WHERE id = $1";

const UPSERT: &str = "INSERT INTO nexus_wasm_plugins (id, version, sha256, package, grants, installed_at, \
     previous_version, previous_sha256, previous_package, previous_grants) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (id) DO UPDATE SET version = excluded.version, sha256 = excluded.sha256, package = excluded.package, \
     grants = excluded.grants, installed_at = excluded.installed_at, previous_version = excluded.previous_version, \
     previous_sha256 = excluded.previous_sha256, previous_package = excluded.previous_package, \
     previous_grants = excluded.previous_grants";

const SQLITE_INCREMENT: &str = "INSERT INTO nexus_wasm_kv (plugin_id, key, value) VALUES ($1, $2, CAST(CAST($3 AS TEXT) AS BLOB)) \
     ON CONFLICT (plugin_id, key) DO UPDATE SET \
     value = CAST(CAST(CAST(CAST(nexus_wasm_kv.value AS TEXT) AS INTEGER) + $3 AS TEXT) AS BLOB) \
     RETURNING CAST(CAST(value AS TEXT) AS INTEGER)";

const POSTGRES_INCREMENT: &str = "INSERT INTO nexus_wasm_kv (plugin_id, key, value) VALUES ($1, $2, convert_to($3::bigint::text, 'UTF8')) \
     ON CONFLICT (plugin_id, key) DO UPDATE SET \
     value = convert_to((convert_from(nexus_wasm_kv.value, 'UTF8')::bigint + $3)::text, 'UTF8') \
     RETURNING convert_from(value, 'UTF8')::bigint";

/// Runs the same statement on either driver's pool.
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

impl WasmStore {
    pub fn new(db: Db, outbox: Outbox) -> Self {
        Self { db, outbox }
    }

    pub async fn installed(&self) -> Result<Vec<InstalledRow>, StorageError> {
        Ok(on_pool!(&self.db, |pool| sqlx::query_as(SELECT).fetch_all(pool).await?))
    }

    pub async fn get(&self, id: &str) -> Result<Option<InstalledRow>, StorageError> {
        Ok(on_pool!(&self.db, |pool| sqlx::query_as(SELECT_ONE).bind(id).fetch_optional(pool).await?))
    }

    pub async fn save(&self, row: &InstalledRow) -> Result<(), StorageError> {
        on_pool!(&self.db, |pool| {
            sqlx::query(UPSERT)
                .bind(&row.id)
                .bind(&row.version)
                .bind(&row.sha256)
                .bind(&row.package)
                .bind(&row.grants)
                .bind(row.installed_at)
                .bind(&row.previous_version)
                .bind(&row.previous_sha256)
                .bind(&row.previous_package)
                .bind(&row.previous_grants)
                .execute(pool)
                .await
                .map(|_| ())?
        });
        Ok(())
    }

    /// Removes plugin `id`, and its key-value store when `purge`.
    pub async fn remove(&self, id: &str, purge: bool) -> Result<(), StorageError> {
        on_pool!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM nexus_wasm_plugins WHERE id = $1").bind(id).execute(&mut *tx).await?;
            if purge {
                sqlx::query("DELETE FROM nexus_wasm_kv WHERE plugin_id = $1").bind(id).execute(&mut *tx).await?;
            }
            tx.commit().await?
        });
        Ok(())
    }

    pub async fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(on_pool!(&self.db, |pool| {
            sqlx::query_scalar("SELECT value FROM nexus_wasm_kv WHERE plugin_id = $1 AND key = $2")
                .bind(plugin)
                .bind(key)
                .fetch_optional(pool)
                .await?
        }))
    }

    pub async fn kv_set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<(), StorageError> {
        on_pool!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO nexus_wasm_kv (plugin_id, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (plugin_id, key) DO UPDATE SET value = excluded.value",
            )
            .bind(plugin)
            .bind(key)
            .bind(value)
            .execute(pool)
            .await
            .map(|_| ())?
        });
        Ok(())
    }

    pub async fn kv_delete(&self, plugin: &str, key: &str) -> Result<bool, StorageError> {
        let done = on_pool!(&self.db, |pool| {
            sqlx::query("DELETE FROM nexus_wasm_kv WHERE plugin_id = $1 AND key = $2")
                .bind(plugin)
                .bind(key)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done > 0)
    }

    /// Adds `delta` to the integer at `key` (0 when absent) in one statement; the new value.
    pub async fn kv_increment(&self, plugin: &str, key: &str, delta: i64) -> Result<i64, StorageError> {
        Ok(match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_scalar(SQLITE_INCREMENT).bind(plugin).bind(key).bind(delta).fetch_one(pool).await?
            }
            Db::Postgres(pool) => {
                sqlx::query_scalar(POSTGRES_INCREMENT).bind(plugin).bind(key).bind(delta).fetch_one(pool).await?
            }
        })
    }

    pub async fn kv_keys(&self, plugin: &str, prefix: &str, limit: u32) -> Result<Vec<String>, StorageError> {
        Ok(on_pool!(&self.db, |pool| {
            sqlx::query_scalar(
                "SELECT key FROM nexus_wasm_kv WHERE plugin_id = $1 AND substr(key, 1, length($2)) = $2 \
                 ORDER BY key LIMIT $3",
            )
            .bind(plugin)
            .bind(prefix)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        }))
    }

    /// Writes `event` to the outbox, from which it reaches the bus (WebSocket subscribers) and
    /// the durable consumers (webhooks).
    pub async fn publish(&self, event: &Event) -> Result<(), StorageError> {
        on_pool!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            tx.write_event(event).await?;
            tx.commit().await?
        });
        self.outbox.committed();
        Ok(())
    }
}
