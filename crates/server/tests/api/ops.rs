//! The operations API (`seeds/core-ops-api.md`): every endpoint and its permission, numbers
//! that move with load, configuration that survives a restart, tasks cancelled mid-way and
//! interrupted by a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_kernel::plugin::Manifest;
use nexus_kernel::tasks::{NewTask, StepStatus, TaskError};
use nexus_testkit::reqwest::Method;
use nexus_testkit::{Backend, Plugin, Reply, TestServer, backends, json};
use nexus_web::plugin::{BoxFuture, StartContext, StartError, Started};
use serde_json::Value;

/// Polls `check` until it returns a value, for at most 20 s.
async fn until<F, Fut>(what: &str, mut check: F) -> Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<Value>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn data(r: &Reply) -> &Value {
    assert_eq!(r.json["success"], true, "not a v1 success envelope: {} {}", r.status, r.text);
    &r.json["data"]
}

/// An API key of `token`'s owner with `scopes`.
async fn api_key(s: &TestServer, token: &str, scopes: &[&str]) -> String {
    let r = s.post_as(token, "/api/auth/api-keys", json!({ "name": "ops", "scopes": scopes })).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["key"].as_str().unwrap_or_default().to_string()
}

async fn with_key(s: &TestServer, key: &str, method: Method, path: &str, body: Option<Value>) -> Reply {
    s.call(method, path, body, &[("X-API-Key", key)]).await
}

#[tokio::test]
async fn status_health_probes_and_system_answer_from_real_probes() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let r = s.get("/api/v1/status").await;
        assert_eq!((r.status.as_u16(), r.json["success"].as_bool()), (401, Some(false)), "{}", r.text);
        let admin = s.admin_token().await;
        let r = s.get_as(&admin, "/api/v1/status").await;
        assert_eq!(r.status, 200, "{}", r.text);
        let d = data(&r);
        assert_eq!(d["status"], "healthy", "{d}");
        assert_eq!(d["version"], nexus_kernel::VERSION);
        let db = &d["components"]["database"];
        assert!(db["response_time_ms"].as_f64().is_some_and(|v| v > 0.0), "{db}");
        assert!(db["connection_pool"]["total"].as_u64().is_some_and(|t| t >= 1), "{db}");
        assert!(db["connection_pool"]["max"].as_u64().is_some_and(|t| t >= 1), "{db}");
        let plugins = s.get_as(&admin, "/api/plugins?limit=100").await;
        assert_eq!(d["components"]["plugins"]["loaded"], plugins.json["total"]);
        assert_eq!(d["components"]["plugins"]["failed"], 0);
        assert!(d["components"]["event_bus"]["processed_events"].is_u64());
        assert!(d["components"]["cache"]["hits"].is_u64());

        // The seed's base URL is an alias of the same routes.
        let r = s.get_as(&admin, "/api/v1/core/status").await;
        assert_eq!(data(&r)["status"], "healthy");
        let r = s.get("/api/v1/core/health").await;
        assert_eq!((r.status.as_u16(), r.json["status"].as_str()), (200, Some("ok")), "{}", r.text);

        // read:system: viewers have it, plain users do not (v1 error dialect).
        let viewer = s.user_token("viewer1", &["viewer"]).await;
        assert_eq!(s.get_as(&viewer, "/api/v1/status").await.status, 200);
        let user = s.user_token("user1", &["user"]).await;
        let r = s.get_as(&user, "/api/v1/status").await;
        assert_eq!((r.status.as_u16(), r.json["code"].as_str()), (403, Some("PERMISSION_DENIED")), "{}", r.text);

        // The seed's curl example, with an X-API-Key scoped to reading.
        let key = api_key(&s, &admin, &["read"]).await;
        let r = with_key(&s, &key, Method::GET, "/api/v1/status", None).await;
        assert_eq!(data(&r)["status"], "healthy");

        let r = s.get_as(&admin, "/api/v1/components/health").await;
        let d = data(&r);
        // `degraded` is a warning from a measured threshold (a slow query on a busy machine).
        assert!(matches!(d["overall_status"].as_str(), Some("healthy" | "degraded")), "{d}");
        let names: Vec<&str> =
            d["components"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
        for name in ["database", "cache", "event_bus", "plugins", "storage"] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        let db = d["components"].as_array().and_then(|c| c.first()).cloned().unwrap_or_default();
        assert!(db["checks"][1]["avg_query_time_ms"].as_f64().is_some_and(|v| v > 0.0), "{db}");

        let r = s.get("/livez").await;
        assert_eq!((r.status.as_u16(), r.json["status"].as_str()), (200, Some("ok")));
        let r = s.get("/readyz").await;
        assert_eq!((r.status.as_u16(), r.json["status"].as_str()), (200, Some("ready")), "{}", r.text);

        let r = s.get_as(&admin, "/api/system/info").await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["framework_version"], nexus_kernel::VERSION);
        assert_eq!(r.json["loaded_plugins"], plugins.json["total"]);
        assert!(r.json["memory_usage_mb"].as_f64().is_some_and(|m| m > 0.0), "{}", r.text);
        assert!(r.json["active_sessions"].as_i64().is_some_and(|n| n >= 1), "{}", r.text);
        let r = s.get_as(&admin, "/api/system/config").await;
        assert_eq!(r.status, 200, "{}", r.text);
        let expected = if backend == Backend::Sqlite { "sqlite" } else { "postgresql" };
        assert_eq!(r.json["database"]["type"], expected);
        assert!(!r.text.contains("postgres://"), "no URL with credentials: {}", r.text);
        assert_eq!(s.get_as(&user, "/api/system/info").await.status, 403);
    }
}

