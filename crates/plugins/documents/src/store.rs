//! Storage of collections, documents and indexes: one table for every collection's documents
//! (`documents`: collection, id, doc as JSON text on SQLite / `jsonb` on PostgreSQL,
//! timestamps), collection metadata and index definitions. The only SQL of the plugin.

use nexus_kernel::db::{Db, StorageError};
use serde_json::Value;

use crate::sql::{Builder, Dialect, Param};

/// Binds `params` in order to a query of either backend.
macro_rules! bound {
    ($q:expr, $params:expr) => {{
        let mut q = $q;
        for p in $params {
            q = match p {
                Param::Text(s) => q.bind(s.clone()),
                Param::Int(i) => q.bind(*i),
                Param::Float(f) => q.bind(*f),
                Param::Json(s) => q.bind(s.clone()),
            };
        }
        q
    }};
}

/// One transaction on whichever backend is configured.
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tx")
    }
}

macro_rules! on_tx {
    ($tx:expr, |$c:ident| $body:expr) => {
        match $tx {
            Tx::Sqlite(t) => {
                let $c = &mut **t;
                $body
            }
            Tx::Postgres(t) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}

impl Tx {
    pub async fn commit(self) -> Result<(), StorageError> {
        match self {
            Tx::Sqlite(t) => t.commit().await?,
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct CollectionRow {
    pub name: String,
    pub schema: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct IndexRow {
    pub name: String,
    pub keys: String,
    pub unique: bool,
    pub multikey: bool,
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("duplicate key")]
    Duplicate,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn write_err(e: sqlx::Error) -> WriteError {
    let e = StorageError::from(e);
    if e.is_unique_violation() { WriteError::Duplicate } else { WriteError::Storage(e) }
}

#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

/// The most rows a `LIMIT` or `OFFSET` can name (a signed 64-bit integer on both backends).
const SQL_MAX_ROWS: u64 = i64::MAX.unsigned_abs();

/// A quoted identifier made from validated parts (`[A-Za-z0-9_-]`).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', ""))
}

impl Store {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub fn dialect(&self) -> Dialect {
        match self.db {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    fn doc_param(&self, n: usize) -> String {
        match self.dialect() {
            Dialect::Sqlite => format!("${n}"),
            Dialect::Postgres => format!("${n}::jsonb"),
        }
    }

    fn doc_col(&self) -> &'static str {
        match self.dialect() {
            Dialect::Sqlite => "doc",
            Dialect::Postgres => "doc::text",
        }
    }

    pub async fn begin(&self) -> Result<Tx, StorageError> {
        Ok(match &self.db {
            // IMMEDIATE: these transactions read and then write. A deferred one that read
            // first could not take the write lock after another connection committed
            // (`SQLITE_BUSY_SNAPSHOT`, at once, without waiting).
            Db::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            Db::Postgres(p) => Tx::Postgres(p.begin().await?),
        })
    }

    pub async fn get_collection(&self, name: &str) -> Result<Option<CollectionRow>, StorageError> {
        let sql = "SELECT name, schema, created_at FROM document_collections WHERE name = $1";
        let row: Option<(String, Option<String>, i64)> =
            nexus_kernel::with_db!(&self.db, |pool| sqlx::query_as(sql).bind(name).fetch_optional(pool).await)?;
        Ok(row.map(|(name, schema, created_at)| CollectionRow { name, schema, created_at }))
    }

    /// [`Store::get_collection`] inside `tx`: a transaction that has written holds SQLite's
    /// write lock, and a read on another connection could wait for a pooled connection that a
    /// writer waiting on that lock holds.
    pub async fn get_collection_in(&self, tx: &mut Tx, name: &str) -> Result<Option<CollectionRow>, StorageError> {
        let sql = "SELECT name, schema, created_at FROM document_collections WHERE name = $1";
        let row: Option<(String, Option<String>, i64)> =
            on_tx!(tx, |c| sqlx::query_as(sql).bind(name).fetch_optional(c).await)?;
        Ok(row.map(|(name, schema, created_at)| CollectionRow { name, schema, created_at }))
    }

    pub async fn list_collections(&self) -> Result<Vec<(CollectionRow, i64)>, StorageError> {
        let sql = "SELECT c.name, c.schema, c.created_at, \
                   (SELECT count(*) FROM documents d WHERE d.collection = c.name) \
                   FROM document_collections c ORDER BY c.name";
        let rows: Vec<(String, Option<String>, i64, i64)> =
            nexus_kernel::with_db!(&self.db, |pool| sqlx::query_as(sql).fetch_all(pool).await)?;
        Ok(rows
            .into_iter()
            .map(|(name, schema, created_at, n)| (CollectionRow { name, schema, created_at }, n))
            .collect())
    }

    /// Creates the collection unless it exists; `true` when it was created.
    pub async fn create_collection(
        &self,
        tx: &mut Tx,
        name: &str,
        schema: Option<&str>,
        now: i64,
    ) -> Result<bool, StorageError> {
        let sql = "INSERT INTO document_collections (name, schema, created_at) VALUES ($1, $2, $3) \
                   ON CONFLICT (name) DO NOTHING";
        let r = on_tx!(tx, |c| sqlx::query(sql).bind(name).bind(schema).bind(now).execute(c).await?.rows_affected());
        Ok(r == 1)
    }

    pub async fn drop_collection(&self, name: &str) -> Result<bool, StorageError> {
        let mut tx = self.begin().await?;
        for idx in self.list_indexes_in(&mut tx, name).await? {
            let sql = format!("DROP INDEX IF EXISTS {}", ident(&idx.name));
            on_tx!(&mut tx, |c| sqlx::query(sqlx::AssertSqlSafe(sql)).execute(c).await.map(|_| ()))?;
        }
        on_tx!(&mut tx, |c| sqlx::query("DELETE FROM documents WHERE collection = $1")
            .bind(name)
            .execute(c)
            .await
            .map(|_| ()))?;
        on_tx!(&mut tx, |c| sqlx::query("DELETE FROM document_indexes WHERE collection = $1")
            .bind(name)
            .execute(c)
            .await
            .map(|_| ()))?;
        let n = on_tx!(&mut tx, |c| sqlx::query("DELETE FROM document_collections WHERE name = $1")
            .bind(name)
            .execute(c)
            .await?
            .rows_affected());
        tx.commit().await?;
        Ok(n == 1)
    }

    pub async fn list_indexes(&self, collection: &str) -> Result<Vec<IndexRow>, StorageError> {
        let sql = "SELECT name, keys, is_unique, multikey FROM document_indexes WHERE collection = $1 ORDER BY name";
        let rows: Vec<(String, String, bool, bool)> =
            nexus_kernel::with_db!(&self.db, |pool| sqlx::query_as(sql).bind(collection).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(|(name, keys, unique, multikey)| IndexRow { name, keys, unique, multikey }).collect())
    }

    /// [`Store::list_indexes`] inside `tx` (see [`Store::get_collection_in`]).
    pub async fn list_indexes_in(&self, tx: &mut Tx, collection: &str) -> Result<Vec<IndexRow>, StorageError> {
        let sql = "SELECT name, keys, is_unique, multikey FROM document_indexes WHERE collection = $1 ORDER BY name";
        let rows: Vec<(String, String, bool, bool)> =
            on_tx!(tx, |c| sqlx::query_as(sql).bind(collection).fetch_all(c).await)?;
        Ok(rows.into_iter().map(|(name, keys, unique, multikey)| IndexRow { name, keys, unique, multikey }).collect())
    }

    /// Marks an index multikey, in the transaction of the write that put an array on its path.
    pub async fn set_multikey(&self, tx: &mut Tx, collection: &str, name: &str) -> Result<(), StorageError> {
        let sql = "UPDATE document_indexes SET multikey = TRUE WHERE collection = $1 AND name = $2";
        on_tx!(tx, |c| sqlx::query(sql).bind(collection).bind(name).execute(c).await.map(|_| ()))?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    /// Creates an expression index over `exprs` (from [`Builder::index_expr`]), partial on the
    /// collection. A unique index that existing documents violate fails with `Duplicate`.
    pub async fn create_index(
        &self,
        collection: &str,
        name: &str,
        exprs: &[String],
        keys: &str,
        unique: bool,
        now: i64,
        array_probe: &str,
    ) -> Result<bool, WriteError> {
        let mut tx = self.begin().await?;
        // Whether existing documents already hold arrays on the path (the multikey flag).
        let probe =
            format!("SELECT count(*) FROM documents WHERE {} AND ({array_probe})", Builder::collection(collection));
        let (arrays,): (i64,) =
            on_tx!(&mut tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(probe)).fetch_one(c).await.map_err(write_err))?;
        let sql = "INSERT INTO document_indexes (collection, name, keys, is_unique, created_at, multikey) \
                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (collection, name) DO NOTHING";
        let created = on_tx!(&mut tx, |c| sqlx::query(sql)
            .bind(collection)
            .bind(name)
            .bind(keys)
            .bind(unique)
            .bind(now)
            .bind(arrays > 0)
            .execute(c)
            .await
            .map_err(write_err)?
            .rows_affected());
        if created == 0 {
            return Ok(false);
        }
        // Identifiers and the collection literal come from validated names only.
        let ddl = format!(
            "CREATE {}INDEX {} ON documents (collection, {}) WHERE {}",
            if unique { "UNIQUE " } else { "" },
            ident(name),
            exprs.join(", "),
            Builder::collection(collection)
        );
        on_tx!(&mut tx, |c| sqlx::query(sqlx::AssertSqlSafe(ddl)).execute(c).await.map(|_| ()).map_err(write_err))?;
        tx.commit().await?;
        Ok(true)
    }

    /// `(id, document)` rows for `SELECT … WHERE {where_sql} ORDER BY {order} LIMIT/OFFSET`.
    pub async fn select(
        &self,
        where_sql: &str,
        params: &[Param],
        order: &str,
        limit: Option<u64>,
        offset: u64,
    ) -> Result<Vec<Value>, StorageError> {
        let mut sql = format!("SELECT {} FROM documents WHERE {where_sql} ORDER BY {order}", self.doc_col());
        // SQL counts rows in a signed 64-bit integer; more than that many is all of them.
        let (limit, offset) = (limit.map(|n| n.min(SQL_MAX_ROWS)), offset.min(SQL_MAX_ROWS));
        if let Some(n) = limit {
            sql.push_str(&format!(" LIMIT {n}"));
        } else if offset > 0 {
            sql.push_str(match self.dialect() {
                Dialect::Sqlite => " LIMIT -1",
                Dialect::Postgres => " LIMIT ALL",
            });
        }
        if offset > 0 {
            sql.push_str(&format!(" OFFSET {offset}"));
        }
        let rows: Vec<(String,)> =
            nexus_kernel::with_db!(&self.db, |pool| bound!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), params)
                .fetch_all(pool)
                .await)?;
        Ok(rows.into_iter().filter_map(|(d,)| serde_json::from_str(&d).ok()).collect())
    }

    /// Same as [`Store::select`] inside a transaction (for updates and deletes).
    pub async fn select_tx(
        &self,
        tx: &mut Tx,
        where_sql: &str,
        params: &[Param],
        limit: Option<u64>,
    ) -> Result<Vec<Value>, StorageError> {
        let mut sql = format!("SELECT {} FROM documents WHERE {where_sql} ORDER BY id", self.doc_col());
        if let Some(n) = limit.map(|n| n.min(SQL_MAX_ROWS)) {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        let rows: Vec<(String,)> =
            on_tx!(tx, |c| bound!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), params).fetch_all(c).await)?;
        Ok(rows.into_iter().filter_map(|(d,)| serde_json::from_str(&d).ok()).collect())
    }

    pub async fn scalar(&self, sql: String, params: &[Param]) -> Result<i64, StorageError> {
        let (n,): (i64,) =
            nexus_kernel::with_db!(&self.db, |pool| bound!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), params)
                .fetch_one(pool)
                .await)?;
        Ok(n)
    }

    /// Rows of text columns (group results, `EXPLAIN` output).
    pub async fn text_rows(
        &self,
        sql: String,
        params: &[Param],
        columns: usize,
    ) -> Result<Vec<Vec<Option<String>>>, StorageError> {
        use sqlx::Row;
        nexus_kernel::with_db!(&self.db, |pool| {
            let rows = bound!(sqlx::query(sqlx::AssertSqlSafe(sql)), params).fetch_all(pool).await?;
            Ok(rows
                .iter()
                .map(|r| (0..columns).map(|i| r.try_get::<Option<String>, _>(i).ok().flatten()).collect())
                .collect())
        })
    }

    pub async fn insert(&self, tx: &mut Tx, collection: &str, id: &str, doc: &str, now: i64) -> Result<(), WriteError> {
        let sql = format!(
            "INSERT INTO documents (collection, id, doc, created_at, updated_at) VALUES ($1, $2, {}, $4, $4)",
            self.doc_param(3)
        );
        on_tx!(tx, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(collection)
            .bind(id)
            .bind(doc)
            .bind(now)
            .execute(c)
            .await
            .map(|_| ())
            .map_err(write_err))?;
        Ok(())
    }

    pub async fn replace(
        &self,
        tx: &mut Tx,
        collection: &str,
        id: &str,
        doc: &str,
        now: i64,
    ) -> Result<bool, WriteError> {
        let sql = format!(
            "UPDATE documents SET doc = {}, updated_at = $4 WHERE collection = $1 AND id = $2",
            self.doc_param(3)
        );
        let n = on_tx!(tx, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(collection)
            .bind(id)
            .bind(doc)
            .bind(now)
            .execute(c)
            .await
            .map_err(write_err)?
            .rows_affected());
        Ok(n == 1)
    }

    pub async fn delete(&self, tx: &mut Tx, collection: &str, id: &str) -> Result<bool, StorageError> {
        let sql = "DELETE FROM documents WHERE collection = $1 AND id = $2";
        let n = on_tx!(tx, |c| sqlx::query(sql).bind(collection).bind(id).execute(c).await?.rows_affected());
        Ok(n == 1)
    }
}
