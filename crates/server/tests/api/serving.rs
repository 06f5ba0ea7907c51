//! How connections are served: slow and idle clients are closed, the connection cap holds new
//! connections back until one closes, the server survives running out of file descriptors,
//! and requests hyper refuses are answered in the dialect of their path.

use std::time::{Duration, Instant};

use nexus_testkit::{Backend, TestServer};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(s: &TestServer) -> String {
    s.url("").trim_start_matches("http://").to_string()
}

async fn connect(addr: &str) -> TcpStream {
    TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"))
}

/// Reads until the server closes the connection (or resets it), at most `within`; panics if it
/// stays open. Returns what was read.
async fn read_until_closed(conn: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(buf.get(..n).unwrap_or_default()),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the connection is still open after {within:?}; read: {}", String::from_utf8_lossy(&out));
    out
}

/// Reads one response whose body has a `content-length`, at most 10 s.
async fn read_response(conn: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let done = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(out.get(..end).unwrap_or_default()).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if out.len() >= end + 4 + length {
                    return;
                }
            }
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(buf.get(..n).unwrap_or_default()),
            }
        }
    })
    .await;
    assert!(done.is_ok(), "no whole response within 10 s: {}", String::from_utf8_lossy(&out));
    String::from_utf8_lossy(&out).into_owned()
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test]
async fn a_client_that_dribbles_its_request_head_is_dropped_after_the_header_read_timeout() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.server.header_read_timeout_secs = 1;
        c.server.keep_alive_timeout_secs = 60;
    })
    .await;
    let addr = addr(&s);
    // Half a request line, then nothing.
    let mut half = connect(&addr).await;
    half.write_all(b"GET /hea").await.unwrap_or_else(|e| panic!("{e}"));
    // A connection that never sends a byte is held to the same limit.
    let mut silent = connect(&addr).await;
    let started = Instant::now();
    let got = read_until_closed(&mut half, Duration::from_secs(10)).await;
    assert!(got.is_empty(), "answered a half request: {}", String::from_utf8_lossy(&got));
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before the timeout: {:?}", started.elapsed());
    read_until_closed(&mut silent, Duration::from_secs(10)).await;
    // A whole request in time is served as usual.
    let mut ok = connect(&addr).await;
    ok.write_all(HEALTH).await.unwrap_or_else(|e| panic!("{e}"));
    let answer = read_response(&mut ok).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_a_request_in_progress_is_not() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.server.header_read_timeout_secs = 1;
        c.server.keep_alive_timeout_secs = 1;
    })
    .await;
    let addr = addr(&s);
    // A request waiting for the rest of its body is being served, not idle.
    let mut busy = connect(&addr).await;
    let body = br#"{"username":"admin","password":"wrong-password"}"#;
    let head = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    busy.write_all(head.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
    busy.write_all(body.get(..5).unwrap_or_default()).await.unwrap_or_else(|e| panic!("{e}"));

    // A keep-alive connection is reused, then closed once idle for the timeout.
    let mut idle = connect(&addr).await;
    for _ in 0..2 {
        idle.write_all(HEALTH).await.unwrap_or_else(|e| panic!("{e}"));
        let answer = read_response(&mut idle).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let idle_since = Instant::now();
    let got = read_until_closed(&mut idle, Duration::from_secs(10)).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert!(idle_since.elapsed() >= Duration::from_millis(900), "closed early: {:?}", idle_since.elapsed());

    // The busy connection, which started before the idle one went idle, is still served.
    busy.write_all(body.get(5..).unwrap_or_default()).await.unwrap_or_else(|e| panic!("{e}"));
    let answer = read_response(&mut busy).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

#[tokio::test]
async fn past_max_connections_a_new_connection_waits_until_one_closes() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.server.max_connections = 2).await;
    let addr = addr(&s);
    let mut first = connect(&addr).await;
    let mut second = connect(&addr).await;
    for conn in [&mut first, &mut second] {
        conn.write_all(HEALTH).await.unwrap_or_else(|e| panic!("{e}"));
        let answer = read_response(conn).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let mut third = connect(&addr).await;
    third.write_all(HEALTH).await.unwrap_or_else(|e| panic!("{e}"));
    // Sent after the third's request: once this is answered, the third would have been too.
    first.write_all(HEALTH).await.unwrap_or_else(|e| panic!("{e}"));
    let answer = read_response(&mut first).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut probe = [0u8; 1];
    match third.try_read(&mut probe) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the third connection was served past the cap: {other:?}"),
    }
    drop(first);
    let answer = read_response(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// The status, headers (lowercase) and JSON body of a response read whole.
fn parse(answer: &[u8]) -> (u16, String, Value) {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head: {text}"));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status: {head}"));
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, head.to_ascii_lowercase(), json)
}

