//! `nexusctl`: the command-line client of the Nexus secrets manager.
//!
//! Server address and credentials come from flags, else the environment (`NEXUS_ADDR`,
//! `NEXUS_API_KEY`, `NEXUS_TOKEN`), else the configuration file `login` writes (0600;
//! `NEXUSCTL_CONFIG`, default `~/.config/nexusctl/config.json`). Output is a table, or JSON with
//! `--json`. A failure prints the server's message and exits non-zero.

// Indexing a `serde_json::Value` by key never panics on reads (a missing key is `Null`), and
// every write below indexes an object literal.
#![allow(clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use reqwest::Method;
use reqwest::blocking::{Client, RequestBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const USER_AGENT: &str = concat!("nexusctl/", env!("CARGO_PKG_VERSION"));
/// Where `nexus` listens by default (`server.port` 8000).
const DEFAULT_ADDR: &str = "http://localhost:8000";

#[derive(Debug, Parser)]
#[command(name = "nexusctl", version, about = "Command-line client of the Nexus secrets manager")]
struct Cli {
    /// Server address, such as http://localhost:8000
    #[arg(long, env = "NEXUS_ADDR", global = true)]
    addr: Option<String>,
    /// Access token (from `nexusctl login`)
    #[arg(long, env = "NEXUS_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// API key (`nx_…`); used instead of a token when given
    #[arg(long, env = "NEXUS_API_KEY", global = true, hide_env_values = true)]
    api_key: Option<String>,
    /// Configuration file written by `login`
    #[arg(long, env = "NEXUSCTL_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Print JSON instead of a table
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in and save the token (and address) to the configuration file.
    Login {
        #[arg(long, short = 'u', default_value = "admin")]
        username: String,
        /// Password; else NEXUS_PASSWORD, else read from standard input
        #[arg(long, short = 'p', env = "NEXUS_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Read and write secrets.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Show the audit log (admin only).
    Audit(AuditArgs),
    /// Manage your API keys.
    #[command(subcommand)]
    Apikeys(ApiKeysCommand),
}

#[derive(Debug, Subcommand)]
enum SecretsCommand {
    /// List secrets (never their values).
    List {
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Read a secret's value.
    Get {
        path: String,
        /// Read an older version
        #[arg(long)]
        version: Option<i64>,
        /// Print only this field (for example `value`)
        #[arg(long)]
        field: Option<String>,
    },
    /// Create a secret. A VALUE of `-` is read from standard input.
    Set {
        path: String,
        value: String,
        /// Metadata entries, KEY=VALUE (repeatable)
        #[arg(long = "metadata", short = 'm')]
        metadata: Vec<String>,
    },
    /// Write a new version of a secret.
    Update {
        path: String,
        /// New value (`-` reads standard input); absent keeps the value
        #[arg(long)]
        value: Option<String>,
        /// Metadata entries replacing the old ones, KEY=VALUE (repeatable)
        #[arg(long = "metadata", short = 'm')]
        metadata: Vec<String>,
        /// Fail unless the secret is at this version
        #[arg(long)]
        cas: Option<i64>,
    },
    /// Delete a secret with all its versions.
    Delete { path: String },
    /// Show a secret's version history.
    Versions { path: String },
}

#[derive(Debug, Args)]
struct AuditArgs {
    #[arg(long)]
    limit: Option<i64>,
    #[arg(long)]
    offset: Option<i64>,
    /// User id
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    action: Option<String>,
    #[arg(long)]
    secret_path: Option<String>,
    /// RFC 3339
    #[arg(long)]
    start_time: Option<String>,
    /// RFC 3339
    #[arg(long)]
    end_time: Option<String>,
}

#[derive(Debug, Subcommand)]
enum ApiKeysCommand {
    /// List your API keys.
    List,
    /// Create an API key; it is shown only once.
    Create {
        name: String,
        /// Lifetime such as 720h, 30d, 90m or 3600s
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// Revoke an API key by id.
    Revoke { id: String },
}

/// What `login` saves.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    addr: Option<String>,
    token: Option<String>,
    expires_at: Option<String>,
}

/// A failure to report: its message, and the exit code.
#[derive(Debug)]
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("nexusctl: {message}");
            ExitCode::FAILURE
        }
    }
}

