//! The one list of built-in plugins. Everything else is derived from it: migrations, start-up
//! order, routes and OpenAPI, mounts and their dialects, channels, `/api/plugins`. A new
//! domain is a folder under `crates/plugins/` and one line here.

use std::sync::Arc;

use nexus_kernel::db::MigrationSet;
use nexus_kernel::plugin::Manifest;
use nexus_web::plugin::{BoxFuture, Plugin, StartContext, StartError, Started};

/// Every built-in plugin, in the order they are listed by `/api/plugins` (dependencies
/// decide the start-up order).
pub fn builtin() -> Vec<Arc<dyn Plugin>> {
    vec![
        Arc::new(nexus_system::SystemPlugin),
        Arc::new(nexus_identity::IdentityPlugin::new()),
        Arc::new(ApiPlugin),
        Arc::new(nexus_plugin_manager::ManagerPlugin),
        Arc::new(nexus_secrets::SecretsPlugin),
        Arc::new(nexus_realtime::RealtimePlugin),
        Arc::new(nexus_webhooks::WebhooksPlugin),
        Arc::new(nexus_analytics::AnalyticsPlugin),
        Arc::new(nexus_documents::DocumentsPlugin),
        Arc::new(nexus_media::MediaPlugin::default()),
        Arc::new(nexus_wasm::WasmPlugin),
        Arc::new(nexus_ops::OpsPlugin::default()),
    ]
}

/// Every migration set of `plugins`, the kernel's first.
pub fn migrations(plugins: &[Arc<dyn Plugin>]) -> Vec<&'static MigrationSet> {
    std::iter::once(&nexus_kernel::MIGRATIONS).chain(plugins.iter().filter_map(|p| p.migrations())).collect()
}

/// The kernel of the built-in plugins, for commands that act on the data without serving
/// (`nexus user …`, `nexus analytics …`).
pub async fn open_kernel(
    config: nexus_kernel::config::Config,
) -> Result<Arc<nexus_kernel::Kernel>, nexus_kernel::kernel::KernelError> {
    let plugins = builtin();
    let manifests: Vec<Manifest> = plugins.iter().map(|p| p.manifest()).collect();
    let sealer = nexus_secrets::keyring::config_sealer(&config);
    nexus_kernel::Kernel::open(config, &manifests, &migrations(&plugins), sealer).await
}

/// The framework's own conventions that have routes: API versions and batch requests.
#[derive(Debug, Default)]
pub struct ApiPlugin;

/// Its configuration is applied at the next start.
impl nexus_kernel::plugin::Reconfigure for ApiPlugin {}

impl Plugin for ApiPlugin {
    fn manifest(&self) -> Manifest {
        Manifest::builtin("api", "API conventions", "core", "API versions and batch requests")
            .essential()
            .config_type::<nexus_kernel::config::ApiConfig>()
    }

    fn start<'a>(&'a self, ctx: &'a mut StartContext) -> BoxFuture<'a, Result<Started, StartError>> {
        Box::pin(async move {
            let routes =
                crate::conventions::version::routes(ctx.kernel.clone()).merge(crate::conventions::batch::routes());
            Ok(Started::routes(routes)
                .tag("versions", "Framework: API versions")
                .tag("batch", "Framework: several requests in one"))
        })
    }
}
