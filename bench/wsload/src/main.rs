//! bench/run's ws_fanout client: WebSocket fan-out latency and nexus's memory per connection.
//!
//!   bench-wsload PORT PASSWORD NEXUS_PID [SUBSCRIBERS [RATE [SECONDS]]]
//!
//! 1. Logs in as admin (`POST /api/auth/login`) and creates the user it will rename.
//! 2. Waits until nexus has given back the password hasher's memory (see `memory` below),
//!    then opens SUBSCRIBERS (1000) connections to `ws://127.0.0.1:PORT/ws` in 8 steps; each
//!    sends `{"type":"auth","token":..}`, waits for `auth_success`, sends
//!    `{"type":"subscribe","channel":"user_events"}` and waits for `subscribed`. Before the
//!    first step and after each one, once nexus's memory has settled, it notes nexus's RssAnon
//!    (`/proc/PID/status`): `mem_per_conn_kb` = (last - first) / SUBSCRIBERS.
//! 3. Renames the user with `PUT /api/users/{id}` as admin (each rename publishes
//!    `user.updated`), open loop at RATE (100) per second for SECONDS (10), over a pool of
//!    keep-alive connections, noting when each request is sent; every subscriber notes when
//!    the `user.updated` event carrying that name arrives. Latency = receipt - send, over every
//!    (event, subscriber) pair.
//!
//! Prints one line to stdout:
//!   scenario=ws_fanout subscribers=N events=N p50_ms=.. p99_ms=.. mem_per_conn_kb=..
//! with ` errors=missed:<n>,failed_publishes:<n>[,...]` appended when anything went wrong
//! (the numbers are then not to be trusted). Details go to stderr: the client's own CPU use and
//! scheduling lag (is the client the bottleneck?), nexus's CPU use, the PUT's own latency.
//!
//! Environment: `WSLOAD_THREADS` (default 1), the client runtime's worker threads.
//! Talks to 127.0.0.1 only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

const HOST: &str = "127.0.0.1";
const USER_PASSWORD: &str = "Bench-User-Pass-1!";
/// Concurrent rename requests at most (keep-alive connections).
const POOL: usize = 32;
/// Connections being opened at once.
const CONNECT_CONCURRENCY: usize = 100;
/// Steps in which the connections are opened, each followed by a memory sample.
const STAGES: usize = 8;
/// How long after the last rename's answer the events may still arrive.
const DRAIN: Duration = Duration::from_secs(10);
/// Timeout of any single setup step (connect, auth, subscribe, HTTP request).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Clock ticks per second of /proc/*/stat's utime and stime (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;
/// Sent-time marker of a rename that failed.
const FAILED: u64 = u64::MAX;

type Ws = WebSocketStream<TcpStream>;

fn log(msg: impl std::fmt::Display) {
    eprintln!("ws_fanout: {msg}");
}

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("ws_fanout: FAILED: {msg}");
    std::process::exit(1);
}

/// Nanoseconds since the first call: one monotonic clock for sends and receipts.
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

struct Args {
    port: u16,
    password: String,
    pid: u32,
    subscribers: usize,
    rate: u32,
    seconds: u32,
}

fn args() -> Args {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 3 || a.len() > 6 {
        die("usage: bench-wsload PORT PASSWORD NEXUS_PID [SUBSCRIBERS [RATE [SECONDS]]]");
    }
    fn num<T: std::str::FromStr>(a: &[String], i: usize, what: &str, default: T) -> T {
        match a.get(i) {
            None => default,
            Some(s) => s.parse().unwrap_or_else(|_| die(format!("{what} must be a number, not `{s}`"))),
        }
    }
    let args = Args {
        port: num(&a, 0, "PORT", 0),
        password: a[1].clone(),
        pid: num(&a, 2, "NEXUS_PID", 0),
        subscribers: num(&a, 3, "SUBSCRIBERS", 1000),
        rate: num(&a, 4, "RATE", 100),
        seconds: num(&a, 5, "SECONDS", 10),
    };
    if args.subscribers < STAGES || args.rate == 0 || args.seconds == 0 {
        die(format!("need at least {STAGES} subscribers, and a rate and duration above 0"));
    }
    args
}