#[tokio::test]
async fn requests_hyper_refuses_are_answered_in_the_dialect_of_their_path() {
    let s = TestServer::start().await;
    let addr = addr(&s);
    let long = "a".repeat(70_000);
    let big = "b".repeat(1024 * 1024);
    for (status, what) in [(400u16, "raw byte"), (414, "long URI"), (431, "big header")] {
        for prefix in ["/api/users/", "/api/v1/secrets/", "/api/media/Items/"] {
            let request: Vec<u8> = match status {
                400 => [b"GET ".as_slice(), prefix.as_bytes(), b"caf\xe9 HTTP/1.1\r\nHost: x\r\n\r\n"].concat(),
                414 => format!("GET {prefix}{long} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
                _ => format!("GET {prefix}x HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").into_bytes(),
            };
            let mut conn = connect(&addr).await;
            conn.write_all(&request).await.unwrap_or_else(|e| panic!("{what} {prefix}: {e}"));
            let answer = read_until_closed(&mut conn, Duration::from_secs(10)).await;
            let (got, head, json) = parse(&answer);
            assert_eq!(got, status, "{what} {prefix}: {head}");
            assert!(head.contains("content-type: application/json"), "{head}");
            let request_id = head
                .lines()
                .find_map(|l| l.strip_prefix("x-request-id: "))
                .unwrap_or_else(|| panic!("no request id: {head}"))
                .to_string();
            match prefix {
                "/api/v1/secrets/" => {
                    assert_eq!(json["success"], false, "{json}");
                    assert_eq!(json["code"], "VALIDATION_ERROR", "{json}");
                    assert_eq!(json["request_id"], request_id.as_str(), "{json}");
                    assert!(json["error"].is_string() && json["message"].is_string(), "{json}");
                }
                "/api/media/Items/" => {
                    assert_eq!(json["error"]["code"], "INVALID_REQUEST", "{json}");
                    assert_eq!(json["error"]["documentation_url"], "/api/errors/INVALID_REQUEST", "{json}");
                    assert_eq!(json["error"]["request_id"], request_id.as_str(), "{json}");
                }
                _ => {
                    assert_eq!(json["error"]["code"], "VALIDATION_ERROR", "{json}");
                    assert!(json["error"]["timestamp"].is_string(), "{json}");
                    assert_eq!(json["error"]["request_id"], request_id.as_str(), "{json}");
                    assert!(json["error"].get("documentation_url").is_none(), "{json}");
                }
            }
        }
    }
    // The server is none the worse for it.
    assert_eq!(s.get("/health").await.status, 200);
}

/// `nexus` run as a child process after `ulimit {ulimit}` (`-n 64` lowers the soft and the
/// hard open-file limit, so that raising the soft one at start cannot undo it), its stderr
/// collected line by line.
struct Child {
    process: std::process::Child,
    port: u16,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    dir: std::path::PathBuf,
}

impl Child {
    fn start(ulimit: &str, env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("nexus-serving-{}-{n}", std::process::id()));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut cmd = Command::new("bash");
        cmd.args(["-c", &format!("ulimit {ulimit} && exec \"$0\" \"$@\""), env!("CARGO_BIN_EXE_nexus")]);
        cmd.args(["--data-dir", &dir.join("data").to_string_lossy(), "--port", &port.to_string()]);
        for (k, _) in std::env::vars() {
            if k.starts_with("NEXUS_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied());
        let mut process = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run nexus: {e}"));
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        if let Some(pipe) = process.stderr.take() {
            let lines = stderr.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        Self { process, port, stderr, dir }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> Vec<String> {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Polls until `pred` holds for the log, at most `within`.
    async fn wait_for_log(&self, within: Duration, pred: LogCheck) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if pred(&log) {
                return log;
            }
            assert!(Instant::now() < deadline, "not logged within {within:?}:\n{}", log.join("\n"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `/health` on new connections until one answers 200, at most `within`.
    async fn wait_healthy(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            assert!(self.process.try_wait().ok().flatten().is_none(), "nexus exited:\n{}", self.log().join("\n"));
            if let Ok(Ok(mut conn)) =
                tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(self.addr())).await
                && conn.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.is_ok()
            {
                let mut answer = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.read_to_end(&mut answer)).await;
                if answer.starts_with(b"HTTP/1.1 200") {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "not healthy within {within:?}:\n{}", self.log().join("\n"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// User plus system CPU time of the process so far, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.process.id())).unwrap_or_default();
        // Fields after the command name, which is in parentheses: utime and stime are the 12th
        // and 13th of them.
        let rest = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or_default();
        let fields: Vec<&str> = rest.split(' ').collect();
        let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        field(11) + field(12)
    }

    fn stop(mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.process.id().to_string()]).status();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type LogCheck = fn(&[String]) -> bool;

/// More connections than the open-file limit, held open (long timeouts) until the log shows
/// `exhausted`, and, if given, `settled` (CPU use is measured between the two); then closed.
/// Returns the log as it was when `settled` held.
async fn flood_then_recover(
    child: &mut Child,
    connections: usize,
    exhausted: LogCheck,
    settled: Option<LogCheck>,
) -> Vec<String> {
    child.wait_healthy(Duration::from_secs(30)).await;
    let mut held = Vec::new();
    for _ in 0..connections {
        // The kernel completes the handshake for the listen backlog whether or not nexus
        // accepts; past the backlog a connect may wait, which is fine: it is not needed.
        match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(child.addr())).await {
            Ok(Ok(conn)) => held.push(conn),
            _ => break,
        }
    }
    assert!(held.len() > 64, "only {} connections opened", held.len());
    let mut log = child.wait_for_log(Duration::from_secs(20), exhausted).await;
    if let Some(settled) = settled {
        let (ticks, started) = (child.cpu_ticks(), Instant::now());
        log = child.wait_for_log(Duration::from_secs(20), settled).await;
        // Clock ticks are 10 ms.
        let used = Duration::from_millis((child.cpu_ticks() - ticks) * 10);
        assert!(
            used < started.elapsed() / 4 + Duration::from_millis(50),
            "nexus used {used:?} of CPU in {:?}",
            started.elapsed()
        );
    }
    assert!(child.process.try_wait().ok().flatten().is_none(), "nexus died:\n{}", child.log().join("\n"));
    drop(held);
    child.wait_healthy(Duration::from_secs(20)).await;
    log
}

#[tokio::test]
async fn out_of_file_descriptors_the_accept_loop_backs_off_and_recovers() {
    // No cap of its own: only the open-file limit stops accepting.
    let mut child = Child::start(
        "-n 64",
        &[
            ("NEXUS_SERVER__MAX_CONNECTIONS", "0"),
            ("NEXUS_SERVER__HEADER_READ_TIMEOUT_SECS", "300"),
            ("NEXUS_SERVER__KEEP_ALIVE_TIMEOUT_SECS", "300"),
            ("NEXUS_LOG_LEVEL", "warn,nexus::serve=debug"),
        ],
    );
    // Exhausted at the first failed accept; settled once the pause between attempts reached a
    // second, which a spinning loop never does.
    let log = flood_then_recover(
        &mut child,
        120,
        |log| log.iter().any(|l| l.contains("cannot accept connections")),
        Some(|log| log.iter().any(|l| l.contains("accept failed") && l.contains("pause_ms=1000"))),
    )
    .await;
    // While the connections were held: a pause that doubles up to a second; a spinning loop
    // would have failed thousands of times.
    let failures = log.iter().filter(|l| l.contains("accept failed")).count();
    assert!((1..=20).contains(&failures), "{failures} failed accepts:\n{}", log.join("\n"));
    let errors = child.log().iter().filter(|l| l.contains("cannot accept connections")).count();
    assert_eq!(errors, 1, "the error is logged once, not once per failure:\n{}", child.log().join("\n"));
    child.stop();
}

#[tokio::test]
async fn the_default_cap_fits_under_the_open_file_limit() {
    let mut child = Child::start(
        "-n 64",
        &[
            ("NEXUS_SERVER__HEADER_READ_TIMEOUT_SECS", "300"),
            ("NEXUS_SERVER__KEEP_ALIVE_TIMEOUT_SECS", "300"),
            ("NEXUS_LOG_LEVEL", "warn"),
        ],
    );
    flood_then_recover(&mut child, 120, |log| log.iter().any(|l| l.contains("connection limit reached")), None).await;
    let log = child.log();
    assert!(log.iter().any(|l| l.contains("more than the open-file limit allows")), "{}", log.join("\n"));
    assert!(!log.iter().any(|l| l.contains("cannot accept connections")), "{}", log.join("\n"));
    child.stop();
}

#[tokio::test]
async fn the_open_file_soft_limit_is_raised_to_the_hard_limit_at_start() {
    let mut child = Child::start("-S -n 64", &[("NEXUS_LOG_LEVEL", "warn")]);
    child.wait_healthy(Duration::from_secs(30)).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.process.id())).unwrap_or_default();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap_or_else(|| panic!("{limits}"));
    let numbers: Vec<&str> = line.trim_start_matches("Max open files").split_whitespace().collect();
    let (soft, hard) = (numbers.first().copied().unwrap_or_default(), numbers.get(1).copied().unwrap_or_default());
    assert_eq!(soft, hard, "{line}");
    assert_ne!(soft, "64", "{line}");
    child.stop();
}
