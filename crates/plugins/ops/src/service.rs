//! The operations service: every operation takes the caller and checks its permission here.
//! Every figure is measured (a probe, a counter, a sample); what has no source is `null`
//! (see `docs/operations.md`).

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use nexus_identity::Identity;
use nexus_kernel::Kernel;
use nexus_kernel::clock::Timestamp;
use nexus_kernel::db::Db;
use nexus_kernel::error::FieldError;
use nexus_kernel::plugin::{Handles, KERNEL_STATE, Publisher, Reconfigured, Slot, Status};
use nexus_kernel::principal::Principal;
use nexus_kernel::tasks::{Task, TaskStatus};
use nexus_kernel::timeseries::{Rollup, Series};
use serde_json::{Map, Value, json};

use crate::OpsError;
use crate::config::{OpsConfig, SharedConfig};

pub const READ_SYSTEM: &str = "read:system";
pub const READ_METRICS: &str = "read:metrics";
pub const ADMIN_CONFIG: &str = "admin:config";
pub const ADMIN_SERVICES: &str = "admin:services";
pub const WRITE_CACHE: &str = "write:cache";
pub const ADMIN_SECURITY: &str = "admin:security";

/// Sections of the configuration that belong to the kernel rather than to a plugin.
const KERNEL_SECTIONS: &[&str] = &["server", "database", "redis", "log", "auth", "rate_limits"];

/// Capacity of the event bus's buffer (`kernel::events`), for the queue check.
const BUS_CAPACITY: usize = 4096;

#[derive(Debug)]
pub struct Ops {
    pub(crate) kernel: Arc<Kernel>,
    pub(crate) identity: Arc<Identity>,
    handles: Handles,
    live: SharedConfig,
    events: Publisher,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

impl Ops {
    pub fn new(
        kernel: Arc<Kernel>,
        identity: Arc<Identity>,
        handles: Handles,
        live: SharedConfig,
        events: Publisher,
    ) -> Arc<Self> {
        Arc::new(Self { kernel, identity, handles, live, events })
    }

    pub fn settings(&self) -> OpsConfig {
        self.live.get()
    }

    // ----- status and health -----

    async fn database(&self) -> Value {
        let (active, idle, max) = self.kernel.db.pool_stats();
        let pool = json!({ "active": active, "idle": idle, "total": active + idle, "max": max });
        match self.kernel.db.ping(nexus_kernel::health::CHECK_TIMEOUT).await {
            Ok(latency) => json!({
                "status": "healthy",
                "backend": self.kernel.db.backend().name(),
                "response_time_ms": ms(latency),
                "connection_pool": pool,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "database probe failed");
                json!({
                    "status": "unhealthy",
                    "backend": self.kernel.db.backend().name(),
                    "response_time_ms": null,
                    "error": "database connection failed",
                    "connection_pool": pool,
                })
            }
        }
    }

    fn plugin_counts(&self) -> (usize, usize, usize, Vec<Value>) {
        let slots = self.kernel.plugins.all();
        let active = slots.iter().filter(|s| s.status() == Status::Active).count();
        let failed: Vec<Value> = slots
            .iter()
            .filter(|s| s.status() == Status::Error)
            .map(|s| json!({ "id": s.id(), "reason": s.reason() }))
            .collect();
        (slots.len(), active, failed.len(), failed)
    }

    async fn cache_summary(&self) -> Value {
        let l1 = self.kernel.cache.l1_stats();
        let hits: u64 = l1.iter().map(|c| c.hits).sum();
        let misses: u64 = l1.iter().map(|c| c.misses).sum();
        let bytes: u64 = l1.iter().filter(|c| c.weight_unit == "bytes").map(|c| c.weighted_size).sum();
        let entries: u64 = l1.iter().map(|c| c.entries).sum();
        let mut out = json!({
            "status": "healthy",
            "hit_rate": (hits + misses > 0).then(|| round(hits as f64 / (hits + misses) as f64, 4)),
            "hits": hits,
            "misses": misses,
            "entries": entries,
            "memory_usage_bytes": bytes,
            "l2": null,
        });
        if let Some(l2) = self.kernel.cache.l2_stats().await {
            let (status, l2) = match l2 {
                Ok(s) => ("healthy", json!({ "status": "healthy", "entries": s.entries, "hit_rate": s.hit_rate() })),
                Err(e) => ("unhealthy", json!({ "status": "unhealthy", "error": e.to_string() })),
            };
            if let Some(map) = out.as_object_mut() {
                map.insert("l2".into(), l2);
                map.insert("status".into(), json!(status));
            }
        }
        out
    }

    /// `GET /api/v1/status`.
    pub async fn status(&self, caller: &Principal) -> Result<Value, OpsError> {
        caller.require(READ_SYSTEM)?;
        let database = self.database().await;
        let bus = self.kernel.events.stats();
        let (loaded, active, failed, failed_list) = self.plugin_counts();
        let cache = self.cache_summary().await;
        let db_ok = is(&database, "status", "healthy");
        let cache_ok = is(&cache, "status", "healthy");
        let status = if !db_ok {
            "unhealthy"
        } else if failed > 0 || !cache_ok {
            "degraded"
        } else {
            "healthy"
        };
        Ok(json!({
            "status": status,
            "version": nexus_kernel::VERSION,
            "environment": null,
            "uptime": self.kernel.uptime().as_secs(),
            "started_at": self.kernel.started_at.to_rfc3339(),
            "components": {
                "database": database,
                "event_bus": {
                    "status": if self.kernel.events.is_closed() { "stopping" } else { "healthy" },
                    "queue_size": bus.queue_size,
                    "processed_events": bus.processed_events,
                    "subscribers": bus.subscribers,
                },
                "plugins": {
                    "status": if failed == 0 { "healthy" } else { "degraded" },
                    "loaded": loaded,
                    "active": active,
                    "failed": failed,
                    "failed_plugins": failed_list,
                },
                "cache": cache,
                "tasks": { "status": "healthy", "running_here": self.kernel.tasks.running() },
            }
        }))
    }

