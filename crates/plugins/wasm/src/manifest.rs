//! A package's `manifest.toml`: what the plugin is, what it needs and asks for, and what it
//! serves. Checked whole before anything of the package is compiled.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The WIT versions of `nexus:plugin` this host can load (`wit/nexus-plugin`).
pub const SUPPORTED_WIT: &[&str] = &["0.1.0"];

/// Capabilities a manifest may ask for. `log` is always granted.
pub const CAPABILITIES: &[&str] = &["log", "config", "kv", "events.publish", "identity", "collections"];

/// Path segments below `/api/plugins/{id}` that the plugin manager owns.
const RESERVED: &[&str] = &["status", "config", "rollback"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageManifest {
    pub id: String,
    pub name: String,
    pub version: String,
    #[serde(default = "default_category")]
    pub category: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub author: String,
    #[serde(default)]
    pub license: String,
    #[serde(default)]
    pub repository: Option<String>,
    /// Plugin id → semver requirement.
    #[serde(default)]
    pub dependencies: BTreeMap<String, String>,
    /// The `nexus:plugin` version it was built against.
    pub wit: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Event type patterns delivered to `handle-event`.
    #[serde(default)]
    pub events: Vec<String>,
    /// Document collections it reads and writes (capability `collections`).
    #[serde(default)]
    pub collections: Vec<String>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub rpc: Vec<RpcSpec>,
    #[serde(default = "default_schema")]
    pub config_schema: Value,
    /// Its configuration before any change made through the API.
    #[serde(default)]
    pub config: Option<Value>,
    #[serde(default)]
    pub limits: Limits,
}

fn default_category() -> String {
    String::from("integration")
}

fn default_schema() -> Value {
    serde_json::json!({"type": "object"})
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub method: String,
    /// `/x/{param}` (below `/api/plugins/{id}`) or `/api/...` (a path of its own).
    pub path: String,
    #[serde(default)]
    pub description: String,
    /// Served without authentication.
    #[serde(default)]
    pub public: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcSpec {
    pub method: String,
    #[serde(default)]
    pub description: String,
    /// Needed to call it; any authenticated caller when absent.
    #[serde(default)]
    pub permission: Option<String>,
}

/// What one call may use. The host caps each at its own maximum.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub memory_mb: u32,
    pub timeout_ms: u64,
    /// Instructions (fuel units) per call; unlimited when absent.
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self { memory_mb: 64, timeout_ms: 1000, fuel: None }
    }
}

/// A route of an installed plugin, its path made absolute and split for matching.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: String,
    /// `/api/plugins/{id}/links/{code}`: the template, as documented and measured.
    pub template: String,
    pub segments: Vec<Segment>,
    pub description: String,
    pub public: bool,
    /// Whether it lies outside `/api/plugins/{id}`.
    pub own_path: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param(String),
    /// `{*rest}`: the rest of the path, last only.
    Rest(String),
}

impl Route {
    /// Whether `method path` is this route.
    pub fn matches(&self, method: &str, path: &[&str]) -> bool {
        let head_of_get = self.method == "GET" && method == "HEAD";
        if !(self.method.eq_ignore_ascii_case(method) || head_of_get) {
            return false;
        }
        segments_match(&self.segments, path)
    }
}

fn segments_match(pattern: &[Segment], path: &[&str]) -> bool {
    let mut i = 0;
    for seg in pattern {
        match seg {
            Segment::Rest(_) => return true,
            Segment::Literal(l) => {
                if path.get(i).is_none_or(|p| p != l) {
                    return false;
                }
            }
            Segment::Param(_) => {
                if path.get(i).is_none_or(|p| p.is_empty()) {
                    return false;
                }
            }
        }
        i += 1;
    }
    i == path.len()
}

/// Whether two templates can match the same path (a collision).
pub fn overlap(a: &[Segment], b: &[Segment]) -> bool {
    let (mut i, mut j) = (0, 0);
    loop {
        match (a.get(i), b.get(j)) {
            (None, None) => return true,
            (Some(Segment::Rest(_)), _) | (_, Some(Segment::Rest(_))) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(Segment::Literal(x)), Some(Segment::Literal(y))) if x != y => return false,
            _ => {}
        }
        i += 1;
        j += 1;
    }
}

/// Splits a template (`/api/x/{id}`) into segments; `None` when malformed.
pub fn parse_template(path: &str) -> Option<Vec<Segment>> {
    let mut out = Vec::new();
    let parts: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    for (n, part) in parts.iter().enumerate() {
        let seg = if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            if let Some(rest) = inner.strip_prefix('*') {
                if n + 1 != parts.len() || !valid_name(rest) {
                    return None;
                }
                Segment::Rest(rest.to_string())
            } else if valid_name(inner) {
                Segment::Param(inner.to_string())
            } else {
                return None;
            }
        } else if !part.is_empty()
            && part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
        {
            Segment::Literal((*part).to_string())
        } else {
            return None;
        };
        out.push(seg);
    }
    Some(out)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A plugin id: lowercase letters, digits, `_` and `-`, starting with a letter.