fn main() {
    let args = args();
    let threads = match std::env::var("WSLOAD_THREADS") {
        Ok(s) => s.parse::<usize>().ok().filter(|&n| n > 0).unwrap_or_else(|| die("WSLOAD_THREADS must be >= 1")),
        Err(_) => 1,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap_or_else(|e| die(format!("cannot start the tokio runtime: {e}")));
    runtime.block_on(run(args, threads));
}

async fn run(args: Args, threads: usize) {
    now_ns();
    let port = args.port;
    let mut http = Http::new(port);
    let login = json!({ "username": "admin", "password": args.password }).to_string();
    let body = http.expect("POST", "/api/auth/login", Some(&login), None, 200).await;
    let token: Arc<str> = match body.get("access_token").and_then(Value::as_str) {
        Some(t) => Arc::from(t),
        None => die(format!("login: no access_token in {body}")),
    };
    // One user whose name each event changes: renaming is a cheap write, so the scenario
    // measures event delivery, not password hashing (which creating users would).
    let run_id = format!("{}x{}", std::process::id(), std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_secs()));
    let target_name = format!("bench-target-{run_id}");
    let create =
        json!({ "username": target_name, "email": format!("{target_name}@bench.test"), "password": USER_PASSWORD })
            .to_string();
    let body = http.expect("POST", "/api/users", Some(&create), Some(&token), 201).await;
    let target = match body.get("id").and_then(Value::as_str) {
        Some(id) => id.to_string(),
        None => die(format!("create target user: no id in {body}")),
    };

    // Connections, in steps, with nexus's memory sampled before and after each.
    wait_for_hasher_release(args.pid).await;
    let prefix: Arc<str> = Arc::from(format!("b{run_id}n"));
    let received = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut receivers = Vec::with_capacity(args.subscribers);
    let mut rss = vec![settled_rss_anon(args.pid).await];
    let mut counts = vec![0];
    let mut opened = 0;
    let started = Instant::now();
    for stage in 1..=STAGES {
        let upto = args.subscribers * stage / STAGES;
        let socks: Vec<Result<Ws, String>> = futures::stream::iter(opened..upto)
            .map(|_| open_subscriber(port, token.clone()))
            .buffer_unordered(CONNECT_CONCURRENCY)
            .collect()
            .await;
        for (i, ws) in socks.into_iter().enumerate() {
            let ws = ws.unwrap_or_else(|e| die(format!("subscriber {}: {e}", opened + i)));
            receivers.push(tokio::spawn(receive(ws, prefix.clone(), stop_rx.clone(), received.clone())));
        }
        opened = upto;
        rss.push(settled_rss_anon(args.pid).await);
        counts.push(opened);
    }
    log(format!("{opened} subscribers authenticated and subscribed in {:.1}s", started.elapsed().as_secs_f64()));
    let mem_per_conn = memory(&rss, &counts);

    // The renames, open loop.
    let total = (args.rate * args.seconds) as usize;
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let answered: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let pool = Arc::new(Mutex::new((0..POOL).map(|_| Http::new(port)).collect::<Vec<_>>()));
    let permits = Arc::new(Semaphore::new(POOL));
    let path: Arc<str> = Arc::from(format!("/api/users/{target}"));
    let lag = tokio::spawn(scheduling_lag(stop_rx.clone()));

    let cpu0 = (cpu_ticks("self"), cpu_ticks(&args.pid.to_string()), Instant::now());
    let t0 = tokio::time::Instant::now();
    let period = Duration::from_secs(1) / args.rate;
    let mut publishes = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until(t0 + period * i as u32).await;
        let (sent, answered, pool, permits, path, token) =
            (sent.clone(), answered.clone(), pool.clone(), permits.clone(), path.clone(), token.clone());
        let name = format!("{prefix}{i}");
        publishes.push(tokio::spawn(async move {
            let Ok(_permit) = permits.acquire().await else { return false };
            let Some(mut client) = pool.lock().ok().and_then(|mut p| p.pop()) else { return false };
            let body = json!({ "username": name }).to_string();
            sent[i].store(now_ns(), Ordering::SeqCst);
            let result = tokio::time::timeout(STEP_TIMEOUT, client.request("PUT", &path, Some(&body), Some(&token)))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {STEP_TIMEOUT:?}")));
            answered[i].store(now_ns(), Ordering::SeqCst);
            if let Ok(mut p) = pool.lock() {
                p.push(client);
            }
            match result {
                Ok((200, _)) => true,
                other => {
                    sent[i].store(FAILED, Ordering::SeqCst);
                    log(format!("rename {i}: {}", describe(&other)));
                    false
                }
            }
        }));
    }
    let mut ok_count = 0usize;
    for p in publishes {
        if p.await.unwrap_or(false) {
            ok_count += 1;
        }
    }
    let failed = total - ok_count;
    let elapsed = t0.elapsed().as_secs_f64();
    log(format!(
        "{ok_count} renames answered 200 in {elapsed:.1}s ({:.1}/s, target {}/s)",
        ok_count as f64 / elapsed,
        args.rate
    ));

    let expected = (ok_count * opened) as u64;
    let deadline = Instant::now() + DRAIN;
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu1 = (cpu_ticks("self"), cpu_ticks(&args.pid.to_string()), Instant::now());
    let _ = stop_tx.send(true);

    let wall = (cpu1.2 - cpu0.2).as_secs_f64();
    let client_cpu = (cpu1.0 - cpu0.0) as f64 / USER_HZ;
    let nexus_cpu = (cpu1.1 - cpu0.1) as f64 / USER_HZ;
    let client_share = client_cpu / wall / threads as f64;
    log(format!(
        "client CPU {client_cpu:.1}s over {wall:.1}s = {:.0}% of one core ({:.0}% of its {threads} runtime thread(s)); \
         nexus CPU {nexus_cpu:.1}s = {:.0}% of one core; {} cores",
        100.0 * client_cpu / wall,
        100.0 * client_share,
        100.0 * nexus_cpu / wall,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    ));
    if let Ok(lags) = lag.await {
        log(format!(
            "client scheduling lag (a 5 ms timer's overshoot): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            pct(&lags, 50.0),
            pct(&lags, 99.0),
            lags.last().copied().unwrap_or(f64::NAN)
        ));
    }

    // Every (event, subscriber) pair.
    let mut lat = Vec::with_capacity(expected as usize);
    let mut after_answer = Vec::with_capacity(expected as usize);
    let (mut closed, mut dropped, mut duplicates, mut server_errors) = (0u64, 0u64, 0u64, 0u64);
    for r in receivers {
        let Ok(r) = r.await else {
            closed += 1;
            continue;
        };
        if let Some(why) = &r.closed {
            closed += 1;
            if closed <= 3 {
                log(format!("a subscriber was closed: {why}"));
            }
        }
        dropped += r.dropped;
        server_errors += r.errors;
        let mut seen = vec![false; total];
        for (i, t) in r.got {
            let i = i as usize;
            let Some(s) = sent.get(i).map(|s| s.load(Ordering::SeqCst)) else { continue };
            if s == 0 || s == FAILED {
                continue;
            }
            if std::mem::replace(&mut seen[i], true) {
                duplicates += 1;
                continue;
            }
            lat.push(t.saturating_sub(s) as f64 / 1e6);
            after_answer.push((t as f64 - answered[i].load(Ordering::SeqCst) as f64) / 1e6);
        }
    }
    let missed = expected.saturating_sub(lat.len() as u64);
    lat.sort_by(f64::total_cmp);
    after_answer.sort_by(f64::total_cmp);
    let mut put: Vec<f64> = (0..total)
        .filter_map(|i| {
            let s = sent[i].load(Ordering::SeqCst);
            (s != 0 && s != FAILED).then(|| (answered[i].load(Ordering::SeqCst) - s) as f64 / 1e6)
        })
        .collect();
    put.sort_by(f64::total_cmp);
    log(format!(
        "PUT /api/users/{{id}} itself: p50 {:.1} ms, p99 {:.1} ms; receipt minus the PUT's answer: p50 {:.1} ms, p99 {:.1} ms",
        pct(&put, 50.0),
        pct(&put, 99.0),
        pct(&after_answer, 50.0),
        pct(&after_answer, 99.0)
    ));

    let mut line = format!(
        "scenario=ws_fanout subscribers={opened} events={ok_count} p50_ms={:.3} p99_ms={:.3} mem_per_conn_kb={}",
        pct(&lat, 50.0),
        pct(&lat, 99.0),
        mem_per_conn.map_or("NaN".to_string(), |m| format!("{m:.1}")),
    );
    let mut errors = Vec::new();
    if missed > 0 || failed > 0 {
        errors.push(format!("missed:{missed}"));
        errors.push(format!("failed_publishes:{failed}"));
    }
    for (name, n) in
        [("closed", closed), ("events_dropped", dropped), ("duplicates", duplicates), ("server_errors", server_errors)]
    {
        if n > 0 {
            errors.push(format!("{name}:{n}"));
        }
    }
    if client_share >= 0.9 {
        // The client had no CPU to spare: its receipt times include its own queueing.
        errors.push(format!("client_saturated:{:.0}%", 100.0 * client_share));
    }
    if mem_per_conn.is_none() {
        errors.push("mem_unreliable".into());
    }
    if !errors.is_empty() {
        line.push_str(&format!(" errors={}", errors.join(",")));
    }
    println!("{line}");
}

