//! SQL of the identity plugin: users, roles, refresh tokens, revocations, API keys.
//!
//! [`IdentityStore`] is the storage contract; [`SqliteStore`] and [`PostgresStore`] implement it,
//! one per SQL dialect. Every statement here is one both dialects understand (`$n` placeholders,
//! `RETURNING`), so it is written once, in the body of `dialect_impl!`; a statement that comes
//! to need a dialect of its own is handed to that macro per dialect (as the webhooks store does).

use std::sync::Arc;

use futures::future::BoxFuture;
use nexus_kernel::clock::Timestamp;
use nexus_kernel::db::{Db, StorageError};
use nexus_kernel::events::Event;
use nexus_kernel::outbox::{Outbox, OutboxTx};
use nexus_kernel::query::{Field, Keyed, Kind, ListQuery, Listing, Op, Page, Value, escape_like};
use sqlx::{PgPool, SqlitePool};

/// A user row with its roles.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub email: String,
    pub full_name: String,
    pub password_hash: String,
    pub status: String,
    pub metadata: String,
    pub failed_logins: i64,
    pub locked_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_login: Option<i64>,
    #[sqlx(skip)]
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefreshRow {
    pub token_hash: String,
    pub family_id: String,
    pub user_id: String,
    pub client_id: String,
    pub device_id: String,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub prefix: String,
    pub scopes: String,
    pub premium: bool,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RevocationRow {
    pub kind: String,
    pub subject: String,
    pub not_before: i64,
}

/// Narrows a user listing; absent fields match everything.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    pub role: Option<String>,
    pub status: Option<String>,
    /// Case-insensitive substring of username or email.
    pub search: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

type Result<T> = std::result::Result<T, StorageError>;

const USER_COLUMNS: &str = "id, username, email, full_name, password_hash, status, metadata, failed_logins, \
    locked_until, created_at, updated_at, last_login";
const API_KEY_COLUMNS: &str =
    "id, user_id, name, prefix, scopes, premium, created_at, expires_at, last_used, revoked_at";
const REFRESH_COLUMNS: &str = "token_hash, family_id, user_id, client_id, device_id, expires_at, used_at, revoked_at";

const INSERT_USER: &str = "INSERT INTO users (id, username, username_key, email, email_key, full_name, \
    password_hash, status, metadata, failed_logins, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $10)";
const UPDATE_USER: &str = "UPDATE users SET username = $2, username_key = $3, email = $4, email_key = $5, \
    full_name = $6, password_hash = $7, status = $8, metadata = $9, updated_at = $10 WHERE id = $1";
const INSERT_ROLE: &str = "INSERT INTO user_roles (user_id, role) VALUES ($1, $2)";
const USER_BY_LOGIN: &str = "WHERE username_key = $1 OR email_key = $1 \
    ORDER BY CASE WHEN username_key = $1 THEN 0 ELSE 1 END LIMIT 1";
/// The role, status and search narrowing of a user listing ($1–$3).
const USER_FILTER: &str = "($1 IS NULL OR status = $1) \
    AND ($2 IS NULL OR id IN (SELECT user_id FROM user_roles WHERE role = $2)) \
    AND ($3 IS NULL OR username_key LIKE $3 ESCAPE '\\' OR email_key LIKE $3 ESCAPE '\\')";
const LOGIN_TAKEN: &str =
    "SELECT id FROM users WHERE (username_key = $1 OR email_key = $1) AND ($2 IS NULL OR id <> $2) LIMIT 1";
const COUNT_ACTIVE_WITH_ROLE: &str = "SELECT COUNT(*) FROM users u JOIN user_roles r ON r.user_id = u.id \
    WHERE r.role = $1 AND u.status = 'active' AND u.id <> $2";
const LOGIN_SUCCESS: &str = "UPDATE users SET failed_logins = 0, locked_until = NULL, last_login = $2 WHERE id = $1";
const LOGIN_FAILURE: &str = "UPDATE users SET \
    locked_until = CASE WHEN failed_logins + 1 >= $2 THEN $3 ELSE locked_until END, \
    failed_logins = CASE WHEN failed_logins + 1 >= $2 THEN 0 ELSE failed_logins + 1 END \
    WHERE id = $1 RETURNING locked_until";
const INSERT_REFRESH: &str = "INSERT INTO refresh_tokens (token_hash, family_id, user_id, client_id, device_id, \
    created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
const SPEND_REFRESH: &str =
    "UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL";
const REVOKE_FAMILY: &str = "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL";
const REVOKE_USER_FAMILIES: &str =
    "UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL";
const REVOKE_OTHER_FAMILIES: &str = "UPDATE refresh_tokens SET revoked_at = $3 \
    WHERE user_id = $1 AND family_id <> $2 AND revoked_at IS NULL RETURNING family_id";
const INSERT_REVOCATION: &str = "INSERT INTO revocations (id, kind, subject, not_before, created_at, expires_at) \
    VALUES ($1, $2, $3, $4, $5, $6)";
const REVOCATIONS_SINCE: &str =
    "SELECT kind, subject, not_before FROM revocations WHERE created_at >= $1 AND expires_at > $2";
const INSERT_API_KEY: &str = "INSERT INTO api_keys (id, user_id, name, key_hash, prefix, scopes, premium, \
    created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const REVOKE_API_KEY: &str = "UPDATE api_keys SET revoked_at = $3 \
    WHERE id = $1 AND ($2 IS NULL OR user_id = $2) AND revoked_at IS NULL";

/// The case-folded form under which usernames and emails are unique.
pub fn fold(s: &str) -> String {
    s.trim().to_lowercase()
}

/// The `LIKE` pattern of a listing's search term.
fn search_pattern(f: &UserFilter) -> Option<String> {
    f.search.as_deref().map(|s| format!("%{}%", escape_like(&fold(s))))
}

/// Storage of the identity plugin.
pub trait IdentityStore: Send + Sync + std::fmt::Debug {
    fn count_users(&self) -> BoxFuture<'_, Result<i64>>;
    fn user_by_id<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<UserRow>>>;
    /// The user whose username or email is `login` (case-insensitive); a username match wins.
    fn user_by_login<'a>(&'a self, login: &'a str) -> BoxFuture<'a, Result<Option<UserRow>>>;
    /// Users narrowed by `f`, oldest first, a window of `f.limit` from `f.offset`; with the total.
    fn list_users<'a>(&'a self, f: &'a UserFilter) -> BoxFuture<'a, Result<(Vec<UserRow>, i64)>>;
    /// A page of users narrowed by `f` (its role, status and search; not its limit and
    /// offset) and by the list request `q` (built against [`USER_LISTING`]).
    fn list_users_page<'a>(&'a self, f: &'a UserFilter, q: &'a ListQuery) -> BoxFuture<'a, Result<Page<UserRow>>>;
    /// Inserts `u` and its roles, and writes `event` to the outbox, in one transaction.
    fn insert_user<'a>(&'a self, u: &'a UserRow, event: &'a Event) -> BoxFuture<'a, Result<()>>;
    /// Writes `u` back and `event` to the outbox, in one transaction. The role rows are
    /// rewritten only when `roles_changed`.
    fn update_user<'a>(&'a self, u: &'a UserRow, roles_changed: bool, event: &'a Event) -> BoxFuture<'a, Result<()>>;
    /// Whether a user other than `except` has `login` (case-insensitive) as username or email.
    fn login_taken<'a>(&'a self, login: &'a str, except: Option<&'a str>) -> BoxFuture<'a, Result<bool>>;
    /// Deletes user `id` and, if there was one, writes `event` to the outbox, in one
    /// transaction; whether there was one.
    fn delete_user<'a>(&'a self, id: &'a str, event: &'a Event) -> BoxFuture<'a, Result<bool>>;
    /// Active users holding `role`, other than `except`.
    fn count_active_with_role<'a>(&'a self, role: &'a str, except: &'a str) -> BoxFuture<'a, Result<i64>>;
    fn record_login_success<'a>(&'a self, id: &'a str, now: Timestamp) -> BoxFuture<'a, Result<()>>;
    /// Counts a failed login; at `threshold` consecutive failures the account locks until
    /// `lock_until` and the count starts again. Returns whether this failure locked it.
    fn record_login_failure<'a>(&'a self, id: &'a str, threshold: i64, lock_until: i64) -> BoxFuture<'a, Result<bool>>;
    /// Stores refresh token `r` and, when given, writes `event` (a login) to the outbox, in
    /// one transaction.
    fn insert_refresh<'a>(
        &'a self,
        r: &'a RefreshRow,
        now: Timestamp,
        event: Option<&'a Event>,
    ) -> BoxFuture<'a, Result<()>>;
    fn refresh_by_hash<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<Option<RefreshRow>>>;
    /// Marks the token spent; `false` when it already was (a concurrent or repeated use).
    fn spend_refresh<'a>(&'a self, hash: &'a str, now: Timestamp) -> BoxFuture<'a, Result<bool>>;
    fn revoke_family<'a>(&'a self, family_id: &'a str, now: Timestamp) -> BoxFuture<'a, Result<()>>;
    fn revoke_user_families<'a>(&'a self, user_id: &'a str, now: Timestamp) -> BoxFuture<'a, Result<()>>;
    /// Revokes the refresh tokens of `user_id` outside session `keep`; the sessions (families)
    /// that had one, each once.
    fn revoke_other_families<'a>(
        &'a self,
        user_id: &'a str,
        keep: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<String>>>;
    fn insert_revocation<'a>(
        &'a self,
        kind: &'a str,
        subject: &'a str,
        not_before: i64,
        expires_at: i64,
    ) -> BoxFuture<'a, Result<()>>;
    /// Revocations recorded at or after `since` and not yet expired.
    fn revocations_since(&self, since: i64) -> BoxFuture<'_, Result<Vec<RevocationRow>>>;
    /// Deletes the revocations and refresh tokens that expired by `now`.
    fn purge_expired(&self, now: Timestamp) -> BoxFuture<'_, Result<()>>;
    /// Stores key `k` (`key_hash` is the digest of the key itself) and writes `event` to the
    /// outbox, in one transaction.
    fn insert_api_key<'a>(&'a self, k: &'a ApiKeyRow, key_hash: &'a str, event: &'a Event)
    -> BoxFuture<'a, Result<()>>;
    fn api_key_by_hash<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<Option<ApiKeyRow>>>;
    /// Keys of `user_id` that are not revoked, newest first.
    fn api_keys_of<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<Vec<ApiKeyRow>>>;
    /// A page of `user_id`'s unrevoked API keys, by the list request `q` ([`API_KEY_LISTING`]).
    fn api_keys_page<'a>(&'a self, user_id: &'a str, q: &'a ListQuery) -> BoxFuture<'a, Result<Page<ApiKeyRow>>>;
    /// Revokes key `id` if `owner` (or anyone, when `None`) holds it, and then writes `event`
    /// to the outbox, in one transaction; whether one was revoked.
    fn revoke_api_key<'a>(
        &'a self,
        id: &'a str,
        owner: Option<&'a str>,
        now: Timestamp,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<bool>>;
    fn touch_api_key<'a>(&'a self, id: &'a str, now: Timestamp) -> BoxFuture<'a, Result<()>>;
}

