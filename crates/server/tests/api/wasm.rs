//! WebAssembly plugins: the example plugins of `examples/plugins/` (built for wasm32-wasip2 by
//! `.ci/run`, or here when missing) packaged, installed from a registry folder and by upload,
//! and driven over HTTP and the WebSocket.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use nexus_testkit::reqwest::Method;
use nexus_testkit::{Backend, Reply, TestServer, backends, json};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

static BUILD: Mutex<bool> = Mutex::new(false);

/// The folder of the example plugins' components: `NEXUS_WASM_EXAMPLES` (set by `.ci/run`), or
/// built here with cargo on first use.
fn components() -> PathBuf {
    if let Some(dir) = std::env::var_os("NEXUS_WASM_EXAMPLES") {
        return PathBuf::from(dir);
    }
    let manifest = repo().join("examples/plugins/Cargo.toml");
    let out = repo().join("examples/plugins/target/wasm32-wasip2/release");
    let mut built = BUILD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !*built {
        // The README's `cargo test --workspace` on a fresh machine: the target the examples
        // build for is added as `.ci/run` adds it (rustup is how the toolchain came).
        let installed = std::process::Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "wasm32-wasip2"));
        if !installed {
            let _ = std::process::Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status();
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| String::from("cargo"));
        let status = std::process::Command::new(cargo)
            .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(&manifest)
            // The examples have a workspace and a target folder of their own.
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .unwrap_or_else(|e| panic!("cannot run cargo to build the example plugins: {e}"));
        assert!(status.success(), "building the example plugins failed (is the wasm32-wasip2 target installed?)");
        *built = true;
    }
    out
}

/// The example `name`'s manifest text, changed by `edit`, packaged with its component.
fn package_with(name: &str, edit: impl FnOnce(String) -> String) -> Vec<u8> {
    let manifest = std::fs::read_to_string(repo().join(format!("examples/plugins/{name}/manifest.toml")))
        .unwrap_or_else(|e| panic!("manifest of {name}: {e}"));
    let wasm = std::fs::read(components().join(format!("{name}.wasm"))).unwrap_or_else(|e| panic!("{name}.wasm: {e}"));
    nexus_wasm::package::build(&edit(manifest), &wasm).unwrap_or_else(|e| panic!("packaging {name}: {e}"))
}

fn package(name: &str) -> Vec<u8> {
    package_with(name, |m| m)
}

fn with_version(version: &str) -> impl FnOnce(String) -> String {
    let version = version.to_string();
    move |m: String| m.replacen("version = \"0.1.0\"", &format!("version = \"{version}\""), 1)
}

struct Setup {
    s: TestServer,
    admin: String,
    registry: tempfile::TempDir,
}

async fn start(backend: Backend, section: Value) -> Setup {
    let registry = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let mut section = section;
    section["registry_dir"] = json!(registry.path());
    let s = TestServer::start_with(backend, |c| {
        c.plugins.insert(String::from("plugins"), section);
    })
    .await;
    let admin = s.admin_token().await;
    Setup { s, admin, registry }
}

impl Setup {
    fn publish(&self, file: &str, bytes: &[u8]) {
        std::fs::write(self.registry.path().join(file), bytes).unwrap_or_else(|e| panic!("writing {file}: {e}"));
    }

    async fn install(&self, package: &str, version: Option<&str>) -> Reply {
        let mut body = json!({ "source": "registry", "package": package });
        if let Some(v) = version {
            body["version"] = json!(v);
        }
        self.s.post_as(&self.admin, "/api/plugins/install", body).await
    }

    async fn upload(&self, file: &[u8], signature: Option<&str>, grant: Option<&str>) -> Reply {
        upload(&self.s, &self.admin, file, signature, grant).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.s.get_as(&self.admin, path).await
    }

    /// `PUT /api/plugins/{id}/config` with `config`.
    async fn configure(&self, id: &str, config: Value) -> Reply {
        let path = format!("/api/plugins/{id}/config");
        self.s.call_as(&self.admin, Method::PUT, &path, Some(json!({ "config": config }))).await
    }

    async fn detail(&self, id: &str) -> Reply {
        self.get(&format!("/api/plugins/{id}")).await
    }
}

