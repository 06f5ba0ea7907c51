//! The plugin registry: what every plugin of this instance is (its manifest), whether it is
//! enabled, its configuration and its measured traffic. The HTTP half of the plugin contract
//! (routes, mounts) is `nexus_web::plugin`; this half is what domains, the WebSocket and the
//! operations API read without knowing about HTTP.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde_json::Value;

use crate::clock::Timestamp;
use crate::error::FieldError;

/// What a plugin declares about itself, before it starts.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// Stable, lowercase (`identity`, `secrets`).
    pub id: String,
    /// The key of its configuration subtree (usually its id).
    pub config_key: String,
    pub name: String,
    /// `core`, `security`, `integration`, `data`, `analytics`, `media`, …
    pub category: String,
    pub version: String,
    pub description: String,
    pub author: String,
    pub license: String,
    pub repository: Option<String>,
    /// Other plugins this one needs, each with a semver requirement (`>=0.1`).
    pub dependencies: BTreeMap<String, String>,
    /// Permissions this plugin checks, with what each allows.
    pub permissions: Vec<PermissionSpec>,
    /// JSON Schema of its configuration subtree.
    pub config_schema: Value,
    /// WebSocket channels it contributes.
    pub channels: Vec<ChannelSpec>,
    /// Whether everything needs it, so that it can be neither disabled nor uninstalled.
    pub essential: bool,
    /// Whether it is part of the server (rather than installed at run time).
    pub builtin: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PermissionSpec {
    pub name: String,
    pub description: String,
}

impl Manifest {
    /// A built-in plugin's manifest; the version, author and license are the server's.
    pub fn builtin(id: &str, name: &str, category: &str, description: &str) -> Self {
        Self {
            id: id.to_string(),
            config_key: id.to_string(),
            name: name.to_string(),
            category: category.to_string(),
            version: crate::VERSION.to_string(),
            description: description.to_string(),
            author: String::from("Nexus"),
            license: String::from("Apache-2.0"),
            repository: None,
            dependencies: BTreeMap::new(),
            permissions: Vec::new(),
            config_schema: serde_json::json!({"type": "object"}),
            channels: Vec::new(),
            essential: false,
            builtin: true,
        }
    }

    /// Its configuration lives under `key` rather than under its id.
    pub fn config_key(mut self, key: &str) -> Self {
        self.config_key = key.to_string();
        self
    }

    pub fn depends_on(mut self, id: &str, requirement: &str) -> Self {
        self.dependencies.insert(id.to_string(), requirement.to_string());
        self
    }

    pub fn permission(mut self, name: &str, description: &str) -> Self {
        self.permissions.push(PermissionSpec { name: name.to_string(), description: description.to_string() });
        self
    }

    pub fn config_schema(mut self, schema: Value) -> Self {
        self.config_schema = schema;
        self
    }

    /// The JSON Schema of configuration type `T`, with its defaults: what
    /// `GET /api/plugins/{id}` shows and `PUT …/config` is checked against (by deserialising
    /// into `T`, which the schema describes).
    pub fn config_type<T: utoipa::ToSchema + serde::Serialize + Default>(self) -> Self {
        self.config_schema(schema_of::<T>())
    }

    pub fn channel(mut self, spec: ChannelSpec) -> Self {
        self.channels.push(spec);
        self
    }

    pub fn essential(mut self) -> Self {
        self.essential = true;
        self
    }
}

/// An API endpoint a plugin serves, as listed by `/api/plugins/{id}`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub path: String,
    pub method: String,
    pub description: String,
}

/// A WebSocket channel a plugin contributes: which events it carries and who may subscribe.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelSpec {
    pub name: String,
    /// Needed to subscribe; `None`: any authenticated client.
    pub permission: Option<String>,
    /// Event type patterns it carries (`user.*`, `*`).
    pub events: Vec<String>,
    /// Whether it also carries every event of a plugin that is not built in.
    pub third_party: bool,
    /// What a subscription's `filters.query` means on this channel, if it takes one.
    #[serde(skip)]
    pub query: Option<QueryLanguage>,
}

/// A test a subscription runs on each event of its channel.
pub type EventTest = Arc<dyn Fn(&crate::events::Event) -> bool + Send + Sync>;

/// A channel's query language: compiles a subscription's `filters.query` once, when the client
/// subscribes, into the test its events must pass (the documents channel takes a document
/// filter, evaluated on each changed document).
pub trait ChannelQuery: Send + Sync {
    /// The test, or why `query` is not one (a message naming the place).
    fn compile(&self, query: &Value) -> Result<EventTest, String>;
}