    /// Average time of `n` sequential trivial queries.
    pub(crate) async fn query_timing(&self, n: u32) -> Result<(Duration, Duration), nexus_kernel::db::StorageError> {
        let started = Instant::now();
        let mut worst = Duration::ZERO;
        for _ in 0..n.max(1) {
            let one = self.kernel.db.ping(nexus_kernel::health::CHECK_TIMEOUT).await?;
            worst = worst.max(one);
        }
        Ok((started.elapsed() / n.max(1), worst))
    }

    /// `GET /api/v1/components/health`.
    pub async fn components_health(&self, caller: &Principal) -> Result<Value, OpsError> {
        caller.require(READ_SYSTEM)?;
        let mut components = Vec::new();

        let (active, idle, max) = self.kernel.db.pool_stats();
        let mut db_checks = Vec::new();
        let mut ping = None;
        let db_up = match self.kernel.db.ping(nexus_kernel::health::CHECK_TIMEOUT).await {
            Ok(t) => {
                ping = Some(t);
                db_checks.push(json!({ "name": "connection", "status": "pass", "response_time_ms": ms(t) }));
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "database check failed");
                db_checks
                    .push(json!({ "name": "connection", "status": "fail", "error": "database connection failed" }));
                false
            }
        };
        if db_up {
            match self.query_timing(10).await {
                Ok((avg, worst)) => db_checks.push(json!({
                    "name": "query_performance",
                    "status": if avg > Duration::from_millis(100) { "warning" } else { "pass" },
                    "queries": 10,
                    "avg_query_time_ms": ms(avg),
                    "max_query_time_ms": ms(worst),
                })),
                Err(_) => db_checks.push(json!({ "name": "query_performance", "status": "fail" })),
            }
        }
        // Every connection in use is normal for a moment (background workers hold some); the
        // pool is a problem when the probe had to wait for one.
        let waited = ping.is_none_or(|t| t > Duration::from_millis(500));
        db_checks.push(json!({
            "name": "connection_pool",
            "status": if active >= max && waited { "warning" } else { "pass" },
            "active": active, "idle": idle, "max": max,
        }));
        components.push(component("database", db_checks));

        let mut cache_checks = Vec::new();
        for c in self.kernel.cache.l1_stats() {
            let full = c.capacity.is_some_and(|cap| cap > 0 && c.weighted_size * 10 >= cap * 9);
            cache_checks.push(json!({
                "name": format!("l1:{}", c.name),
                "status": if full { "warning" } else { "pass" },
                "entries": c.entries,
                "size": c.weighted_size,
                "limit": c.capacity,
                "unit": c.weight_unit,
                "hit_rate": c.hit_rate().map(|r| round(r, 4)),
                "evictions": c.evictions,
            }));
        }
        if let Some(redis) = self.kernel.check_redis().await {
            cache_checks.push(if redis.healthy {
                json!({ "name": "connectivity", "status": "pass", "response_time_ms": redis.latency_ms })
            } else {
                json!({ "name": "connectivity", "status": "fail", "error": redis.error })
            });
        }
        components.push(component("cache", cache_checks));

        let bus = self.kernel.events.stats();
        components.push(component(
            "event_bus",
            vec![json!({
                "name": "queue",
                "status": if bus.queue_size * 4 >= BUS_CAPACITY * 3 { "warning" } else { "pass" },
                "queue_size": bus.queue_size,
                "capacity": BUS_CAPACITY,
                "processed_events": bus.processed_events,
                "subscribers": bus.subscribers,
            })],
        ));

        let (loaded, active_plugins, failed, failed_list) = self.plugin_counts();
        components.push(component(
            "plugins",
            vec![json!({
                "name": "started",
                "status": if failed == 0 { "pass" } else { "fail" },
                "loaded": loaded, "active": active_plugins, "failed": failed, "failed_plugins": failed_list,
            })],
        ));

        components.push(component("storage", vec![self.data_dir_check().await]));

        let overall = if components.iter().any(|c| is(c, "status", "unhealthy")) {
            "unhealthy"
        } else if components.iter().any(|c| is(c, "status", "degraded")) {
            "degraded"
        } else {
            "healthy"
        };
        Ok(json!({ "overall_status": overall, "components": components }))
    }

