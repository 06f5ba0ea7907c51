//! Path policies: where a role's secret permissions apply. Access is denied unless granted.
//!
//! A caller may do `permission` on `path` when they hold `permission` (after any API-key
//! scoping) and either
//! - `path` is in their personal namespace, `users/{their user id}/…`, or
//! - one of their roles grants `permission` and either has a pattern in `secrets.policies`
//!   matching `path`, or has no entry there and is an administrator role (`admin`, or any role
//!   granting `*`). A role with secret permissions and no entry reaches no shared path.
//!
//! A pattern is an exact path, or ends in `*` and matches every path starting with what
//! precedes the `*` (`prod/database/*`); `*` alone matches everything. The personal namespace
//! is keyed by the user id, not the username, because a username can be changed and then taken
//! by someone else, who would inherit the namespace.

use std::collections::BTreeMap;

use nexus_identity::Principal;
use nexus_identity::roles::Roles;

#[derive(Debug, Clone)]
pub struct Policies {
    by_role: BTreeMap<String, Vec<String>>,
    roles: Roles,
}

/// The permissions a path policy narrows.
pub const SECRET_PERMISSIONS: [&str; 3] = ["secret.read", "secret.write", "secret.delete"];

/// The namespace every user may use for themselves (with the secret permissions they hold).
pub fn personal_prefix(p: &Principal) -> String {
    format!("users/{}/", p.user_id)
}

/// Whether `role` reaches every path without a policy: the administrators.
fn is_admin_role(role: &str, granted: &nexus_identity::roles::Permissions) -> bool {
    role == "admin" || granted.is_all()
}

/// Whether `pattern` matches `path`.
pub fn matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => pattern == path,
    }
}

impl Policies {
    pub fn new(by_role: BTreeMap<String, Vec<String>>, roles: Roles) -> Self {
        Self { by_role, roles }
    }

    /// Whether the configuration is usable; the error names the bad entry.
    pub fn validate(&self) -> Result<(), String> {
        for (role, patterns) in &self.by_role {
            for pattern in patterns {
                let body = pattern.strip_suffix('*').unwrap_or(pattern);
                if body.contains('*') {
                    return Err(format!(
                        "configuration key `secrets.policies.{role}`: `{pattern}`: `*` is allowed only at the end"
                    ));
                }
                if !body.is_empty() {
                    crate::paths::validate_prefix(body)
                        .map_err(|e| format!("configuration key `secrets.policies.{role}`: `{pattern}`: {e}"))?;
                }
            }
        }
        Ok(())
    }

    /// Whether `p` may do `permission` on `path`.
    pub fn allows(&self, p: &Principal, permission: &str, path: &str) -> bool {
        if !p.has(permission) {
            return false;
        }
        if path.starts_with(&personal_prefix(p)) {
            return true;
        }
        p.roles.iter().any(|role| {
            let granted = self.roles.permissions(std::slice::from_ref(role));
            granted.has(permission)
                && match self.by_role.get(role) {
                    Some(patterns) => patterns.iter().any(|pat| matches(pat, path)),
                    None => is_admin_role(role, &granted),
                }
        })
    }

    /// The roles that hold a secret permission but, having no policy, now reach no shared
    /// path: what an installation set up before access was denied by default must look at.
    pub fn unreached_roles(&self) -> Vec<String> {
        self.roles
            .names()
            .into_iter()
            .filter(|role| {
                let granted = self.roles.permissions(std::slice::from_ref(role));
                SECRET_PERMISSIONS.iter().any(|p| granted.has(p))
                    && !self.by_role.contains_key(role)
                    && !is_admin_role(role, &granted)
            })
            .collect()
    }
}

/// The paths on which a caller may use a permission, for narrowing a listing in SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every path.
    All,
    /// Only these paths (`exact`) and paths under these prefixes (`prefixes`); both empty:
    /// no path at all.
    Only { exact: Vec<String>, prefixes: Vec<String> },
}

impl Policies {
    /// Where `p` may do `permission`: the same rule as [`Policies::allows`], as a set of
    /// patterns rather than a test of one path.
    pub fn scope(&self, p: &Principal, permission: &str) -> Scope {
        let (mut exact, mut prefixes) = (Vec::new(), Vec::new());
        if !p.has(permission) {
            return Scope::Only { exact, prefixes };
        }
        prefixes.push(personal_prefix(p));
        for role in &p.roles {
            let granted = self.roles.permissions(std::slice::from_ref(role));
            if !granted.has(permission) {
                continue;
            }
            let Some(patterns) = self.by_role.get(role) else {
                if is_admin_role(role, &granted) {
                    return Scope::All;
                }
                continue;
            };
            for pattern in patterns {
                match pattern.strip_suffix('*') {
                    Some("") => return Scope::All,
                    Some(prefix) => prefixes.push(prefix.to_string()),
                    None => exact.push(pattern.clone()),
                }
            }
        }
        Scope::Only { exact, prefixes }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use nexus_identity::principal::{Credential, Principal};
    use nexus_identity::roles::Roles;

    use super::{Policies, Scope, matches};

    fn caller(id: &str, roles: &[&str], all: &Roles) -> Principal {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        Principal {
            user_id: id.into(),
            username: id.into(),
            permissions: all.permissions(&roles),
            roles,
            credential: Credential::ApiKey { key_id: "k".into(), premium: false },
        }
    }

    #[test]
    fn access_is_denied_unless_granted() {
        let overrides = BTreeMap::from([("root".to_string(), vec!["*".to_string()])]);
        let roles = Roles::new(&overrides);
        let policies = Policies::new(BTreeMap::from([("service".into(), vec!["ci/*".into()])]), roles.clone());
        let (alice, admin, root) =
            (caller("u1", &["user"], &roles), caller("a", &["admin"], &roles), caller("r", &["root"], &roles));
        assert!(!policies.allows(&alice, "secret.read", "app/key"), "no policy: no shared path");
        assert!(policies.allows(&alice, "secret.write", "users/u1/db"));
        assert!(!policies.allows(&alice, "secret.read", "users/u2/db"), "another user's namespace");
        assert!(!policies.allows(&alice, "secret.read", "users/u1"), "the namespace is below the id");
        assert!(policies.allows(&admin, "secret.delete", "users/u2/db") && policies.allows(&root, "secret.read", "x"));
        let ci = caller("s", &["service"], &roles);
        assert!(policies.allows(&ci, "secret.read", "ci/token") && !policies.allows(&ci, "secret.write", "ci/token"));
        assert_eq!(policies.unreached_roles(), ["user"], "service has a policy; admin and root need none");
        assert_eq!(policies.scope(&admin, "secret.read"), Scope::All);
        assert_eq!(
            policies.scope(&alice, "secret.read"),
            Scope::Only { exact: vec![], prefixes: vec!["users/u1/".into()] }
        );
        let viewer = caller("v", &["viewer"], &roles);
        assert_eq!(policies.scope(&viewer, "secret.read"), Scope::Only { exact: vec![], prefixes: vec![] });
    }

    #[test]
    fn patterns() {
        assert!(matches("prod/database/*", "prod/database/password"));
        assert!(matches("prod/database/*", "prod/database/a/b"));
        assert!(!matches("prod/database/*", "prod/api/key"));
        assert!(matches("*", "anything"));
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
    }
}