#[derive(Clone)]
pub struct QueryLanguage(pub Arc<dyn ChannelQuery>);

impl std::fmt::Debug for QueryLanguage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueryLanguage")
    }
}

impl ChannelSpec {
    pub fn new(name: &str, permission: Option<&str>, events: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            permission: permission.map(str::to_string),
            events: events.iter().map(|e| (*e).to_string()).collect(),
            third_party: false,
            query: None,
        }
    }

    pub fn third_party(mut self) -> Self {
        self.third_party = true;
        self
    }

    /// Subscriptions may narrow the channel with a `filters.query` in `language`.
    pub fn with_query(mut self, language: impl ChannelQuery + 'static) -> Self {
        self.query = Some(QueryLanguage(Arc::new(language)));
        self
    }
}

/// `active`, `inactive` (disabled) or `error` (failed to start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Inactive,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Inactive => "inactive",
            Status::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Status::Active),
            "inactive" => Some(Status::Inactive),
            "error" => Some(Status::Error),
            _ => None,
        }
    }
}

/// Requests a plugin's routes served, measured at the edge.
#[derive(Debug, Default)]
pub struct Traffic {
    requests: AtomicU64,
    errors: AtomicU64,
    micros: AtomicU64,
}

/// A snapshot of [`Traffic`].
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct TrafficReport {
    pub total_requests: u64,
    pub average_response_time_ms: f64,
    /// Share of requests answered with a 5xx, 0–1.
    pub error_rate: f64,
}

impl Traffic {
    pub fn record(&self, status: u16, micros: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.micros.fetch_add(micros, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn report(&self) -> TrafficReport {
        let requests = self.requests.load(Ordering::Relaxed);
        let errors = self.errors.load(Ordering::Relaxed);
        let micros = self.micros.load(Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let (average, rate) = if requests == 0 {
            (0.0, 0.0)
        } else {
            (micros as f64 / requests as f64 / 1000.0, errors as f64 / requests as f64)
        };
        TrafficReport {
            total_requests: requests,
            average_response_time_ms: (average * 1000.0).round() / 1000.0,
            error_rate: (rate * 10_000.0).round() / 10_000.0,
        }
    }
}

/// One plugin of this instance: its manifest and its run-time state.
#[derive(Debug)]
pub struct Slot {
    pub manifest: Manifest,
    enabled: AtomicBool,
    failed: AtomicBool,
    state: RwLock<SlotState>,
    pub traffic: Traffic,
    endpoints: RwLock<Vec<Endpoint>>,
}

#[derive(Debug, Default, Clone)]
struct SlotState {
    /// Why it is disabled, or why it failed.
    reason: Option<String>,
    /// The configuration in effect, credentials masked.
    config: Value,
    /// Every change made through the API, merged (what is stored).
    patch: Value,
    updated_at: Option<Timestamp>,
}

impl Slot {
    pub fn new(manifest: Manifest, config: Value) -> Self {
        Self {
            manifest,
            enabled: AtomicBool::new(true),
            failed: AtomicBool::new(false),
            state: RwLock::new(SlotState { config, ..SlotState::default() }),
            traffic: Traffic::default(),
            endpoints: RwLock::default(),
        }
    }

    pub fn id(&self) -> &str {
        &self.manifest.id
    }

    /// Read on every request of the plugin's routes.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> Status {
        if self.failed.load(Ordering::Relaxed) {
            Status::Error
        } else if self.is_enabled() {
            Status::Active
        } else {
            Status::Inactive
        }
    }

    pub fn reason(&self) -> Option<String> {
        self.state.read().ok().and_then(|s| s.reason.clone())
    }

    pub fn config(&self) -> Value {
        self.state.read().map(|s| s.config.clone()).unwrap_or(Value::Null)
    }

    /// Every configuration change made through the API, merged, credentials readable: for the
    /// plugin itself, never for showing.
    pub fn patch(&self) -> Value {
        self.state.read().map(|s| s.patch.clone()).unwrap_or(Value::Null)
    }

    pub fn updated_at(&self) -> Option<Timestamp> {
        self.state.read().ok().and_then(|s| s.updated_at)
    }

    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.endpoints.read().map(|e| e.clone()).unwrap_or_default()
    }

    pub fn set_endpoints(&self, mut endpoints: Vec<Endpoint>) {
        endpoints.sort();
        if let Ok(mut slot) = self.endpoints.write() {
            *slot = endpoints;
        }
    }

    fn set_enabled(&self, enabled: bool, reason: Option<String>, at: Timestamp) {
        self.enabled.store(enabled, Ordering::Relaxed);
        if let Ok(mut state) = self.state.write() {
            state.reason = reason;
            state.updated_at = Some(at);
        }
    }

    fn set_config(&self, config: Value, at: Timestamp) {
        if let Ok(mut state) = self.state.write() {
            state.config = config;
            state.updated_at = Some(at);
        }
    }

    /// Clears a failure (a plugin installed at run time that an operator enables again).
    pub fn clear_failure(&self) {
        self.failed.store(false, Ordering::Relaxed);
    }

    /// Marks the plugin as failed to start, with the reason shown to operators.
    pub fn fail(&self, reason: String) {
        self.failed.store(true, Ordering::Relaxed);
        self.enabled.store(false, Ordering::Relaxed);
        if let Ok(mut state) = self.state.write() {
            state.reason = Some(reason);
        }
    }
}

/// Every plugin of this instance, in start-up order.
#[derive(Debug, Default)]
pub struct Registry {
    slots: RwLock<Vec<Arc<Slot>>>,
}

impl Registry {
    pub fn add(&self, slot: Arc<Slot>) {
        if let Ok(mut slots) = self.slots.write() {
            slots.push(slot);
        }
    }

