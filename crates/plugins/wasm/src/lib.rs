//! WebAssembly plugins: third-party plugins installed at run time as WebAssembly components
//! (`wit/nexus-plugin`), each in a sandbox holding only what its manifest asked for and an
//! administrator granted. See `docs/plugins.md`.

pub mod env;
pub mod error;
pub mod host;
pub mod manifest;
pub mod package;
mod routes;
pub mod runtime;
pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nexus_kernel::events::Event;
use nexus_kernel::plugin::Manifest;
use nexus_kernel::principal::Principal;
use nexus_plugin_manager::{InstallRequest, Installer, PluginManager};
use nexus_web::plugin::{BoxFuture, Plugin, StartContext, StartError, Started};
use serde_json::Value;

pub use host::{WasmConfig, WasmHost};

pub static MIGRATIONS: nexus_kernel::db::MigrationSet = nexus_kernel::db::MigrationSet {
    owner: "wasm",
    sqlite: sqlx::migrate!("./migrations/sqlite"),
    postgres: sqlx::migrate!("./migrations/postgres"),
};

#[derive(Debug, Default)]
pub struct WasmPlugin;

/// Its configuration (the `plugins` section) is read at start.
impl nexus_kernel::plugin::Reconfigure for WasmPlugin {}

impl Plugin for WasmPlugin {
    fn manifest(&self) -> Manifest {
        Manifest::builtin(
            "wasm",
            "WebAssembly plugins",
            "core",
            "Installs and runs third-party plugins as sandboxed WebAssembly components",
        )
        .config_key("plugins")
        .depends_on("identity", "*")
        .depends_on("plugins", "*")
    }

    fn migrations(&self) -> Option<&'static nexus_kernel::db::MigrationSet> {
        Some(&MIGRATIONS)
    }

    fn start<'a>(&'a self, ctx: &'a mut StartContext) -> BoxFuture<'a, Result<Started, StartError>> {
        Box::pin(async move {
            let config: WasmConfig = ctx.config()?;
            let manager = ctx.require::<Arc<PluginManager>>()?;
            // The document database backs the `collections` import when it runs.
            let documents = ctx.require::<Arc<nexus_documents::Documents>>().ok();
            let host = WasmHost::new(ctx.kernel.clone(), config, ctx.events(), documents);
            host.load_installed().await.map_err(|e| ctx.error(format!("cannot load installed plugins: {e}")))?;
            manager.set_installer(Arc::new(HostInstaller(host.clone())));
            let mut started = Started::default().dynamic(Arc::new(routes::WasmRoutes(host.clone())));
            started = started.task(tokio::spawn(follow_events(host.clone(), ctx.kernel.events.clone())));
            if host.config.auto_load && host.config.plugin_directory.is_some() {
                started = started.task(tokio::spawn(watch_directory(host.clone(), ctx.kernel.events.clone())));
            }
            Ok(started)
        })
    }
}

/// Delivers subscribed events to the plugins, and notices operators enabling a plugin that
/// had failed; stops the engine's clock when the bus closes.
async fn follow_events(host: Arc<WasmHost>, bus: nexus_kernel::events::EventBus) {
    let mut events = bus.subscribe();
    let closed = bus.closed();
    tokio::pin!(closed);
    loop {
        let event: Arc<Event> = tokio::select! {
            () = &mut closed => break,
            received = events.recv() => match received {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "WebAssembly plugins missed events");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        };
        if let Some(id) = event.data.get("plugin_id").and_then(Value::as_str) {
            if event.kind == "plugin.enabled" {
                host.enabled_again(id);
            }
            // Installs, upgrades, rollbacks and uninstalls made on another instance (through
            // Redis): the database holds the result.
            if event.source == "wasm"
                && !bus.is_local(&event)
                && matches!(event.kind.as_str(), "plugin.installed" | "plugin.updated" | "plugin.uninstalled")
            {
                let (host, id) = (host.clone(), id.to_string());
                tokio::spawn(async move { host.follow_remote(&id).await });
            }
        }
        host.deliver(&event);
    }
    host.shutdown();
}

/// Hot reload: keeps the installed plugins in step with `plugins.plugin_directory`.
async fn watch_directory(host: Arc<WasmHost>, bus: nexus_kernel::events::EventBus) {
    let mut known = BTreeMap::new();
    let every = Duration::from_millis(host.config.scan_interval_ms.max(100));
    let closed = bus.closed();
    tokio::pin!(closed);
    loop {
        for change in host.sync_directory(&mut known).await {
            tracing::info!(%change, "plugin directory");
        }
        tokio::select! {
            () = &mut closed => break,
            () = tokio::time::sleep(every) => {}
        }
    }
}

#[derive(Debug)]
struct HostInstaller(Arc<WasmHost>);

impl Installer for HostInstaller {
    fn install<'a>(
        &'a self,
        caller: &'a Principal,
        request: InstallRequest,
    ) -> nexus_plugin_manager::service::BoxFuture<'a, Result<Value, nexus_kernel::error::Failure>> {
        Box::pin(self.0.install(caller, request))
    }

    fn rollback<'a>(
        &'a self,
        caller: &'a Principal,
        id: &'a str,
    ) -> nexus_plugin_manager::service::BoxFuture<'a, Result<Value, nexus_kernel::error::Failure>> {
        Box::pin(self.0.rollback(caller, id))
    }

    fn uninstall<'a>(
        &'a self,
        caller: &'a Principal,
        id: &'a str,
        purge: bool,
    ) -> nexus_plugin_manager::service::BoxFuture<'a, Result<(), nexus_kernel::error::Failure>> {
        Box::pin(self.0.uninstall(caller, id, purge))
    }
}
