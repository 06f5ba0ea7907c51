//! Plugin management as a domain service: every operation takes the caller and checks its
//! permission here, so HTTP, batch and WebSocket callers get the same rules.

use std::sync::{Arc, OnceLock};

use nexus_kernel::Kernel;
use nexus_kernel::clock::Timestamp;
use nexus_kernel::error::{Failure, FieldError};
use nexus_kernel::events::Event;
use nexus_kernel::plugin::{Handles, Reconfigured, Slot, Status};
use nexus_kernel::principal::Principal;
use serde_json::{Value, json};

use crate::error::ManagerError;

/// Changing plugins needs this; reading them only an authenticated caller.
pub const ADMIN: &str = "plugins.admin";

/// What a list of plugins is narrowed to.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub category: Option<String>,
    pub status: Option<Status>,
}

#[derive(Debug)]
pub struct PluginManager {
    kernel: Arc<Kernel>,
    handles: Handles,
    /// Installs plugins at run time, once a plugin that can has started (WebAssembly plugins).
    installer: OnceLock<Arc<dyn Installer>>,
}

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Where a package to install comes from.
#[derive(Debug, Clone)]
pub enum InstallSource {
    /// `plugins.registry_dir`: `package` (a plugin id or package name), newest or `version`.
    Registry { package: String, version: Option<String> },
    /// An uploaded package and its optional detached signature.
    Upload { file: Vec<u8>, signature: Option<Vec<u8>> },
}

/// An install request: where from, and the capabilities granted (`None`: all it asks for).
#[derive(Debug, Clone)]
pub struct InstallRequest {
    pub source: InstallSource,
    pub grant: Option<Vec<String>>,
}

/// Installs, upgrades, rolls back and uninstalls plugins at run time. Checks nothing about the
/// caller: the manager has.
pub trait Installer: Send + Sync + std::fmt::Debug {
    /// The seed's answer: `{status, plugin: {id, name, version, status}, message}`, with the
    /// steps taken.
    fn install<'a>(&'a self, caller: &'a Principal, request: InstallRequest) -> BoxFuture<'a, Result<Value, Failure>>;
    fn rollback<'a>(&'a self, caller: &'a Principal, id: &'a str) -> BoxFuture<'a, Result<Value, Failure>>;
    /// Removes plugin `id`; its data too when `purge`.
    fn uninstall<'a>(&'a self, caller: &'a Principal, id: &'a str, purge: bool) -> BoxFuture<'a, Result<(), Failure>>;
}

impl PluginManager {
    pub fn new(kernel: Arc<Kernel>, handles: Handles) -> Arc<Self> {
        Arc::new(Self { kernel, handles, installer: OnceLock::new() })
    }

    /// Makes run-time installs possible; the first installer set stays.
    pub fn set_installer(&self, installer: Arc<dyn Installer>) {
        let _ = self.installer.set(installer);
    }

    fn installer(&self) -> Result<&Arc<dyn Installer>, ManagerError> {
        self.installer.get().ok_or_else(|| {
            ManagerError::NotAvailable(String::from(
                "installing plugins needs the WebAssembly plugin host (plugin `wasm`), which is not running",
            ))
        })
    }

    /// An event of this plugin's (source `plugins`), to write with the change it announces.
    fn envelope(&self, kind: &str, data: Value) -> Event {
        self.kernel.events.envelope("plugins", kind, data)
    }

    /// Stores a plugin's operator state (its credentials sealed) and announces `event` with it.
    async fn save_announced(
        &self,
        stored: &nexus_kernel::plugin::StoredState,
        event: &Event,
    ) -> Result<(), ManagerError> {
        let k = &self.kernel;
        nexus_kernel::plugin::store::save_announced(&k.db, &k.sealer, &k.outbox, stored, event).await?;
        Ok(())
    }

