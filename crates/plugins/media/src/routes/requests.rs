//! Overseerr's request API at `/api/requests/api/v1/request…` with its shapes (`pageInfo`,
//! `results`, `MediaRequest`).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use nexus_identity::Auth;
use nexus_kernel::clock::Timestamp;
use nexus_web::{ApiError, Json};
use serde_json::{Value, json};

use super::params::Params;
use crate::requests::{NewRequest, Requests};
use crate::store::RequestRow;

type Api = State<Arc<Requests>>;

fn view(r: &RequestRow) -> Value {
    let seasons: Vec<i64> = serde_json::from_str(&r.seasons).unwrap_or_default();
    let at = |t: i64| Timestamp::from_micros(t).to_rfc3339();
    json!({
        "id": r.id,
        "status": r.status,
        "type": r.media_type,
        "is4k": r.is4k != 0,
        "createdAt": at(r.created_at),
        "updatedAt": at(r.updated_at),
        "media": {"tmdbId": r.tmdb_id, "tvdbId": r.tvdb_id, "mediaType": r.media_type, "status": if r.status == 5 { 5 } else { 2 }},
        "seasons": seasons.iter().map(|n| json!({"seasonNumber": n, "status": r.status})).collect::<Vec<_>>(),
        "requestedBy": {"id": r.requested_by},
        "modifiedBy": r.modified_by.as_ref().map(|m| json!({"id": m})),
    })
}

fn id_of(raw: &str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| ApiError::invalid_field("requestId", "Must be a number"))
}

pub async fn list(State(r): Api, Auth(p): Auth, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(raw.as_deref())?;
    let take: usize = params.number("take")?.unwrap_or(10).clamp(1, 100);
    let skip: usize = params.number("skip")?.unwrap_or(0);
    let mut rows = r.list(&p, params.get("filter").unwrap_or("all")).await?;
    if params.get("sort") == Some("modified") {
        rows.sort_by_key(|x| std::cmp::Reverse(x.updated_at));
    }
    let total = rows.len();
    let results: Vec<Value> = rows.iter().skip(skip).take(take).map(view).collect();
    Ok(Json(json!({
        "pageInfo": {"pages": total.div_ceil(take), "pageSize": take, "results": total, "page": skip / take + 1},
        "results": results,
    })))
}

pub async fn create(
    State(r): Api,
    Auth(p): Auth,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let media_type = body.get("mediaType").and_then(Value::as_str).unwrap_or_default().to_string();
    let tmdb_id = body
        .get("mediaId")
        .and_then(Value::as_i64)
        .ok_or_else(|| ApiError::invalid_field("mediaId", "This field is required"))?;
    let seasons = match body.get("seasons") {
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_i64).collect(),
        _ => Vec::new(),
    };
    let new = NewRequest {
        media_type,
        tmdb_id,
        tvdb_id: body.get("tvdbId").and_then(Value::as_i64),
        seasons,
        is4k: body.get("is4k").and_then(Value::as_bool).unwrap_or(false),
        title: body.get("title").and_then(Value::as_str).map(str::to_string),
        year: body.get("year").and_then(Value::as_i64),
    };
    let row = r.create(&p, new).await?;
    Ok((StatusCode::CREATED, Json(view(&row))))
}

pub async fn one(State(r): Api, Auth(p): Auth, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&r.get(&p, id_of(&id)?).await?)))
}

pub async fn delete(State(r): Api, Auth(p): Auth, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    r.delete(&p, id_of(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn status(
    State(r): Api,
    Auth(p): Auth,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = id_of(&id)?;
    let row = match action.as_str() {
        "approve" => r.approve(&p, id).await?,
        "decline" => r.decline(&p, id).await?,
        _ => return Err(ApiError::not_found("Unknown request status")),
    };
    Ok(Json(view(&row)))
}
