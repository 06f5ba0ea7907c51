//! Storage of collections, documents and indexes: one table for every collection's documents
//! (`documents`: collection, id, doc as JSON text on SQLite / `jsonb` on PostgreSQL,
//! timestamps), collection metadata and index definitions. The only SQL of the plugin.

use std::sync::Arc;

use futures::future::BoxFuture;
use nexus_kernel::db::{Db, SqlParam, SqliteReaders, StorageError};
use nexus_kernel::events::EventBatch;
use nexus_kernel::outbox::OutboxTx;
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
    /// With the turn at SQLite's write lock ([`SqliteStore::gate`]), held until it ends.
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>, tokio::sync::OwnedMutexGuard<()>),
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
            Tx::Sqlite(t, _) => {
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
            Tx::Sqlite(t, _) => t.commit().await?,
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
    /// Whether some document holds a boolean or an object on a key path.
    pub mixed: bool,
}

/// SQL conditions true for a document that would turn an index's flags on (from
/// [`Builder::array_probe`] and [`Builder::mixed_probe`]).
#[derive(Debug, Clone)]
pub struct ShapeProbes {
    pub arrays: String,
    pub mixed: String,
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

/// A quoted identifier made from validated parts (`[A-Za-z0-9_-]`).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', ""))
}

type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The storage of the document database.
pub trait DocumentStore: Send + Sync + std::fmt::Debug {
    /// The SQL dialect the queries built for this store must use.
    fn dialect(&self) -> Dialect;
    /// Writes `events` to the outbox inside `tx`, the transaction of the change they describe.
    fn write_events<'a>(&'a self, tx: &'a mut Tx, events: &'a EventBatch) -> BoxFuture<'a, Result<()>>;
    fn begin<'a>(&'a self) -> BoxFuture<'a, Result<Tx>>;
    fn get_collection<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<CollectionRow>>>;
    /// [`Store::get_collection`] inside `tx`: a transaction that has written holds SQLite's
    /// write lock, and a read on another connection could wait for a pooled connection that a
    /// writer waiting on that lock holds.
    fn get_collection_in<'a>(&'a self, tx: &'a mut Tx, name: &'a str) -> BoxFuture<'a, Result<Option<CollectionRow>>>;
    fn list_collections<'a>(&'a self) -> BoxFuture<'a, Result<Vec<(CollectionRow, i64)>>>;
    /// Creates the collection unless it exists; `true` when it was created.
    fn create_collection<'a>(
        &'a self,
        tx: &'a mut Tx,
        name: &'a str,
        schema: Option<&'a str>,
        now: i64,
    ) -> BoxFuture<'a, Result<bool>>;
    fn drop_collection<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool>>;
    fn list_indexes<'a>(&'a self, collection: &'a str) -> BoxFuture<'a, Result<Vec<IndexRow>>>;
    /// [`Store::list_indexes`] inside `tx` (see [`Store::get_collection_in`]).
    fn list_indexes_in<'a>(&'a self, tx: &'a mut Tx, collection: &'a str) -> BoxFuture<'a, Result<Vec<IndexRow>>>;
    /// Marks an index multikey, in the transaction of the write that put an array on its path.
    fn set_multikey<'a>(&'a self, tx: &'a mut Tx, collection: &'a str, name: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Marks an index mixed, in the transaction of the write that put a boolean or an object
    /// on its path.
    fn set_mixed<'a>(&'a self, tx: &'a mut Tx, collection: &'a str, name: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Creates an expression index over `exprs` (from [`Builder::index_expr`]), partial on the
    /// collection. A unique index that existing documents violate fails with `Duplicate`.
    #[allow(clippy::too_many_arguments)]
    fn create_index<'a>(
        &'a self,
        collection: &'a str,
        name: &'a str,
        exprs: &'a [String],
        keys: &'a str,
        unique: bool,
        now: i64,
        probes: &'a ShapeProbes,
    ) -> BoxFuture<'a, Result<bool, WriteError>>;
    /// `(id, document)` rows for `SELECT … WHERE {where_sql} ORDER BY {order} LIMIT/OFFSET`.
    fn select<'a>(
        &'a self,
        where_sql: &'a str,
        params: &'a [Param],
        order: &'a str,
        limit: Option<u64>,
        offset: u64,
    ) -> BoxFuture<'a, Result<Vec<Value>>>;
    /// Same as [`Store::select`] inside a transaction (for updates and deletes).
    fn select_tx<'a>(
        &'a self,
        tx: &'a mut Tx,
        where_sql: &'a str,
        params: &'a [Param],
        limit: Option<u64>,
    ) -> BoxFuture<'a, Result<Vec<Value>>>;
    fn scalar<'a>(&'a self, sql: String, params: &'a [Param]) -> BoxFuture<'a, Result<i64>>;
    /// `SELECT (<collection's index fingerprint>), (<payload>)`: a read, and the index flags
    /// as they were in the same snapshot, so that the caller can tell whether it compiled
    /// `payload` against flags that still hold ([`crate::sql::index_fingerprint`]).
    fn read_checked<'a>(
        &'a self,
        collection: &'a str,
        payload: &'a str,
        params: &'a [Param],
    ) -> BoxFuture<'a, Result<(String, Option<String>)>>;
    /// Rows of text columns (group results, `EXPLAIN` output).
    fn text_rows<'a>(
        &'a self,
        sql: String,
        params: &'a [Param],
        columns: usize,
    ) -> BoxFuture<'a, Result<Vec<Vec<Option<String>>>>>;
    fn insert<'a>(
        &'a self,
        tx: &'a mut Tx,
        collection: &'a str,
        id: &'a str,
        doc: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<(), WriteError>>;
    /// Inserts `rows` (`_id`, JSON text) in one statement, all or none: on a duplicate key
    /// nothing of them stays written and the transaction goes on (a savepoint), so that the
    /// caller can find which one it was.
    fn insert_rows<'a>(
        &'a self,
        tx: &'a mut Tx,
        collection: &'a str,
        rows: &'a [(String, String)],
        now: i64,
    ) -> BoxFuture<'a, Result<(), WriteError>>;
    fn replace<'a>(
        &'a self,
        tx: &'a mut Tx,
        collection: &'a str,
        id: &'a str,
        doc: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<bool, WriteError>>;
    fn delete<'a>(&'a self, tx: &'a mut Tx, collection: &'a str, id: &'a str) -> BoxFuture<'a, Result<bool>>;
}

