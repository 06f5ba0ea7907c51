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
    let pid = child.id();
    // A case that should fail but starts a server instead must fail the test, not hang it.
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(15));
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    });
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("cannot run nexus: {e}"));
    drop(watchdog);
    out
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

#[test]
fn serve_answers_and_stops_gracefully_on_sigterm() {
    let dir = tempfile_dir();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args(["--data-dir", &dir.join("data").to_string_lossy(), "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut healthy = false;
    while Instant::now() < deadline {
        if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let _ = conn.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut buf = String::new();
            let _ = conn.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") {
                healthy = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(healthy, "server never became healthy");
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "exit status {status:?}");
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