fn describe(r: &Result<(u16, Vec<u8>), String>) -> String {
    match r {
        Ok((status, body)) => format!("{status} {}", String::from_utf8_lossy(&body[..body.len().min(200)])),
        Err(e) => e.clone(),
    }
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

// ---------------------------------------------------------------------------
// Memory.

/// nexus's memory per connection from RssAnon before the first and after the last step of
/// connections.
///
/// RssAnon, not VmRSS: file-backed pages (the binary's code, paged in as new paths run) are
/// not per-connection memory. The difference over the whole ramp, not per step: mimalloc
/// commits memory in chunks, so single steps alternate between little and much growth. The
/// steps are still checked: memory given back during the ramp (a step with negative growth)
/// makes the difference meaningless, and the figure is then None.
fn memory(rss: &[u64], counts: &[usize]) -> Option<f64> {
    let per_step: Vec<f64> = rss
        .windows(2)
        .zip(counts.windows(2))
        .map(|(r, c)| (r[1] as f64 - r[0] as f64) / (c[1] - c[0]).max(1) as f64)
        .collect();
    log(format!(
        "nexus RssAnon (kB) at {counts:?} connections: {rss:?}; growth per connection per step: {}",
        per_step.iter().map(|v| format!("{v:.1}")).collect::<Vec<_>>().join(" ")
    ));
    let (Some(first), Some(last), Some(n)) = (rss.first(), rss.last(), counts.last()) else { return None };
    let total = (*last as f64 - *first as f64) / (*n).max(1) as f64;
    if total > 0.0 && per_step.iter().all(|g| *g >= 0.0) {
        Some(total)
    } else {
        log(format!(
            "nexus's memory shrank during the ramp (overall {total:.1} kB per connection): not a usable figure"
        ));
        None
    }
}

fn rss_anon(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| die(format!("cannot read /proc/{pid}/status (has nexus died?): {e}")));
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| die(format!("no RssAnon in /proc/{pid}/status")))
}

