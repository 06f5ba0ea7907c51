//! The in-process time series behind `GET /api/v1/metrics` and `/api/v1/metrics/summary`:
//! per minute of the kernel clock, for the last 24 hours, the requests served (by status), a
//! histogram of their response times, and samples of the process's resident memory and CPU.
//!
//! The edge records every request ([`Series::observe`], through
//! [`Metrics::observe_request`](crate::metrics::Metrics::observe_request)) into atomics of the
//! current minute; the first request (or read) of a new minute moves them into the history.
//! A request that races with that move may be counted in the neighbouring minute.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::clock::Clock;
use crate::metrics::ProcessStats;

/// Minutes kept.
pub const KEEP_MINUTES: i64 = 24 * 60;

/// Upper bounds of the response-time histogram, in microseconds: 1.25 apart from 50 µs to
/// about 60 s, so a percentile read from it is at most 25 % above the true value.
fn bounds() -> &'static [u64] {
    static BOUNDS: OnceLock<Vec<u64>> = OnceLock::new();
    BOUNDS.get_or_init(|| {
        let mut out = Vec::new();
        let mut b = 50.0f64;
        while b < 60_000_000.0 {
            out.push(b.round() as u64);
            b *= 1.25;
        }
        out.push(u64::MAX);
        out
    })
}

const STATUSES: usize = 600;

/// One finished minute.
#[derive(Debug, Clone, Default)]
pub struct Minute {
    /// Minutes since the Unix epoch.
    pub minute: i64,
    pub requests: u64,
    /// Requests by status (only statuses seen).
    pub by_status: BTreeMap<u16, u64>,
    pub micros_sum: u64,
    pub histogram: Vec<u64>,
    /// Resident memory samples of the minute, in MiB.
    pub memory_mb: Vec<f64>,
    /// CPU use samples of the minute, in percent of one core.
    pub cpu_percent: Vec<f64>,
}

impl Minute {
    pub fn average_ms(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.micros_sum as f64 / self.requests as f64 / 1000.0)
    }
}

/// Several minutes rolled into one point (or the whole window, for the summary).
#[derive(Debug, Clone, Default)]
pub struct Rollup {
    pub start_minute: i64,
    pub minutes: i64,
    pub requests: u64,
    pub by_status: BTreeMap<u16, u64>,
    pub micros_sum: u64,
    pub histogram: Vec<u64>,
    pub memory_mb: Vec<f64>,
    pub cpu_percent: Vec<f64>,
}

impl Rollup {
    fn add(&mut self, m: &Minute) {
        self.requests += m.requests;
        for (s, n) in &m.by_status {
            *self.by_status.entry(*s).or_default() += n;
        }
        self.micros_sum += m.micros_sum;
        if self.histogram.len() < m.histogram.len() {
            self.histogram.resize(m.histogram.len(), 0);
        }
        for (i, n) in m.histogram.iter().enumerate() {
            if let Some(slot) = self.histogram.get_mut(i) {
                *slot += n;
            }
        }
        self.memory_mb.extend(&m.memory_mb);
        self.cpu_percent.extend(&m.cpu_percent);
    }

    /// Requests per second over the rolled minutes.
    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / (self.minutes.max(1) * 60) as f64
    }

    pub fn average_ms(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.micros_sum as f64 / self.requests as f64 / 1000.0)
    }

    /// The `q` quantile (0–1) of response times in milliseconds: the upper bound of the
    /// histogram bucket it falls in.
    pub fn percentile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.histogram.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.histogram.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let bound = bounds().get(i).copied().unwrap_or(u64::MAX);
                let bound = if bound == u64::MAX { 60_000_000 } else { bound };
                return Some(bound as f64 / 1000.0);
            }
        }
        None
    }

    pub fn average(values: &[f64]) -> Option<f64> {
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    }

    pub fn peak(values: &[f64]) -> Option<f64> {
        values.iter().copied().fold(None, |acc, v| Some(acc.map_or(v, |a: f64| a.max(v))))
    }
}