#[tokio::test]
async fn metrics_move_with_requests_and_roll_up() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let before = s.get_as(&admin, "/api/v1/metrics/summary").await;
    let total_before = data(&before)["requests"]["total"].as_u64().unwrap_or(0);
    let not_found_before = data(&before)["errors"]["by_status"]["404"].as_u64().unwrap_or(0);
    for _ in 0..20 {
        assert_eq!(s.get("/api/v1/health").await.status, 200);
    }
    for _ in 0..3 {
        assert_eq!(s.get("/api/v1/no-such-route").await.status, 404);
    }
    let after = s.get_as(&admin, "/api/v1/metrics/summary").await;
    let d = data(&after);
    assert!(d["requests"]["total"].as_u64().unwrap_or(0) >= total_before + 23, "{d}");
    assert_eq!(d["errors"]["by_status"]["404"].as_u64().unwrap_or(0), not_found_before + 3, "{d}");
    assert!(d["requests"]["success_rate"].as_f64().is_some_and(|r| r > 0.0 && r < 1.0), "{d}");
    let p95 = d["requests"]["p95_response_time_ms"].as_f64().unwrap_or(0.0);
    let p99 = d["requests"]["p99_response_time_ms"].as_f64().unwrap_or(0.0);
    assert!(p95 > 0.0 && p99 >= p95, "{d}");
    assert!(d["resources"]["peak_memory_mb"].as_f64().is_some_and(|m| m > 0.0), "{d}");
    assert!(d["resources"]["disk_usage_bytes"].as_u64().is_some_and(|b| b > 0), "{d}");

    let r = s.get_as(&admin, "/api/v1/metrics").await;
    let points = data(&r)["metrics"]["requests_per_second"].as_array().cloned().unwrap_or_default();
    let last = points.last().cloned().unwrap_or_default();
    assert!(last["value"].as_f64().is_some_and(|v| v > 0.0), "{}", r.text);
    assert!(data(&r)["metrics"]["memory_usage_mb"].as_array().is_some_and(|p| p.iter().any(|v| v["value"].is_f64())));

    // Two minutes later (by the kernel clock) the requests so far are in earlier minutes.
    s.kernel().clock.advance(Duration::from_secs(120));
    assert_eq!(s.get("/api/v1/health").await.status, 200);
    let r = s.get_as(&admin, "/api/v1/metrics?resolution=1m").await;
    let points = data(&r)["metrics"]["requests_per_second"].as_array().cloned().unwrap_or_default();
    assert!(points.len() >= 3, "{}", r.text);
    let busy = points.iter().filter(|p| p["value"].as_f64().unwrap_or(0.0) > 0.0).count();
    assert!(busy >= 2, "{}", r.text);
    let r = s.get_as(&admin, "/api/v1/core/metrics?resolution=1h").await;
    let hourly = data(&r)["metrics"]["response_time_ms"].as_array().cloned().unwrap_or_default();
    assert!(!hourly.is_empty() && hourly.len() <= 2, "{}", r.text);
    let start = nexus_kernel::clock::Timestamp::now().add_seconds(-600).to_rfc3339();
    let end = s.kernel().clock.now().to_rfc3339();
    let r = s.get_as(&admin, &format!("/api/v1/metrics?start_time={start}&end_time={end}&resolution=5m")).await;
    assert_eq!(data(&r)["time_range"]["end"], end);
    let r = s.get_as(&admin, "/api/v1/metrics?resolution=7m").await;
    assert_eq!((r.status.as_u16(), r.json["code"].as_str()), (400, Some("VALIDATION_ERROR")), "{}", r.text);
    let r = s.get_as(&admin, "/api/v1/metrics?start_time=yesterday").await;
    assert_eq!(r.status, 400);

    // read:metrics: viewers have it, plain users do not; an API key with the `read` scope does.
    let viewer = s.user_token("viewer1", &["viewer"]).await;
    assert_eq!(s.get_as(&viewer, "/api/v1/metrics/summary").await.status, 200);
    let user = s.user_token("user1", &["user"]).await;
    assert_eq!(s.get_as(&user, "/api/v1/metrics").await.status, 403);
    let key = api_key(&s, &admin, &["read"]).await;
    let r = with_key(&s, &key, Method::GET, "/api/v1/metrics", None).await;
    assert!(data(&r)["metrics"]["requests_per_second"].is_array());
}