/// Login and user creation hash passwords with argon2id, whose ~20 MB of working memory stay
/// resident in the blocking thread's mimalloc heap until tokio retires that thread (after 10 s
/// idle); should that happen during the ramp, the ramp's growth would come out far too low,
/// even negative. So before the ramp: wait (at most 15 s) until RssAnon drops by 8 MB or more.
async fn wait_for_hasher_release(pid: u32) {
    let started = Instant::now();
    let high = rss_anon(pid);
    while started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = rss_anon(pid);
        if now + 8 * 1024 <= high {
            log(format!(
                "nexus gave back {:.1} MB (the password hasher's) {:.1} s after setup",
                (high - now) as f64 / 1024.0,
                started.elapsed().as_secs_f64()
            ));
            return;
        }
    }
    log("nexus gave back no memory within 15 s of setup; measuring anyway");
}

/// RssAnon once it has stopped moving: two samples 100 ms apart within 16 kB of each other,
/// the first 300 ms after the last activity.
async fn settled_rss_anon(pid: u32) -> u64 {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut last = rss_anon(pid);
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = rss_anon(pid);
        if now.abs_diff(last) <= 16 {
            return now;
        }
        last = now;
    }
    log("nexus's RssAnon was still moving after 3 s; using the last sample");
    last
}

