//! Integration tests: real servers on ephemeral ports, spoken to over HTTP (and the `nexus`
//! binary itself, for the command line). One test binary, so the suite links once.

// JSON values index to `Null` instead of panicking; tests read responses that way.
#![allow(clippy::indexing_slicing)]

mod cli;
mod conventions;
mod docs;
mod edge;
mod health;
mod identity;
mod identity_core_v2;
mod identity_media;
mod lists;
mod outbox;
mod realtime;
mod secrets;
mod storage;
mod store_contracts;
mod webhooks;

/// Rate-limit windows are aligned to the clock (`kernel::ratelimit`). Waits, if need be, until
/// the current `window_secs` window has at least `needed_secs` left (with `needed_secs` equal
/// to the window: until a new one starts), so that a test's requests all fall into one window.
pub async fn room_in_window(window_secs: u64, needed_secs: u64) {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let window = u128::from(window_secs * 1000);
    let into = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() % window;
    if window - into < u128::from(needed_secs * 1000) {
        let wait = u64::try_from(window - into + 50).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}
