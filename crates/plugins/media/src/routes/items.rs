//! `Items`, `Items/{id}`, the legacy `Users/{userId}/Items[/{id}]`, views, libraries
//! (`Library/VirtualFolders`, `Library/Refresh`, `ScheduledTasks`), images and user data.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use nexus_identity::Auth;
use nexus_web::{ApiError, Json};
use serde_json::{Value, json};

use super::dto::{self, Fields, QueryResult, UserData};
use super::params::{Id, IdAnd, Params};
use crate::Media;
use crate::service::{Entry, Found, ItemQuery, UserFlag};

type Api = State<Arc<Media>>;

fn item_query(params: &Params) -> Result<ItemQuery, ApiError> {
    let mut filters = params.list("Filters");
    if params.bool("IsResumable")? == Some(true) {
        filters.push(String::from("IsResumable"));
    }
    let years = params
        .list("Years")
        .iter()
        .map(|y| y.parse::<i64>().map_err(|_| ApiError::invalid_field("Years", "Must be years")))
        .collect::<Result<_, _>>()?;
    let order = params.list("SortOrder");
    Ok(ItemQuery {
        parent_id: params.string("ParentId"),
        recursive: params.bool("Recursive")?.unwrap_or(false),
        include_types: params.list("IncludeItemTypes"),
        exclude_types: params.list("ExcludeItemTypes"),
        media_types: params.list("MediaTypes"),
        search_term: params.string("SearchTerm"),
        sort_by: params.list("SortBy"),
        descending: order.first().is_some_and(|o| o.eq_ignore_ascii_case("Descending")),
        start_index: params.number("StartIndex")?.unwrap_or(0),
        limit: params.number("Limit")?,
        filters,
        ids: params.list("Ids"),
        is_played: params.bool("IsPlayed")?,
        is_favorite: params.bool("IsFavorite")?,
        years,
    })
}

/// The album a track is on, for `Album`.
fn album_of(media: &Media, found: &Found) -> Option<String> {
    let Entry::Item(item) = &found.entry else { return None };
    if item.row.kind != "Audio" {
        return None;
    }
    let catalog = media.catalog();
    let parent = catalog.item(item.row.parent_id.as_deref()?)?;
    (parent.row.kind == "MusicAlbum").then(|| parent.row.name.clone())
}

async fn query(
    media: &Media,
    p: &nexus_identity::Principal,
    user: Option<&str>,
    raw: Option<&str>,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw)?;
    let q = item_query(&params)?;
    let user = user.map(str::to_string).or_else(|| params.string("UserId"));
    let page = media.query(p, user.as_deref(), &q).await?;
    let fields = Fields::from_list(&params.list("Fields"));
    let items = page.items.iter().map(|f| dto::base_item(f, media.server_id(), fields, album_of(media, f))).collect();
    Ok(Json(QueryResult { items, total_record_count: page.total, start_index: page.start_index }).into_response())
}

#[utoipa::path(get, path = "/api/media/Items", tag = "media", summary = "Items of the library, filtered, sorted and paged (parameters case-insensitive, lists comma-separated or repeated)", params(super::openapi::ItemsQuery), security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "A page of items", body = super::dto::QueryResult), (status = 401, description = "Not authenticated")))]
pub async fn list(State(media): Api, Auth(p): Auth, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    query(&media, &p, None, raw.as_deref()).await
}

#[utoipa::path(get, path = "/api/media/Users/{userId}/Items", tag = "media", summary = "Items as user userId sees them (legacy form of Items)", params(("userId" = String, Path, description = "User id"), super::openapi::ItemsQuery), security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "A page of items", body = super::dto::QueryResult), (status = 401, description = "Not authenticated")))]
pub async fn list_for_user(
    State(media): Api,
    Auth(p): Auth,
    Id(user_id): Id,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    query(&media, &p, Some(&user_id), raw.as_deref()).await
}

async fn single(
    media: &Media,
    p: &nexus_identity::Principal,
    user: Option<&str>,
    id: &str,
) -> Result<Response, ApiError> {
    let found = media.item(p, user, id).await?;
    let album = album_of(media, &found);
    Ok(Json(dto::base_item(&found, media.server_id(), Fields::all(), album)).into_response())
}

#[utoipa::path(get, path = "/api/media/Items/{itemId}", tag = "media", summary = "One item (or a library folder) with every field", params(("itemId" = String, Path, description = "Item id (32 hex digits)"), ("UserId" = Option<String>, Query, description = "Whose data to show (administrators)")), security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "The item", body = super::dto::BaseItem), (status = 401, description = "Not authenticated"), (status = 404, description = "No such item")))]
pub async fn one(State(media): Api, Auth(p): Auth, Id(id): Id, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref())?;
    single(&media, &p, params.get("UserId"), &id).await
}