/// `POST /api/plugins/install` as `multipart/form-data`, written out by hand.
async fn upload(s: &TestServer, token: &str, file: &[u8], signature: Option<&str>, grant: Option<&str>) -> Reply {
    let boundary = "nexus-test-boundary-7d1f";
    let mut body = Vec::new();
    let mut part = |name: &str, filename: Option<&str>, bytes: &[u8]| {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/zip\r\n\r\n")
                    .as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    };
    part("file", Some("plugin.nxp"), file);
    if let Some(sig) = signature {
        part("signature", None, sig.as_bytes());
    }
    if let Some(grant) = grant {
        part("grant", None, grant.as_bytes());
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let resp = s
        .client
        .post(s.url("/api/plugins/install"))
        .bearer_auth(token)
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("upload failed: {e}"));
    nexus_testkit::read(resp).await
}

/// Polls `check` until it holds, for at most 20 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn step_names(r: &Reply) -> Vec<String> {
    r.json["task"]["steps"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["name"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_shortener_installs_from_the_registry_and_serves_its_routes() {
    for backend in backends() {
        let t = start(backend, json!({})).await;
        t.publish("shortener-0.1.0.nxp", &package("shortener"));
        let r = t.install("shortener", None).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json["status"], "success");
        assert_eq!(r.json["plugin"]["id"], "shortener");
        assert_eq!(r.json["plugin"]["version"], "0.1.0");
        assert_eq!(r.json["plugin"]["status"], "active");
        assert_eq!(r.json["message"], "Plugin installed successfully");
        assert_eq!(step_names(&r), ["resolve", "validate", "check_dependencies", "compile", "test", "activate"]);
        assert_eq!(r.json["sha256"].as_str().map(str::len), Some(64));

        // A public route, with the configuration of the manifest.
        // With credentials too: the caller is authenticated for the plugin's handler.
        let r = t.s.get_as(&t.admin, "/api/plugins/shortener/hello").await;
        assert_eq!(r.status, 200, "{}", r.text);
        let r = t.s.get("/api/plugins/shortener/hello").await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["message"], "hello from shortener");
        // Others need a caller.
        let r = t.s.post("/api/plugins/shortener/links", json!({"url": "https://example.com/a"})).await;
        assert_eq!(r.status, 401, "{}", r.text);
        let r = t.s.post_as(&t.admin, "/api/plugins/shortener/links", json!({"url": "https://example.com/a"})).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json["created_by"], "admin", "identity is granted: {}", r.text);
        let code = r.json["code"].as_str().unwrap_or_default().to_string();
        assert_eq!(r.json["short_url"], format!("https://sho.rt/{code}"));
        let r = t.get(&format!("/api/plugins/shortener/links/{code}")).await;
        assert_eq!((r.status.as_u16(), r.json["hits"].clone()), (200, json!(1)), "{}", r.text);
        let r = t.get(&format!("/api/plugins/shortener/links/{code}")).await;
        assert_eq!(r.json["hits"], 2);
        // Its links are documents of the collection it declares.
        let r = t.get("/api/plugins/shortener/links").await;
        assert_eq!(r.status, 200, "{}", r.text);
        let links = r.json["links"].as_array().cloned().unwrap_or_default();
        assert!(links.iter().any(|l| l["code"] == code.as_str() && l["created_by"] == "admin"), "{}", r.text);
        // The plugin's answers go through the conventions: its own 404 and 400.
        assert_eq!(t.get("/api/plugins/shortener/links/nope").await.status, 404);
        let r = t.s.post_as(&t.admin, "/api/plugins/shortener/links", json!({"url": "ftp://x"})).await;
        assert_eq!(r.status, 400, "{}", r.text);
        // A path of its own outside /api/plugins/{id}.
        let client = nexus_testkit::reqwest::Client::builder()
            .redirect(nexus_testkit::reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let resp = client.get(t.s.url(&format!("/api/s/{code}/go"))).send().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 302);
        assert_eq!(resp.headers().get("location").and_then(|v| v.to_str().ok()), Some("https://example.com/a"));
        // In a batch, and under the /api/v2 alias, like any route.
        let batch = json!({"requests": [
            {"id": "hello", "method": "GET", "url": "/api/plugins/shortener/hello"},
            {"id": "mine", "method": "GET", "url": "/api/plugins/shortener/links"},
            {"id": "v2", "method": "GET", "url": format!("/api/v2/plugins/shortener/links/{code}")},
        ]});
        let r = t.s.post_as(&t.admin, "/api/batch", batch).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let statuses: Vec<i64> =
            r.json["responses"].as_array().into_iter().flatten().filter_map(|e| e["status"].as_i64()).collect();
        assert_eq!(statuses, [200, 200, 200], "{}", r.text);
        // Unknown paths stay 404s in the framework dialect.
        let r = t.get("/api/plugins/shortener/nothing-here").await;
        assert_eq!(r.status, 404);
        assert_eq!(r.json["error"]["code"], "RESOURCE_NOT_FOUND", "{}", r.text);

        // /api/plugins lists it with its endpoints and measured traffic.
        let r = t.detail("shortener").await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["builtin"], false);
        assert_eq!(r.json["status"], "active");
        assert_eq!(r.json["version"], "0.1.0");
        let paths: Vec<&str> =
            r.json["api_endpoints"].as_array().into_iter().flatten().filter_map(|e| e["path"].as_str()).collect();
        assert!(
            paths.contains(&"/api/plugins/shortener/links/{code}") && paths.contains(&"/api/s/{code}/go"),
            "{paths:?}"
        );
        assert!(r.json["metrics"]["total_requests"].as_u64().is_some_and(|n| n >= 6), "{}", r.text);
        let r = t.get("/api/plugins?status=active&limit=100").await;
        assert!(r.text.contains("\"shortener\""), "{}", r.text);

        // OpenAPI has its routes at once.
        let doc = t.s.get("/openapi.json").await;
        assert!(doc.json["paths"]["/api/plugins/shortener/links/{code}"]["get"].is_object(), "{}", doc.text);
        assert!(doc.json["paths"]["/api/s/{code}/go"]["get"].is_object());
        // Built-in paths are still there.
        assert!(doc.json["paths"]["/api/plugins/{plugin_id}"]["get"].is_object());

        // Configuration through the API reaches the plugin.
        let r = t.configure("shortener", json!({"greeting": "hi there"})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(t.s.get("/api/plugins/shortener/hello").await.json["message"], "hi there");

        // A credential in a plugin's configuration is never shown back.
        let r = t.configure("shortener", json!({"upstream_api_token": "tok-f00d-cafe"})).await;
        assert_eq!(
            (r.status.as_u16(), r.json["config"]["upstream_api_token"].clone()),
            (200, json!("***masked***")),
            "{}",
            r.text
        );
        for path in ["/api/plugins/shortener", "/api/plugins?limit=100", "/api/v1/config"] {
            let r = t.get(path).await;
            assert!(r.status.is_success() && !r.text.contains("tok-f00d-cafe"), "{path}: {}", r.text);
        }

        // It stays installed, with its data and configuration, across a restart.
        let mut s = t.s;
        s.restart().await;
        let admin = s.admin_token().await;
        let r = s.get_as(&admin, &format!("/api/plugins/shortener/links/{code}")).await;
        assert_eq!((r.status.as_u16(), r.json["hits"].clone()), (200, json!(5)), "{}", r.text);
        assert_eq!(s.get("/api/plugins/shortener/hello").await.json["message"], "hi there");
        let r = s.get_as(&admin, "/api/plugins/shortener").await;
        assert!(r.status.is_success() && !r.text.contains("tok-f00d-cafe"), "{}", r.text);
        assert_eq!(r.json["configuration"]["upstream_api_token"], "***masked***", "{}", r.text);
    }
}