    /// Writes, syncs and removes a probe file in the data directory.
    async fn data_dir_check(&self) -> Value {
        let dir = self.kernel.config.data_dir.clone();
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let path = dir.join(format!(".ops-probe-{}", nexus_kernel::id::random_alphanumeric(8)));
            let mut file = std::fs::File::create(&path)?;
            file.write_all(b"probe")?;
            file.sync_all()?;
            std::fs::remove_file(&path)
        })
        .await;
        match result {
            Ok(Ok(())) => {
                json!({ "name": "data_dir_writable", "status": "pass", "response_time_ms": ms(started.elapsed()) })
            }
            Ok(Err(e)) => json!({ "name": "data_dir_writable", "status": "fail", "error": e.kind().to_string() }),
            Err(_) => json!({ "name": "data_dir_writable", "status": "fail" }),
        }
    }

    /// `GET /livez`: the process answers.
    pub fn live(&self) -> Value {
        json!({ "status": "ok", "uptime": self.kernel.uptime().as_secs() })
    }

    /// `GET /readyz`: whether this instance should receive traffic: its database (and Redis,
    /// when configured) answer, and no plugin failed to start.
    pub async fn ready(&self) -> (bool, Value) {
        let report = self.kernel.health().await;
        let (_, _, failed, _) = self.plugin_counts();
        let ready = report.healthy() && failed == 0 && !self.kernel.events.is_closed();
        let body = json!({
            "status": if ready { "ready" } else { "not_ready" },
            "checks": {
                "database": report.database,
                "redis": report.redis,
                "plugins_failed": failed,
                "shutting_down": self.kernel.events.is_closed(),
            }
        });
        (ready, body)
    }

    // ----- framework: system info and config -----

    /// `GET /api/system/info`.
    pub async fn system_info(&self, caller: &Principal) -> Result<Value, OpsError> {
        caller.require(READ_SYSTEM)?;
        let stats = nexus_kernel::metrics::ProcessStats::read();
        self.kernel.metrics.series.sample();
        let now = self.kernel.metrics.series.now_minute();
        let cpu =
            self.kernel.metrics.series.minutes(now - 5, now).iter().rev().find_map(|m| m.cpu_percent.last().copied());
        let active_sessions = nexus_identity::overview::read(&self.kernel.db, self.kernel.clock.now())
            .await
            .ok()
            .map(|o| o.active_sessions);
        Ok(json!({
            "framework_version": nexus_kernel::VERSION,
            "rust_version": null,
            "platform": std::env::consts::OS,
            "architecture": std::env::consts::ARCH,
            "loaded_plugins": self.kernel.plugins.all().len(),
            "active_sessions": active_sessions,
            "uptime_seconds": self.kernel.uptime().as_secs(),
            "memory_usage_mb": stats.map(|s| round(s.rss_bytes as f64 / 1_048_576.0, 1)),
            "cpu_usage_percent": cpu.map(|c| round(c, 1)),
        }))
    }

    /// `GET /api/system/config`: what the server runs on, without credentials.
    pub fn system_config(&self, caller: &Principal) -> Result<Value, OpsError> {
        caller.require(READ_SYSTEM)?;
        let config = &self.kernel.config;
        let level = config.log.level.to_ascii_lowercase();
        let url = config.database_url();
        let database = match self.kernel.db.backend() {
            nexus_kernel::db::Backend::Sqlite => {
                json!({ "type": "sqlite", "path": url.trim_start_matches("sqlite://").to_string() })
            }
            nexus_kernel::db::Backend::Postgres => {
                let (host, port, name) = url_parts(&url);
                json!({ "type": "postgresql", "host": host, "port": port.or(Some(5432)), "database": name })
            }
        };
        let cache = match &config.redis.url {
            Some(url) => {
                let (host, port, _) = url_parts(url);
                json!({ "type": "redis", "host": host, "port": port.or(Some(6379)), "l1": "memory" })
            }
            None => json!({ "type": "memory" }),
        };
        Ok(json!({
            "app_name": "Nexus",
            "version": nexus_kernel::VERSION,
            "environment": null,
            "debug": level.contains("debug") || level.contains("trace"),
            "server": { "host": config.server.host, "port": config.server.port },
            "database": database,
            "cache": cache,
        }))
    }

    // ----- configuration -----

    /// The configuration in effect as JSON: the kernel's, with the `ops` section as it is
    /// now (it changes live).
    fn effective_config(&self, masked: bool) -> Value {
        let config = if masked { self.kernel.config.masked() } else { self.kernel.config.unmasked() };
        let mut value = serde_json::to_value(&config).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("ops".into(), serde_json::to_value(self.settings()).unwrap_or_default());
        }
        if masked {
            mask_secrets(&mut value, "");
        }
        value
    }

    /// `GET /api/v1/config`: masked unless the caller holds `admin:config` and asks otherwise.
    pub fn config(&self, caller: &Principal, section: Option<&str>, mask: bool) -> Result<Value, OpsError> {
        caller.require(READ_SYSTEM)?;
        if !mask {
            caller.require(ADMIN_CONFIG)?;
        }
        let mut whole = self.effective_config(mask);
        match section {
            None => Ok(whole),
            Some(name) => whole
                .as_object_mut()
                .and_then(|m| m.remove(name))
                .map(|v| json!({ name: v }))
                .ok_or_else(|| OpsError::field("section", format!("no configuration section `{name}`"))),
        }
    }

    /// `PUT /api/v1/config`: `{section: {key: value}}` merged into the configuration
    /// (JSON merge patch per section), validated as a whole, stored (it outlives restarts),
    /// applied live where the owning plugin can. Returns the dotted keys changed and whether a
    /// restart is needed for any of them to take effect.
    pub async fn update_config(&self, caller: &Principal, body: &Value) -> Result<Value, OpsError> {
        caller.require(ADMIN_CONFIG)?;
        let Some(sections) = body.as_object().filter(|m| !m.is_empty()) else {
            return Err(OpsError::field("body", "must be an object of configuration sections"));
        };
        let known = serde_json::to_value(&self.kernel.config).unwrap_or_default();
        let mut errors = Vec::new();
        let mut updated = Vec::new();
        for (section, patch) in sections {
            let owned_by_plugin = self.owner(section).is_some();
            let exists = known.get(section).is_some_and(Value::is_object) || owned_by_plugin;
            if !exists {
                errors.push(FieldError::new(section.clone(), "no such configuration section"));
                continue;
            }
            if !patch.is_object() {
                errors.push(FieldError::new(section.clone(), "must be an object"));
                continue;
            }
            find_masked(patch, section, &mut errors);
            leaf_keys(patch, section, &mut updated);
        }
        if !errors.is_empty() {
            return Err(OpsError::Invalid(errors));
        }
        // Validate the whole result, with the changes stored earlier, before storing anything.
        let stored = nexus_kernel::plugin::store::load(&self.kernel.db, &self.kernel.sealer).await?;
        let stored_patch = |id: &str| -> Value {
            stored
                .iter()
                .find(|s| s.plugin_id == id)
                .and_then(|s| s.config.as_deref())
                .and_then(|c| serde_json::from_str(c).ok())
                .unwrap_or(Value::Null)
        };
        let mut candidate = self.kernel.config.clone();
        let mut kernel_patch = stored_patch(KERNEL_STATE);
        let mut plugin_patches: Vec<(Arc<Slot>, Value, Value)> = Vec::new();
        for (section, patch) in sections {
            candidate = candidate.patched(section, patch).map_err(|e| config_error(section, e))?;
            match self.owner(section) {
                Some(slot) => {
                    let mut merged = stored_patch(slot.id());
                    nexus_kernel::config::merge_patch(&mut merged, patch);
                    plugin_patches.push((slot, patch.clone(), merged));
                }
                None => {
                    let mut wrapper = Map::new();
                    wrapper.insert(section.clone(), patch.clone());
                    nexus_kernel::config::merge_patch(&mut kernel_patch, &Value::Object(wrapper));
                }
            }
        }
        for (_, _, merged) in &plugin_patches {
            self.kernel.sealer.check(merged).map_err(nexus_kernel::db::StorageError::from)?;
        }
        self.kernel.sealer.check(&kernel_patch).map_err(nexus_kernel::db::StorageError::from)?;
        let mut restart_required = false;
        let mut applied = Vec::new();
        for (slot, _, _) in &plugin_patches {
            let key = &slot.manifest.config_key;
            let outcome = match self.handles.get(slot.id()) {
                Some(plugin) => plugin.reconfigure(&candidate.section(key)).map_err(|errs| {
                    OpsError::Invalid(
                        errs.into_iter()
                            .map(|e| {
                                let field = e
                                    .field
                                    .strip_prefix("config")
                                    .map_or(e.field.clone(), |rest| format!("{key}{rest}"));
                                FieldError::new(field, e.message)
                            })
                            .collect(),
                    )
                })?,
                None => Reconfigured::RestartRequired,
            };
            restart_required |= outcome == Reconfigured::RestartRequired;
            applied.push(json!({ "section": key, "live": outcome == Reconfigured::Live }));
        }
        let now = self.kernel.clock.now();
        for (slot, patch, merged) in &plugin_patches {
            let mut state = slot.stored();
            state.config = Some(merged.to_string());
            state.updated_at = now.as_micros();
            nexus_kernel::plugin::store::save(&self.kernel.db, &self.kernel.sealer, &state).await?;
            let shown = candidate.masked().section(&slot.manifest.config_key);
            slot.configure(patch, shown, now);
        }
        let kernel_sections: Vec<&String> = sections.keys().filter(|s| self.owner(s).is_none()).collect();
        if !kernel_sections.is_empty() {
            // The kernel's configuration is fixed for the life of the process.
            restart_required = true;
            let row = nexus_kernel::plugin::StoredState {
                plugin_id: KERNEL_STATE.to_string(),
                enabled: true,
                reason: None,
                config: Some(kernel_patch.to_string()),
                updated_at: now.as_micros(),
            };
            nexus_kernel::plugin::store::save(&self.kernel.db, &self.kernel.sealer, &row).await?;
            for s in kernel_sections {
                applied.push(json!({ "section": s, "live": false }));
            }
        }
        self.events.publish(
            "config.updated",
            json!({ "updated_keys": updated, "restart_required": restart_required, "changed_by": caller.user_id }),
        );
        Ok(json!({ "updated_keys": updated, "restart_required": restart_required, "sections": applied }))
    }

    /// The plugin whose configuration section is `section`, unless it is a kernel section.
    fn owner(&self, section: &str) -> Option<Arc<Slot>> {
        if KERNEL_SECTIONS.contains(&section) {
            return None;
        }
        self.kernel.plugins.all().into_iter().find(|s| s.manifest.config_key == section)
    }

    // ----- metrics -----

    /// `GET /api/v1/metrics`: points of `resolution` minutes from `start` to `end` (by default
    /// the last hour, per minute).
    pub fn metrics(
        &self,
        caller: &Principal,
        start: Option<Timestamp>,
        end: Option<Timestamp>,
        resolution: Option<&str>,
    ) -> Result<Value, OpsError> {
        caller.require(READ_METRICS)?;
        let step = match resolution.unwrap_or("1m") {
            "1m" => 1,
            "5m" => 5,
            "15m" => 15,
            "1h" => 60,
            "1d" => 1440,
            _ => return Err(OpsError::field("resolution", "must be one of 1m, 5m, 15m, 1h, 1d")),
        };
        let series = &self.kernel.metrics.series;
        series.sample();
        let now = self.kernel.clock.now();
        let end = end.unwrap_or(now);
        let start = start.unwrap_or_else(|| end.add_seconds(-3600));
        if start >= end {
            return Err(OpsError::field("start_time", "must be before end_time"));
        }
        let first = start.as_unix_seconds().div_euclid(60);
        let last = end.as_unix_seconds().div_euclid(60).min(series.now_minute());
        let kept_from = series.now_minute() - nexus_kernel::timeseries::KEEP_MINUTES + 1;
        let since_start = self.kernel.started_at.as_unix_seconds().div_euclid(60);
        let minutes = series.minutes(first, last);
        let rolled = Series::rollup(&minutes, step);
        // Every point from the later of `start`, the process start and the retention limit,
        // so that minutes without requests show as zero rather than as gaps.
        let from = first.max(kept_from).max(since_start);
        let mut points = Vec::new();
        let mut bucket = from - from.rem_euclid(step);
        while bucket <= last && points.len() < 2000 {
            let found = rolled.iter().find(|r| r.start_minute == bucket);
            points.push((bucket, found.cloned()));
            bucket += step;
        }
        let ts = |minute: i64| Timestamp::from_micros(minute * 60_000_000).to_rfc3339();
        let series_of = |f: &dyn Fn(Option<&Rollup>) -> Option<f64>| -> Vec<Value> {
            points.iter().map(|(m, r)| json!({ "timestamp": ts(*m), "value": f(r.as_ref()) })).collect()
        };
        Ok(json!({
            "time_range": { "start": start.to_rfc3339(), "end": end.to_rfc3339() },
            "resolution": resolution.unwrap_or("1m"),
            "metrics": {
                "requests_per_second": series_of(&|r| Some(round(r.map_or(0.0, Rollup::requests_per_second), 4))),
                "response_time_ms": series_of(&|r| r.and_then(Rollup::average_ms).map(|v| round(v, 3))),
                "memory_usage_mb": series_of(&|r| r.and_then(|r| Rollup::average(&r.memory_mb)).map(|v| round(v, 1))),
                "cpu_usage_percent": series_of(&|r| r.and_then(|r| Rollup::average(&r.cpu_percent)).map(|v| round(v, 1))),
            }
        }))
    }

    /// `GET /api/v1/metrics/summary`: everything kept (the last 24 hours of this process).
    pub async fn metrics_summary(&self, caller: &Principal) -> Result<Value, OpsError> {
        caller.require(READ_METRICS)?;
        let series = &self.kernel.metrics.series;
        series.sample();
        let total = series.total();
        let errors: BTreeMap<String, u64> =
            total.by_status.iter().filter(|(s, _)| **s >= 400).map(|(s, n)| (s.to_string(), *n)).collect();
        let error_total: u64 = errors.values().sum();
        let rate = |n: u64| (total.requests > 0).then(|| round(n as f64 / total.requests as f64, 4));
        let dir = self.kernel.config.data_dir.clone();
        let disk = tokio::task::spawn_blocking(move || dir_size(&dir)).await.ok();
        let since = Timestamp::from_micros(total.start_minute * 60_000_000);
        Ok(json!({
            "window": { "start": since.to_rfc3339(), "end": self.kernel.clock.now().to_rfc3339() },
            "requests": {
                "total": total.requests,
                "success_rate": rate(total.requests - error_total),
                "avg_response_time_ms": total.average_ms().map(|v| round(v, 3)),
                "p95_response_time_ms": total.percentile_ms(0.95),
                "p99_response_time_ms": total.percentile_ms(0.99),
            },
            "errors": { "total": error_total, "rate": rate(error_total), "by_status": errors },
            "resources": {
                "avg_cpu_percent": Rollup::average(&total.cpu_percent).map(|v| round(v, 1)),
                "avg_memory_mb": Rollup::average(&total.memory_mb).map(|v| round(v, 1)),
                "peak_memory_mb": Rollup::peak(&total.memory_mb).map(|v| round(v, 1)),
                "disk_usage_gb": disk.map(|b| round(b as f64 / 1_073_741_824.0, 6)),
                "disk_usage_bytes": disk,
            }
        }))
    }

    // ----- services -----

    fn kernel_services(&self) -> Vec<&'static str> {
        vec!["database", "event_bus", "cache", "tasks"]
    }

    async fn kernel_service(&self, name: &str, detail: bool) -> Option<Value> {
        let uptime = self.kernel.uptime().as_secs();
        let mut v = match name {
            "database" => {
                let db = self.database().await;
                json!({
                    "name": "database", "type": "DatabaseAdapter", "kind": "kernel",
                    "status": "running", "health": at(&db, "status"), "version": nexus_kernel::VERSION,
                    "dependencies": [], "dependents": self.kernel.plugins.all().iter().map(|s| s.id().to_string()).collect::<Vec<_>>(),
                    "metrics": { "uptime": uptime, "response_time_ms": at(&db, "response_time_ms"), "connection_pool": at(&db, "connection_pool") },
                    "config": { "backend": self.kernel.db.backend().name(), "max_connections": self.kernel.db.pool_stats().2 },
                    "restartable": true,
                })
            }
            "event_bus" => {
                let bus = self.kernel.events.stats();
                json!({
                    "name": "event_bus", "type": "EventBus", "kind": "kernel",
                    "status": if self.kernel.events.is_closed() { "stopping" } else { "running" },
                    "health": "healthy", "version": nexus_kernel::VERSION,
                    "dependencies": if self.kernel.redis.is_some() { json!(["redis"]) } else { json!([]) },
                    "dependents": ["realtime", "webhooks"],
                    "metrics": { "uptime": uptime, "events_processed": bus.processed_events, "queue_size": bus.queue_size, "subscribers": bus.subscribers },
                    "config": { "capacity": BUS_CAPACITY, "redis_relay": self.kernel.redis.is_some() },
                    "restartable": false,
                })
            }
            "cache" => {
                let summary = self.cache_summary().await;
                json!({
                    "name": "cache", "type": "Cache", "kind": "kernel",
                    "status": "running", "health": at(&summary, "status"), "version": nexus_kernel::VERSION,
                    "dependencies": if self.kernel.redis.is_some() { json!(["redis"]) } else { json!([]) },
                    "dependents": ["identity", "secrets"],
                    "metrics": { "uptime": uptime, "hits": at(&summary, "hits"), "misses": at(&summary, "misses"), "hit_rate": at(&summary, "hit_rate"), "entries": at(&summary, "entries") },
                    "config": { "l2": self.kernel.cache.has_l2() },
                    "restartable": false,
                })
            }
            "tasks" => json!({
                "name": "tasks", "type": "TaskRunner", "kind": "kernel",
                "status": "running", "health": "healthy", "version": nexus_kernel::VERSION,
                "dependencies": ["database"], "dependents": ["ops"],
                "metrics": { "uptime": uptime, "running_here": self.kernel.tasks.running() },
                "config": {
                    "heartbeat_secs": nexus_kernel::tasks::HEARTBEAT.as_secs(),
                    "stale_after_secs": nexus_kernel::tasks::STALE_AFTER.as_secs(),
                },
                "restartable": false,
            }),
            _ => return None,
        };
        if !detail && let Some(map) = v.as_object_mut() {
            map.remove("config");
            map.remove("dependents");
        }
        if detail && let Some(map) = v.as_object_mut() {
            map.insert("recent_errors".into(), Value::Null);
        }
        Some(v)
    }

    fn plugin_service(&self, slot: &Slot, detail: bool) -> Value {
        let traffic = slot.traffic.report();
        let status = match slot.status() {
            Status::Active => "running",
            Status::Inactive => "stopped",
            Status::Error => "failed",
        };
        let health = match slot.status() {
            Status::Active => "healthy",
            Status::Inactive => "disabled",
            Status::Error => "unhealthy",
        };
        let handle = self.handles.get(slot.id());
        let mut v = json!({
            "name": slot.id(),
            "type": "Plugin",
            "kind": "plugin",
            "display_name": slot.manifest.name,
            "status": status,
            "health": health,
            "version": slot.manifest.version,
            "dependencies": slot.manifest.dependencies.keys().collect::<Vec<_>>(),
            "metrics": {
                "uptime": self.kernel.uptime().as_secs(),
                "requests_handled": traffic.total_requests,
                "avg_response_time_ms": traffic.average_response_time_ms,
                "error_rate": traffic.error_rate,
            },
            "restartable": handle.is_some_and(|h| h.restart().is_some()),
        });
        if detail && let Some(map) = v.as_object_mut() {
            map.insert("config".into(), slot.config());
            let dependents: Vec<String> = self
                .kernel
                .plugins
                .all()
                .iter()
                .filter(|s| s.manifest.dependencies.contains_key(slot.id()))
                .map(|s| s.id().to_string())
                .collect();
            map.insert("dependents".into(), json!(dependents));
            map.insert("reason".into(), json!(slot.reason()));
            map.insert("report".into(), handle.and_then(|h| h.report()).unwrap_or(Value::Null));
            map.insert("recent_errors".into(), Value::Null);
        }
        v
    }

    /// `GET /api/v1/services`.
    pub async fn services(&self, caller: &Principal) -> Result<Value, OpsError> {
        caller.require(READ_SYSTEM)?;
        let mut out = Vec::new();
        for name in self.kernel_services() {
            out.extend(self.kernel_service(name, false).await);
        }
        for slot in self.kernel.plugins.all() {
            out.push(self.plugin_service(&slot, false));
        }
        Ok(json!({ "services": out }))
    }

    /// `GET /api/v1/services/{name}`.
    pub async fn service(&self, caller: &Principal, name: &str) -> Result<Value, OpsError> {
        caller.require(READ_SYSTEM)?;
        if let Some(v) = self.kernel_service(name, true).await {
            return Ok(v);
        }
        let slot = self.kernel.plugins.get(name).ok_or_else(|| OpsError::NotFound(format!("Service `{name}`")))?;
        Ok(self.plugin_service(&slot, true))
    }

    /// `POST /api/v1/services/{name}/restart`.
    pub async fn restart(&self, caller: &Principal, name: &str) -> Result<Value, OpsError> {
        caller.require(ADMIN_SERVICES)?;
        let started = Instant::now();
        let details = match name {
            "database" => {
                let replaced = recycle_pool(&self.kernel.db).await?;
                json!({ "connections_replaced": replaced })
            }
            n if self.kernel_services().contains(&n) => {
                return Err(OpsError::Conflict(format!(
                    "The {n} service cannot be restarted in place; restart the server"
                )));
            }
            n => {
                if self.kernel.plugins.get(n).is_none() {
                    return Err(OpsError::NotFound(format!("Service `{n}`")));
                }
                let restart = self.handles.get(n).and_then(|h| h.restart()).ok_or_else(|| {
                    OpsError::Conflict(format!(
                        "The plugin `{n}` cannot be restarted in place; disable and enable it through \
                         /api/plugins/{n}/status, or restart the server"
                    ))
                })?;
                restart.await.map_err(|e| OpsError::Unavailable(format!("restart of `{n}` failed: {e}")))?;
                Value::Null
            }
        };
        let duration = started.elapsed();
        tracing::info!(service = name, by = %caller.user_id, duration_ms = duration.as_millis() as u64, "service restarted");
        self.events.publish(
            "service.restarted",
            json!({ "service": name, "duration_ms": ms(duration), "by": caller.user_id }),
        );
        Ok(json!({
            "service": name,
            "action": "restart",
            "status": "completed",
            "duration_ms": ms(duration),
            "details": details,
        }))
    }

    // ----- cache -----

    /// `GET /api/v1/cache/status`.
    pub async fn cache_status(&self, caller: &Principal) -> Result<Value, OpsError> {
        caller.require(READ_SYSTEM)?;
        let l1 = self.kernel.cache.l1_stats();
        let hits: u64 = l1.iter().map(|c| c.hits).sum();
        let misses: u64 = l1.iter().map(|c| c.misses).sum();
        let evictions: u64 = l1.iter().map(|c| c.evictions).sum();
        let used_bytes: u64 = l1.iter().filter(|c| c.weight_unit == "bytes").map(|c| c.weighted_size).sum();
        let limit_bytes: u64 = l1.iter().filter(|c| c.weight_unit == "bytes").filter_map(|c| c.capacity).sum();
        let l2 = self.kernel.cache.l2_stats().await;
        let (l2_hits, l2_misses) = match &l2 {
            Some(Ok(s)) => (s.hits, s.misses),
            _ => (0, 0),
        };
        let all_hits = hits + l2_hits;
        let all_misses = misses + l2_misses;
        let total = all_hits + all_misses;
        let mb = |b: u64| round(b as f64 / 1_048_576.0, 3);
        let mut levels = vec![json!({
            "level": "L1",
            "type": "memory",
            "entries": l1.iter().map(|c| c.entries).sum::<u64>(),
            "size_mb": mb(used_bytes),
            "hit_rate": (hits + misses > 0).then(|| round(hits as f64 / (hits + misses) as f64, 4)),
            "caches": l1.iter().map(|c| json!({
                "name": c.name,
                "entries": c.entries,
                "size": c.weighted_size,
                "limit": c.capacity,
                "unit": c.weight_unit,
                "hits": c.hits,
                "misses": c.misses,
                "evictions": c.evictions,
                "hit_rate": c.hit_rate().map(|r| round(r, 4)),
            })).collect::<Vec<_>>(),
        })];
        let mut status = "healthy";
        match l2 {
            Some(Ok(s)) => levels.push(json!({
                "level": "L2", "type": "redis", "entries": s.entries, "size_mb": null,
                "hits": s.hits, "misses": s.misses, "hit_rate": s.hit_rate().map(|r| round(r, 4)),
            })),
            Some(Err(e)) => {
                status = "degraded";
                levels.push(json!({ "level": "L2", "type": "redis", "status": "unhealthy", "error": e.to_string() }));
            }
            None => {}
        }
        Ok(json!({
            "status": status,
            "memory_usage": {
                "used_mb": mb(used_bytes),
                "available_mb": mb(limit_bytes.saturating_sub(used_bytes)),
                "total_mb": mb(limit_bytes),
            },
            "statistics": {
                "hit_rate": (total > 0).then(|| round(all_hits as f64 / total as f64, 4)),
                "miss_rate": (total > 0).then(|| round(all_misses as f64 / total as f64, 4)),
                "total_hits": all_hits,
                "total_misses": all_misses,
                "evictions": evictions,
            },
            "cache_levels": levels,
        }))
    }

    /// `DELETE /api/v1/cache`.
    pub async fn clear_cache(
        &self,
        caller: &Principal,
        pattern: Option<&str>,
        level: Option<&str>,
    ) -> Result<Value, OpsError> {
        caller.require(WRITE_CACHE)?;
        let pattern = pattern.map(str::trim).filter(|p| !p.is_empty()).unwrap_or("*");
        if pattern.len() > 256 {
            return Err(OpsError::field("pattern", "must be at most 256 characters"));
        }
        let level = match level.map(str::trim).filter(|l| !l.is_empty()) {
            None => nexus_kernel::cache::Level::All,
            Some(l) => {
                nexus_kernel::cache::Level::parse(l).ok_or_else(|| OpsError::field("level", "must be L1, L2 or all"))?
            }
        };
        let cleared = self.kernel.cache.clear(pattern, level).await?;
        tracing::info!(pattern, cleared = cleared.cleared_keys, by = %caller.user_id, "cache cleared");
        Ok(serde_json::to_value(cleared).unwrap_or_default())
    }

    // ----- tasks -----

    /// `GET /api/v1/tasks`.
    pub async fn tasks(&self, caller: &Principal, status: Option<&str>, kind: Option<&str>) -> Result<Value, OpsError> {
        caller.require(READ_SYSTEM)?;
        let status = match status {
            None => None,
            Some(s) => Some(TaskStatus::parse(s).ok_or_else(|| {
                OpsError::field("status", "must be pending, running, completed, failed or cancelled")
            })?),
        };
        let now = self.kernel.clock.now();
        let tasks = self.kernel.tasks.list(status, kind, 100).await?;
        let tasks: Vec<Value> = tasks.iter().map(|t| summary(t, now)).collect();
        Ok(json!({ "tasks": tasks }))
    }

    /// `GET /api/v1/tasks/{id}`.
    pub async fn task(&self, caller: &Principal, id: &str) -> Result<Value, OpsError> {
        caller.require(READ_SYSTEM)?;
        let task = self.kernel.tasks.get(id).await?.ok_or_else(|| OpsError::NotFound(String::from("Task")))?;
        Ok(task.to_json(self.kernel.clock.now()))
    }

    /// `DELETE /api/v1/tasks/{id}`: the caller's own tasks, or any with `admin:services`.
    pub async fn cancel_task(&self, caller: &Principal, id: &str) -> Result<Value, OpsError> {
        caller.require(READ_SYSTEM)?;
        let task = self.kernel.tasks.get(id).await?.ok_or_else(|| OpsError::NotFound(String::from("Task")))?;
        if task.created_by != caller.user_id {
            caller.require(ADMIN_SERVICES)?;
        }
        let task = self.kernel.tasks.cancel(id).await?;
        tracing::info!(task = %id, by = %caller.user_id, "task cancelled");
        Ok(json!({
            "id": task.id,
            "status": task.status.as_str(),
            "cancelled_at": task.finished_at.map(Timestamp::to_rfc3339),
        }))
    }
}

