//! `/api/plugins`: the framework seed's plugin management, over [`PluginManager`].

use std::sync::Arc;

use axum::extract::{FromRequest as _, State};
use axum::http::StatusCode;
use nexus_identity::Auth;
use nexus_kernel::plugin::{Reconfigured, Slot, Status};
use nexus_web::{ApiError, Json, Path, Query};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ManagerError;
use crate::service::{InstallRequest, InstallSource, ListFilter, PluginManager};

type Api = State<Arc<PluginManager>>;

impl From<ManagerError> for ApiError {
    fn from(err: ManagerError) -> Self {
        nexus_kernel::error::Failure::from(err).into()
    }
}

pub fn routes(manager: Arc<PluginManager>) -> nexus_web::Routes {
    OpenApiRouter::new()
        .routes(routes!(list_plugins))
        .routes(routes!(install_plugin))
        .routes(routes!(get_plugin, uninstall_plugin))
        .routes(routes!(set_status))
        .routes(routes!(set_config))
        .routes(routes!(rollback_plugin))
        .with_state(manager)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only plugins of this category (`core`, `security`, `integration`, …).
    category: Option<String>,
    /// `active`, `inactive` or `error`.
    #[param(pattern = "^(active|inactive|error)$")]
    status: Option<String>,
    /// Page number, from 1.
    #[param(minimum = 1)]
    page: Option<u32>,
    /// Items per page, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PluginSummary {
    id: String,
    name: String,
    category: String,
    version: String,
    /// `active`, `inactive` or `error`.
    status: &'static str,
    description: String,
    author: String,
    /// Ids of the plugins it needs.
    dependencies: Vec<String>,
    /// Paths it serves.
    api_endpoints: Vec<String>,
    enabled: bool,
    /// Its configuration, credentials masked (`null` for a plugin without one).
    #[schema(value_type = Object, nullable = true)]
    config: Value,
    /// Why it is disabled or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PluginList {
    total: usize,
    page: u32,
    limit: u32,
    plugins: Vec<PluginSummary>,
}

fn summary(slot: &Slot) -> PluginSummary {
    let m = &slot.manifest;
    let mut paths: Vec<String> = slot.endpoints().into_iter().map(|e| e.path).collect();
    paths.dedup();
    PluginSummary {
        id: m.id.clone(),
        name: m.name.clone(),
        category: m.category.clone(),
        version: m.version.clone(),
        status: slot.status().as_str(),
        description: m.description.clone(),
        author: m.author.clone(),
        dependencies: m.dependencies.keys().cloned().collect(),
        api_endpoints: paths,
        enabled: slot.is_enabled(),
        config: slot.config(),
        reason: slot.reason(),
    }
}

/// List plugins, filtered by category and status, a page at a time.
#[utoipa::path(get, path = "/api/plugins", tag = "plugins", params(ListParams),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = PluginList),
              (status = 400, description = "Invalid parameter"),
              (status = 401, description = "Not authenticated")))]
