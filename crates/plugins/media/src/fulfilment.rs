//! Whether the library holds what a request asked for: the item whose names tag the request's
//! TMDB or TVDB id, or, for an item that tags no id, the one with the request's title and year.
//! A show is held when every requested season has an episode.

use crate::catalog::Catalog;
use crate::store::{ItemRow, RequestRow};

/// The id of the movie or series of `catalog` that fulfils `request`, if there is one.
pub fn holder(catalog: &Catalog, request: &RequestRow) -> Option<String> {
    let kind = if request.media_type == "movie" { "Movie" } else { "Series" };
    let title = request.title.as_deref().map(normalized).filter(|t| !t.is_empty());
    catalog
        .sorted
        .iter()
        .filter(|i| i.kind() == kind && same_media(&i.row, request, title.as_deref()))
        .find(|i| kind == "Movie" || has_seasons(catalog, i.id(), request))
        .map(|i| i.id().to_string())
}

fn same_media(item: &ItemRow, request: &RequestRow, title: Option<&str>) -> bool {
    if item.tmdb_id.is_some() || item.tvdb_id.is_some() {
        return item.tmdb_id == Some(request.tmdb_id) || (request.tvdb_id.is_some() && item.tvdb_id == request.tvdb_id);
    }
    let same_year = match (request.year, item.year) {
        (Some(wanted), Some(year)) => wanted == year,
        (Some(_), None) => false,
        (None, _) => true,
    };
    title.is_some_and(|t| same_year && normalized(&item.name) == t)
}

/// Every season `request` names has an episode under series `series_id`.
fn has_seasons(catalog: &Catalog, series_id: &str, request: &RequestRow) -> bool {
    let wanted: Vec<i64> = serde_json::from_str(&request.seasons).unwrap_or_default();
    let seasons = catalog.children.get(series_id).map(Vec::as_slice).unwrap_or_default();
    wanted.iter().all(|n| {
        seasons
            .iter()
            .any(|s| s.kind() == "Season" && s.row.index_number == Some(*n) && catalog.children.contains_key(s.id()))
    })
}

/// A title as compared: letters and digits, lower case, words separated by one space (file
/// names cannot hold every character a title has: `Spider-Man: No Way Home`).
fn normalized(title: &str) -> String {
    title.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::LibraryRow;

    fn item(id: &str, kind: &str, name: &str, parent: &str) -> ItemRow {
        ItemRow {
            id: id.into(),
            library_id: "lib".into(),
            parent_id: Some(parent.into()),
            kind: kind.into(),
            name: name.into(),
            sort_name: name.to_lowercase(),
            ..ItemRow::default()
        }
    }

    fn request(media_type: &str, tmdb: i64, title: Option<&str>, year: Option<i64>, seasons: &str) -> RequestRow {
        RequestRow {
            id: 1,
            media_type: media_type.into(),
            tmdb_id: tmdb,
            tvdb_id: None,
            is4k: 0,
            seasons: seasons.into(),
            status: crate::requests::APPROVED,
            requested_by: "u".into(),
            modified_by: None,
            created_at: 0,
            updated_at: 0,
            title: title.map(str::to_string),
            year,
        }
    }

    fn catalog(items: Vec<ItemRow>) -> Catalog {
        let lib = LibraryRow {
            id: "lib".into(),
            name: "L".into(),
            kind: "movies".into(),
            paths: "[]".into(),
            source: "api".into(),
            created_at: 0,
        };
        Catalog::build(&[lib], items, Vec::new())
    }

    #[test]
    fn movies_match_by_id_else_by_title_and_year() {
        let mut tagged = item("m1", "Movie", "The Matrix", "lib");
        tagged.tmdb_id = Some(603);
        tagged.year = Some(1999);
        let mut untagged = item("m2", "Movie", "Spider-Man No Way Home", "lib");
        untagged.year = Some(2021);
        let c = catalog(vec![tagged, untagged]);
        assert_eq!(holder(&c, &request("movie", 603, None, None, "[]")).as_deref(), Some("m1"));
        // An item with an id matches by id only, whatever the title says.
        assert_eq!(holder(&c, &request("movie", 604, Some("The Matrix"), Some(1999), "[]")), None);
        let spider = |year| request("movie", 634_649, Some("Spider-Man: No Way Home"), year, "[]");
        assert_eq!(holder(&c, &spider(Some(2021))).as_deref(), Some("m2"));
        assert_eq!(holder(&c, &spider(None)).as_deref(), Some("m2"));
        assert_eq!(holder(&c, &spider(Some(2022))), None);
        assert_eq!(holder(&c, &request("tv", 634_649, Some("Spider-Man: No Way Home"), None, "[]")), None);
    }

    #[test]
    fn a_show_is_held_once_every_requested_season_has_an_episode() {
        let mut series = item("s", "Series", "Show", "lib");
        series.tvdb_id = Some(81189);
        let mut season = item("s1", "Season", "Season 1", "s");
        season.index_number = Some(1);
        let episode = item("e1", "Episode", "Pilot", "s1");
        let c = catalog(vec![series, season, episode]);
        let mut r = request("tv", 1396, None, None, "[1]");
        r.tvdb_id = Some(81189);
        assert_eq!(holder(&c, &r).as_deref(), Some("s"));
        r.seasons = "[1, 2]".into();
        assert_eq!(holder(&c, &r), None);
    }
}
