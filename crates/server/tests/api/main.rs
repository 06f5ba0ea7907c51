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
mod fuzz;
mod health;
mod identity;
mod identity_core_v2;
mod identity_media;
mod layering;
mod lists;
mod media;
mod media_arr_keys;
mod media_requests_completed;
mod ops;
mod outbox;
mod plugins;
mod realtime;
mod secrets;
mod serving;
mod storage;
mod store_contracts;
mod wasm;
mod webhooks;

/// Rate-limit windows are aligned to the clock (`kernel::ratelimit`). Moves `s`'s clock to
/// the start of a fresh `window_secs` window, so that a test's requests all fall into one.
pub fn fresh_window(s: &nexus_testkit::TestServer, window_secs: u64) {
    let clock = &s.kernel().clock;
    let window = i64::try_from(window_secs * 1_000_000).unwrap_or(i64::MAX);
    let into = clock.now().as_micros().rem_euclid(window);
    clock.advance(std::time::Duration::from_micros(u64::try_from(window - into).unwrap_or(0)));
}

/// The output of `child` (with piped stdout and stderr), killed if it has not exited within
/// `within`: a command that should fail but serves instead fails its test rather than hanging
/// it. The child is killed through its handle, never by a pid that may since name another
/// process.
pub fn output_within(mut child: std::process::Child, within: std::time::Duration) -> std::process::Output {
    use std::io::Read;
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    }
    let (out, err) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let deadline = std::time::Instant::now() + within;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                break child.wait().unwrap_or_else(|e| panic!("{e}"));
            }
            Err(e) => panic!("{e}"),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    std::process::Output { status, stdout, stderr }
}
