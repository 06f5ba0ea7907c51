//! The operations API's HTTP surface: `/api/v1/...` in the v1 envelope
//! (`{"success": true, "data": …}`), the same routes under `/api/v1/core/...`, the probes
//! `/livez` and `/readyz`, and the framework's `/api/system/info` and `/api/system/config`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use nexus_identity::Auth;
use nexus_kernel::clock::Timestamp;
use nexus_web::{ApiError, Json, Path, Query};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Ops;

nexus_web::http_error!(crate::OpsError);

type Api = State<Arc<Ops>>;
type Answer = Result<Json<Value>, ApiError>;

/// The v1 envelope.
fn ok(data: Value) -> Answer {
    Ok(Json(json!({ "success": true, "data": data })))
}

pub fn routes(ops: Arc<Ops>) -> nexus_web::Routes {
    let documented = OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(components_health))
        .routes(routes!(diagnostics))
        .routes(routes!(get_config, put_config))
        .routes(routes!(metrics))
        .routes(routes!(metrics_summary))
        .routes(routes!(services))
        .routes(routes!(service))
        .routes(routes!(restart))
        .routes(routes!(cache_status))
        .routes(routes!(clear_cache))
        .routes(routes!(tasks))
        .routes(routes!(task, cancel_task))
        .routes(routes!(security_status))
        .routes(routes!(security_scan))
        .routes(routes!(livez))
        .routes(routes!(readyz))
        .routes(routes!(system_info))
        .routes(routes!(system_config))
        .routes(routes!(create_backup, list_backups))
        .routes(routes!(download_backup))
        .routes(routes!(restore_backup));
    // The seed's base URL `/api/v1/core`: the same handlers (documented once, above).
    let alias = OpenApiRouter::new()
        .route("/api/v1/core/health", get(core_health))
        .route("/api/v1/core/status", get(status))
        .route("/api/v1/core/components/health", get(components_health))
        .route("/api/v1/core/components/diagnostics", post(diagnostics))
        .route("/api/v1/core/config", get(get_config).put(put_config))
        .route("/api/v1/core/metrics", get(metrics))
        .route("/api/v1/core/metrics/summary", get(metrics_summary))
        .route("/api/v1/core/services", get(services))
        .route("/api/v1/core/services/{name}", get(service))
        .route("/api/v1/core/services/{name}/restart", post(restart))
        .route("/api/v1/core/cache/status", get(cache_status))
        .route("/api/v1/core/cache", delete(clear_cache))
        .route("/api/v1/core/tasks", get(tasks))
        .route("/api/v1/core/tasks/{id}", get(task).delete(cancel_task))
        .route("/api/v1/core/security/status", get(security_status))
        .route("/api/v1/core/security/scan", post(security_scan))
        .route("/api/v1/core/backup", get(list_backups).post(create_backup))
        .route("/api/v1/core/backup/{id}/download", get(download_backup))
        .route("/api/v1/core/backup/{id}/restore", post(restore_backup));
    documented.merge(alias).with_state(ops)
}

/// A JSON body that may be absent (no bytes): `None` then.
fn optional_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    nexus_web::extract::parse_json(body).map(Some)
}

