//! The WebAssembly plugin host as a domain service: installs packages (all or nothing:
//! validate, check dependencies, compile, test by calling `init`, activate), upgrades them
//! (the old version serves until the new one has passed `init`), rolls back, uninstalls, loads
//! what is installed at start, and runs calls on fresh instances within each plugin's limits.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Instant;

use nexus_kernel::Kernel;
use nexus_kernel::clock::Timestamp;
use nexus_kernel::error::Failure;
use nexus_kernel::events::Event;
use nexus_kernel::plugin::{Endpoint, Manifest, Publisher, Slot};
use nexus_kernel::principal::Principal;
use nexus_plugin_manager::{InstallRequest, InstallSource};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::env::PluginEnv;
use crate::error::WasmError;
use crate::manifest::{PackageManifest, Route, overlap, parse_template};
use crate::package::{self, Package};
use crate::runtime::{self, CallError, Compiled, Runtime};
use crate::store::{InstalledRow, WasmStore};

/// Compiled components kept beyond the versions that serve (a few MiB each).
const COMPILED_KEPT: usize = 16;

/// The host's configuration: the `plugins` section, shared with the plugin manager.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WasmConfig {
    /// A folder of package files (`*.nxp`) to install from by name.
    pub registry_dir: Option<PathBuf>,
    /// Packages dropped here are installed, changed ones upgraded, removed ones uninstalled,
    /// when `auto_load`.
    pub plugin_directory: Option<PathBuf>,
    pub auto_load: bool,
    /// How often the plugin directory is scanned, in milliseconds.
    pub scan_interval_ms: u64,
    /// Ed25519 public keys (base64) whose signatures are accepted.
    pub trusted_keys: Vec<String>,
    /// Refuse packages without a valid signature.
    pub require_signature: bool,
    /// Caps on what a manifest may ask for.
    pub max_memory_mb: u32,
    pub max_timeout_ms: u64,
    /// Consecutive failed calls (trap, time or memory limit) after which a plugin is disabled
    /// with status `error`.
    pub fault_limit: u32,
    /// Other keys of the section belong to the plugin manager.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl Default for WasmConfig {
    fn default() -> Self {
        Self {
            registry_dir: None,
            plugin_directory: None,
            auto_load: false,
            scan_interval_ms: 2000,
            trusted_keys: Vec::new(),
            require_signature: false,
            max_memory_mb: 256,
            max_timeout_ms: 30_000,
            fault_limit: 5,
            other: BTreeMap::new(),
        }
    }
}

/// One installed plugin, as it serves now. Calls hold it: an upgrade replaces it for new calls
/// while the ones in flight finish on the old code.
#[derive(Debug)]
pub struct Loaded {
    pub manifest: PackageManifest,
    pub routes: Vec<Route>,
    pub compiled: Arc<Compiled>,
    pub env: Arc<PluginEnv>,
    pub sha256: String,
    pub grants: Vec<String>,
    pub signed: bool,
    /// Consecutive failed calls.
    faults: AtomicU32,
    pub calls: AtomicU64,
}

impl Loaded {
    pub fn slot(&self) -> &Arc<Slot> {
        &self.env.slot
    }

    pub fn id(&self) -> &str {
        &self.manifest.id
    }
}

/// One step of an install, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: &'static str,
    pub status: &'static str,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The steps of one install, and the seam where a kernel task would report them.
#[derive(Debug, Default)]
struct Steps(Vec<Step>);

impl Steps {
    async fn run<T, F: Future<Output = Result<T, WasmError>>>(
        &mut self,
        name: &'static str,
        step: F,
    ) -> Result<T, WasmError> {
        let started = Instant::now();
        let outcome = step.await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, message) = match &outcome {
            Ok(_) => ("completed", None),
            Err(e) => ("failed", Some(e.to_string())),
        };
        self.0.push(Step { name, status, duration_ms, message });
        outcome
    }

    fn json(&self) -> Value {
        json!(self.0)
    }
}

/// A package checked, compiled and tested, not yet serving.
struct Prepared {
    package: Package,
    grants: Vec<String>,
    signed: bool,
    loaded: Arc<Loaded>,
}

#[derive(Debug)]
pub struct WasmHost {
    kernel: Arc<Kernel>,
    pub config: WasmConfig,
    store: WasmStore,
    runtime: Mutex<Option<Arc<Runtime>>>,
    plugins: RwLock<BTreeMap<String, Arc<Loaded>>>,
    /// One install, upgrade, rollback or uninstall at a time.
    changing: tokio::sync::Mutex<()>,
    events: Publisher,
    me: Weak<WasmHost>,
    instantiate: prometheus_client::metrics::histogram::Histogram,
    documents: Option<Arc<nexus_documents::Documents>>,
    /// The components compiled last, by the SHA-256 of their bytes, newest last: a rollback or
    /// a reinstall compiles nothing again.
    compiled: Mutex<std::collections::VecDeque<(String, Arc<Compiled>)>>,
}