async fn list_plugins(State(m): Api, Auth(p): Auth, Query(q): Query<ListParams>) -> Result<Json<PluginList>, ApiError> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            Status::parse(s)
                .ok_or_else(|| ApiError::invalid_field("status", "must be one of active, inactive, error"))?,
        ),
    };
    let page = q.page.unwrap_or(1);
    let limit = q.limit.unwrap_or(20);
    if page == 0 {
        return Err(ApiError::invalid_field("page", "must be at least 1"));
    }
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid_field("limit", "must be between 1 and 100"));
    }
    let all = m.list(&p, &ListFilter { category: q.category, status });
    let skip = usize::try_from((u64::from(page) - 1) * u64::from(limit)).unwrap_or(usize::MAX);
    let plugins = all.iter().skip(skip).take(limit as usize).map(|s| summary(s)).collect();
    Ok(Json(PluginList { total: all.len(), page, limit, plugins }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointView {
    path: String,
    method: String,
    description: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PluginMetrics {
    total_requests: u64,
    average_response_time_ms: f64,
    /// Share of requests answered with a server error, 0–1.
    error_rate: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PluginDetail {
    id: String,
    name: String,
    category: String,
    version: String,
    status: &'static str,
    enabled: bool,
    description: String,
    author: String,
    license: String,
    repository: Option<String>,
    /// Plugin id → semver requirement.
    dependencies: std::collections::BTreeMap<String, String>,
    /// Enabled plugins that need this one.
    dependents: Vec<String>,
    /// Permissions it checks.
    permissions: Vec<String>,
    api_endpoints: Vec<EndpointView>,
    /// Its configuration, credentials masked (`null` for a plugin without one).
    #[schema(value_type = Object, nullable = true)]
    configuration: Value,
    /// JSON Schema of its configuration.
    #[schema(value_type = Object)]
    config_schema: Value,
    /// WebSocket channels it contributes.
    channels: Vec<String>,
    essential: bool,
    builtin: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    updated_at: Option<String>,
    /// Measured at the edge since this process started.
    metrics: PluginMetrics,
}

fn detail(m: &PluginManager, slot: &Slot) -> PluginDetail {
    let man = &slot.manifest;
    let traffic = slot.traffic.report();
    PluginDetail {
        id: man.id.clone(),
        name: man.name.clone(),
        category: man.category.clone(),
        version: man.version.clone(),
        status: slot.status().as_str(),
        enabled: slot.is_enabled(),
        description: man.description.clone(),
        author: man.author.clone(),
        license: man.license.clone(),
        repository: man.repository.clone(),
        dependencies: man.dependencies.clone(),
        dependents: m.dependents(slot.id()),
        permissions: man.permissions.iter().map(|p| p.name.clone()).collect(),
        api_endpoints: slot
            .endpoints()
            .into_iter()
            .map(|e| EndpointView { path: e.path, method: e.method, description: e.description })
            .collect(),
        configuration: slot.config(),
        config_schema: man.config_schema.clone(),
        channels: man.channels.iter().map(|c| c.name.clone()).collect(),
        essential: man.essential,
        builtin: man.builtin,
        reason: slot.reason(),
        updated_at: slot.updated_at().map(|t| t.to_rfc3339()),
        metrics: PluginMetrics {
            total_requests: traffic.total_requests,
            average_response_time_ms: traffic.average_response_time_ms,
            error_rate: traffic.error_rate,
        },
    }
}

/// One plugin: manifest, endpoints, configuration and measured traffic.
#[utoipa::path(get, path = "/api/plugins/{plugin_id}", tag = "plugins",
    params(("plugin_id" = String, Path)), security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = PluginDetail),
              (status = 401, description = "Not authenticated"),
              (status = 404, description = "No such plugin")))]
async fn get_plugin(State(m): Api, Auth(p): Auth, Path(id): Path<String>) -> Result<Json<PluginDetail>, ApiError> {
    let slot = m.get(&p, &id)?;
    Ok(Json(detail(&m, &slot)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    enabled: bool,
    /// Shown with the 503 its routes answer while disabled.
    reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusAnswer {
    plugin_id: String,
    enabled: bool,
    status: &'static str,
    message: String,
}

/// Enable or disable a plugin on every route and event, at once and across restarts.
#[utoipa::path(put, path = "/api/plugins/{plugin_id}/status", tag = "plugins", request_body = StatusBody,
    params(("plugin_id" = String, Path)), security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = StatusAnswer),
              (status = 400, description = "Invalid body"),
              (status = 401, description = "Not authenticated"),
              (status = 403, description = "Needs plugins.admin"),
              (status = 404, description = "No such plugin"),
              (status = 409, description = "Essential, needed by enabled plugins, or needs disabled ones")))]