/// A task in a list: without its logs.
fn summary(task: &Task, now: Timestamp) -> Value {
    let mut v = task.to_json(now);
    if let Some(map) = v.as_object_mut() {
        map.remove("logs");
    }
    v
}

/// How long a request waits for its task before answering with the task still running:
/// `ops.diagnostics_wait_ms`, but a second short of the request timeout.
pub(crate) fn answer_within(ops: &Ops) -> Duration {
    let timeout =
        Duration::from_secs(ops.kernel.config.server.request_timeout_secs).saturating_sub(Duration::from_secs(1));
    Duration::from_millis(ops.settings().diagnostics_wait_ms).min(timeout)
}

/// Whether `v.key` is the string `expected`.
pub(crate) fn is(v: &Value, key: &str, expected: &str) -> bool {
    v.get(key).and_then(Value::as_str) == Some(expected)
}

/// `v.key`, `null` when absent.
fn at(v: &Value, key: &str) -> Value {
    v.get(key).cloned().unwrap_or(Value::Null)
}

fn component(name: &str, checks: Vec<Value>) -> Value {
    let status = if checks.iter().any(|c| is(c, "status", "fail")) {
        "unhealthy"
    } else if checks.iter().any(|c| is(c, "status", "warning")) {
        "degraded"
    } else {
        "healthy"
    };
    json!({ "name": name, "status": status, "checks": checks })
}

