//! SQL of the identity plugin: users, roles, refresh tokens, revocations, API keys.

use nexus_kernel::clock::Timestamp;
use nexus_kernel::db::{Db, StorageError};
use nexus_kernel::events::Event;
use nexus_kernel::outbox::{Outbox, OutboxTx};
use nexus_kernel::query::{Field, Keyed, Kind, ListQuery, Listing, Op, Page, Value, escape_like};
use nexus_kernel::with_db;

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

/// Inserts the role rows of user `$u` in transaction `$tx`. A macro, because it runs inside
/// `with_db!`, where each backend's transaction has a type of its own.
macro_rules! insert_roles {
    ($tx:ident, $u:expr) => {
        for role in &$u.roles {
            sqlx::query("INSERT INTO user_roles (user_id, role) VALUES ($1, $2)")
                .bind(&$u.id)
                .bind(role)
                .execute(&mut *$tx)
                .await?;
        }
    };
}

/// Binds `$1`–`$9` of the user insert and update: id, username and its folded key, email and
/// its folded key, full name, password hash, status, metadata. One list, so the two statements
/// cannot disagree on the order. A macro for the same reason as `insert_roles!`.
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

const USER_COLUMNS: &str = "id, username, email, full_name, password_hash, status, metadata, failed_logins, \
    locked_until, created_at, updated_at, last_login";

#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    outbox: Outbox,
}

/// The case-folded form under which usernames and emails are unique.
pub fn fold(s: &str) -> String {
    s.trim().to_lowercase()
}

impl Store {
    pub fn new(db: Db, outbox: Outbox) -> Self {
        Self { db, outbox }
    }

    /// Fills in the roles of `users` with one query, however many there are.
    async fn attach_roles(&self, mut users: Vec<UserRow>) -> Result<Vec<UserRow>, StorageError> {
        if users.is_empty() {
            return Ok(users);
        }
        // Only numbered placeholders are spliced in; every id is bound.
        let placeholders: Vec<String> = (1..=users.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT user_id, role FROM user_roles WHERE user_id IN ({}) ORDER BY role",
            placeholders.join(", ")
        );
        let rows: Vec<(String, String)> = with_db!(&self.db, |pool| {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for user in &users {
                query = query.bind(&user.id);
            }
            query.fetch_all(pool).await
        })?;
        for (user_id, role) in rows {
            if let Some(user) = users.iter_mut().find(|u| u.id == user_id) {
                user.roles.push(role);
            }
        }
        Ok(users)
    }

    pub async fn count_users(&self) -> Result<i64, StorageError> {
        Ok(with_db!(&self.db, |pool| sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(pool).await)?)
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"));
        let row: Option<UserRow> = with_db!(&self.db, |pool| sqlx::query_as(sql).bind(id).fetch_optional(pool).await)?;
        Ok(self.attach_roles(row.into_iter().collect()).await?.pop())
    }