fn no_store(response: Answer) -> Response {
    match response {
        Ok(body) => ([(CACHE_CONTROL, "no-store")], body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// System status from real probes (`read:system`).
#[utoipa::path(get, path = "/api/v1/status", tag = "ops", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Status of each component"), (status = 403, description = "PERMISSION_DENIED")))]
async fn status(State(ops): Api, Auth(p): Auth) -> Response {
    no_store(async { ok(ops.status(&p).await?) }.await)
}

/// Health checks of each component with their measured values (`read:system`).
#[utoipa::path(get, path = "/api/v1/components/health", tag = "ops", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Checks per component")))]
async fn components_health(State(ops): Api, Auth(p): Auth) -> Response {
    no_store(async { ok(ops.components_health(&p).await?) }.await)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct DiagnosticsBody {
    /// `database`, `cache`, `event_bus`, `storage` (default: all).
    components: Option<Vec<String>>,
    /// `connectivity`, `performance`, `stress` (default: all).
    tests: Option<Vec<String>>,
}

/// Runs diagnostics as a task and answers with its results (`admin:services`).
#[utoipa::path(post, path = "/api/v1/components/diagnostics", tag = "ops", request_body = DiagnosticsBody,
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The run's results, or the task still running")))]
async fn diagnostics(State(ops): Api, Auth(p): Auth, body: Bytes) -> Answer {
    let body: Option<DiagnosticsBody> = optional_body(&body)?;
    let (components, tests) = body.map_or((None, None), |b| (b.components, b.tests));
    ok(crate::diagnostics::run(&ops, &p, components, tests).await?)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ConfigQuery {
    /// One section (`server`, `database`, …).
    section: Option<String>,
    /// `false` shows credentials (needs `admin:config`); default `true`.
    mask_secrets: Option<String>,
}

fn parse_bool(field: &str, value: Option<&str>, default: bool) -> Result<bool, ApiError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(_) => Err(ApiError::invalid_field(field, "must be true or false")),
    }
}

/// The configuration in effect, credentials masked (`read:system`; unmasked: `admin:config`).
#[utoipa::path(get, path = "/api/v1/config", tag = "ops", params(ConfigQuery), security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Configuration sections")))]
async fn get_config(State(ops): Api, Auth(p): Auth, Query(q): Query<ConfigQuery>) -> Response {
    no_store(
        async {
            let mask = parse_bool("mask_secrets", q.mask_secrets.as_deref(), true)?;
            ok(ops.config(&p, q.section.as_deref(), mask)?)
        }
        .await,
    )
}

/// Changes configuration sections: validated, stored, applied live where possible
/// (`admin:config`).
#[utoipa::path(put, path = "/api/v1/config", tag = "ops", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "`updated_keys` and `restart_required`"), (status = 400, description = "VALIDATION_ERROR")))]
async fn put_config(State(ops): Api, Auth(p): Auth, Json(body): Json<Value>) -> Answer {
    ok(ops.update_config(&p, &body).await?)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct MetricsQuery {
    /// RFC 3339; default: an hour before `end_time`.
    start_time: Option<String>,
    /// RFC 3339; default: now.
    end_time: Option<String>,
    /// `1m`, `5m`, `15m`, `1h` or `1d` (default `1m`).
    resolution: Option<String>,
}

fn time(field: &str, value: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    value
        .map(|v| Timestamp::parse_rfc3339(v).ok_or_else(|| ApiError::invalid_field(field, "must be an RFC 3339 time")))
        .transpose()
}

/// Requests per second, response time, memory and CPU over time (`read:metrics`).
#[utoipa::path(get, path = "/api/v1/metrics", tag = "ops", params(MetricsQuery), security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Time series")))]
async fn metrics(State(ops): Api, Auth(p): Auth, Query(q): Query<MetricsQuery>) -> Response {
    no_store(
        async {
            let start = time("start_time", q.start_time.as_deref())?;
            let end = time("end_time", q.end_time.as_deref())?;
            ok(ops.metrics(&p, start, end, q.resolution.as_deref())?)
        }
        .await,
    )
}

/// Totals, success rate, percentiles, errors by status and resources (`read:metrics`).
#[utoipa::path(get, path = "/api/v1/metrics/summary", tag = "ops", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Summary of the kept window")))]
async fn metrics_summary(State(ops): Api, Auth(p): Auth) -> Response {
    no_store(async { ok(ops.metrics_summary(&p).await?) }.await)
}

/// Every kernel service and plugin with its state and counters (`read:system`).
#[utoipa::path(get, path = "/api/v1/services", tag = "ops", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Services")))]
async fn services(State(ops): Api, Auth(p): Auth) -> Response {
    no_store(async { ok(ops.services(&p).await?) }.await)
}

/// One service in detail (`read:system`).
#[utoipa::path(get, path = "/api/v1/services/{name}", tag = "ops", security(("bearer" = []), ("api_key" = [])),
    params(("name" = String, Path, description = "Service name")),
    responses((status = 200, description = "The service"), (status = 404, description = "RESOURCE_NOT_FOUND")))]
async fn service(State(ops): Api, Auth(p): Auth, Path(name): Path<String>) -> Response {
    no_store(async { ok(ops.service(&p, &name).await?) }.await)
}

/// Restarts a service in place and reports the measured duration (`admin:services`).
#[utoipa::path(post, path = "/api/v1/services/{name}/restart", tag = "ops", security(("bearer" = []), ("api_key" = [])),
    params(("name" = String, Path, description = "Service name")),
    responses((status = 200, description = "Restarted"), (status = 404, description = "RESOURCE_NOT_FOUND"),
              (status = 409, description = "Cannot be restarted in place")))]
async fn restart(State(ops): Api, Auth(p): Auth, Path(name): Path<String>) -> Answer {
    ok(ops.restart(&p, &name).await?)
}

/// Cache statistics per level and per cache (`read:system`).
#[utoipa::path(get, path = "/api/v1/cache/status", tag = "ops", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Cache statistics")))]
async fn cache_status(State(ops): Api, Auth(p): Auth) -> Response {
    no_store(async { ok(ops.cache_status(&p).await?) }.await)
}

#[derive(Debug, Default, Deserialize, IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
struct ClearParams {
    /// Glob over `<cache>:<key>` (`user:*`); default `*`.
    pattern: Option<String>,
    /// `L1`, `L2` or `all` (default; any case).
    #[param(pattern = "^([Ll][12]|[Aa][Ll][Ll])?$")]
    #[schema(pattern = "^([Ll][12]|[Aa][Ll][Ll])?$")]
    level: Option<String>,
}

