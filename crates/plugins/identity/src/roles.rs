//! Roles and the permissions they grant. Built-in roles can be replaced and new ones added
//! through `auth.roles` in the configuration.

use std::collections::{BTreeMap, BTreeSet};

pub use nexus_kernel::principal::{ALL_PERMISSIONS, Permissions};

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
            table.into_iter().map(|(name, perms)| (name, Permissions::from_set(perms.into_iter().collect()))).collect();
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
                set.extend(perms.iter().map(str::to_owned));
            }
        }
        Permissions::from_set(set)
    }
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
