//! The guest side of Nexus WebAssembly plugins: the bindings of the `nexus:plugin` WIT package
//! (`wit/nexus-plugin`) and helpers for requests, responses, JSON and the host's imports.
//!
//! A plugin implements [`Guest`] and exports it with [`export!`]:
//!
//! ```ignore
//! struct Hello;
//! impl nexus_plugin_sdk::Guest for Hello {
//!     fn init(_config: String) -> Result<(), String> { Ok(()) }
//!     fn handle_request(req: Request) -> Response { Response::json(200, &json!({"path": req.path})) }
//!     fn handle_event(_e: Event) -> Result<(), String> { Ok(()) }
//!     fn handle_rpc(m: String, _p: String) -> Result<String, String> { Err(format!("no method {m}")) }
//! }
//! nexus_plugin_sdk::export!(Hello);
//! ```

/// The generated bindings. In a module of their own: at the crate root, the exported macros
/// would clash with their own re-exports.
pub mod bindings {
    wit_bindgen::generate!({
        world: "guest",
        path: "../../wit/nexus-plugin",
        pub_export_macro: true,
        default_bindings_module: "nexus_plugin_sdk::bindings",
    });
}

pub use bindings::nexus::plugin::host;
pub use bindings::nexus::plugin::types::{Caller, Level};
pub use bindings::{Event, Guest, Request, Response, export};
pub use serde_json::{self, Value, json};

impl Request {
    /// The body as JSON; an error message fit for a 400 otherwise.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("invalid JSON body: {e}"))
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The first query parameter named `name`, undecoded.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.split('&').filter_map(|pair| pair.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// The path below `/api/plugins/{id}`, as segments, whatever id the plugin was
    /// installed under; the whole path for a path of its own (`/api/...`).
    pub fn plugin_segments(&self) -> Vec<&str> {
        let all: Vec<&str> = self.path.split('/').filter(|s| !s.is_empty()).collect();
        match all.as_slice() {
            ["api", "plugins", _id, rest @ ..] => rest.to_vec(),
            _ => all,
        }
    }

    /// The path below `prefix` (`/api/plugins/{id}`), as segments.
    pub fn segments_after<'a>(&'a self, prefix: &str) -> Vec<&'a str> {
        self.path.strip_prefix(prefix).unwrap_or(&self.path).split('/').filter(|s| !s.is_empty()).collect()
    }
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            headers: vec![(String::from("content-type"), String::from("application/json"))],
            body: body.to_string().into_bytes(),
        }
    }

    /// An error in the shape the host passes on: `{"error": {"code", "message"}}`.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Self::json(status, &json!({"error": {"code": code, "message": message}}))
    }
}

/// Logging through the host (capability `log`, always granted).
pub mod log {
    use super::{Level, host};

    pub fn debug(message: &str) {
        host::log(Level::Debug, message);
    }
    pub fn info(message: &str) {
        host::log(Level::Info, message);
    }
    pub fn warn(message: &str) {
        host::log(Level::Warn, message);
    }
    pub fn error(message: &str) {
        host::log(Level::Error, message);
    }
}

/// The plugin's configuration (capability `config`).
pub mod config {
    use super::{Value, host};

    /// The value at dotted `key` (`""`: all of it), `None` when absent.
    pub fn get(key: &str) -> Result<Option<Value>, String> {
        match host::config_get(key)? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| e.to_string()),
        }
    }
}

/// The plugin's private key-value store (capability `kv`).
pub mod kv {
    use super::host;

    pub fn get(key: &str) -> Result<Option<Vec<u8>>, String> {
        host::kv_get(key)
    }
    pub fn get_string(key: &str) -> Result<Option<String>, String> {
        Ok(host::kv_get(key)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }
    pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
        host::kv_set(key, value)
    }
    pub fn delete(key: &str) -> Result<bool, String> {
        host::kv_delete(key)
    }
    pub fn increment(key: &str, delta: i64) -> Result<i64, String> {
        host::kv_increment(key, delta)
    }
    pub fn keys(prefix: &str, limit: u32) -> Result<Vec<String>, String> {
        host::kv_keys(prefix, limit)
    }
}

/// The document collections the manifest names (capability `collections`).
pub mod docs {
    use super::{Value, host};

    /// Inserts `document`; its `_id`.
    pub fn insert(collection: &str, document: &Value) -> Result<String, String> {
        host::doc_insert(collection, &document.to_string())
    }

    pub fn get(collection: &str, id: &str) -> Result<Option<Value>, String> {
        match host::doc_get(collection, id)? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| e.to_string()),
        }
    }

    /// Documents matching `filter` (MongoDB-style), at most `limit`.
    pub fn find(collection: &str, filter: &Value, limit: u32) -> Result<Vec<Value>, String> {
        let text = host::doc_find(collection, &filter.to_string(), limit)?;
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }
}

/// Publishing events under the plugin's id (capability `events.publish`).
pub fn publish(kind: &str, data: &Value) -> Result<(), String> {
    host::publish(kind, &data.to_string())
}

/// The caller of the current request or RPC call (capability `identity`).
pub fn caller() -> Result<Option<Caller>, String> {
    host::current_caller()
}
