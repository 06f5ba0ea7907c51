//! Jellyfin's shapes: `BaseItemDto`, `UserItemDataDto`, `MediaSourceInfo`, `QueryResult`.

use serde::Serialize;
use serde_json::Value;

use crate::catalog::{Item, Library};
use crate::scan::item_id;
use crate::service::{Entry, Found, media_type};
use crate::store::{FileRow, UserDataRow};

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserData {
    pub playback_position_ticks: i64,
    pub play_count: i64,
    pub is_favorite: bool,
    pub played: bool,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_played_date: Option<String>,
    pub item_id: String,
}

impl UserData {
    pub fn new(id: &str, d: &UserDataRow) -> Self {
        Self {
            playback_position_ticks: d.position_ticks,
            play_count: d.play_count,
            is_favorite: d.favorite != 0,
            played: d.played != 0,
            key: id.to_string(),
            last_played_date: d.last_played_at.map(|t| nexus_kernel::clock::Timestamp::from_micros(t).to_rfc3339()),
            item_id: id.to_string(),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MediaSource {
    pub protocol: &'static str,
    pub id: String,
    pub path: String,
    #[serde(rename = "Type")]
    pub kind: &'static str,
    pub container: String,
    pub size: i64,
    pub name: String,
    pub is_remote: bool,
    pub supports_direct_play: bool,
    pub supports_direct_stream: bool,
    pub supports_transcoding: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_time_ticks: Option<i64>,
    pub media_streams: Value,
    #[serde(rename = "ETag")]
    pub etag: String,
}

impl MediaSource {
    fn new(item: &Item, f: &FileRow) -> Self {
        Self {
            protocol: "File",
            id: f.id.clone(),
            path: f.path.clone(),
            kind: "Default",
            container: f.container.clone(),
            size: f.size,
            name: f.version.clone().unwrap_or_else(|| item.row.name.clone()),
            is_remote: false,
            supports_direct_play: true,
            supports_direct_stream: true,
            supports_transcoding: false,
            run_time_ticks: f.runtime_ticks,
            media_streams: serde_json::from_str(&f.streams).unwrap_or(Value::Array(Vec::new())),
            etag: format!("{:x}-{:x}", f.size, f.mtime),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BaseItem {
    pub name: String,
    pub server_id: String,
    pub id: String,
    #[serde(rename = "Type")]
    pub kind: String,
    pub is_folder: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collection_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub season_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_number: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_number_end: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_index_number: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub production_year: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub premiere_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_time_ticks: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub album: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub album_artist: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_sources: Option<Vec<MediaSource>>,
    pub image_tags: serde_json::Map<String, Value>,
    pub location_type: &'static str,
    pub sort_name: String,
    pub date_created: String,
    pub user_data: UserData,
}

/// Which optional fields a caller asked for (`Fields=`); single items get all of them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fields {
    pub path: bool,
    pub media_sources: bool,
}

impl Fields {
    pub fn all() -> Self {
        Self { path: true, media_sources: true }
    }

    pub fn from_list(list: &[String]) -> Self {
        let has = |n: &str| list.iter().any(|f| f.eq_ignore_ascii_case(n));
        Self { path: has("Path"), media_sources: has("MediaSources") }
    }
}

pub fn image_tag(path: &str) -> String {
    item_id(&["image", path])
}

pub fn base_item(found: &Found, server_id: &str, fields: Fields, album_name: Option<String>) -> BaseItem {
    let id = found.entry.id().to_string();
    let user_data = UserData::new(&id, &found.user_data);
    match &found.entry {
        Entry::Library(l) => library_item(l, server_id, user_data),
        Entry::Item(item) => {
            let r = &item.row;
            let mut image_tags = serde_json::Map::new();
            if let Some(path) = &r.image_path {
                image_tags.insert(String::from("Primary"), Value::String(image_tag(path)));
            }
            BaseItem {
                name: r.name.clone(),
                server_id: server_id.to_string(),
                id,
                kind: r.kind.clone(),
                is_folder: item.is_folder(),
                parent_id: r.parent_id.clone(),
                collection_type: None,
                series_id: r.series_id.clone(),
                series_name: r.series_name.clone(),
                season_id: r.season_id.clone(),
                index_number: r.index_number,
                index_number_end: r.index_number_end,
                parent_index_number: r.parent_index_number,
                production_year: r.year,
                premiere_date: r.year.map(|y| format!("{y:04}-01-01T00:00:00.0000000Z")),
                run_time_ticks: item.runtime_ticks(),
                path: if fields.path { r.path.clone() } else { None },
                media_type: media_type(&r.kind),
                container: item.files.first().map(|f| f.container.clone()),
                album: album_name,
                album_artist: r.album_artist.clone(),
                media_sources: (fields.media_sources && !item.files.is_empty())
                    .then(|| item.files.iter().map(|f| MediaSource::new(item, f)).collect()),
                image_tags,
                location_type: "FileSystem",
                sort_name: r.sort_name.clone(),
                date_created: nexus_kernel::clock::Timestamp::from_micros(r.created_at).to_rfc3339(),
                user_data,
            }
        }
    }
}

fn library_item(l: &Library, server_id: &str, user_data: UserData) -> BaseItem {
    BaseItem {
        name: l.name.clone(),
        server_id: server_id.to_string(),
        id: l.id.clone(),
        kind: String::from("CollectionFolder"),
        is_folder: true,
        parent_id: None,
        collection_type: Some(l.collection_type()),
        series_id: None,
        series_name: None,
        season_id: None,
        index_number: None,
        index_number_end: None,
        parent_index_number: None,
        production_year: None,
        premiere_date: None,
        run_time_ticks: None,
        path: l.paths.first().map(|p| p.to_string_lossy().into_owned()),
        media_type: None,
        container: None,
        album: None,
        album_artist: None,
        media_sources: None,
        image_tags: serde_json::Map::new(),
        location_type: "FileSystem",
        sort_name: l.name.to_lowercase(),
        date_created: nexus_kernel::clock::Timestamp::from_micros(l.created_at).to_rfc3339(),
        user_data,
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct QueryResult {
    pub items: Vec<BaseItem>,
    pub total_record_count: usize,
    pub start_index: usize,
}
