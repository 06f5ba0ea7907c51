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
        for role in &p.roles {
            if !self.roles.permissions(std::slice::from_ref(role)).has(permission) {
                continue;
            }
            let Some(patterns) = self.by_role.get(role) else { return Scope::All };
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