/// Clears cache entries by pattern and level, here and on the other instances (`write:cache`).
#[utoipa::path(delete, path = "/api/v1/cache", tag = "ops", params(ClearParams), security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "`cleared_keys`, `pattern`, `levels`")))]
async fn clear_cache(
    State(ops): Api,
    Auth(p): Auth,
    Query(q): Query<ClearParams>,
    _h: HeaderMap,
    body: Bytes,
) -> Answer {
    let body: ClearParams = optional_body(&body)?.unwrap_or_default();
    let pattern = q.pattern.or(body.pattern);
    let level = q.level.or(body.level);
    ok(ops.clear_cache(&p, pattern.as_deref(), level.as_deref()).await?)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TasksQuery {
    /// `pending`, `running`, `completed`, `failed` or `cancelled`.
    status: Option<String>,
    /// Task type (`diagnostics`, `security_scan`, …).
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Background tasks, newest first (`read:system`).
#[utoipa::path(get, path = "/api/v1/tasks", tag = "ops", params(TasksQuery), security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Tasks")))]
async fn tasks(State(ops): Api, Auth(p): Auth, Query(q): Query<TasksQuery>) -> Response {
    no_store(async { ok(ops.tasks(&p, q.status.as_deref(), q.kind.as_deref()).await?) }.await)
}

/// One task with its steps and logs (`read:system`).
#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "ops", security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "Task id")),
    responses((status = 200, description = "The task"), (status = 404, description = "RESOURCE_NOT_FOUND")))]
async fn task(State(ops): Api, Auth(p): Auth, Path(id): Path<String>) -> Response {
    no_store(async { ok(ops.task(&p, &id).await?) }.await)
}

/// Cancels a pending or running task; 409 once it has ended (own tasks, or `admin:services`).
#[utoipa::path(delete, path = "/api/v1/tasks/{id}", tag = "ops", security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "Task id")),
    responses((status = 200, description = "Cancelled"), (status = 404, description = "RESOURCE_NOT_FOUND"),
              (status = 409, description = "The task has already ended")))]
async fn cancel_task(State(ops): Api, Auth(p): Auth, Path(id): Path<String>) -> Answer {
    ok(ops.cancel_task(&p, &id).await?)
}

/// Failed logins, throttling, sessions, API keys and alerts (`admin:security`).
#[utoipa::path(get, path = "/api/v1/security/status", tag = "ops", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Security status")))]
async fn security_status(State(ops): Api, Auth(p): Auth) -> Response {
    no_store(async { ok(crate::security::status(&ops, &p).await?) }.await)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct ScanBody {
    /// `full` (default) or `quick`.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// `plugins`, `configuration`, `permissions` (default: all).
    components: Option<Vec<String>>,
    /// Findings below it are left out: `info`, `low` (default), `medium`, `high`, `critical`.
    severity_threshold: Option<String>,
}

/// Starts a security scan as a task (`admin:security`); its findings are the task's result.
#[utoipa::path(post, path = "/api/v1/security/scan", tag = "ops", request_body = ScanBody,
    security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "Started")))]
async fn security_scan(State(ops): Api, Auth(p): Auth, body: Bytes) -> Answer {
    let body: Option<ScanBody> = optional_body(&body)?;
    let (kind, components, threshold) =
        body.map_or((None, None, None), |b| (b.kind, b.components, b.severity_threshold));
    ok(crate::security::scan(&ops, &p, kind, components, threshold).await?)
}

/// Liveness: the process answers requests.
#[utoipa::path(get, path = "/livez", tag = "ops-probes", responses((status = 200, description = "Alive")))]
async fn livez(State(ops): Api) -> Response {
    ([(CACHE_CONTROL, "no-store")], Json(ops.live())).into_response()
}

/// Readiness: the database (and Redis) answer and every plugin started; else 503.
#[utoipa::path(get, path = "/readyz", tag = "ops-probes",
    responses((status = 200, description = "Ready"), (status = 503, description = "Not ready")))]