fn config_path(cli: &Cli) -> PathBuf {
    if let Some(p) = &cli.config {
        return p.clone();
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("nexusctl").join("config.json")
}

fn load_saved(path: &std::path::Path) -> Saved {
    std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

fn save(path: &std::path::Path, saved: &Saved) -> Result<(), Failure> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(|e| Failure(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| Failure(format!("cannot write {}: {e}", path.display())))?;
    // An existing file keeps its mode when opened: make sure it is private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    let text = serde_json::to_string_pretty(saved)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// A client bound to one server and credential.
struct Api {
    http: Client,
    addr: String,
    credential: Option<(&'static str, String)>,
}

impl Api {
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.addr));
        match &self.credential {
            Some((header, value)) => req.header(*header, value),
            None => req,
        }
    }

    /// Sends `req`; the JSON body on success (`Null` when empty), else the server's message.
    fn send(&self, req: RequestBuilder) -> Result<Value, Failure> {
        let resp = req.send().map_err(|e| Failure(format!("cannot reach {}: {}", self.addr, root_cause(&e))))?;
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        let body: Value =
            if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::Null) };
        if status.is_success() {
            return Ok(body);
        }
        let message = body["message"]
            .as_str()
            .or_else(|| body["error"]["message"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| text.trim().chars().take(200).collect());
        let mut out = format!("{message} (HTTP {})", status.as_u16());
        if let Some(details) = body["details"].as_array() {
            for d in details {
                if let (Some(f), Some(m)) = (d["field"].as_str(), d["message"].as_str()) {
                    out.push_str(&format!("\n  {f}: {m}"));
                }
            }
        }
        Err(Failure(out))
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn run(cli: Cli) -> Result<(), Failure> {
    let config_file = config_path(&cli);
    let saved = load_saved(&config_file);
    let addr = cli
        .addr
        .clone()
        .or_else(|| saved.addr.clone())
        .unwrap_or_else(|| DEFAULT_ADDR.to_string())
        .trim_end_matches('/')
        .to_string();
    let credential = match (&cli.api_key, &cli.token, &saved.token) {
        (Some(key), _, _) if !key.is_empty() => Some(("X-Nexus-API-Key", key.clone())),
        (_, Some(token), _) if !token.is_empty() => Some(("Authorization", format!("Bearer {token}"))),
        (_, _, Some(token)) => Some(("Authorization", format!("Bearer {token}"))),
        _ => None,
    };
    let http = Client::builder().user_agent(USER_AGENT).timeout(std::time::Duration::from_secs(30)).build()?;
    let api = Api { http, addr, credential };
    let json_out = cli.json;
    match cli.command {
        Command::Login { username, password } => {
            let password = match password {
                Some(p) => p,
                None => prompt_password()?,
            };
            let body = json!({ "username": username, "password": password });
            let resp = api.send(api.http.post(format!("{}/api/v1/auth/login", api.addr)).json(&body))?;
            let token = resp["token"].as_str().ok_or_else(|| Failure("the server sent no token".into()))?;
            let saved = Saved {
                addr: Some(api.addr.clone()),
                token: Some(token.to_string()),
                expires_at: resp["expires_at"].as_str().map(str::to_string),
            };
            save(&config_file, &saved)?;
            if json_out {
                print_json(&json!({ "user": resp["user"], "expires_at": resp["expires_at"],
                    "config": config_file.display().to_string() }));
            } else {
                println!(
                    "Logged in to {} as {} (token valid until {}); saved to {}",
                    api.addr,
                    resp["user"]["name"].as_str().unwrap_or(&username),
                    resp["expires_at"].as_str().unwrap_or("?"),
                    config_file.display()
                );
            }
            Ok(())
        }
        Command::Secrets(cmd) => secrets(&api, cmd, json_out),
        Command::Audit(a) => {
            let mut query: Vec<(&str, String)> = Vec::new();
            let text = [
                ("user", a.user),
                ("action", a.action),
                ("secret_path", a.secret_path),
                ("start_time", a.start_time),
                ("end_time", a.end_time),
            ];
            for (k, v) in text {
                if let Some(v) = v {
                    query.push((k, v));
                }
            }
            for (k, v) in [("limit", a.limit), ("offset", a.offset)] {
                if let Some(v) = v {
                    query.push((k, v.to_string()));
                }
            }
            let resp = api.send(api.request(Method::GET, "/api/v1/audit").query(&query))?;
            if json_out {
                print_json(&resp);
            } else {
                let rows =
                    rows_of(&resp["logs"], &["timestamp", "action", "user", "secret_path", "ip_address", "success"]);
                print_table(&["TIMESTAMP", "ACTION", "USER", "SECRET PATH", "IP", "SUCCESS"], &rows);
                println!("{} of {} entries", rows.len(), resp["total"]);
            }
            Ok(())
        }
        Command::Apikeys(cmd) => apikeys(&api, cmd, json_out),
    }
}

fn prompt_password() -> Result<String, Failure> {
    eprint!("Password: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// A value argument: `-` reads standard input (without its final newline).
fn value_arg(v: String) -> Result<String, Failure> {
    if v != "-" {
        return Ok(v);
    }
    let mut buf = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf)?;
    Ok(buf.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(&buf).to_string())
}

fn metadata_arg(entries: &[String]) -> Result<Option<Value>, Failure> {
    if entries.is_empty() {
        return Ok(None);
    }
    let mut map = BTreeMap::new();
    for e in entries {
        let (k, v) = e.split_once('=').ok_or_else(|| Failure(format!("metadata `{e}` is not KEY=VALUE")))?;
        map.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(Some(json!(map)))
}

/// `/api/v1/secrets/<path>` with each segment percent-encoded.
fn secret_url(path: &str, suffix: &str) -> String {
    let encoded: Vec<String> = path.split('/').map(encode_segment).collect();
    format!("/api/v1/secrets/{}{suffix}", encoded.join("/"))
}

fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const SECRET_COLUMNS: &[&str] = &["path", "version", "updated_at", "updated_by", "metadata"];

fn secrets(api: &Api, cmd: SecretsCommand, json_out: bool) -> Result<(), Failure> {
    match cmd {
        SecretsCommand::List { prefix } => {
            let mut req = api.request(Method::GET, "/api/v1/secrets");
            if let Some(p) = prefix {
                req = req.query(&[("prefix", p)]);
            }
            let resp = api.send(req)?;
            if json_out {
                print_json(&resp);
            } else {
                print_table(
                    &["PATH", "VERSION", "UPDATED", "UPDATED BY", "METADATA"],
                    &rows_of(&resp["secrets"], SECRET_COLUMNS),
                );
            }
        }
        SecretsCommand::Get { path, version, field } => {
            let mut req = api.request(Method::GET, &secret_url(&path, ""));
            if let Some(v) = version {
                req = req.query(&[("version", v)]);
            }
            let resp = api.send(req)?;
            if let Some(v) = version {
                check_version(&resp, v)?;
            }
            if let Some(field) = field {
                let v = resp.get(&field).ok_or_else(|| Failure(format!("no field `{field}`")))?;
                println!("{}", cell(v));
            } else if json_out {
                print_json(&resp);
            } else {
                print_object(
                    &resp,
                    &[
                        "path",
                        "value",
                        "version",
                        "metadata",
                        "id",
                        "created_at",
                        "created_by",
                        "updated_at",
                        "updated_by",
                    ],
                );
            }
        }
        SecretsCommand::Set { path, value, metadata } => {
            let mut body = json!({ "path": path, "value": value_arg(value)? });
            if let Some(m) = metadata_arg(&metadata)? {
                body["metadata"] = m;
            }
            let resp = api.send(api.request(Method::POST, "/api/v1/secrets").json(&body))?;
            show_written(&resp, json_out, "created");
        }
        SecretsCommand::Update { path, value, metadata, cas } => {
            let mut body = json!({});
            if let Some(v) = value {
                body["value"] = Value::String(value_arg(v)?);
            }
            if let Some(m) = metadata_arg(&metadata)? {
                body["metadata"] = m;
            }
            if let Some(c) = cas {
                body["cas"] = json!(c);
            }
            let resp = api.send(api.request(Method::PUT, &secret_url(&path, "")).json(&body))?;
            show_written(&resp, json_out, "updated");
        }
        SecretsCommand::Delete { path } => {
            api.send(api.request(Method::DELETE, &secret_url(&path, "")))?;
            if json_out {
                print_json(&json!({ "deleted": path }));
            } else {
                println!("Deleted {path}");
            }
        }
        SecretsCommand::Versions { path } => {
            let resp = api.send(api.request(Method::GET, &secret_url(&path, "/versions")))?;
            if json_out {
                print_json(&resp);
            } else {
                print_table(
                    &["VERSION", "CREATED", "CREATED BY", "ID"],
                    &rows_of(&resp["versions"], &["version", "created_at", "created_by", "id"]),
                );
            }
        }
    }
    Ok(())
}

fn show_written(resp: &Value, json_out: bool, verb: &str) {
    if json_out {
        print_json(resp);
    } else {
        println!("Secret {} {verb}: version {}", resp["path"].as_str().unwrap_or("?"), resp["version"]);
    }
}

fn apikeys(api: &Api, cmd: ApiKeysCommand, json_out: bool) -> Result<(), Failure> {
    match cmd {
        ApiKeysCommand::List => {
            let resp = api.send(api.request(Method::GET, "/api/v1/apikeys"))?;
            if json_out {
                print_json(&resp);
            } else {
                let cols = ["id", "name", "prefix", "created_at", "expires_at", "last_used"];
                print_table(
                    &["ID", "NAME", "PREFIX", "CREATED", "EXPIRES", "LAST USED"],
                    &rows_of(&resp["keys"], &cols),
                );
            }
        }
        ApiKeysCommand::Create { name, expires_in } => {
            let mut body = json!({ "name": name });
            if let Some(d) = expires_in {
                body["expires_in"] = json!(parse_duration_ns(&d)?);
            }
            let resp = api.send(api.request(Method::POST, "/api/v1/apikeys").json(&body))?;
            if json_out {
                print_json(&resp);
            } else {
                print_object(&resp, &["id", "name", "key", "prefix", "created_at", "expires_at"]);
                eprintln!("Store the key now: it is not shown again.");
            }
        }
        ApiKeysCommand::Revoke { id } => {
            api.send(api.request(Method::DELETE, "/api/v1/apikeys").query(&[("id", &id)]))?;
            if json_out {
                print_json(&json!({ "revoked": id }));
            } else {
                println!("Revoked {id}");
            }
        }
    }
    Ok(())
}

/// `720h`, `30d`, `90m`, `3600s` or plain seconds, in nanoseconds as the API takes them.
fn parse_duration_ns(text: &str) -> Result<u64, Failure> {
    let bad = || Failure(format!("`{text}` is not a duration such as 720h, 30d, 90m or 3600s"));
    let (num, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(secs).and_then(|s| s.checked_mul(1_000_000_000)).ok_or_else(bad)
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A value as a table cell: strings bare, null as `-`, objects as `k=v, …`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::from("-"),
        Value::String(s) => s.clone(),
        Value::Object(m) if m.is_empty() => String::from("-"),
        Value::Object(m) => m.iter().map(|(k, v)| format!("{k}={}", cell(v))).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn rows_of(list: &Value, cols: &[&str]) -> Vec<Vec<String>> {
    list.as_array()
        .map(|items| items.iter().map(|item| cols.iter().map(|c| cell(&item[*c])).collect()).collect())
        .unwrap_or_default()
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| (*h).to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn print_object(obj: &Value, keys: &[&str]) {
    let rows: Vec<Vec<String>> = keys.iter().map(|k| vec![(*k).to_string(), cell(&obj[*k])]).collect();
    print_table(&["KEY", "VALUE"], &rows);
}

/// Refuses an answer that is not version `asked` of the secret: a server or proxy that ignored
/// `?version=` would otherwise hand over the current value as if it were the old one.
fn check_version(resp: &Value, asked: i64) -> Result<(), Failure> {
    match resp.get("version").and_then(Value::as_i64) {
        Some(v) if v == asked => Ok(()),
        Some(v) => Err(Failure(format!("asked for version {asked} but the server answered version {v}; not shown"))),
        None => Err(Failure(format!("asked for version {asked} but the answer names no version; not shown"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_urls() {
        assert_eq!(parse_duration_ns("720h").ok(), Some(2_592_000_000_000_000));
        assert_eq!(parse_duration_ns("10").ok(), Some(10_000_000_000));
        assert!(parse_duration_ns("1y").is_err());
        assert_eq!(secret_url("a/b c", "/versions"), "/api/v1/secrets/a/b%20c/versions");
    }

    #[test]
    fn an_answer_of_another_version_is_refused() {
        assert!(check_version(&json!({ "version": 2, "value": "v2" }), 2).is_ok());
        let wrong = check_version(&json!({ "version": 3, "value": "v3" }), 2).err().map(|f| f.0);
        assert_eq!(wrong.as_deref(), Some("asked for version 2 but the server answered version 3; not shown"));
        assert!(check_version(&json!({ "value": "v" }), 1).is_err());
        assert!(check_version(&json!({ "version": "1" }), 1).is_err(), "a version is a number");
    }
}
