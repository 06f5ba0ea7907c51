//! The `[ops]` section: what the operations plugin itself can be told. Every key applies live
//! (`PUT /api/v1/config` answers `restart_required: false` for them).

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    /// Seconds between samples of the process's memory and CPU for `/api/v1/metrics`.
    pub sample_interval_secs: u64,
    /// Queries (or cache operations, or events) a `performance` diagnostic runs.
    pub diagnostics_operations: u32,
    /// Concurrent workers of a `stress` diagnostic…
    pub stress_concurrency: u32,
    /// …and the operations each of them runs: the burst is bounded by both.
    pub stress_operations: u32,
    /// How long `POST /api/v1/components/diagnostics` waits for its task before answering
    /// with the task still running.
    pub diagnostics_wait_ms: u64,
    /// When to back up by itself: a cron expression (`minute hour day month weekday`, UTC,
    /// with `*`, lists, ranges and steps). Unset: never. Each run happens once across the
    /// instances sharing the database.
    pub backup_schedule: Option<String>,
    /// Scheduled backups kept; older ones are deleted after each run.
    pub backup_keep: u32,
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self {
            sample_interval_secs: 15,
            diagnostics_operations: 200,
            stress_concurrency: 8,
            stress_operations: 100,
            diagnostics_wait_ms: 30_000,
            backup_schedule: None,
            backup_keep: 7,
        }
    }
}

impl OpsConfig {
    pub fn validate(&self) -> Result<(), nexus_kernel::error::FieldError> {
        let field = |f: &str, m: &str| nexus_kernel::error::FieldError::new(format!("config.{f}"), m);
        if self.sample_interval_secs == 0 {
            return Err(field("sample_interval_secs", "must be greater than 0"));
        }
        if !(1..=100_000).contains(&self.diagnostics_operations) {
            return Err(field("diagnostics_operations", "must be between 1 and 100000"));
        }
        if !(1..=64).contains(&self.stress_concurrency) {
            return Err(field("stress_concurrency", "must be between 1 and 64"));
        }
        if !(1..=10_000).contains(&self.stress_operations) {
            return Err(field("stress_operations", "must be between 1 and 10000"));
        }
        if let Some(cron) = &self.backup_schedule
            && let Err(e) = crate::schedule::Cron::parse(cron)
        {
            return Err(field("backup_schedule", &e));
        }
        if self.backup_keep == 0 {
            return Err(field("backup_keep", "must be greater than 0"));
        }
        Ok(())
    }
}

/// The configuration in effect, shared by the plugin value (which applies changes) and the
/// running service (which reads it).
#[derive(Debug, Default)]
pub struct Live(RwLock<OpsConfig>);

impl Live {
    pub fn get(&self) -> OpsConfig {
        self.0.read().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn set(&self, config: OpsConfig) {
        if let Ok(mut c) = self.0.write() {
            *c = config;
        }
    }
}

pub type SharedConfig = Arc<Live>;