#[utoipa::path(get, path = "/api/media/Users/{userId}/Items/{itemId}", tag = "media", summary = "One item as user userId sees it (legacy form)", params(("userId" = String, Path, description = "User id"), ("itemId" = String, Path, description = "Item id (32 hex digits)")), security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "The item", body = super::dto::BaseItem), (status = 401, description = "Not authenticated"), (status = 404, description = "No such item")))]
pub async fn one_for_user(State(media): Api, Auth(p): Auth, IdAnd(id, user_id): IdAnd) -> Result<Response, ApiError> {
    single(&media, &p, Some(&user_id), &id).await
}

async fn views_of(media: &Media, p: &nexus_identity::Principal, user: Option<&str>) -> Result<Response, ApiError> {
    let page = media.query(p, user, &ItemQuery::default()).await?;
    let items = page.items.iter().map(|f| dto::base_item(f, media.server_id(), Fields::default(), None)).collect();
    Ok(Json(QueryResult { items, total_record_count: page.total, start_index: 0 }).into_response())
}

#[utoipa::path(get, path = "/api/media/Users/{userId}/Views", tag = "media", summary = "The libraries, as a user's views", params(("userId" = String, Path, description = "User id")), security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "A page of items", body = super::dto::QueryResult), (status = 401, description = "Not authenticated")))]
/// `Users/{id}/Views`: the libraries, as the user's views.
pub async fn views(State(media): Api, Auth(p): Auth, Id(user_id): Id) -> Result<Response, ApiError> {
    views_of(&media, &p, Some(&user_id)).await
}

#[utoipa::path(get, path = "/api/media/UserViews", tag = "media", summary = "The libraries, as the caller's views", params(("userId" = Option<String>, Query, description = "Whose views (administrators)")), security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "A page of items", body = super::dto::QueryResult), (status = 401, description = "Not authenticated")))]
pub async fn user_views(State(media): Api, Auth(p): Auth, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref())?;
    views_of(&media, &p, params.get("UserId")).await
}