    /// The plugins matching `filter`, in start-up order.
    pub fn list(&self, _caller: &Principal, filter: &ListFilter) -> Vec<Arc<Slot>> {
        self.kernel
            .plugins
            .all()
            .into_iter()
            .filter(|s| filter.category.as_ref().is_none_or(|c| s.manifest.category.eq_ignore_ascii_case(c)))
            .filter(|s| filter.status.is_none_or(|st| s.status() == st))
            .collect()
    }

    pub fn get(&self, _caller: &Principal, id: &str) -> Result<Arc<Slot>, ManagerError> {
        self.kernel.plugins.get(id).ok_or_else(|| ManagerError::NotFound(id.to_string()))
    }

    /// Enables or disables plugin `id` on every route and event, at once and across restarts.
    pub async fn set_enabled(
        &self,
        caller: &Principal,
        id: &str,
        enabled: bool,
        reason: Option<String>,
    ) -> Result<Arc<Slot>, ManagerError> {
        caller.require(ADMIN)?;
        let slot = self.get(caller, id)?;
        if enabled {
            let missing: Vec<String> =
                slot.manifest.dependencies.keys().filter(|d| !self.kernel.plugins.is_enabled(d)).cloned().collect();
            if !missing.is_empty() {
                return Err(ManagerError::NeedsDisabled { plugin: id.to_string(), missing });
            }
        } else {
            if slot.manifest.essential {
                return Err(ManagerError::Essential(id.to_string()));
            }
            let dependents = self.kernel.plugins.enabled_dependents(id);
            if !dependents.is_empty() {
                return Err(ManagerError::HasDependents { plugin: id.to_string(), dependents });
            }
        }
        let reason = reason.map(|r| r.trim().chars().take(500).collect::<String>()).filter(|r| !r.is_empty());
        let mut stored = slot.stored();
        stored.enabled = enabled;
        stored.reason = if enabled { None } else { reason.clone() };
        stored.updated_at = Timestamp::now().as_micros();
        let kind = if enabled { "plugin.enabled" } else { "plugin.disabled" };
        let event = self.envelope(
            kind,
            json!({ "plugin_id": id, "enabled": enabled, "reason": reason, "changed_by": caller.user_id }),
        );
        self.save_announced(&stored, &event).await?;
        apply_enabled(&slot, enabled, reason.clone());
        Ok(slot)
    }

    /// Merges `patch` into plugin `id`'s configuration: validated, stored, applied live where
    /// the plugin can. Returns the plugin and whether a restart is needed.
    pub async fn configure(
        &self,
        caller: &Principal,
        id: &str,
        patch: &Value,
    ) -> Result<(Arc<Slot>, Reconfigured), ManagerError> {
        caller.require(ADMIN)?;
        let slot = self.get(caller, id)?;
        if !patch.is_object() {
            return Err(ManagerError::Invalid(vec![FieldError::new("config", "must be an object")]));
        }
        let mut masked = Vec::new();
        find_masked(patch, "config", &mut masked);
        if !masked.is_empty() {
            return Err(ManagerError::Invalid(masked));
        }
        let mut merged = slot.stored().config.and_then(|c| serde_json::from_str(&c).ok()).unwrap_or(Value::Null);
        nexus_kernel::config::merge_patch(&mut merged, patch);
        let key = slot.manifest.config_key.clone();
        let patched = self.kernel.config.patched(&key, &merged).map_err(|e| {
            let field = match &e {
                nexus_kernel::config::ConfigError::Key { key: k, .. } => {
                    format!("config{}", k.strip_prefix(key.as_str()).unwrap_or(""))
                }
                nexus_kernel::config::ConfigError::File { .. } => String::from("config"),
            };
            let reason = match e {
                nexus_kernel::config::ConfigError::Key { reason, .. }
                | nexus_kernel::config::ConfigError::File { reason, .. } => reason,
            };
            ManagerError::Invalid(vec![FieldError::new(field, reason)])
        })?;
        self.kernel.sealer.check(&merged).map_err(nexus_kernel::db::StorageError::from)?;
        let section = patched.section(&key);
        let applied = match self.handles.get(id) {
            Some(plugin) => plugin.reconfigure(&section).map_err(ManagerError::Invalid)?,
            None => Reconfigured::RestartRequired,
        };
        let mut stored = slot.stored();
        stored.config = Some(merged.to_string());
        stored.updated_at = Timestamp::now().as_micros();
        let event = self.envelope(
            "plugin.updated",
            json!({
                "plugin_id": id,
                "changed_keys": patch.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default(),
                "restart_required": applied == Reconfigured::RestartRequired,
                "changed_by": caller.user_id,
            }),
        );
        self.save_announced(&stored, &event).await?;
        let shown = patched.masked().section(&key);
        slot.configure(patch, shown, Timestamp::now());
        Ok((slot, applied))
    }