/// The store for `db`'s dialect.
pub fn open(db: &Db) -> Arc<dyn DocumentStore> {
    match db {
        Db::Sqlite(pool) => Arc::new(SqliteStore {
            pool: pool.clone(),
            gate: Arc::default(),
            readers: Arc::new(SqliteReaders::new(pool, READERS)),
        }),
        Db::Postgres(pool) => Arc::new(PostgresStore { pool: pool.clone() }),
    }
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: sqlx::SqlitePool,
    /// Writers queue here for SQLite's one write lock, in order, instead of all taking a pool
    /// connection and retrying `BEGIN IMMEDIATE` in SQLite's busy handler, whose sleeps grow
    /// to 100 ms: under many concurrent writers that backoff, not the writing, set the pace,
    /// and a writer could wait out the busy timeout.
    gate: Arc<tokio::sync::Mutex<()>>,
    /// Finds, counts and lookups run here, not on the pool (see [`SqliteReaders`]).
    readers: Arc<SqliteReaders>,
}

/// SQLite readers: as many as the machine reads in parallel, with room for one waiting.
const READERS: usize = 4;

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: sqlx::PgPool,
}

type Pair = (Option<String>, Option<String>);

impl SqliteStore {
    /// One row of two text columns, on a reader.
    async fn pair(&self, sql: String, params: &[Param]) -> Result<Pair> {
        let params: Vec<SqlParam> = params
            .iter()
            .map(|p| match p {
                Param::Text(s) | Param::Json(s) => SqlParam::Text(s.clone()),
                Param::Int(i) => SqlParam::Int(*i),
                Param::Float(f) => SqlParam::Real(*f),
            })
            .collect();
        self.readers.text_pair(&sql, &params).await
    }
}

