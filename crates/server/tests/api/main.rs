//! Integration tests: real servers on ephemeral ports, spoken to over HTTP (and the `nexus`
//! binary itself, for the command line). One test binary, so the suite links once.

// JSON values index to `Null` instead of panicking; tests read responses that way.
#![allow(clippy::indexing_slicing)]

mod analytics;
mod cli;
mod conventions;
mod docs;
mod documents;
mod edge;
mod health;
mod identity;
mod identity_core_v2;
mod identity_media;
mod layering;
mod lists;
mod media;
mod ops;
mod outbox;
mod plugins;
mod realtime;
mod secrets;
mod serving;
mod storage;
mod store_contracts;
mod webhooks;

/// Rate-limit windows are aligned to the clock (`kernel::ratelimit`). Moves `s`'s clock to
/// the start of a fresh `window_secs` window, so that a test's requests all fall into one.
pub fn fresh_window(s: &nexus_testkit::TestServer, window_secs: u64) {
    let clock = &s.kernel().clock;
    let window = i64::try_from(window_secs * 1_000_000).unwrap_or(i64::MAX);
    let into = clock.now().as_micros().rem_euclid(window);
    clock.advance(std::time::Duration::from_micros(u64::try_from(window - into).unwrap_or(0)));
}