// ---------------------------------------------------------------------------
// CPU.

/// utime + stime of `/proc/<who>/stat`, in clock ticks (every thread of the process).
fn cpu_ticks(who: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{who}/stat"))
        .unwrap_or_else(|e| die(format!("cannot read /proc/{who}/stat: {e}")));
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after `pid (comm)`.
    match (fields.get(11).and_then(|v| v.parse::<u64>().ok()), fields.get(12).and_then(|v| v.parse::<u64>().ok())) {
        (Some(u), Some(s)) => u + s,
        _ => die(format!("cannot read the CPU times in /proc/{who}/stat")),
    }
}

/// How late a 5 ms timer fires in the client's runtime, in ms, sorted: a busy client shows
/// here before anywhere else (its receipt times would include its own queueing).
async fn scheduling_lag(mut stop: watch::Receiver<bool>) -> Vec<f64> {
    let mut lags = Vec::new();
    let period = Duration::from_millis(5);
    loop {
        let start = Instant::now();
        tokio::select! {
            _ = stop.changed() => break,
            () = tokio::time::sleep(period) => lags.push((start.elapsed().saturating_sub(period)).as_secs_f64() * 1e3),
        }
    }
    lags.sort_by(f64::total_cmp);
    lags
}

// ---------------------------------------------------------------------------
// WebSocket subscribers.

async fn open_subscriber(port: u16, token: Arc<str>) -> Result<Ws, String> {
    let setup = async {
        let tcp = TcpStream::connect((HOST, port)).await.map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
        // tungstenite zero-fills its whole read buffer before every read (128 KiB by default):
        // at 100 messages/s per connection that alone would cost the client more than the rest.
        let config = WebSocketConfig::default().read_buffer_size(4096);
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(format!("ws://{HOST}:{port}/ws"), tcp, Some(config))
                .await
                .map_err(|e| format!("WebSocket handshake: {e}"))?;
        let auth = json!({ "type": "auth", "token": &*token }).to_string();
        ws.send(Message::text(auth)).await.map_err(|e| format!("send auth: {e}"))?;
        expect_type(&mut ws, "auth_success").await?;
        let subscribe = json!({ "type": "subscribe", "channel": "user_events" }).to_string();
        ws.send(Message::text(subscribe)).await.map_err(|e| format!("send subscribe: {e}"))?;
        expect_type(&mut ws, "subscribed").await?;
        Ok(ws)
    };
    tokio::time::timeout(STEP_TIMEOUT, setup).await.unwrap_or_else(|_| Err("timed out".into()))
}

async fn expect_type(ws: &mut Ws, want: &str) -> Result<(), String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let v: Value = serde_json::from_str(text.as_str()).map_err(|e| format!("bad JSON from nexus: {e}"))?;
                return if v.get("type").and_then(Value::as_str) == Some(want) {
                    Ok(())
                } else {
                    Err(format!("expected `{want}`, got {text}"))
                };
            }
            Some(Ok(Message::Close(frame))) => return Err(format!("closed while waiting for `{want}`: {frame:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("while waiting for `{want}`: {e}")),
            None => return Err(format!("closed while waiting for `{want}`")),
        }
    }
}

#[derive(Default)]
struct Received {
    /// (event number, receipt time in ns) of each `user.updated` of this run.
    got: Vec<(u32, u64)>,
    /// EVENTS_DROPPED messages.
    dropped: u64,
    /// Other error messages.
    errors: u64,
    /// Why the connection ended before the run did.
    closed: Option<String>,
}

