//! What a plugin's calls may reach: its grants, its configuration, its key-value store, its
//! event source and the caller. The host functions of `nexus:plugin` check the grant first;
//! a refused call returns an error to the plugin and is counted.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nexus_kernel::Kernel;
use nexus_kernel::plugin::Slot;
use serde_json::Value;

use crate::manifest::Limits;
use crate::runtime::HostState;
use crate::runtime::bindings::nexus::plugin::{host, types};
use crate::store::WasmStore;

/// The largest key and value of the key-value store.
const MAX_KEY: usize = 512;
const MAX_VALUE: usize = 1024 * 1024;
const MAX_LOG: usize = 4096;

/// One installed version of a plugin, as its calls see it.
#[derive(Debug)]
pub struct PluginEnv {
    pub id: String,
    pub grants: BTreeSet<String>,
    pub limits: Limits,
    /// The manifest's configuration, under the changes made through the API.
    pub defaults: Value,
    pub slot: Arc<Slot>,
    pub kernel: Arc<Kernel>,
    pub store: WasmStore,
    /// Calls to imports that were not granted.
    pub denied: AtomicU64,
    /// The document database, when it runs, and the plugin as its caller there: allowed the
    /// collections its manifest names, nothing else.
    pub documents: Option<Arc<nexus_documents::Documents>>,
    pub collections: BTreeSet<String>,
    pub principal: nexus_kernel::principal::Principal,
}

/// The plugin as a caller of the document database: read and write on `collections`.
pub fn plugin_principal(id: &str, collections: &BTreeSet<String>) -> nexus_kernel::principal::Principal {
    let permissions = collections
        .iter()
        .flat_map(|c| [format!("documents.read:{c}"), format!("documents.write:{c}")])
        .collect::<BTreeSet<String>>();
    nexus_kernel::principal::Principal {
        user_id: format!("plugin:{id}"),
        username: format!("plugin:{id}"),
        roles: Vec::new(),
        permissions: nexus_kernel::principal::Permissions::from_set(permissions),
        credential: nexus_kernel::principal::Credential::ApiKey { key_id: format!("plugin:{id}"), premium: false },
    }
}

impl PluginEnv {
    fn require(&self, capability: &str) -> Result<(), String> {
        if self.grants.contains(capability) {
            return Ok(());
        }
        self.denied.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(plugin = %self.id, capability, "plugin called an import it was not granted");
        Err(format!("capability `{capability}` not granted to plugin `{}`", self.id))
    }

    /// The configuration in effect: the manifest's, with the API's changes merged over it.
    pub fn config(&self) -> Value {
        let mut config = self.defaults.clone();
        let changed = self.slot.patch();
        if changed.is_object() {
            nexus_kernel::config::merge_patch(&mut config, &changed);
        }
        config
    }

    /// The document database, for `collection` if the manifest names it.
    fn documents(&self, collection: &str) -> Result<&nexus_documents::Documents, String> {
        self.require("collections")?;
        if !self.collections.contains(collection) {
            self.denied.fetch_add(1, Ordering::Relaxed);
            return Err(format!("collection `{collection}` is not among those plugin `{}` declares", self.id));
        }
        self.documents.as_deref().ok_or_else(|| String::from("the document database is not running"))
    }

