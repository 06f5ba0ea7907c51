//! `Items` over the catalog: which items a query selects, in which order, and which of them
//! make the requested page. The catalog keeps ready lists per ancestor and item type, so the
//! common page (`ParentId=…&Recursive=true&IncludeItemTypes=Movie&StartIndex=…&Limit=…`)
//! costs the page, not the library; items are only counted, never copied, unless a filter or
//! an order asks for more.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use crate::catalog::{Catalog, Item};
use crate::store::UserDataRow;

/// What `Items` asks for, with Jellyfin's parameters already parsed.
#[derive(Debug, Clone, Default)]
pub struct ItemQuery {
    pub parent_id: Option<String>,
    pub recursive: bool,
    pub include_types: Vec<String>,
    pub exclude_types: Vec<String>,
    pub media_types: Vec<String>,
    pub search_term: Option<String>,
    pub sort_by: Vec<String>,
    pub descending: bool,
    pub start_index: usize,
    pub limit: Option<usize>,
    /// `IsPlayed`, `IsUnplayed`, `IsFavorite`, `IsResumable`, `IsFolder`, `IsNotFolder`.
    pub filters: Vec<String>,
    pub ids: Vec<String>,
    pub is_played: Option<bool>,
    pub is_favorite: Option<bool>,
    pub years: Vec<i64>,
}

/// Filters that read the caller's data on every candidate.
const DATA_FILTERS: &[&str] = &["isplayed", "isunplayed", "isfavorite", "isfavoriteorlikes", "isresumable"];
/// Orders that read the caller's data on every candidate.
const DATA_ORDERS: &[&str] = &["dateplayed", "playcount"];

impl ItemQuery {
    /// Whether selecting (not only showing) items reads the caller's data: then all of it is
    /// needed, else only the page's.
    pub fn reads_user_data(&self) -> bool {
        self.is_played.is_some()
            || self.is_favorite.is_some()
            || self.filters.iter().any(|f| DATA_FILTERS.contains(&f.to_ascii_lowercase().as_str()))
            || self.sort_keys().iter().any(|k| DATA_ORDERS.contains(&k.as_str()))
    }

    fn sort_keys(&self) -> Vec<String> {
        self.sort_by.iter().map(|s| s.to_ascii_lowercase()).collect()
    }
}

/// The page of a query and how many items matched in all.
#[derive(Debug, Default)]
pub struct Selection {
    pub items: Vec<Arc<Item>>,
    pub total: usize,
}

