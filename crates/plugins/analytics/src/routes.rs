//! The analytics endpoints of the core API v2: `/v2/analytics/events` (ingest, list),
//! `/v2/analytics/summary` and `/v2/analytics/funnel`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use nexus_identity::Auth;
use nexus_web::{ApiError, Client, Json, ListRequest};

nexus_web::http_error!(crate::error::AnalyticsError);
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::event::EventError;
use crate::query::{FilterParams, FunnelRequest, SummaryRequest};
use crate::service::{Analytics, Outcome};
use crate::store::EVENT_LISTING;
use crate::view::EventView;

type Api = State<Arc<Analytics>>;

pub fn all(analytics: Arc<Analytics>) -> nexus_web::Routes {
    OpenApiRouter::new()
        .routes(routes!(ingest, list))
        .routes(routes!(summary))
        .routes(routes!(funnel))
        .with_state(analytics)
}

/// One event as a client sends it.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct EventBody {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub event_name: String,
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub event_category: String,
    /// ISO 8601; default: when it is received. At most `analytics.future_tolerance_secs`
    /// ahead of the server's clock.
    #[schema(format = DateTime)]
    pub timestamp: Option<String>,
    /// Free-form, nested at most `analytics.max_depth` levels.
    #[schema(value_type = Object)]
    pub properties: Option<Value>,
    #[schema(min_length = 1, max_length = 256, pattern = r"\S")]
    pub user_id: Option<String>,
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub source: Option<String>,
    /// Makes retries idempotent: an id stored before is reported as a duplicate.
    #[schema(min_length = 1, max_length = 256, pattern = r"\S")]
    pub event_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventOutcome {
    pub index: usize,
    pub id: String,
    /// `accepted`, or `duplicate` (its `event_id` was stored before, under `id`).
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IngestReply {
    /// The stored event's id, when the body was one event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: usize,
    /// Ids of the events stored by this request, in request order.
    pub ids: Vec<String>,
    pub events: Vec<EventOutcome>,
    pub errors: Vec<EventError>,
}

/// Record events (`analytics.write`): one event, an array, or `{"events": [...]}`. Answered
/// once the accepted events are committed; refused events are listed by index.
#[utoipa::path(post, path = "/v2/analytics/events", tag = "analytics", request_body = EventBody,
    responses((status = 202, body = IngestReply), (status = 400, description = "VALIDATION_ERROR: every event refused"),
              (status = 403, description = "PERMISSION_DENIED"), (status = 413, description = "PAYLOAD_TOO_LARGE")))]
async fn ingest(
    State(a): Api,
    Auth(p): Auth,
    client: Client,
    body: Bytes,
) -> Result<(StatusCode, Json<IngestReply>), ApiError> {
    let done = a.ingest(&p, &body, &client).await?;
    let mut events = Vec::with_capacity(done.outcomes.len());
    let mut ids = Vec::new();
    for o in &done.outcomes {
        events.push(match o {
            Outcome::Accepted { index, id } => {
                ids.push(id.clone());
                EventOutcome { index: *index, id: id.clone(), status: "accepted" }
            }
            Outcome::Duplicate { index, id } => EventOutcome { index: *index, id: id.clone(), status: "duplicate" },
        });
    }
    let id = if done.single { events.first().map(|e| e.id.clone()) } else { None };
    let reply = IngestReply {
        id,
        accepted: ids.len(),
        duplicates: events.len() - ids.len(),
        rejected: done.errors.len(),
        ids,
        events,
        errors: done.errors,
    };
    Ok((StatusCode::ACCEPTED, Json(reply)))
}

/// The plain filter parameters of a query string, and the others.
fn filter_params(raw: &str) -> Result<(FilterParams, Vec<(String, String)>), ApiError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw).map_err(|_| ApiError::invalid_field("query", "Malformed query string"))?;
    let mut f = FilterParams::default();
    let mut rest = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "event_name" => f.event_name = Some(v),
            "event_category" => f.event_category = Some(v),
            "user_id" => f.user_id = Some(v),
            "source" => f.source = Some(v),
            "from" => f.from = Some(v),
            "to" => f.to = Some(v),
            _ => match k.strip_prefix("properties.") {
                Some(key) => f.properties.push((key.to_string(), v)),
                None => rest.push((k, v)),
            },
        }
    }
    Ok((f, rest))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub data: Vec<Value>,
    #[schema(value_type = Object)]
    pub pagination: Value,
}