#[tokio::test]
async fn config_is_masked_validated_persisted_and_survives_a_restart() {
    for backend in backends() {
        let mut s = TestServer::start_on(backend).await;
        let admin = s.admin_token().await;
        let r = s.get_as(&admin, "/api/v1/config").await;
        let d = data(&r);
        assert_eq!(d["auth"]["admin_password"], "***masked***", "{d}");
        assert_eq!(d["server"]["request_timeout_secs"], 30);
        assert!(!r.text.contains(nexus_testkit::ADMIN_PASSWORD));
        let r = s.get_as(&admin, "/api/v1/config?section=server").await;
        assert_eq!(data(&r).as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()), Some(vec!["server".into()]));
        let r = s.get_as(&admin, "/api/v1/config?section=nope").await;
        assert_eq!(r.status, 400);

        // Unmasking needs admin:config.
        let viewer = s.user_token("viewer1", &["viewer"]).await;
        assert_eq!(s.get_as(&viewer, "/api/v1/config").await.status, 200);
        assert_eq!(s.get_as(&viewer, "/api/v1/config?mask_secrets=false").await.status, 403);
        let r = s.get_as(&admin, "/api/v1/config?mask_secrets=false").await;
        assert_eq!(data(&r)["auth"]["admin_password"], nexus_testkit::ADMIN_PASSWORD);

        // A live change and a change for the next start.
        let (sr, ar) = (&s, admin.as_str());
        let put = move |body: Value| async move { sr.call_as(ar, Method::PUT, "/api/v1/config", Some(body)).await };
        let r = put(json!({ "ops": { "stress_operations": 7 } })).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(data(&r)["updated_keys"], json!(["ops.stress_operations"]));
        assert_eq!(data(&r)["restart_required"], false);
        let r = s.get_as(&admin, "/api/v1/config?section=ops").await;
        assert_eq!(data(&r)["ops"]["stress_operations"], 7);
        let r = put(json!({ "server": { "request_timeout_secs": 45 }, "webhooks": { "max_attempts": 4 } })).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(data(&r)["updated_keys"], json!(["server.request_timeout_secs", "webhooks.max_attempts"]));
        assert_eq!(data(&r)["restart_required"], true);
        let r = s.get_as(&admin, "/api/v1/config?section=server").await;
        assert_eq!(data(&r)["server"]["request_timeout_secs"], 30, "in effect until the restart");

        // Refused: invalid values, unknown sections, masked values, non-admins.
        let r = put(json!({ "server": { "request_timeout_secs": 0 } })).await;
        assert_eq!((r.status.as_u16(), r.json["code"].as_str()), (400, Some("VALIDATION_ERROR")), "{}", r.text);
        let r = put(json!({ "server": { "request_timeout_secs": "soon" } })).await;
        assert_eq!(r.status, 400, "{}", r.text);
        let r = put(json!({ "nonsense": { "a": 1 } })).await;
        assert_eq!(r.status, 400, "{}", r.text);
        let r = put(json!({ "auth": { "jwt_secret": "***masked***" } })).await;
        assert_eq!(r.status, 400, "{}", r.text);
        let r = put(json!({ "ops": { "stress_concurrency": 1000 } })).await;
        assert_eq!(r.status, 400, "{}", r.text);
        let r =
            s.call_as(&viewer, Method::PUT, "/api/v1/config", Some(json!({ "ops": { "stress_operations": 1 } }))).await;
        assert_eq!(r.status, 403);

        s.restart().await;
        let admin = s.admin_token().await;
        let r = s.get_as(&admin, "/api/v1/config").await;
        let d = data(&r);
        assert_eq!(d["server"]["request_timeout_secs"], 45, "{d}");
        assert_eq!(d["webhooks"]["max_attempts"], 4, "{d}");
        assert_eq!(d["ops"]["stress_operations"], 7, "{d}");
        let r = s.get_as(&admin, "/api/plugins/webhooks").await;
        assert_eq!(r.json["configuration"]["max_attempts"], 4, "{}", r.text);
    }
}

#[tokio::test]
async fn diagnostics_run_as_a_task_with_measured_numbers() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let body =
        json!({ "components": ["database", "cache", "event_bus"], "tests": ["connectivity", "performance", "stress"] });
    let r = s.post_as(&admin, "/api/v1/components/diagnostics", body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = data(&r).clone();
    assert_eq!(d["status"], "completed", "{d}");
    assert!(d["duration_ms"].as_f64().is_some_and(|v| v > 0.0));
    let db = &d["results"][0];
    assert_eq!(db["component"], "database");
    assert_eq!(db["tests"][0]["status"], "pass", "{db}");
    assert!(db["tests"][1]["details"]["queries_per_second"].as_f64().is_some_and(|q| q > 0.0), "{db}");
    assert!(db["tests"][2]["details"]["queries"].as_u64().is_some_and(|q| q > 0), "{db}");
    assert!(d["results"][2]["tests"][1]["details"]["events_per_second"].as_f64().is_some_and(|q| q > 0.0), "{d}");

    // It is a task, with its steps and log.
    let id = d["test_run_id"].as_str().unwrap_or_default().to_string();
    let r = s.get_as(&admin, &format!("/api/v1/tasks/{id}")).await;
    let t = data(&r);
    assert_eq!((t["type"].as_str(), t["status"].as_str()), (Some("diagnostics"), Some("completed")), "{t}");
    assert_eq!(t["progress"], 1.0);
    assert_eq!(t["details"]["steps"].as_array().map(Vec::len), Some(9));
    assert!(t["details"]["steps"].as_array().into_iter().flatten().all(|s| s["status"] == "completed"), "{t}");
    assert_eq!(t["logs"].as_array().map(Vec::len), Some(9));
    assert!(t["completed_at"].is_string());
    let r = s.get_as(&admin, "/api/v1/tasks?type=diagnostics&status=completed").await;
    assert!(data(&r)["tasks"].as_array().is_some_and(|t| t.iter().any(|t| t["id"] == id.as_str())), "{}", r.text);
    let r = s.get_as(&admin, "/api/v1/tasks?status=sleeping").await;
    assert_eq!(r.status, 400);

    // A finished task cannot be cancelled; unknown tasks are 404.
    let r = s.call_as(&admin, Method::DELETE, &format!("/api/v1/tasks/{id}"), None).await;
    assert_eq!((r.status.as_u16(), r.json["code"].as_str()), (409, Some("CONFLICT")), "{}", r.text);
    assert_eq!(s.get_as(&admin, "/api/v1/tasks/task_nope").await.status, 404);
    let r = s.post_as(&admin, "/api/v1/components/diagnostics", json!({ "components": ["teapot"] })).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let viewer = s.user_token("viewer1", &["viewer"]).await;
    assert_eq!(s.post_as(&viewer, "/api/v1/components/diagnostics", body).await.status, 403);
}