    /// Adds `slot`, or replaces the slot with its id (a plugin installed or upgraded at run
    /// time).
    pub fn put(&self, slot: Arc<Slot>) {
        if let Ok(mut slots) = self.slots.write() {
            match slots.iter_mut().find(|s| s.id() == slot.id()) {
                Some(existing) => *existing = slot,
                None => slots.push(slot),
            }
        }
    }

    /// Removes plugin `id` (a plugin uninstalled at run time); whether it was there.
    pub fn remove(&self, id: &str) -> bool {
        self.slots.write().is_ok_and(|mut slots| {
            let before = slots.len();
            slots.retain(|s| s.id() != id);
            slots.len() != before
        })
    }

    pub fn all(&self) -> Vec<Arc<Slot>> {
        self.slots.read().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Slot>> {
        self.slots.read().ok()?.iter().find(|s| s.id() == id).cloned()
    }

    /// Whether plugin `id` is present and enabled.
    pub fn is_enabled(&self, id: &str) -> bool {
        self.get(id).is_some_and(|s| s.is_enabled())
    }

    /// The enabled plugins that depend on `id`.
    pub fn enabled_dependents(&self, id: &str) -> Vec<String> {
        self.all()
            .iter()
            .filter(|s| s.is_enabled() && s.manifest.dependencies.contains_key(id))
            .map(|s| s.id().to_string())
            .collect()
    }
}

/// The row of `nexus_plugin_state` that holds configuration changes to the kernel's own
/// sections (not a plugin id: those are lowercase letters).
pub const KERNEL_STATE: &str = "@kernel";

/// An operator's change to a plugin, as stored so that it outlives the process.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredState {
    pub plugin_id: String,
    pub enabled: bool,
    pub reason: Option<String>,
    /// JSON text of the configuration set through the API, if any; its credentials are
    /// readable here and sealed in the table (see [`store`]).
    pub config: Option<String>,
    pub updated_at: i64,
}

/// Where plugin state is kept: one row per plugin an operator changed.
pub mod store {
    use super::StoredState;
    use crate::db::{Db, StorageError};
    use crate::seal::Sealer;

    const SELECT: &str = "SELECT plugin_id, enabled, reason, config, updated_at FROM nexus_plugin_state";
    const UPSERT: &str = "INSERT INTO nexus_plugin_state (plugin_id, enabled, reason, config, updated_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (plugin_id) DO UPDATE SET enabled = excluded.enabled, \
         reason = excluded.reason, config = excluded.config, updated_at = excluded.updated_at";

    /// Every stored change, its credentials opened (see [`crate::seal`]).
    pub async fn load(db: &Db, sealer: &Sealer) -> Result<Vec<StoredState>, StorageError> {
        let mut rows: Vec<StoredState> = match db {
            Db::Sqlite(pool) => sqlx::query_as(SELECT).fetch_all(pool).await?,
            Db::Postgres(pool) => sqlx::query_as(SELECT).fetch_all(pool).await?,
        };
        for row in &mut rows {
            if let Some(config) = &row.config {
                row.config = Some(sealer.open_text(&row.plugin_id, config));
            }
        }
        Ok(rows)
    }

