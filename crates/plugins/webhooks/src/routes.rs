//! Webhook endpoints: the framework's `/api/webhooks*` and the media platform's
//! `/webhooks/register`, over one service.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use nexus_identity::Auth;
use nexus_web::{ApiError, Json, Path, Query};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::WebhookError;
use crate::service::{Delivery, NewWebhook, Webhook, WebhookPatch, Webhooks};

nexus_web::http_error!(crate::error::WebhookError);

type Api = State<Arc<Webhooks>>;

pub fn all(webhooks: Arc<Webhooks>) -> nexus_web::Routes {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one, update, replace, delete))
        .routes(routes!(test))
        .routes(routes!(deliveries))
        .routes(routes!(register))
        .with_state(webhooks)
}

/// An event type (`user.created`), a pattern (`user.*`) or `*`.
#[derive(ToSchema)]
#[schema(pattern = r"^(\*|[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*(\.\*)?)$", min_length = 1, max_length = 200)]
pub struct EventPattern(#[allow(dead_code)] String);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// `http(s)://…`; private and loopback targets are refused unless `webhooks.allow_private`.
    #[schema(pattern = "^https?://[A-Za-z0-9][A-Za-z0-9.-]*(:[1-9][0-9]{0,3})?([/?#][!-~]*)?$", max_length = 2048)]
    pub url: String,
    /// Event types or patterns: `user.created`, `user.*`, `*`.
    #[schema(value_type = Vec<EventPattern>, min_items = 1, max_items = 100)]
    pub events: Vec<String>,
    /// The HMAC-SHA256 signing key. Absent: one is generated and returned once.
    #[schema(min_length = 1, max_length = 512)]
    pub secret: Option<String>,
    /// Default `true`.
    pub active: Option<bool>,
    pub description: Option<String>,
}

/// A webhook; its secret is never shown, except a generated one in the creation response.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub active: bool,
    pub description: String,
    pub created_at: String,
    pub updated_at: String,
    /// Consecutive failed delivery attempts.
    pub failure_count: i64,
    /// Why the webhook was disabled automatically, if it was.
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<String>,
    pub last_delivery_at: Option<String>,
    /// Only in the creation response, and only when Nexus generated the secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl WebhookView {
    fn new(w: Webhook, secret: Option<String>) -> Self {
        Self {
            id: w.id,
            url: w.url,
            events: w.events,
            active: w.active,
            description: w.description,
            created_at: w.created_at.to_rfc3339(),
            updated_at: w.updated_at.to_rfc3339(),
            failure_count: w.failure_count,
            disabled_reason: w.disabled_reason,
            disabled_at: w.disabled_at.map(|t| t.to_rfc3339()),
            last_delivery_at: w.last_delivery_at.map(|t| t.to_rfc3339()),
            secret,
        }
    }
}

async fn create_webhook(
    hooks: &Webhooks,
    auth: Auth,
    body: CreateBody,
) -> Result<(StatusCode, Json<WebhookView>), ApiError> {
    let Auth(p) = auth;
    let new = NewWebhook {
        url: body.url,
        events: body.events,
        secret: body.secret,
        active: body.active,
        description: body.description,
    };
    let (w, generated) = hooks.create(&p, new).await?;
    Ok((StatusCode::CREATED, Json(WebhookView::new(w, generated))))
}

/// Register a webhook (`webhook.write`).
#[utoipa::path(post, path = "/api/webhooks", tag = "webhooks", request_body = CreateBody,
    responses((status = 201, body = WebhookView), (status = 400, description = "VALIDATION_ERROR"),
              (status = 403, description = "PERMISSION_DENIED")))]
async fn create(
    State(hooks): Api,
    auth: Auth,
    Json(body): Json<CreateBody>,
) -> Result<(StatusCode, Json<WebhookView>), ApiError> {
    create_webhook(&hooks, auth, body).await
}

/// Register a webhook endpoint (media platform; same service as `POST /api/webhooks`).
#[utoipa::path(post, path = "/webhooks/register", tag = "webhooks", request_body = CreateBody,
    responses((status = 201, body = WebhookView), (status = 400, description = "VALIDATION_ERROR")))]
async fn register(
    State(hooks): Api,
    auth: Auth,
    Json(body): Json<CreateBody>,
) -> Result<(StatusCode, Json<WebhookView>), ApiError> {
    create_webhook(&hooks, auth, body).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
    pub total: usize,
}

/// The caller's webhooks (`webhook.read`; administrators see all).
#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks", responses((status = 200, body = WebhookList)))]
async fn list(State(hooks): Api, Auth(p): Auth) -> Result<Json<WebhookList>, ApiError> {
    let webhooks: Vec<WebhookView> = hooks.list(&p).await?.into_iter().map(|w| WebhookView::new(w, None)).collect();
    Ok(Json(WebhookList { total: webhooks.len(), webhooks }))
}