impl PostgresStore {
    /// One row of two text columns.
    async fn pair(&self, sql: String, params: &[Param]) -> Result<Pair> {
        Ok(bound!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), params).fetch_one(&self.pool).await?)
    }
}

/// The document column as a parameter (`$n`): JSON text on SQLite, `jsonb` on PostgreSQL.
fn doc_param(dialect: Dialect, n: usize) -> String {
    match dialect {
        Dialect::Sqlite => format!("${n}"),
        Dialect::Postgres => format!("${n}::jsonb"),
    }
}

/// The document column read as JSON text.
fn doc_col(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "doc",
        Dialect::Postgres => "doc::text",
    }
}

// IMMEDIATE: these transactions read and then write. A deferred one that read first could not
// take the write lock after another connection committed (`SQLITE_BUSY_SNAPSHOT`, at once,
// without waiting).
async fn begin_sqlite(store: &SqliteStore) -> Result<Tx> {
    let turn = store.gate.clone().lock_owned().await;
    Ok(Tx::Sqlite(store.pool.begin_with("BEGIN IMMEDIATE").await?, turn))
}

async fn begin_postgres(store: &PostgresStore) -> Result<Tx> {
    Ok(Tx::Postgres(store.pool.begin().await?))
}

/// The implementation of [`DocumentStore`] for one dialect: the SQL differs only where the
/// builder (`crate::sql`) and the helpers above make it differ.
macro_rules! dialect_impl {
    ($store:ty, $dialect:expr, $begin:path) => {
        impl DocumentStore for $store {
            fn dialect(&self) -> Dialect {
                $dialect
            }

            fn write_events<'a>(&'a self, tx: &'a mut Tx, events: &'a EventBatch) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
                    on_tx!(tx, |c| c.write_batch(events).await)?;
                    Ok(())
                })
            }

            fn begin<'a>(&'a self) -> BoxFuture<'a, Result<Tx>> {
                Box::pin($begin(self))
            }

            fn get_collection<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<CollectionRow>, StorageError>> {
                Box::pin(async move {
        let sql = "SELECT name, schema, created_at FROM document_collections WHERE name = $1";
        let row: Option<(String, Option<String>, i64)> =
            { let pool = &self.pool; sqlx::query_as(sql).bind(name).fetch_optional(pool).await }?;
        Ok(row.map(|(name, schema, created_at)| CollectionRow { name, schema, created_at }))
    })
            }

            fn get_collection_in<'a>(&'a self, tx: &'a mut Tx, name: &'a str) -> BoxFuture<'a, Result<Option<CollectionRow>, StorageError>> {
                Box::pin(async move {
        let sql = "SELECT name, schema, created_at FROM document_collections WHERE name = $1";
        let row: Option<(String, Option<String>, i64)> =
            on_tx!(tx, |c| sqlx::query_as(sql).bind(name).fetch_optional(c).await)?;
        Ok(row.map(|(name, schema, created_at)| CollectionRow { name, schema, created_at }))
    })
            }

            fn list_collections<'a>(&'a self) -> BoxFuture<'a, Result<Vec<(CollectionRow, i64)>, StorageError>> {
                Box::pin(async move {
        let sql = "SELECT c.name, c.schema, c.created_at, \
                   (SELECT count(*) FROM documents d WHERE d.collection = c.name) \
                   FROM document_collections c ORDER BY c.name";
        let rows: Vec<(String, Option<String>, i64, i64)> =
            { let pool = &self.pool; sqlx::query_as(sql).fetch_all(pool).await }?;
        Ok(rows
            .into_iter()
            .map(|(name, schema, created_at, n)| (CollectionRow { name, schema, created_at }, n))
            .collect())
    })
            }

            fn create_collection<'a>(&'a self, tx: &'a mut Tx, name: &'a str, schema: Option<&'a str>, now: i64) -> BoxFuture<'a, Result<bool, StorageError>> {
                Box::pin(async move {
        let sql = "INSERT INTO document_collections (name, schema, created_at) VALUES ($1, $2, $3) \
                   ON CONFLICT (name) DO NOTHING";
        let r = on_tx!(tx, |c| sqlx::query(sql).bind(name).bind(schema).bind(now).execute(c).await?.rows_affected());
        Ok(r == 1)
    })
            }

            fn drop_collection<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StorageError>> {
                Box::pin(async move {
        let mut tx = DocumentStore::begin(self).await?;
        for idx in DocumentStore::list_indexes_in(self, &mut tx, name).await? {
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
    })
            }

            fn list_indexes<'a>(&'a self, collection: &'a str) -> BoxFuture<'a, Result<Vec<IndexRow>, StorageError>> {
                Box::pin(async move {
        let sql = "SELECT name, keys, is_unique, multikey, mixed FROM document_indexes WHERE collection = $1 ORDER BY name";
        let rows: Vec<(String, String, bool, bool, bool)> =
            { let pool = &self.pool; sqlx::query_as(sql).bind(collection).fetch_all(pool).await }?;
        Ok(rows.into_iter().map(|(name, keys, unique, multikey, mixed)| IndexRow { name, keys, unique, multikey, mixed }).collect())
    })
            }

            fn list_indexes_in<'a>(&'a self, tx: &'a mut Tx, collection: &'a str) -> BoxFuture<'a, Result<Vec<IndexRow>, StorageError>> {
                Box::pin(async move {
        let sql = "SELECT name, keys, is_unique, multikey, mixed FROM document_indexes WHERE collection = $1 ORDER BY name";
        let rows: Vec<(String, String, bool, bool, bool)> =
            on_tx!(tx, |c| sqlx::query_as(sql).bind(collection).fetch_all(c).await)?;
        Ok(rows.into_iter().map(|(name, keys, unique, multikey, mixed)| IndexRow { name, keys, unique, multikey, mixed }).collect())
    })
            }

            fn set_multikey<'a>(&'a self, tx: &'a mut Tx, collection: &'a str, name: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
                Box::pin(async move {
        let sql = "UPDATE document_indexes SET multikey = TRUE WHERE collection = $1 AND name = $2";
        on_tx!(tx, |c| sqlx::query(sql).bind(collection).bind(name).execute(c).await.map(|_| ()))?;
        Ok(())
    })
            }

            fn set_mixed<'a>(&'a self, tx: &'a mut Tx, collection: &'a str, name: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
                Box::pin(async move {
        let sql = "UPDATE document_indexes SET mixed = TRUE WHERE collection = $1 AND name = $2";
        on_tx!(tx, |c| sqlx::query(sql).bind(collection).bind(name).execute(c).await.map(|_| ()))?;
        Ok(())
    })
            }

    #[allow(clippy::too_many_arguments)]
            fn create_index<'a>(&'a self, collection: &'a str, name: &'a str, exprs: &'a [String], keys: &'a str, unique: bool, now: i64, probes: &'a ShapeProbes) -> BoxFuture<'a, Result<bool, WriteError>> {
                Box::pin(async move {
        let mut tx = DocumentStore::begin(self).await?;
        // Whether existing documents already hold arrays (the multikey flag), booleans or
        // objects (the mixed flag) on the paths.
        let probe = format!(
            "SELECT count(CASE WHEN {} THEN 1 END), count(CASE WHEN {} THEN 1 END) FROM documents WHERE {}",
            probes.arrays,
            probes.mixed,
            Builder::collection(collection)
        );
        let (arrays, mixed): (i64, i64) =
            on_tx!(&mut tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(probe)).fetch_one(c).await.map_err(write_err))?;
        let sql = "INSERT INTO document_indexes (collection, name, keys, is_unique, created_at, multikey, mixed) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (collection, name) DO NOTHING";
        let created = on_tx!(&mut tx, |c| sqlx::query(sql)
            .bind(collection)
            .bind(name)
            .bind(keys)
            .bind(unique)
            .bind(now)
            .bind(arrays > 0)
            .bind(mixed > 0)
            .execute(c)
            .await
            .map_err(write_err)?
            .rows_affected());
        if created == 0 {
            return Ok(false);
        }
        // Identifiers and the collection literal come from validated names only. A plain
        // index ends in `id`, the tie-break of every sort (`Builder::tie_break`), so that it
        // serves a sort on its keys whole; a unique one cannot (it would make every entry
        // unique) and needs no tie-break.
        let ddl = format!(
            "CREATE {}INDEX {} ON documents (collection, {}{}) WHERE {}",
            if unique { "UNIQUE " } else { "" },
            ident(name),
            exprs.join(", "),
            if unique { "" } else { ", id" },
            Builder::collection(collection)
        );
        on_tx!(&mut tx, |c| sqlx::query(sqlx::AssertSqlSafe(ddl)).execute(c).await.map(|_| ()).map_err(write_err))?;
        tx.commit().await?;
        Ok(true)
    })
            }

            fn select<'a>(&'a self, where_sql: &'a str, params: &'a [Param], order: &'a str, limit: Option<u64>, offset: u64) -> BoxFuture<'a, Result<Vec<Value>, StorageError>> {
                Box::pin(async move {
        let sql = format!(
            "SELECT {} FROM documents WHERE {where_sql} ORDER BY {order}{}",
            doc_col($dialect),
            crate::sql::paging($dialect, limit, offset)
        );
        let rows: Vec<(String,)> =
            { let pool = &self.pool; bound!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), params)
                .fetch_all(pool)
                .await }?;
        Ok(rows.into_iter().filter_map(|(d,)| serde_json::from_str(&d).ok()).collect())
    })
            }

            fn select_tx<'a>(&'a self, tx: &'a mut Tx, where_sql: &'a str, params: &'a [Param], limit: Option<u64>) -> BoxFuture<'a, Result<Vec<Value>, StorageError>> {
                Box::pin(async move {
        let sql = format!(
            "SELECT {} FROM documents WHERE {where_sql} ORDER BY id{}",
            doc_col($dialect),
            crate::sql::paging($dialect, limit, 0)
        );
        let rows: Vec<(String,)> =
            on_tx!(tx, |c| bound!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), params).fetch_all(c).await)?;
        Ok(rows.into_iter().filter_map(|(d,)| serde_json::from_str(&d).ok()).collect())
    })
            }

            fn scalar<'a>(&'a self, sql: String, params: &'a [Param]) -> BoxFuture<'a, Result<i64, StorageError>> {
                Box::pin(async move {
        let (n,): (i64,) =
            { let pool = &self.pool; bound!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), params)
                .fetch_one(pool)
                .await }?;
        Ok(n)
    })
            }

            fn read_checked<'a>(&'a self, collection: &'a str, payload: &'a str, params: &'a [Param]) -> BoxFuture<'a, Result<(String, Option<String>), StorageError>> {
                Box::pin(async move {
        let sql = format!("SELECT ({}), ({payload})", crate::sql::index_fingerprint($dialect, collection));
        let (fingerprint, payload) = self.pair(sql, params).await?;
        Ok((fingerprint.unwrap_or_default(), payload))
    })
            }

            fn text_rows<'a>(&'a self, sql: String, params: &'a [Param], columns: usize) -> BoxFuture<'a, Result<Vec<Vec<Option<String>>>, StorageError>> {
                Box::pin(async move {
        use sqlx::Row;
        { let pool = &self.pool; {
            let rows = bound!(sqlx::query(sqlx::AssertSqlSafe(sql)), params).fetch_all(pool).await?;
            Ok(rows
                .iter()
                .map(|r| (0..columns).map(|i| r.try_get::<Option<String>, _>(i).ok().flatten()).collect())
                .collect())
        } }
    })
            }

            fn insert<'a>(&'a self, tx: &'a mut Tx, collection: &'a str, id: &'a str, doc: &'a str, now: i64) -> BoxFuture<'a, Result<(), WriteError>> {
                Box::pin(async move {
        let sql = format!(
            "INSERT INTO documents (collection, id, doc, created_at, updated_at) VALUES ($1, $2, {}, $4, $4)",
            doc_param($dialect, 3)
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
    })
            }

            fn insert_rows<'a>(&'a self, tx: &'a mut Tx, collection: &'a str, rows: &'a [(String, String)], now: i64) -> BoxFuture<'a, Result<(), WriteError>> {
                Box::pin(async move {
        // Anonymous placeholders on SQLite, which looks a numbered one's name up by a linear
        // scan (the square of their number per statement); numbered ones on PostgreSQL.
        let sqlite = $dialect == Dialect::Sqlite;
        let values: Vec<String> = (0..rows.len())
            .map(|i| {
                if sqlite {
                    "(?, ?, ?, ?, ?)".to_string()
                } else {
                    format!("($1, ${}, {}, $2, $2)", 3 + 2 * i, doc_param($dialect, 4 + 2 * i))
                }
            })
            .collect();
        let sql = format!(
            "INSERT INTO documents (collection, id, doc, created_at, updated_at) VALUES {}",
            values.join(", ")
        );
        on_tx!(tx, |c| sqlx::query("SAVEPOINT insert_rows").execute(&mut *c).await.map(|_| ()).map_err(write_err))?;
        let done = on_tx!(tx, |c| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            if sqlite {
                for (id, doc) in rows {
                    q = q.bind(collection).bind(id).bind(doc).bind(now).bind(now);
                }
            } else {
                q = q.bind(collection).bind(now);
                for (id, doc) in rows {
                    q = q.bind(id).bind(doc);
                }
            }
            q.execute(&mut *c).await.map(|_| ()).map_err(write_err)
        });
        if done.is_err() {
            on_tx!(tx, |c| sqlx::query("ROLLBACK TO SAVEPOINT insert_rows").execute(&mut *c).await.map(|_| ()).map_err(write_err))?;
        }
        on_tx!(tx, |c| sqlx::query("RELEASE SAVEPOINT insert_rows").execute(&mut *c).await.map(|_| ()).map_err(write_err))?;
        done
    })
            }

            fn replace<'a>(&'a self, tx: &'a mut Tx, collection: &'a str, id: &'a str, doc: &'a str, now: i64) -> BoxFuture<'a, Result<bool, WriteError>> {
                Box::pin(async move {
        let sql = format!(
            "UPDATE documents SET doc = {}, updated_at = $4 WHERE collection = $1 AND id = $2",
            doc_param($dialect, 3)
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
    })
            }

            fn delete<'a>(&'a self, tx: &'a mut Tx, collection: &'a str, id: &'a str) -> BoxFuture<'a, Result<bool, StorageError>> {
                Box::pin(async move {
        let sql = "DELETE FROM documents WHERE collection = $1 AND id = $2";
        let n = on_tx!(tx, |c| sqlx::query(sql).bind(collection).bind(id).execute(c).await?.rows_affected());
        Ok(n == 1)
    })
            }
        }
    };
}

dialect_impl!(SqliteStore, Dialect::Sqlite, begin_sqlite);
dialect_impl!(PostgresStore, Dialect::Postgres, begin_postgres);