/// The items of `catalog` that `q` selects, ordered and paged. `data` is the caller's data by
/// item id; it is read only when [`ItemQuery::reads_user_data`].
pub fn select(catalog: &Catalog, q: &ItemQuery, data: &HashMap<String, UserDataRow>) -> Selection {
    let empty = UserDataRow::default();
    let data_of = |id: &str| data.get(id).unwrap_or(&empty);
    let parent = q.parent_id.as_deref().map(str::to_ascii_lowercase);
    let single_kind = match q.include_types.as_slice() {
        [kind] => Some(kind.as_str()),
        _ => None,
    };
    let by_ids: Vec<Arc<Item>>;
    let (candidates, kind_done): (&[Arc<Item>], bool) = if !q.ids.is_empty() {
        by_ids = q.ids.iter().filter_map(|id| catalog.item(&id.to_ascii_lowercase()).cloned()).collect();
        (&by_ids, false)
    } else {
        match parent.as_deref() {
            Some(p) if !q.recursive => (catalog.children.get(p).map(Vec::as_slice).unwrap_or_default(), false),
            p => (catalog.descendants(p, single_kind), single_kind.is_some()),
        }
    };

    let has = |list: &[String], kind: &str| list.iter().any(|t| t.eq_ignore_ascii_case(kind));
    let search = q.search_term.as_ref().map(|s| s.to_lowercase()).filter(|s| !s.is_empty());
    let filters: Vec<String> = q.filters.iter().map(|f| f.to_ascii_lowercase()).collect();
    let keep = |i: &&Arc<Item>| -> bool {
        (kind_done || q.include_types.is_empty() || has(&q.include_types, i.kind()))
            && !has(&q.exclude_types, i.kind())
            && (q.media_types.is_empty()
                || crate::service::media_type(i.kind()).is_some_and(|m| has(&q.media_types, m)))
            && (q.years.is_empty() || i.row.year.is_some_and(|y| q.years.contains(&y)))
            && search.as_ref().is_none_or(|s| i.row.name.to_lowercase().contains(s.as_str()))
            && (filters.is_empty() && q.is_played.is_none() && q.is_favorite.is_none() || {
                let d = data_of(i.id());
                let played = d.played != 0;
                let favorite = d.favorite != 0;
                let resumable = d.position_ticks > 0 && !played;
                q.is_played.is_none_or(|want| want == played)
                    && q.is_favorite.is_none_or(|want| want == favorite)
                    && filters.iter().all(|f| match f.as_str() {
                        "isplayed" => played,
                        "isunplayed" => !played,
                        "isfavorite" | "isfavoriteorlikes" => favorite,
                        "isresumable" => resumable,
                        "isfolder" => i.is_folder(),
                        "isnotfolder" => !i.is_folder(),
                        _ => true,
                    })
            })
    };
    let unfiltered = (kind_done || q.include_types.is_empty())
        && q.exclude_types.is_empty()
        && q.media_types.is_empty()
        && q.years.is_empty()
        && search.is_none()
        && filters.is_empty()
        && q.is_played.is_none()
        && q.is_favorite.is_none();
    let limit = q.limit.unwrap_or(usize::MAX);
    let keys = q.sort_keys();
    // Catalog lists are by sort name already; a list of ids keeps the order it was asked in.
    let in_list_order =
        (keys.is_empty() && !q.descending) || (q.ids.is_empty() && keys.iter().all(|k| k == "sortname"));
    let order = |a: &Arc<Item>, b: &Arc<Item>| {
        let ord = compare(&keys, (a, data_of(a.id())), (b, data_of(b.id())));
        if q.descending { ord.reverse() } else { ord }
    };
    // `SortBy=SortName,ProductionYear` (what Jellyfin's web client sends): the lists are in
    // that order but for runs of equal sort names, so only the runs the page touches are
    // sorted, not the whole list. Items equal on every key keep the lists' order (by id), as
    // a stable sort of the lists would.
    if !in_list_order && q.ids.is_empty() && keys.first().is_some_and(|k| k == "sortname") {
        let mut matched: Vec<&Arc<Item>> =
            if unfiltered { candidates.iter().collect() } else { candidates.iter().filter(keep).collect() };
        if q.descending {
            matched.reverse();
        }
        let total = matched.len();
        let start = q.start_index.min(total);
        let end = start.saturating_add(limit).min(total);
        let same = |a: usize, b: usize| {
            matched.get(a).zip(matched.get(b)).is_some_and(|(x, y)| x.row.sort_name == y.row.sort_name)
        };
        let (mut lo, mut hi) = (start, end);
        while lo > 0 && lo < total && same(lo - 1, lo) {
            lo -= 1;
        }
        while hi > 0 && hi < total && same(hi - 1, hi) {
            hi += 1;
        }
        if let Some(window) = matched.get_mut(lo..hi) {
            window.sort_by(|a, b| order(a, b).then_with(|| a.row.id.cmp(&b.row.id)));
        }
        let items = matched.get(start..end).unwrap_or_default().iter().map(|i| (*i).clone()).collect();
        return Selection { items, total };
    }
    if !in_list_order {
        let mut matched: Vec<&Arc<Item>> = candidates.iter().filter(keep).collect();
        matched.sort_by(|a, b| order(a, b));
        let total = matched.len();
        let items = matched.into_iter().skip(q.start_index).take(limit).cloned().collect();
        return Selection { items, total };
    }
    let ordered: Box<dyn Iterator<Item = &Arc<Item>>> =
        if q.descending { Box::new(candidates.iter().rev()) } else { Box::new(candidates.iter()) };
    if unfiltered {
        let items = ordered.skip(q.start_index).take(limit).cloned().collect();
        return Selection { items, total: candidates.len() };
    }
    let mut selection = Selection::default();
    for item in ordered.filter(keep) {
        if selection.total >= q.start_index && selection.items.len() < limit {
            selection.items.push(item.clone());
        }
        selection.total += 1;
    }
    selection
}

