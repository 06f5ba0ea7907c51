//! Path-prefix policies: `secrets.policies` narrows, per role, the paths on which that role's
//! secret permissions apply.
//!
//! A caller may do `permission` on `path` when they hold `permission` (after any API-key
//! scoping) and at least one of their roles both grants it and either has no policy (every
//! path) or has a pattern matching `path`. A pattern is an exact path, or ends in `*` and
//! matches every path starting with what precedes the `*` (`prod/database/*`); `*` alone
//! matches everything.

use std::collections::BTreeMap;

use nexus_identity::Principal;
use nexus_identity::roles::Roles;

#[derive(Debug, Clone)]
pub struct Policies {
    by_role: BTreeMap<String, Vec<String>>,
    roles: Roles,
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
        p.roles.iter().any(|role| {
            self.roles.permissions(std::slice::from_ref(role)).has(permission)
                && self.by_role.get(role).is_none_or(|patterns| patterns.iter().any(|pat| matches(pat, path)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

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