#[tokio::test]
async fn a_task_is_cancelled_midway_and_its_progress_is_published() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let mut events = s.kernel().events.subscribe();
    let task = s
        .kernel()
        .tasks
        .spawn(NewTask::new("test.long", "someone").steps(&["first", "second"]), |task| async move {
            task.step("first", StepStatus::Completed, None).await?;
            task.step("second", StepStatus::Running, Some(0.0)).await?;
            task.progress(0.5).await?;
            task.log("INFO", "half way").await?;
            task.cancelled().await;
            task.checkpoint()?;
            Ok(json!({ "unreachable": true }))
        })
        .await
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    // Its progress reaches the bus (and the WebSocket `tasks` channel) as task.* events.
    loop {
        let e = events.recv().await.unwrap_or_else(|e| panic!("bus: {e}"));
        if e.kind == "task.progress" && e.data["id"] == task.id.as_str() && e.data["progress"] == 0.5 {
            assert_eq!(e.source, "tasks");
            break;
        }
    }
    let path = format!("/api/v1/tasks/{}", task.id);
    let r = s.get_as(&admin, &path).await;
    let t = data(&r);
    assert_eq!((t["status"].as_str(), t["progress"].as_f64()), (Some("running"), Some(0.5)), "{t}");
    assert!(t["estimated_completion"].is_string(), "{t}");
    assert_eq!(t["details"]["steps"][0]["status"], "completed");

    // Someone else's task needs admin:services to cancel.
    let viewer = s.user_token("viewer1", &["viewer"]).await;
    assert_eq!(s.call_as(&viewer, Method::DELETE, &path, None).await.status, 403);
    let r = s.call_as(&admin, Method::DELETE, &path, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(data(&r)["status"], "cancelled");
    assert!(data(&r)["cancelled_at"].is_string());
    // The worker stops at its checkpoint; the task stays cancelled.
    let (sr, ar, pr) = (&s, admin.as_str(), path.as_str());
    until("the worker to stop", move || async move {
        let r = sr.get_as(ar, pr).await;
        let logs = r.json["data"]["logs"].to_string();
        logs.contains("stopped after being cancelled").then(|| r.json["data"].clone())
    })
    .await;
    let r = s.get_as(&admin, &path).await;
    assert_eq!(data(&r)["status"], "cancelled");
    assert!(data(&r)["result"].is_null());
    let r = s.call_as(&admin, Method::DELETE, &format!("/api/v1/core/tasks/{}", task.id), None).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(s.kernel().tasks.running(), 0);
}

/// A plugin that resumes `test.resumable` tasks after a restart.
#[derive(Debug, Default)]
struct Resumes;

impl nexus_kernel::plugin::Reconfigure for Resumes {}

impl Plugin for Resumes {
    fn manifest(&self) -> Manifest {
        Manifest::builtin("resumes", "Resumes", "example", "Resumes test tasks")
    }

    fn start<'a>(&'a self, ctx: &'a mut StartContext) -> BoxFuture<'a, Result<Started, StartError>> {
        Box::pin(async move {
            ctx.kernel.tasks.resume_with(
                "test.resumable",
                Arc::new(|task| {
                    Box::pin(async move {
                        task.log("INFO", "picked up again").await?;
                        Ok::<_, TaskError>(json!({ "resumed": true, "details": task.details().await }))
                    })
                }),
            );
            Ok(Started::default())
        })
    }
}

#[tokio::test]
async fn a_running_task_is_failed_or_resumed_after_a_restart() {
    for backend in backends() {
        let mut plugins = nexus::plugins::builtin();
        plugins.push(Arc::new(Resumes));
        let mut s = TestServer::start_with_plugins(backend, |_| {}, plugins).await;
        let hang = |kind: &str| NewTask::new(kind, "someone").details(json!({ "n": 1 }));
        let stuck = s
            .kernel()
            .tasks
            .spawn(hang("test.stuck"), |task| async move {
                task.progress(0.25).await?;
                futures::future::pending::<()>().await;
                Ok(Value::Null)
            })
            .await
            .unwrap_or_else(|e| panic!("spawn: {e}"));
        let resumable = s
            .kernel()
            .tasks
            .spawn(hang("test.resumable"), |task| async move {
                task.progress(0.25).await?;
                futures::future::pending::<()>().await;
                Ok(Value::Null)
            })
            .await
            .unwrap_or_else(|e| panic!("spawn: {e}"));
        let admin = s.admin_token().await;
        for id in [stuck.id.as_str(), resumable.id.as_str()] {
            let (sr, ar) = (&s, admin.as_str());
            until("the task to run", move || async move {
                let r = sr.get_as(ar, &format!("/api/v1/tasks/{id}")).await;
                (r.json["data"]["progress"] == 0.25).then_some(Value::Null)
            })
            .await;
        }

        s.restart().await;
        if backend == Backend::Postgres {
            // Instances share PostgreSQL: a task is orphaned once its instance is silent.
            s.kernel().clock.advance(nexus_kernel::tasks::STALE_AFTER + Duration::from_secs(1));
        }
        let admin = s.admin_token().await;
        let r = s.get_as(&admin, &format!("/api/v1/tasks/{}", stuck.id)).await;
        let t = data(&r);
        assert_eq!(t["status"], "failed", "{t}");
        assert!(t["error"].as_str().is_some_and(|e| e.contains("interrupted")), "{t}");
        assert!(t["failed_at"].is_string(), "{t}");
        let (sr, ar, idr) = (&s, admin.as_str(), resumable.id.as_str());
        let t = until("the resumed task to complete", move || async move {
            let r = sr.get_as(ar, &format!("/api/v1/tasks/{idr}")).await;
            (r.json["data"]["status"] == "completed").then(|| r.json["data"].clone())
        })
        .await;
        assert_eq!(t["result"]["resumed"], true, "{t}");
        assert_eq!(t["result"]["details"]["n"], 1, "{t}");
        let r = s.get_as(&admin, "/api/v1/tasks?status=failed&type=test.stuck").await;
        assert_eq!(data(&r)["tasks"].as_array().map(Vec::len), Some(1), "{}", r.text);
    }
}