fn config_error(section: &str, e: nexus_kernel::config::ConfigError) -> OpsError {
    match e {
        nexus_kernel::config::ConfigError::Key { key, reason } => {
            let field = if key.is_empty() || key == "." { section.to_string() } else { key };
            OpsError::field(&field, reason)
        }
        nexus_kernel::config::ConfigError::File { reason, .. } => OpsError::field(section, reason),
    }
}

/// Keys whose values are credentials, wherever they appear.
fn is_secret_key(key: &str) -> bool {
    nexus_kernel::config::is_credential_key(key)
}

/// Masks credentials the typed masking does not know (plugins' own sections).
fn mask_secrets(value: &mut Value, key: &str) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                mask_secrets(v, k);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| mask_secrets(v, key)),
        Value::String(s) if is_secret_key(key) && s != nexus_kernel::config::MASK => {
            *s = nexus_kernel::config::MASK.to_string();
        }
        Value::String(s) if s.contains("://") && s.contains('@') => {
            *s = nexus_kernel::config::mask_url(s);
        }
        _ => {}
    }
}

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

/// The dotted paths of every leaf `patch` sets.
fn leaf_keys(patch: &Value, path: &str, out: &mut Vec<String>) {
    match patch.as_object() {
        Some(map) if !map.is_empty() => {
            for (k, v) in map {
                leaf_keys(v, &format!("{path}.{k}"), out);
            }
        }
        _ => out.push(path.to_string()),
    }
}

