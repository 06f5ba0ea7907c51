//! The layering rule of `../shared/DESIGN.md`: a plugin's domain modules (service, store,
//! errors, engines) know nothing of HTTP; only its surface modules import `axum` or
//! `nexus_web`. A new plugin's surface modules are `lib.rs` (its plugin value), `routes.rs`
//! and `routes/`.

use std::path::{Path, PathBuf};

/// Modules that are surfaces although not named `routes`: the WebSocket endpoint's
/// connection and fan-out, the health and metrics handlers, the `Auth` extractor.
const OTHER_SURFACES: &[&str] = &[
    "realtime/src/connection.rs",
    "realtime/src/hub.rs",
    "system/src/health.rs",
    "system/src/metrics.rs",
    "identity/src/principal.rs",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_surface(relative: &str) -> bool {
    let file = relative.rsplit('/').next().unwrap_or_default();
    file == "lib.rs" || file == "routes.rs" || relative.contains("/routes/") || OTHER_SURFACES.contains(&relative)
}

#[test]
fn domain_modules_do_not_import_http() {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let mut files = Vec::new();
    rust_files(&plugins, &mut files);
    assert!(files.len() > 20, "found only {} files under {}", files.len(), plugins.display());
    let mut offenders = Vec::new();
    for path in files {
        let relative = path.strip_prefix(&plugins).unwrap_or(&path).to_string_lossy().replace('\\', "/");
        if is_surface(&relative) || relative.contains("/tests/") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        // Unit tests inside a domain module may build HTTP values; the module itself may not.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        if code.contains("axum::") || code.contains("nexus_web::") || code.contains("use axum") {
            offenders.push(relative);
        }
    }
    assert!(offenders.is_empty(), "domain modules importing HTTP types: {offenders:?}");
}
