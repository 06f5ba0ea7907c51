//! The plugin contract: what a plugin declares ([`Plugin::manifest`], migrations), what it is
//! handed when it starts ([`StartContext`]) and what it hands back ([`Started`]: routes with
//! their OpenAPI, mounts and their dialects, WebSocket channels, background tasks). The server
//! holds one list of plugins and derives everything else from it.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use nexus_kernel::Kernel;
use nexus_kernel::db::MigrationSet;
use nexus_kernel::plugin::{Manifest, Publisher, Reconfigure, Slot};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::{Dialect, Routes};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A plugin: built in (a crate under `crates/plugins/`) or, later, loaded at run time.
pub trait Plugin: Reconfigure + 'static {
    fn manifest(&self) -> Manifest;

    /// Its tables, for each backend.
    fn migrations(&self) -> Option<&'static MigrationSet> {
        None
    }

    /// Called in start-up order before storage is opened; `new_database` says whether the
    /// database is being created (an SQLite file that does not exist yet). Work that needs
    /// neither storage nor another plugin may begin here, to run beside the opening and the
    /// migrations; `start` collects it.
    fn prepare(&self, _config: &nexus_kernel::config::Config, _new_database: bool) {}

    /// Starts it. Called once, after every plugin it depends on has started.
    fn start<'a>(&'a self, ctx: &'a mut StartContext) -> BoxFuture<'a, Result<Started, StartError>>;
}

/// Why a plugin could not start: one line for the operator.
#[derive(Debug, thiserror::Error)]
#[error("plugin `{plugin}` did not start: {reason}")]
pub struct StartError {
    pub plugin: String,
    pub reason: String,
}

/// A path prefix a plugin serves, and the dialect its errors are written in.
#[derive(Debug, Clone)]
pub struct Mount {
    /// `/api/v1/secrets` covers itself and everything below it.
    pub prefix: String,
    pub dialect: Dialect,
}

impl Mount {
    pub fn new(prefix: &str, dialect: Dialect) -> Self {
        Self { prefix: prefix.to_string(), dialect }
    }
}

/// A handler found at run time for one request.
pub type DynamicHandler =
    Box<dyn FnOnce(axum::extract::Request) -> BoxFuture<'static, axum::response::Response> + Send>;

/// Routes that appear and disappear while the server runs (WebAssembly plugins): asked, in
/// order, about every request no route of the router matched, before the 404.
pub trait DynamicRoutes: Send + Sync + 'static {
    /// The handler of `method path`, if one of its routes matches.
    fn route(&self, method: &axum::http::Method, path: &str) -> Option<DynamicHandler>;

    /// Adds its routes, as they are now, to the OpenAPI document served at `/openapi.json`
    /// (as JSON).
    fn document(&self, openapi: &mut serde_json::Value);
}

/// What a started plugin hands back.
#[derive(Default)]
pub struct Started {
    pub routes: Option<Routes>,
    pub mounts: Vec<Mount>,
    /// OpenAPI tags its routes use: (name, description).
    pub tags: Vec<(&'static str, &'static str)>,
    /// Background tasks that end after the event bus closes.
    pub tasks: Vec<JoinHandle<()>>,
    /// Routes it adds and removes at run time.
    pub dynamic: Option<Arc<dyn DynamicRoutes>>,
    /// Work `start` began that must be done before the server accepts a connection, and that
    /// the plugins starting after it need not wait for (the first admin's password hash):
    /// it runs beside their start. An error stops start-up like an error of `start`.
    pub before_serving: Vec<JoinHandle<Result<(), String>>>,
}

impl Started {
    pub fn routes(routes: Routes) -> Self {
        Self { routes: Some(routes), ..Self::default() }
    }

    pub fn mount(mut self, prefix: &str, dialect: Dialect) -> Self {
        self.mounts.push(Mount::new(prefix, dialect));
        self
    }

    pub fn tag(mut self, name: &'static str, description: &'static str) -> Self {
        self.tags.push((name, description));
        self
    }

    pub fn task(mut self, task: JoinHandle<()>) -> Self {
        self.tasks.push(task);
        self
    }

