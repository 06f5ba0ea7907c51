//! The system plugin: the health endpoints each surface documents, and metrics.
//!
//! - `GET /health` — secrets manager seed (`healthy`/`unhealthy`, 503 with `error`)
//! - `GET /api/health` — framework seed (`status`, `version`, `timestamp`, `services`)
//! - `GET /api/v1/health` — core ops seed (`status: ok`, `timestamp`)
//! - `GET /metrics` — Prometheus exposition

mod health;
mod metrics;

use std::sync::Arc;

use axum::extract::FromRef;
use nexus_kernel::Kernel;
use nexus_kernel::plugin::{ChannelSpec, Manifest};
use nexus_web::Routes;
use nexus_web::plugin::{BoxFuture, Plugin, StartContext, StartError, Started};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What the system routes share, behind one reference count: the router clones a route's
/// state for every request, and its extractor once more.
#[derive(Debug, Clone)]
pub struct SystemState(Arc<Shared>);

#[derive(Debug)]
pub struct Shared {
    kernel: Arc<Kernel>,
    healthy: health::HealthyBodies,
}

impl std::ops::Deref for SystemState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl FromRef<SystemState> for Arc<Kernel> {
    fn from_ref(state: &SystemState) -> Self {
        state.kernel.clone()
    }
}

/// The plugin: health on every surface, Prometheus metrics, the error catalogue.
#[derive(Debug, Default)]
pub struct SystemPlugin;

/// Its configuration is applied at the next start.
impl nexus_kernel::plugin::Reconfigure for SystemPlugin {}

impl Plugin for SystemPlugin {
    fn manifest(&self) -> Manifest {
        Manifest::builtin(
            "system",
            "System",
            "core",
            "Health endpoints of every surface, metrics and the error catalogue",
        )
        .essential()
        .channel(ChannelSpec::new("system_events", Some("read:system"), &["system.*"]))
    }

    fn start<'a>(&'a self, ctx: &'a mut StartContext) -> BoxFuture<'a, Result<Started, StartError>> {
        Box::pin(async move {
            Ok(Started::routes(routes(ctx.kernel.clone())).tag("health", "Liveness and dependency checks"))
        })
    }
}

pub fn routes(kernel: Arc<Kernel>) -> Routes {
    OpenApiRouter::new()
        .routes(routes!(health::secrets_health))
        .routes(routes!(health::framework_health))
        .routes(routes!(health::ops_health))
        .routes(routes!(metrics::prometheus))
        .routes(routes!(nexus_web::docs::error_catalogue))
        .routes(routes!(nexus_web::docs::error_code))
        .with_state(SystemState(Arc::new(Shared { kernel, healthy: health::HealthyBodies::default() })))
}
