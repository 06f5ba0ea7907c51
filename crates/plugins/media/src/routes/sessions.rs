//! Playstate reports (`Sessions/Playing[/Progress|/Stopped|/Ping]`), `GET Sessions`, remote
//! control (`Sessions/{id}/Playing[/{command}]`) and Jellyfin's WebSocket (`/socket`).

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::Response;
use futures::{SinkExt as _, StreamExt as _};
use nexus_identity::Auth;
use nexus_web::{ApiError, Json};
use serde_json::{Value, json};

use super::dto::{self, Fields};
use super::params::{Id, IdAnd, Params};
use crate::Media;
use crate::service::{Entry, Found};
use crate::sessions::{ClientInfo, Command, PlaybackReport};
use crate::store::UserDataRow;

type Api = State<Arc<Media>>;

/// How often (seconds) a client should send `KeepAlive`; the socket closes after twice that.
const KEEP_ALIVE_SECS: u64 = 60;

/// The client's own description, from `Authorization: MediaBrowser Client=…, Device=…,
/// DeviceId=…, Version=…` (or `X-Emby-Authorization`), then the query.
fn client_info(headers: &HeaderMap, params: &Params) -> ClientInfo {
    let mut info = ClientInfo::default();
    for name in ["authorization", "x-emby-authorization"] {
        let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) else { continue };
        let Some((scheme, rest)) = value.trim().split_once(' ') else { continue };
        if !scheme.eq_ignore_ascii_case("mediabrowser") && !scheme.eq_ignore_ascii_case("emby") {
            continue;
        }
        for param in rest.split(',') {
            let Some((k, v)) = param.split_once('=') else { continue };
            let v = v.trim().trim_matches('"');
            let v = percent_decode(v);
            match k.trim().to_ascii_lowercase().as_str() {
                "client" => info.client = v,
                "device" => info.device = v,
                "deviceid" => info.device_id = v,
                "version" => info.version = v,
                _ => {}
            }
        }
    }
    if info.device_id.is_empty()
        && let Some(d) = params.get("DeviceId")
    {
        info.device_id = d.to_string();
    }
    info
}

fn percent_decode(s: &str) -> String {
    serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={}", s.replace('+', "%2B").replace('&', "%26")))
        .ok()
        .and_then(|v| v.into_iter().next())
        .map_or_else(|| s.to_string(), |(_, v)| v)
}

/// A body's field by name in any case.
fn field<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

fn report(body: &Value) -> Result<PlaybackReport, ApiError> {
    let item_id = field(body, "ItemId")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid_field("ItemId", "This field is required"))?
        .to_string();
    let position_ticks = match field(body, "PositionTicks") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| ApiError::invalid_field("PositionTicks", "Must be a number"))?),
    };
    let is_paused = field(body, "IsPaused").and_then(Value::as_bool);
    Ok(PlaybackReport { item_id, position_ticks, is_paused })
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(body).map_err(|_| ApiError::invalid_field("body", "The body is not valid JSON"))
}

