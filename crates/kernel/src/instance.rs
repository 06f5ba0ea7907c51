//! The installation's identity, stored once and shared by every instance on the database.
//!
//! [`InstanceStore`] is the storage contract, with one implementation per SQL dialect.

use futures::future::BoxFuture;
use sqlx::{PgPool, SqlitePool};

use crate::clock::Timestamp;
use crate::db::{Db, StorageError};

/// The installation's own rows: its id and the random secrets it derives signatures from.
pub trait InstanceStore: Send + Sync {
    /// This installation's server id, created on the first start.
    fn server_id(&self) -> BoxFuture<'_, Result<String, StorageError>>;
    /// The installation's random secret named `name` (64 hex digits), created on first use.
    fn secret<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<String, StorageError>>;
}

const INSERT_SERVER_ID: &str = "INSERT INTO nexus_instance (singleton, server_id, created_at) VALUES (1, $1, $2) \
    ON CONFLICT (singleton) DO NOTHING";
const SERVER_ID: &str = "SELECT server_id FROM nexus_instance WHERE singleton = 1";
const INSERT_SECRET: &str =
    "INSERT INTO nexus_keys (name, secret, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING";
const SECRET: &str = "SELECT secret FROM nexus_keys WHERE name = $1";

#[derive(Debug, Clone)]
pub struct SqliteInstance(pub SqlitePool);

#[derive(Debug, Clone)]
pub struct PostgresInstance(pub PgPool);

macro_rules! dialect_impl {
    ($store:ty) => {
        impl InstanceStore for $store {
            fn server_id(&self) -> BoxFuture<'_, Result<String, StorageError>> {
                Box::pin(async move {
                    // Every instance starting at once proposes one; the first insert wins.
                    let candidate = crate::id::hex(&crate::id::random_bytes::<16>());
                    let now = Timestamp::now().as_micros();
                    sqlx::query(INSERT_SERVER_ID).bind(&candidate).bind(now).execute(&self.0).await?;
                    Ok(sqlx::query_scalar(SERVER_ID).fetch_one(&self.0).await?)
                })
            }

            fn secret<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<String, StorageError>> {
                Box::pin(async move {
                    let candidate = crate::id::hex(&crate::id::random_bytes::<32>());
                    let now = Timestamp::now().as_micros();
                    sqlx::query(INSERT_SECRET).bind(name).bind(&candidate).bind(now).execute(&self.0).await?;
                    Ok(sqlx::query_scalar(SECRET).bind(name).fetch_one(&self.0).await?)
                })
            }
        }
    };
}

dialect_impl!(SqliteInstance);
dialect_impl!(PostgresInstance);

/// The store for `db`'s dialect.
pub fn store(db: &Db) -> Box<dyn InstanceStore> {
    match db {
        Db::Sqlite(pool) => Box::new(SqliteInstance(pool.clone())),
        Db::Postgres(pool) => Box::new(PostgresInstance(pool.clone())),
    }
}

/// Returns this installation's server id, creating it on the first start.
pub async fn server_id(db: &Db) -> Result<String, StorageError> {
    store(db).server_id().await
}

/// The installation's random secret named `name` (64 hex digits), created on first use.
pub async fn secret(db: &Db, name: &str) -> Result<String, StorageError> {
    store(db).secret(name).await
}