#[tokio::test]
async fn services_are_reported_and_restarted_for_real() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let r = s.get_as(&admin, "/api/v1/services").await;
    let services = data(&r)["services"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = services.iter().filter_map(|s| s["name"].as_str()).collect();
    for name in ["database", "event_bus", "cache", "tasks", "identity", "secrets", "webhooks", "ops"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let r = s.get_as(&admin, "/api/v1/services/database").await;
    let d = data(&r);
    assert_eq!((d["type"].as_str(), d["status"].as_str()), (Some("DatabaseAdapter"), Some("running")), "{d}");
    assert!(d["dependents"].as_array().is_some_and(|a| !a.is_empty()));
    let r = s.get_as(&admin, "/api/v1/services/identity").await;
    let d = data(&r);
    assert!(d["metrics"]["requests_handled"].as_u64().is_some_and(|n| n >= 1), "{d}");
    assert!(d["dependents"].as_array().is_some_and(|a| a.iter().any(|x| x == "webhooks")), "{d}");
    assert_eq!(s.get_as(&admin, "/api/v1/services/nope").await.status, 404);

    let r = s.post_as(&admin, "/api/v1/services/database/restart", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = data(&r);
    assert_eq!((d["action"].as_str(), d["status"].as_str()), (Some("restart"), Some("completed")));
    assert!(d["duration_ms"].as_f64().is_some_and(|v| v > 0.0), "{d}");
    assert_eq!(s.get_as(&admin, "/api/v1/status").await.status, 200, "served after the reconnect");
    let r = s.post_as(&admin, "/api/v1/services/ops/restart", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.post_as(&admin, "/api/v1/services/identity/restart", json!({})).await;
    assert_eq!((r.status.as_u16(), r.json["code"].as_str()), (409, Some("CONFLICT")), "{}", r.text);
    assert_eq!(s.post_as(&admin, "/api/v1/services/nope/restart", json!({})).await.status, 404);
    let viewer = s.user_token("viewer1", &["viewer"]).await;
    assert_eq!(s.get_as(&viewer, "/api/v1/services").await.status, 200);
    assert_eq!(s.post_as(&viewer, "/api/v1/services/database/restart", json!({})).await.status, 403);
}

fn cache_named(status: &Value, name: &str) -> Value {
    status["cache_levels"][0]["caches"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn cache_stats_move_with_reads_and_clears_count_keys() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let r = s.get_as(&admin, "/api/v1/cache/status").await;
    let before = cache_named(data(&r), "token");
    for _ in 0..5 {
        assert_eq!(s.get_as(&admin, "/api/users").await.status, 200);
    }
    let r = s.get_as(&admin, "/api/v1/cache/status").await;
    let d = data(&r);
    let after = cache_named(d, "token");
    assert!(after["hits"].as_u64().unwrap_or(0) >= before["hits"].as_u64().unwrap_or(0) + 5, "{d}");
    assert!(after["entries"].as_u64().is_some_and(|n| n >= 1), "{d}");
    assert!(d["statistics"]["total_hits"].as_u64().is_some_and(|n| n >= 5), "{d}");
    assert!(d["statistics"]["hit_rate"].as_f64().is_some_and(|r| r > 0.0), "{d}");
    for name in ["user", "secret"] {
        assert!(!cache_named(d, name).is_null(), "{name} cache not registered: {d}");
    }

    // The seed's example: a body with the pattern, an API key with write:cache.
    let viewer = s.user_token("viewer1", &["viewer"]).await;
    let r = s.call_as(&viewer, Method::DELETE, "/api/v1/cache", Some(json!({ "pattern": "token:*" }))).await;
    assert_eq!(r.status, 403);
    let key = api_key(&s, &admin, &["write:cache", "read:system"]).await;
    let r = with_key(&s, &key, Method::DELETE, "/api/v1/cache", Some(json!({ "pattern": "token:*" }))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = data(&r);
    assert!(d["cleared_keys"].as_u64().is_some_and(|n| n >= 2), "admin's and viewer's tokens: {d}");
    assert_eq!((d["pattern"].as_str(), d["levels"].clone()), (Some("token:*"), json!(["L1"])));
    let r = with_key(&s, &key, Method::GET, "/api/v1/cache/status", None).await;
    assert_eq!(cache_named(data(&r), "token")["entries"], 0, "{}", r.text);
    let r = with_key(&s, &key, Method::DELETE, "/api/v1/cache?pattern=nothing:*&level=L1", None).await;
    assert_eq!(data(&r)["cleared_keys"], 0);
    let r = with_key(&s, &key, Method::DELETE, "/api/v1/cache?level=L9", None).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = with_key(&s, &key, Method::DELETE, "/api/v1/cache?level=L2", None).await;
    assert_eq!(r.status, 409, "no L2 without redis: {}", r.text);
}

#[tokio::test]
async fn security_status_counts_failed_logins_and_the_scan_finds_real_issues() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.server.cors_origins = vec!["*".into()]).await;
    crate::fresh_window(&s, 60);
    let admin = s.admin_token().await;
    let _victim = s.user_token("victim", &["user"]).await;
    let r = s.get_as(&admin, "/api/v1/security/status").await;
    let before = data(&r)["metrics"]["failed_logins_24h"].as_u64().unwrap_or(0);
    for _ in 0..5 {
        let r = s.post("/api/auth/login", json!({ "username": "victim", "password": "wrong-Pass1" })).await;
        assert_eq!(r.status, 401, "{}", r.text);
    }
    let r = s.get_as(&admin, "/api/v1/security/status").await;
    let d = data(&r);
    assert_eq!(d["metrics"]["failed_logins_24h"].as_u64(), Some(before + 5), "{d}");
    assert!(d["metrics"]["failed_logins_by_ip"]["127.0.0.1"].as_u64().is_some_and(|n| n >= 5), "{d}");
    assert_eq!(d["metrics"]["locked_accounts"], 1, "{d}");
    assert!(d["metrics"]["active_sessions"].as_i64().is_some_and(|n| n >= 2), "{d}");
    let alerts = d["alerts"].as_array().cloned().unwrap_or_default();
    assert!(alerts.iter().any(|a| a["details"]["ip_address"] == "127.0.0.1" && a["details"]["attempts"] == 5), "{d}");
    assert_ne!(d["status"], "secure");

    let viewer = s.user_token("viewer1", &["viewer"]).await;
    assert_eq!(s.get_as(&viewer, "/api/v1/security/status").await.status, 403);
    assert_eq!(s.post_as(&viewer, "/api/v1/security/scan", json!({})).await.status, 403);
    let r =
        s.post_as(&admin, "/api/v1/security/scan", json!({ "type": "full", "severity_threshold": "sideways" })).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let body = json!({ "type": "full", "components": ["plugins", "configuration", "permissions"], "severity_threshold": "low" });
    let r = s.post_as(&admin, "/api/v1/security/scan", body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = data(&r).clone();
    assert_eq!(d["status"], "started");
    assert_eq!(d["components_to_scan"], json!(["plugins", "configuration", "permissions"]));
    assert!(d["estimated_duration_ms"].is_null(), "no earlier scan to estimate from");
    let id = d["scan_id"].as_str().unwrap_or_default().to_string();
    let (sr, ar, idr) = (&s, admin.as_str(), id.as_str());
    let task = until("the scan to complete", move || async move {
        let r = sr.get_as(ar, &format!("/api/v1/tasks/{idr}")).await;
        (r.json["data"]["status"] == "completed").then(|| r.json["data"].clone())
    })
    .await;
    let findings = task["result"]["findings"].as_array().cloned().unwrap_or_default();
    let cors = findings.iter().find(|f| f["id"] == "cors_any_origin").cloned().unwrap_or_default();
    assert_eq!((cors["severity"].as_str(), cors["component"].as_str()), (Some("medium"), Some("configuration")));
    assert!(cors["remediation"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(findings.iter().all(|f| f["severity"] != "info"), "below the threshold: {findings:?}");
    // The second scan is estimated from the first; the status names the last scan.
    let r = s.post_as(&admin, "/api/v1/security/scan", body).await;
    assert!(data(&r)["estimated_duration_ms"].is_f64(), "{}", r.text);
    let r = s.get_as(&admin, "/api/v1/security/status").await;
    assert!(data(&r)["last_scan"].is_string(), "{}", r.text);
}

#[tokio::test]
async fn task_progress_reaches_the_websocket_tasks_channel() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let url = s.url("/ws").replacen("http://", "ws://", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap_or_else(|e| panic!("ws connect: {e}"));
    let recv = async |ws: &mut tokio_tungstenite::WebSocketStream<_>| -> Value {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
            match next {
                Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(t.as_str()).unwrap_or_default(),
                Ok(Some(Ok(_))) => {}
                other => panic!("no message: {other:?}"),
            }
        }
    };
    let send = |v: Value| Message::text(v.to_string());
    ws.send(send(json!({ "type": "auth", "token": admin }))).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(recv(&mut ws).await["type"], "auth_success");
    ws.send(send(json!({ "type": "subscribe", "channel": "tasks" }))).await.unwrap_or_else(|e| panic!("{e}"));
    let ack = recv(&mut ws).await;
    assert_eq!((ack["type"].as_str(), ack["channel"].as_str()), (Some("subscribed"), Some("tasks")), "{ack}");
    let r = s
        .post_as(
            &admin,
            "/api/v1/components/diagnostics",
            json!({ "components": ["database"], "tests": ["connectivity"] }),
        )
        .await;
    let id = data(&r)["test_run_id"].as_str().unwrap_or_default().to_string();
    let mut seen = Vec::new();
    while !seen.contains(&"task.completed".to_string()) {
        let m = recv(&mut ws).await;
        if m["type"] == "event" && m["channel"] == "tasks" && m["data"]["payload"]["id"] == id.as_str() {
            seen.push(m["data"]["type"].as_str().unwrap_or_default().to_string());
        }
    }
    assert!(seen.contains(&"task.progress".to_string()), "{seen:?}");
}

#[tokio::test]
async fn nexus_config_shows_changes_stored_through_the_api() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let body = json!({ "server": { "request_timeout_secs": 77 }, "webhooks": { "max_attempts": 3 } });
    let r = s.call_as(&admin, Method::PUT, "/api/v1/config", Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let dir = s.config.data_dir.to_string_lossy().to_string();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args(["config", "--data-dir", &dir])
        .env_remove("NEXUS_DATABASE_URL")
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run nexus: {e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("request_timeout_secs = 77"), "{text}");
    assert!(text.contains("max_attempts = 3"), "{text}");
}

#[tokio::test]
async fn with_redis_a_clear_reaches_the_other_instances_and_l2() {
    let Some(redis) = nexus_testkit::redis_url() else {
        eprintln!("NEXUS_TEST_REDIS_URL is not set; skipping");
        return;
    };
    let backend = if nexus_testkit::postgres_url().is_some() { Backend::Postgres } else { Backend::Sqlite };
    let share = move |c: &mut nexus_kernel::config::Config| {
        c.auth.jwt_secret = Some("k".repeat(40));
        c.secrets.master_key = Some(String::from("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="));
        c.redis.url = Some(redis.clone());
    };
    let a = TestServer::start_with(backend, share.clone()).await;
    let db = a.config.database_url();
    let b = TestServer::start_with(Backend::Sqlite, |c| {
        share(c);
        c.database.url = Some(db);
    })
    .await;
    let admin = a.admin_token().await;
    for _ in 0..3 {
        assert_eq!(a.get_as(&admin, "/api/users").await.status, 200);
    }
    let tokens_on_a = || a.kernel().cache.l1_stats().into_iter().find(|c| c.name == "token").map_or(0, |c| c.entries);
    assert!(tokens_on_a() >= 1);
    b.kernel().cache.l2_set("user:probe", b"x", Duration::from_secs(60)).await.unwrap_or_else(|e| panic!("l2: {e}"));
    let r = b.get_as(&admin, "/api/v1/cache/status").await;
    let levels = data(&r)["cache_levels"].as_array().cloned().unwrap_or_default();
    assert!(levels.iter().any(|l| l["level"] == "L2" && l["entries"].as_u64().is_some_and(|n| n >= 1)), "{}", r.text);

    let r = b.call_as(&admin, Method::DELETE, "/api/v1/cache", Some(json!({ "pattern": "*", "level": "all" }))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(data(&r)["levels"], json!(["L1", "L2"]));
    assert!(data(&r)["cleared_keys"].as_u64().is_some_and(|n| n >= 2), "{}", r.text);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokens_on_a() > 0 {
        assert!(Instant::now() < deadline, "the clear did not reach the other instance");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = b.get_as(&admin, "/api/v1/cache/status").await;
    let levels = data(&r)["cache_levels"].as_array().cloned().unwrap_or_default();
    assert!(levels.iter().any(|l| l["level"] == "L2" && l["entries"] == 0), "{}", r.text);
}

async fn user_exists(s: &TestServer, admin: &str, name: &str) -> bool {
    let r = s.get_as(admin, &format!("/api/users?filter[username]={name}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["users"].as_array().is_some_and(|u| !u.is_empty())
}

async fn create_named(s: &TestServer, admin: &str, name: &str) {
    let body = json!({ "username": name, "email": format!("{name}@example.com"), "password": "user-Pass1" });
    let r = s.post_as(admin, "/api/users", body).await;
    assert_eq!(r.status, 201, "{}", r.text);
}

async fn finished_task(s: &TestServer, admin: &str, id: &str) -> Value {
    until("the task to end", move || async move {
        let r = s.get_as(admin, &format!("/api/v1/tasks/{id}")).await;
        let status = r.json["data"]["status"].as_str().unwrap_or("").to_string();
        matches!(status.as_str(), "completed" | "failed" | "cancelled").then(|| r.json["data"].clone())
    })
    .await
}

#[tokio::test]
async fn backup_then_change_then_restore_brings_the_data_back() {
    for backend in backends() {
        for encryption in [false, true] {
            let s = TestServer::start_on(backend).await;
            let admin = s.admin_token().await;
            create_named(&s, &admin, "kept").await;
            let body =
                json!({ "include": ["configuration", "database"], "compression": true, "encryption": encryption });
            let r = s.post_as(&admin, "/api/v1/backup", body).await;
            assert_eq!(r.status, 200, "{}", r.text);
            let b = data(&r).clone();
            assert_eq!(b["status"], "created", "{b}");
            assert!(b["size_bytes"].as_u64().is_some_and(|n| n > 0), "{b}");
            assert_eq!(b["encryption"], encryption);
            let id = b["backup_id"].as_str().unwrap_or_default().to_string();
            let r = s.get_as(&admin, "/api/v1/backup").await;
            assert_eq!(data(&r)["backups"][0]["id"], id.as_str(), "{}", r.text);

            // The download is the archive, whole or by range.
            let url = format!("/api/v1/backup/{id}/download");
            let full = s.client.get(s.url(&url)).bearer_auth(&admin).send().await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(full.status(), 200);
            let bytes = full.bytes().await.unwrap_or_default();
            assert_eq!(bytes.len() as u64, b["size_bytes"].as_u64().unwrap_or(0));
            let part = s
                .client
                .get(s.url(&url))
                .bearer_auth(&admin)
                .header("Range", "bytes=0-9")
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(part.status(), 206);
            assert_eq!(part.bytes().await.unwrap_or_default().as_ref(), bytes.get(..10).unwrap_or_default());

            create_named(&s, &admin, "added").await;
            let path = format!("/api/v1/backup/{id}/restore");
            let r = s.post_as(&admin, &path, json!({ "components": ["database"] })).await;
            assert_eq!(r.status, 400, "confirm is required: {}", r.text);
            let r = s.post_as(&admin, &path, json!({ "components": ["database"], "confirm": true })).await;
            assert_eq!(r.status, 200, "{}", r.text);
            assert_eq!(data(&r)["status"], "started");
            let task_id = data(&r)["restore_id"].as_str().unwrap_or_default().to_string();
            let t = finished_task(&s, &admin, &task_id).await;
            assert_eq!(t["status"], "completed", "{backend:?} encryption={encryption}: {t}");
            assert!(t["result"]["rows_restored"].as_u64().is_some_and(|n| n > 0), "{t}");
            assert!(user_exists(&s, &admin, "kept").await);
            assert!(!user_exists(&s, &admin, "added").await, "{backend:?} encryption={encryption}");
        }
    }
}

#[tokio::test]
async fn a_flipped_byte_is_refused_with_nothing_changed() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let r = s.post_as(&admin, "/api/v1/backup", json!({ "include": ["database"], "compression": false })).await;
    let b = data(&r).clone();
    let id = b["backup_id"].as_str().unwrap_or_default().to_string();
    create_named(&s, &admin, "after.backup").await;
    let dir = s.config.data_dir.join("backups");
    let file = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains(&id) && !p.to_string_lossy().ends_with(".json"))
        .unwrap_or_else(|| panic!("no archive in {}", dir.display()));
    let mut bytes = std::fs::read(&file).unwrap_or_default();
    let middle = bytes.len() / 2;
    if let Some(b) = bytes.get_mut(middle) {
        *b ^= 0x01;
    }
    std::fs::write(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let r = s.post_as(&admin, &format!("/api/v1/backup/{id}/restore"), json!({ "confirm": true })).await;
    let task_id = data(&r)["restore_id"].as_str().unwrap_or_default().to_string();
    let t = finished_task(&s, &admin, &task_id).await;
    assert_eq!(t["status"], "failed", "{t}");
    assert!(t["error"].as_str().is_some_and(|e| e.contains("SHA-256")), "{t}");
    assert!(user_exists(&s, &admin, "after.backup").await, "nothing changed");

    // Permissions and unknown ids.
    let viewer = s.user_token("viewer1", &["viewer"]).await;
    assert_eq!(s.get_as(&viewer, "/api/v1/backup").await.status, 403);
    assert_eq!(s.post_as(&viewer, "/api/v1/backup", json!({})).await.status, 403);
    let r = s.post_as(&admin, "/api/v1/backup/backup_nope/restore", json!({ "confirm": true })).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(s.get_as(&admin, "/api/v1/backup/..%2Fx/download").await.status, 404);
    let r = s.post_as(&admin, "/api/v1/backup", json!({ "include": ["everything"] })).await;
    assert_eq!(r.status, 400);
}

async fn nexus_cli(dir: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args(args)
        .args(["--data-dir", dir])
        .env_remove("NEXUS_DATABASE_URL")
        .env_remove("NEXUS_REDIS_URL")
        .env_remove("NEXUS_MASTER_KEY")
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run nexus: {e}"))
}

#[tokio::test]
async fn nexus_backup_creates_lists_verifies_and_restores_from_the_shell() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    create_named(&s, &admin, "before.cli").await;
    let dir = s.config.data_dir.to_string_lossy().to_string();
    let out = nexus_cli(&dir, &["backup", "create", "--include", "database", "--encrypt"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = stdout.split_whitespace().nth(1).unwrap_or_default().trim_end_matches(':').to_string();
    assert!(id.starts_with("backup_"), "{stdout}");
    let out = nexus_cli(&dir, &["backup", "list"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
    let out = nexus_cli(&dir, &["backup", "verify", &id]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact"));
    // The server sees the backup too.
    let r = s.get_as(&admin, "/api/v1/backup").await;
    assert!(data(&r)["backups"].as_array().is_some_and(|b| b.iter().any(|b| b["id"] == id.as_str())));

    create_named(&s, &admin, "after.cli").await;
    let out = nexus_cli(&dir, &["backup", "restore", &id]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("confirm"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = nexus_cli(&dir, &["backup", "restore", &id, "--yes"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(user_exists(&s, &admin, "before.cli").await);
    assert!(!user_exists(&s, &admin, "after.cli").await);
}

#[tokio::test]
async fn a_backup_under_write_load_delays_no_write_past_the_bound() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let admin = s.admin_token().await;
        // Some data to copy: 10,000 events with a little payload each.
        for batch in 0..10 {
            let events: Vec<Value> = (0..1000)
                .map(|i| json!({ "event_name": "seed", "event_category": "load", "properties": { "n": i, "batch": batch, "pad": "x".repeat(200) } }))
                .collect();
            let r = s.post_as(&admin, "/v2/analytics/events", json!({ "events": events })).await;
            assert_eq!(r.status, 202, "{}", r.text);
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (client, url, token, stop) =
                (s.client.clone(), s.url("/v2/analytics/events"), admin.clone(), stop.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let started = Instant::now();
                    let r = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({ "event_name": "write", "event_category": "load" }))
                        .send()
                        .await;
                    assert!(r.is_ok_and(|r| r.status() == 202));
                    latencies.push(started.elapsed());
                }
                latencies
            })
        };
        let r = s.post_as(&admin, "/api/v1/backup", json!({ "include": ["database"], "compression": true })).await;
        assert_eq!(data(&r)["status"], "created", "{}", r.text);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut latencies = writer.await.unwrap_or_else(|e| panic!("writer: {e}"));
        latencies.sort();
        let p99 = latencies.get(latencies.len() * 99 / 100).copied().unwrap_or_default();
        let max = latencies.last().copied().unwrap_or_default();
        eprintln!("{backend:?}: {} writes during the backup, p99 {p99:?}, max {max:?}", latencies.len());
        assert!(!latencies.is_empty());
        // The bound is 100 ms (bench `backup_under_load` measures it in a release build); an
        // unoptimised build on a busy machine gets more room, still far below a blocked write.
        let bound = Duration::from_millis(if cfg!(debug_assertions) { 300 } else { 100 });
        assert!(p99 <= bound, "{backend:?}: writes p99 {p99:?} (max {max:?}) during a backup");
    }
}

#[tokio::test]
async fn scheduled_backups_run_each_matching_minute_and_old_ones_go() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.plugins.insert("ops".into(), json!({ "backup_schedule": "* * * * *", "backup_keep": 1 }));
    })
    .await;
    let admin = s.admin_token().await;
    let scheduled = |r: &Reply| -> Vec<String> {
        r.json["data"]["backups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["type"] == "scheduled")
            .filter_map(|b| b["id"].as_str().map(str::to_string))
            .collect()
    };
    let (sr, ar) = (&s, admin.as_str());
    let first = until("the first scheduled backup", move || async move {
        let r = sr.get_as(ar, "/api/v1/backup").await;
        let ids = scheduled(&r);
        (ids.len() == 1).then(|| json!(ids))
    })
    .await;
    // The next minute's run replaces it (keep = 1).
    s.kernel().clock.advance(Duration::from_secs(60));
    let first = &first;
    let second = until("the next minute's backup", move || async move {
        let r = sr.get_as(ar, "/api/v1/backup").await;
        let ids = scheduled(&r);
        (ids.len() == 1 && json!(ids) != *first).then(|| json!(ids))
    })
    .await;
    // The backup file is written (and the older one pruned) just before its task is marked
    // completed.
    until("both backup tasks completed", move || async move {
        let r = sr.get_as(ar, "/api/v1/tasks?type=backup&status=completed").await;
        r.json["data"]["tasks"].as_array().is_some_and(|t| t.len() >= 2).then_some(Value::Null)
    })
    .await;
    let r = s.get_as(&admin, "/api/v1/config?section=ops").await;
    assert_eq!(data(&r)["ops"]["backup_schedule"], "* * * * *");
    assert!(second.is_array());
    let r = s
        .call_as(&admin, Method::PUT, "/api/v1/config", Some(json!({ "ops": { "backup_schedule": "61 * * * *" } })))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
}
