//! The identity service: one place that authenticates, issues and revokes credentials and
//! manages users, whichever surface asks.

mod apikeys;
mod cache;
mod lists;
mod revocation;
mod session;
mod users;

use std::sync::Arc;
use std::time::Duration;

use nexus_kernel::Kernel;
use nexus_kernel::audit::AuditRecord;
use nexus_kernel::client::ClientMeta;
use nexus_kernel::clock::Timestamp;
use serde::Serialize;

pub use apikeys::{ApiKey, KeyStyle, NewApiKey};
pub use session::{LoginRequest, Session, TokenLifetime};
pub use users::{FirstAdmin, NewUser, User, UserPatch};

/// How a user listing is narrowed; part of the service's API, so that other plugins need not
/// reach into the store.
pub use crate::store::UserFilter;

use crate::error::IdentityError;
use crate::principal::{Credential, Presented, Principal};
use crate::roles::Roles;
use crate::store::{ApiKeyRow, IdentityStore};
use crate::tokens::{self, JwtKeys, TokenError};

/// An API key's record with what is needed to act for its owner, cached briefly.
#[derive(Debug, Clone)]
struct KeyOwner {
    key: ApiKeyRow,
    username: String,
    roles: Vec<String>,
    active: bool,
}

#[derive(Debug)]
pub struct Identity {
    kernel: Arc<Kernel>,
    store: Arc<dyn IdentityStore>,
    jwt: JwtKeys,
    roles: Roles,
    revoked: revocation::Revoked,
    /// Announces revocations to the other instances at once, when Redis is configured.
    broadcast: Option<revocation::Broadcast>,
    /// Users for the read paths; see [`cache`] for how fresh they are.
    users: cache::UserCache,
    keys: moka::sync::Cache<String, Arc<KeyOwner>>,
    /// Keys whose `last_used` was written recently, so it is written at most once a minute.
    touched: moka::sync::Cache<String, ()>,
}

impl Identity {
    /// Sets up the service: signing key, first admin, and the revocation watcher.
    pub async fn start(kernel: Arc<Kernel>) -> Result<Arc<Self>, IdentityError> {
        let identity = Self::open(kernel).await?;
        identity.ensure_admin().await?;
        Ok(identity)
    }