    /// `s` as it is written: its credentials sealed, so that none is stored readable.
    fn sealed(sealer: &Sealer, s: &StoredState) -> Result<StoredState, StorageError> {
        let mut row = s.clone();
        if let Some(config) = &s.config {
            row.config = Some(sealer.seal_text(&s.plugin_id, config)?);
        }
        Ok(row)
    }

    pub async fn save(db: &Db, sealer: &Sealer, s: &StoredState) -> Result<(), StorageError> {
        let s = &sealed(sealer, s)?;
        // The same statement and binds on either driver's pool.
        macro_rules! upsert {
            ($pool:expr) => {
                sqlx::query(UPSERT)
                    .bind(&s.plugin_id)
                    .bind(s.enabled)
                    .bind(&s.reason)
                    .bind(&s.config)
                    .bind(s.updated_at)
                    .execute($pool)
                    .await
                    .map(|_| ())
            };
        }
        match db {
            Db::Sqlite(pool) => upsert!(pool)?,
            Db::Postgres(pool) => upsert!(pool)?,
        }
        Ok(())
    }

    /// Saves `s` and writes `event` to the outbox in the same transaction, so the change is
    /// announced (to every instance, the WebSocket and webhooks) exactly when it is stored.
    pub async fn save_announced(
        db: &Db,
        sealer: &Sealer,
        outbox: &crate::outbox::Outbox,
        s: &StoredState,
        event: &crate::events::Event,
    ) -> Result<(), StorageError> {
        use crate::outbox::OutboxTx as _;
        let s = &sealed(sealer, s)?;
        macro_rules! in_tx {
            ($pool:expr) => {{
                let mut tx = $pool.begin().await?;
                sqlx::query(UPSERT)
                    .bind(&s.plugin_id)
                    .bind(s.enabled)
                    .bind(&s.reason)
                    .bind(&s.config)
                    .bind(s.updated_at)
                    .execute(&mut *tx)
                    .await?;
                tx.write_event(event).await?;
                tx.commit().await?;
            }};
        }
        match db {
            Db::Sqlite(pool) => in_tx!(pool),
            Db::Postgres(pool) => in_tx!(pool),
        }
        outbox.committed();
        Ok(())
    }
}

impl Slot {
    /// Applies a stored operator change.
    pub fn apply_stored(&self, stored: &StoredState) {
        let at = Timestamp::from_micros(stored.updated_at);
        self.set_enabled(stored.enabled, stored.reason.clone(), at);
        if let (Ok(mut state), Some(patch)) =
            (self.state.write(), stored.config.as_deref().and_then(|c| serde_json::from_str(c).ok()))
        {
            state.patch = patch;
        }
    }

    /// The state to store after a change.
    pub fn stored(&self) -> StoredState {
        let state = self.state.read().map(|s| s.clone()).unwrap_or_default();
        StoredState {
            plugin_id: self.id().to_string(),
            enabled: self.is_enabled(),
            reason: state.reason,
            config: (!state.patch.is_null()).then(|| state.patch.to_string()),
            updated_at: state.updated_at.unwrap_or_else(Timestamp::now).as_micros(),
        }
    }

    pub fn enable(&self, at: Timestamp) {
        self.set_enabled(true, None, at);
    }

    pub fn disable(&self, reason: Option<String>, at: Timestamp) {
        self.set_enabled(false, reason, at);
    }

    /// Records a configuration change: `patch` as sent, `shown` the configuration in effect
    /// after it (credentials masked).
    pub fn configure(&self, patch: &Value, shown: Value, at: Timestamp) {
        if let Ok(mut state) = self.state.write() {
            crate::config::merge_patch(&mut state.patch, patch);
        }
        self.set_config(shown, at);
    }
}

/// Why a list of plugins cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("plugin `{plugin}` needs plugin `{missing}`, which is not installed")]
    Missing { plugin: String, missing: String },
    #[error("plugin `{plugin}` needs `{dependency} {requirement}`, but version {found} is installed")]
    Version { plugin: String, dependency: String, requirement: String, found: String },
    #[error("plugin `{plugin}` has an invalid version requirement `{requirement}` on `{dependency}`")]
    Requirement { plugin: String, dependency: String, requirement: String },
    #[error("plugins depend on each other in a cycle: {0}")]
    Cycle(String),
    #[error("two plugins have the id `{0}`")]
    Duplicate(String),
}

