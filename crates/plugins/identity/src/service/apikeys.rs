//! API keys: shown once at creation, stored as hashes, revocable, expiring. A key made on
//! one surface works on all of them; only its printed form differs.

use nexus_kernel::client::ClientMeta;
use nexus_kernel::clock::Timestamp;
use nexus_kernel::error::FieldError;
use serde_json::json;

use super::Identity;
use super::revocation::Kind;
use crate::error::IdentityError;
use crate::principal::Principal;
use crate::roles::ALL_PERMISSIONS;
use crate::store::ApiKeyRow;
use crate::tokens;

/// Which surface's key format to issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStyle {
    /// `sk_live_…` (framework)
    Framework,
    /// `nx_…` (secrets manager)
    Secrets,
    /// `nexus_key_…` (media platform)
    Media,
}

impl KeyStyle {
    fn prefix(self, premium: bool) -> &'static str {
        match (self, premium) {
            (KeyStyle::Framework, _) => "sk_live_",
            (KeyStyle::Secrets, _) => "nx_",
            (KeyStyle::Media, false) => "nexus_key_",
            (KeyStyle::Media, true) => "nexus_premium_key_",
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<Timestamp>,
    pub premium: bool,
    pub style: KeyStyle,
}

/// A key as listed (never with its secret).
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub premium: bool,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub last_used: Option<Timestamp>,
}

impl From<ApiKeyRow> for ApiKey {
    fn from(r: ApiKeyRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            prefix: r.prefix,
            scopes: serde_json::from_str(&r.scopes).unwrap_or_default(),
            premium: r.premium,
            created_at: Timestamp::from_micros(r.created_at),
            expires_at: r.expires_at.map(Timestamp::from_micros),
            last_used: r.last_used.map(Timestamp::from_micros),
        }
    }
}

fn valid_scope(scope: &str) -> bool {
    matches!(scope, "read" | "write" | "admin") || ALL_PERMISSIONS.contains(&scope)
}

impl Identity {
    /// Creates a key for the caller; returns it with its secret, which is never shown again.
    pub async fn create_api_key(
        &self,
        owner: &Principal,
        new: NewApiKey,
        client: &ClientMeta,
    ) -> Result<(ApiKey, String), IdentityError> {
        let mut errors = Vec::new();
        let name = new.name.trim().to_string();
        if name.is_empty() || name.chars().count() > 100 {
            errors.push(FieldError::new("name", "Name must be 1-100 characters"));
        }
        let now = self.kernel.clock.now();
        if new.expires_at.is_some_and(|t| t <= now) {
            errors.push(FieldError::new("expires_at", "Expiry must be in the future"));
        }
        for scope in &new.scopes {
            if !valid_scope(scope) {
                errors.push(FieldError::new("scopes", format!("Unknown scope `{scope}`")));
            }
        }
        if !errors.is_empty() {
            return Err(IdentityError::Invalid(errors));
        }
        if new.premium {
            owner.require("auth.admin")?;
        }
        let kind = new.style.prefix(new.premium);
        let key = format!("{kind}{}", nexus_kernel::id::random_alphanumeric(40));
        let prefix: String = key.chars().take(kind.len() + 5).collect();
        let row = ApiKeyRow {
            id: format!("ak_live_{}", nexus_kernel::id::random_alphanumeric(24)),
            user_id: owner.user_id.clone(),
            name,
            prefix,
            scopes: json!(new.scopes).to_string(),
            premium: new.premium,
            created_at: now.as_micros(),
            expires_at: new.expires_at.map(Timestamp::as_micros),
            last_used: None,
            revoked_at: None,
        };
        let event = self.kernel.events.envelope(
            "identity",
            "apikey.created",
            json!({ "key_id": row.id, "user_id": row.user_id, "name": row.name, "prefix": row.prefix }),
        );
        self.store.insert_api_key(&row, &tokens::digest(&key), &event).await?;
        self.audit("apikey.create", &owner.user_id, &row.id, client, true, json!({ "name": row.name })).await;
        Ok((row.into(), key))
    }

    /// The caller's keys that are not revoked.
    pub async fn list_api_keys(&self, owner: &Principal) -> Result<Vec<ApiKey>, IdentityError> {
        Ok(self.store.api_keys_of(&owner.user_id).await?.into_iter().map(ApiKey::from).collect())
    }

    /// Revokes key `id` of the caller (any user's key with `auth.admin`).
    pub async fn revoke_api_key(&self, actor: &Principal, id: &str, client: &ClientMeta) -> Result<(), IdentityError> {
        let owner = if actor.has("auth.admin") { None } else { Some(actor.user_id.as_str()) };
        let now = self.kernel.clock.now();
        let event = self.kernel.events.envelope(
            "identity",
            "apikey.revoked",
            json!({ "key_id": id, "revoked_by": actor.user_id }),
        );
        if !self.store.revoke_api_key(id, owner, now, &event).await? {
            self.audit("apikey.revoke", &actor.user_id, id, client, false, json!({ "reason": "not found" })).await;
            return Err(IdentityError::NotFound("API key"));
        }
        let horizon = now.add_seconds(60).as_micros();
        self.store.insert_revocation(Kind::ApiKey.as_str(), id, now.as_micros(), horizon).await?;
        self.keys.invalidate_all();
        self.announce(Kind::ApiKey, id, now.as_micros()).await;
        self.audit("apikey.revoke", &actor.user_id, id, client, true, json!({})).await;
        Ok(())
    }
}
