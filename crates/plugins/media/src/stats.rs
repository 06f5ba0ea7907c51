//! Playback statistics over Nexus's own sessions and history, for the Tautulli-compatible API.

use std::collections::HashMap;

use nexus_identity::Principal;

use crate::MediaError;
use crate::catalog::Catalog;
use crate::service::Media;
use crate::sessions::Session;
use crate::store::PlaybackRow;

/// The permission statistics need: they show every user's viewing.
pub const STATS: &str = "analytics.read";
/// How much history statistics look at.
const HISTORY_LIMIT: i64 = 50_000;

/// One playback, with what the history tables show of its item.
#[derive(Debug, Clone)]
pub struct Play {
    pub row: PlaybackRow,
    pub title: String,
    pub full_title: String,
    /// Tautulli's `media_type`: `movie`, `episode`, `track`, `photo`, `clip`.
    pub media_type: &'static str,
    pub parent_title: String,
    pub grandparent_title: String,
    pub year: Option<i64>,
    pub library_id: Option<String>,
    pub runtime_ticks: Option<i64>,
    /// The series or album it belongs to, for "top TV"/"top music".
    pub group_id: Option<String>,
}

impl Play {
    /// Seconds watched: from start to stop, or to the position reached while still playing.
    pub fn seconds(&self) -> i64 {
        match self.row.stopped_at {
            Some(stopped) => ((stopped - self.row.started_at) / 1_000_000).max(0),
            None => self.row.position_ticks / 10_000_000,
        }
    }

    /// Tautulli's `percent_complete`.
    pub fn percent(&self) -> i64 {
        match self.runtime_ticks {
            Some(r) if r > 0 => (self.row.position_ticks * 100 / r).clamp(0, 100),
            _ => 0,
        }
    }
}

pub fn media_type(kind: &str) -> &'static str {
    match kind {
        "Movie" => "movie",
        "Episode" => "episode",
        "Audio" => "track",
        "Photo" => "photo",
        _ => "clip",
    }
}

fn describe(catalog: &Catalog, row: PlaybackRow) -> Play {
    let item = catalog.item(&row.item_id);
    let parent = item.and_then(|i| i.row.parent_id.as_deref()).and_then(|p| catalog.item(p));
    let (title, kind, year, library_id, runtime_ticks) = match item {
        Some(i) => {
            (i.row.name.clone(), i.row.kind.as_str(), i.row.year, Some(i.row.library_id.clone()), i.runtime_ticks())
        }
        None => (String::from("(removed)"), "", None, None, None),
    };
    let (parent_title, grandparent_title, group_id) = match kind {
        "Episode" => (
            parent.map(|p| p.row.name.clone()).unwrap_or_default(),
            item.and_then(|i| i.row.series_name.clone()).unwrap_or_default(),
            item.and_then(|i| i.row.series_id.clone()),
        ),
        "Audio" => (
            parent.map(|p| p.row.name.clone()).unwrap_or_default(),
            item.and_then(|i| i.row.album_artist.clone()).unwrap_or_default(),
            parent.map(|p| p.row.id.clone()),
        ),
        _ => (String::new(), String::new(), Some(row.item_id.clone())),
    };
    let full_title =
        if grandparent_title.is_empty() { title.clone() } else { format!("{grandparent_title} - {title}") };
    Play {
        row,
        title,
        full_title,
        media_type: media_type(kind),
        parent_title,
        grandparent_title,
        year,
        library_id,
        runtime_ticks,
        group_id,
    }
}

impl Media {
    /// Every recorded playback, newest first.
    pub async fn plays(&self, p: &Principal) -> Result<Vec<Play>, MediaError> {
        check(p)?;
        let catalog = self.catalog();
        let rows = self.store.history(None, HISTORY_LIMIT).await?;
        Ok(rows.into_iter().map(|r| describe(&catalog, r)).collect())
    }

    /// Sessions playing something now.
    pub fn activity(&self, p: &Principal) -> Result<Vec<Session>, MediaError> {
        check(p)?;
        Ok(self.sessions.active())
    }

    /// Play count and seconds watched per key (`key` picks the grouping).
    pub fn totals<'a>(
        plays: &'a [Play],
        key: impl Fn(&'a Play) -> Option<&'a str>,
    ) -> HashMap<&'a str, (i64, i64, i64)> {
        let mut out: HashMap<&str, (i64, i64, i64)> = HashMap::new();
        for play in plays {
            if let Some(k) = key(play) {
                let e = out.entry(k).or_default();
                e.0 += 1;
                e.1 += play.seconds();
                // Newest start.
                e.2 = e.2.max(play.row.started_at);
            }
        }
        out
    }
}

fn check(p: &Principal) -> Result<(), MediaError> {
    if p.has(STATS) { Ok(()) } else { Err(MediaError::Forbidden(STATS.to_string())) }
}