/// The series of one instance.
#[derive(Debug)]
pub struct Series {
    clock: OnceLock<Arc<Clock>>,
    current: AtomicI64,
    requests: AtomicU64,
    micros: AtomicU64,
    by_status: Vec<AtomicU64>,
    histogram: Vec<AtomicU64>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    history: VecDeque<Minute>,
    /// Samples of the current minute.
    memory_mb: Vec<f64>,
    cpu_percent: Vec<f64>,
    /// The last CPU reading: when (wall clock) and the CPU seconds used by then.
    last_cpu: Option<(Instant, f64)>,
}

impl Default for Series {
    fn default() -> Self {
        Self {
            clock: OnceLock::new(),
            current: AtomicI64::new(i64::MIN),
            requests: AtomicU64::new(0),
            micros: AtomicU64::new(0),
            by_status: (0..STATUSES).map(|_| AtomicU64::new(0)).collect(),
            histogram: bounds().iter().map(|_| AtomicU64::new(0)).collect(),
            state: Mutex::new(State {
                history: VecDeque::new(),
                memory_mb: Vec::new(),
                cpu_percent: Vec::new(),
                last_cpu: None,
            }),
        }
    }
}

impl Series {
    /// Minutes are judged by `clock` from now on (the kernel's, which tests move).
    pub fn use_clock(&self, clock: Arc<Clock>) {
        let _ = self.clock.set(clock);
    }

    fn minute_now(&self) -> i64 {
        let seconds = match self.clock.get() {
            Some(clock) => clock.unix_seconds_coarse(),
            None => crate::clock::coarse::unix_micros().div_euclid(1_000_000),
        };
        seconds.div_euclid(60)
    }