    async fn wait_doc<T>(
        &self,
        future: impl Future<Output = Result<T, nexus_documents::DocError>>,
    ) -> Result<Option<T>, String> {
        match future.await {
            Ok(v) => Ok(Some(v)),
            Err(nexus_documents::DocError::NotFound(_)) => Ok(None),
            Err(nexus_documents::DocError::Storage(e)) => {
                tracing::error!(plugin = %self.id, error = %e, "plugin document storage failed");
                Err(String::from("storage failed; see the server log"))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn wait<T>(
        &self,
        future: impl Future<Output = Result<T, nexus_kernel::db::StorageError>>,
    ) -> Result<T, String> {
        future.await.map_err(|e| {
            tracing::error!(plugin = %self.id, error = %e, "plugin storage failed");
            String::from("storage failed; see the server log")
        })
    }
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(format!("keys are 1-{MAX_KEY} bytes"));
    }
    Ok(())
}

impl types::Host for HostState {}

impl host::Host for HostState {
    async fn log(&mut self, level: types::Level, message: String) {
        let env = &self.env;
        let mut message = message;
        if message.len() > MAX_LOG {
            let mut end = MAX_LOG;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        match level {
            types::Level::Debug => tracing::debug!(plugin = %env.id, "{message}"),
            types::Level::Info => tracing::info!(plugin = %env.id, "{message}"),
            types::Level::Warn => tracing::warn!(plugin = %env.id, "{message}"),
            types::Level::Error => tracing::error!(plugin = %env.id, "{message}"),
        }
    }

    async fn config_get(&mut self, key: String) -> Result<Option<String>, String> {
        self.env.require("config")?;
        let config = self.env.config();
        let mut value = &config;
        for part in key.split('.').filter(|p| !p.is_empty()) {
            match value.get(part) {
                Some(v) => value = v,
                None => return Ok(None),
            }
        }
        Ok(Some(value.to_string()))
    }

    async fn kv_get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        self.env.require("kv")?;
        check_key(&key)?;
        self.env.wait(self.env.store.kv_get(&self.env.id, &key)).await
    }

    async fn kv_set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.env.require("kv")?;
        check_key(&key)?;
        if value.len() > MAX_VALUE {
            return Err(format!("values are at most {MAX_VALUE} bytes"));
        }
        self.env.wait(self.env.store.kv_set(&self.env.id, &key, &value)).await
    }

    async fn kv_delete(&mut self, key: String) -> Result<bool, String> {
        self.env.require("kv")?;
        check_key(&key)?;
        self.env.wait(self.env.store.kv_delete(&self.env.id, &key)).await
    }

    async fn kv_increment(&mut self, key: String, delta: i64) -> Result<i64, String> {
        self.env.require("kv")?;
        check_key(&key)?;
        self.env.wait(self.env.store.kv_increment(&self.env.id, &key, delta)).await
    }

    async fn kv_keys(&mut self, prefix: String, limit: u32) -> Result<Vec<String>, String> {
        self.env.require("kv")?;
        self.env.wait(self.env.store.kv_keys(&self.env.id, &prefix, limit.min(10_000))).await
    }

    async fn publish(&mut self, kind: String, data: String) -> Result<(), String> {
        self.env.require("events.publish")?;
        let valid = !kind.is_empty()
            && kind.len() <= 100
            && kind.split('.').all(|s| {
                !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
            });
        if !valid {
            return Err(format!("`{kind}` is not a valid event type (dotted lowercase words)"));
        }
        let data: Value = serde_json::from_str(&data).map_err(|e| format!("event data is not JSON: {e}"))?;
        if !self.env.slot.is_enabled() {
            return Err(format!("plugin `{}` is disabled", self.env.id));
        }
        let event = self.env.kernel.events.envelope(&self.env.id, &kind, data);
        self.env.wait(self.env.store.publish(&event)).await
    }

    async fn doc_insert(&mut self, collection: String, document: String) -> Result<String, String> {
        let docs = self.env.documents(&collection)?;
        let doc: Value = serde_json::from_str(&document).map_err(|e| format!("the document is not JSON: {e}"))?;
        let ids =
            self.env.wait_doc(docs.insert(&self.env.principal, &collection, vec![doc])).await?.unwrap_or_default();
        ids.into_iter().next().ok_or_else(|| String::from("nothing was inserted"))
    }

    async fn doc_get(&mut self, collection: String, id: String) -> Result<Option<String>, String> {
        let docs = self.env.documents(&collection)?;
        Ok(self.env.wait_doc(docs.get(&self.env.principal, &collection, &id)).await?.map(|d| d.to_string()))
    }

    async fn doc_find(&mut self, collection: String, filter: String, limit: u32) -> Result<String, String> {
        let docs = self.env.documents(&collection)?;
        let filter: Value = serde_json::from_str(&filter).map_err(|e| format!("the filter is not JSON: {e}"))?;
        let filter = nexus_documents::engine::filter::Filter::parse(&filter, "filter").map_err(|e| e.to_string())?;
        let find = nexus_documents::service::Find {
            filter: Some(filter),
            limit: Some(u64::from(limit.min(1000))),
            ..nexus_documents::service::Find::default()
        };
        let found = self.env.wait_doc(docs.find(&self.env.principal, &collection, &find)).await?;
        Ok(Value::Array(found.map(|(d, _)| d).unwrap_or_default()).to_string())
    }

    async fn current_caller(&mut self) -> Result<Option<types::Caller>, String> {
        self.env.require("identity")?;
        Ok(self.caller.as_ref().map(|p| types::Caller {
            user_id: p.user_id.clone(),
            username: p.username.clone(),
            roles: p.roles.clone(),
            permissions: p.permissions.list(),
        }))
    }
}