/// The store for `db`'s dialect; `outbox` is told of every event committed.
pub fn open(db: &Db, outbox: Outbox) -> Arc<dyn IdentityStore> {
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

/// Binds `$1`–`$9` of the user insert and update: id, username and its folded key, email and
/// its folded key, full name, password hash, status, metadata. One list, so the two statements
/// cannot disagree on the order.
macro_rules! bind_user {
    ($query:expr, $u:expr) => {
        $query
            .bind(&$u.id)
            .bind(&$u.username)
            .bind(fold(&$u.username))
            .bind(&$u.email)
            .bind(fold(&$u.email))
            .bind(&$u.full_name)
            .bind(&$u.password_hash)
            .bind(&$u.status)
            .bind(&$u.metadata)
    };
}

/// The implementation of [`IdentityStore`] for one dialect's store type.
macro_rules! dialect_impl {
    ($store:ty) => {
        impl $store {
            /// Fills in the roles of `users` with one query, however many there are.
            async fn attach_roles(&self, mut users: Vec<UserRow>) -> Result<Vec<UserRow>> {
                if users.is_empty() {
                    return Ok(users);
                }
                // Only numbered placeholders are spliced in; every id is bound.
                let placeholders: Vec<String> = (1..=users.len()).map(|i| format!("${i}")).collect();
                let sql = format!(
                    "SELECT user_id, role FROM user_roles WHERE user_id IN ({}) ORDER BY role",
                    placeholders.join(", ")
                );
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
                for user in &users {
                    query = query.bind(&user.id);
                }
                let rows: Vec<(String, String)> = query.fetch_all(&self.pool).await?;
                for (user_id, role) in rows {
                    if let Some(user) = users.iter_mut().find(|u| u.id == user_id) {
                        user.roles.push(role);
                    }
                }
                Ok(users)
            }

            async fn one_user(&self, row: Option<UserRow>) -> Result<Option<UserRow>> {
                Ok(self.attach_roles(row.into_iter().collect()).await?.pop())
            }
        }

        impl IdentityStore for $store {
            fn count_users(&self) -> BoxFuture<'_, Result<i64>> {
                Box::pin(async move { Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&self.pool).await?) })
            }

            fn user_by_id<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<UserRow>>> {
                Box::pin(async move {
                    let sql = sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"));
                    let row = sqlx::query_as(sql).bind(id).fetch_optional(&self.pool).await?;
                    self.one_user(row).await
                })
            }

            fn user_by_login<'a>(&'a self, login: &'a str) -> BoxFuture<'a, Result<Option<UserRow>>> {
                Box::pin(async move {
                    let sql = sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users {USER_BY_LOGIN}"));
                    let row = sqlx::query_as(sql).bind(fold(login)).fetch_optional(&self.pool).await?;
                    self.one_user(row).await
                })
            }

            fn list_users<'a>(&'a self, f: &'a UserFilter) -> BoxFuture<'a, Result<(Vec<UserRow>, i64)>> {
                Box::pin(async move {
                    let search = search_pattern(f);
                    let count_sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM users WHERE {USER_FILTER}"));
                    let list_sql = sqlx::AssertSqlSafe(format!(
                        "SELECT {USER_COLUMNS} FROM users WHERE {USER_FILTER} ORDER BY created_at, id LIMIT $4 OFFSET $5"
                    ));
                    let total: i64 = sqlx::query_scalar(count_sql)
                        .bind(&f.status)
                        .bind(&f.role)
                        .bind(&search)
                        .fetch_one(&self.pool)
                        .await?;
                    let rows: Vec<UserRow> = sqlx::query_as(list_sql)
                        .bind(&f.status)
                        .bind(&f.role)
                        .bind(&search)
                        .bind(f.limit)
                        .bind(f.offset)
                        .fetch_all(&self.pool)
                        .await?;
                    Ok((self.attach_roles(rows).await?, total))
                })
            }

            fn list_users_page<'a>(
                &'a self,
                f: &'a UserFilter,
                q: &'a ListQuery,
            ) -> BoxFuture<'a, Result<Page<UserRow>>> {
                Box::pin(async move {
                    let search = search_pattern(f);
                    let b = q.build(4);
                    let count_sql = sqlx::AssertSqlSafe(format!(
                        "SELECT COUNT(*) FROM users WHERE {USER_FILTER} AND {}",
                        b.filter
                    ));
                    let list_sql = sqlx::AssertSqlSafe(format!(
                        "SELECT {USER_COLUMNS} FROM users WHERE {USER_FILTER} AND {} {} {} {}",
                        b.filter, b.keyset, b.order, b.window
                    ));
                    let count = sqlx::query_scalar(count_sql).bind(&f.status).bind(&f.role).bind(&search);
                    let total: i64 = nexus_kernel::bind_values!(count, &b.filter_params).fetch_one(&self.pool).await?;
                    let list = sqlx::query_as(list_sql).bind(&f.status).bind(&f.role).bind(&search);
                    let rows: Vec<UserRow> = nexus_kernel::bind_values!(list, &b.params).fetch_all(&self.pool).await?;
                    let rows = self.attach_roles(rows).await?;
                    Ok(q.finish(rows, Some(total)))
                })
            }

            fn insert_user<'a>(&'a self, u: &'a UserRow, event: &'a Event) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    bind_user!(sqlx::query(INSERT_USER), u).bind(u.created_at).execute(&mut *tx).await?;
                    for role in &u.roles {
                        sqlx::query(INSERT_ROLE).bind(&u.id).bind(role).execute(&mut *tx).await?;
                    }
                    tx.write_event(event).await?;
                    tx.commit().await?;
                    self.outbox.committed();
                    Ok(())
                })
            }

            fn update_user<'a>(
                &'a self,
                u: &'a UserRow,
                roles_changed: bool,
                event: &'a Event,
            ) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    bind_user!(sqlx::query(UPDATE_USER), u).bind(u.updated_at).execute(&mut *tx).await?;
                    if roles_changed {
                        sqlx::query("DELETE FROM user_roles WHERE user_id = $1").bind(&u.id).execute(&mut *tx).await?;
                        for role in &u.roles {
                            sqlx::query(INSERT_ROLE).bind(&u.id).bind(role).execute(&mut *tx).await?;
                        }
                    }
                    tx.write_event(event).await?;
                    tx.commit().await?;
                    self.outbox.committed();
                    Ok(())
                })
            }

            fn login_taken<'a>(&'a self, login: &'a str, except: Option<&'a str>) -> BoxFuture<'a, Result<bool>> {
                Box::pin(async move {
                    let found: Option<String> = sqlx::query_scalar(LOGIN_TAKEN)
                        .bind(fold(login))
                        .bind(except)
                        .fetch_optional(&self.pool)
                        .await?;
                    Ok(found.is_some())
                })
            }

            fn delete_user<'a>(&'a self, id: &'a str, event: &'a Event) -> BoxFuture<'a, Result<bool>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    let n =
                        sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(&mut *tx).await?.rows_affected();
                    if n == 0 {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                    tx.write_event(event).await?;
                    tx.commit().await?;
                    self.outbox.committed();
                    Ok(true)
                })
            }

            fn count_active_with_role<'a>(&'a self, role: &'a str, except: &'a str) -> BoxFuture<'a, Result<i64>> {
                Box::pin(async move {
                    Ok(sqlx::query_scalar(COUNT_ACTIVE_WITH_ROLE).bind(role).bind(except).fetch_one(&self.pool).await?)
                })
            }

            fn record_login_success<'a>(&'a self, id: &'a str, now: Timestamp) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
                    sqlx::query(LOGIN_SUCCESS).bind(id).bind(now.as_micros()).execute(&self.pool).await?;
                    Ok(())
                })
            }

            fn record_login_failure<'a>(
                &'a self,
                id: &'a str,
                threshold: i64,
                lock_until: i64,
            ) -> BoxFuture<'a, Result<bool>> {
                Box::pin(async move {
                    let locked: Option<Option<i64>> = sqlx::query_scalar(LOGIN_FAILURE)
                        .bind(id)
                        .bind(threshold)
                        .bind(lock_until)
                        .fetch_optional(&self.pool)
                        .await?;
                    Ok(locked.flatten() == Some(lock_until))
                })
            }

            fn insert_refresh<'a>(
                &'a self,
                r: &'a RefreshRow,
                now: Timestamp,
                event: Option<&'a Event>,
            ) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    sqlx::query(INSERT_REFRESH)
                        .bind(&r.token_hash)
                        .bind(&r.family_id)
                        .bind(&r.user_id)
                        .bind(&r.client_id)
                        .bind(&r.device_id)
                        .bind(now.as_micros())
                        .bind(r.expires_at)
                        .execute(&mut *tx)
                        .await?;
                    if let Some(event) = event {
                        tx.write_event(event).await?;
                    }
                    tx.commit().await?;
                    if event.is_some() {
                        self.outbox.committed();
                    }
                    Ok(())
                })
            }

            fn refresh_by_hash<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<Option<RefreshRow>>> {
                Box::pin(async move {
                    let sql = sqlx::AssertSqlSafe(format!("SELECT {REFRESH_COLUMNS} FROM refresh_tokens WHERE token_hash = $1"));
                    Ok(sqlx::query_as(sql).bind(hash).fetch_optional(&self.pool).await?)
                })
            }

            fn spend_refresh<'a>(&'a self, hash: &'a str, now: Timestamp) -> BoxFuture<'a, Result<bool>> {
                Box::pin(async move {
                    let r = sqlx::query(SPEND_REFRESH).bind(hash).bind(now.as_micros()).execute(&self.pool).await?;
                    Ok(r.rows_affected() == 1)
                })
            }

            fn revoke_family<'a>(&'a self, family_id: &'a str, now: Timestamp) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
                    sqlx::query(REVOKE_FAMILY).bind(family_id).bind(now.as_micros()).execute(&self.pool).await?;
                    Ok(())
                })
            }

            fn revoke_user_families<'a>(&'a self, user_id: &'a str, now: Timestamp) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
                    sqlx::query(REVOKE_USER_FAMILIES).bind(user_id).bind(now.as_micros()).execute(&self.pool).await?;
                    Ok(())
                })
            }

            fn revoke_other_families<'a>(
                &'a self,
                user_id: &'a str,
                keep: &'a str,
                now: Timestamp,
            ) -> BoxFuture<'a, Result<Vec<String>>> {
                Box::pin(async move {
                    let mut families: Vec<String> = sqlx::query_scalar(REVOKE_OTHER_FAMILIES)
                        .bind(user_id)
                        .bind(keep)
                        .bind(now.as_micros())
                        .fetch_all(&self.pool)
                        .await?;
                    families.sort();
                    families.dedup();
                    Ok(families)
                })
            }

            fn insert_revocation<'a>(
                &'a self,
                kind: &'a str,
                subject: &'a str,
                not_before: i64,
                expires_at: i64,
            ) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
                    sqlx::query(INSERT_REVOCATION)
                        .bind(nexus_kernel::id::uuid())
                        .bind(kind)
                        .bind(subject)
                        .bind(not_before)
                        // Wall-clock time, as the pollers of other instances compare it to theirs.
                        .bind(Timestamp::now().as_micros())
                        .bind(expires_at)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }

            fn revocations_since(&self, since: i64) -> BoxFuture<'_, Result<Vec<RevocationRow>>> {
                Box::pin(async move {
                    Ok(sqlx::query_as(REVOCATIONS_SINCE)
                        .bind(since)
                        .bind(Timestamp::now().as_micros())
                        .fetch_all(&self.pool)
                        .await?)
                })
            }

            fn purge_expired(&self, now: Timestamp) -> BoxFuture<'_, Result<()>> {
                Box::pin(async move {
                    let now = now.as_micros();
                    sqlx::query("DELETE FROM revocations WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
                    sqlx::query("DELETE FROM refresh_tokens WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
                    Ok(())
                })
            }

            fn insert_api_key<'a>(
                &'a self,
                k: &'a ApiKeyRow,
                key_hash: &'a str,
                event: &'a Event,
            ) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    sqlx::query(INSERT_API_KEY)
                        .bind(&k.id)
                        .bind(&k.user_id)
                        .bind(&k.name)
                        .bind(key_hash)
                        .bind(&k.prefix)
                        .bind(&k.scopes)
                        .bind(k.premium)
                        .bind(k.created_at)
                        .bind(k.expires_at)
                        .execute(&mut *tx)
                        .await?;
                    tx.write_event(event).await?;
                    tx.commit().await?;
                    self.outbox.committed();
                    Ok(())
                })
            }

            fn api_key_by_hash<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<Option<ApiKeyRow>>> {
                Box::pin(async move {
                    let sql = sqlx::AssertSqlSafe(format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"));
                    Ok(sqlx::query_as(sql).bind(hash).fetch_optional(&self.pool).await?)
                })
            }

            fn api_keys_of<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<Vec<ApiKeyRow>>> {
                Box::pin(async move {
                    let sql = sqlx::AssertSqlSafe(format!(
                        "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL \
                         ORDER BY created_at DESC, id"
                    ));
                    Ok(sqlx::query_as(sql).bind(user_id).fetch_all(&self.pool).await?)
                })
            }

            fn api_keys_page<'a>(
                &'a self,
                user_id: &'a str,
                q: &'a ListQuery,
            ) -> BoxFuture<'a, Result<Page<ApiKeyRow>>> {
                Box::pin(async move {
                    let b = q.build(2);
                    let base = "user_id = $1 AND revoked_at IS NULL";
                    let count_sql =
                        sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM api_keys WHERE {base} AND {}", b.filter));
                    let list_sql = sqlx::AssertSqlSafe(format!(
                        "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE {base} AND {} {} {} {}",
                        b.filter, b.keyset, b.order, b.window
                    ));
                    let count = sqlx::query_scalar(count_sql).bind(user_id);
                    let total: i64 = nexus_kernel::bind_values!(count, &b.filter_params).fetch_one(&self.pool).await?;
                    let list = sqlx::query_as(list_sql).bind(user_id);
                    let rows: Vec<ApiKeyRow> = nexus_kernel::bind_values!(list, &b.params).fetch_all(&self.pool).await?;
                    Ok(q.finish(rows, Some(total)))
                })
            }

            fn revoke_api_key<'a>(
                &'a self,
                id: &'a str,
                owner: Option<&'a str>,
                now: Timestamp,
                event: &'a Event,
            ) -> BoxFuture<'a, Result<bool>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    let n = sqlx::query(REVOKE_API_KEY)
                        .bind(id)
                        .bind(owner)
                        .bind(now.as_micros())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if n == 0 {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                    tx.write_event(event).await?;
                    tx.commit().await?;
                    self.outbox.committed();
                    Ok(true)
                })
            }

            fn touch_api_key<'a>(&'a self, id: &'a str, now: Timestamp) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
                    sqlx::query("UPDATE api_keys SET last_used = $2 WHERE id = $1")
                        .bind(id)
                        .bind(now.as_micros())
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }
        }
    };
}

