//! Who is calling: the authenticated caller every domain operation takes, and the permissions
//! it holds. Identity makes principals; every other domain only reads them.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::error::Failure;

/// The caller lacks the permission named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("missing permission {0}")]
pub struct Denied(pub String);

impl From<Denied> for Failure {
    fn from(d: Denied) -> Self {
        Failure::forbidden(&d.0)
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An access token of session `sid`.
    Token { jti: String, sid: String, expires_at: i64 },
    /// An API key.
    ApiKey { key_id: String, premium: bool },
}

/// An authenticated user (directly or through one of their API keys).
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub username: String,
    pub roles: Vec<String>,
    pub permissions: Permissions,
    pub credential: Credential,
}

impl Principal {
    /// The operator at the command line: acts with every permission, audited as `system`.
    pub fn system() -> Self {
        Self {
            user_id: String::from("system"),
            username: String::from("system"),
            roles: vec![String::from("admin")],
            permissions: Permissions::all(),
            credential: Credential::ApiKey { key_id: String::from("cli"), premium: false },
        }
    }

    pub fn has(&self, permission: &str) -> bool {
        self.permissions.has(permission)
    }

    /// `Ok` when the caller holds `permission`, else a 403 naming it.
    pub fn require(&self, permission: &str) -> Result<(), Denied> {
        if self.has(permission) { Ok(()) } else { Err(Denied(permission.to_string())) }
    }

    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin") && self.permissions.is_all()
    }

    /// The role the secrets manager shows: `admin` if held, else the first.
    pub fn primary_role(&self) -> &str {
        if self.roles.iter().any(|r| r == "admin") {
            "admin"
        } else {
            self.roles.first().map_or("user", String::as_str)
        }
    }

    /// Whether this caller came with an API key marked premium (for rate-limit tiers).
    pub fn is_premium_key(&self) -> bool {
        matches!(self.credential, Credential::ApiKey { premium: true, .. })
    }
}

/// Every permission Nexus checks. `*` (held by `admin`) grants all of them.
pub const ALL_PERMISSIONS: &[&str] = &[
    "read:system",
    "read:metrics",
    "admin:config",
    "admin:services",
    "write:cache",
    "admin:backup",
    "admin:security",
    "user.read",
    "user.write",
    "auth.admin",
    "content.read",
    "content.write",
    "content.publish",
    "secret.read",
    "secret.write",
    "secret.delete",
    "audit.read",
    "plugin.read",
    "plugin.write",
    "plugin.admin",
    "plugins.admin",
    "database.read",
    "database.write",
    "documents.read",
    "documents.write",
    "documents.admin",
    "analytics.read",
    "analytics.write",
    "webhook.read",
    "webhook.write",
    "media.read",
    "media.write",
    "media.arr",
];

/// A set of permission strings; `*` stands for all. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions(Arc<BTreeSet<String>>);

impl Permissions {
    pub fn from_set(set: BTreeSet<String>) -> Self {
        Self(Arc::new(set))
    }

    /// Every permission (`*`).
    pub fn all() -> Self {
        Self(Arc::new(BTreeSet::from([String::from("*")])))
    }

    /// The permissions as held (`*` not expanded).
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn has(&self, permission: &str) -> bool {
        self.0.contains("*") || self.0.contains(permission)
    }

    pub fn is_all(&self) -> bool {
        self.0.contains("*")
    }

    /// The explicit list (with `*` expanded), for showing.
    pub fn list(&self) -> Vec<String> {
        if self.is_all() {
            ALL_PERMISSIONS.iter().map(|p| (*p).to_string()).collect()
        } else {
            self.0.iter().cloned().collect()
        }
    }

    /// What an API key with `scopes` may do on behalf of an owner holding `self`: the
    /// intersection of both. No scopes means the owner's permissions. A scope is a permission,
    /// or `read` (every read permission), `write` (every change to content and data, but no
    /// administration or user management) or `admin` (everything).
    pub fn narrowed_to(&self, scopes: &[String]) -> Permissions {
        if scopes.is_empty() {
            return self.clone();
        }
        let mut granted = BTreeSet::new();
        for scope in scopes {
            match scope.as_str() {
                "admin" | "*" => {
                    granted.insert("*".to_string());
                }
                "read" => granted.extend(ALL_PERMISSIONS.iter().filter(|p| is_read(p)).map(|p| (*p).to_string())),
                "write" => granted.extend(ALL_PERMISSIONS.iter().filter(|p| is_write(p)).map(|p| (*p).to_string())),
                other => {
                    granted.insert(other.to_string());
                }
            }
        }
        let scoped = Permissions(Arc::new(granted));
        if scoped.is_all() {
            return self.clone();
        }
        if self.is_all() {
            return scoped;
        }
        Permissions(Arc::new(self.0.intersection(&scoped.0).cloned().collect()))
    }
}

fn is_read(permission: &str) -> bool {
    permission.starts_with("read:") || permission.ends_with(".read")
}

/// Changes to content and data; administrative permissions (`auth.admin`, `admin:*`,
/// `plugin.admin`) and user management come only with the `admin` scope or by name.
fn is_write(permission: &str) -> bool {
    permission.starts_with("write:")
        || (permission != "user.write"
            && (permission.ends_with(".write") || permission.ends_with(".delete") || permission.ends_with(".publish")))
}
