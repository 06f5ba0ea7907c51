//! The RPC registry: methods callable over the WebSocket (`{type: "rpc", method, params}`).
//! Core methods (`system.status`, `users.get`, …) are registered by the plugins that own the
//! data; third-party plugins register theirs as `plugin.<id>.<method>`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use serde_json::Value;

/// Who is calling, as far as a method needs to know. The registry has already checked the
/// method's permission before the handler runs.
#[derive(Debug, Clone)]
pub struct RpcCall {
    pub user_id: String,
    pub username: String,
    pub roles: Vec<String>,
    /// Every permission the caller holds (expanded).
    pub permissions: Vec<String>,
    pub params: Value,
}

impl RpcCall {
    pub fn has(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == permission || p == "*")
    }
}

/// A method's failure, sent back as `{type: "rpc_response", id, error: {code, message}}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RpcError {
    /// One of the framework's error codes (`VALIDATION_ERROR`, `RESOURCE_NOT_FOUND`, …).
    pub code: &'static str,
    /// Safe to show to the caller.
    pub message: String,
}

impl RpcError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("VALIDATION_ERROR", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("RESOURCE_NOT_FOUND", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new("PERMISSION_DENIED", message)
    }
    /// An internal failure: the cause is logged, the caller sees a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "rpc method failed");
        Self::new("INTERNAL_ERROR", "An internal error occurred")
    }
}

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
            return Err(RpcError::invalid(format!("`{name}` is not a valid method name")));
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
            return Err(RpcError::invalid("plugin id and method must be letters, digits, `_` or `-`"));
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
        let call = RpcCall {
            user_id: "u".into(),
            username: "u".into(),
            roles: vec![],
            permissions: vec![],
            params: serde_json::json!({"a": 1}),
        };
        if let Some(m) = m {
            assert_eq!((m.handler)(call).await, Ok(serde_json::json!({"a": 1})));
        }
        reg.unregister_plugin("analytics");
        assert!(reg.get("plugin.analytics.getStats").is_none());
        assert!(reg.register("bad name", None, "", handler(|_| async { Ok(Value::Null) })).is_err());
    }
}
