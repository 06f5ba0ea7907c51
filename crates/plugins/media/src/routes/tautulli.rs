//! The Tautulli-compatible statistics API: `GET /api/tautulli/api/v2?apikey=…&cmd=…` with
//! `get_activity`, `get_history`, `get_libraries_table`, `get_users_table`, `get_home_stats`,
//! in Tautulli's envelope `{"response": {"result", "message", "data"}}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nexus_identity::principal::Presented;
use nexus_identity::{Identity, MaybeAuth, Principal};
use serde_json::{Value, json};

use super::params::Params;
use crate::Media;
use crate::stats::{self, Play};

fn envelope(status: StatusCode, result: &str, message: Option<&str>, data: Value) -> Response {
    let body = json!({"response": {"result": result, "message": message, "data": data}});
    (status, axum::Json(body)).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    envelope(status, "error", Some(message), json!({}))
}

async fn caller(media: &Media, auth: Option<Principal>, params: &Params) -> Result<Principal, Response> {
    if let Some(p) = auth {
        return Ok(p);
    }
    let key = params.get("apikey").ok_or_else(|| error(StatusCode::UNAUTHORIZED, "Parameter apikey is required"))?;
    let identity = &media.identity;
    let presented = if nexus_identity::tokens::looks_like_api_key(key) {
        Presented::ApiKey(key.to_string())
    } else {
        Presented::Bearer(key.to_string())
    };
    identity.authenticate(&presented).await.map_err(|_| error(StatusCode::UNAUTHORIZED, "Invalid apikey"))
}

pub async fn api(State(media): State<Arc<Media>>, MaybeAuth(auth): MaybeAuth, RawQuery(raw): RawQuery) -> Response {
    let Ok(params) = Params::parse(raw.as_deref()) else {
        return error(StatusCode::BAD_REQUEST, "Invalid query string");
    };
    let p = match caller(&media, auth, &params).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let Some(cmd) = params.get("cmd") else { return error(StatusCode::BAD_REQUEST, "Parameter cmd is required") };
    let result = match cmd {
        "get_activity" => activity(&media, &p).await,
        "get_history" => history(&media, &p, &params).await,
        "get_libraries_table" => libraries(&media, &p, &params).await,
        "get_users_table" => users(&media, &p, &params).await,
        "get_home_stats" => home_stats(&media, &p, &params).await,
        _ => return error(StatusCode::BAD_REQUEST, "Unknown command"),
    };
    match result {
        Ok(data) => envelope(StatusCode::OK, "success", None, data),
        Err(crate::MediaError::Forbidden(perm)) => {
            error(StatusCode::FORBIDDEN, &format!("This command requires the `{perm}` permission"))
        }
        Err(crate::MediaError::Invalid(_)) => error(StatusCode::BAD_REQUEST, "Invalid parameter"),
        Err(e) => {
            tracing::error!(error = %e, "tautulli command failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "An internal error occurred")
        }
    }
}

/// Display names of users, looked up once per request.
async fn names(identity: &Identity, ids: impl Iterator<Item = String>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for id in ids {
        if out.contains_key(&id) {
            continue;
        }
        let name = identity.get_user(&id).await.map_or_else(|_| id.clone(), |u| u.username);
        out.insert(id, name);
    }
    out
}

fn number(params: &Params, name: &str, default: usize) -> Result<usize, crate::MediaError> {
    match params.get(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| crate::MediaError::field(name, "Must be a whole number")),
    }
}

