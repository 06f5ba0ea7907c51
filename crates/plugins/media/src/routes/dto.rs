//! Jellyfin's shapes: `BaseItemDto`, `UserItemDataDto`, `MediaSourceInfo`, `QueryResult`.
//! They borrow from the catalog: a page of a hundred items is written out without copying
//! each item's strings first.

use serde::Serialize;
use serde_json::Value;

use crate::catalog::{Item, Library};
use crate::scan::item_id;
use crate::service::{Entry, Found, media_type};
use crate::store::{FileRow, UserDataRow};

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = UserItemDataDto)]
pub struct UserData<'a> {
    pub playback_position_ticks: i64,
    pub play_count: i64,
    pub is_favorite: bool,
    pub played: bool,
    pub key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_played_date: Option<String>,
    pub item_id: &'a str,
}

impl<'a> UserData<'a> {
    pub fn new(id: &'a str, d: &UserDataRow) -> Self {
        Self {
            playback_position_ticks: d.position_ticks,
            play_count: d.play_count,
            is_favorite: d.favorite != 0,
            played: d.played != 0,
            key: id,
            last_played_date: d.last_played_at.map(|t| nexus_kernel::clock::Timestamp::from_micros(t).to_rfc3339()),
            item_id: id,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = MediaSourceInfo)]
pub struct MediaSource<'a> {
    pub protocol: &'static str,
    pub id: &'a str,
    pub path: &'a str,
    #[serde(rename = "Type")]
    pub kind: &'static str,
    pub container: &'a str,
    pub size: i64,
    pub name: &'a str,
    pub is_remote: bool,
    pub supports_direct_play: bool,
    pub supports_direct_stream: bool,
    pub supports_transcoding: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_time_ticks: Option<i64>,
    #[schema(value_type = Vec<Object>)]
    pub media_streams: Value,
    #[serde(rename = "ETag")]
    pub etag: String,
}

impl<'a> MediaSource<'a> {
    fn new(item: &'a Item, f: &'a FileRow) -> Self {
        Self {
            protocol: "File",
            id: &f.id,
            path: &f.path,
            kind: "Default",
            container: &f.container,
            size: f.size,
            name: f.version.as_deref().unwrap_or(&item.row.name),
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = BaseItemDto)]
pub struct BaseItem<'a> {
    pub name: &'a str,
    pub server_id: &'a str,
    pub id: &'a str,
    #[serde(rename = "Type")]
    pub kind: &'a str,
    pub is_folder: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collection_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub season_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_number: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_number_end: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_index_number: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub production_year: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub premiere_date: Option<std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_time_ticks: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub album: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub album_artist: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_sources: Option<Vec<MediaSource<'a>>>,
    #[schema(value_type = Object)]
    pub image_tags: serde_json::Map<String, Value>,
    pub location_type: &'static str,
    #[schema(value_type = String)]
    pub sort_name: std::borrow::Cow<'a, str>,
    #[schema(value_type = String)]
    pub date_created: std::borrow::Cow<'a, str>,
    pub user_data: UserData<'a>,
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

pub fn base_item<'a>(found: &'a Found, server_id: &'a str, fields: Fields, album_name: Option<String>) -> BaseItem<'a> {
    let id = found.entry.id();
    let user_data = UserData::new(id, &found.user_data);
    match &found.entry {
        Entry::Library(l) => library_item(l, server_id, user_data),
        Entry::Item(item) => {
            let r = &item.row;
            let mut image_tags = serde_json::Map::new();
            if let Some(path) = &r.image_path {
                image_tags.insert(String::from("Primary"), Value::String(image_tag(path)));
            }
            BaseItem {
                name: &r.name,
                server_id,
                id,
                kind: &r.kind,
                is_folder: item.is_folder(),
                parent_id: r.parent_id.as_deref(),
                collection_type: None,
                series_id: r.series_id.as_deref(),
                series_name: r.series_name.as_deref(),
                season_id: r.season_id.as_deref(),
                index_number: r.index_number,
                index_number_end: r.index_number_end,
                parent_index_number: r.parent_index_number,
                production_year: r.year,
                premiere_date: item.premiere_date.as_deref().map(std::borrow::Cow::Borrowed),
                run_time_ticks: item.runtime_ticks(),
                path: if fields.path { r.path.as_deref() } else { None },
                media_type: media_type(&r.kind),
                container: item.files.first().map(|f| f.container.as_str()),
                album: album_name,
                album_artist: r.album_artist.as_deref(),
                media_sources: (fields.media_sources && !item.files.is_empty())
                    .then(|| item.files.iter().map(|f| MediaSource::new(item, f)).collect()),
                image_tags,
                location_type: "FileSystem",
                sort_name: std::borrow::Cow::Borrowed(&r.sort_name),
                date_created: std::borrow::Cow::Borrowed(&item.date_created),
                user_data,
            }
        }
    }
}

fn library_item<'a>(l: &'a Library, server_id: &'a str, user_data: UserData<'a>) -> BaseItem<'a> {
    BaseItem {
        name: &l.name,
        server_id,
        id: &l.id,
        kind: "CollectionFolder",
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
        path: l.paths.first().and_then(|p| p.to_str()),
        media_type: None,
        container: None,
        album: None,
        album_artist: None,
        media_sources: None,
        image_tags: serde_json::Map::new(),
        location_type: "FileSystem",
        sort_name: std::borrow::Cow::Owned(l.name.to_lowercase()),
        date_created: std::borrow::Cow::Owned(nexus_kernel::clock::Timestamp::from_micros(l.created_at).to_rfc3339()),
        user_data,
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = BaseItemDtoQueryResult)]
pub struct QueryResult<'a> {
    pub items: Vec<BaseItem<'a>>,
    pub total_record_count: usize,
    pub start_index: usize,
}