async fn readyz(State(ops): Api) -> Response {
    let (ready, body) = ops.ready().await;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// `GET /api/v1/core/health`: the same answer as `/api/v1/health`.
async fn core_health(State(ops): Api) -> Response {
    let healthy = ops.kernel.health().await.healthy();
    let body = json!({ "status": if healthy { "ok" } else { "error" }, "timestamp": Timestamp::now().to_rfc3339() });
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// Framework: version, platform, plugins, sessions, uptime, memory and CPU (`read:system`).
#[utoipa::path(get, path = "/api/system/info", tag = "ops", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "System information")))]
async fn system_info(State(ops): Api, Auth(p): Auth) -> Result<Response, ApiError> {
    let body = ops.system_info(&p).await?;
    Ok(([(CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// Framework: what the server runs on, without credentials (`read:system`).
#[utoipa::path(get, path = "/api/system/config", tag = "ops", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "System configuration")))]
async fn system_config(State(ops): Api, Auth(p): Auth) -> Result<Json<Value>, ApiError> {
    Ok(Json(ops.system_config(&p)?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct BackupBody {
    /// `configuration`, `database`, `plugins` (default: all).
    include: Option<Vec<String>>,
    /// zstd (default `true`).
    compression: Option<bool>,
    /// AES-256-GCM under a key derived from the master key (default `false`).
    encryption: Option<bool>,
}

/// Creates a backup as a task and answers when it is written (`admin:backup`).
#[utoipa::path(post, path = "/api/v1/backup", tag = "ops", request_body = BackupBody,
    security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "The backup, or its task still running")))]
async fn create_backup(State(ops): Api, Auth(p): Auth, body: Bytes) -> Answer {
    let body: Option<BackupBody> = optional_body(&body)?;
    let (include, compression, encryption) =
        body.map_or((None, None, None), |b| (b.include, b.compression, b.encryption));
    ok(crate::backup::create(&ops, &p, include, compression.unwrap_or(true), encryption.unwrap_or(false)).await?)
}

/// Backups, newest first (`admin:backup`).
#[utoipa::path(get, path = "/api/v1/backup", tag = "ops", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Backups")))]
async fn list_backups(State(ops): Api, Auth(p): Auth) -> Response {
    no_store(async { ok(crate::backup::list(&ops, &p)?) }.await)
}

/// The backup's archive; one `Range: bytes=…` is honoured (`admin:backup`).
#[utoipa::path(get, path = "/api/v1/backup/{id}/download", tag = "ops", security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "Backup id")),
    responses((status = 200, description = "The archive"), (status = 206, description = "Part of it"),
              (status = 404, description = "RESOURCE_NOT_FOUND"), (status = 416, description = "Range not satisfiable")))]
async fn download_backup(
    State(ops): Api,
    Auth(p): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    use axum::http::header::{ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_RANGE, CONTENT_TYPE, RANGE};
    let (path, meta) = crate::backup::archive(&ops, &p, &id)?;
    let len = meta.size_bytes;
    let disposition = format!("attachment; filename=\"{}\"", meta.file);
    let common = [
        (CONTENT_TYPE, String::from("application/octet-stream")),
        (CONTENT_DISPOSITION, disposition),
        (ACCEPT_RANGES, String::from("bytes")),
    ];
    if let Some(range) = headers.get(RANGE).and_then(|v| v.to_str().ok()) {
        let Some((start, end)) = crate::backup::byte_range(range, len) else {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = format!("bytes */{len}").parse() {
                r.headers_mut().insert(CONTENT_RANGE, v);
            }
            return Ok(r);
        };
        let bytes = tokio::task::spawn_blocking(move || crate::backup::read_range(&path, start, end))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
        let range = (CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
        return Ok((StatusCode::PARTIAL_CONTENT, common, [range], bytes).into_response());
    }
    // Streamed in 64 KiB reads: an archive can be larger than memory should hold.
    let file = tokio::fs::File::open(&path).await.map_err(ApiError::internal)?;
    let stream = futures::stream::unfold(Some(file), |file| async move {
        use tokio::io::AsyncReadExt as _;
        let mut file = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    // Fused: a body can be polled again after its end (once the declared length is sent),
    // which an unfused `unfold` answers with a panic.
    let stream = futures::StreamExt::fuse(stream);
    let length = (axum::http::header::CONTENT_LENGTH, len.to_string());
    Ok((StatusCode::OK, common, [length], axum::body::Body::from_stream(stream)).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct RestoreBody {
    /// `configuration`, `database`, `plugins` (default: what the backup includes).
    components: Option<Vec<String>>,
    /// Must be `true`.
    confirm: Option<bool>,
}

/// Restores a backup as a task: every hash is checked before anything changes (`admin:backup`).
#[utoipa::path(post, path = "/api/v1/backup/{id}/restore", tag = "ops", request_body = RestoreBody,
    security(("bearer" = []), ("api_key" = [])), params(("id" = String, Path, description = "Backup id")),
    responses((status = 200, description = "Started"), (status = 400, description = "Not confirmed"),
              (status = 404, description = "RESOURCE_NOT_FOUND")))]
async fn restore_backup(State(ops): Api, Auth(p): Auth, Path(id): Path<String>, body: Bytes) -> Answer {
    let body: Option<RestoreBody> = optional_body(&body)?;
    let (components, confirm) = body.map_or((None, None), |b| (b.components, b.confirm));
    ok(crate::backup::start_restore(&ops, &p, &id, components, confirm.unwrap_or(false)).await?)
}