/// One webhook.
#[utoipa::path(get, path = "/api/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = WebhookView), (status = 404, description = "RESOURCE_NOT_FOUND")))]
async fn get_one(State(hooks): Api, Auth(p): Auth, Path(id): Path<String>) -> Result<Json<WebhookView>, ApiError> {
    Ok(Json(WebhookView::new(hooks.get(&p, &id).await?, None)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    #[schema(pattern = "^https?://[A-Za-z0-9][A-Za-z0-9.-]*(:[1-9][0-9]{0,3})?([/?#][!-~]*)?$", max_length = 2048)]
    pub url: Option<String>,
    #[schema(value_type = Option<Vec<EventPattern>>, min_items = 1, max_items = 100)]
    pub events: Option<Vec<String>>,
    #[schema(min_length = 1, max_length = 512)]
    pub secret: Option<String>,
    /// `true` re-enables a disabled webhook and clears its failure streak.
    pub active: Option<bool>,
    pub description: Option<String>,
}

impl From<UpdateBody> for WebhookPatch {
    fn from(b: UpdateBody) -> Self {
        Self { url: b.url, events: b.events, secret: b.secret, active: b.active, description: b.description }
    }
}

/// Change a webhook; absent fields stay.
#[utoipa::path(patch, path = "/api/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    request_body = UpdateBody, responses((status = 200, body = WebhookView), (status = 404, description = "RESOURCE_NOT_FOUND")))]
async fn update(
    State(hooks): Api,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(body): Json<UpdateBody>,
) -> Result<Json<WebhookView>, ApiError> {
    Ok(Json(WebhookView::new(hooks.update(&p, &id, body.into()).await?, None)))
}

/// Change a webhook (same as `PATCH`).
#[utoipa::path(put, path = "/api/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    request_body = UpdateBody, responses((status = 200, body = WebhookView), (status = 404, description = "RESOURCE_NOT_FOUND")))]
async fn replace(
    hooks: Api,
    auth: Auth,
    id: Path<String>,
    body: Json<UpdateBody>,
) -> Result<Json<WebhookView>, ApiError> {
    update(hooks, auth, id, body).await
}

/// Delete a webhook and its queued deliveries.
#[utoipa::path(delete, path = "/api/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 204), (status = 404, description = "RESOURCE_NOT_FOUND")))]
async fn delete(State(hooks): Api, Auth(p): Auth, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    hooks.delete(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `delivering`, `delivered`, `failed` (given up) or `cancelled`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<String>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub duration_ms: Option<i64>,
    pub created_at: String,
    pub delivered_at: Option<String>,
    /// Whether the latest attempt got a 2xx.
    pub success: bool,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        Self {
            success: d.status == "delivered",
            id: d.id,
            webhook_id: d.webhook_id,
            event_id: d.event_id,
            event_type: d.event_type,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at.map(|t| t.to_rfc3339()),
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            duration_ms: d.duration_ms,
            created_at: d.created_at.to_rfc3339(),
            delivered_at: d.delivered_at.map(|t| t.to_rfc3339()),
        }
    }
}

/// Send a `webhook.test` event now; answers with the outcome of the first attempt.
#[utoipa::path(post, path = "/api/webhooks/{id}/test", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = DeliveryView), (status = 404, description = "RESOURCE_NOT_FOUND")))]
async fn test(State(hooks): Api, Auth(p): Auth, Path(id): Path<String>) -> Result<Json<DeliveryView>, ApiError> {
    Ok(Json(hooks.test(&p, &id).await?.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// `pending`, `delivering`, `delivered`, `failed` or `cancelled`.
    #[param(pattern = "^(pending|delivering|delivered|failed|cancelled)$")]
    pub status: Option<String>,
    /// 1-100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// A webhook's deliveries, newest first.
#[utoipa::path(get, path = "/api/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = String, Path), DeliveryQuery),
    responses((status = 200, body = DeliveryList), (status = 404, description = "RESOURCE_NOT_FOUND")))]
async fn deliveries(
    State(hooks): Api,
    Auth(p): Auth,
    Path(id): Path<String>,
    Query(q): Query<DeliveryQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    let limit = q.limit.unwrap_or(20);
    let offset = q.offset.unwrap_or(0);
    if !(1..=100).contains(&limit) {
        return Err(WebhookError::field("limit", "Limit must be between 1 and 100").into());
    }
    if offset < 0 {
        return Err(WebhookError::field("offset", "Offset must not be negative").into());
    }
    const STATUSES: &[&str] = &["pending", "delivering", "delivered", "failed", "cancelled"];
    if let Some(s) = q.status.as_deref()
        && !STATUSES.contains(&s)
    {
        return Err(WebhookError::field(
            "status",
            "Status must be pending, delivering, delivered, failed or cancelled",
        )
        .into());
    }
    let (rows, total) = hooks.deliveries(&p, &id, q.status.as_deref(), limit, offset).await?;
    Ok(Json(DeliveryList { deliveries: rows.into_iter().map(DeliveryView::from).collect(), total, limit, offset }))
}
