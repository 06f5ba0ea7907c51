//! The operations API (`seeds/core-ops-api.md`): status and health from real probes,
//! configuration (read masked, changed validated and persisted), metrics from the kernel's
//! time series, the services of this server, the kernel cache, background tasks, security
//! status and scans; plus `/livez`, `/readyz` and the framework's `/api/system/info` and
//! `/api/system/config`. Every route is under `/api/v1/...` and its alias `/api/v1/core/...`,
//! in the v1 envelope. See `docs/operations.md`.

pub mod backup;
pub mod config;
mod diagnostics;
mod dump;
pub mod error;
mod routes;
mod schedule;
mod security;
pub mod service;

use std::sync::Arc;

use nexus_kernel::plugin::{ChannelSpec, Handles, Manifest, Reconfigured};
use nexus_web::plugin::{BoxFuture, Plugin, StartContext, StartError, Started};
use serde_json::Value;

pub use error::OpsError;
pub use service::Ops;

/// The plugin. Its own configuration (`[ops]`) applies live.
#[derive(Debug, Default)]
pub struct OpsPlugin {
    live: config::SharedConfig,
    /// Restarts the resource sampler when asked to (`POST /api/v1/services/ops/restart`).
    sampler: Arc<std::sync::Mutex<Option<tokio::task::AbortHandle>>>,
    running: std::sync::OnceLock<Arc<Ops>>,
}

impl nexus_kernel::plugin::Reconfigure for OpsPlugin {
    fn reconfigure(&self, config: &Value) -> Result<Reconfigured, Vec<nexus_kernel::error::FieldError>> {
        let parsed: config::OpsConfig = match config {
            Value::Null => config::OpsConfig::default(),
            value => nexus_kernel::plugin::validate_config(value)?,
        };
        parsed.validate().map_err(|e| vec![e])?;
        self.live.set(parsed);
        Ok(Reconfigured::Live)
    }

    fn report(&self) -> Option<Value> {
        let sampling = self.sampler.lock().ok().is_some_and(|s| s.as_ref().is_some_and(|h| !h.is_finished()));
        Some(serde_json::json!({ "resource_sampler_running": sampling }))
    }

    fn restart(&self) -> Option<futures::future::BoxFuture<'static, Result<(), String>>> {
        let ops = self.running.get()?.clone();
        let sampler = self.sampler.clone();
        Some(Box::pin(async move {
            restart_sampler(&ops, &sampler);
            Ok(())
        }))
    }
}

fn restart_sampler(ops: &Arc<Ops>, slot: &std::sync::Mutex<Option<tokio::task::AbortHandle>>) {
    let handle = tokio::spawn(service::sample_resources(Arc::downgrade(ops)));
    if let Ok(mut slot) = slot.lock()
        && let Some(old) = slot.replace(handle.abort_handle())
    {
        old.abort();
    }
}

impl Plugin for OpsPlugin {
    fn manifest(&self) -> Manifest {
        Manifest::builtin(
            "ops",
            "Operations",
            "core",
            "Status, health, configuration, metrics, services, cache, tasks and security of this server",
        )
        .depends_on("identity", "*")
        .permission("read:system", "Read status, health, configuration (masked), services, cache and tasks")
        .permission("read:metrics", "Read metrics and their summary")
        .permission("admin:config", "Change the configuration, and read it unmasked")
        .permission("admin:services", "Restart services, run diagnostics, cancel others' tasks")
        .permission("write:cache", "Clear caches")
        .permission("admin:backup", "Create and restore backups")
        .permission("admin:security", "Read the security status and run security scans")
        .config_schema(serde_json::json!({
            "type": "object",
            "properties": {
                "sample_interval_secs": {"type": "integer", "minimum": 1, "default": 15},
                "diagnostics_operations": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 200},
                "stress_concurrency": {"type": "integer", "minimum": 1, "maximum": 64, "default": 8},
                "stress_operations": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100},
                "diagnostics_wait_ms": {"type": "integer", "minimum": 0, "default": 30000},
                "backup_schedule": {"type": ["string", "null"], "description": "cron: minute hour day month weekday (UTC)"},
                "backup_keep": {"type": "integer", "minimum": 1, "default": 7}
            },
            "additionalProperties": false
        }))
        .channel(ChannelSpec::new("tasks", Some("read:system"), &["task.*"]))
    }

    fn start<'a>(&'a self, ctx: &'a mut StartContext) -> BoxFuture<'a, Result<Started, StartError>> {
        Box::pin(async move {
            let config: config::OpsConfig = ctx.config()?;
            config.validate().map_err(|e| ctx.error(format!("configuration: {}: {}", e.field, e.message)))?;
            self.live.set(config);
            let identity = ctx.require::<Arc<nexus_identity::Identity>>()?;
            let handles = ctx.require::<Handles>()?;
            let ops = Ops::new(ctx.kernel.clone(), identity, handles, self.live.clone(), ctx.events());
            let _ = self.running.set(ops.clone());
            restart_sampler(&ops, &self.sampler);
            tokio::spawn(schedule::run(Arc::downgrade(&ops)));
            ctx.provide(ops.clone());
            Ok(Started::routes(routes::routes(ops))
                .tag("ops", "Operations: status, config, metrics, services, cache, tasks, security")
                .tag("ops-probes", "Liveness and readiness for orchestrators"))
        })
    }
}

/// The service for commands that act on the data without serving (`nexus backup …`), on a
/// kernel opened with every built-in plugin's manifest.
pub async fn offline(kernel: Arc<nexus_kernel::Kernel>) -> Result<Arc<Ops>, String> {
    let slot = kernel.plugins.get("ops").ok_or("the ops plugin is not installed")?;
    let identity = nexus_identity::Identity::start(kernel.clone()).await.map_err(|e| e.to_string())?;
    let events = nexus_kernel::plugin::Publisher::new(kernel.events.clone(), slot);
    Ok(Ops::new(kernel, identity, Handles::default(), config::SharedConfig::default(), events))
}
