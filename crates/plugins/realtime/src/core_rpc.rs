//! The core RPC methods: `system.status`, `users.get`, `users.list`, `rpc.methods`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use nexus_identity::Identity;
use nexus_identity::service::User;
use nexus_identity::service::UserFilter;
use nexus_kernel::rpc::{RpcCall, RpcError, handler};
use serde_json::{Value, json};

use crate::Realtime;

pub fn register(rt: &Arc<Realtime>) {
    let registry = &rt.kernel.rpc;
    // Handlers hold weak references: the registry lives in the kernel, which the services
    // themselves hold.
    let weak: Weak<Realtime> = Arc::downgrade(rt);
    let results = [
        registry.register(
            "system.status",
            Some("read:system"),
            "Health of this instance: database, uptime, connections",
            handler(move |_call| {
                let rt = weak.upgrade();
                async move {
                    let rt = rt.ok_or_else(|| RpcError::internal("realtime service stopped"))?;
                    let database = rt.kernel.db.ping(Duration::from_secs(2)).await.is_ok();
                    Ok(json!({
                        "status": if database { "healthy" } else { "degraded" },
                        "version": nexus_kernel::VERSION,
                        "uptime_seconds": rt.kernel.uptime().as_secs(),
                        "database": if database { "connected" } else { "disconnected" },
                        "websocket_connections": rt.connections(),
                        "instance_id": rt.kernel.events.instance_id(),
                    }))
                }
            }),
        ),
        {
            let identity = Arc::downgrade(&rt.identity);
            registry.register(
                "users.get",
                None,
                "One user by `id` (your own, or any with `user.read`)",
                handler(move |call: RpcCall| {
                    let identity = identity.upgrade();
                    async move {
                        let identity = identity.ok_or_else(|| RpcError::internal("identity service stopped"))?;
                        users_get(&identity, call).await
                    }
                }),
            )
        },
        {
            let identity = Arc::downgrade(&rt.identity);
            registry.register(
                "users.list",
                Some("user.read"),
                "Users, filtered by `role`, `status`, `search`; paged by `limit` and `offset`",
                handler(move |call: RpcCall| {
                    let identity = identity.upgrade();
                    async move {
                        let identity = identity.ok_or_else(|| RpcError::internal("identity service stopped"))?;
                        users_list(&identity, call).await
                    }
                }),
            )
        },
        {
            let weak: Weak<Realtime> = Arc::downgrade(rt);
            registry.register(
                "rpc.methods",
                None,
                "The RPC methods this caller may call",
                handler(move |call: RpcCall| {
                    let rt = weak.upgrade();
                    async move {
                        let rt = rt.ok_or_else(|| RpcError::internal("realtime service stopped"))?;
                        let methods: Vec<Value> = rt
                            .kernel
                            .rpc
                            .list()
                            .into_iter()
                            .filter(|m| m.permission.as_deref().is_none_or(|p| call.has(p)))
                            .map(
                                |m| json!({ "name": m.name, "description": m.description, "permission": m.permission }),
                            )
                            .collect();
                        Ok(json!({ "methods": methods }))
                    }
                }),
            )
        },
    ];
    for result in results {
        if let Err(e) = result {
            tracing::error!(error = %e, "could not register a core RPC method");
        }
    }
}

/// A user as the framework surface shows one: identity's own rendering.
fn user_json(u: User) -> Value {
    serde_json::to_value(nexus_identity::UserView::new(u, None)).unwrap_or(Value::Null)
}

async fn users_get(identity: &Identity, call: RpcCall) -> Result<Value, RpcError> {
    let id = call
        .params
        .get("id")
        .or_else(|| call.params.get("user_id"))
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_message("`params.id` is required"))?;
    let user = identity.get_user_for(&call.caller, id).await?;
    Ok(user_json(user))
}

async fn users_list(identity: &Identity, call: RpcCall) -> Result<Value, RpcError> {
    let p = &call.params;
    let text = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_string);
    let int = |k: &str, default: i64| -> Result<i64, RpcError> {
        match p.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_i64().ok_or_else(|| RpcError::invalid_message(format!("`params.{k}` must be an integer"))),
        }
    };
    let limit = int("limit", 20)?;
    let offset = int("offset", 0)?;
    if !(1..=100).contains(&limit) || offset < 0 {
        return Err(RpcError::invalid_message("`limit` must be 1-100 and `offset` at least 0"));
    }
    let filter = UserFilter { role: text("role"), status: text("status"), search: text("search"), limit, offset };
    let (users, total) = identity.list_users_for(&call.caller, &filter).await?;
    Ok(json!({
        "users": users.into_iter().map(user_json).collect::<Vec<_>>(),
        "total": total,
        "limit": limit,
        "offset": offset,
    }))
}