/// The start-up order of `manifests` (indexes into it): every plugin after the plugins it
/// depends on, otherwise in the order given.
pub fn start_order(manifests: &[&Manifest]) -> Result<Vec<usize>, OrderError> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, m) in manifests.iter().enumerate() {
        if index.insert(m.id.as_str(), i).is_some() {
            return Err(OrderError::Duplicate(m.id.clone()));
        }
    }
    for m in manifests {
        for (dependency, requirement) in &m.dependencies {
            let Some(&at) = index.get(dependency.as_str()) else {
                return Err(OrderError::Missing { plugin: m.id.clone(), missing: dependency.clone() });
            };
            let req = semver::VersionReq::parse(requirement).map_err(|_| OrderError::Requirement {
                plugin: m.id.clone(),
                dependency: dependency.clone(),
                requirement: requirement.clone(),
            })?;
            let found = manifests.get(at).map_or("", |d| d.version.as_str());
            if !semver::Version::parse(found).is_ok_and(|v| req.matches(&v)) {
                return Err(OrderError::Version {
                    plugin: m.id.clone(),
                    dependency: dependency.clone(),
                    requirement: requirement.clone(),
                    found: found.to_string(),
                });
            }
        }
    }
    // Depth-first, visiting dependencies first; `on_path` finds cycles.
    fn visit(
        i: usize,
        manifests: &[&Manifest],
        index: &HashMap<&str, usize>,
        done: &mut [bool],
        on_path: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) -> Result<(), OrderError> {
        if done.get(i).copied().unwrap_or(true) {
            return Ok(());
        }
        if let Some(pos) = on_path.iter().position(|&p| p == i) {
            let mut names: Vec<&str> = on_path
                .get(pos..)
                .unwrap_or_default()
                .iter()
                .filter_map(|&p| manifests.get(p))
                .map(|m| m.id.as_str())
                .collect();
            names.extend(manifests.get(i).map(|m| m.id.as_str()));
            return Err(OrderError::Cycle(names.join(" -> ")));
        }
        on_path.push(i);
        if let Some(m) = manifests.get(i) {
            for dependency in m.dependencies.keys() {
                if let Some(&d) = index.get(dependency.as_str()) {
                    visit(d, manifests, index, done, on_path, order)?;
                }
            }
        }
        on_path.pop();
        if let Some(slot) = done.get_mut(i) {
            *slot = true;
        }
        order.push(i);
        Ok(())
    }
    let mut done = vec![false; manifests.len()];
    let mut order = Vec::with_capacity(manifests.len());
    for i in 0..manifests.len() {
        visit(i, manifests, &index, &mut done, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

/// The part of the plugin contract the management API calls on a running plugin.
pub trait Reconfigure: Send + Sync + std::fmt::Debug {
    /// Checks a new configuration (its subtree as JSON) and applies what it can while running.
    /// The default takes any object, to be applied at the next start.
    fn reconfigure(&self, config: &Value) -> Result<Reconfigured, Vec<FieldError>> {
        if config.is_object() {
            Ok(Reconfigured::RestartRequired)
        } else {
            Err(vec![FieldError::new("config", "must be an object")])
        }
    }

    /// What the plugin reports about itself beyond what the registry measures (counters,
    /// queue lengths, recent errors), for the operations API's service view. `None`: nothing.
    fn report(&self) -> Option<Value> {
        None
    }

    /// Restarts what the plugin runs in the background, in place (reconnects, respawns a
    /// worker), for `POST /api/v1/services/{name}/restart`. `None`: it cannot be restarted
    /// in place (disable and enable it, or restart the server).
    fn restart(&self) -> Option<futures::future::BoxFuture<'static, Result<(), String>>> {
        None
    }
}

/// Every plugin of this server by id, for the management API to reconfigure them.
#[derive(Clone, Default)]
pub struct Handles(Arc<BTreeMap<String, Arc<dyn Reconfigure>>>);

impl Handles {
    pub fn new(plugins: impl IntoIterator<Item = (String, Arc<dyn Reconfigure>)>) -> Self {
        Self(Arc::new(plugins.into_iter().collect()))
    }

    pub fn get(&self, id: &str) -> Option<&Arc<dyn Reconfigure>> {
        self.0.get(id)
    }
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// An event publisher whose source is fixed to its plugin; it publishes nothing while the
/// plugin is disabled.
#[derive(Debug, Clone)]
pub struct Publisher {
    bus: crate::events::EventBus,
    slot: Arc<Slot>,
}

impl Publisher {
    pub fn new(bus: crate::events::EventBus, slot: Arc<Slot>) -> Self {
        Self { bus, slot }
    }

    pub fn publish(&self, kind: &str, data: Value) -> Option<Arc<crate::events::Event>> {
        self.slot.is_enabled().then(|| self.bus.publish(self.slot.id(), kind, data))
    }
}

/// A configuration change a plugin was asked to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconfigured {
    /// Applied to the running plugin.
    Live,
    /// Stored; takes effect at the next start.
    RestartRequired,
}

/// Checks `config` against the typed configuration `T` of a plugin: every field known, every
/// value of the right type. Returns the field errors, named by their dotted path.
pub fn validate_config<T: serde::de::DeserializeOwned>(config: &Value) -> Result<T, Vec<FieldError>> {
    let deserializer = config.clone();
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::from("config") } else { format!("config.{path}") };
        vec![FieldError::new(field, e.inner().to_string())]
    })
}