fn compare(keys: &[String], (x, dx): (&Item, &UserDataRow), (y, dy): (&Item, &UserDataRow)) -> Ordering {
    for key in keys {
        let ord = match key.as_str() {
            "name" => x.row.name.to_lowercase().cmp(&y.row.name.to_lowercase()),
            "productionyear" | "premieredate" => x.row.year.cmp(&y.row.year),
            "datecreated" => x.row.created_at.cmp(&y.row.created_at),
            "dateplayed" => dx.last_played_at.cmp(&dy.last_played_at),
            "playcount" => dx.play_count.cmp(&dy.play_count),
            "runtime" => x.runtime_ticks().cmp(&y.runtime_ticks()),
            "indexnumber" => x.row.index_number.cmp(&y.row.index_number),
            "parentindexnumber" => x.row.parent_index_number.cmp(&y.row.parent_index_number),
            "isfolder" => y.is_folder().cmp(&x.is_folder()),
            _ => x.row.sort_name.cmp(&y.row.sort_name),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    x.row.sort_name.cmp(&y.row.sort_name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::{ItemRow, LibraryRow};

    fn row(id: &str, library: &str, parent: &str, kind: &str, name: &str) -> ItemRow {
        ItemRow {
            id: id.into(),
            library_id: library.into(),
            parent_id: Some(parent.into()),
            kind: kind.into(),
            name: name.into(),
            sort_name: name.to_lowercase(),
            year: Some(2000 + i64::from(name.len() as u8 % 3)),
            ..ItemRow::default()
        }
    }

    fn library(id: &str, kind: &str) -> LibraryRow {
        LibraryRow {
            id: id.into(),
            name: id.into(),
            kind: kind.into(),
            paths: "[]".into(),
            source: "api".into(),
            created_at: 0,
        }
    }

    /// Two libraries: 30 movies, and 3 series of 2 seasons of 4 episodes.
    fn catalog() -> Catalog {
        let mut items = Vec::new();
        for n in 0..30 {
            items.push(row(&format!("m{n:02}"), "movies", "movies", "Movie", &format!("Film {:02}", (n * 7) % 30)));
        }
        for s in 0..3 {
            items.push(row(&format!("s{s}"), "shows", "shows", "Series", &format!("Show {s}")));
            for season in 0..2 {
                let season_id = format!("s{s}x{season}");
                items.push(row(&season_id, "shows", &format!("s{s}"), "Season", &format!("Season {season}")));
                for e in 0..4 {
                    let id = format!("s{s}x{season}e{e}");
                    items.push(row(&id, "shows", &season_id, "Episode", &format!("Episode {e} of {s}")));
                }
            }
        }
        Catalog::build(&[library("movies", "movies"), library("shows", "tvshows")], items, Vec::new())
    }

    /// What a query selects, computed the slow way: every item tested, then sorted and paged.
    fn naive(c: &Catalog, q: &ItemQuery) -> (Vec<String>, usize) {
        let parent = q.parent_id.as_deref().map(str::to_ascii_lowercase);
        let parent = parent.as_deref();
        let mut all: Vec<&Arc<Item>> = c
            .sorted
            .iter()
            .filter(|i| match parent {
                Some(p) if q.recursive => i.ancestors.iter().any(|a| a == p),
                Some(p) => i.row.parent_id.as_deref() == Some(p),
                None => true,
            })
            .filter(|i| q.include_types.is_empty() || q.include_types.iter().any(|t| t.eq_ignore_ascii_case(i.kind())))
            .filter(|i| q.search_term.as_ref().is_none_or(|s| i.row.name.to_lowercase().contains(&s.to_lowercase())))
            .collect();
        if !q.sort_by.is_empty() || q.descending {
            let keys: Vec<String> = q.sort_by.iter().map(|k| k.to_ascii_lowercase()).collect();
            let none = UserDataRow::default();
            all.sort_by(|a, b| {
                let ord = compare(&keys, (a, &none), (b, &none));
                if q.descending { ord.reverse() } else { ord }
            });
        }
        let total = all.len();
        let page = all.iter().skip(q.start_index).take(q.limit.unwrap_or(usize::MAX)).map(|i| i.row.id.clone());
        (page.collect(), total)
    }

    #[test]
    fn indexed_and_filtered_pages_are_those_of_testing_every_item() {
        let c = catalog();
        let queries = [
            ItemQuery {
                parent_id: Some("MOVIES".into()),
                recursive: true,
                include_types: vec!["movie".into()],
                start_index: 5,
                limit: Some(10),
                ..Default::default()
            },
            ItemQuery {
                parent_id: Some("movies".into()),
                recursive: true,
                include_types: vec!["Movie".into()],
                start_index: 25,
                limit: Some(10),
                descending: true,
                sort_by: vec!["SortName".into()],
                ..Default::default()
            },
            ItemQuery {
                parent_id: Some("shows".into()),
                recursive: true,
                include_types: vec!["Episode".into()],
                limit: Some(5),
                ..Default::default()
            },
            ItemQuery { parent_id: Some("s1".into()), recursive: true, ..Default::default() },
            ItemQuery { parent_id: Some("s1".into()), recursive: false, ..Default::default() },
            ItemQuery {
                recursive: true,
                include_types: vec!["Series".into(), "Movie".into()],
                start_index: 3,
                limit: Some(7),
                ..Default::default()
            },
            ItemQuery {
                recursive: true,
                include_types: vec!["Episode".into()],
                search_term: Some("of 2".into()),
                limit: Some(3),
                ..Default::default()
            },
            ItemQuery {
                parent_id: Some("movies".into()),
                recursive: true,
                sort_by: vec!["ProductionYear".into()],
                limit: Some(12),
                ..Default::default()
            },
            ItemQuery {
                parent_id: Some("nowhere".into()),
                recursive: true,
                include_types: vec!["Movie".into()],
                ..Default::default()
            },
            ItemQuery { recursive: true, include_types: vec!["Trailer".into()], ..Default::default() },
            // Jellyfin web's order: only runs of equal sort names are sorted; "Episode 0 of 0"
            // and the like tie on every key.
            ItemQuery {
                parent_id: Some("movies".into()),
                recursive: true,
                include_types: vec!["Movie".into()],
                sort_by: vec!["SortName".into(), "ProductionYear".into()],
                start_index: 4,
                limit: Some(9),
                ..Default::default()
            },
            ItemQuery {
                parent_id: Some("shows".into()),
                recursive: true,
                include_types: vec!["Episode".into()],
                sort_by: vec!["SortName".into(), "ProductionYear".into()],
                descending: true,
                start_index: 3,
                limit: Some(6),
                ..Default::default()
            },
            ItemQuery {
                recursive: true,
                sort_by: vec!["SortName".into(), "Name".into()],
                search_term: Some("0".into()),
                start_index: 1,
                limit: Some(4),
                ..Default::default()
            },
            ItemQuery {
                recursive: true,
                include_types: vec!["Episode".into()],
                sort_by: vec!["SortName".into(), "ProductionYear".into()],
                start_index: 100,
                ..Default::default()
            },
        ];
        for q in &queries {
            let got = select(&c, q, &HashMap::new());
            let ids: Vec<String> = got.items.iter().map(|i| i.row.id.clone()).collect();
            assert_eq!((ids, got.total), naive(&c, q), "{q:?}");
        }
        assert_eq!(select(&c, &queries[0], &HashMap::new()).total, 30);
    }
}