/// Host, port and path (database name) of a URL, never its credentials.
fn url_parts(url: &str) -> (Option<String>, Option<u16>, Option<String>) {
    let Some((_, rest)) = url.split_once("://") else { return (None, None, None) };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (h.to_string(), p.parse().ok()),
        _ => (hostport.to_string(), None),
    };
    let name = tail.strip_prefix('/').map(|t| t.split('?').next().unwrap_or("").to_string()).filter(|n| !n.is_empty());
    ((!host.is_empty()).then_some(host), port, name)
}

/// Bytes of the files under `dir`.
fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Closes the pool's idle connections so that new ones are opened: a reconnect that leaves
/// requests in flight alone. Returns how many were replaced.
async fn recycle_pool(db: &Db) -> Result<u32, OpsError> {
    macro_rules! recycle {
        ($pool:expr) => {{
            let idle = u32::try_from($pool.num_idle()).unwrap_or(0);
            let mut replaced = 0;
            for _ in 0..idle {
                match $pool.try_acquire() {
                    Some(conn) => {
                        if conn.close().await.is_ok() {
                            replaced += 1;
                        }
                    }
                    None => break,
                }
            }
            replaced
        }};
    }
    let replaced = match db {
        Db::Sqlite(pool) => recycle!(pool),
        Db::Postgres(pool) => recycle!(pool),
    };
    // A fresh connection answers before this reports success.
    db.ping(nexus_kernel::health::CHECK_TIMEOUT).await?;
    Ok(replaced)
}

/// Samples memory and CPU into the kernel's time series every `sample_interval_secs` until
/// the service is gone or the bus closes.
pub async fn sample_resources(ops: Weak<Ops>) {
    let closed = match ops.upgrade() {
        Some(o) => o.kernel.events.closed(),
        None => return,
    };
    tokio::pin!(closed);
    loop {
        let interval = {
            let Some(ops) = ops.upgrade() else { return };
            ops.kernel.metrics.series.sample();
            Duration::from_secs(ops.settings().sample_interval_secs.max(1))
        };
        tokio::select! {
            () = &mut closed => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
