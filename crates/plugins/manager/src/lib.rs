//! Plugin management (`/api/plugins`): lists every plugin of the server with its manifest,
//! state and measured traffic; enables, disables and reconfigures them at run time.

pub mod error;
mod routes;
pub mod service;

use std::sync::Arc;

use nexus_kernel::events::Event;
use nexus_kernel::plugin::{ChannelSpec, Handles, Manifest};
use nexus_web::plugin::{BoxFuture, Plugin, StartContext, StartError, Started};

pub use service::{InstallRequest, InstallSource, Installer, PluginManager};

#[derive(Debug, Default)]
pub struct ManagerPlugin;

/// Its configuration is applied at the next start.
impl nexus_kernel::plugin::Reconfigure for ManagerPlugin {}

impl Plugin for ManagerPlugin {
    fn manifest(&self) -> Manifest {
        Manifest::builtin("plugins", "Plugin management", "core", "Lists, enables, disables and configures plugins")
            .depends_on("identity", "*")
            .essential()
            .permission("plugin.read", "Subscribe to plugin events")
            .permission(service::ADMIN, "Enable, disable, configure, install and uninstall plugins")
            .channel(ChannelSpec::new("plugin_events", Some("plugin.read"), &["plugin.*"]).third_party())
    }

    fn start<'a>(&'a self, ctx: &'a mut StartContext) -> BoxFuture<'a, Result<Started, StartError>> {
        Box::pin(async move {
            let handles = ctx.require::<Handles>()?;
            let manager = PluginManager::new(ctx.kernel.clone(), handles);
            // For the plugin host that installs plugins at run time (`Installer`).
            ctx.provide(manager.clone());
            // Changes made on other instances arrive as their events.
            let bus = ctx.kernel.events.clone();
            bus.follow(Arc::downgrade(&manager), |m: &PluginManager, event: Option<&Event>| {
                if let Some(event) = event
                    && event.kind.starts_with("plugin.")
                    && !m.is_local(event)
                {
                    m.follow(event);
                }
            });
            Ok(Started::routes(routes::routes(manager)).tag("plugins", "Framework: plugin management"))
        })
    }
}