    /// Records one request.
    pub fn observe(&self, status: u16, micros: u64) {
        let minute = self.minute_now();
        if self.current.load(Ordering::Relaxed) != minute {
            self.roll(minute);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.micros.fetch_add(micros, Ordering::Relaxed);
        if let Some(slot) = self.by_status.get(usize::from(status).min(STATUSES - 1)) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        let bucket = bounds().partition_point(|b| *b < micros);
        if let Some(slot) = self.histogram.get(bucket) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Moves the current minute into the history when `minute` has begun.
    fn roll(&self, minute: i64) {
        let Ok(mut state) = self.state.lock() else { return };
        let previous = self.current.load(Ordering::Relaxed);
        if previous == minute {
            return;
        }
        let take = |a: &AtomicU64| a.swap(0, Ordering::Relaxed);
        let requests = take(&self.requests);
        let finished = Minute {
            minute: previous,
            requests,
            by_status: self
                .by_status
                .iter()
                .enumerate()
                .filter_map(|(s, a)| {
                    let n = take(a);
                    (n > 0).then(|| (u16::try_from(s).unwrap_or(0), n))
                })
                .collect(),
            micros_sum: take(&self.micros),
            histogram: self.histogram.iter().map(take).collect(),
            memory_mb: std::mem::take(&mut state.memory_mb),
            cpu_percent: std::mem::take(&mut state.cpu_percent),
        };
        self.current.store(minute, Ordering::Relaxed);
        if previous != i64::MIN && (finished.requests > 0 || !finished.memory_mb.is_empty()) {
            state.history.push_back(finished);
        }
        while state.history.front().is_some_and(|m| m.minute <= minute - KEEP_MINUTES) {
            state.history.pop_front();
        }
    }

    /// Samples the process's memory and CPU into the current minute. CPU is the share of one
    /// core used since the previous sample; the first sample has none.
    pub fn sample(&self) {
        let minute = self.minute_now();
        if self.current.load(Ordering::Relaxed) != minute {
            self.roll(minute);
        }
        let Some(stats) = ProcessStats::read() else { return };
        let Ok(mut state) = self.state.lock() else { return };
        state.memory_mb.push(stats.rss_bytes as f64 / (1024.0 * 1024.0));
        let now = Instant::now();
        if let Some((at, cpu)) = state.last_cpu {
            let wall = now.duration_since(at).as_secs_f64();
            if wall >= 0.05 {
                state.cpu_percent.push(((stats.cpu_seconds - cpu) / wall * 100.0).max(0.0));
                state.last_cpu = Some((now, stats.cpu_seconds));
            }
        } else {
            state.last_cpu = Some((now, stats.cpu_seconds));
        }
    }

    /// Every kept minute from `start` to `end` (minutes since the epoch, inclusive), the
    /// current one included, oldest first.
    pub fn minutes(&self, start: i64, end: i64) -> Vec<Minute> {
        let now = self.minute_now();
        if self.current.load(Ordering::Relaxed) != now {
            self.roll(now);
        }
        let Ok(state) = self.state.lock() else { return Vec::new() };
        let mut out: Vec<Minute> =
            state.history.iter().filter(|m| m.minute >= start && m.minute <= end).cloned().collect();
        if (start..=end).contains(&now) {
            let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
            out.push(Minute {
                minute: now,
                requests: load(&self.requests),
                by_status: self
                    .by_status
                    .iter()
                    .enumerate()
                    .filter_map(|(s, a)| {
                        let n = load(a);
                        (n > 0).then(|| (u16::try_from(s).unwrap_or(0), n))
                    })
                    .collect(),
                micros_sum: load(&self.micros),
                histogram: self.histogram.iter().map(load).collect(),
                memory_mb: state.memory_mb.clone(),
                cpu_percent: state.cpu_percent.clone(),
            });
        }
        out
    }

    /// `minutes` rolled up into points `step` minutes wide, aligned to multiples of `step`.
    pub fn rollup(minutes: &[Minute], step: i64) -> Vec<Rollup> {
        let step = step.max(1);
        let mut out: Vec<Rollup> = Vec::new();
        for m in minutes {
            let start = m.minute - m.minute.rem_euclid(step);
            if out.last().is_none_or(|r| r.start_minute != start) {
                out.push(Rollup { start_minute: start, minutes: step, ..Rollup::default() });
            }
            if let Some(last) = out.last_mut() {
                last.add(m);
            }
        }
        out
    }

    /// Everything kept, as one rollup.
    pub fn total(&self) -> Rollup {
        let now = self.minute_now();
        let minutes = self.minutes(now - KEEP_MINUTES + 1, now);
        let mut total = Rollup {
            start_minute: minutes.first().map_or(now, |m| m.minute),
            minutes: minutes.first().map_or(1, |m| now - m.minute + 1),
            ..Rollup::default()
        };
        for m in &minutes {
            total.add(m);
        }
        total
    }

    /// The current minute, by the kernel clock.
    pub fn now_minute(&self) -> i64 {
        self.minute_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_roll_and_percentiles_come_from_the_histogram() {
        let clock = Arc::new(Clock::default());
        let s = Series::default();
        s.use_clock(clock.clone());
        for _ in 0..99 {
            s.observe(200, 1_000);
        }
        s.observe(500, 500_000);
        clock.advance(std::time::Duration::from_secs(60));
        s.observe(404, 2_000);
        let now = s.now_minute();
        let minutes = s.minutes(now - 10, now);
        assert_eq!(minutes.len(), 2);
        assert_eq!(minutes.first().map(|m| m.requests), Some(100));
        let total = s.total();
        assert_eq!(total.requests, 101);
        assert_eq!(total.by_status.get(&500), Some(&1));
        assert_eq!(total.by_status.get(&404), Some(&1));
        let p50 = total.percentile_ms(0.5).unwrap_or(0.0);
        assert!((1.0..=1.25).contains(&p50), "{p50}");
        let p99 = total.percentile_ms(0.995).unwrap_or(0.0);
        assert!(p99 >= 2.0, "{p99}");
        let five = Series::rollup(&minutes, 5);
        assert!(!five.is_empty());
    }
}
