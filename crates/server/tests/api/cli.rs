//! The `nexus` binary as a person runs it.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn nexus(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexus"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("NEXUS_") && !env.iter().any(|(e, _)| *e == k) {
            cmd.env_remove(k);
        }
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run nexus: {e}"));
    crate::output_within(child, Duration::from_secs(15))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn version_prints_the_version() {
    let o = nexus(&["version"], &[]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("nexus {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_values_stop_startup_with_one_line_naming_the_key() {
    let dir = tempfile_dir();
    let data = dir.join("data");
    let data = data.to_string_lossy();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["--data-dir", &data], vec![("NEXUS_PORT", "eighty")], "server.port"),
        (vec!["--data-dir", &data, "--host", "not an ip"], vec![], "server.host"),
        (vec!["--data-dir", &data, "--database-url", "mysql://x"], vec![], "database.url"),
        (vec!["--data-dir", &data], vec![("NEXUS_SERVER__BODY_LIMIT_BYTES", "-5")], "server.body_limit_bytes"),
        (vec!["--data-dir", &data], vec![("NEXUS_LOG_LEVEL", "info,=[")], "log.level"),
    ];
    for (args, env, key) in cases {
        let o = nexus(&args, &env);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert!(err.contains(key), "{key} not named in: {err}");
        assert_eq!(err.trim().lines().count(), 1, "more than one line: {err}");
        assert!(!err.contains("panicked") && !err.contains("backtrace"));
    }
}

#[test]
fn config_file_layers_under_env_and_flags_and_credentials_are_masked() {
    let dir = tempfile_dir();
    let file = dir.join("nexus.toml");
    std::fs::write(
        &file,
        "[server]\nport = 9100\nhost = \"0.0.0.0\"\n[database]\nurl = \"postgres://app:hunter2@db:5432/nexus\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let f = file.to_string_lossy();
    let o = nexus(&["config", "--config", &f, "--port", "9300"], &[("NEXUS_HOST", "127.0.0.2")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("port = 9300"), "{out}");
    assert!(out.contains("host = \"127.0.0.2\""), "{out}");
    assert!(out.contains("postgres://app:***@db:5432/nexus"), "{out}");
    assert!(!out.contains("hunter2"));

    std::fs::write(&file, "[server]\nprot = 1\n").unwrap_or_else(|e| panic!("{e}"));
    let o = nexus(&["config", "--config", &f], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("prot"), "{}", stderr(&o));

    let o = nexus(&["config", "--config", "/no/such/file.toml"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/no/such/file.toml"));
}

#[test]
fn migrate_creates_the_embedded_database_and_is_idempotent() {
    let dir = tempfile_dir();
    let data = dir.join("data");
    let d = data.to_string_lossy();
    for _ in 0..2 {
        let o = nexus(&["migrate", "--data-dir", &d], &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("up to date"));
    }
    assert!(data.join("nexus.db").is_file());
}

/// Starts `nexus` on a fresh data dir with `env`, sends `request` once it answers `/health`,
/// stops it with SIGTERM and returns the answer to `request`, the exit status and stderr.
fn serve_once(env: &[(&str, &str)], request: &str) -> (String, std::process::ExitStatus, String) {
    use std::io::{Read, Write};
    let dir = tempfile_dir();
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexus"));
    cmd.args(["--data-dir", &dir.join("data").to_string_lossy(), "--port", &port.to_string()]);
    for (k, _) in std::env::vars() {
        if k.starts_with("NEXUS_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("{e}"));
    let exchange = |req: &str| -> Option<String> {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        conn.write_all(req.as_bytes()).ok()?;
        let mut buf = String::new();
        let _ = conn.read_to_string(&mut buf);
        Some(buf)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut healthy = false;
    while Instant::now() < deadline && !healthy {
        healthy = exchange("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .is_some_and(|answer| answer.starts_with("HTTP/1.1 200"));
        if !healthy {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let answer = if healthy { exchange(request).unwrap_or_default() } else { String::new() };
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    let mut err = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut err);
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(healthy, "server never became healthy: {err}");
    (answer, status, err)
}

#[test]
fn serve_answers_and_stops_gracefully_on_sigterm() {
    let (answer, status, err) = serve_once(&[], "GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(status.success(), "exit status {status:?}: {err}");
}

const TRACED: &str = "GET /no/such/route HTTP/1.1\r\nHost: x\r\nX-Request-ID: trace-me-42\r\nConnection: close\r\n\r\n";

#[test]
fn every_log_line_of_a_request_names_its_request_id() {
    let (answer, _, err) = serve_once(&[("NEXUS_LOG_LEVEL", "info,nexus_web=debug")], TRACED);
    assert!(answer.contains("trace-me-42"), "{answer}");
    let line = err
        .lines()
        .find(|l| l.contains("request served") && l.contains("/no/such/route"))
        .unwrap_or_else(|| panic!("no request line: {err}"));
    assert!(line.contains("request_id=trace-me-42") && line.contains("status=404"), "{line}");
    // Each probe of /health got an id of its own.
    let health: Vec<&str> = err.lines().filter(|l| l.contains("path=\"/health\"")).collect();
    assert!(!health.is_empty() && health.iter().all(|l| l.contains("request_id=req_")), "{err}");
}

#[test]
fn json_logs_are_one_object_per_line_with_the_request_id() {
    let env = [("NEXUS_LOG_LEVEL", "info,nexus_web=debug"), ("NEXUS_LOG_FORMAT", "json")];
    let (_, status, err) = serve_once(&env, TRACED);
    assert!(status.success(), "{err}");
    let lines: Vec<serde_json::Value> =
        err.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))).collect();
    assert!(lines.iter().all(|l| l["timestamp"].is_string() && l["level"].is_string() && l["message"].is_string()));
    let served = lines
        .iter()
        .find(|l| l["message"] == "request served" && l["path"] == "/no/such/route")
        .unwrap_or_else(|| panic!("no request line: {err}"));
    assert_eq!(served["request_id"], "trace-me-42");
    assert_eq!(served["status"], 404);
    assert_eq!(served["path"], "/no/such/route");
    assert!(lines.iter().any(|l| l["message"] == "nexus listening" && l.get("request_id").is_none()));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nexus-cli-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

fn uuid_like() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}-{t}", std::process::id())
}

#[test]
fn users_are_administered_from_the_shell() {
    let dir = tempfile_dir();
    let d = dir.join("data");
    let d = d.to_string_lossy();
    let admin = [("NEXUS_ADMIN_PASSWORD", "admin-Pass1")];
    let o = nexus(
        &[
            "user",
            "create",
            "bob",
            "--email",
            "bob@example.com",
            "--role",
            "editor",
            "--password",
            "Pass123!",
            "--data-dir",
            &d,
        ],
        &admin,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = nexus(&["user", "list", "--data-dir", &d], &admin);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("bob") && out.contains("editor") && out.contains("admin"), "{out}");
    assert!(!out.contains("Pass123!"));

    let o = nexus(&["user", "passwd", "bob", "--data-dir", &d], &admin);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("password: "), "a generated password is shown once");

    let o = nexus(&["user", "create", "eve", "--email", "nope", "--password", "Pass123!", "--data-dir", &d], &admin);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("email"), "{}", stderr(&o));
    let o = nexus(
        &["user", "create", "bob", "--email", "b2@example.com", "--password", "Pass123!", "--data-dir", &d],
        &admin,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("exists"), "{}", stderr(&o));
}
