//! Users: validation, creation, changes, deletion, and the first admin.

use std::sync::Arc;

use nexus_kernel::client::ClientMeta;
use nexus_kernel::clock::Timestamp;
use nexus_kernel::error::FieldError;
use serde_json::{Value, json};

use super::Identity;
use super::cache::Entry;
use crate::error::IdentityError;
use crate::principal::{Credential, Principal};
use crate::store::{UserFilter, UserRow};

pub const STATUSES: &[&str] = &["active", "inactive", "suspended"];

/// A user as the domain hands it out (never with a password hash).
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub username: String,
    pub email: String,
    pub full_name: String,
    pub roles: Vec<String>,
    pub status: String,
    pub metadata: Value,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_login: Option<Timestamp>,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        Self {
            id: r.id,
            username: r.username,
            email: r.email,
            full_name: r.full_name,
            roles: r.roles,
            status: r.status,
            metadata: serde_json::from_str(&r.metadata).unwrap_or_else(|_| json!({})),
            created_at: Timestamp::from_micros(r.created_at),
            updated_at: Timestamp::from_micros(r.updated_at),
            last_login: r.last_login.map(Timestamp::from_micros),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub username: String,
    pub email: String,
    pub password: String,
    pub full_name: Option<String>,
    pub roles: Option<Vec<String>>,
    pub status: Option<String>,
    pub metadata: Option<Value>,
}

/// Changes to a user; absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub username: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    /// Proof for changing one's own password or email: a bearer token alone must not be enough
    /// to take over an account for good. Not needed when someone else (an administrator)
    /// makes the change.
    pub current_password: Option<String>,
    pub full_name: Option<String>,
    pub roles: Option<Vec<String>>,
    pub status: Option<String>,
    pub metadata: Option<Value>,
}

/// Roles in a stable order, each once, as they are stored and shown.
fn normalize_roles(mut roles: Vec<String>) -> Vec<String> {
    roles.sort();
    roles.dedup();
    roles
}

fn check_username(name: &str, errors: &mut Vec<FieldError>) {
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+'));
    if !(3..=64).contains(&name.chars().count()) || !ok_chars {
        errors.push(FieldError::new("username", "Username must be 3-64 characters of letters, digits and . _ - @ +"));
    }
}

fn check_email(email: &str, errors: &mut Vec<FieldError>) {
    let valid = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if !valid {
        errors.push(FieldError::new("email", "Invalid email format"));
    }
}

/// Reading other users.
pub const READ_USERS: &str = "user.read";
/// Creating, changing (beyond one's own profile) and deleting users.
pub const WRITE_USERS: &str = "user.write";

impl Identity {
    fn check_roles(&self, roles: &[String], errors: &mut Vec<FieldError>) {
        if roles.is_empty() {
            errors.push(FieldError::new("roles", "At least one role is required"));
        }
        for role in roles {
            if !self.roles.exists(role) {
                errors.push(FieldError::new(
                    "roles",
                    format!("Unknown role `{role}`; known: {}", self.roles.names().join(", ")),
                ));
            }
        }
    }

    /// User `id` as the read paths show it, from memory when it is there (see
    /// [`cache`](super::cache) for how fresh that is). Decisions that grant access read
    /// [`fresh_user`](Self::fresh_user) instead.
    pub async fn get_user(&self, id: &str) -> Result<User, IdentityError> {
        Ok(self.user_entry(id).await?.user.clone())
    }

    /// User `id`, if `caller` may see them: themselves, or anyone with `user.read`.
    pub async fn get_user_for(&self, caller: &Principal, id: &str) -> Result<User, IdentityError> {
        Ok(self.user_entry_for(caller, id).await?.user.clone())
    }

    /// User `id` as `caller` may see it: themselves, or anyone with `user.read`.
    pub(crate) async fn user_entry_for(&self, caller: &Principal, id: &str) -> Result<Arc<Entry>, IdentityError> {
        if caller.user_id != id {
            caller.require(READ_USERS)?;
        }
        self.user_entry(id).await
    }

    /// The cache entry of user `id`, loading it if needed.
    pub(crate) async fn user_entry(&self, id: &str) -> Result<Arc<Entry>, IdentityError> {
        if let Some(entry) = self.users.get(id) {
            return Ok(entry);
        }
        let ticket = self.users.begin();
        let user = self.fresh_user(id).await?;
        Ok(self.users.store(user, ticket))
    }

    /// User `id` as the database has it now.
    pub(super) async fn fresh_user(&self, id: &str) -> Result<User, IdentityError> {
        self.store.user_by_id(id).await?.map(User::from).ok_or(IdentityError::NotFound("user"))
    }

