//! The Jellyfin surface in the OpenAPI document. Its routes are served through one
//! case-insensitive dispatcher (see the parent module), so they are documented here, under the
//! paths Jellyfin's own document gives them, rather than through the router.

use utoipa::OpenApi;

/// The query parameters of `Items` as `items::item_query` reads them (names in any case, lists
/// comma-separated or repeated). Only the document reads this type.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct ItemsQuery {
    /// An item or library id: its children, or with `Recursive` everything under it.
    ParentId: Option<String>,
    Recursive: Option<bool>,
    /// Item types to include (`Movie`, `Series`, `Season`, `Episode`, `MusicAlbum`, `Audio`, …).
    IncludeItemTypes: Option<Vec<String>>,
    ExcludeItemTypes: Option<Vec<String>>,
    /// `Video`, `Audio`, `Photo`.
    MediaTypes: Option<Vec<String>>,
    /// Part of the name.
    SearchTerm: Option<String>,
    /// `SortName`, `Name`, `ProductionYear`, `PremiereDate`, `DateCreated`, `DatePlayed`,
    /// `PlayCount`, `Runtime`, `IndexNumber`, `ParentIndexNumber`, `IsFolder`.
    SortBy: Option<Vec<String>>,
    /// `Ascending` or `Descending`.
    SortOrder: Option<String>,
    StartIndex: Option<u32>,
    Limit: Option<u32>,
    /// Optional fields to add: `Path`, `MediaSources`.
    Fields: Option<Vec<String>>,
    /// `IsPlayed`, `IsUnplayed`, `IsFavorite`, `IsResumable`, `IsFolder`, `IsNotFolder`.
    Filters: Option<Vec<String>>,
    IsPlayed: Option<bool>,
    IsFavorite: Option<bool>,
    IsResumable: Option<bool>,
    Years: Option<Vec<i32>>,
    /// These items only, in this order.
    Ids: Option<Vec<String>>,
    /// Whose data (played, favourite, position) to show and filter by (administrators).
    UserId: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    paths(
        super::system::info_public,
        super::system::info,
        super::system::ping,
        super::system::me,
        super::system::user,
        super::items::list,
        super::items::list_for_user,
        super::items::one,
        super::items::one_for_user,
        super::items::views,
        super::items::user_views,
        super::items::virtual_folders,
        super::items::add_folder,
        super::items::remove_folder,
        super::items::refresh,
        super::items::scheduled_tasks,
        super::items::image,
        super::items::played,
        super::items::unplayed,
        super::items::favorite,
        super::items::unfavorite,
        super::items::played_for,
        super::items::unplayed_for,
        super::items::favorite_for,
        super::items::unfavorite_for,
        super::stream::video,
        super::stream::audio,
        super::sessions::playing,
        super::sessions::progress,
        super::sessions::stopped,
        super::sessions::ping,
        super::sessions::list,
        super::sessions::play,
        super::sessions::playstate,
        super::sessions::socket,
    ),
    components(schemas(super::dto::QueryResult, super::dto::BaseItem, super::dto::UserData, super::dto::MediaSource))
)]
pub struct JellyfinDoc;