    /// [`start`](Self::start) without the first admin, which [`ensure_admin`](Self::ensure_admin)
    /// creates: its password hash takes a core for ~20 ms, which the server spends starting
    /// the other plugins.
    pub async fn open(kernel: Arc<Kernel>) -> Result<Arc<Self>, IdentityError> {
        let auth = &kernel.config.auth;
        let secret = signing_secret(&kernel)?;
        let identity = Arc::new(Self {
            store: crate::store::open(&kernel.db, kernel.outbox.clone()),
            jwt: JwtKeys::new_cached(&secret, &kernel.cache),
            roles: Roles::new(&auth.roles),
            revoked: revocation::Revoked::default(),
            broadcast: kernel
                .redis
                .clone()
                .map(|conn| revocation::Broadcast::new(conn, &kernel.server_id, kernel.events.instance_id())),
            users: cache::UserCache::new(&kernel.cache),
            keys: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(10)).build(),
            touched: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(60)).build(),
            kernel,
        });
        identity.revoked.load(identity.store.as_ref()).await?;
        revocation::watch(Arc::downgrade(&identity));
        if let (Some(url), Some(_)) = (&identity.kernel.config.redis.url, &identity.broadcast) {
            let origin = identity.kernel.events.instance_id().to_string();
            revocation::listen(Arc::downgrade(&identity), url, &identity.kernel.server_id, origin).await;
        }
        cache::follow_remote_changes(Arc::downgrade(&identity), &identity.kernel.events);
        Ok(identity)
    }

    pub fn roles(&self) -> &Roles {
        &self.roles
    }

    pub fn kernel(&self) -> &Arc<Kernel> {
        &self.kernel
    }

    /// Verifies a presented credential and returns who it stands for.
    pub async fn authenticate(&self, presented: &Presented) -> Result<Principal, IdentityError> {
        match presented {
            Presented::Bearer(token) => self.authenticate_token(token),
            Presented::ApiKey(key) => self.authenticate_key(key).await,
        }
    }

    fn authenticate_token(&self, token: &str) -> Result<Principal, IdentityError> {
        let claims = self.jwt.verify_cached(token, self.kernel.clock.unix_seconds()).map_err(|e| match e {
            TokenError::Expired => IdentityError::TokenExpired,
            TokenError::Invalid => IdentityError::InvalidToken,
        })?;
        if self.revoked.rejects(&claims.sid, &claims.sub, claims.iat_us) {
            return Err(IdentityError::InvalidToken);
        }
        Ok(Principal {
            permissions: self.roles.permissions(&claims.roles),
            user_id: claims.sub.clone(),
            username: claims.name.clone(),
            roles: claims.roles.clone(),
            credential: Credential::Token { jti: claims.jti.clone(), sid: claims.sid.clone(), expires_at: claims.exp },
        })
    }

    async fn authenticate_key(&self, key: &str) -> Result<Principal, IdentityError> {
        let hash = tokens::digest(key);
        let owner = match self.keys.get(&hash) {
            Some(owner) => owner,
            None => {
                let row = self.store.api_key_by_hash(&hash).await?.ok_or(IdentityError::InvalidApiKey)?;
                let user = self.store.user_by_id(&row.user_id).await?.ok_or(IdentityError::InvalidApiKey)?;
                let owner = Arc::new(KeyOwner {
                    key: row,
                    username: user.username,
                    roles: user.roles,
                    active: user.status == "active",
                });
                self.keys.insert(hash, owner.clone());
                owner
            }
        };
        let now = self.kernel.clock.now();
        if owner.key.revoked_at.is_some() || !owner.active {
            return Err(IdentityError::InvalidApiKey);
        }
        if owner.key.expires_at.is_some_and(|t| t <= now.as_micros()) {
            return Err(IdentityError::ApiKeyExpired);
        }
        if self.touched.get(&owner.key.id).is_none() {
            self.touched.insert(owner.key.id.clone(), ());
            let store = self.store.clone();
            let id = owner.key.id.clone();
            tokio::spawn(async move {
                if let Err(e) = store.touch_api_key(&id, now).await {
                    tracing::warn!(error = %e, "could not record API key use");
                }
            });
        }
        let scopes: Vec<String> = serde_json::from_str(&owner.key.scopes).unwrap_or_default();
        Ok(Principal {
            user_id: owner.key.user_id.clone(),
            username: owner.username.clone(),
            roles: owner.roles.clone(),
            permissions: self.roles.permissions(&owner.roles).narrowed_to(&scopes),
            credential: Credential::ApiKey { key_id: owner.key.id.clone(), premium: owner.key.premium },
        })
    }

    /// Writes an audit record of an identity action; its loss does not undo the action.
    async fn audit(
        &self,
        action: &str,
        actor: &str,
        target: &str,
        client: &ClientMeta,
        success: bool,
        meta: serde_json::Value,
    ) {
        let rec = AuditRecord {
            action: action.to_string(),
            actor: actor.to_string(),
            target: target.to_string(),
            ip_address: client.ip.clone(),
            user_agent: client.user_agent.clone(),
            success,
            request_id: client.request_id.clone(),
            metadata: meta,
            ..AuditRecord::default()
        };
        self.kernel.audit.record_best_effort(&rec).await;
    }

    /// Recent audited actions of `user_id`, newest first.
    pub async fn activity(&self, user_id: &str, limit: i64) -> Result<Vec<Activity>, IdentityError> {
        let q = nexus_kernel::audit::AuditQuery {
            actor: Some(user_id.to_string()),
            limit: Some(limit),
            ..Default::default()
        };
        let (rows, _) = nexus_kernel::audit::query(&self.kernel.db, &q).await?;
        Ok(rows
            .into_iter()
            .map(|r| Activity {
                action: r.action,
                timestamp: Timestamp::from_micros(r.timestamp).to_rfc3339(),
                success: r.success,
                ip_address: r.ip_address,
            })
            .collect())
    }
}

/// One entry of a user's recent activity.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Activity {
    pub action: String,
    pub timestamp: String,
    pub success: bool,
    pub ip_address: String,
}

/// The HMAC key for access tokens: configured, or generated once into `<data_dir>/jwt.key`.
fn signing_secret(kernel: &Kernel) -> Result<Vec<u8>, IdentityError> {
    if let Some(secret) = &kernel.config.auth.jwt_secret {
        if secret.len() < 32 {
            return Err(IdentityError::Internal(
                "configuration key `auth.jwt_secret` (NEXUS_JWT_SECRET): must be at least 32 characters".into(),
            ));
        }
        return Ok(secret.as_bytes().to_vec());
    }
    let path = kernel.config.data_dir.join("jwt.key");
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 32 => Ok(text.trim().as_bytes().to_vec()),
        Ok(_) => Err(IdentityError::Internal(format!("{} is too short to be a signing key", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = nexus_kernel::id::hex(&nexus_kernel::id::random_bytes::<32>());
            write_private(&path, &secret)?;
            Ok(secret.into_bytes())
        }
        Err(e) => Err(IdentityError::Internal(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Writes `content` to a new file readable only by this user.
fn write_private(path: &std::path::Path, content: &str) -> Result<(), IdentityError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file =
        options.open(path).map_err(|e| IdentityError::Internal(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(content.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| IdentityError::Internal(format!("cannot write {}: {e}", path.display())))
}
