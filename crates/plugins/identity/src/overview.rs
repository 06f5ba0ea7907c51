//! Read-only counts over identity's tables for the operations API's security status and scan
//! (`nexus-ops`): sessions, locked accounts, administrators and API-key hygiene. Nothing here
//! changes data or shows a credential.

use nexus_kernel::clock::Timestamp;
use nexus_kernel::db::{Db, StorageError};
use serde::Serialize;

/// Boxed, so that the store can be a trait object (no extra dependency for one alias).
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

const DAY_MICROS: i64 = 24 * 3600 * 1_000_000;

/// What the security views read, measured at `at`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Overview {
    /// Sessions (refresh-token families) with an unspent, unexpired, unrevoked token.
    pub active_sessions: i64,
    /// Accounts locked by failed logins right now.
    pub locked_accounts: i64,
    /// Active users holding the `admin` role.
    pub admins: i64,
    /// API keys that are neither revoked nor expired.
    pub api_keys_active: i64,
    /// Of those, the ones used in the last 24 hours.
    pub api_keys_used_24h: i64,
    /// Of those, the ones that never expire.
    pub api_keys_without_expiry: i64,
    /// Of those, the ones not used for 90 days (or never, and created over 90 days ago).
    pub api_keys_unused_90d: i64,
}

/// Active users holding `role`.
pub async fn users_with_role(db: &Db, role: &str) -> Result<i64, StorageError> {
    store(db).users_with_role(role).await
}

/// The overview at `at`.
pub async fn read(db: &Db, at: Timestamp) -> Result<Overview, StorageError> {
    store(db).overview(at.as_micros()).await
}

trait OverviewStore: Send + Sync {
    fn overview(&self, now: i64) -> BoxFuture<'_, Result<Overview, StorageError>>;
    fn users_with_role<'a>(&'a self, role: &'a str) -> BoxFuture<'a, Result<i64, StorageError>>;
}

struct SqliteOverview(sqlx::SqlitePool);
struct PostgresOverview(sqlx::PgPool);

const SESSIONS: &str = "SELECT COUNT(DISTINCT family_id) FROM refresh_tokens \
    WHERE used_at IS NULL AND revoked_at IS NULL AND expires_at > $1";
const LOCKED: &str = "SELECT COUNT(*) FROM users WHERE locked_until IS NOT NULL AND locked_until > $1";
const WITH_ROLE: &str = "SELECT COUNT(*) FROM users u JOIN user_roles r ON r.user_id = u.id \
    WHERE r.role = $1 AND u.status = 'active'";
const KEYS: &str = "SELECT COUNT(*), \
    COALESCE(SUM(CASE WHEN last_used IS NOT NULL AND last_used > $2 THEN 1 ELSE 0 END), 0), \
    COALESCE(SUM(CASE WHEN expires_at IS NULL THEN 1 ELSE 0 END), 0), \
    COALESCE(SUM(CASE WHEN COALESCE(last_used, created_at) < $3 THEN 1 ELSE 0 END), 0) \
    FROM api_keys WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)";

/// The SQL is portable; only the pool differs.
macro_rules! overview_store {
    ($store:ty) => {
        impl OverviewStore for $store {
            fn overview(&self, now: i64) -> BoxFuture<'_, Result<Overview, StorageError>> {
                Box::pin(async move {
                    let active_sessions: i64 = sqlx::query_scalar(SESSIONS).bind(now).fetch_one(&self.0).await?;
                    let locked_accounts: i64 = sqlx::query_scalar(LOCKED).bind(now).fetch_one(&self.0).await?;
                    let admins: i64 = sqlx::query_scalar(WITH_ROLE).bind("admin").fetch_one(&self.0).await?;
                    let (active, used, no_expiry, unused): (i64, i64, i64, i64) = sqlx::query_as(KEYS)
                        .bind(now)
                        .bind(now - DAY_MICROS)
                        .bind(now - 90 * DAY_MICROS)
                        .fetch_one(&self.0)
                        .await?;
                    Ok(Overview {
                        active_sessions,
                        locked_accounts,
                        admins,
                        api_keys_active: active,
                        api_keys_used_24h: used,
                        api_keys_without_expiry: no_expiry,
                        api_keys_unused_90d: unused,
                    })
                })
            }

            fn users_with_role<'a>(&'a self, role: &'a str) -> BoxFuture<'a, Result<i64, StorageError>> {
                Box::pin(async move { Ok(sqlx::query_scalar(WITH_ROLE).bind(role).fetch_one(&self.0).await?) })
            }
        }
    };
}

overview_store!(SqliteOverview);
overview_store!(PostgresOverview);

fn store(db: &Db) -> Box<dyn OverviewStore> {
    match db {
        Db::Sqlite(pool) => Box::new(SqliteOverview(pool.clone())),
        Db::Postgres(pool) => Box::new(PostgresOverview(pool.clone())),
    }
}