async fn set_status(
    State(m): Api,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(body): Json<StatusBody>,
) -> Result<Json<StatusAnswer>, ApiError> {
    let slot = m.set_enabled(&p, &id, body.enabled, body.reason).await?;
    let verb = if body.enabled { "enabled" } else { "disabled" };
    Ok(Json(StatusAnswer {
        plugin_id: id,
        enabled: slot.is_enabled(),
        status: slot.status().as_str(),
        message: format!("Plugin {verb} successfully"),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigBody {
    /// Keys to change (a JSON merge patch over the current configuration).
    #[schema(value_type = Object)]
    config: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigAnswer {
    plugin_id: String,
    /// The configuration in effect after the change, credentials masked.
    #[schema(value_type = Object)]
    config: Value,
    /// Whether the change waits for the next start.
    restart_required: bool,
    message: String,
}

/// Change a plugin's configuration: validated, stored, applied live where the plugin can.
#[utoipa::path(put, path = "/api/plugins/{plugin_id}/config", tag = "plugins", request_body = ConfigBody,
    params(("plugin_id" = String, Path)), security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = ConfigAnswer),
              (status = 400, description = "Invalid configuration; details name each field"),
              (status = 401, description = "Not authenticated"),
              (status = 403, description = "Needs plugins.admin"),
              (status = 404, description = "No such plugin")))]
async fn set_config(
    State(m): Api,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(body): Json<ConfigBody>,
) -> Result<Json<ConfigAnswer>, ApiError> {
    let (slot, applied) = m.configure(&p, &id, &body.config).await?;
    let restart_required = applied == Reconfigured::RestartRequired;
    let message = if restart_required {
        "Configuration updated successfully; it takes effect at the next restart"
    } else {
        "Configuration updated successfully"
    };
    Ok(Json(ConfigAnswer { plugin_id: id, config: slot.config(), restart_required, message: message.into() }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UninstallParams {
    /// Also delete the plugin's data (its key-value store); kept otherwise.
    purge: Option<bool>,
}

/// Uninstall a plugin installed at run time: its routes and RPC methods disappear at once;
/// its data is kept unless `purge=true`. Built-in plugins cannot be uninstalled.
#[utoipa::path(delete, path = "/api/plugins/{plugin_id}", tag = "plugins",
    params(("plugin_id" = String, Path), UninstallParams), security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Uninstalled"),
              (status = 401, description = "Not authenticated"),
              (status = 403, description = "Needs plugins.admin"),
              (status = 404, description = "No such plugin"),
              (status = 409, description = "A built-in plugin, or needed by enabled plugins")))]
async fn uninstall_plugin(
    State(m): Api,
    Auth(p): Auth,
    Path(id): Path<String>,
    Query(q): Query<UninstallParams>,
) -> Result<Json<Value>, ApiError> {
    let purge = q.purge.unwrap_or(false);
    m.uninstall(&p, &id, purge).await?;
    Ok(Json(json!({
        "plugin_id": id, "status": "uninstalled", "data_purged": purge,
        "message": "Plugin uninstalled successfully",
    })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallBody {
    /// `registry`: from `plugins.registry_dir`.
    source: String,
    /// A plugin id or package name in the registry.
    package: String,
    /// Newest when absent.
    version: Option<String>,
    /// Capabilities granted, a subset of those the manifest asks for; all of them when absent.
    grant: Option<Vec<String>>,
}

/// Install or upgrade a WebAssembly plugin, from the registry directory
/// (`{"source": "registry", "package", "version"}`) or as a `multipart/form-data` upload (the
/// package in part `file`, an optional detached signature in part `signature`, optional
/// `grant`: capabilities, comma separated). All or nothing: validate, check dependencies,
/// compile, test (`init`), activate.
#[utoipa::path(post, path = "/api/plugins/install", tag = "plugins", request_body = InstallBody,
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 201, description = "Installed or upgraded; the steps taken"),
              (status = 400, description = "Invalid package, manifest, signature or request"),
              (status = 401, description = "Not authenticated"),
              (status = 403, description = "Needs plugins.admin"),
              (status = 404, description = "No such package in the registry"),
              (status = 409, description = "Route collision, missing dependency, or not newer than installed"),
              (status = 501, description = "The WebAssembly plugin host is not running")))]
async fn install_plugin(
    State(m): Api,
    Auth(p): Auth,
    req: axum::extract::Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let multipart = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    let request = if multipart {
        let mut form = axum::extract::Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::invalid_field("body", e.body_text()))?;
        let (mut file, mut signature, mut grant) = (None, None, None);
        while let Some(field) = form.next_field().await.map_err(|e| ApiError::invalid_field("body", e.body_text()))? {
            let name = field.name().unwrap_or_default().to_string();
            let bytes = field.bytes().await.map_err(|e| ApiError::invalid_field(name.clone(), e.body_text()))?;
            match name.as_str() {
                "file" => file = Some(bytes.to_vec()),
                "signature" => signature = Some(bytes.to_vec()),
                "grant" => {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    grant =
                        Some(text.split(',').map(str::trim).filter(|g| !g.is_empty()).map(str::to_string).collect());
                }
                other => return Err(ApiError::invalid_field(other, "unknown part; expected file, signature or grant")),
            }
        }
        let file = file.ok_or_else(|| ApiError::invalid_field("file", "the package is required in part `file`"))?;
        InstallRequest { source: InstallSource::Upload { file, signature }, grant }
    } else {
        let Json(body) = Json::<InstallBody>::from_request(req, &()).await?;
        if body.source != "registry" {
            return Err(ApiError::invalid_field(
                "source",
                "must be `registry` (or upload the package as multipart/form-data)",
            ));
        }
        InstallRequest {
            source: InstallSource::Registry { package: body.package, version: body.version },
            grant: body.grant,
        }
    };
    let answer = m.install(&p, request).await?;
    Ok((StatusCode::CREATED, Json(answer)))
}

/// Return a plugin installed at run time to the version it had before its last upgrade.
#[utoipa::path(post, path = "/api/plugins/{plugin_id}/rollback", tag = "plugins",
    params(("plugin_id" = String, Path)), security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Rolled back"),
              (status = 401, description = "Not authenticated"),
              (status = 403, description = "Needs plugins.admin"),
              (status = 404, description = "No such plugin"),
              (status = 409, description = "A built-in plugin, or no previous version")))]
async fn rollback_plugin(State(m): Api, Auth(p): Auth, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(m.rollback(&p, &id).await?))
}
