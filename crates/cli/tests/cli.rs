//! `nexusctl` as a person runs it, against a real server.

use std::process::{Command, Output, Stdio};

use nexus_testkit::{ADMIN_PASSWORD, TestServer};
use serde_json::Value;

struct Ctl {
    addr: String,
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Ctl {
    fn new(s: &TestServer) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let config = dir.path().join("nexusctl").join("config.json");
        Self { addr: s.url(""), config, _dir: dir }
    }

    /// Runs nexusctl with `args` and extra environment, optionally feeding `stdin`.
    fn run_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexusctl"));
        for (k, _) in std::env::vars() {
            if k.starts_with("NEXUS") {
                cmd.env_remove(k);
            }
        }
        cmd.env("NEXUSCTL_CONFIG", &self.config).env("NEXUS_ADDR", &self.addr).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run nexusctl: {e}"));
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            pipe.write_all(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        }
        child.wait_with_output().unwrap_or_else(|e| panic!("{e}"))
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[], None)
    }

    /// Runs and expects success; returns standard output.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_the_complete_secrets_workflow() {
    let s = TestServer::start().await;
    let ctl = Ctl::new(&s);
    let out = ctl.ok(&["login", "--username", "admin", "--password", ADMIN_PASSWORD]);
    assert!(out.contains("Logged in"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ctl.config).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(mode, 0o600, "the config file holds a token");
    }
    let saved = std::fs::read_to_string(&ctl.config).unwrap_or_default();
    assert!(saved.contains("token"));

    let out = ctl.ok(&["secrets", "set", "myapp/database/password", "db-password-123", "-m", "environment=production"]);
    assert!(out.contains("version 1"), "{out}");
    let got = ctl.json(&["secrets", "get", "myapp/database/password"]);
    assert_eq!(got["value"], "db-password-123");
    assert_eq!(got["metadata"]["environment"], "production");
    let table = ctl.ok(&["secrets", "get", "myapp/database/password"]);
    assert!(table.contains("KEY") && table.contains("db-password-123"), "{table}");
    assert_eq!(ctl.ok(&["secrets", "get", "myapp/database/password", "--field", "value"]).trim(), "db-password-123");

    // From standard input, and check-and-set.
    let o = ctl.run_with(
        &["secrets", "update", "myapp/database/password", "--value", "-", "--cas", "1"],
        &[],
        Some("new-db-password-456\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        ctl.ok(&["secrets", "get", "myapp/database/password", "--field", "value"]).trim(),
        "new-db-password-456"
    );
    let o = ctl.run(&["secrets", "update", "myapp/database/password", "--value", "x", "--cas", "1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("version mismatch") && stderr(&o).contains("409"), "{}", stderr(&o));
    assert_eq!(
        ctl.ok(&["secrets", "get", "myapp/database/password", "--version", "1", "--field", "value"]).trim(),
        "db-password-123"
    );
    let current = ctl.json(&["secrets", "get", "myapp/database/password", "--version", "2"]);
    assert_eq!((current["version"].as_i64(), current["value"].as_str()), (Some(2), Some("new-db-password-456")));
    let o = ctl.run(&["secrets", "get", "myapp/database/password", "--version", "7"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("secret version not found") && !String::from_utf8_lossy(&o.stdout).contains("new-db"),
        "{}",
        stderr(&o)
    );
    // The seed's Go CLI reads audit metadata as a map of strings.
    let reads = ctl.json(&["audit", "--action", "secret.read"]);
    let metadata: Vec<&Value> = reads["logs"].as_array().into_iter().flatten().map(|l| &l["metadata"]).collect();
    assert!(metadata.iter().any(|m| m["version"] == "1"), "{reads}");
    assert!(metadata.iter().all(|m| m.as_object().is_some_and(|o| o.values().all(Value::is_string))), "{reads}");

    let versions = ctl.json(&["secrets", "versions", "myapp/database/password"]);
    assert_eq!(versions["total"], 2);
    let table = ctl.ok(&["secrets", "versions", "myapp/database/password"]);
    assert!(table.starts_with("VERSION"), "{table}");

    let list = ctl.ok(&["secrets", "list"]);
    assert!(list.contains("myapp/database/password") && !list.contains("new-db-password-456"), "{list}");
    let list = ctl.json(&["secrets", "list", "--prefix", "other/"]);
    assert_eq!(list["total"], 0);

    ctl.ok(&["secrets", "delete", "myapp/database/password"]);
    let o = ctl.run(&["secrets", "get", "myapp/database/password"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("secret not found"), "{}", stderr(&o));
    let o = ctl.run(&["secrets", "set", "bad//path", "v"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("invalid secret path"), "{}", stderr(&o));

    // The audit log shows this client's user agent.
    let audit = ctl.json(&["audit", "--action", "secret.delete"]);
    assert_eq!(audit["total"], 1, "{audit}");
    assert_eq!(audit["logs"][0]["user_agent"], format!("nexusctl/{}", env!("CARGO_PKG_VERSION")));
    let table = ctl.ok(&["audit", "--limit", "5"]);
    assert!(table.starts_with("TIMESTAMP") && table.contains("5 of"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_and_credentials_from_the_environment() {
    let s = TestServer::start().await;
    let ctl = Ctl::new(&s);
    // Password on standard input.
    let o = ctl.run_with(&["login"], &[], Some(&format!("{ADMIN_PASSWORD}\n")));
    assert!(o.status.success(), "{}", stderr(&o));
    ctl.ok(&["secrets", "set", "svc/token", "tok-1"]);

    let created = ctl.json(&["apikeys", "create", "My Service", "--expires-in", "720h"]);
    let key = created["key"].as_str().unwrap_or_default().to_string();
    let id = created["id"].as_str().unwrap_or_default().to_string();
    assert!(key.starts_with("nx_"), "{created}");
    assert!(created["expires_at"].is_string());
    let list = ctl.ok(&["apikeys", "list"]);
    assert!(list.contains("My Service") && !list.contains(&key), "{list}");

    // A second client with only the key in its environment (and no config file).
    let other = Ctl::new(&s);
    let o = other.run_with(&["--json", "secrets", "get", "svc/token"], &[("NEXUS_API_KEY", &key)], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("tok-1"));
    // A token from the environment works too.
    let token = s.admin_token().await;
    let o = other.run_with(&["secrets", "list"], &[("NEXUS_TOKEN", &token)], None);
    assert!(o.status.success(), "{}", stderr(&o));

    ctl.ok(&["apikeys", "revoke", &id]);
    let o = other.run_with(&["secrets", "get", "svc/token"], &[("NEXUS_API_KEY", &key)], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));

    // No credentials at all, a wrong password, an unreachable server: the reason, and exit 1.
    let o = other.run(&["secrets", "list"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));
    let o = other.run(&["login", "--password", "wrong"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("invalid credentials"), "{}", stderr(&o));
    let o = other.run(&["--addr", "http://127.0.0.1:1", "secrets", "list"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot reach"), "{}", stderr(&o));
    // Non-admins are refused the audit log with the server's message.
    let user = s.user_token("bob", &["user"]).await;
    let o = other.run_with(&["audit"], &[("NEXUS_TOKEN", &user)], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("admin access required"), "{}", stderr(&o));
}