/// Reads one subscriber's messages until told to stop, noting when each event of this run
/// arrives; the time is taken before anything else is done with the message.
async fn receive(mut ws: Ws, prefix: Arc<str>, mut stop: watch::Receiver<bool>, received: Arc<AtomicU64>) -> Received {
    let mut r = Received::default();
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.changed() => break,
            msg = ws.next() => msg,
        };
        let t = now_ns();
        match msg {
            Some(Ok(Message::Text(text))) => {
                let text = text.as_str();
                if let Some(i) = event_number(text, &prefix) {
                    r.got.push((i, t));
                    received.fetch_add(1, Ordering::Relaxed);
                } else if text.contains(r#""type":"error""#) {
                    if text.contains("EVENTS_DROPPED") {
                        r.dropped += 1;
                    } else {
                        r.errors += 1;
                    }
                    if r.dropped + r.errors <= 1 {
                        log(format!("nexus said: {}", &text[..text.len().min(200)]));
                    }
                }
            }
            Some(Ok(Message::Close(frame))) => {
                r.closed = Some(format!("close frame {frame:?}"));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                r.closed = Some(e.to_string());
                break;
            }
            None => {
                r.closed = Some("connection ended without a close frame".into());
                break;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    r
}

/// The rename number of a `user.updated` event of this run (`"username":"<prefix><n>"`).
fn event_number(text: &str, prefix: &str) -> Option<u32> {
    const MARKER: &str = r#""username":""#;
    if !text.contains("user.updated") {
        return None;
    }
    let start = text.find(MARKER)? + MARKER.len();
    let name = &text[start..];
    let name = &name[..name.find('"')?];
    name.strip_prefix(prefix)?.parse().ok()
}

// ---------------------------------------------------------------------------
// HTTP/1.1 over one keep-alive connection: enough for nexus's JSON answers.

struct Http {
    port: u16,
    conn: Option<BufReader<TcpStream>>,
}

impl Http {
    fn new(port: u16) -> Self {
        Self { port, conn: None }
    }

    /// A request whose answer must have status `want` and a JSON body, else the run stops.
    async fn expect(&mut self, method: &str, path: &str, body: Option<&str>, token: Option<&str>, want: u16) -> Value {
        let what = format!("{method} {path}");
        match tokio::time::timeout(STEP_TIMEOUT, self.request(method, path, body, token)).await {
            Err(_) => die(format!("{what}: timed out")),
            Ok(Ok((status, data))) if status == want => serde_json::from_slice(&data).unwrap_or_else(|e| {
                die(format!("{what}: answer is not JSON ({e}): {}", String::from_utf8_lossy(&data)))
            }),
            Ok(other) => die(format!("{what}: {}", describe(&other))),
        }
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> Result<(u16, Vec<u8>), String> {
        let conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let s = TcpStream::connect((HOST, self.port)).await.map_err(|e| format!("connect: {e}"))?;
                s.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
                BufReader::new(s)
            }
        };
        let body = body.unwrap_or("");
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: {HOST}:{}\r\nContent-Type: application/json\r\n", self.port);
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        let mut conn = conn;
        let (status, data, keep) = exchange(&mut conn, req.as_bytes()).await?;
        if keep {
            self.conn = Some(conn);
        }
        Ok((status, data))
    }
}

/// Sends `req` and reads one answer: (status, body, whether the connection stays open).
async fn exchange(conn: &mut BufReader<TcpStream>, req: &[u8]) -> Result<(u16, Vec<u8>, bool), String> {
    conn.get_mut().write_all(req).await.map_err(|e| format!("send: {e}"))?;
    let mut line = String::new();
    read_line(conn, &mut line).await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let (mut length, mut chunked, mut keep) = (None, false, true);
    loop {
        read_line(conn, &mut line).await?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else { return Err(format!("bad header {header:?}")) };
        let value = value.trim().to_ascii_lowercase();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = Some(value.parse::<usize>().map_err(|_| format!("bad Content-Length {value:?}"))?)
            }
            "transfer-encoding" => chunked = value.contains("chunked"),
            "connection" => keep = !value.contains("close"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            read_line(conn, &mut line).await?;
            let size = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {line:?}"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    read_line(conn, &mut line).await?;
                    if line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            conn.read_exact(&mut body[start..]).await.map_err(|e| format!("read body: {e}"))?;
            read_line(conn, &mut line).await?;
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        conn.read_exact(&mut body).await.map_err(|e| format!("read body: {e}"))?;
    } else if status != 204 && status != 304 {
        return Err(format!("status {status} without Content-Length or chunked body"));
    }
    Ok((status, body, keep))
}

async fn read_line(conn: &mut BufReader<TcpStream>, line: &mut String) -> Result<(), String> {
    line.clear();
    match conn.read_line(line).await {
        Ok(0) => Err("connection closed by nexus".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("read: {e}")),
    }
}
