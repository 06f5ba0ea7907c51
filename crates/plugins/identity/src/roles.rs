//! Roles and the permissions they grant. Built-in roles can be replaced and new ones added
//! through `auth.roles` in the configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

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
];

fn builtin() -> BTreeMap<String, Vec<String>> {
    let role = |perms: &[&str]| perms.iter().map(|p| (*p).to_string()).collect::<Vec<_>>();
    BTreeMap::from([
        ("admin".to_string(), role(&["*"])),
        (
            "user".to_string(),
            role(&[
                "content.read",
                "content.write",
                "secret.read",
                "secret.write",
                "secret.delete",
                "database.read",
                "database.write",
                "documents.read",
                "documents.write",
                "analytics.write",
                "plugin.read",
                "webhook.read",
                "webhook.write",
                "media.read",
            ]),
        ),
        (
            "editor".to_string(),
            role(&[
                "content.read",
                "content.write",
                "content.publish",
                "user.read",
                "database.read",
                "database.write",
                "documents.read",
                "documents.write",
                "analytics.write",
                "plugin.read",
                "media.read",
                "media.write",
            ]),
        ),
        (
            "viewer".to_string(),
            role(&[
                "content.read",
                "read:system",
                "read:metrics",
                "plugin.read",
                "database.read",
                "documents.read",
                "media.read",
            ]),
        ),
        (
            "service".to_string(),
            role(&[
                "read:system",
                "read:metrics",
                "analytics.write",
                "secret.read",
                "database.read",
                "database.write",
                "documents.read",
                "documents.write",
                "plugin.read",
            ]),
        ),
    ])
}

/// The role table in effect: each role's permissions, built once, since every authenticated
/// request needs its holder's and most users hold one role.
#[derive(Debug, Clone)]
pub struct Roles {
    table: BTreeMap<String, Permissions>,
}

impl Roles {
    pub fn new(overrides: &BTreeMap<String, Vec<String>>) -> Self {
        let mut table = builtin();
        for (name, perms) in overrides {
            table.insert(name.clone(), perms.clone());
        }
        let table =
            table.into_iter().map(|(name, perms)| (name, Permissions(Arc::new(perms.into_iter().collect())))).collect();
        Self { table }
    }

    pub fn exists(&self, role: &str) -> bool {
        self.table.contains_key(role)
    }

    pub fn names(&self) -> Vec<String> {
        self.table.keys().cloned().collect()
    }

    /// The permissions granted by `roles` together.
    pub fn permissions(&self, roles: &[String]) -> Permissions {
        if let [role] = roles {
            return self.table.get(role).cloned().unwrap_or_default();
        }
        let mut set = BTreeSet::new();
        for role in roles {
            if let Some(perms) = self.table.get(role) {
                set.extend(perms.0.iter().cloned());
            }
        }
        Permissions(Arc::new(set))
    }
}

/// A set of permission strings; `*` stands for all. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions(Arc<BTreeSet<String>>);

impl Permissions {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_holds_everything_and_keys_narrow_it() {
        let roles = Roles::new(&BTreeMap::new());
        let admin = roles.permissions(&["admin".into()]);
        assert!(admin.has("secret.delete"));
        let read_only = admin.narrowed_to(&["read".into()]);
        assert!(read_only.has("secret.read") && !read_only.has("secret.write"));
        let write = admin.narrowed_to(&["write".into()]);
        assert!(write.has("secret.write") && write.has("content.publish"));
        assert!(!write.has("auth.admin") && !write.has("admin:config") && !write.has("user.write"));
        let viewer = roles.permissions(&["viewer".into()]);
        let widened = viewer.narrowed_to(&["write".into(), "content.read".into()]);
        assert!(widened.has("content.read") && !widened.has("secret.write"), "a key never exceeds its owner");
    }

    #[test]
    fn one_role_alone_grants_what_it_grants_among_others() {
        let roles = Roles::new(&BTreeMap::from([("dba".to_string(), vec!["secret.read".to_string()])]));
        for role in ["admin", "user", "editor", "viewer", "service", "dba"] {
            let alone = roles.permissions(&[role.to_string()]);
            assert_eq!(alone, roles.permissions(&[role.to_string(), role.to_string()]), "{role}");
        }
        assert_eq!(roles.permissions(&["nobody".into()]), Permissions::default());
        assert!(roles.permissions(&["dba".into()]).has("secret.read"));
    }
}