    /// Users narrowed by `filter`, with the total; for callers trusted already (the shell).
    /// Requests go through [`list_users_for`](Self::list_users_for).
    pub async fn list_users(&self, filter: &UserFilter) -> Result<(Vec<User>, i64), IdentityError> {
        let (rows, total) = self.store.list_users(filter).await?;
        Ok((rows.into_iter().map(User::from).collect(), total))
    }

    /// Users narrowed by `filter`, with the total, if `caller` may read users (`user.read`).
    pub async fn list_users_for(
        &self,
        caller: &Principal,
        filter: &UserFilter,
    ) -> Result<(Vec<User>, i64), IdentityError> {
        caller.require(READ_USERS)?;
        self.list_users(filter).await
    }

    /// Creates a user; `actor` is `None` only for the first admin and the command line.
    pub async fn create_user(
        &self,
        actor: Option<&Principal>,
        new: NewUser,
        client: &ClientMeta,
    ) -> Result<User, IdentityError> {
        if let Some(actor) = actor {
            actor.require(WRITE_USERS)?;
        }
        let mut errors = Vec::new();
        let username = new.username.trim().to_string();
        let email = new.email.trim().to_string();
        check_username(&username, &mut errors);
        check_email(&email, &mut errors);
        if let Some(why) = crate::password::policy_violation(&new.password) {
            errors.push(FieldError::new("password", why));
        }
        let roles = normalize_roles(new.roles.clone().unwrap_or_else(|| vec!["user".to_string()]));
        self.check_roles(&roles, &mut errors);
        let status = new.status.clone().unwrap_or_else(|| "active".to_string());
        if !STATUSES.contains(&status.as_str()) {
            errors.push(FieldError::new("status", "Status must be active, inactive or suspended"));
        }
        let metadata = new.metadata.clone().unwrap_or_else(|| json!({}));
        if !metadata.is_object() {
            errors.push(FieldError::new("metadata", "Metadata must be an object"));
        }
        if !errors.is_empty() {
            return Err(IdentityError::Invalid(errors));
        }
        let password = NewPassword::Plain(new.password);
        self.insert_user(actor, username, email, password, new.full_name, roles, status, metadata, client).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_user(
        &self,
        actor: Option<&Principal>,
        username: String,
        email: String,
        password: NewPassword,
        full_name: Option<String>,
        roles: Vec<String>,
        status: String,
        metadata: Value,
        client: &ClientMeta,
    ) -> Result<User, IdentityError> {
        self.ensure_unique(&[("username", &username), ("email", &email)], None).await?;
        let password_hash = match password {
            NewPassword::Plain(password) => crate::password::hash(password).await.map_err(IdentityError::Internal)?,
            NewPassword::Hashed(hash) => hash,
        };
        let now = Timestamp::now().as_micros();
        let row = UserRow {
            id: nexus_kernel::id::uuid(),
            username,
            email,
            full_name: full_name.unwrap_or_default(),
            password_hash,
            status,
            metadata: metadata.to_string(),
            failed_logins: 0,
            locked_until: None,
            created_at: now,
            updated_at: now,
            last_login: None,
            roles,
        };
        let event = self.kernel.events.envelope(
            "identity",
            "user.created",
            json!({
                "user_id": row.id,
                "username": row.username,
                "email": row.email,
                "roles": row.roles,
                "status": row.status,
            }),
        );
        self.store.insert_user(&row, &event).await.map_err(|e| {
            if e.is_unique_violation() {
                IdentityError::Conflict("username or email already exists".into())
            } else {
                e.into()
            }
        })?;
        let actor_id = actor.map_or("system", |a| a.user_id.as_str());
        self.audit("user.create", actor_id, &row.id, client, true, json!({ "username": row.username })).await;
        Ok(row.into())
    }

    /// Refuses `fields` ((name, value) pairs) whose value another user than `except` already
    /// has as username or email. The unique indexes stay the final word under races.
    async fn ensure_unique(&self, fields: &[(&str, &str)], except: Option<&str>) -> Result<(), IdentityError> {
        for (field, value) in fields {
            if self.store.login_taken(value, except).await? {
                return Err(IdentityError::Conflict(format!("a user with this {field} already exists")));
            }
        }
        Ok(())
    }

    /// Applies `patch` to user `id`. Role, status and password changes revoke the user's
    /// existing tokens; the last active admin cannot be demoted or deactivated.
    pub async fn update_user(
        &self,
        actor: &Principal,
        id: &str,
        mut patch: UserPatch,
        client: &ClientMeta,
    ) -> Result<User, IdentityError> {
        // People may change their own profile; roles, status and anyone else need `user.write`.
        let self_service = actor.user_id == id && patch.roles.is_none() && patch.status.is_none();
        if !self_service {
            actor.require(WRITE_USERS)?;
        }
        patch.roles = patch.roles.map(normalize_roles);
        let mut row = self.store.user_by_id(id).await?.ok_or(IdentityError::NotFound("user"))?;
        let mut errors = Vec::new();
        if let Some(username) = &patch.username {
            check_username(username.trim(), &mut errors);
        }
        if let Some(email) = &patch.email {
            check_email(email.trim(), &mut errors);
        }
        if let Some(password) = &patch.password
            && let Some(why) = crate::password::policy_violation(password)
        {
            errors.push(FieldError::new("password", why));
        }
        if let Some(roles) = &patch.roles {
            self.check_roles(roles, &mut errors);
        }
        if let Some(status) = &patch.status
            && !STATUSES.contains(&status.as_str())
        {
            errors.push(FieldError::new("status", "Status must be active, inactive or suspended"));
        }
        if patch.metadata.as_ref().is_some_and(|m| !m.is_object()) {
            errors.push(FieldError::new("metadata", "Metadata must be an object"));
        }
        if !errors.is_empty() {
            return Err(IdentityError::Invalid(errors));
        }
        let was_admin = row.status == "active" && row.roles.iter().any(|r| r == "admin");
        let roles_changed = patch.roles.as_ref().is_some_and(|r| *r != row.roles);
        let status_changed = patch.status.as_ref().is_some_and(|s| *s != row.status);
        let still_admin = patch.status.as_deref().unwrap_or(&row.status) == "active"
            && patch.roles.as_ref().unwrap_or(&row.roles).iter().any(|r| r == "admin");
        if was_admin && !still_admin && self.store.count_active_with_role("admin", id).await? == 0 {
            return Err(IdentityError::Conflict("the last active admin cannot be demoted or deactivated".into()));
        }
        let username = patch.username.as_deref().map(str::trim).unwrap_or(&row.username).to_string();
        let email = patch.email.as_deref().map(str::trim).unwrap_or(&row.email).to_string();
        // Only values that change can collide; the user's own current ones are theirs.
        let mut changed_logins = Vec::with_capacity(2);
        if crate::store::fold(&username) != crate::store::fold(&row.username) {
            changed_logins.push(("username", username.as_str()));
        }
        if crate::store::fold(&email) != crate::store::fold(&row.email) {
            changed_logins.push(("email", email.as_str()));
        }
        let email_changed = changed_logins.iter().any(|(field, _)| *field == "email");
        if actor.user_id == id && (patch.password.is_some() || email_changed) {
            self.check_current_password(&row, patch.current_password.take(), client).await?;
        }
        self.ensure_unique(&changed_logins, Some(id)).await?;
        let password_changed = patch.password.is_some();
        if let Some(password) = patch.password {
            row.password_hash = crate::password::hash(password).await.map_err(IdentityError::Internal)?;
        }
        row.username = username;
        row.email = email;
        if let Some(v) = patch.full_name {
            row.full_name = v;
        }
        if let Some(v) = patch.roles {
            row.roles = v;
        }
        if let Some(v) = patch.status {
            row.status = v;
        }
        if let Some(v) = patch.metadata {
            row.metadata = v.to_string();
        }
        row.updated_at = Timestamp::now().as_micros();
        let changed = json!({ "roles": roles_changed, "status": status_changed, "password": password_changed });
        let event = self.kernel.events.envelope(
            "identity",
            "user.updated",
            json!({
                "user_id": row.id,
                "username": row.username,
                "roles": row.roles,
                "status": row.status,
                "changed": changed.clone(),
            }),
        );
        let written = self.store.update_user(&row, roles_changed, &event).await;
        // Even a failed write may have committed (a connection lost after COMMIT was sent).
        self.users.invalidate(id);
        written.map_err(|e| {
            if e.is_unique_violation() {
                IdentityError::Conflict("username or email already exists".into())
            } else {
                e.into()
            }
        })?;
        match (&actor.credential, roles_changed || status_changed) {
            // Changing one's own password from a session ends every other session; this one,
            // which just proved the password, goes on.
            (Credential::Token { sid, .. }, false) if password_changed && actor.user_id == id => {
                self.revoke_other_sessions(id, sid).await?;
            }
            (_, true) => self.revoke_user_tokens(id).await?,
            _ if password_changed => self.revoke_user_tokens(id).await?,
            _ => {}
        }
        self.audit("user.update", &actor.user_id, id, client, true, changed).await;
        if password_changed {
            let by = if actor.user_id == id { "self" } else { "administrator" };
            self.audit("user.password_change", &actor.user_id, id, client, true, json!({ "by": by })).await;
        }
        Ok(row.into())
    }

    /// Checks `given`, the proof a user gives to change their own password or email, against
    /// their password. A wrong one counts as a failed login (and may lock the account), so a
    /// stolen token cannot be used to guess the password at leisure.
    async fn check_current_password(
        &self,
        row: &UserRow,
        given: Option<String>,
        client: &ClientMeta,
    ) -> Result<(), IdentityError> {
        let Some(given) = given.filter(|p| !p.is_empty()) else {
            return Err(IdentityError::field(
                "current_password",
                "Your current password is required to change your password or email",
            ));
        };
        let now = self.kernel.clock.now();
        if row.locked_until.is_some_and(|t| t > now.as_micros()) {
            return Err(IdentityError::Locked);
        }
        if crate::password::verify(given, row.password_hash.clone()).await {
            return Ok(());
        }
        let auth = &self.kernel.config.auth;
        let lock_until = now.add_seconds(i64::try_from(auth.lockout_secs).unwrap_or(i64::MAX)).as_micros();
        let locked = self.store.record_login_failure(&row.id, i64::from(auth.lockout_threshold), lock_until).await?;
        let reason = if locked { "wrong current password; account locked" } else { "wrong current password" };
        self.audit("user.update", &row.id, &row.id, client, false, json!({ "reason": reason })).await;
        Err(IdentityError::field("current_password", "Current password is incorrect"))
    }

    /// Deletes user `id`, except the last active admin.
    pub async fn delete_user(&self, actor: &Principal, id: &str, client: &ClientMeta) -> Result<(), IdentityError> {
        actor.require(WRITE_USERS)?;
        let row = self.store.user_by_id(id).await?.ok_or(IdentityError::NotFound("user"))?;
        let is_admin = row.status == "active" && row.roles.iter().any(|r| r == "admin");
        if is_admin && self.store.count_active_with_role("admin", id).await? == 0 {
            return Err(IdentityError::Conflict("the last active admin cannot be deleted".into()));
        }
        self.revoke_user_tokens(id).await?;
        let event =
            self.kernel.events.envelope("identity", "user.deleted", json!({ "user_id": id, "username": row.username }));
        let deleted = self.store.delete_user(id, &event).await;
        self.users.invalidate(id);
        if !deleted? {
            return Err(IdentityError::NotFound("user"));
        }
        self.audit("user.delete", &actor.user_id, id, client, true, json!({ "username": row.username })).await;
        Ok(())
    }

    /// Creates `admin` on an empty database: with `auth.admin_password` if set, else a random
    /// password printed once and written to `<data_dir>/admin-password` (0600).
    pub async fn ensure_admin(&self) -> Result<(), IdentityError> {
        self.ensure_admin_with(None).await
    }

    /// [`Self::ensure_admin`], with the password and hash `prepared` before storage opened
    /// (on a new database) when there are.
    pub async fn ensure_admin_with(&self, prepared: Option<FirstAdmin>) -> Result<(), IdentityError> {
        if self.store.count_users().await? > 0 {
            return Ok(());
        }
        let first = match prepared {
            Some(first) => first,
            None => FirstAdmin::begin(self.kernel.config.auth.admin_password.clone())
                .await
                .map_err(IdentityError::Internal)?,
        };
        let FirstAdmin { password, configured, hash } = first;
        let created = self
            .insert_user(
                None,
                "admin".into(),
                "admin@localhost".into(),
                NewPassword::Hashed(hash),
                Some("Administrator".into()),
                vec!["admin".into()],
                "active".into(),
                json!({}),
                &ClientMeta::default(),
            )
            .await;
        match created {
            Ok(_) => {}
            // Another instance on the same database created it first.
            Err(IdentityError::Conflict(_)) => return Ok(()),
            Err(e) => return Err(e),
        }
        if !configured {
            let path = self.kernel.config.data_dir.join("admin-password");
            super::write_private(&path, &format!("{password}\n"))?;
            println!(
                "Created user `admin` with password: {password}\n(also written to {}; it is not shown again)",
                path.display()
            );
        }
        Ok(())
    }
}

/// A new user's password, or its hash when it was computed ahead.
enum NewPassword {
    Plain(String),
    Hashed(String),
}

/// The first admin's password (the configured one, or a random one to be shown once) and its
/// argon2 hash.
pub struct FirstAdmin {
    password: String,
    configured: bool,
    hash: String,
}

impl std::fmt::Debug for FirstAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirstAdmin").field("configured", &self.configured).finish_non_exhaustive()
    }
}

impl FirstAdmin {
    /// Picks the password (`configured`, else a random one) and hashes it.
    pub async fn begin(configured: Option<String>) -> Result<Self, String> {
        let password = configured.clone().unwrap_or_else(|| nexus_kernel::id::random_alphanumeric(24));
        let hash = crate::password::hash(password.clone()).await?;
        Ok(Self { password, configured: configured.is_some(), hash })
    }
}