#[utoipa::path(post, path = "/api/media/Sessions/Playing", tag = "media", summary = "Playback started (PlaybackStartInfo: ItemId, PositionTicks, …)", security(("bearer" = []), ("api_key" = [])), responses((status = 204, description = "Recorded"), (status = 401, description = "Not authenticated")))]
pub async fn playing(
    State(media): Api,
    Auth(p): Auth,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let client = client_info(&headers, &Params::parse(raw.as_deref())?);
    media.playing(&p, &client, &report(&parse_body(&body)?)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/media/Sessions/Playing/Progress", tag = "media", summary = "Playback position (PlaybackProgressInfo)", security(("bearer" = []), ("api_key" = [])), responses((status = 204, description = "Recorded"), (status = 401, description = "Not authenticated")))]
pub async fn progress(
    State(media): Api,
    Auth(p): Auth,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let client = client_info(&headers, &Params::parse(raw.as_deref())?);
    media.progress(&p, &client, &report(&parse_body(&body)?)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/media/Sessions/Playing/Stopped", tag = "media", summary = "Playback stopped (PlaybackStopInfo); records history and the resume position", security(("bearer" = []), ("api_key" = [])), responses((status = 204, description = "Recorded"), (status = 401, description = "Not authenticated")))]
pub async fn stopped(
    State(media): Api,
    Auth(p): Auth,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let client = client_info(&headers, &Params::parse(raw.as_deref())?);
    media.stopped(&p, &client, &report(&parse_body(&body)?)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/media/Sessions/Playing/Ping", tag = "media", summary = "Keeps a playback session alive", security(("bearer" = []), ("api_key" = [])), responses((status = 204, description = "Recorded"), (status = 401, description = "Not authenticated")))]
pub async fn ping(
    State(media): Api,
    Auth(p): Auth,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, ApiError> {
    let client = client_info(&headers, &Params::parse(raw.as_deref())?);
    media.ping(&p, &client)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/media/Sessions", tag = "media", summary = "Active sessions (SessionInfo), with what each is playing", security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "SessionInfo list", body = Vec<Object>), (status = 401, description = "Not authenticated")))]
/// `GET Sessions`: Jellyfin's `SessionInfo` list.
pub async fn list(State(media): Api, Auth(p): Auth) -> Result<Json<Value>, ApiError> {
    let catalog = media.catalog();
    let sessions = media.list_sessions(&p)?;
    let list: Vec<Value> = sessions
        .iter()
        .map(|s| {
            let now_playing = s.now_playing.as_ref().and_then(|n| {
                let item = catalog.item(&n.item_id)?;
                let found = Found { entry: Entry::Item(item.clone()), user_data: UserDataRow::default() };
                serde_json::to_value(dto::base_item(&found, media.server_id(), Fields::default(), None)).ok()
            });
            json!({
                "Id": s.id,
                "UserId": s.user_id,
                "UserName": s.user_name,
                "Client": s.client.client,
                "DeviceName": s.client.device,
                "DeviceId": s.client.device_id,
                "ApplicationVersion": s.client.version,
                "LastActivityDate": s.last_activity.to_rfc3339(),
                "IsActive": true,
                "SupportsRemoteControl": s.has_socket,
                "SupportsMediaControl": s.has_socket,
                "ServerId": media.server_id(),
                "NowPlayingItem": now_playing,
                "PlayState": {
                    "PositionTicks": s.now_playing.as_ref().map(|n| n.position_ticks),
                    "IsPaused": s.now_playing.as_ref().is_some_and(|n| n.paused),
                    "CanSeek": true,
                    "PlayMethod": s.now_playing.as_ref().map(|_| "DirectPlay"),
                },
            })
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

#[utoipa::path(post, path = "/api/media/Sessions/{sessionId}/Playing", tag = "media", summary = "Tells a session's client to play items (ItemIds, StartPositionTicks), over its socket", params(("sessionId" = String, Path, description = "Session id"), ("ItemIds" = Vec<String>, Query, description = "Items to play"), ("StartPositionTicks" = Option<i64>, Query, description = "Where to start")), security(("bearer" = []), ("api_key" = [])), responses((status = 204, description = "Sent"), (status = 401, description = "Not authenticated"), (status = 404, description = "No such session")))]
/// `POST Sessions/{id}/Playing?ItemIds=…&StartPositionTicks=…&PlayCommand=PlayNow`.
pub async fn play(
    State(media): Api,
    Auth(p): Auth,
    Id(id): Id,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, ApiError> {
    let params = Params::parse(raw.as_deref())?;
    let item_ids = params.list("ItemIds");
    if item_ids.is_empty() {
        return Err(ApiError::invalid_field("ItemIds", "This field is required"));
    }
    let command = Command::Play {
        item_ids,
        start_position_ticks: params.number("StartPositionTicks")?,
        play_command: params.string("PlayCommand").unwrap_or_else(|| String::from("PlayNow")),
    };
    media.send_command(&p, &id, &command)?;
    Ok(StatusCode::NO_CONTENT)
}

const PLAYSTATE_COMMANDS: &[&str] =
    &["Stop", "Pause", "Unpause", "NextTrack", "PreviousTrack", "Seek", "Rewind", "FastForward", "PlayPause"];

#[utoipa::path(post, path = "/api/media/Sessions/{sessionId}/Playing/{command}", tag = "media", summary = "Remote control: Pause, Unpause, Stop, Seek (SeekPositionTicks), over the session's socket", params(("sessionId" = String, Path, description = "Session id"), ("command" = String, Path, description = "Pause, Unpause, PlayPause, Stop, Seek, NextTrack, PreviousTrack")), security(("bearer" = []), ("api_key" = [])), responses((status = 204, description = "Sent"), (status = 401, description = "Not authenticated"), (status = 404, description = "No such session")))]
/// `POST Sessions/{id}/Playing/{Pause|Unpause|Stop|Seek|…}`.
pub async fn playstate(
    State(media): Api,
    Auth(p): Auth,
    IdAnd(id, command): IdAnd,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, ApiError> {
    let params = Params::parse(raw.as_deref())?;
    let Some(name) = PLAYSTATE_COMMANDS.iter().find(|c| c.eq_ignore_ascii_case(&command)) else {
        return Err(ApiError::not_found("Unknown playstate command"));
    };
    let command =
        Command::Playstate { command: (*name).to_string(), seek_position_ticks: params.number("SeekPositionTicks")? };
    media.send_command(&p, &id, &command)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/media/socket", tag = "media", summary = "Jellyfin's WebSocket (KeepAlive, ForceKeepAlive; remote-control messages); token as api_key query parameter", params(("api_key" = Option<String>, Query, description = "Access token")), responses((status = 101, description = "Switching to the WebSocket protocol"), (status = 401, description = "Not authenticated")))]
/// `/socket`: Jellyfin's WebSocket. The server asks for `KeepAlive` every
/// [`KEEP_ALIVE_SECS`] (`ForceKeepAlive`), answers each with `KeepAlive`, and delivers the
/// session's remote-control commands.
pub async fn socket(
    State(media): Api,
    Auth(p): Auth,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let client = client_info(&headers, &Params::parse(raw.as_deref())?);
    let (_session, rx) = media.attach_socket(&p, &client)?;
    let closed = media.kernel.events.closed();
    Ok(ws.on_upgrade(move |socket| run_socket(socket, rx, closed)))
}

async fn run_socket(
    socket: WebSocket,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<String>,
    closed: impl std::future::Future<Output = ()> + Send,
) {
    let (mut tx, mut rx) = socket.split();
    let hello = json!({"MessageType": "ForceKeepAlive", "Data": KEEP_ALIVE_SECS}).to_string();
    if tx.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    tokio::pin!(closed);
    let idle = std::time::Duration::from_secs(KEEP_ALIVE_SECS * 2);
    loop {
        tokio::select! {
            () = &mut closed => break,
            command = commands.recv() => match command {
                Some(text) => if tx.send(Message::Text(text.into())).await.is_err() { break },
                None => break,
            },
            incoming = tokio::time::timeout(idle, rx.next()) => match incoming {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let kind = serde_json::from_str::<Value>(&text).ok().and_then(|v| field(&v, "MessageType").and_then(Value::as_str).map(str::to_string));
                    if kind.as_deref() == Some("KeepAlive") {
                        let reply = json!({"MessageType": "KeepAlive"}).to_string();
                        if tx.send(Message::Text(reply.into())).await.is_err() { break }
                    }
                }
                Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) | Err(_) => break,
                Ok(Some(Ok(_))) => {}
            },
        }
    }
    let _ = tx.close().await;
}
