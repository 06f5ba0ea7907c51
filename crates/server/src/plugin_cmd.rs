//! `nexus plugin …`: scaffold, build, sign WebAssembly plugins and make signing keys. Needs no
//! configuration or database: it works on files.

use std::path::{Path, PathBuf};

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Scaffold a Rust plugin that builds as it is (route GET /api/plugins/{id}/hello).
    New {
        /// The plugin id (lowercase letters, digits, `_`, `-`).
        name: String,
        /// Where to create it (default: ./NAME).
        dir: Option<PathBuf>,
        /// The guest SDK crate (default: the one of this source tree).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build a plugin for wasm32-wasip2 and write its package; prints the package's path.
    Build {
        /// The plugin's folder (its Cargo.toml and manifest.toml).
        dir: PathBuf,
        /// Cargo's target folder (default: DIR/target); the package is written there.
        #[arg(long)]
        target_dir: Option<PathBuf>,
    },
    /// Write the detached signature PACKAGE.sig with a key made by `nexus plugin keygen`.
    Sign {
        package: PathBuf,
        /// The signing key file (base64).
        #[arg(long)]
        key: PathBuf,
    },
    /// Make a signing key pair: the secret key goes to FILE, the public key (for
    /// `plugins.trusted_keys`) is printed.
    Keygen {
        /// Where to write the secret key.
        #[arg(long, default_value = "nexus-plugin.key")]
        out: PathBuf,
    },
}

pub fn run(command: PluginCommand) -> Result<(), String> {
    match command {
        PluginCommand::New { name, dir, sdk } => new(&name, dir, sdk),
        PluginCommand::Build { dir, target_dir } => build(&dir, target_dir).map(|path| println!("{}", path.display())),
        PluginCommand::Sign { package, key } => {
            let bytes = std::fs::read(&package).map_err(|e| format!("cannot read {}: {e}", package.display()))?;
            let secret = std::fs::read_to_string(&key).map_err(|e| format!("cannot read {}: {e}", key.display()))?;
            let signature = nexus_wasm::package::sign(&bytes, &secret)?;
            let out = nexus_wasm::host::signature_path(&package);
            std::fs::write(&out, signature).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            println!("{}", out.display());
            Ok(())
        }
        PluginCommand::Keygen { out } => {
            if out.exists() {
                return Err(format!("{} exists; not overwriting a key", out.display()));
            }
            let (secret, public) = nexus_wasm::package::keygen();
            write_private(&out, &secret)?;
            println!("{public}");
            Ok(())
        }
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(text.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn new(name: &str, dir: Option<PathBuf>, sdk: Option<PathBuf>) -> Result<(), String> {
    if !nexus_wasm::manifest::valid_id(name) {
        return Err(format!("`{name}` is not a plugin id: 2-64 lowercase letters, digits, `_` or `-`"));
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.join("Cargo.toml").exists() {
        return Err(format!("{} already has a Cargo.toml", dir.display()));
    }
    let sdk = sdk.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/nexus-plugin-sdk"));
    let sdk = std::fs::canonicalize(&sdk).map_err(|e| format!("the SDK at {} cannot be found: {e}", sdk.display()))?;
    std::fs::create_dir_all(dir.join("src")).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let files = [
        (
            "Cargo.toml",
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
                 [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nnexus-plugin-sdk = {{ path = {sdk:?} }}\n\n\
                 # A workspace of its own, wherever it is created.\n[workspace]\n\n\
                 [profile.release]\nopt-level = \"s\"\nlto = true\nstrip = true\n",
                sdk = sdk.display().to_string()
            ),
        ),
        (
            "manifest.toml",
            format!(
                "id = \"{name}\"\nname = \"{name}\"\nversion = \"0.1.0\"\ncategory = \"integration\"\n\
                 description = \"A Nexus WebAssembly plugin\"\nauthor = \"\"\nlicense = \"Apache-2.0\"\n\
                 wit = \"0.1.0\"\ncapabilities = [\"log\"]\n\n[[routes]]\nmethod = \"GET\"\npath = \"/hello\"\n\
                 description = \"A greeting\"\npublic = true\n"
            ),
        ),
        (
            "src/lib.rs",
            format!(
                "//! The `{name}` plugin.\n\nuse nexus_plugin_sdk::{{Event, Guest, Request, Response, json}};\n\n\
                 struct Plugin;\n\nimpl Guest for Plugin {{\n    fn init(_config: String) -> Result<(), String> {{\n        Ok(())\n    }}\n\n\
                 \x20   fn handle_request(req: Request) -> Response {{\n        match (req.method.as_str(), req.segments_after(\"/api/plugins/{name}\").as_slice()) {{\n\
                 \x20           (\"GET\", [\"hello\"]) => Response::json(200, &json!({{\"message\": \"hello from {name}\"}})),\n\
                 \x20           _ => Response::error(404, \"NOT_FOUND\", \"no such route\"),\n        }}\n    }}\n\n\
                 \x20   fn handle_event(_event: Event) -> Result<(), String> {{\n        Ok(())\n    }}\n\n\
                 \x20   fn handle_rpc(method: String, _params: String) -> Result<String, String> {{\n        Err(format!(\"no RPC method `{{method}}`\"))\n    }}\n}}\n\n\
                 nexus_plugin_sdk::export!(Plugin);\n"
            ),
        ),
    ];
    for (file, text) in files {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    println!("{}", dir.display());
    Ok(())
}

/// Builds `dir` and writes `{target}/{id}-{version}.nxp`.
fn build(dir: &Path, target: Option<PathBuf>) -> Result<PathBuf, String> {
    let manifest_text = std::fs::read_to_string(dir.join("manifest.toml"))
        .map_err(|e| format!("cannot read {}: {e}", dir.join("manifest.toml").display()))?;
    let manifest = nexus_wasm::manifest::PackageManifest::parse(&manifest_text)?;
    let cargo_toml = std::fs::read_to_string(dir.join("Cargo.toml"))
        .map_err(|e| format!("cannot read {}: {e}", dir.join("Cargo.toml").display()))?;
    let crate_name = cargo_toml
        .parse::<toml::Table>()
        .ok()
        .and_then(|t| t.get("package")?.get("name")?.as_str().map(str::to_string))
        .ok_or_else(|| String::from("Cargo.toml has no package name"))?;
    let target = target.unwrap_or_else(|| dir.join("target"));
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| String::from("cargo")))
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(String::from(
            "the build failed (is the wasm32-wasip2 target installed? rustup target add wasm32-wasip2)",
        ));
    }
    let wasm_path = target.join("wasm32-wasip2/release").join(format!("{}.wasm", crate_name.replace('-', "_")));
    let wasm = std::fs::read(&wasm_path).map_err(|e| format!("cannot read {}: {e}", wasm_path.display()))?;
    let package = nexus_wasm::package::build(&manifest_text, &wasm)?;
    let out = target.join(format!("{}-{}.{}", manifest.id, manifest.version, nexus_wasm::package::EXTENSION));
    std::fs::write(&out, package).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(out)
}
