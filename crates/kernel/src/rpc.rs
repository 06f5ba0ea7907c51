//! The RPC registry: methods callable over the WebSocket (`{type: "rpc", method, params}`).
//! Core methods (`system.status`, `users.get`, …) are registered by the plugins that own the
//! data; third-party plugins register theirs as `plugin.<id>.<method>`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::error::Failure;
use crate::principal::Principal;

/// A call: who makes it and with what. The registry has already checked the method's
/// permission before the handler runs; the domain operation it calls checks its own rules
/// against the same [`Principal`] every other surface hands it.
#[derive(Debug, Clone)]
pub struct RpcCall {
    pub caller: Principal,
    pub params: Value,
}

impl RpcCall {
    pub fn has(&self, permission: &str) -> bool {
        self.caller.has(permission)
    }
}

/// A method's failure, sent back as `{type: "rpc_response", id, error: {code, message}}`: the
/// same vocabulary HTTP answers in.
pub type RpcError = Failure;

pub type RpcFuture = Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send>>;
pub type RpcHandler = Arc<dyn Fn(RpcCall) -> RpcFuture + Send + Sync>;

/// One registered method.
#[derive(Clone)]
pub struct RpcMethod {
    pub name: String,
    /// Required to call it; `None`: any authenticated caller.
    pub permission: Option<String>,
    pub description: String,
    pub handler: RpcHandler,
}

impl std::fmt::Debug for RpcMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcMethod").field("name", &self.name).field("permission", &self.permission).finish()
    }
}

#[derive(Debug, Default)]
pub struct RpcRegistry {
    methods: RwLock<BTreeMap<String, Arc<RpcMethod>>>,
}

/// Wraps an async function as a handler.
pub fn handler<F, Fut>(f: F) -> RpcHandler
where
    F: Fn(RpcCall) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, RpcError>> + Send + 'static,
{
    Arc::new(move |call| Box::pin(f(call)))
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s.len() <= 100 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl RpcRegistry {
    /// Registers (or replaces) method `name`.
    pub fn register(
        &self,
        name: &str,
        permission: Option<&str>,
        description: &str,
        handler: RpcHandler,
    ) -> Result<(), RpcError> {
        if !name.split('.').all(valid_segment) {
            return Err(Failure::invalid_message(format!("`{name}` is not a valid method name")));
        }
        let method = RpcMethod {
            name: name.to_string(),
            permission: permission.map(str::to_string),
            description: description.to_string(),
            handler,
        };
        let mut methods = self.methods.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        methods.insert(name.to_string(), Arc::new(method));
        Ok(())
    }

    /// Registers `plugin.<plugin_id>.<method>`.
    pub fn register_plugin(
        &self,
        plugin_id: &str,
        method: &str,
        permission: Option<&str>,
        description: &str,
        handler: RpcHandler,
    ) -> Result<(), RpcError> {
        if !valid_segment(plugin_id) || !valid_segment(method) {
            return Err(Failure::invalid_message("plugin id and method must be letters, digits, `_` or `-`"));
        }
        self.register(&format!("plugin.{plugin_id}.{method}"), permission, description, handler)
    }

    /// Removes every method of plugin `plugin_id` (when it is disabled or uninstalled).
    pub fn unregister_plugin(&self, plugin_id: &str) {
        let prefix = format!("plugin.{plugin_id}.");
        let mut methods = self.methods.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        methods.retain(|name, _| !name.starts_with(&prefix));
    }

    pub fn get(&self, name: &str) -> Option<Arc<RpcMethod>> {
        self.methods.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned()
    }

    /// Every registered method, by name.
    pub fn list(&self) -> Vec<Arc<RpcMethod>> {
        self.methods.read().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plugin_methods_are_namespaced_and_callable() {
        let reg = RpcRegistry::default();
        let h = handler(|call: RpcCall| async move { Ok(call.params) });
        assert!(reg.register_plugin("analytics", "getStats", None, "stats", h).is_ok());
        let m = reg.get("plugin.analytics.getStats");
        assert!(m.is_some());
        let call = RpcCall { caller: Principal::system(), params: serde_json::json!({"a": 1}) };
        if let Some(m) = m {
            assert_eq!((m.handler)(call).await, Ok(serde_json::json!({"a": 1})));
        }
        reg.unregister_plugin("analytics");
        assert!(reg.get("plugin.analytics.getStats").is_none());
        assert!(reg.register("bad name", None, "", handler(|_| async { Ok(Value::Null) })).is_err());
    }
}