    /// Uninstalls a plugin installed at run time (built-in plugins cannot be); its data is
    /// kept unless `purge`.
    pub async fn uninstall(&self, caller: &Principal, id: &str, purge: bool) -> Result<(), ManagerError> {
        caller.require(ADMIN)?;
        let slot = self.get(caller, id)?;
        if slot.manifest.builtin {
            return Err(ManagerError::Builtin(id.to_string()));
        }
        let dependents = self.kernel.plugins.enabled_dependents(id);
        if !dependents.is_empty() {
            return Err(ManagerError::HasDependents { plugin: id.to_string(), dependents });
        }
        self.installer()?.uninstall(caller, id, purge).await.map_err(ManagerError::Install)
    }

    /// Installs (or upgrades to) a package; see [`Installer::install`].
    pub async fn install(&self, caller: &Principal, request: InstallRequest) -> Result<Value, ManagerError> {
        caller.require(ADMIN)?;
        self.installer()?.install(caller, request).await.map_err(ManagerError::Install)
    }

    /// Returns plugin `id` to the version it had before its last upgrade.
    pub async fn rollback(&self, caller: &Principal, id: &str) -> Result<Value, ManagerError> {
        caller.require(ADMIN)?;
        let slot = self.get(caller, id)?;
        if slot.manifest.builtin {
            return Err(ManagerError::Builtin(id.to_string()));
        }
        self.installer()?.rollback(caller, id).await.map_err(ManagerError::Install)
    }

    /// Enabled plugins that need `id`.
    pub fn dependents(&self, id: &str) -> Vec<String> {
        self.kernel.plugins.enabled_dependents(id)
    }

    /// Whether `event` was published by this instance.
    pub fn is_local(&self, event: &Event) -> bool {
        self.kernel.events.is_local(event)
    }

    /// Applies a change another instance made (it arrives as its event).
    pub fn follow(&self, event: &Event) {
        let Some(slot) = event.data.get("plugin_id").and_then(Value::as_str).and_then(|id| self.kernel.plugins.get(id))
        else {
            return;
        };
        match event.kind.as_str() {
            "plugin.enabled" => apply_enabled(&slot, true, None),
            "plugin.disabled" => {
                let reason = event.data.get("reason").and_then(Value::as_str).map(str::to_string);
                apply_enabled(&slot, false, reason);
            }
            _ => {}
        }
    }
}

fn apply_enabled(slot: &Slot, enabled: bool, reason: Option<String>) {
    if enabled {
        slot.enable(Timestamp::now());
    } else {
        slot.disable(reason, Timestamp::now());
    }
    tracing::info!(plugin = slot.id(), enabled, "plugin state changed");
}

/// Fields whose value is the mask shown for credentials: sending it back would store it.
fn find_masked(value: &Value, path: &str, found: &mut Vec<FieldError>) {
    match value {
        Value::String(s) if s == nexus_kernel::config::MASK => {
            found.push(FieldError::new(path, "is a masked credential; send the real value or leave the key out"));
        }
        Value::Object(map) => {
            for (k, v) in map {
                find_masked(v, &format!("{path}.{k}"), found);
            }
        }
        _ => {}
    }
}