dialect_impl!(SqliteStore);
dialect_impl!(PostgresStore);

/// What `GET /api/users` (and every other user list) allows to filter, sort and select.
pub const USER_LISTING: Listing = Listing {
    name: "users",
    fields: &[
        Field { name: "id", column: "id", kind: Kind::Text, ops: Op::EQUALITY, sortable: true },
        Field { name: "username", column: "username", kind: Kind::Text, ops: Op::TEXT, sortable: true },
        Field { name: "email", column: "email", kind: Kind::Text, ops: Op::TEXT, sortable: true },
        Field { name: "full_name", column: "full_name", kind: Kind::Text, ops: Op::TEXT, sortable: true },
        Field { name: "status", column: "status", kind: Kind::Text, ops: Op::EQUALITY, sortable: true },
        Field { name: "created_at", column: "created_at", kind: Kind::Time, ops: Op::ORDERED, sortable: true },
        Field { name: "updated_at", column: "updated_at", kind: Kind::Time, ops: Op::ORDERED, sortable: true },
        Field { name: "last_login", column: "last_login", kind: Kind::Time, ops: Op::ORDERED, sortable: false },
    ],
    unique: "id",
    default_sort: "created_at",
    default_limit: 20,
    select: &[
        "id",
        "username",
        "email",
        "full_name",
        "roles",
        "status",
        "metadata",
        "created_at",
        "updated_at",
        "last_login",
    ],
};

