//! `GET /api/v1/security/status` (failed logins from the audit log, throttled requests from
//! the metrics, sessions and API keys from identity) and `POST /api/v1/security/scan` (a task
//! whose findings each carry a severity, a component and a remediation).

use std::collections::BTreeMap;
use std::sync::Arc;

use nexus_kernel::audit::AuditQuery;
use nexus_kernel::clock::Timestamp;
use nexus_kernel::plugin::Status;
use nexus_kernel::principal::Principal;
use nexus_kernel::tasks::{NewTask, StepStatus, TaskError, TaskHandle, TaskStatus};
use serde_json::{Value, json};

use crate::OpsError;
use crate::service::{ADMIN_SECURITY, Ops};

pub const COMPONENTS: &[&str] = &["configuration", "permissions", "plugins"];
const SEVERITIES: &[&str] = &["info", "low", "medium", "high", "critical"];
const DAY_SECS: i64 = 24 * 3600;
/// Failed logins read at most per status (the newest).
const MAX_FAILURES: i64 = 10_000;

fn count(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn severity(finding: &Value) -> &str {
    finding.get("severity").and_then(Value::as_str).unwrap_or("info")
}

fn rank(severity: &str) -> usize {
    SEVERITIES.iter().position(|s| *s == severity).unwrap_or(0)
}

/// `GET /api/v1/security/status`.
pub async fn status(ops: &Arc<Ops>, caller: &Principal) -> Result<Value, OpsError> {
    caller.require(ADMIN_SECURITY)?;
    let now = ops.kernel.clock.now();
    let since = now.add_seconds(-DAY_SECS);
    let q = AuditQuery {
        action: Some(String::from("auth.login")),
        start: Some(since),
        limit: Some(MAX_FAILURES),
        ..AuditQuery::default()
    };
    let (entries, _) = nexus_kernel::audit::query(&ops.kernel.db, &q).await?;
    let failures: Vec<_> = entries.iter().filter(|e| !e.success).collect();
    let mut by_user: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_ip: BTreeMap<String, (u64, Vec<String>, i64)> = BTreeMap::new();
    let mut locked_now = 0u64;
    for f in &failures {
        *by_user.entry(f.actor.clone()).or_default() += 1;
        let ip = if f.ip_address.is_empty() { String::from("unknown") } else { f.ip_address.clone() };
        let entry = by_ip.entry(ip).or_default();
        entry.0 += 1;
        if !entry.1.contains(&f.actor) && entry.1.len() < 20 {
            entry.1.push(f.actor.clone());
        }
        entry.2 = entry.2.max(f.timestamp);
        if f.metadata.contains("account locked") {
            locked_now += 1;
        }
    }
    let threshold = u64::from(ops.kernel.config.auth.lockout_threshold.max(1));
    let mut alerts = Vec::new();
    for (ip, (attempts, users, last)) in &by_ip {
        if *attempts >= threshold {
            alerts.push(json!({
                "id": format!("alert_failed_logins_ip_{ip}"),
                "severity": if *attempts >= threshold * 4 { "high" } else { "medium" },
                "type": "suspicious_activity",
                "message": "Multiple failed login attempts detected",
                "timestamp": Timestamp::from_micros(*last).to_rfc3339(),
                "details": { "ip_address": ip, "attempts": attempts, "users": users },
            }));
        }
    }
    let overview = nexus_identity::overview::read(&ops.kernel.db, now).await?;
    if overview.locked_accounts > 0 {
        alerts.push(json!({
            "id": "alert_locked_accounts",
            "severity": "medium",
            "type": "account_lockout",
            "message": format!("{} account(s) locked after repeated failed logins", overview.locked_accounts),
            "timestamp": now.to_rfc3339(),
            "details": { "locked_accounts": overview.locked_accounts },
        }));
    }
    let throttled: u64 = ops.kernel.metrics.series.total().by_status.get(&429).copied().unwrap_or(0);
    let last_scan = ops.kernel.tasks.list(None, Some("security_scan"), 1).await?.into_iter().next();
    let scan_high = last_scan
        .as_ref()
        .and_then(|t| t.result.as_ref())
        .and_then(|r| r.get("summary"))
        .map(|s| count(s, "high") + count(s, "critical"))
        .unwrap_or(0);
    let status = if alerts.iter().any(|a| crate::service::is(a, "severity", "high")) || scan_high > 0 {
        "at_risk"
    } else if alerts.is_empty() {
        "secure"
    } else {
        "warning"
    };
    Ok(json!({
        "status": status,
        "last_scan": last_scan.as_ref().and_then(|t| t.finished_at.or(t.started_at)).map(Timestamp::to_rfc3339),
        "last_scan_id": last_scan.as_ref().map(|t| t.id.clone()),
        "alerts": alerts,
        "metrics": {
            "failed_logins_24h": failures.len(),
            "failed_logins_by_user": by_user,
            "failed_logins_by_ip": by_ip.iter().map(|(ip, (n, _, _))| (ip.clone(), *n)).collect::<BTreeMap<_, _>>(),
            "lockouts_24h": locked_now,
            "locked_accounts": overview.locked_accounts,
            "throttled_requests_24h": throttled,
            "blocked_ips": null,
            "active_sessions": overview.active_sessions,
            "api_key_usage": null,
            "api_keys_active": overview.api_keys_active,
            "api_keys_used_24h": overview.api_keys_used_24h,
        }
    }))
}

/// `POST /api/v1/security/scan`: starts the scan task.
pub async fn scan(
    ops: &Arc<Ops>,
    caller: &Principal,
    kind: Option<String>,
    components: Option<Vec<String>>,
    threshold: Option<String>,
) -> Result<Value, OpsError> {
    caller.require(ADMIN_SECURITY)?;
    let kind = kind.unwrap_or_else(|| String::from("full"));
    if !matches!(kind.as_str(), "full" | "quick") {
        return Err(OpsError::field("type", "must be full or quick"));
    }
    let components = components.unwrap_or_else(|| COMPONENTS.iter().map(|c| (*c).to_string()).collect());
    if components.is_empty() {
        return Err(OpsError::field("components", format!("must name at least one of {}", COMPONENTS.join(", "))));
    }
    for c in &components {
        if !COMPONENTS.contains(&c.as_str()) {
            return Err(OpsError::field("components", format!("`{c}` is not one of {}", COMPONENTS.join(", "))));
        }
    }
    let threshold = threshold.unwrap_or_else(|| String::from("low"));
    if !SEVERITIES.contains(&threshold.as_str()) {
        return Err(OpsError::field("severity_threshold", format!("must be one of {}", SEVERITIES.join(", "))));
    }
    // Estimated from how long the last completed scan took, when there is one.
    let previous = ops.kernel.tasks.list(Some(TaskStatus::Completed), Some("security_scan"), 1).await?;
    let estimated = previous
        .first()
        .and_then(|t| Some((t.finished_at?.as_micros() - t.started_at?.as_micros()).max(0) as f64 / 1000.0));
    let step_refs: Vec<&str> = components.iter().map(String::as_str).collect();
    let worker = ops.clone();
    let (cs, th) = (components.clone(), threshold.clone());
    let task = ops
        .kernel
        .tasks
        .spawn(
            NewTask::new("security_scan", caller.user_id.clone())
                .details(json!({ "type": kind, "components": components, "severity_threshold": threshold }))
                .steps(&step_refs),
            move |handle| async move { work(worker, handle, cs, th).await },
        )
        .await?;
    Ok(json!({
        "scan_id": task.id,
        "task_id": task.id,
        "status": "started",
        "estimated_duration_ms": estimated,
        "components_to_scan": step_refs,
    }))
}

fn finding(severity: &str, component: &str, id: &str, message: String, remediation: &str) -> Value {
    json!({ "id": id, "severity": severity, "component": component, "message": message, "remediation": remediation })
}

async fn work(ops: Arc<Ops>, task: TaskHandle, components: Vec<String>, threshold: String) -> Result<Value, TaskError> {
    let mut findings = Vec::new();
    let total = components.len().max(1);
    for (i, component) in components.iter().enumerate() {
        task.checkpoint()?;
        task.step(component, StepStatus::Running, None).await?;
        let found = match component.as_str() {
            "configuration" => configuration(&ops),
            "permissions" => permissions(&ops).await.map_err(|e| TaskError::Failed(e.to_string()))?,
            _ => plugins(&ops),
        };
        task.log("INFO", &format!("{component}: {} finding(s)", found.len())).await?;
        findings.extend(found);
        task.step(component, StepStatus::Completed, None).await?;
        task.progress((i + 1) as f64 / total as f64).await?;
    }
    let min = rank(&threshold);
    findings.retain(|f| rank(severity(f)) >= min);
    findings.sort_by_key(|f| std::cmp::Reverse(rank(severity(f))));
    let mut summary: BTreeMap<&str, u64> = SEVERITIES.iter().map(|s| (*s, 0)).collect();
    for f in &findings {
        if let Some(n) = summary.get_mut(severity(f)) {
            *n += 1;
        }
    }
    Ok(json!({
        "scanned_components": components,
        "severity_threshold": threshold,
        "summary": summary,
        "findings": findings,
    }))
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn configuration(ops: &Ops) -> Vec<Value> {
    let c = &ops.kernel.config;
    let mut out = Vec::new();
    if c.server.cors_origins.iter().any(|o| o == "*") {
        out.push(finding(
            "medium",
            "configuration",
            "cors_any_origin",
            String::from("CORS allows any origin (`server.cors_origins = [\"*\"]`)"),
            "List the origins of your web clients in server.cors_origins",
        ));
    }
    match &c.auth.jwt_secret {
        Some(secret) if secret.len() < 32 => out.push(finding(
            "high",
            "configuration",
            "jwt_secret_weak",
            format!(
                "auth.jwt_secret is {} bytes long; tokens signed with it can be forged by brute force",
                secret.len()
            ),
            "Set NEXUS_JWT_SECRET to at least 32 random bytes (e.g. `openssl rand -base64 48`)",
        )),
        None if ops.kernel.db.backend() == nexus_kernel::db::Backend::Postgres => out.push(finding(
            "high",
            "configuration",
            "jwt_secret_per_instance",
            String::from(
                "No auth.jwt_secret: each instance uses the key file of its own data directory, so instances \
                 sharing this PostgreSQL database refuse each other's tokens",
            ),
            "Set the same NEXUS_JWT_SECRET on every instance",
        )),
        _ => {}
    }
    if !is_loopback(&c.server.host) {
        out.push(finding(
            "medium",
            "configuration",
            "tls_off_public_bind",
            format!("The server listens on {} without TLS", c.server.host),
            "Terminate TLS in front of Nexus (reverse proxy) or bind server.host to 127.0.0.1",
        ));
    }
    let level = c.log.level.to_ascii_lowercase();
    if level.contains("debug") || level.contains("trace") {
        out.push(finding(
            "low",
            "configuration",
            "debug_logging",
            format!("Logging at `{}` writes request details to the logs", c.log.level),
            "Set log.level to info (or warn) in production",
        ));
    }
    if !c.rate_limits.enabled {
        out.push(finding(
            "medium",
            "configuration",
            "rate_limits_off",
            String::from("Request rate limits are switched off"),
            "Set rate_limits.enabled = true",
        ));
    }
    if c.webhooks.allow_private {
        out.push(finding(
            "medium",
            "configuration",
            "webhooks_private_targets",
            String::from("Webhooks may target private and loopback addresses (server-side request forgery)"),
            "Set webhooks.allow_private = false unless webhook receivers are on the private network",
        ));
    }
    if c.auth.admin_password.is_some() {
        out.push(finding(
            "low",
            "configuration",
            "admin_password_in_config",
            String::from("The first admin's password is set in the configuration (auth.admin_password)"),
            "Change the admin password after the first login and remove NEXUS_ADMIN_PASSWORD",
        ));
    }
    out
}

async fn permissions(ops: &Ops) -> Result<Vec<Value>, OpsError> {
    let mut out = Vec::new();
    let now = ops.kernel.clock.now();
    let overview = nexus_identity::overview::read(&ops.kernel.db, now).await?;
    if overview.admins == 0 {
        out.push(finding(
            "high",
            "permissions",
            "no_admin",
            String::from("No active user holds the admin role"),
            "Create or reactivate an administrator with `nexus user create --role admin`",
        ));
    } else if overview.admins > 3 {
        out.push(finding(
            "medium",
            "permissions",
            "many_admins",
            format!("{} active users hold the admin role", overview.admins),
            "Keep administrators to the few people who need them; give others narrower roles",
        ));
    }
    let roles = ops.identity.roles();
    for role in roles.names() {
        if role != "admin" && roles.permissions(std::slice::from_ref(&role)).is_all() {
            let holders = nexus_identity::overview::users_with_role(&ops.kernel.db, &role).await?;
            out.push(finding(
                if holders > 0 { "high" } else { "medium" },
                "permissions",
                "role_with_all_permissions",
                format!("Role `{role}` grants every permission (`*`) and {holders} active user(s) hold it"),
                "Replace `*` in auth.roles with the permissions the role needs",
            ));
        }
    }
    if overview.api_keys_without_expiry > 0 {
        out.push(finding(
            "low",
            "permissions",
            "api_keys_without_expiry",
            format!("{} active API key(s) never expire", overview.api_keys_without_expiry),
            "Give API keys an expiry (expires_in_days) and rotate them",
        ));
    }
    if overview.api_keys_unused_90d > 0 {
        out.push(finding(
            "medium",
            "permissions",
            "api_keys_unused",
            format!("{} active API key(s) have not been used for 90 days", overview.api_keys_unused_90d),
            "Revoke API keys that are no longer used",
        ));
    }
    Ok(out)
}

fn plugins(ops: &Ops) -> Vec<Value> {
    let mut out = Vec::new();
    for slot in ops.kernel.plugins.all() {
        match slot.status() {
            Status::Error => out.push(finding(
                "high",
                "plugins",
                "plugin_failed",
                format!("Plugin `{}` failed: {}", slot.id(), slot.reason().unwrap_or_default()),
                "Fix the cause in the log, then restart the server",
            )),
            Status::Inactive if slot.reason().is_some() => out.push(finding(
                "info",
                "plugins",
                "plugin_disabled",
                format!("Plugin `{}` is disabled: {}", slot.id(), slot.reason().unwrap_or_default()),
                "Enable it through PUT /api/plugins/{id}/status once the reason is resolved",
            )),
            _ => {}
        }
        if !slot.manifest.builtin {
            out.push(finding(
                "info",
                "plugins",
                "third_party_plugin",
                format!("Plugin `{}` is installed at run time; review what it was granted", slot.id()),
                "Check the plugin's grants and remove it if unused",
            ));
        }
    }
    out
}
