//! The installation's identity, stored once and shared by every instance on the database.

use crate::clock::Timestamp;
use crate::db::{Db, StorageError};
use crate::with_db;

/// Returns this installation's server id, creating it on the first start.
pub async fn server_id(db: &Db) -> Result<String, StorageError> {
    let candidate = crate::id::hex(&crate::id::random_bytes::<16>());
    let now = Timestamp::now().as_micros();
    with_db!(db, |pool| {
        sqlx::query(
            "INSERT INTO nexus_instance (singleton, server_id, created_at) VALUES (1, $1, $2) \
             ON CONFLICT (singleton) DO NOTHING",
        )
        .bind(&candidate)
        .bind(now)
        .execute(pool)
        .await?;
        let id: String =
            sqlx::query_scalar("SELECT server_id FROM nexus_instance WHERE singleton = 1").fetch_one(pool).await?;
        Ok(id)
    })
}

/// The installation's random secret named `name` (64 hex digits), created on first use.
pub async fn secret(db: &Db, name: &str) -> Result<String, StorageError> {
    let candidate = crate::id::hex(&crate::id::random_bytes::<32>());
    let now = Timestamp::now().as_micros();
    with_db!(db, |pool| {
        sqlx::query(
            "INSERT INTO nexus_keys (name, secret, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(&candidate)
        .bind(now)
        .execute(pool)
        .await?;
        let secret: String =
            sqlx::query_scalar("SELECT secret FROM nexus_keys WHERE name = $1").bind(name).fetch_one(pool).await?;
        Ok(secret)
    })
}