async fn activity(media: &Media, p: &Principal) -> Result<Value, crate::MediaError> {
    let sessions = media.activity(p)?;
    let catalog = media.catalog();
    let list: Vec<Value> = sessions
        .iter()
        .filter_map(|s| {
            let n = s.now_playing.as_ref()?;
            let item = catalog.item(&n.item_id)?;
            let runtime_ms = item.runtime_ticks().unwrap_or(0) / 10_000;
            let offset_ms = n.position_ticks / 10_000;
            let progress = if runtime_ms > 0 { (offset_ms * 100 / runtime_ms).clamp(0, 100) } else { 0 };
            let library = catalog.library(&item.row.library_id);
            Some(json!({
                "session_key": s.id,
                "session_id": s.id,
                "user_id": s.user_id,
                "user": s.user_name,
                "username": s.user_name,
                "friendly_name": s.user_name,
                "rating_key": item.row.id,
                "title": item.row.name,
                "full_title": item.row.series_name.as_ref().map_or_else(|| item.row.name.clone(), |sn| format!("{sn} - {}", item.row.name)),
                "grandparent_title": item.row.series_name.clone().or_else(|| item.row.album_artist.clone()).unwrap_or_default(),
                "media_type": stats::media_type(&item.row.kind),
                "year": item.row.year.map(|y| y.to_string()).unwrap_or_default(),
                "state": if n.paused { "paused" } else { "playing" },
                "view_offset": offset_ms.to_string(),
                "duration": runtime_ms.to_string(),
                "progress_percent": progress.to_string(),
                "player": s.client.device,
                "product": s.client.client,
                "platform": s.client.client,
                "device": s.client.device,
                "transcode_decision": "direct play",
                "library_name": library.map(|l| l.name.clone()).unwrap_or_default(),
                "section_id": item.row.library_id,
            }))
        })
        .collect();
    Ok(json!({
        "stream_count": list.len().to_string(),
        "stream_count_direct_play": list.len(),
        "stream_count_direct_stream": 0,
        "stream_count_transcode": 0,
        "total_bandwidth": 0,
        "lan_bandwidth": 0,
        "wan_bandwidth": 0,
        "sessions": list,
    }))
}

async fn history(media: &Media, p: &Principal, params: &Params) -> Result<Value, crate::MediaError> {
    let plays = media.plays(p).await?;
    let total = plays.len();
    let user = params.get("user_id");
    let media_type = params.get("media_type");
    let search = params.get("search").map(str::to_lowercase);
    let filtered: Vec<&Play> = plays
        .iter()
        .filter(|x| user.is_none_or(|u| x.row.user_id == u))
        .filter(|x| media_type.is_none_or(|m| x.media_type == m))
        .filter(|x| search.as_ref().is_none_or(|s| x.full_title.to_lowercase().contains(s.as_str())))
        .collect();
    let start = number(params, "start", 0)?;
    let length = number(params, "length", 25)?;
    let users = names(&media.identity, filtered.iter().map(|x| x.row.user_id.clone())).await;
    let total_duration: i64 = plays.iter().map(Play::seconds).sum();
    let filter_duration: i64 = filtered.iter().map(|x| x.seconds()).sum();
    let data: Vec<Value> = filtered
        .iter()
        .skip(start)
        .take(length)
        .map(|x| {
            let name = users.get(&x.row.user_id).cloned().unwrap_or_default();
            let percent = x.percent();
            json!({
                "id": x.row.id,
                "date": x.row.started_at / 1_000_000,
                "started": x.row.started_at / 1_000_000,
                "stopped": x.row.stopped_at.map(|s| s / 1_000_000),
                "duration": x.seconds(),
                "paused_counter": 0,
                "user_id": x.row.user_id,
                "user": name,
                "friendly_name": name,
                "platform": x.row.client,
                "product": x.row.client,
                "player": x.row.device,
                "full_title": x.full_title,
                "title": x.title,
                "parent_title": x.parent_title,
                "grandparent_title": x.grandparent_title,
                "media_type": x.media_type,
                "rating_key": x.row.item_id,
                "year": x.year,
                "percent_complete": percent,
                "watched_status": if percent >= 90 { 1.0 } else if percent >= 50 { 0.5 } else { 0.0 },
                "session_key": x.row.session_id,
                "transcode_decision": "direct play",
            })
        })
        .collect();
    Ok(json!({
        "draw": number(params, "draw", 1)?,
        "recordsTotal": total,
        "recordsFiltered": filtered.len(),
        "total_duration": total_duration.to_string(),
        "filter_duration": filter_duration.to_string(),
        "data": data,
    }))
}

fn section_type(kind: &str) -> &'static str {
    match kind {
        "movies" => "movie",
        "tvshows" => "show",
        "music" => "artist",
        _ => "photo",
    }
}

async fn libraries(media: &Media, p: &Principal, params: &Params) -> Result<Value, crate::MediaError> {
    let plays = media.plays(p).await?;
    let totals = Media::totals(&plays, |x| x.library_id.as_deref());
    let catalog = media.catalog();
    let counts = catalog.counts();
    let data: Vec<Value> = catalog
        .libraries
        .iter()
        .map(|l| {
            let (plays, duration, last) = totals.get(l.id.as_str()).copied().unwrap_or_default();
            let top_kind = match l.collection_type() {
                "movies" => "Movie",
                "tvshows" => "Series",
                "music" => "MusicArtist",
                _ => "Photo",
            };
            let count = catalog.sorted.iter().filter(|i| i.row.library_id == l.id && i.row.kind == top_kind).count();
            json!({
                "section_id": l.id,
                "section_name": l.name,
                "section_type": section_type(l.collection_type()),
                "count": count,
                "child_count": counts.get(&l.name).copied().unwrap_or(0),
                "plays": plays,
                "duration": duration,
                "last_accessed": if last > 0 { Some(last / 1_000_000) } else { None },
                "is_active": 1,
            })
        })
        .collect();
    Ok(json!({
        "draw": number(params, "draw", 1)?,
        "recordsTotal": data.len(),
        "recordsFiltered": data.len(),
        "data": data,
    }))
}