/// List events (`analytics.read`), newest first. Filters `event_name`, `event_category`,
/// `user_id`, `source`, `from` (inclusive), `to` (exclusive), `properties.<key>=value`; and the
/// list conventions: `filter[...]`, `sort`, `fields`, `page`/`limit` or `cursor`.
#[utoipa::path(get, path = "/v2/analytics/events", tag = "analytics",
    responses((status = 200, body = EventPage), (status = 400, description = "VALIDATION_ERROR"),
              (status = 403, description = "PERMISSION_DENIED")))]
async fn list(State(a): Api, Auth(p): Auth, RawQuery(raw): RawQuery) -> Result<Json<EventPage>, ApiError> {
    let raw = raw.unwrap_or_default();
    let (params, _) = filter_params(&raw)?;
    let filter = params.filter()?;
    let req = ListRequest::parse(&raw, &EVENT_LISTING, a.kernel())?;
    let page = a.list(&p, &filter, &req.query, req.page.is_some()).await?.map(EventView::from);
    let pagination = req.pagination(&page);
    Ok(Json(EventPage { data: req.project_all(page.items), pagination }))
}

/// Counts and unique users between `from` and `to` (default: the last 24 hours), with the
/// list's filters, grouped by `group_by` (`event_name`, `event_category`, `source`,
/// `user_id`, `properties.<key>`, and at most one of `minute`, `hour`, `day`, `week`, bucketed
/// in `timezone`, an IANA name, default UTC).
#[utoipa::path(get, path = "/v2/analytics/summary", tag = "analytics",
    responses((status = 200, description = "{from, to, group_by, data: [...], total}"),
              (status = 400, description = "VALIDATION_ERROR"), (status = 403, description = "PERMISSION_DENIED")))]
async fn summary(State(a): Api, Auth(p): Auth, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    let (filters, rest) = filter_params(raw.as_deref().unwrap_or_default())?;
    let mut req = SummaryRequest { filters, ..SummaryRequest::default() };
    for (k, v) in rest {
        match k.as_str() {
            "group_by" => req.group_by = Some(v),
            "timezone" => req.timezone = Some(v),
            _ => {}
        }
    }
    let s = a.summary(&p, &req).await?;
    let data: Vec<Value> = s
        .groups
        .into_iter()
        .map(|g| {
            let mut row = Map::new();
            for (name, value) in g.keys {
                row.insert(name, value);
            }
            if let Some(b) = g.bucket {
                row.insert("bucket".into(), Value::String(b));
            }
            row.insert("count".into(), g.count.into());
            row.insert("unique_users".into(), g.unique_users.into());
            Value::Object(row)
        })
        .collect();
    Ok(Json(json!({
        "from": s.from.to_rfc3339(),
        "to": s.to.to_rfc3339(),
        "group_by": s.group_by,
        "data": data,
        "total": { "count": s.total.0, "unique_users": s.total.1 },
    })))
}

/// An event name: 1 to 200 characters, not only spaces.
#[derive(ToSchema)]
#[schema(min_length = 1, max_length = 200, pattern = r"\S")]
pub struct EventName(#[allow(dead_code)] String);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunnelBody {
    /// Event names, in order (2 to 10).
    #[schema(value_type = Vec<EventName>, min_items = 2, max_items = 10)]
    pub steps: Vec<String>,
    /// The time allowed from the first step to the last; default one day.
    #[schema(minimum = 1)]
    pub window_secs: Option<i64>,
    #[schema(format = DateTime)]
    pub from: Option<String>,
    #[schema(format = DateTime)]
    pub to: Option<String>,
}

/// Per step, how many users did the steps up to it in order within the window
/// (`analytics.read`).
#[utoipa::path(post, path = "/v2/analytics/funnel", tag = "analytics", request_body = FunnelBody,
    responses((status = 200, description = "{steps: [{step, event_name, users, conversion_rate}], ...}"),
              (status = 400, description = "VALIDATION_ERROR"), (status = 403, description = "PERMISSION_DENIED")))]
async fn funnel(State(a): Api, Auth(p): Auth, Json(body): Json<FunnelBody>) -> Result<Json<Value>, ApiError> {
    let req = FunnelRequest::new(body.steps, body.window_secs, body.from.as_deref(), body.to.as_deref())?;
    let steps = a.funnel(&p, &req).await?;
    let first = steps.first().map_or(0, |s| s.users);
    let shown: Vec<Value> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let rate = if first == 0 { 0.0 } else { s.users as f64 / first as f64 };
            json!({ "step": i + 1, "event_name": s.event_name, "users": s.users, "conversion_rate": rate })
        })
        .collect();
    Ok(Json(json!({
        "steps": shown,
        "window_secs": req.window_secs,
        "from": req.from.to_rfc3339(),
        "to": req.to.to_rfc3339(),
    })))
}
