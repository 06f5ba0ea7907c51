//! The media metrics on `/metrics`: active sessions, items per library, scan durations and
//! bytes streamed.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::catalog::Catalog;

#[derive(Debug, Clone)]
pub struct MediaMetrics {
    pub active_sessions: Gauge,
    pub items: Family<Vec<(String, String)>, Gauge>,
    pub scan_seconds: Histogram,
    pub streamed_bytes: Counter,
}

impl MediaMetrics {
    /// Creates the metrics and registers them with the kernel's registry.
    pub fn register(registry: &nexus_kernel::metrics::Metrics) -> Self {
        let m = Self {
            active_sessions: Gauge::default(),
            items: Family::default(),
            scan_seconds: Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0]),
            streamed_bytes: Counter::default(),
        };
        registry.register(
            "nexus_media_active_sessions",
            "Playback sessions now playing something",
            m.active_sessions.clone(),
        );
        registry.register("nexus_media_items", "Items per media library", m.items.clone());
        registry.register("nexus_media_scan_duration_seconds", "Duration of library scans", m.scan_seconds.clone());
        registry.register("nexus_media_streamed_bytes", "Bytes sent by media streams", m.streamed_bytes.clone());
        m
    }

    pub fn set_items(&self, catalog: &Catalog) {
        self.items.clear();
        for (library, n) in catalog.counts() {
            self.items
                .get_or_create(&vec![(String::from("library"), library)])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}