    pub fn dynamic(mut self, routes: Arc<dyn DynamicRoutes>) -> Self {
        self.dynamic = Some(routes);
        self
    }

    /// See [`Started::before_serving`].
    pub fn before_serving(mut self, work: JoinHandle<Result<(), String>>) -> Self {
        self.before_serving.push(work);
        self
    }
}

/// Services plugins publish for the plugins that depend on them (identity publishes
/// `Arc<Identity>`), handed over at start rather than looked up per request.
#[derive(Default)]
pub struct Services(HashMap<TypeId, Box<dyn Any + Send + Sync>>);

impl Services {
    pub fn provide<T: Clone + Send + Sync + 'static>(&mut self, service: T) {
        self.0.insert(TypeId::of::<T>(), Box::new(service));
    }

    pub fn get<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.0.get(&TypeId::of::<T>()).and_then(|s| s.downcast_ref::<T>()).cloned()
    }
}

/// What a starting plugin may use.
pub struct StartContext<'a> {
    pub kernel: Arc<Kernel>,
    /// This plugin's entry in the registry (its state and traffic).
    pub slot: Arc<Slot>,
    pub(crate) services: &'a mut Services,
}

impl<'a> StartContext<'a> {
    pub fn new(kernel: Arc<Kernel>, slot: Arc<Slot>, services: &'a mut Services) -> Self {
        Self { kernel, slot, services }
    }

    pub fn id(&self) -> &str {
        self.slot.id()
    }

    /// A service another plugin published; an error naming it when that plugin is missing.
    pub fn require<T: Clone + Send + Sync + 'static>(&self) -> Result<T, StartError> {
        self.services.get::<T>().ok_or_else(|| self.error(format!("needs {}", std::any::type_name::<T>())))
    }

    /// Publishes `service` for the plugins started after this one.
    pub fn provide<T: Clone + Send + Sync + 'static>(&mut self, service: T) {
        self.services.provide(service);
    }

    /// This plugin's configuration subtree, as `T` (its defaults where absent).
    pub fn config<T: DeserializeOwned + Default>(&self) -> Result<T, StartError> {
        match self.slot.config() {
            Value::Null => Ok(T::default()),
            value => nexus_kernel::plugin::validate_config(&value).map_err(|errors| {
                let text: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
                self.error(format!("configuration: {}", text.join("; ")))
            }),
        }
    }

    /// Publishes events under this plugin's id; nothing while it is disabled.
    pub fn events(&self) -> Publisher {
        Publisher::new(self.kernel.events.clone(), self.slot.clone())
    }

    pub fn error(&self, reason: impl Into<String>) -> StartError {
        StartError { plugin: self.id().to_string(), reason: reason.into() }
    }
}

/// Path prefixes to dialects: the plugins' mounts, longest first, over the surface table of
/// `../shared/DESIGN.md` ([`Dialect::for_path`]).
#[derive(Debug, Clone, Default)]
pub struct DialectMap {
    mounts: Vec<Mount>,
}

impl DialectMap {
    pub fn new(mut mounts: Vec<Mount>) -> Self {
        mounts.sort_by_key(|m| std::cmp::Reverse(m.prefix.len()));
        Self { mounts }
    }

    pub fn for_path(&self, path: &str) -> Dialect {
        self.mounts
            .iter()
            .find(|m| path.strip_prefix(m.prefix.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
            .map_or_else(|| Dialect::for_path(path), |m| m.dialect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_mount_wins_and_the_surface_table_is_the_fallback() {
        let map =
            DialectMap::new(vec![Mount::new("/api/tools", Dialect::Media), Mount::new("/api/tools/v1", Dialect::V1)]);
        assert_eq!(map.for_path("/api/tools/x"), Dialect::Media);
        assert_eq!(map.for_path("/api/tools/v1/x"), Dialect::V1);
        assert_eq!(map.for_path("/api/toolsx"), Dialect::Framework);
        assert_eq!(map.for_path("/api/v1/secrets"), Dialect::V1);
    }
}
