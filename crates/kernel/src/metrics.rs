//! Prometheus metrics of this process, owned by its [`Kernel`](crate::Kernel) rather than a
//! global, so that several servers in one process (as tests run them) keep separate counts.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    /// The route template (`/api/users/{user_id}`), never the raw path, to bound cardinality.
    pub route: Arc<str>,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: &'static str,
    pub route: Arc<str>,
}

/// The label of requests that matched no route.
const UNMATCHED: &str = "unmatched";

/// Methods outside the standard set share one label, so a client cannot grow the label space.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE"];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("OTHER")
}

fn duration_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

#[derive(Debug)]
pub struct Metrics {
    registry: RwLock<Registry>,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// The two families' metrics per route, method and status, found without hashing labels.
    /// A fast hash without flooding resistance: route templates come from the code, not from
    /// clients.
    handles: RwLock<HashMap<Arc<str>, Vec<Handles>, foldhash::fast::FixedState>>,
    /// Requests, response times, memory and CPU per minute for the last day.
    pub series: crate::timeseries::Series,
}

/// One label set's counter and histogram (both share their state with the family's).
#[derive(Debug)]
struct Handles {
    method: &'static str,
    status: u16,
    requests: Counter,
    duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<RequestLabels, Counter>::default();
        let http_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram);
        registry.register("http_requests", "HTTP requests served", http_requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response headers",
            http_duration.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
        Self {
            registry: RwLock::new(registry),
            http_requests,
            http_duration,
            handles: RwLock::default(),
            series: crate::timeseries::Series::default(),
        }
    }

    /// Records one served request; `route` is the matched template, `None` when none matched.
    /// Runs on every request: once a label set has been seen, this is a read-locked lookup
    /// with a cheap hash and no allocation (the families hash every label with SipHash).
    pub fn observe_request(&self, method: &str, route: Option<&str>, status: u16, seconds: f64) {
        self.series.observe(status, (seconds * 1_000_000.0) as u64);
        let method = method_label(method);
        let route = route.unwrap_or(UNMATCHED);
        let found = self.handles.read().ok().and_then(|map| {
            map.get(route)?.iter().find(|h| h.method == method && h.status == status).map(|h| {
                h.requests.inc();
                h.duration.observe(seconds);
            })
        });
        if found.is_some() {
            return;
        }
        let route: Arc<str> = Arc::from(route);
        let labels = RequestLabels { method, route: route.clone(), status };
        let handles = Handles {
            method,
            status,
            requests: self.http_requests.get_or_create_owned(&labels),
            duration: self.http_duration.get_or_create_owned(&RouteLabels { method, route: route.clone() }),
        };
        handles.requests.inc();
        handles.duration.observe(seconds);
        if let Ok(mut map) = self.handles.write() {
            let entry = map.entry(route).or_default();
            if !entry.iter().any(|h| h.method == method && h.status == status) {
                entry.push(handles);
            }
        }
    }

    /// Registers a plugin's own metric under `name`.
    pub fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        if let Ok(mut registry) = self.registry.write() {
            registry.register(name, help, metric);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.read() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}

/// Resident memory, CPU time, threads and open files of this process, read at scrape time.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = ProcessStats::read() else { return Ok(()) };
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64| {
            let metric = ConstGauge::new(value);
            let e = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(e)
        };
        gauge(&mut encoder, "process_resident_memory_bytes", "Resident memory size", stats.rss_bytes as f64)?;
        gauge(&mut encoder, "process_virtual_memory_bytes", "Virtual memory size", stats.virtual_bytes as f64)?;
        gauge(&mut encoder, "process_threads", "OS threads", stats.threads as f64)?;
        gauge(&mut encoder, "process_open_fds", "Open file descriptors", stats.open_fds as f64)?;
        let cpu = ConstCounter::new(stats.cpu_seconds);
        let e =
            encoder.encode_descriptor("process_cpu_seconds", "User and system CPU time", None, cpu.metric_type())?;
        cpu.encode(e)
    }
}

/// A snapshot of this process's resource use (Linux `/proc`; `None` elsewhere).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessStats {
    pub rss_bytes: u64,
    pub virtual_bytes: u64,
    pub cpu_seconds: f64,
    pub threads: u64,
    pub open_fds: u64,
}

impl ProcessStats {
    pub fn read() -> Option<Self> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            line.split_whitespace().nth(1)?.parse().ok()
        };
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is parenthesised and may contain spaces.
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // utime and stime are fields 14 and 15 of stat(5), at 11 and 12 after the name; the
        // kernel reports them in USER_HZ, which Linux fixes at 100 for user space.
        let cpu_seconds = (ticks(11) + ticks(12)) as f64 / 100.0;
        let open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0);
        Some(Self {
            rss_bytes: field("VmRSS:")? * 1024,
            virtual_bytes: field("VmSize:").unwrap_or(0) * 1024,
            cpu_seconds,
            threads: field("Threads:").unwrap_or(0),
            open_fds,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exposition_names_requests_and_process() {
        let m = super::Metrics::new();
        m.observe_request("GET", Some("/health"), 200, 0.001);
        m.observe_request("GET", Some("/health"), 200, 0.001);
        m.observe_request("BREW", None, 404, 0.001);
        let text = m.render();
        assert!(text.contains("http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 2"), "{text}");
        assert!(text.contains("http_requests_total{method=\"OTHER\",route=\"unmatched\",status=\"404\"} 1"));
        assert!(text.contains("http_request_duration_seconds_bucket"));
        assert!(text.contains("process_resident_memory_bytes"));
        assert!(text.contains("process_cpu_seconds_total"));
    }
}