#[tokio::test]
async fn uploads_are_checked_and_a_refused_install_leaves_nothing() {
    let (secret, public) = nexus_wasm::package::keygen();
    let (other_secret, _) = nexus_wasm::package::keygen();
    let t = start(Backend::Sqlite, json!({"trusted_keys": [public], "require_signature": true})).await;
    let pkg = package("shortener");
    let good = nexus_wasm::package::sign(&pkg, &secret).unwrap_or_else(|e| panic!("{e}"));

    let refused = |r: &Reply, status: u16, needle: &str| {
        assert_eq!(r.status, status, "{}", r.text);
        assert!(r.text.contains(needle), "expected `{needle}` in {}", r.text);
    };
    refused(&t.upload(&pkg, None, None).await, 400, "not signed");
    let bad = nexus_wasm::package::sign(&pkg, &other_secret).unwrap_or_else(|e| panic!("{e}"));
    refused(&t.upload(&pkg, Some(&bad), None).await, 400, "does not match");
    // A package changed after it was signed.
    let mut tampered = pkg.clone();
    if let Some(last) = tampered.iter_mut().rev().nth(30) {
        *last ^= 0x55;
    }
    refused(&t.upload(&tampered, Some(&good), None).await, 400, "does not match");
    refused(&t.upload(b"not a zip at all", Some(&good), None).await, 400, "");
    assert_eq!(t.detail("shortener").await.status, 404);

    // A missing dependency and a route that a built-in plugin serves.
    let needs = package_with("shortener", |m| {
        m.replacen("wit = \"0.1.0\"", "wit = \"0.1.0\"\ndependencies = { ghost = \">=1\" }", 1)
    });
    let sig = nexus_wasm::package::sign(&needs, &secret).unwrap_or_else(|e| panic!("{e}"));
    let r = t.upload(&needs, Some(&sig), None).await;
    refused(&r, 409, "`ghost`, which is not installed");
    assert!(
        r.json["error"]["steps"].as_array().is_some_and(|s| s.iter().any(|s| s["status"] == "failed")),
        "{}",
        r.text
    );
    let collides =
        package_with("shortener", |m| m.replacen("path = \"/api/s/{code}/go\"", "path = \"/api/users/{code}\"", 1));
    let sig = nexus_wasm::package::sign(&collides, &secret).unwrap_or_else(|e| panic!("{e}"));
    refused(&t.upload(&collides, Some(&sig), None).await, 409, "collides with");
    // An id a built-in plugin has.
    let taken = package_with("shortener", |m| m.replacen("id = \"shortener\"", "id = \"secrets\"", 1));
    let sig = nexus_wasm::package::sign(&taken, &secret).unwrap_or_else(|e| panic!("{e}"));
    refused(&t.upload(&taken, Some(&sig), None).await, 409, "built-in");
    // A WIT version this server does not have.
    let future = {
        let manifest =
            std::fs::read_to_string(repo().join("examples/plugins/shortener/manifest.toml")).unwrap_or_default();
        let wasm = std::fs::read(components().join("shortener.wasm")).unwrap_or_default();
        nexus_wasm::package::write(&manifest.replacen("wit = \"0.1.0\"", "wit = \"9.0.0\"", 1), &wasm)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let sig = nexus_wasm::package::sign(&future, &secret).unwrap_or_else(|e| panic!("{e}"));
    refused(&t.upload(&future, Some(&sig), None).await, 400, "not supported");
    assert_eq!(t.detail("shortener").await.status, 404);
    assert_eq!(t.s.get("/api/plugins/shortener/hello").await.status, 404);
    assert!(!t.s.get("/openapi.json").await.text.contains("/api/plugins/shortener/"));

    // Only administrators install.
    let viewer = t.s.user_token("wasmviewer", &["viewer"]).await;
    let r = upload(&t.s, &viewer, &pkg, Some(&good), None).await;
    assert_eq!(r.status, 403, "{}", r.text);

    // Signed by a trusted key, with fewer capabilities than it asks for.
    let r = t.upload(&pkg, Some(&good), Some("log,config")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["signed"], true);
    assert_eq!(r.json["granted"], json!(["config", "log"]));
    assert_eq!(t.s.get("/api/plugins/shortener/hello").await.status, 200);
    // The store was not granted: the plugin gets a clear error, and says so.
    let r = t.s.post_as(&t.admin, "/api/plugins/shortener/links", json!({"url": "https://example.com"})).await;
    assert_eq!(r.status, 500, "{}", r.text);
    assert!(r.text.contains("capability `kv` not granted to plugin `shortener`"), "{}", r.text);
    // A capability it does not ask for cannot be granted.
    let r = t.upload(&package_with("stats", |m| m), None, Some("kv,identity")).await;
    assert_eq!(r.status, 400, "{}", r.text);
}

#[tokio::test]
async fn the_sandbox_contains_loops_memory_bombs_and_traps() {
    let t = start(Backend::Sqlite, json!({"fault_limit": 4})).await;
    let r = t.upload(&package("probe"), None, None).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(t.get("/api/plugins/probe/ok").await.status, 200);

    let started = std::time::Instant::now();
    let r = t.get("/api/plugins/probe/loop").await;
    assert_eq!(r.status, 504, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "PLUGIN_ERROR");
    assert_eq!(r.json["error"]["plugin_id"], "probe");
    assert!(r.text.contains("time limit of 300 ms"), "{}", r.text);
    assert!(started.elapsed() < Duration::from_secs(5), "the loop ran for {:?}", started.elapsed());
    assert_eq!(t.get("/api/plugins/probe/ok").await.status, 200);

    let r = t.get("/api/plugins/probe/bomb").await;
    assert_eq!(r.status, 500, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "PLUGIN_ERROR");
    assert!(r.text.contains("memory limit of 32 MiB"), "{}", r.text);
    assert_eq!(t.get("/api/plugins/probe/ok").await.status, 200);

    let r = t.get("/api/plugins/probe/trap").await;
    assert_eq!(r.status, 500, "{}", r.text);
    assert_eq!(r.json["error"]["plugin_id"], "probe");
    assert!(r.text.contains("plugin `probe` trapped"), "{}", r.text);

    // Imports it was not granted.
    let r = t.get("/api/plugins/probe/kv").await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("capability `kv` not granted"), "{}", r.text);

    // The server carries on.
    assert_eq!(t.s.get("/health").await.status, 200);
    assert_eq!(t.get("/api/users").await.status, 200);

    // Failing again and again puts it in `error`, disabled, with the reason.
    for _ in 0..4 {
        let r = t.get("/api/plugins/probe/trap").await;
        assert!(r.status == 500 || r.status == 503, "{}", r.text);
    }
    let r = t.detail("probe").await;
    assert_eq!(r.json["status"], "error", "{}", r.text);
    assert_eq!(r.json["enabled"], false);
    assert!(r.json["reason"].as_str().is_some_and(|s| s.contains("failed calls in a row")), "{}", r.text);
    let r = t.get("/api/plugins/probe/ok").await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.json["error"]["plugin_id"], "probe");

    // An operator enables it again.
    let r = t.s.call_as(&t.admin, Method::PUT, "/api/plugins/probe/status", Some(json!({"enabled": true}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(t.get("/api/plugins/probe/ok").await.status, 200);
    eventually("the probe to be active again", || async { t.detail("probe").await.json["status"] == "active" }).await;
}

#[tokio::test]
async fn upgrade_rollback_disable_enable_and_uninstall() {
    let t = start(Backend::Sqlite, json!({})).await;
    t.publish("shortener-0.1.0.nxp", &package("shortener"));
    t.publish(
        "shortener-0.2.0.nxp",
        &package_with("shortener", |m| with_version("0.2.0")(m).replace("https://sho.rt", "https://v2.sho.rt")),
    );
    // 0.3.0 refuses its own configuration in `init`.
    t.publish(
        "shortener-0.3.0.nxp",
        &package_with("shortener", |m| with_version("0.3.0")(m).replace("https://sho.rt", "ftp://bad")),
    );

    let r = t.install("shortener", Some("0.1.0")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = t.s.post_as(&t.admin, "/api/plugins/shortener/links", json!({"url": "https://example.com/k"})).await;
    let code = r.json["code"].as_str().unwrap_or_default().to_string();

    let r = t.install("shortener", Some("0.2.0")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["message"], "Plugin upgraded successfully");
    assert_eq!(r.json["previous_version"], "0.1.0");
    assert_eq!(t.detail("shortener").await.json["version"], "0.2.0");
    let r = t.s.post_as(&t.admin, "/api/plugins/shortener/links", json!({"url": "https://example.com/l"})).await;
    assert!(r.json["short_url"].as_str().is_some_and(|u| u.starts_with("https://v2.sho.rt/")), "{}", r.text);
    // Its data survived the upgrade.
    assert_eq!(t.get(&format!("/api/plugins/shortener/links/{code}")).await.status, 200);

    // A version whose init fails is refused and the old one keeps serving.
    let r = t.install("shortener", Some("0.3.0")).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("refused to start"), "{}", r.text);
    assert_eq!(t.detail("shortener").await.json["version"], "0.2.0");
    // Not newer: refused.
    let r = t.install("shortener", Some("0.1.0")).await;
    assert_eq!(r.status, 409, "{}", r.text);

    let r = t.s.post_as(&t.admin, "/api/plugins/shortener/rollback", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["plugin"]["version"], "0.1.0");
    assert_eq!(r.json["rolled_back_from"], "0.2.0");
    assert_eq!(t.detail("shortener").await.json["version"], "0.1.0");
    let r = t.s.post_as(&t.admin, "/api/plugins/shortener/links", json!({"url": "https://example.com/m"})).await;
    assert!(r.json["short_url"].as_str().is_some_and(|u| u.starts_with("https://sho.rt/")), "{}", r.text);
    // Built-in plugins have nothing to roll back to.
    assert_eq!(t.s.post_as(&t.admin, "/api/plugins/identity/rollback", json!({})).await.status, 409);

    // Disabled: 503 naming it, gone from the OpenAPI document; enabled: back.
    let r =
        t.s.call_as(
            &t.admin,
            Method::PUT,
            "/api/plugins/shortener/status",
            Some(json!({"enabled": false, "reason": "maintenance"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = t.s.get("/api/plugins/shortener/hello").await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.text.contains("maintenance"), "{}", r.text);
    assert!(!t.s.get("/openapi.json").await.text.contains("/api/plugins/shortener/hello"));
    let r = t.s.call_as(&t.admin, Method::PUT, "/api/plugins/shortener/status", Some(json!({"enabled": true}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(t.s.get("/api/plugins/shortener/hello").await.status, 200);
    assert!(t.s.get("/openapi.json").await.text.contains("/api/plugins/shortener/hello"));

    // Uninstalled: routes and documentation gone, data kept until purged.
    let r = t.s.call_as(&t.admin, Method::DELETE, "/api/plugins/shortener", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "uninstalled");
    assert_eq!(t.detail("shortener").await.status, 404);
    assert_eq!(t.s.get("/api/plugins/shortener/hello").await.status, 404);
    assert!(!t.s.get("/openapi.json").await.text.contains("/api/plugins/shortener/"));
    assert_eq!(t.install("shortener", Some("0.1.0")).await.status, 201);
    assert_eq!(t.get(&format!("/api/plugins/shortener/links/{code}")).await.status, 200);
    let r = t.s.call_as(&t.admin, Method::DELETE, "/api/plugins/shortener?purge=true", None).await;
    assert_eq!((r.status.as_u16(), r.json["data_purged"].clone()), (200, json!(true)), "{}", r.text);
    assert_eq!(t.install("shortener", Some("0.1.0")).await.status, 201);
    assert_eq!(t.get(&format!("/api/plugins/shortener/links/{code}")).await.status, 404);
    // Built-in plugins cannot be uninstalled.
    assert_eq!(t.s.call_as(&t.admin, Method::DELETE, "/api/plugins/identity", None).await.status, 409);
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(s: &TestServer, token: &str) -> Socket {
    let url = s.url("/ws").replacen("http://", "ws://", 1);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap_or_else(|e| panic!("ws connect: {e}"));
    send(&mut socket, json!({"type": "auth", "token": token})).await;
    assert_eq!(recv_type(&mut socket, "auth_success").await["type"], "auth_success");
    socket
}

async fn send(socket: &mut Socket, v: Value) {
    socket.send(Message::text(v.to_string())).await.unwrap_or_else(|e| panic!("ws send: {e}"));
}

async fn recv_type(socket: &mut Socket, kind: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let msg = tokio::time::timeout_at(deadline, socket.next())
            .await
            .unwrap_or_else(|_| panic!("no `{kind}` message within 20 s"));
        if let Some(Ok(Message::Text(t))) = msg {
            let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
            if v["type"] == kind {
                return v;
            }
        } else if !matches!(msg, Some(Ok(_))) {
            panic!("connection closed while waiting for `{kind}`");
        }
    }
}

async fn rpc(socket: &mut Socket, id: &str, method: &str) -> Value {
    send(socket, json!({"type": "rpc", "id": id, "method": method, "params": {}})).await;
    loop {
        let r = recv_type(socket, "rpc_response").await;
        if r["id"] == id {
            return r;
        }
    }
}

#[tokio::test]
async fn rpc_methods_subscribed_events_and_published_events() {
    let t = start(Backend::Sqlite, json!({})).await;
    t.publish("stats.nxp", &package("stats"));
    let r = t.install("stats", None).await;
    assert_eq!(r.status, 201, "{}", r.text);

    // Events it subscribed to (`user.*`) reach it.
    for name in ["wasmev1", "wasmev2"] {
        let body = json!({"username": name, "email": format!("{name}@example.com"), "password": "user-Pass1"});
        assert_eq!(t.s.post_as(&t.admin, "/api/users", body).await.status, 201);
    }
    let mut socket = ws(&t.s, &t.admin).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    let last = loop {
        n += 1;
        let r = rpc(&mut socket, &format!("s{n}"), "plugin.stats.getStats").await;
        // Events are delivered concurrently: both counters are read once both have caught up.
        if r["result"]["by_type"]["user.created"].as_i64().is_some_and(|c| c >= 2)
            && r["result"]["total_events"].as_i64().is_some_and(|c| c >= 2)
        {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "the stats plugin did not count two user.created: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(last["result"]["total_events"].as_i64().is_some_and(|c| c >= 2), "{last}");
    // The same numbers over its HTTP route.
    let r = t.get("/api/plugins/stats/stats").await;
    assert_eq!(r.json["by_type"]["user.created"], last["result"]["by_type"]["user.created"], "{}", r.text);

    // A method needing a permission the caller lacks; a method it does not have.
    let viewer = t.s.user_token("wasmrpcviewer", &["viewer"]).await;
    let mut vs = ws(&t.s, &viewer).await;
    assert_eq!(rpc(&mut vs, "v1", "plugin.stats.reset").await["error"]["code"], "PERMISSION_DENIED");
    assert_eq!(rpc(&mut socket, "x1", "plugin.stats.nothing").await["error"]["code"], "RESOURCE_NOT_FOUND");

    // What it publishes reaches the plugin_events channel, under its own source (watched on a
    // connection of its own: the event may arrive before the RPC's answer).
    let mut events = ws(&t.s, &t.admin).await;
    send(&mut events, json!({"type": "subscribe", "channel": "plugin_events"})).await;
    assert_eq!(recv_type(&mut events, "subscribed").await["channel"], "plugin_events");
    let r = rpc(&mut socket, "r1", "plugin.stats.reset").await;
    assert_eq!(r["result"]["reset"], true, "{r}");
    let ev = loop {
        let ev = recv_type(&mut events, "event").await;
        if ev["data"]["type"] == "stats.reset" {
            break ev;
        }
    };
    assert_eq!(ev["data"]["source"], "stats", "{ev}");
    assert!(ev["data"]["payload"]["before"]["total_events"].as_i64().is_some_and(|c| c >= 2), "{ev}");
    let r = rpc(&mut socket, "s-after", "plugin.stats.getStats").await;
    assert_eq!(r["result"]["total_events"], 0, "{r}");

    // Uninstalled: its methods are gone.
    assert_eq!(t.s.call_as(&t.admin, Method::DELETE, "/api/plugins/stats", None).await.status, 200);
    assert_eq!(rpc(&mut socket, "gone", "plugin.stats.getStats").await["error"]["code"], "RESOURCE_NOT_FOUND");
}

#[tokio::test]
async fn the_plugin_directory_is_hot_reloaded_without_failing_requests() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let t = start(Backend::Sqlite, json!({"plugin_directory": dir.path(), "auto_load": true, "scan_interval_ms": 100}))
        .await;
    let file = dir.path().join("shortener.nxp");
    std::fs::write(&file, package("shortener")).unwrap_or_else(|e| panic!("{e}"));
    eventually("the dropped package to be installed", || async {
        t.s.get("/api/plugins/shortener/hello").await.status == 200
    })
    .await;

    // Requests keep flowing while it is upgraded in place.
    let url = t.s.url("/api/plugins/shortener/hello");
    let client = t.s.client.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status = client.get(&url).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
                statuses.push(status);
                // Paced under the rate limit, which these routes pass through like any other.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            statuses
        })
    };
    std::fs::write(&file, package_with("shortener", with_version("0.2.0"))).unwrap_or_else(|e| panic!("{e}"));
    eventually("the changed package to be upgraded", || async {
        t.detail("shortener").await.json["version"] == "0.2.0"
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = load.await.unwrap_or_default();
    assert!(!statuses.is_empty());
    let failed: Vec<&u16> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(failed.is_empty(), "{} of {} requests failed during the upgrade: {failed:?}", failed.len(), statuses.len());

    std::fs::remove_file(&file).unwrap_or_else(|e| panic!("{e}"));
    eventually("the removed package to be uninstalled", || async { t.detail("shortener").await.status == 404 }).await;
    assert_eq!(t.s.get("/api/plugins/shortener/hello").await.status, 404);
}

#[tokio::test]
async fn installs_upgrades_and_uninstalls_reach_the_other_instances() {
    let Some(redis) = nexus_testkit::redis_url() else {
        eprintln!("NEXUS_TEST_REDIS_URL is not set; skipping");
        return;
    };
    let secret = "a-shared-jwt-secret-of-at-least-32-characters";
    const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let registry = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(registry.path().join("shortener-0.1.0.nxp"), package("shortener")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(registry.path().join("shortener-0.2.0.nxp"), package_with("shortener", with_version("0.2.0")))
        .unwrap_or_else(|e| panic!("{e}"));
    let section = json!({"registry_dir": registry.path()});
    let (r1, s1) = (redis.clone(), section.clone());
    let a = TestServer::start_with(Backend::Sqlite, |c| {
        c.redis.url = Some(r1);
        c.auth.jwt_secret = Some(secret.into());
        c.secrets.master_key = Some(MASTER_KEY.into());
        c.plugins.insert(String::from("plugins"), s1);
    })
    .await;
    // The second instance shares the first one's database, as instances behind a load
    // balancer do.
    let db = a.config.database_url();
    let b = TestServer::start_with(Backend::Sqlite, |c| {
        c.redis.url = Some(redis);
        c.auth.jwt_secret = Some(secret.into());
        c.secrets.master_key = Some(MASTER_KEY.into());
        c.database.url = Some(db);
        c.plugins.insert(String::from("plugins"), section);
    })
    .await;
    let admin = a.admin_token().await;
    let install = |version: &str| json!({"source": "registry", "package": "shortener", "version": version});
    let r = a.post_as(&admin, "/api/plugins/install", install("0.1.0")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    eventually("b to serve the plugin installed on a", || async {
        b.get("/api/plugins/shortener/hello").await.status == 200
    })
    .await;

    let r = a.post_as(&admin, "/api/plugins/install", install("0.2.0")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    eventually("b to serve the upgrade", || async {
        b.get_as(&admin, "/api/plugins/shortener").await.json["version"] == "0.2.0"
    })
    .await;

    let off = json!({"enabled": false});
    assert_eq!(a.call_as(&admin, Method::PUT, "/api/plugins/shortener/status", Some(off)).await.status, 200);
    eventually("b to disable it", || async { b.get("/api/plugins/shortener/hello").await.status == 503 }).await;
    let on = json!({"enabled": true});
    assert_eq!(a.call_as(&admin, Method::PUT, "/api/plugins/shortener/status", Some(on)).await.status, 200);
    eventually("b to enable it", || async { b.get("/api/plugins/shortener/hello").await.status == 200 }).await;

    assert_eq!(a.call_as(&admin, Method::DELETE, "/api/plugins/shortener", None).await.status, 200);
    eventually("b to drop the plugin uninstalled on a", || async {
        b.get("/api/plugins/shortener/hello").await.status == 404
    })
    .await;
}

/// Runs the `nexus` binary; its stdout, trimmed.
fn nexus_cli(args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args(args)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap_or_else(|e| panic!("cannot run nexus: {e}"));
    assert!(out.status.success(), "nexus {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn the_cli_scaffolds_builds_and_signs_a_plugin_that_installs() {
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let plugin = work.path().join("greeter");
    let os = |s: &str| std::ffi::OsString::from(s);
    nexus_cli(&[&os("plugin"), &os("new"), &os("greeter"), plugin.as_os_str()]);
    // The examples' target folder: the SDK's dependencies are compiled there already.
    let _ = components();
    let target = repo().join("examples/plugins/target");
    let built = nexus_cli(&[&os("plugin"), &os("build"), plugin.as_os_str(), &os("--target-dir"), target.as_os_str()]);
    let package_path = PathBuf::from(&built);
    assert!(built.ends_with("greeter-0.1.0.nxp"), "{built}");
    let key = work.path().join("signing.key");
    let public = nexus_cli(&[&os("plugin"), &os("keygen"), &os("--out"), key.as_os_str()]);
    let signature_path =
        nexus_cli(&[&os("plugin"), &os("sign"), package_path.as_os_str(), &os("--key"), key.as_os_str()]);
    assert_eq!(signature_path, format!("{built}.sig"));

    let t = start(Backend::Sqlite, json!({"trusted_keys": [public], "require_signature": true})).await;
    let package = std::fs::read(&package_path).unwrap_or_else(|e| panic!("{e}"));
    let signature = std::fs::read_to_string(&signature_path).unwrap_or_else(|e| panic!("{e}"));
    let r = t.upload(&package, Some(&signature), None).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["signed"], true);
    let r = t.s.get("/api/plugins/greeter/hello").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json, json!({"message": "hello from greeter"}));
}