#[utoipa::path(get, path = "/api/media/Library/VirtualFolders", tag = "media", summary = "The libraries with their folders and collection types", security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "VirtualFolderInfo list", body = Vec<Object>), (status = 401, description = "Not authenticated")))]
/// `Library/VirtualFolders`: Jellyfin's `VirtualFolderInfo` per library.
pub async fn virtual_folders(State(media): Api, Auth(p): Auth) -> Result<Json<Value>, ApiError> {
    let state = media.jobs.state();
    let list: Vec<Value> = media
        .libraries(&p)?
        .iter()
        .map(|l| {
            json!({
                "Name": l.name,
                "Locations": l.paths.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>(),
                "CollectionType": l.collection_type(),
                "ItemId": l.id,
                "RefreshStatus": if state.running { "Running" } else { "Idle" },
                "RefreshProgress": state.progress,
                "LibraryOptions": {"Enabled": true, "EnableRealtimeMonitor": media.kernel.config.media.watch_interval_ms > 0, "PathInfos": l.paths.iter().map(|p| json!({"Path": p.to_string_lossy()})).collect::<Vec<_>>()},
            })
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

#[utoipa::path(post, path = "/api/media/Library/VirtualFolders", tag = "media", summary = "Adds a library and scans it", params(("name" = String, Query, min_length = 1, description = "Library name"), ("collectionType" = String, Query, description = "movies, tvshows, music or photos"), ("paths" = Vec<String>, Query, description = "Folders (repeated or comma-separated)")), security(("bearer" = []), ("api_key" = [])), responses((status = 204, description = "Added; the scan runs in the background"), (status = 400, description = "Invalid name, type or folder"), (status = 401, description = "Not authenticated"), (status = 403, description = "Needs media.write")))]
/// `POST Library/VirtualFolders?name=…&collectionType=…&paths=…` (paths also from the body's
/// `LibraryOptions.PathInfos`).
pub async fn add_folder(
    State(media): Api,
    Auth(p): Auth,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let params = Params::parse(raw.as_deref())?;
    let name = params.string("Name").ok_or_else(|| ApiError::invalid_field("name", "This field is required"))?;
    let kind = params.string("CollectionType").unwrap_or_else(|| String::from("movies"));
    let mut paths = params.list("Paths");
    if !body.is_empty()
        && let Ok(v) = serde_json::from_slice::<Value>(&body)
    {
        let infos = v.get("LibraryOptions").and_then(|o| o.get("PathInfos")).and_then(Value::as_array);
        for info in infos.into_iter().flatten() {
            if let Some(path) = info.get("Path").and_then(Value::as_str) {
                paths.push(path.to_string());
            }
        }
    }
    media.add_library(&p, &name, &kind, &paths).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/media/Library/VirtualFolders", tag = "media", summary = "Removes a library with its items", params(("name" = String, Query, min_length = 1, description = "Library name")), security(("bearer" = []), ("api_key" = [])), responses((status = 204, description = "Removed"), (status = 401, description = "Not authenticated"), (status = 403, description = "Needs media.write"), (status = 404, description = "No such library")))]
pub async fn remove_folder(State(media): Api, Auth(p): Auth, RawQuery(raw): RawQuery) -> Result<StatusCode, ApiError> {
    let params = Params::parse(raw.as_deref())?;
    let name = params.string("Name").ok_or_else(|| ApiError::invalid_field("name", "This field is required"))?;
    media.remove_library(&p, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/media/Library/Refresh", tag = "media", summary = "Rescans every library (a background task)", security(("bearer" = []), ("api_key" = [])), responses((status = 204, description = "Scan started"), (status = 401, description = "Not authenticated"), (status = 403, description = "Needs media.write")))]
pub async fn refresh(State(media): Api, Auth(p): Auth) -> Result<StatusCode, ApiError> {
    media.refresh(&p)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/media/ScheduledTasks", tag = "media", summary = "The library scan as Jellyfin's RefreshLibrary task, with its progress", security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "TaskInfo list", body = Vec<Object>), (status = 401, description = "Not authenticated")))]
/// `ScheduledTasks`: the library scan as Jellyfin's `RefreshLibrary` task, with its progress.
pub async fn scheduled_tasks(State(media): Api, Auth(p): Auth) -> Result<Json<Value>, ApiError> {
    media.libraries(&p)?;
    let s = media.jobs.state();
    let last = s.last.as_ref().map(|r| {
        json!({
            "StartTimeUtc": s.started_at.map(|t| t.to_rfc3339()),
            "EndTimeUtc": s.finished_at.map(|t| t.to_rfc3339()),
            "Status": if r.log.is_empty() { "Completed" } else { "CompletedWithWarnings" },
            "Name": "Scan Media Library",
            "Key": "RefreshLibrary",
            "Id": "refreshlibrary",
            "ErrorMessage": if r.log.is_empty() { Value::Null } else { json!(r.log.join("; ")) },
            "Files": r.files,
            "Probed": r.probed,
            "Seconds": r.seconds,
        })
    });
    Ok(Json(json!([{
        "Name": "Scan Media Library",
        "State": if s.running { "Running" } else { "Idle" },
        "CurrentProgressPercentage": if s.running { json!(s.progress) } else { Value::Null },
        "Id": "refreshlibrary",
        "Key": "RefreshLibrary",
        "Category": "Library",
        "IsHidden": false,
        "LastExecutionResult": last,
        "CompletedCount": s.completed,
    }])))
}

fn content_type(path: &std::path::Path) -> &'static str {
    match crate::naming::extension(&path.to_string_lossy()).as_deref() {
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("bmp") => "image/bmp",
        _ => "image/jpeg",
    }
}

#[utoipa::path(get, path = "/api/media/Items/{itemId}/Images/{imageType}", tag = "media", summary = "An item's image (folder.jpg, poster.jpg); HEAD too", params(("itemId" = String, Path, description = "Item id (32 hex digits)"), ("imageType" = String, Path, description = "Primary")), security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "The image bytes"), (status = 401, description = "Not authenticated"), (status = 404, description = "No such image")))]
/// `Items/{id}/Images/Primary`: the item's folder image (or the photo itself).
pub async fn image(
    State(media): Api,
    Auth(p): Auth,
    method: Method,
    IdAnd(id, kind): IdAnd,
) -> Result<Response, ApiError> {
    if !kind.eq_ignore_ascii_case("primary") && !kind.eq_ignore_ascii_case("thumb") {
        return Err(ApiError::not_found("Image not found"));
    }
    let path = media.image(&p, &id)?;
    let bytes = tokio::fs::read(&path).await.map_err(|_| ApiError::not_found("Image not found"))?;
    let len = bytes.len();
    let body = if method == Method::HEAD { Body::empty() } else { Body::from(bytes) };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(&path)));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    Ok(response)
}

async fn flag(
    media: &Media,
    p: &nexus_identity::Principal,
    user: Option<&str>,
    id: &str,
    f: UserFlag,
) -> Result<Response, ApiError> {
    let d = media.set_user_flag(p, user, id, f).await?;
    Ok(Json(UserData::new(&d.item_id, &d)).into_response())
}

#[utoipa::path(post, path = "/api/media/UserPlayedItems/{itemId}", tag = "media", summary = "Marks an item played", params(("itemId" = String, Path, description = "Item id (32 hex digits)")), security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "The caller's data on the item", body = super::dto::UserData), (status = 401, description = "Not authenticated"), (status = 404, description = "No such item")))]
pub async fn played(State(m): Api, Auth(p): Auth, Id(id): Id, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref())?;
    flag(&m, &p, params.get("UserId"), &id, UserFlag::Played(true)).await
}

#[utoipa::path(delete, path = "/api/media/UserPlayedItems/{itemId}", tag = "media", summary = "Marks an item unplayed", params(("itemId" = String, Path, description = "Item id (32 hex digits)")), security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "The caller's data on the item", body = super::dto::UserData), (status = 401, description = "Not authenticated"), (status = 404, description = "No such item")))]
pub async fn unplayed(State(m): Api, Auth(p): Auth, Id(id): Id, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref())?;
    flag(&m, &p, params.get("UserId"), &id, UserFlag::Played(false)).await
}

#[utoipa::path(post, path = "/api/media/UserFavoriteItems/{itemId}", tag = "media", summary = "Marks an item favourite", params(("itemId" = String, Path, description = "Item id (32 hex digits)")), security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "The caller's data on the item", body = super::dto::UserData), (status = 401, description = "Not authenticated"), (status = 404, description = "No such item")))]
pub async fn favorite(State(m): Api, Auth(p): Auth, Id(id): Id, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref())?;
    flag(&m, &p, params.get("UserId"), &id, UserFlag::Favorite(true)).await
}

#[utoipa::path(delete, path = "/api/media/UserFavoriteItems/{itemId}", tag = "media", summary = "Unmarks an item favourite", params(("itemId" = String, Path, description = "Item id (32 hex digits)")), security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "The caller's data on the item", body = super::dto::UserData), (status = 401, description = "Not authenticated"), (status = 404, description = "No such item")))]
pub async fn unfavorite(
    State(m): Api,
    Auth(p): Auth,
    Id(id): Id,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref())?;
    flag(&m, &p, params.get("UserId"), &id, UserFlag::Favorite(false)).await
}

