//! `POST /api/v1/components/diagnostics`: connectivity, performance and stress tests of the
//! components, run as a task (`diagnostics`) with one step per component and test. Every
//! number is measured while the test runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_kernel::principal::Principal;
use nexus_kernel::tasks::{NewTask, StepStatus, TaskError, TaskHandle, TaskStatus};
use serde_json::{Value, json};

use crate::OpsError;
use crate::service::{ADMIN_SERVICES, Ops};

pub const COMPONENTS: &[&str] = &["database", "cache", "event_bus", "storage"];
pub const TESTS: &[&str] = &["connectivity", "performance", "stress"];

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

fn per_second(n: u64, d: Duration) -> f64 {
    let secs = d.as_secs_f64();
    if secs > 0.0 { (n as f64 / secs).round() } else { 0.0 }
}

fn pick(asked: Option<Vec<String>>, known: &[&str], field: &str) -> Result<Vec<String>, OpsError> {
    let asked = asked.unwrap_or_else(|| known.iter().map(|s| (*s).to_string()).collect());
    if asked.is_empty() {
        return Err(OpsError::field(field, format!("must name at least one of {}", known.join(", "))));
    }
    for a in &asked {
        if !known.contains(&a.as_str()) {
            return Err(OpsError::field(field, format!("`{a}` is not one of {}", known.join(", "))));
        }
    }
    let mut out: Vec<String> = Vec::new();
    for a in asked {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

/// Starts a diagnostic run and waits for it (at most `diagnostics_wait_ms`); answers with its
/// results, or with the task still running.
pub async fn run(
    ops: &Arc<Ops>,
    caller: &Principal,
    components: Option<Vec<String>>,
    tests: Option<Vec<String>>,
) -> Result<Value, OpsError> {
    caller.require(ADMIN_SERVICES)?;
    let components = pick(components, COMPONENTS, "components")?;
    let tests = pick(tests, TESTS, "tests")?;
    let steps: Vec<String> = components.iter().flat_map(|c| tests.iter().map(move |t| format!("{c}:{t}"))).collect();
    let step_refs: Vec<&str> = steps.iter().map(String::as_str).collect();
    let mut events = ops.kernel.events.subscribe();
    let worker = ops.clone();
    let (cs, ts) = (components.clone(), tests.clone());
    let task = ops
        .kernel
        .tasks
        .spawn(
            NewTask::new("diagnostics", caller.user_id.clone())
                .details(json!({ "components": components, "tests": tests }))
                .steps(&step_refs),
            move |handle| async move { work(worker, handle, cs, ts).await },
        )
        .await?;
    let wait = crate::service::answer_within(ops);
    let id = task.id.clone();
    let finished = tokio::time::timeout(wait, async {
        loop {
            match events.recv().await {
                Ok(e)
                    if e.data.get("id").and_then(Value::as_str) == Some(id.as_str())
                        && matches!(e.kind.as_str(), "task.completed" | "task.failed" | "task.cancelled") =>
                {
                    return;
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    })
    .await
    .is_ok();
    let task = ops.kernel.tasks.get(&id).await?.ok_or_else(|| OpsError::NotFound(String::from("Task")))?;
    match (&task.result, finished || task.status.is_finished()) {
        (Some(result), true) => {
            let mut result = result.clone();
            if let Some(map) = result.as_object_mut() {
                map.insert("task_id".into(), json!(task.id));
            }
            Ok(result)
        }
        _ => Ok(json!({
            "test_run_id": task.id,
            "task_id": task.id,
            "status": task.status.as_str(),
            "error": task.error,
            "results": null,
        })),
    }
}

async fn work(
    ops: Arc<Ops>,
    task: TaskHandle,
    components: Vec<String>,
    tests: Vec<String>,
) -> Result<Value, TaskError> {
    let started = Instant::now();
    let total = (components.len() * tests.len()).max(1);
    let mut done = 0usize;
    let mut results = Vec::new();
    let mut all_pass = true;
    for component in &components {
        let mut outcomes = Vec::new();
        for test in &tests {
            task.checkpoint()?;
            let step = format!("{component}:{test}");
            task.step(&step, StepStatus::Running, None).await?;
            let t0 = Instant::now();
            let (status, details) = one(&ops, component, test).await;
            let elapsed = t0.elapsed();
            all_pass &= status == "pass" || status == "skipped";
            task.log("INFO", &format!("{step}: {status} in {:.1} ms", ms(elapsed))).await?;
            let step_status = if status == "fail" { TaskStatus::Failed } else { TaskStatus::Completed };
            task.step(&step, step_status, None).await?;
            outcomes.push(json!({ "name": test, "status": status, "duration_ms": ms(elapsed), "details": details }));
            done += 1;
            task.progress(done as f64 / total as f64).await?;
        }
        results.push(json!({ "component": component, "tests": outcomes }));
    }
    Ok(json!({
        "test_run_id": task.id(),
        "status": "completed",
        "passed": all_pass,
        "duration_ms": ms(started.elapsed()),
        "results": results,
    }))
}

/// Runs one test: (`pass`, `warning`, `fail` or `skipped`, details).
async fn one(ops: &Arc<Ops>, component: &str, test: &str) -> (&'static str, Value) {
    let settings = ops.settings();
    match (component, test) {
        ("database", "connectivity") => match ops.kernel.db.ping(nexus_kernel::health::CHECK_TIMEOUT).await {
            Ok(t) => ("pass", json!({ "message": "Connection established successfully", "response_time_ms": ms(t) })),
            Err(_) => ("fail", json!({ "message": "database connection failed" })),
        },
        ("database", "performance") => {
            let n = settings.diagnostics_operations;
            let started = Instant::now();
            match ops.query_timing(n).await {
                Ok((avg, worst)) => (
                    if avg > Duration::from_millis(100) { "warning" } else { "pass" },
                    json!({
                        "queries": n,
                        "avg_query_time_ms": ms(avg),
                        "max_query_time_ms": ms(worst),
                        "queries_per_second": per_second(u64::from(n), started.elapsed()),
                    }),
                ),
                Err(_) => ("fail", json!({ "message": "a query failed" })),
            }
        }
        ("database", "stress") => {
            let (workers, each) = (settings.stress_concurrency, settings.stress_operations);
            let started = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..workers {
                let db = ops.kernel.db.clone();
                set.spawn(async move {
                    let mut latencies = Vec::with_capacity(each as usize);
                    let mut errors = 0u64;
                    for _ in 0..each {
                        match db.ping(nexus_kernel::health::CHECK_TIMEOUT).await {
                            Ok(t) => latencies.push(t),
                            Err(_) => errors += 1,
                        }
                    }
                    (latencies, errors)
                });
            }
            let mut latencies = Vec::new();
            let mut errors = 0;
            while let Some(joined) = set.join_next().await {
                if let Ok((l, e)) = joined {
                    latencies.extend(l);
                    errors += e;
                }
            }
            let elapsed = started.elapsed();
            latencies.sort();
            let p99 = latencies.get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1))).copied();
            (
                if errors == 0 { "pass" } else { "fail" },
                json!({
                    "workers": workers,
                    "queries": latencies.len() as u64 + errors,
                    "errors": errors,
                    "queries_per_second": per_second(latencies.len() as u64, elapsed),
                    "p99_query_time_ms": p99.map(ms),
                }),
            )
        }
        ("cache", "connectivity") => {
            let probe: nexus_kernel::cache::L1<u64> = nexus_kernel::cache::L1::standalone(
                "diagnostics",
                moka::sync::Cache::builder().max_capacity(16),
                "entries",
            );
            let t0 = Instant::now();
            probe.insert("probe".into(), 1);
            let l1_ok = probe.get("probe") == Some(1);
            let l1_ms = ms(t0.elapsed());
            let redis = ops.kernel.check_redis().await;
            let redis_ok = redis.as_ref().is_none_or(|r| r.healthy);
            (
                if l1_ok && redis_ok { "pass" } else { "fail" },
                json!({
                    "l1": { "ok": l1_ok, "response_time_ms": l1_ms },
                    "l2": redis.map(|r| json!({ "ok": r.healthy, "response_time_ms": r.latency_ms, "error": r.error })),
                }),
            )
        }
        ("cache", "performance") => {
            let n = u64::from(settings.diagnostics_operations) * 10;
            let probe: nexus_kernel::cache::L1<u64> = nexus_kernel::cache::L1::standalone(
                "diagnostics",
                moka::sync::Cache::builder().max_capacity(n),
                "entries",
            );
            let started = Instant::now();
            for i in 0..n {
                probe.insert(i.to_string(), i);
                let _ = probe.get(&i.to_string());
            }
            let elapsed = started.elapsed();
            let mut details = json!({
                "l1_operations": n * 2,
                "l1_operations_per_second": per_second(n * 2, elapsed),
            });
            if ops.kernel.cache.has_l2() {
                let m = u64::from(settings.diagnostics_operations);
                let t0 = Instant::now();
                let mut errors = 0u64;
                for i in 0..m {
                    let key = format!("diagnostics:{i}");
                    if ops.kernel.cache.l2_set(&key, b"probe", Duration::from_secs(60)).await.is_err() {
                        errors += 1;
                    }
                    if ops.kernel.cache.l2_get(&key).await.is_err() {
                        errors += 1;
                    }
                }
                if let Some(map) = details.as_object_mut() {
                    map.insert("l2_operations".into(), json!(m * 2));
                    map.insert("l2_errors".into(), json!(errors));
                    map.insert("l2_operations_per_second".into(), json!(per_second(m * 2, t0.elapsed())));
                }
                // The probe keys leave after their 60 s expiry; clear them now.
                let _ = ops.kernel.cache.clear("diagnostics:*", nexus_kernel::cache::Level::L2).await;
                if errors > 0 {
                    return ("fail", details);
                }
            }
            ("pass", details)
        }
        ("cache", "stress") => {
            let (workers, each) = (settings.stress_concurrency, u64::from(settings.stress_operations) * 100);
            let probe: nexus_kernel::cache::L1<u64> = nexus_kernel::cache::L1::standalone(
                "diagnostics",
                moka::sync::Cache::builder().max_capacity(each),
                "entries",
            );
            let started = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for w in 0..workers {
                let probe = probe.clone();
                set.spawn_blocking(move || {
                    for i in 0..each {
                        let key = format!("{w}:{i}");
                        probe.insert(key.clone(), i);
                        let _ = probe.get(&key);
                    }
                });
            }
            while set.join_next().await.is_some() {}
            let ops_done = u64::from(workers) * each * 2;
            (
                "pass",
                json!({
                    "workers": workers,
                    "operations": ops_done,
                    "operations_per_second": per_second(ops_done, started.elapsed()),
                }),
            )
        }
        ("event_bus", "connectivity") => {
            let t0 = Instant::now();
            let rx = ops.kernel.events.subscribe();
            let stats = ops.kernel.events.stats();
            drop(rx);
            let open = !ops.kernel.events.is_closed();
            (
                if open { "pass" } else { "fail" },
                json!({
                    "open": open,
                    "subscribe_time_ms": ms(t0.elapsed()),
                    "subscribers": stats.subscribers,
                    "queue_size": stats.queue_size,
                    "redis_relay": ops.kernel.redis.is_some(),
                }),
            )
        }
        ("event_bus", "performance") | ("event_bus", "stress") => {
            // A private bus of the same implementation: probe events must not reach the
            // live bus's subscribers (WebSocket clients, webhooks).
            let bus = nexus_kernel::events::EventBus::new();
            let n = if test == "stress" {
                u64::from(settings.stress_concurrency) * u64::from(settings.stress_operations) * 10
            } else {
                u64::from(settings.diagnostics_operations) * 10
            };
            let mut rx = bus.subscribe();
            let started = Instant::now();
            let receiver = tokio::spawn(async move {
                let mut got = 0u64;
                let mut lagged = 0u64;
                while got + lagged < n {
                    match rx.recv().await {
                        Ok(_) => got += 1,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => lagged += k,
                        Err(_) => break,
                    }
                }
                (got, lagged)
            });
            for i in 0..n {
                bus.publish("diagnostics", "diagnostics.probe", json!({ "i": i }));
                if i % 1024 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            let (got, lagged) = receiver.await.unwrap_or((0, n));
            let elapsed = started.elapsed();
            (
                if lagged == 0 { "pass" } else { "warning" },
                json!({
                    "events": n,
                    "delivered": got,
                    "lost_by_slow_subscriber": lagged,
                    "events_per_second": per_second(got, elapsed),
                }),
            )
        }
        ("storage", "connectivity") | ("storage", "performance") => {
            let n = if test == "performance" { settings.diagnostics_operations.min(50) } else { 1 };
            let dir = ops.kernel.config.data_dir.clone();
            let started = Instant::now();
            let outcome = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                use std::io::Write as _;
                let path = dir.join(format!(".ops-diag-{}", nexus_kernel::id::random_alphanumeric(8)));
                for _ in 0..n {
                    let mut file = std::fs::File::create(&path)?;
                    file.write_all(&[0u8; 4096])?;
                    file.sync_all()?;
                }
                std::fs::remove_file(&path)
            })
            .await;
            let elapsed = started.elapsed();
            match outcome {
                Ok(Ok(())) => (
                    "pass",
                    json!({
                        "synced_writes": n,
                        "avg_write_ms": ms(elapsed / n.max(1)),
                        "writes_per_second": per_second(u64::from(n), elapsed),
                    }),
                ),
                _ => ("fail", json!({ "message": "the data directory is not writable" })),
            }
        }
        ("storage", "stress") => ("skipped", json!({ "message": "no stress test for the data directory" })),
        _ => ("skipped", Value::Null),
    }
}