async fn users(media: &Media, p: &Principal, params: &Params) -> Result<Value, crate::MediaError> {
    let plays = media.plays(p).await?;
    let totals = Media::totals(&plays, |x| Some(x.row.user_id.as_str()));
    let users = names(&media.identity, totals.keys().map(|k| (*k).to_string())).await;
    let mut data: Vec<Value> = totals
        .iter()
        .map(|(id, (count, duration, last))| {
            let name = users.get(*id).cloned().unwrap_or_default();
            let latest = plays.iter().find(|x| x.row.user_id == *id);
            json!({
                "user_id": id,
                "username": name,
                "friendly_name": name,
                "plays": count,
                "duration": duration,
                "last_seen": last / 1_000_000,
                "last_played": latest.map(|x| x.full_title.clone()),
                "player": latest.map(|x| x.row.device.clone()),
                "platform": latest.map(|x| x.row.client.clone()),
                "is_active": 1,
            })
        })
        .collect();
    data.sort_by_key(|v| std::cmp::Reverse(v["plays"].as_i64().unwrap_or(0)));
    Ok(json!({
        "draw": number(params, "draw", 1)?,
        "recordsTotal": data.len(),
        "recordsFiltered": data.len(),
        "data": data,
    }))
}

async fn home_stats(media: &Media, p: &Principal, params: &Params) -> Result<Value, crate::MediaError> {
    let plays = media.plays(p).await?;
    let count = number(params, "stats_count", 10)?;
    let catalog = media.catalog();
    let top = |media_type: &'static str| -> Vec<Value> {
        let of_type: Vec<Play> = plays.iter().filter(|x| x.media_type == media_type).cloned().collect();
        let totals = Media::totals(&of_type, |x| x.group_id.as_deref());
        let mut rows: Vec<(&str, (i64, i64, i64))> = totals.into_iter().collect();
        rows.sort_by_key(|(_, (n, d, _))| std::cmp::Reverse((*n, *d)));
        rows.into_iter()
            .take(count)
            .map(|(id, (n, d, last))| {
                let title = catalog.item(id).map(|i| i.row.name.clone()).unwrap_or_default();
                json!({"rating_key": id, "title": title, "total_plays": n, "total_duration": d, "last_play": last / 1_000_000})
            })
            .collect()
    };
    let user_totals = Media::totals(&plays, |x| Some(x.row.user_id.as_str()));
    let users = names(&media.identity, user_totals.keys().map(|k| (*k).to_string())).await;
    let mut top_users: Vec<(&str, (i64, i64, i64))> = user_totals.into_iter().collect();
    top_users.sort_by_key(|(_, (n, d, _))| std::cmp::Reverse((*n, *d)));
    let top_users: Vec<Value> = top_users
        .into_iter()
        .take(count)
        .map(|(id, (n, d, last))| {
            let name = users.get(id).cloned().unwrap_or_default();
            json!({"user_id": id, "user": name, "friendly_name": name, "total_plays": n, "total_duration": d, "last_play": last / 1_000_000})
        })
        .collect();
    let last_watched: Vec<Value> = plays
        .iter()
        .take(count)
        .map(|x| json!({"rating_key": x.row.item_id, "title": x.full_title, "user_id": x.row.user_id, "last_watch": x.row.started_at / 1_000_000}))
        .collect();
    Ok(json!([
        {"stat_id": "top_movies", "stat_title": "Most Watched Movies", "rows": top("movie")},
        {"stat_id": "top_tv", "stat_title": "Most Watched TV Shows", "rows": top("episode")},
        {"stat_id": "top_music", "stat_title": "Most Played Artists", "rows": top("track")},
        {"stat_id": "top_users", "stat_title": "Most Active Users", "rows": top_users},
        {"stat_id": "last_watched", "stat_title": "Recently Watched", "rows": last_watched},
    ]))
}