    /// The user whose username or email is `login` (case-insensitive).
    pub async fn user_by_login(&self, login: &str) -> Result<Option<UserRow>, StorageError> {
        let key = fold(login);
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username_key = $1 OR email_key = $1 \
             ORDER BY CASE WHEN username_key = $1 THEN 0 ELSE 1 END LIMIT 1"
        ));
        let row: Option<UserRow> =
            with_db!(&self.db, |pool| sqlx::query_as(sql).bind(&key).fetch_optional(pool).await)?;
        Ok(self.attach_roles(row.into_iter().collect()).await?.pop())
    }

    pub async fn list_users(&self, f: &UserFilter) -> Result<(Vec<UserRow>, i64), StorageError> {
        const WHERE: &str = "WHERE ($1 IS NULL OR status = $1) \
            AND ($2 IS NULL OR id IN (SELECT user_id FROM user_roles WHERE role = $2)) \
            AND ($3 IS NULL OR username_key LIKE $3 ESCAPE '\\' OR email_key LIKE $3 ESCAPE '\\')";
        let search = f.search.as_deref().map(|s| format!("%{}%", escape_like(&fold(s))));
        let count_sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM users {WHERE}"));
        let list_sql = sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users {WHERE} ORDER BY created_at, id LIMIT $4 OFFSET $5"
        ));
        let (rows, total) = with_db!(&self.db, |pool| {
            let total: i64 =
                sqlx::query_scalar(count_sql).bind(&f.status).bind(&f.role).bind(&search).fetch_one(pool).await?;
            let rows: Vec<UserRow> = sqlx::query_as(list_sql)
                .bind(&f.status)
                .bind(&f.role)
                .bind(&search)
                .bind(f.limit)
                .bind(f.offset)
                .fetch_all(pool)
                .await?;
            Ok::<_, sqlx::Error>((rows, total))
        })?;
        Ok((self.attach_roles(rows).await?, total))
    }

    /// Inserts `user` and its roles, and writes `event` to the outbox, in one transaction.
    pub async fn insert_user(&self, u: &UserRow, event: &Event) -> Result<(), StorageError> {
        with_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let insert = sqlx::query(
                "INSERT INTO users (id, username, username_key, email, email_key, full_name, password_hash, status, \
                 metadata, failed_logins, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $10)",
            );
            bind_user!(insert, u).bind(u.created_at).execute(&mut *tx).await?;
            insert_roles!(tx, u);
            tx.write_event(event).await?;
            tx.commit().await
        })?;
        self.outbox.committed();
        Ok(())
    }

    /// Writes `u` back and `event` to the outbox, in one transaction. The role rows are
    /// rewritten only when `roles_changed`.
    pub async fn update_user(&self, u: &UserRow, roles_changed: bool, event: &Event) -> Result<(), StorageError> {
        const UPDATE: &str = "UPDATE users SET username = $2, username_key = $3, email = $4, email_key = $5, \
            full_name = $6, password_hash = $7, status = $8, metadata = $9, updated_at = $10 WHERE id = $1";
        with_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            bind_user!(sqlx::query(UPDATE), u).bind(u.updated_at).execute(&mut *tx).await?;
            if roles_changed {
                sqlx::query("DELETE FROM user_roles WHERE user_id = $1").bind(&u.id).execute(&mut *tx).await?;
                insert_roles!(tx, u);
            }
            tx.write_event(event).await?;
            tx.commit().await
        })?;
        self.outbox.committed();
        Ok(())
    }

    /// Whether a user other than `except` has `login` (case-insensitive) as username or email.
    pub async fn login_taken(&self, login: &str, except: Option<&str>) -> Result<bool, StorageError> {
        let key = fold(login);
        let found: Option<String> = with_db!(&self.db, |pool| {
            sqlx::query_scalar(
                "SELECT id FROM users WHERE (username_key = $1 OR email_key = $1) \
                 AND ($2 IS NULL OR id <> $2) LIMIT 1",
            )
            .bind(&key)
            .bind(except)
            .fetch_optional(pool)
            .await
        })?;
        Ok(found.is_some())
    }

    /// Deletes user `id` and, if there was one, writes `event` to the outbox, in one
    /// transaction; whether there was one.
    pub async fn delete_user(&self, id: &str, event: &Event) -> Result<bool, StorageError> {
        let deleted = with_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(&mut *tx).await?.rows_affected();
            if n > 0 {
                tx.write_event(event).await?;
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            Ok::<_, StorageError>(n > 0)
        })?;
        if deleted {
            self.outbox.committed();
        }
        Ok(deleted)
    }

    /// Active users holding `role`, other than `except`.
    pub async fn count_active_with_role(&self, role: &str, except: &str) -> Result<i64, StorageError> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM users u JOIN user_roles r ON r.user_id = u.id \
                 WHERE r.role = $1 AND u.status = 'active' AND u.id <> $2",
            )
            .bind(role)
            .bind(except)
            .fetch_one(pool)
            .await
        })?)
    }

    pub async fn record_login_success(&self, id: &str, now: Timestamp) -> Result<(), StorageError> {
        with_db!(&self.db, |pool| {
            sqlx::query("UPDATE users SET failed_logins = 0, locked_until = NULL, last_login = $2 WHERE id = $1")
                .bind(id)
                .bind(now.as_micros())
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    /// Counts a failed login; at `threshold` consecutive failures the account locks until
    /// `lock_until` and the count starts again. Returns whether this failure locked it.
    pub async fn record_login_failure(&self, id: &str, threshold: i64, lock_until: i64) -> Result<bool, StorageError> {
        let locked: Option<Option<i64>> = with_db!(&self.db, |pool| {
            sqlx::query_scalar(
                "UPDATE users SET \
                   locked_until = CASE WHEN failed_logins + 1 >= $2 THEN $3 ELSE locked_until END, \
                   failed_logins = CASE WHEN failed_logins + 1 >= $2 THEN 0 ELSE failed_logins + 1 END \
                 WHERE id = $1 RETURNING locked_until",
            )
            .bind(id)
            .bind(threshold)
            .bind(lock_until)
            .fetch_optional(pool)
            .await
        })?;
        Ok(locked.flatten() == Some(lock_until))
    }

    /// Stores refresh token `r` and, when given, writes `event` (a login) to the outbox, in
    /// one transaction.
    pub async fn insert_refresh(
        &self,
        r: &RefreshRow,
        now: Timestamp,
        event: Option<&Event>,
    ) -> Result<(), StorageError> {
        with_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, family_id, user_id, client_id, device_id, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
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
            tx.commit().await
        })?;
        if event.is_some() {
            self.outbox.committed();
        }
        Ok(())
    }

    pub async fn refresh_by_hash(&self, hash: &str) -> Result<Option<RefreshRow>, StorageError> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT token_hash, family_id, user_id, client_id, device_id, expires_at, used_at, revoked_at \
                 FROM refresh_tokens WHERE token_hash = $1",
            )
            .bind(hash)
            .fetch_optional(pool)
            .await
        })?)
    }

    /// Marks the token spent; `false` when it already was (a concurrent or repeated use).
    pub async fn spend_refresh(&self, hash: &str, now: Timestamp) -> Result<bool, StorageError> {
        let n = with_db!(&self.db, |pool| {
            sqlx::query(
                "UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL",
            )
            .bind(hash)
            .bind(now.as_micros())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(n == 1)
    }

    pub async fn revoke_family(&self, family_id: &str, now: Timestamp) -> Result<(), StorageError> {
        with_db!(&self.db, |pool| {
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL")
                .bind(family_id)
                .bind(now.as_micros())
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    pub async fn revoke_user_families(&self, user_id: &str, now: Timestamp) -> Result<(), StorageError> {
        with_db!(&self.db, |pool| {
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
                .bind(user_id)
                .bind(now.as_micros())
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    pub async fn insert_revocation(
        &self,
        kind: &str,
        subject: &str,
        not_before: i64,
        expires_at: i64,
    ) -> Result<(), StorageError> {
        let id = nexus_kernel::id::uuid();
        with_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO revocations (id, kind, subject, not_before, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&id)
            .bind(kind)
            .bind(subject)
            .bind(not_before)
            .bind(Timestamp::now().as_micros())
            .bind(expires_at)
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        Ok(())
    }

    /// Revocations recorded at or after `since` and not yet expired.
    pub async fn revocations_since(&self, since: i64) -> Result<Vec<RevocationRow>, StorageError> {
        let now = Timestamp::now().as_micros();
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT kind, subject, not_before FROM revocations WHERE created_at >= $1 AND expires_at > $2",
            )
            .bind(since)
            .bind(now)
            .fetch_all(pool)
            .await
        })?)
    }

    pub async fn purge_expired(&self, now: Timestamp) -> Result<(), StorageError> {
        let now = now.as_micros();
        with_db!(&self.db, |pool| {
            sqlx::query("DELETE FROM revocations WHERE expires_at <= $1").bind(now).execute(pool).await?;
            sqlx::query("DELETE FROM refresh_tokens WHERE expires_at <= $1").bind(now).execute(pool).await.map(|_| ())
        })?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    /// Stores key `k` and writes `event` to the outbox, in one transaction.
    pub async fn insert_api_key(&self, k: &ApiKeyRow, key_hash: &str, event: &Event) -> Result<(), StorageError> {
        with_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO api_keys (id, user_id, name, key_hash, prefix, scopes, premium, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
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
            tx.commit().await
        })?;
        self.outbox.committed();
        Ok(())
    }

    pub async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRow>, StorageError> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT id, user_id, name, prefix, scopes, premium, created_at, expires_at, last_used, revoked_at \
                 FROM api_keys WHERE key_hash = $1",
            )
            .bind(hash)
            .fetch_optional(pool)
            .await
        })?)
    }

    /// Keys of `user_id` that are not revoked, newest first.
    pub async fn api_keys_of(&self, user_id: &str) -> Result<Vec<ApiKeyRow>, StorageError> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT id, user_id, name, prefix, scopes, premium, created_at, expires_at, last_used, revoked_at \
                 FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC, id",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await
        })?)
    }

    /// Revokes key `id` if `owner` (or anyone, when `None`) holds it, and then writes `event`
    /// to the outbox, in one transaction; whether one was revoked.
    pub async fn revoke_api_key(
        &self,
        id: &str,
        owner: Option<&str>,
        now: Timestamp,
        event: &Event,
    ) -> Result<bool, StorageError> {
        let revoked = with_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(
                "UPDATE api_keys SET revoked_at = $3 WHERE id = $1 AND ($2 IS NULL OR user_id = $2) AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(owner)
            .bind(now.as_micros())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n > 0 {
                tx.write_event(event).await?;
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            Ok::<_, StorageError>(n > 0)
        })?;
        if revoked {
            self.outbox.committed();
        }
        Ok(revoked)
    }

    pub async fn touch_api_key(&self, id: &str, now: Timestamp) -> Result<(), StorageError> {
        with_db!(&self.db, |pool| {
            sqlx::query("UPDATE api_keys SET last_used = $2 WHERE id = $1")
                .bind(id)
                .bind(now.as_micros())
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }
}

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

impl Store {
    /// A page of users narrowed by `f` (its role, status and search; not its limit and
    /// offset) and by the list request `q` (built against [`USER_LISTING`]).
    pub async fn list_users_page(&self, f: &UserFilter, q: &ListQuery) -> Result<Page<UserRow>, StorageError> {
        const BASE: &str = "($1 IS NULL OR status = $1) \
            AND ($2 IS NULL OR id IN (SELECT user_id FROM user_roles WHERE role = $2)) \
            AND ($3 IS NULL OR username_key LIKE $3 ESCAPE '\\' OR email_key LIKE $3 ESCAPE '\\')";
        let search = f.search.as_deref().map(|s| format!("%{}%", escape_like(&fold(s))));
        let b = q.build(4);
        let count_sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM users WHERE {BASE} AND {}", b.filter));
        let list_sql = sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE {BASE} AND {} {} {} {}",
            b.filter, b.keyset, b.order, b.window
        ));
        let (rows, total) = with_db!(&self.db, |pool| {
            let count = sqlx::query_scalar(count_sql).bind(&f.status).bind(&f.role).bind(&search);
            let total: i64 = nexus_kernel::bind_values!(count, &b.filter_params).fetch_one(pool).await?;
            let list = sqlx::query_as(list_sql).bind(&f.status).bind(&f.role).bind(&search);
            let rows: Vec<UserRow> = nexus_kernel::bind_values!(list, &b.params).fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((rows, total))
        })?;
        let rows = self.attach_roles(rows).await?;
        Ok(q.finish(rows, Some(total)))
    }

    /// A page of `user_id`'s unrevoked API keys, by the list request `q` ([`API_KEY_LISTING`]).
    pub async fn api_keys_page(&self, user_id: &str, q: &ListQuery) -> Result<Page<ApiKeyRow>, StorageError> {
        const COLUMNS: &str =
            "id, user_id, name, prefix, scopes, premium, created_at, expires_at, last_used, revoked_at";
        let b = q.build(2);
        let base = "user_id = $1 AND revoked_at IS NULL";
        let count_sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM api_keys WHERE {base} AND {}", b.filter));
        let list_sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_keys WHERE {base} AND {} {} {} {}",
            b.filter, b.keyset, b.order, b.window
        ));
        let (rows, total) = with_db!(&self.db, |pool| {
            let count = sqlx::query_scalar(count_sql).bind(user_id);
            let total: i64 = nexus_kernel::bind_values!(count, &b.filter_params).fetch_one(pool).await?;
            let list = sqlx::query_as(list_sql).bind(user_id);
            let rows: Vec<ApiKeyRow> = nexus_kernel::bind_values!(list, &b.params).fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((rows, total))
        })?;
        Ok(q.finish(rows, Some(total)))
    }
}