/// A self-contained JSON Schema (2020-12) of `T`: the types it refers to under `$defs`, and
/// `T::default()` as the `default`.
pub fn schema_of<T: utoipa::ToSchema + serde::Serialize + Default>() -> Value {
    let mut deps = Vec::new();
    T::schemas(&mut deps);
    let mut root = serde_json::to_value(T::schema()).unwrap_or_else(|_| serde_json::json!({ "type": "object" }));
    let mut defs = serde_json::Map::new();
    for (name, schema) in deps {
        if let Ok(schema) = serde_json::to_value(schema) {
            defs.insert(name, schema);
        }
    }
    if let Value::Object(map) = &mut root {
        map.insert("$schema".into(), Value::String("https://json-schema.org/draft/2020-12/schema".into()));
        if !defs.is_empty() {
            map.insert("$defs".into(), Value::Object(defs));
        }
        if let Ok(default) = serde_json::to_value(T::default()) {
            map.insert("default".into(), default);
        }
    }
    local_refs(&mut root);
    root
}

/// `#/components/schemas/X` (utoipa's references) → `#/$defs/X`.
fn local_refs(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/components/schemas/")
            {
                *r = format!("#/$defs/{name}");
            }
            map.values_mut().for_each(local_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(local_refs),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, deps: &[(&str, &str)]) -> Manifest {
        let mut m = Manifest::builtin(id, id, "core", "");
        for (d, r) in deps {
            m = m.depends_on(d, r);
        }
        m
    }

    fn order(ms: &[Manifest]) -> Result<Vec<String>, OrderError> {
        let refs: Vec<&Manifest> = ms.iter().collect();
        start_order(&refs).map(|o| o.into_iter().filter_map(|i| ms.get(i)).map(|m| m.id.clone()).collect())
    }

    #[test]
    fn dependencies_start_first() {
        let ms = [m("secrets", &[("identity", ">=0.1")]), m("identity", &[]), m("system", &[])];
        assert_eq!(order(&ms), Ok(vec!["identity".into(), "secrets".into(), "system".into()]));
    }

    #[test]
    fn cycles_missing_and_versions_are_refused_with_one_line() {
        let cycle = [m("a", &[("b", "*")]), m("b", &[("a", "*")])];
        assert_eq!(order(&cycle), Err(OrderError::Cycle("a -> b -> a".into())));
        let missing = [m("a", &[("ghost", "*")])];
        assert!(order(&missing).is_err_and(|e| e.to_string().contains("`ghost`, which is not installed")));
        let version = [m("a", &[("b", ">=9")]), m("b", &[])];
        assert!(matches!(order(&version), Err(OrderError::Version { .. })));
        let dup = [m("a", &[]), m("a", &[])];
        assert_eq!(order(&dup), Err(OrderError::Duplicate("a".into())));
    }

    #[test]
    fn traffic_reports_averages_and_error_rate() {
        let t = Traffic::default();
        t.record(200, 1000);
        t.record(503, 3000);
        let r = t.report();
        assert_eq!(r.total_requests, 2);
        assert!((r.average_response_time_ms - 2.0).abs() < 1e-9);
        assert!((r.error_rate - 0.5).abs() < 1e-9);
    }
}
