//! Time as Nexus stores and shows it: microseconds since the Unix epoch in the database
//! (ordered and comparable on every backend), RFC 3339 in UTC on the wire.

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, in microseconds.
const MIN_MICROS: i64 = -62_135_596_800_000_000;
const MAX_MICROS: i64 = 253_402_300_799_000_000;

/// An instant in UTC with microsecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

/// Whole seconds since the Unix epoch, straight from the system clock: cheaper than a full
/// [`Timestamp`], for what runs on every request.
pub fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The kernel's coarse clocks: the time of the last scheduler tick, 1 to 10 ms old, read from
/// the vDSO without the TSC (a quarter of the instructions of `Instant::now`). For what runs on
/// every request and needs no finer grain: a minute's request count, a connection's
/// seconds-long timeouts. Not for expiries a client can observe at a second's boundary.
#[allow(unsafe_code)]
pub mod coarse {
    use std::time::Duration;

    /// Microseconds since the Unix epoch.
    pub fn unix_micros() -> i64 {
        let t = read(libc::CLOCK_REALTIME_COARSE);
        t.tv_sec.saturating_mul(1_000_000).saturating_add(t.tv_nsec / 1_000)
    }

    /// Time on the monotonic clock (the one `Instant` reads), since an unspecified start.
    pub fn monotonic() -> Duration {
        let t = read(libc::CLOCK_MONOTONIC_COARSE);
        Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
    }

    /// Through glibc, which reads the vDSO (and falls back to the system call where there is
    /// none, as under valgrind).
    fn read(clock: libc::clockid_t) -> libc::timespec {
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `t` is a valid, writable timespec, the only memory clock_gettime writes; the
        // coarse clocks exist on every Linux since 2.6.32, and on failure `t` stays zero.
        unsafe { libc::clock_gettime(clock, &raw mut t) };
        t
    }
}

/// The instance's clock: the system clock, moved forward by tests instead of sleeping. Every
/// expiry a client can observe (access tokens, API keys, refresh tokens, rate-limit windows)
/// is judged by it, so a test moves time with [`Clock::advance`] rather than waiting.
#[derive(Debug, Default)]
pub struct Clock {
    offset_micros: std::sync::atomic::AtomicI64,
    advanced: tokio::sync::Notify,
}

impl Clock {
    pub fn now(&self) -> Timestamp {
        let offset = self.offset_micros.load(std::sync::atomic::Ordering::Relaxed);
        Timestamp(Timestamp::now().0.saturating_add(offset))
    }

    /// Whole seconds since the Unix epoch; cheaper than [`now`](Self::now), for what runs on
    /// every request.
    pub fn unix_seconds(&self) -> i64 {
        if self.offset_micros.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            unix_seconds()
        } else {
            self.now().as_unix_seconds()
        }
    }

    /// [`unix_seconds`](Self::unix_seconds) from the coarse clock ([`coarse`]).
    pub fn unix_seconds_coarse(&self) -> i64 {
        let offset = self.offset_micros.load(std::sync::atomic::Ordering::Relaxed);
        coarse::unix_micros().saturating_add(offset).div_euclid(1_000_000)
    }

    /// Moves this clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.offset_micros.fetch_add(micros, std::sync::atomic::Ordering::Relaxed);
        self.advanced.notify_waiters();
    }

    /// Completes when [`advance`](Self::advance) is next called: a timer that waits for an
    /// instant of this clock also waits for this, so that moving the clock wakes it.
    pub async fn advanced(&self) {
        self.advanced.notified().await;
    }
}

impl Timestamp {
    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc())
    }

    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    pub fn as_unix_seconds(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    pub fn from_datetime(dt: OffsetDateTime) -> Self {
        let nanos = dt.unix_timestamp_nanos();
        Self(i64::try_from(nanos / 1_000).unwrap_or(i64::MAX))
    }

    fn to_datetime(self) -> OffsetDateTime {
        // RFC 3339 years have four digits: instants beyond them are shown at the nearest end.
        let nanos = i128::from(self.0.clamp(MIN_MICROS, MAX_MICROS)) * 1_000;
        OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// RFC 3339 in UTC with whole seconds (`2025-12-04T00:18:24Z`), as the seeds show it.
    pub fn to_rfc3339(self) -> String {
        let dt = self.to_datetime().replace_nanosecond(0).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        dt.format(&Rfc3339).unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
    }

    /// Parses RFC 3339 with any offset; `None` when the text is not RFC 3339.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        OffsetDateTime::parse(text, &Rfc3339).ok().map(|dt| Self::from_datetime(dt.to_offset(UtcOffset::UTC)))
    }

    /// This instant moved by a signed number of seconds, saturating at the ends of time.
    pub fn add_seconds(self, seconds: i64) -> Self {
        Self(self.0.saturating_add(seconds.saturating_mul(1_000_000)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_drops_subseconds() {
        let t = Timestamp::parse_rfc3339("2025-12-04T00:18:24.5+01:00");
        assert_eq!(t.map(Timestamp::to_rfc3339).as_deref(), Some("2025-12-03T23:18:24Z"));
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
        assert_eq!(Timestamp::from_micros(i64::MAX).to_rfc3339(), "9999-12-31T23:59:59Z");
    }
}