#[utoipa::path(post, path = "/api/media/Users/{userId}/PlayedItems/{itemId}", tag = "media", summary = "Marks an item played (legacy form)", params(("userId" = String, Path, description = "User id"), ("itemId" = String, Path, description = "Item id (32 hex digits)")), security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "The caller's data on the item", body = super::dto::UserData), (status = 401, description = "Not authenticated"), (status = 404, description = "No such item")))]
pub async fn played_for(State(m): Api, Auth(p): Auth, IdAnd(id, u): IdAnd) -> Result<Response, ApiError> {
    flag(&m, &p, Some(&u), &id, UserFlag::Played(true)).await
}

#[utoipa::path(delete, path = "/api/media/Users/{userId}/PlayedItems/{itemId}", tag = "media", summary = "Marks an item unplayed (legacy form)", params(("userId" = String, Path, description = "User id"), ("itemId" = String, Path, description = "Item id (32 hex digits)")), security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "The caller's data on the item", body = super::dto::UserData), (status = 401, description = "Not authenticated"), (status = 404, description = "No such item")))]
pub async fn unplayed_for(State(m): Api, Auth(p): Auth, IdAnd(id, u): IdAnd) -> Result<Response, ApiError> {
    flag(&m, &p, Some(&u), &id, UserFlag::Played(false)).await
}

#[utoipa::path(post, path = "/api/media/Users/{userId}/FavoriteItems/{itemId}", tag = "media", summary = "Marks an item favourite (legacy form)", params(("userId" = String, Path, description = "User id"), ("itemId" = String, Path, description = "Item id (32 hex digits)")), security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "The caller's data on the item", body = super::dto::UserData), (status = 401, description = "Not authenticated"), (status = 404, description = "No such item")))]
pub async fn favorite_for(State(m): Api, Auth(p): Auth, IdAnd(id, u): IdAnd) -> Result<Response, ApiError> {
    flag(&m, &p, Some(&u), &id, UserFlag::Favorite(true)).await
}

#[utoipa::path(delete, path = "/api/media/Users/{userId}/FavoriteItems/{itemId}", tag = "media", summary = "Unmarks an item favourite (legacy form)", params(("userId" = String, Path, description = "User id"), ("itemId" = String, Path, description = "Item id (32 hex digits)")), security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "The caller's data on the item", body = super::dto::UserData), (status = 401, description = "Not authenticated"), (status = 404, description = "No such item")))]
pub async fn unfavorite_for(State(m): Api, Auth(p): Auth, IdAnd(id, u): IdAnd) -> Result<Response, ApiError> {
    flag(&m, &p, Some(&u), &id, UserFlag::Favorite(false)).await
}
