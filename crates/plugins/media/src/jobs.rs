//! Library scans as background jobs with progress. The kernel's tasks service does not exist
//! yet; [`ScanJobs`] is the one place that would hand the work to it.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nexus_kernel::clock::Timestamp;

use crate::probe::{self, ProbeError};
use crate::scan;
use crate::service::Media;

/// What the last scan did.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    pub files: usize,
    pub probed: usize,
    pub items_written: usize,
    pub items_removed: usize,
    pub files_removed: usize,
    pub seconds: f64,
    /// What could not be done (a missing `ffprobe`, files it failed on).
    pub log: Vec<String>,
}

/// The state of the scan job, as `ScheduledTasks` shows it.
#[derive(Debug, Clone, Default)]
pub struct JobState {
    pub running: bool,
    /// 0–100 while running.
    pub progress: f64,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub last: Option<ScanReport>,
    /// Finished scans since start.
    pub completed: u64,
}

#[derive(Debug, Default)]
pub struct ScanJobs {
    state: Mutex<JobState>,
    /// One scan at a time; a request during a scan waits for it, then scans again.
    running: tokio::sync::Mutex<()>,
}

impl ScanJobs {
    pub fn state(&self) -> JobState {
        match self.state.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut JobState)) {
        match self.state.lock() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }
}

impl Media {
    /// Scans every library: only new or changed files are probed, only differences written.
    pub async fn scan_all(self: &Arc<Self>) {
        let _one = self.jobs.running.lock().await;
        let started = Instant::now();
        self.jobs.update(|s| {
            s.running = true;
            s.progress = 0.0;
            s.started_at = Some(Timestamp::now());
        });
        let mut report = ScanReport::default();
        let libraries = self.catalog().libraries.clone();
        let count = libraries.len().max(1);
        let mut changed = false;
        for (n, library) in libraries.iter().enumerate() {
            let base = n as f64 * 100.0 / count as f64;
            let share = 100.0 / count as f64;
            match self.scan_library(library, base, share, &mut report).await {
                Ok(c) => changed |= c,
                Err(e) => {
                    tracing::error!(library = %library.name, error = %e, "media scan failed");
                    report.log.push(format!("{}: {e}", library.name));
                }
            }
        }
        if changed && let Err(e) = self.reload().await {
            tracing::error!(error = %e, "media catalog reload failed");
        }
        report.seconds = started.elapsed().as_secs_f64();
        self.metrics.scan_seconds.observe(report.seconds);
        for line in &report.log {
            tracing::warn!(scan = %line, "media scan");
        }
        if changed {
            tracing::info!(files = report.files, probed = report.probed, seconds = report.seconds, "media scan done");
        }
        self.jobs.update(|s| {
            s.running = false;
            s.progress = 100.0;
            s.finished_at = Some(Timestamp::now());
            s.last = Some(report);
            s.completed += 1;
        });
    }

    async fn scan_library(
        &self,
        library: &crate::catalog::Library,
        base: f64,
        share: f64,
        report: &mut ScanReport,
    ) -> Result<bool, crate::MediaError> {
        let kind = library.kind;
        let roots = library.paths.clone();
        for root in &roots {
            if !root.is_dir() {
                report.log.push(format!("{}: folder {} is missing", library.name, root.display()));
            }
        }
        let walked = tokio::task::spawn_blocking(move || scan::walk(kind, &roots)).await.unwrap_or_default();
        report.files += walked.files.len();
        let plan = scan::plan(library, &walked, Timestamp::now().as_micros());
        let catalog = self.catalog();
        let (mut changes, to_probe) = scan::diff(library, &catalog, plan);
        let program = self.kernel.config.media.ffprobe.clone();
        let mut probe_missing = program.is_empty();
        if probe_missing && !to_probe.is_empty() {
            report
                .log
                .push(String::from("ffprobe is disabled (media.ffprobe is empty): durations and streams are not read"));
        }
        let total = to_probe.len().max(1);
        for (n, mut file) in to_probe.into_iter().map(|t| t.row).enumerate() {
            if !probe_missing {
                match probe::probe(&program, std::path::Path::new(&file.path)).await {
                    Ok(p) => {
                        file.runtime_ticks = p.runtime_ticks;
                        file.streams = serde_json::to_string(&p.streams).unwrap_or_else(|_| String::from("[]"));
                        file.probed = 1;
                        report.probed += 1;
                    }
                    Err(e @ ProbeError::Missing(_)) => {
                        probe_missing = true;
                        report.log.push(e.to_string());
                    }
                    Err(e) => report.log.push(e.to_string()),
                }
            }
            changes.upsert_files.push(file);
            let progress = base + share * (n + 1) as f64 / total as f64;
            self.jobs.update(|s| s.progress = progress.min(99.9));
        }
        report.items_written += changes.upsert_items.len();
        report.items_removed += changes.delete_items.len();
        report.files_removed += changes.delete_files.len();
        let changed = !changes.is_empty();
        // What this scan added that can be watched or listened to, for `media.added`.
        let added: Vec<serde_json::Value> = changes
            .upsert_items
            .iter()
            .filter(|i| {
                catalog.item(&i.id).is_none()
                    && matches!(i.kind.as_str(), "Movie" | "Series" | "Episode" | "MusicAlbum")
            })
            .map(|i| serde_json::json!({"id": i.id, "type": i.kind, "name": i.name, "year": i.year}))
            .collect();
        let mut events = Vec::new();
        if !added.is_empty() {
            let count = added.len();
            let items: Vec<_> = added.into_iter().take(100).collect();
            let data =
                serde_json::json!({"library_id": library.id, "library": library.name, "count": count, "items": items});
            events.push(self.kernel.events.envelope("media", "media.added", data));
        }
        // The additions and their announcement commit together.
        self.store.apply(&changes, &events).await?;
        if !events.is_empty() {
            self.kernel.outbox.committed();
        }
        Ok(changed)
    }

    /// Rescans every `interval` until the server stops: added, moved and deleted files show
    /// up, and an unchanged library costs one walk.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let closed = self.kernel.events.closed();
        tokio::pin!(closed);
        loop {
            tokio::select! {
                () = &mut closed => return,
                () = tokio::time::sleep(interval) => self.scan_all().await,
            }
        }
    }
}