impl WasmHost {
    pub fn new(
        kernel: Arc<Kernel>,
        config: WasmConfig,
        events: Publisher,
        documents: Option<Arc<nexus_documents::Documents>>,
    ) -> Arc<Self> {
        let store = WasmStore::new(kernel.db.clone(), kernel.outbox.clone());
        // 2 µs to 65 ms: a pooled instance takes microseconds, a cold one milliseconds.
        let instantiate = prometheus_client::metrics::histogram::Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.000_002, 2.0, 16),
        );
        kernel.metrics.register(
            "nexus_wasm_instantiate_seconds",
            "Time to a fresh instance of a WebAssembly plugin",
            instantiate.clone(),
        );
        Arc::new_cyclic(|me| Self {
            kernel,
            config,
            store,
            runtime: Mutex::new(None),
            plugins: RwLock::new(BTreeMap::new()),
            changing: tokio::sync::Mutex::new(()),
            events,
            me: me.clone(),
            instantiate,
            documents,
            compiled: Mutex::new(std::collections::VecDeque::new()),
        })
    }

    /// The engine, created at the first plugin: a server without plugins pays nothing.
    pub fn runtime(&self) -> Result<Arc<Runtime>, WasmError> {
        let mut slot =
            self.runtime.lock().map_err(|_| WasmError::Unavailable(String::from("runtime lock poisoned")))?;
        if let Some(runtime) = slot.as_ref() {
            return Ok(runtime.clone());
        }
        let runtime = Runtime::new(self.instantiate.clone()).map_err(WasmError::Unavailable)?;
        *slot = Some(runtime.clone());
        Ok(runtime)
    }

    /// Stops the epoch thread; called when the server shuts down.
    pub fn shutdown(&self) {
        if let Ok(slot) = self.runtime.lock()
            && let Some(runtime) = slot.as_ref()
        {
            runtime.stop();
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Loaded>> {
        self.plugins.read().ok()?.get(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Loaded>> {
        self.plugins.read().map(|p| p.values().cloned().collect()).unwrap_or_default()
    }

    /// The plugin and route serving `method path`, if one does.
    pub fn route(&self, method: &str, path: &str) -> Option<(Arc<Loaded>, Route)> {
        let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        let plugins = self.plugins.read().ok()?;
        if let (Some(&"api"), Some(&"plugins"), Some(id)) = (segments.first(), segments.get(1), segments.get(2)) {
            let loaded = plugins.get(*id)?;
            let route = loaded.routes.iter().find(|r| !r.own_path && r.matches(method, &segments))?;
            return Some((loaded.clone(), route.clone()));
        }
        plugins.values().find_map(|loaded| {
            loaded
                .routes
                .iter()
                .find(|r| r.own_path && r.matches(method, &segments))
                .map(|r| (loaded.clone(), r.clone()))
        })
    }

    /// Runs `f` on a fresh instance of `loaded` on a blocking thread; counts faults and
    /// disables the plugin (status `error`) after `fault_limit` in a row.
    pub async fn call<R, F>(&self, loaded: &Arc<Loaded>, caller: Option<Principal>, f: F) -> Result<R, WasmError>
    where
        F: for<'a> FnOnce(
            &'a runtime::bindings::Guest,
            &'a mut wasmtime::Store<runtime::HostState>,
        ) -> runtime::GuestCall<'a, R>,
    {
        let runtime = self.runtime()?;
        loaded.calls.fetch_add(1, Ordering::Relaxed);
        let outcome = runtime.call(&loaded.compiled, loaded.env.clone(), caller, f).await;
        match outcome {
            Ok(value) => {
                loaded.faults.store(0, Ordering::Relaxed);
                Ok(value)
            }
            Err(error) => {
                if error.is_fault() {
                    self.fault(loaded, &error).await;
                }
                Err(WasmError::Call { plugin: loaded.id().to_string(), error })
            }
        }
    }

    async fn fault(&self, loaded: &Arc<Loaded>, error: &CallError) {
        let n = loaded.faults.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(plugin = loaded.id(), error = %error, faults = n, "plugin call failed");
        if n < self.config.fault_limit || loaded.slot().status() == nexus_kernel::plugin::Status::Error {
            return;
        }
        let reason = format!("disabled after {n} failed calls in a row; the last {error}");
        loaded.slot().fail(reason.clone());
        let mut stored = loaded.slot().stored();
        stored.enabled = false;
        stored.reason = Some(reason.clone());
        stored.updated_at = Timestamp::now().as_micros();
        if let Err(e) = nexus_kernel::plugin::store::save(&self.kernel.db, &self.kernel.sealer, &stored).await {
            tracing::error!(plugin = loaded.id(), error = %e, "cannot store the plugin's failure");
        }
        tracing::error!(plugin = loaded.id(), %reason, "plugin disabled");
        self.events.publish("plugin.failed", json!({"plugin_id": loaded.id(), "reason": reason}));
    }

    /// An operator enabled plugin `id` again: it starts with a clean record.
    pub fn enabled_again(&self, id: &str) {
        if let Some(loaded) = self.get(id) {
            loaded.faults.store(0, Ordering::Relaxed);
            loaded.slot().clear_failure();
        }
    }

    /// Delivers `event` to every enabled plugin subscribed to its type (not its own events).
    pub fn deliver(&self, event: &Arc<Event>) {
        for loaded in self.all() {
            if !loaded.slot().is_enabled()
                || event.source == loaded.manifest.id
                || !loaded.manifest.events.iter().any(|p| nexus_kernel::events::matches(p, &event.kind))
            {
                continue;
            }
            let Some(host) = self.me.upgrade() else { return };
            let wire = runtime::Event {
                id: event.id.clone(),
                kind: event.kind.clone(),
                source: event.source.clone(),
                timestamp: event.timestamp.clone(),
                data: event.data.to_string(),
            };
            tokio::spawn(async move {
                let outcome = host
                    .call(&loaded, None, move |guest, store| {
                        Box::pin(async move { guest.call_handle_event(store, &wire).await })
                    })
                    .await;
                match outcome {
                    Ok(Ok(())) => {}
                    Ok(Err(message)) => tracing::warn!(plugin = loaded.id(), %message, "plugin refused an event"),
                    Err(e) => tracing::warn!(plugin = loaded.id(), error = %e, "event delivery failed"),
                }
            });
        }
    }

    /// Calls RPC `method` of plugin `id` for `caller`.
    pub async fn rpc(&self, id: &str, method: &str, caller: Principal, params: &Value) -> Result<Value, Failure> {
        let loaded = self.get(id).ok_or_else(|| Failure::not_found(format!("plugin `{id}` is not installed")))?;
        if !loaded.slot().is_enabled() {
            return Err(Failure::unavailable(format!("The plugin `{id}` is disabled")).with_extra("plugin_id", id));
        }
        let (method, params) = (method.to_string(), params.to_string());
        let answer = self
            .call(&loaded, Some(caller), move |guest, store| {
                Box::pin(async move { guest.call_handle_rpc(store, &method, &params).await })
            })
            .await?;
        match answer {
            Ok(text) => serde_json::from_str(&text).map_err(|_| {
                Failure::new(
                    nexus_kernel::error::ErrorCode::PluginError,
                    format!("plugin `{id}` answered with invalid JSON"),
                )
                .with_extra("plugin_id", id)
            }),
            Err(message) => {
                Err(Failure::invalid_message(format!("plugin `{id}`: {message}")).with_extra("plugin_id", id))
            }
        }
    }

    /// Serves one request on a fresh instance.
    pub async fn handle_request(
        &self,
        loaded: &Arc<Loaded>,
        caller: Option<Principal>,
        request: runtime::Request,
    ) -> Result<runtime::Response, WasmError> {
        self.call(loaded, caller, move |guest, store| {
            Box::pin(async move { guest.call_handle_request(store, &request).await })
        })
        .await
    }

    // ---- install, upgrade, rollback, uninstall ------------------------------------------

    /// Installs or upgrades from `request`; see [`nexus_plugin_manager::Installer`].
    pub async fn install(&self, caller: &Principal, request: InstallRequest) -> Result<Value, Failure> {
        let _guard = self.changing.lock().await;
        let mut steps = Steps::default();
        let outcome = self.install_steps(&mut steps, request).await;
        match outcome {
            Ok((prepared, previous)) => {
                let loaded = prepared.loaded.clone();
                let verb = if previous.is_some() { "upgraded" } else { "installed" };
                self.events.publish(
                    if previous.is_some() { "plugin.updated" } else { "plugin.installed" },
                    json!({
                        "plugin_id": loaded.id(), "version": loaded.manifest.version,
                        "previous_version": previous, "installed_by": caller.user_id,
                    }),
                );
                Ok(json!({
                    "status": "success",
                    "plugin": {
                        "id": loaded.id(), "name": loaded.manifest.name, "version": loaded.manifest.version,
                        "status": loaded.slot().status().as_str(),
                    },
                    "message": format!("Plugin {verb} successfully"),
                    "previous_version": previous,
                    "sha256": prepared.package.sha256,
                    "signed": prepared.signed,
                    "granted": prepared.grants,
                    "task": {"type": "plugin_update", "status": "completed", "steps": steps.json()},
                }))
            }
            Err(e) => Err(Failure::from(e).with_extra("steps", steps.json())),
        }
    }

    async fn install_steps(
        &self,
        steps: &mut Steps,
        request: InstallRequest,
    ) -> Result<(Prepared, Option<String>), WasmError> {
        let (bytes, signature) = steps.run("resolve", self.resolve(request.source)).await?;
        let (package, signed) = steps.run("validate", async { self.validate(bytes, signature.as_deref()) }).await?;
        let id = package.manifest.id.clone();
        let grants = grants(&package.manifest, request.grant.as_deref())?;
        let existing = self.get(&id);
        if existing.is_none() && self.kernel.plugins.get(&id).is_some() {
            return Err(WasmError::Conflict(format!("the id `{id}` is taken by a built-in plugin")));
        }
        if let Some(current) = &existing {
            let (new, old) = (version(&package.manifest.version)?, version(&current.manifest.version)?);
            if new <= old {
                return Err(WasmError::Conflict(format!(
                    "plugin `{id}` is installed at version {old}; install a newer version, or roll back",
                )));
            }
        }
        steps.run("check_dependencies", async { self.check(&package.manifest) }).await?;
        let compiled = steps.run("compile", self.compile(package.wasm.clone())).await?;
        let loaded = self.loaded(&package, grants.clone(), signed, compiled).await?;
        steps.run("test", self.test(&loaded)).await?;
        let previous = existing.as_ref().map(|e| e.manifest.version.clone());
        let prepared = Prepared { package, grants, signed, loaded };
        steps.run("activate", self.activate(&prepared, existing.is_some())).await?;
        Ok((prepared, previous))
    }

    async fn resolve(&self, source: InstallSource) -> Result<(Vec<u8>, Option<Vec<u8>>), WasmError> {
        match source {
            InstallSource::Upload { file, signature } => Ok((file, signature)),
            InstallSource::Registry { package, version } => {
                let dir = self.config.registry_dir.clone().ok_or_else(|| {
                    WasmError::Invalid(String::from("no registry: set plugins.registry_dir, or upload the package"))
                })?;
                tokio::task::spawn_blocking(move || find_in_registry(&dir, &package, version.as_deref()))
                    .await
                    .map_err(|e| WasmError::Unavailable(format!("the registry scan failed: {e}")))?
            }
        }
    }

    /// Reads the package and checks its signature against the trusted keys.
    fn validate(&self, bytes: Vec<u8>, signature: Option<&[u8]>) -> Result<(Package, bool), WasmError> {
        let signed = match signature {
            Some(signature) => {
                package::verify(&bytes, signature, &self.config.trusted_keys).map_err(WasmError::Invalid)?;
                true
            }
            None if self.config.require_signature => {
                return Err(WasmError::Invalid(String::from(
                    "the package is not signed, and plugins.require_signature refuses unsigned packages",
                )));
            }
            None => false,
        };
        let package = Package::read(bytes).map_err(WasmError::Invalid)?;
        let limits = package.manifest.limits;
        if limits.memory_mb == 0 || limits.memory_mb > self.config.max_memory_mb {
            return Err(WasmError::Invalid(format!(
                "manifest.toml: limits.memory_mb must be 1-{} on this server",
                self.config.max_memory_mb
            )));
        }
        if limits.timeout_ms == 0 || limits.timeout_ms > self.config.max_timeout_ms {
            return Err(WasmError::Invalid(format!(
                "manifest.toml: limits.timeout_ms must be 1-{} on this server",
                self.config.max_timeout_ms
            )));
        }
        Ok((package, signed))
    }

    /// Dependencies present, enabled and of a matching version; routes of its own that no one
    /// else serves.
    fn check(&self, manifest: &PackageManifest) -> Result<(), WasmError> {
        for (dep, requirement) in &manifest.dependencies {
            let slot = self.kernel.plugins.get(dep).ok_or_else(|| {
                WasmError::Conflict(format!("plugin `{}` needs plugin `{dep}`, which is not installed", manifest.id))
            })?;
            let req = semver::VersionReq::parse(requirement)
                .map_err(|e| WasmError::Invalid(format!("dependency `{dep}`: {e}")))?;
            let found = semver::Version::parse(&slot.manifest.version).ok();
            if !found.is_some_and(|v| req.matches(&v)) {
                return Err(WasmError::Conflict(format!(
                    "plugin `{}` needs `{dep} {requirement}`, but version {} is installed",
                    manifest.id, slot.manifest.version
                )));
            }
            if !slot.is_enabled() {
                return Err(WasmError::Conflict(format!(
                    "plugin `{}` needs plugin `{dep}`, which is disabled",
                    manifest.id
                )));
            }
        }
        let routes = manifest.routes().map_err(WasmError::Invalid)?;
        for route in routes.iter().filter(|r| r.own_path) {
            for slot in self.kernel.plugins.all() {
                if slot.id() == manifest.id {
                    continue;
                }
                for endpoint in slot.endpoints() {
                    if parse_template(&endpoint.path).is_some_and(|s| overlap(&s, &route.segments)) {
                        return Err(WasmError::Conflict(format!(
                            "route {} {} collides with {} {} of plugin `{}`",
                            route.method,
                            route.template,
                            endpoint.method,
                            endpoint.path,
                            slot.id()
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    async fn compile(&self, wasm: Vec<u8>) -> Result<Arc<Compiled>, WasmError> {
        let key = package::sha256_hex(&wasm);
        let cached = self.compiled.lock().ok().and_then(|c| c.iter().find(|(k, _)| *k == key).map(|(_, c)| c.clone()));
        if let Some(compiled) = cached {
            return Ok(compiled);
        }
        let runtime = self.runtime()?;
        let compiled = tokio::task::spawn_blocking(move || runtime.compile(&wasm))
            .await
            .map_err(|e| WasmError::Unavailable(format!("the compiler failed: {e}")))?
            .map(Arc::new)
            .map_err(WasmError::Invalid)?;
        if let Ok(mut cache) = self.compiled.lock() {
            if cache.len() >= COMPILED_KEPT {
                cache.pop_front();
            }
            cache.push_back((key, compiled.clone()));
        }
        Ok(compiled)
    }

    /// The plugin as it will serve: a new slot (its stored state applied) and environment.
    async fn loaded(
        &self,
        package: &Package,
        grants: Vec<String>,
        signed: bool,
        compiled: Arc<Compiled>,
    ) -> Result<Arc<Loaded>, WasmError> {
        let m = &package.manifest;
        let routes = m.routes().map_err(WasmError::Invalid)?;
        let defaults = m.config.clone().unwrap_or_else(|| json!({}));
        let stored = nexus_kernel::plugin::store::load(&self.kernel.db, &self.kernel.sealer)
            .await?
            .into_iter()
            .find(|s| s.plugin_id == m.id);
        let mut shown = defaults.clone();
        if let Some(patch) =
            stored.as_ref().and_then(|s| s.config.as_deref()).and_then(|c| serde_json::from_str(c).ok())
        {
            nexus_kernel::config::merge_patch(&mut shown, &patch);
        }
        nexus_kernel::config::mask_credentials(&mut shown);
        let slot = Arc::new(Slot::new(kernel_manifest(m), shown));
        if let Some(stored) = &stored {
            slot.apply_stored(stored);
        }
        slot.set_endpoints(
            routes
                .iter()
                .map(|r| Endpoint {
                    path: r.template.clone(),
                    method: r.method.clone(),
                    description: r.description.clone(),
                })
                .collect(),
        );
        let mut granted: BTreeSet<String> = grants.iter().cloned().collect();
        granted.insert(String::from("log"));
        let env = Arc::new(PluginEnv {
            id: m.id.clone(),
            grants: granted,
            limits: m.limits,
            defaults,
            slot,
            kernel: self.kernel.clone(),
            store: self.store.clone(),
            denied: AtomicU64::new(0),
            documents: self.documents.clone(),
            principal: crate::env::plugin_principal(&m.id, &m.collections.iter().cloned().collect()),
            collections: m.collections.iter().cloned().collect(),
        });
        Ok(Arc::new(Loaded {
            manifest: m.clone(),
            routes,
            compiled,
            env,
            sha256: package.sha256.clone(),
            grants,
            signed,
            faults: AtomicU32::new(0),
            calls: AtomicU64::new(0),
        }))
    }

    /// Calls `init` with the configuration: the plugin's own check that it can serve.
    async fn test(&self, loaded: &Arc<Loaded>) -> Result<(), WasmError> {
        let config = loaded.env.config().to_string();
        let answer = self
            .call(loaded, None, move |guest, store| Box::pin(async move { guest.call_init(store, &config).await }))
            .await?;
        answer.map_err(|message| WasmError::Init { plugin: loaded.id().to_string(), message })
    }

    /// Stores the package (the one it replaces kept for rollback) and puts it in service:
    /// routes, RPC methods, event subscriptions, `/api/plugins`.
    async fn activate(&self, prepared: &Prepared, upgrade: bool) -> Result<(), WasmError> {
        let loaded = &prepared.loaded;
        let previous = if upgrade { self.store.get(loaded.id()).await? } else { None };
        let row = InstalledRow {
            id: loaded.id().to_string(),
            version: loaded.manifest.version.clone(),
            sha256: prepared.package.sha256.clone(),
            package: prepared.package.bytes.clone(),
            grants: json!(prepared.grants).to_string(),
            installed_at: Timestamp::now().as_micros(),
            previous_version: previous.as_ref().map(|p| p.version.clone()),
            previous_sha256: previous.as_ref().map(|p| p.sha256.clone()),
            previous_package: previous.as_ref().map(|p| p.package.clone()),
            previous_grants: previous.as_ref().map(|p| p.grants.clone()),
        };
        self.store.save(&row).await?;
        self.serve(loaded.clone());
        Ok(())
    }

    /// Makes `loaded` the version that serves.
    fn serve(&self, loaded: Arc<Loaded>) {
        let id = loaded.id().to_string();
        self.kernel.rpc.unregister_plugin(&id);
        for rpc in &loaded.manifest.rpc {
            let host = self.me.clone();
            let (plugin, method) = (id.clone(), rpc.method.clone());
            let handler = nexus_kernel::rpc::handler(move |call: nexus_kernel::rpc::RpcCall| {
                let (host, plugin, method) = (host.upgrade(), plugin.clone(), method.clone());
                async move {
                    let host = host.ok_or_else(|| Failure::unavailable("the plugin host is shutting down"))?;
                    host.rpc(&plugin, &method, call.caller, &call.params).await
                }
            });
            if let Err(e) =
                self.kernel.rpc.register_plugin(&id, &rpc.method, rpc.permission.as_deref(), &rpc.description, handler)
            {
                tracing::warn!(plugin = %id, method = %rpc.method, error = %e, "cannot register an RPC method");
            }
        }
        self.kernel.plugins.put(loaded.slot().clone());
        if let Ok(mut plugins) = self.plugins.write() {
            plugins.insert(id.clone(), loaded.clone());
        }
        tracing::info!(plugin = %id, version = %loaded.manifest.version, "WebAssembly plugin serving");
    }

    /// Takes plugin `id` out of service: routes, RPC methods, events, `/api/plugins`.
    fn unserve(&self, id: &str) -> Option<Arc<Loaded>> {
        self.kernel.rpc.unregister_plugin(id);
        self.kernel.plugins.remove(id);
        self.plugins.write().ok()?.remove(id)
    }

    /// Another instance installed, upgraded, rolled back or uninstalled plugin `id`: serves
    /// what the database now holds for it.
    pub async fn follow_remote(&self, id: &str) {
        let _guard = self.changing.lock().await;
        let outcome: Result<(), WasmError> = async {
            let Some(row) = self.store.get(id).await? else {
                if self.unserve(id).is_some() {
                    tracing::info!(plugin = %id, "uninstalled on another instance");
                }
                return Ok(());
            };
            if self.get(id).is_some_and(|l| l.sha256 == row.sha256) {
                return Ok(());
            }
            let package = Package::read(row.package).map_err(WasmError::Invalid)?;
            let grants: Vec<String> = serde_json::from_str(&row.grants).unwrap_or_default();
            let compiled = self.compile(package.wasm.clone()).await?;
            let loaded = self.loaded(&package, grants, false, compiled).await?;
            self.test(&loaded).await?;
            self.serve(loaded);
            tracing::info!(plugin = %id, version = %row.version, "installed on another instance");
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            tracing::error!(plugin = %id, error = %e, "cannot follow another instance's change of a plugin");
        }
    }

    /// Uninstalls plugin `id`; its key-value store too when `purge`.
    pub async fn uninstall(&self, caller: &Principal, id: &str, purge: bool) -> Result<(), Failure> {
        let _guard = self.changing.lock().await;
        let loaded = self.get(id).ok_or_else(|| Failure::not_found(format!("plugin `{id}` not found")))?;
        self.store.remove(id, purge).await.map_err(WasmError::from)?;
        self.unserve(id);
        self.events.publish(
            "plugin.uninstalled",
            json!({"plugin_id": id, "version": loaded.manifest.version, "data_purged": purge, "uninstalled_by": caller.user_id}),
        );
        Ok(())
    }

    /// Returns plugin `id` to the package it had before its last upgrade (which then becomes
    /// the previous one).
    pub async fn rollback(&self, caller: &Principal, id: &str) -> Result<Value, Failure> {
        let _guard = self.changing.lock().await;
        let row = self.store.get(id).await.map_err(WasmError::from)?;
        let row = row.ok_or_else(|| Failure::not_found(format!("plugin `{id}` not found")))?;
        let (Some(bytes), Some(version), Some(sha), Some(grants_json)) = (
            row.previous_package.clone(),
            row.previous_version.clone(),
            row.previous_sha256.clone(),
            row.previous_grants.clone(),
        ) else {
            return Err(Failure::conflict(format!("plugin `{id}` has no previous version to roll back to")));
        };
        let mut steps = Steps::default();
        let outcome: Result<Arc<Loaded>, WasmError> = async {
            let package = steps.run("validate", async { Package::read(bytes).map_err(WasmError::Invalid) }).await?;
            let grants: Vec<String> = serde_json::from_str(&grants_json).unwrap_or_default();
            let compiled = steps.run("compile", self.compile(package.wasm.clone())).await?;
            let loaded = self.loaded(&package, grants, false, compiled).await?;
            steps.run("test", self.test(&loaded)).await?;
            steps
                .run("activate", async {
                    let swapped = InstalledRow {
                        id: row.id.clone(),
                        version: version.clone(),
                        sha256: sha.clone(),
                        package: package.bytes.clone(),
                        grants: grants_json.clone(),
                        installed_at: Timestamp::now().as_micros(),
                        previous_version: Some(row.version.clone()),
                        previous_sha256: Some(row.sha256.clone()),
                        previous_package: Some(row.package.clone()),
                        previous_grants: Some(row.grants.clone()),
                    };
                    self.store.save(&swapped).await?;
                    self.serve(loaded.clone());
                    Ok(())
                })
                .await?;
            Ok(loaded)
        }
        .await;
        let loaded = outcome.map_err(|e| Failure::from(e).with_extra("steps", steps.json()))?;
        self.events.publish(
            "plugin.updated",
            json!({"plugin_id": id, "version": version, "previous_version": row.version, "rolled_back": true,
                   "changed_by": caller.user_id}),
        );
        Ok(json!({
            "status": "success",
            "plugin": {"id": id, "name": loaded.manifest.name, "version": version, "status": loaded.slot().status().as_str()},
            "rolled_back_from": row.version,
            "message": "Plugin rolled back successfully",
            "task": {"type": "plugin_update", "status": "completed", "steps": steps.json()},
        }))
    }

    /// Loads every installed plugin (at start). One that cannot load is listed with status
    /// `error` and the reason.
    pub async fn load_installed(&self) -> Result<(), WasmError> {
        let rows = self.store.installed().await?;
        for row in rows {
            let id = row.id.clone();
            let outcome: Result<(), WasmError> = async {
                let package = Package::read(row.package.clone()).map_err(WasmError::Invalid)?;
                let grants: Vec<String> = serde_json::from_str(&row.grants).unwrap_or_default();
                let compiled = self.compile(package.wasm.clone()).await?;
                let loaded = self.loaded(&package, grants, false, compiled).await?;
                self.test(&loaded).await?;
                self.serve(loaded);
                Ok(())
            }
            .await;
            if let Err(e) = outcome {
                tracing::error!(plugin = %id, error = %e, "an installed plugin did not load");
                if let Ok(package) = Package::read(row.package) {
                    let slot = Arc::new(Slot::new(kernel_manifest(&package.manifest), Value::Null));
                    slot.fail(e.to_string());
                    self.kernel.plugins.put(slot);
                }
            }
        }
        Ok(())
    }

    /// Installs, upgrades or uninstalls to match the packages in `plugins.plugin_directory`:
    /// what it changed.
    pub async fn sync_directory(&self, known: &mut BTreeMap<PathBuf, String>) -> Vec<String> {
        let Some(dir) = self.config.plugin_directory.clone() else { return Vec::new() };
        let files = tokio::task::spawn_blocking(move || list_packages(&dir)).await.unwrap_or_default();
        let mut changes = Vec::new();
        let system = Principal::system();
        let mut present = BTreeSet::new();
        for (path, bytes) in files {
            present.insert(path.clone());
            let sha = package::sha256_hex(&bytes);
            if known.get(&path) == Some(&sha) {
                continue;
            }
            let signature = std::fs::read(signature_path(&path)).ok();
            let installed_sha = Package::read(bytes.clone())
                .ok()
                .and_then(|p| self.get(&p.manifest.id).map(|l| (l.sha256.clone(), p.manifest.id)));
            known.insert(path.clone(), sha.clone());
            if installed_sha.as_ref().is_some_and(|(s, _)| *s == sha) {
                continue;
            }
            let request = InstallRequest { source: InstallSource::Upload { file: bytes, signature }, grant: None };
            match self.install(&system, request).await {
                Ok(answer) => changes.push(format!(
                    "{} {}",
                    path.display(),
                    answer.get("message").and_then(Value::as_str).unwrap_or_default()
                )),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "a package in the plugin directory did not install")
                }
            }
        }
        let gone: Vec<PathBuf> = known.keys().filter(|p| !present.contains(*p)).cloned().collect();
        for path in gone {
            known.remove(&path);
            let id = path.file_stem().and_then(|s| s.to_str()).map(str::to_string).unwrap_or_default();
            let id = self
                .all()
                .into_iter()
                .map(|l| l.id().to_string())
                .find(|i| id == *i || id.starts_with(&format!("{i}-")));
            if let Some(id) = id
                && self.uninstall(&system, &id, false).await.is_ok()
            {
                changes.push(format!("{} removed: {id} uninstalled", path.display()));
            }
        }
        changes
    }
}

fn version(text: &str) -> Result<semver::Version, WasmError> {
    semver::Version::parse(text).map_err(|e| WasmError::Invalid(format!("version `{text}`: {e}")))
}

/// The capabilities granted: those asked for, narrowed to `grant` when given (which may not
/// add any).
fn grants(manifest: &PackageManifest, grant: Option<&[String]>) -> Result<Vec<String>, WasmError> {
    let asked: BTreeSet<&str> = manifest.capabilities.iter().map(String::as_str).collect();
    let Some(grant) = grant else { return Ok(asked.iter().map(|s| (*s).to_string()).collect()) };
    for g in grant {
        if !asked.contains(g.as_str()) {
            return Err(WasmError::Invalid(format!(
                "capability `{g}` cannot be granted: plugin `{}` does not ask for it",
                manifest.id
            )));
        }
    }
    let granted: BTreeSet<&str> = grant.iter().map(String::as_str).collect();
    Ok(granted.into_iter().map(str::to_string).collect())
}

fn kernel_manifest(m: &PackageManifest) -> Manifest {
    Manifest {
        id: m.id.clone(),
        config_key: m.id.clone(),
        name: m.name.clone(),
        category: m.category.clone(),
        version: m.version.clone(),
        description: m.description.clone(),
        author: m.author.clone(),
        license: m.license.clone(),
        repository: m.repository.clone(),
        dependencies: m.dependencies.clone(),
        permissions: Vec::new(),
        config_schema: m.config_schema.clone(),
        channels: Vec::new(),
        essential: false,
        builtin: false,
    }
}

pub fn signature_path(package: &Path) -> PathBuf {
    let mut name = package.as_os_str().to_os_string();
    name.push(".sig");
    PathBuf::from(name)
}

/// The package files of `dir`, read.
fn list_packages(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(PathBuf, Vec<u8>)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == package::EXTENSION))
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The package named `name` (its plugin id or file name without the version and extension)
/// in the registry folder `dir`: `version`, or the newest.
fn find_in_registry(dir: &Path, name: &str, version: Option<&str>) -> Result<(Vec<u8>, Option<Vec<u8>>), WasmError> {
    if !dir.is_dir() {
        return Err(WasmError::Unavailable(format!("the registry folder {} cannot be read", dir.display())));
    }
    let mut best: Option<(semver::Version, PathBuf, Vec<u8>)> = None;
    for (path, bytes) in list_packages(dir) {
        let Ok(package) = Package::read(bytes.clone()) else { continue };
        let m = &package.manifest;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let named = m.id == name || stem == name || stem.strip_suffix(&format!("-{}", m.version)) == Some(name);
        if !named || version.is_some_and(|v| v != m.version) {
            continue;
        }
        let Ok(v) = semver::Version::parse(&m.version) else { continue };
        if best.as_ref().is_none_or(|(b, _, _)| v > *b) {
            best = Some((v, path, bytes));
        }
    }
    let (_, path, bytes) = best.ok_or_else(|| {
        WasmError::NotFound(match version {
            Some(v) => format!("no package `{name}` version {v} in the registry"),
            None => format!("no package `{name}` in the registry"),
        })
    })?;
    Ok((bytes, std::fs::read(signature_path(&path)).ok()))
}