/// What `GET /api/auth/api-keys` allows.
pub const API_KEY_LISTING: Listing = Listing {
    name: "api_keys",
    fields: &[
        Field { name: "id", column: "id", kind: Kind::Text, ops: Op::EQUALITY, sortable: true },
        Field { name: "name", column: "name", kind: Kind::Text, ops: Op::TEXT, sortable: true },
        Field { name: "prefix", column: "prefix", kind: Kind::Text, ops: Op::EQUALITY, sortable: false },
        Field { name: "premium", column: "premium", kind: Kind::Bool, ops: &[Op::Eq, Op::Ne], sortable: false },
        Field { name: "created_at", column: "created_at", kind: Kind::Time, ops: Op::ORDERED, sortable: true },
        Field { name: "expires_at", column: "expires_at", kind: Kind::Time, ops: Op::ORDERED, sortable: false },
        Field { name: "last_used", column: "last_used", kind: Kind::Time, ops: Op::ORDERED, sortable: false },
    ],
    unique: "id",
    default_sort: "-created_at",
    default_limit: 100,
    select: &["id", "name", "prefix", "scopes", "premium", "created_at", "expires_at", "last_used"],
};

impl Keyed for UserRow {
    fn key(&self, field: &str) -> Value {
        match field {
            "username" => Value::Text(self.username.clone()),
            "email" => Value::Text(self.email.clone()),
            "full_name" => Value::Text(self.full_name.clone()),
            "status" => Value::Text(self.status.clone()),
            "created_at" => Value::Int(self.created_at),
            "updated_at" => Value::Int(self.updated_at),
            _ => Value::Text(self.id.clone()),
        }
    }
}

impl Keyed for ApiKeyRow {
    fn key(&self, field: &str) -> Value {
        match field {
            "name" => Value::Text(self.name.clone()),
            "created_at" => Value::Int(self.created_at),
            _ => Value::Text(self.id.clone()),
        }
    }
}