pub fn valid_id(id: &str) -> bool {
    (2..=64).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

impl PackageManifest {
    pub fn parse(text: &str) -> Result<Self, String> {
        let manifest: PackageManifest = toml::from_str(text).map_err(|e| format!("manifest.toml: {}", e.message()))?;
        manifest.check()?;
        Ok(manifest)
    }

    /// Every rule a manifest must follow, one message for the first broken.
    fn check(&self) -> Result<(), String> {
        if !valid_id(&self.id) {
            return Err(format!(
                "manifest.toml: id `{}` must be 2-64 lowercase letters, digits, `_` or `-`, starting with a letter",
                self.id
            ));
        }
        if self.name.trim().is_empty() {
            return Err(String::from("manifest.toml: name is required"));
        }
        semver::Version::parse(&self.version)
            .map_err(|e| format!("manifest.toml: version `{}` is not semver: {e}", self.version))?;
        if !SUPPORTED_WIT.contains(&self.wit.as_str()) {
            return Err(format!(
                "manifest.toml: wit `{}` is not supported by this server (supported: {})",
                self.wit,
                SUPPORTED_WIT.join(", ")
            ));
        }
        for (dep, req) in &self.dependencies {
            semver::VersionReq::parse(req)
                .map_err(|e| format!("manifest.toml: dependency `{dep}` has an invalid requirement `{req}`: {e}"))?;
        }
        for cap in &self.capabilities {
            if !CAPABILITIES.contains(&cap.as_str()) {
                return Err(format!("manifest.toml: unknown capability `{cap}` (known: {})", CAPABILITIES.join(", ")));
            }
        }
        for c in &self.collections {
            let ok = c.len() <= 64
                && c.starts_with(|ch: char| ch.is_ascii_alphabetic())
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err(format!("manifest.toml: `{c}` is not a collection name"));
            }
        }
        for pattern in &self.events {
            if !nexus_kernel::events::valid_pattern(pattern) {
                return Err(format!("manifest.toml: `{pattern}` is not a valid event pattern"));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for rpc in &self.rpc {
            if rpc.method.is_empty()
                || rpc.method.len() > 100
                || !rpc.method.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!("manifest.toml: RPC method `{}` must be letters, digits, `_` or `-`", rpc.method));
            }
            if !seen.insert(rpc.method.as_str()) {
                return Err(format!("manifest.toml: RPC method `{}` is declared twice", rpc.method));
            }
        }
        if !self.config_schema.is_object() {
            return Err(String::from("manifest.toml: config_schema must be a table"));
        }
        if let Some(config) = &self.config
            && !config.is_object()
        {
            return Err(String::from("manifest.toml: config must be a table"));
        }
        let routes = self.routes()?;
        for (n, a) in routes.iter().enumerate() {
            for b in routes.iter().skip(n + 1) {
                if a.method == b.method && overlap(&a.segments, &b.segments) && a.template == b.template {
                    return Err(format!("manifest.toml: route {} {} is declared twice", a.method, a.template));
                }
            }
        }
        Ok(())
    }

    /// Its routes, with absolute templates.
    pub fn routes(&self) -> Result<Vec<Route>, String> {
        let base = format!("/api/plugins/{}", self.id);
        let mut out = Vec::new();
        for spec in &self.routes {
            let method = spec.method.to_ascii_uppercase();
            if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
                return Err(format!(
                    "manifest.toml: route method `{}` must be GET, POST, PUT, PATCH or DELETE",
                    spec.method
                ));
            }
            let own_path = spec.path.starts_with("/api/");
            let template = if own_path { spec.path.clone() } else { format!("{base}{}", spec.path) };
            let segments = parse_template(&template)
                .ok_or_else(|| format!("manifest.toml: route path `{}` is malformed", spec.path))?;
            if !own_path {
                match segments.get(3) {
                    None => {
                        return Err(format!(
                            "manifest.toml: route `{}` would be /api/plugins/{}, which the plugin manager serves",
                            spec.path, self.id
                        ));
                    }
                    Some(Segment::Literal(first)) if RESERVED.contains(&first.as_str()) && segments.len() == 4 => {
                        return Err(format!("manifest.toml: route `{}` is reserved for the plugin manager", spec.path));
                    }
                    Some(Segment::Param(_) | Segment::Rest(_)) if segments.len() == 4 && method == "PUT" => {
                        return Err(format!(
                            "manifest.toml: route PUT `{}` would take the plugin manager's status and config",
                            spec.path
                        ));
                    }
                    _ => {}
                }
            } else if template.starts_with("/api/plugins/") || template == "/api/plugins" {
                return Err(format!(
                    "manifest.toml: route `{}` lies under /api/plugins; use a path relative to the plugin",
                    spec.path
                ));
            }
            out.push(Route {
                method,
                template,
                segments,
                description: spec.description.clone(),
                public: spec.public,
                own_path,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(t: &str) -> Vec<Segment> {
        parse_template(t).unwrap_or_default()
    }

    #[test]
    fn templates_match_and_overlap() {
        let r = Route {
            method: "GET".into(),
            template: "/api/s/{code}".into(),
            segments: seg("/api/s/{code}"),
            description: String::new(),
            public: false,
            own_path: true,
        };
        assert!(r.matches("GET", &["api", "s", "abc"]));
        assert!(r.matches("HEAD", &["api", "s", "abc"]));
        assert!(!r.matches("GET", &["api", "s"]));
        assert!(!r.matches("POST", &["api", "s", "abc"]));
        assert!(overlap(&seg("/api/users/{id}"), &seg("/api/users/me")));
        assert!(overlap(&seg("/api/x/{*rest}"), &seg("/api/x/a/b")));
        assert!(!overlap(&seg("/api/users/{id}"), &seg("/api/users/{id}/roles")));
        assert!(parse_template("/api/x/{*rest}/y").is_none());
        assert!(parse_template("api/x").is_none());
    }
}
