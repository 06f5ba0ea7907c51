//! Jellyfin's file naming conventions: what a file under a library is, from its path alone.
//!
//! Movies `Title (Year)/Title (Year) - 1080p.mkv`; shows `Series (Year)/Season 01/Series
//! S01E02.mkv` (also `1x02`, `S01E01-E02`, `Episode 16`, a leading `02 - Title`, `Series - 317`),
//! `Season 00`/`Specials`; music `Artist/Album (Year)/[Disc 1/]01 - Title.flac`. The cases in
//! the tests re-express Jellyfin's own parser tests (`tests/Jellyfin.Naming.Tests`).

use std::sync::LazyLock;

use regex::Regex;

/// What a library holds, as Jellyfin's `CollectionType` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LibraryKind {
    Movies,
    TvShows,
    Music,
    Photos,
}

impl LibraryKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "movies" | "movie" => Some(Self::Movies),
            "tvshows" | "tvshow" | "shows" | "series" => Some(Self::TvShows),
            "music" => Some(Self::Music),
            "photos" | "homevideos" => Some(Self::Photos),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Movies => "movies",
            Self::TvShows => "tvshows",
            Self::Music => "music",
            Self::Photos => "photos",
        }
    }
}

pub const VIDEO_EXTENSIONS: &[&str] =
    &["mkv", "mp4", "m4v", "avi", "mov", "wmv", "webm", "ts", "m2ts", "mpg", "mpeg", "flv", "ogv", "3gp"];
pub const AUDIO_EXTENSIONS: &[&str] = &["mp3", "flac", "m4a", "aac", "ogg", "oga", "opus", "wav", "wma", "aiff", "ape"];
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "bmp"];

/// Folders Jellyfin treats as extras, never as items of their own.
const EXTRA_FOLDERS: &[&str] = &[
    "extras",
    "trailers",
    "featurettes",
    "behind the scenes",
    "deleted scenes",
    "interviews",
    "scenes",
    "samples",
    "sample",
    "shorts",
    "other",
    "theme-music",
    "backdrops",
];
/// File-name suffixes of extras (`Movie (2020)-trailer.mkv`).
const EXTRA_SUFFIXES: &[&str] = &[
    "-trailer",
    ".trailer",
    "_trailer",
    "-sample",
    ".sample",
    "_sample",
    "-featurette",
    "-deleted",
    "-scene",
    "-extra",
];

pub fn extension(name: &str) -> Option<String> {
    let (_, ext) = name.rsplit_once('.')?;
    Some(ext.to_ascii_lowercase())
}

pub fn is_video(name: &str) -> bool {
    extension(name).is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.as_str()))
}

pub fn is_audio(name: &str) -> bool {
    extension(name).is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.as_str()))
}

pub fn is_image(name: &str) -> bool {
    extension(name).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// The file name without its extension.
pub fn stem(name: &str) -> &str {
    match name.rsplit_once('.') {
        Some((s, ext)) if !s.is_empty() && ext.len() <= 5 => s,
        _ => name,
    }
}

/// Whether a file (or a folder on its path) is an extra, a sample or a trailer.
pub fn is_extra(folders: &[&str], file: &str) -> bool {
    let s = stem(file).to_ascii_lowercase();
    if s == "sample" || s == "trailer" || EXTRA_SUFFIXES.iter().any(|x| s.ends_with(x)) {
        return true;
    }
    folders.iter().any(|f| EXTRA_FOLDERS.contains(&f.to_ascii_lowercase().as_str()))
}

fn re(pattern: &str) -> Regex {
    // The patterns are constants of this file, checked by the tests.
    #[allow(clippy::expect_used)]
    Regex::new(pattern).expect("naming pattern")
}

/// A movie: its title, year and version label (` - 1080p`, `[Director's Cut]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovieName {
    pub title: String,
    pub year: Option<i32>,
    pub version: Option<String>,
}

static BRACKETED_YEAR: LazyLock<Regex> = LazyLock::new(|| re(r"[(\[]((?:19|20)\d{2})[)\]]"));
static BARE_YEAR: LazyLock<Regex> = LazyLock::new(|| re(r"\b((?:19|20)\d{2})\b"));
static DATE_AFTER: LazyLock<Regex> = LazyLock::new(|| re(r"^[.\-]\d{2}[.\-]\d{2}"));
static BRACKET_TAG: LazyLock<Regex> = LazyLock::new(|| re(r"\[[^\]]*\]|\{[^}]*\}"));
/// Jellyfin's provider id tags: `[tmdbid-603]`, `[tmdbid=603]`, `{tmdb-603}`, `[tvdbid-81189]`.
static PROVIDER_TAG: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)[\[{](tmdb|tvdb)(?:id)?[-=](\d{1,10})[\]}]"));

/// The ids of a movie or series at TheMovieDB and TheTVDB, as its folder or file names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProviderIds {
    pub tmdb: Option<i64>,
    pub tvdb: Option<i64>,
}

/// The provider ids tagged in `names` (a file's stem, then its folders): the first of each.
pub fn provider_ids(names: &[&str]) -> ProviderIds {
    let mut ids = ProviderIds::default();
    for c in names.iter().flat_map(|n| PROVIDER_TAG.captures_iter(n)) {
        let id = c.get(2).and_then(|m| m.as_str().parse().ok());
        match c.get(1).map(|m| m.as_str().to_ascii_lowercase()).as_deref() {
            Some("tmdb") => ids.tmdb = ids.tmdb.or(id),
            Some("tvdb") => ids.tvdb = ids.tvdb.or(id),
            _ => {}
        }
    }
    ids
}

/// Names a movie file (or folder) from its stem: `300 (2006) - 1080p` → 300, 2006, "1080p".
pub fn parse_movie(stem: &str) -> MovieName {
    let found = BRACKETED_YEAR.captures_iter(stem).find_map(|c| c.get(1).zip(c.get(0))).or_else(|| {
        // The last bare year that is not the whole title and not the start of a date.
        BARE_YEAR
            .captures_iter(stem)
            .filter_map(|c| c.get(1).zip(c.get(1)))
            .filter(|(y, _)| y.start() > 0 && !DATE_AFTER.is_match(stem.get(y.end()..).unwrap_or("")))
            .last()
    });
    let Some((year, whole)) = found else {
        return MovieName { title: clean_title(stem), year: None, version: None };
    };
    let title = clean_title(stem.get(..whole.start()).unwrap_or(""));
    let rest = stem.get(whole.end()..).unwrap_or("").trim_start_matches([')', ']']).trim();
    let version = if let Some(v) = rest.strip_prefix('-') {
        Some(v.trim().to_string()).filter(|v| !v.is_empty())
    } else if let Some(v) = rest.strip_prefix('[') {
        v.split_once(']').map(|(v, _)| v.trim().to_string()).filter(|v| !v.is_empty())
    } else {
        None
    };
    MovieName { title, year: year.as_str().parse().ok(), version }
}

/// A movie file in its folder: a stem that starts with the folder's name and goes on with
/// ` - label` is a version of the folder's movie (Jellyfin's multi-version rule).
pub fn parse_movie_file(folder: Option<&str>, stem: &str) -> MovieName {
    let mut name = parse_movie(stem);
    if let Some(folder) = folder {
        let folder_name = parse_movie(folder);
        let same_movie = folder_name.title.eq_ignore_ascii_case(&name.title)
            && (name.year.is_none() || folder_name.year.is_none() || name.year == folder_name.year);
        if let Some(label) = stem.strip_prefix(folder).and_then(|r| r.trim_start().strip_prefix('-')) {
            // `Movie (2020) - 1080p` in `Movie (2020)/`.
            return MovieName {
                title: folder_name.title,
                year: folder_name.year,
                version: Some(label.trim().to_string()).filter(|l| !l.is_empty()),
            };
        }
        if same_movie && name.year.is_none() {
            name.year = folder_name.year;
        }
    }
    name
}

fn clean_title(raw: &str) -> String {
    let no_tags = BRACKET_TAG.replace_all(raw, " ");
    let spaced = if no_tags.contains(' ') { no_tags.into_owned() } else { no_tags.replace(['.', '_'], " ") };
    let trimmed = spaced.trim_matches(|c: char| c.is_whitespace() || "-._([".contains(c));
    trimmed.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An episode: season, first and last episode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EpisodeName {
    pub season: Option<u32>,
    pub episode: Option<u32>,
    /// The last episode of a multi-episode file (`S01E01-E03` → 3).
    pub end_episode: Option<u32>,
}

static SXXEYY: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)(?:^|[^a-z0-9])s(\d{1,4})[ ._-]*(?:xe|e|x)[ ._-]*(\d{1,4})(?:[^\d]|$)"));
static NXM: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)(?:^|[^a-z0-9])(\d{1,4})x(\d{1,3})(?:[^\d]|$)"));
static SEASON_EPISODE_WORDS: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)season[ ._-]*(\d{1,4})[ ._-]*episode[ ._-]*(\d{1,4})"));
static EPISODE_WORD: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)(?:^|[^a-z])(?:episode|ep)[ ._-]*(\d{1,4})(?:[^\d]|$)"));
static LEADING_NUMBER: LazyLock<Regex> = LazyLock::new(|| re(r"^(\d{1,3})(?:[^\dxp]|$)"));
static DASH_NUMBER: LazyLock<Regex> = LazyLock::new(|| re(r"\s-\s(\d{1,4})(?:[^\dpi]|$)"));
/// Further episodes after the first: `-E02`, ` - 02x04`, `x04`, `-04`.
static CONTINUATION: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)^(?:[ ._]*-[ ._]*(?:\d{1,4}x|s\d{1,4}e|xe|x|e)|(?:xe|x|e)|-)(\d{1,3})(?:[^\dpi]|$)"));
static SEASON_FOLDER: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)^(?:season|series|saison|staffel|s)[ ._-]*(\d{1,4})$"));

/// The season a folder stands for: `Season 01` → 1, `Season 00`/`Specials` → 0.
pub fn season_folder(name: &str) -> Option<u32> {
    let name = name.trim();
    if name.eq_ignore_ascii_case("specials") || name.eq_ignore_ascii_case("extras specials") {
        return Some(0);
    }
    SEASON_FOLDER.captures(name).and_then(|c| c.get(1)).and_then(|m| m.as_str().parse().ok())
}

/// Names an episode file from its stem; `folder_season` is the season of the folder it is in.
pub fn parse_episode(stem: &str, folder_season: Option<u32>) -> EpisodeName {
    let with_season = [&*SXXEYY, &*NXM].into_iter().find_map(|r| r.captures(stem));
    if let Some(c) = with_season
        && let (Some(s), Some(e)) = (c.get(1), c.get(2))
    {
        let episode = e.as_str().parse().ok();
        let end = continuation(stem.get(e.end()..).unwrap_or(""), episode);
        return EpisodeName { season: s.as_str().parse().ok(), episode, end_episode: end };
    }
    if let Some(c) = SEASON_EPISODE_WORDS.captures(stem)
        && let (Some(s), Some(e)) = (c.get(1), c.get(2))
    {
        return EpisodeName { season: s.as_str().parse().ok(), episode: e.as_str().parse().ok(), end_episode: None };
    }
    let episode = [&*EPISODE_WORD, &*LEADING_NUMBER, &*DASH_NUMBER]
        .into_iter()
        .find_map(|r| r.captures(stem).and_then(|c| c.get(1)).and_then(|m| m.as_str().parse().ok()));
    EpisodeName { season: folder_season, episode, end_episode: None }
}

fn continuation(mut rest: &str, first: Option<u32>) -> Option<u32> {
    let mut last = None;
    while let Some(number) = CONTINUATION.captures(rest).and_then(|c| c.get(1)) {
        let Ok(n) = number.as_str().parse::<u32>() else { break };
        // Episodes only go up: `S01E05 - 03 Title` is not a multi-episode file.
        if first.is_none_or(|f| n <= f) || last.is_some_and(|l| n <= l) {
            break;
        }
        last = Some(n);
        rest = rest.get(number.end()..).unwrap_or("");
    }
    last
}

/// A series folder `Breaking Bad (2008)` → "Breaking Bad", 2008.
pub fn parse_series_folder(name: &str) -> MovieName {
    let mut m = parse_movie(name);
    m.version = None;
    m
}

/// A music track from its stem and folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackName {
    pub artist: Option<String>,
    pub album: Option<String>,
    pub album_year: Option<i32>,
    pub disc: Option<u32>,
    pub track: Option<u32>,
    pub title: String,
}

static DISC_FOLDER: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)^(?:disc|disk|cd)[ ._-]*(\d{1,2})$"));
static DISC_TRACK: LazyLock<Regex> = LazyLock::new(|| re(r"^(\d)-(\d{1,3})[ ._-]+(.+)$"));
static TRACK: LazyLock<Regex> = LazyLock::new(|| re(r"^(\d{1,3})(?:[ ._]*-[ ._]*|[ ._]+)(.+)$"));

/// The disc a folder stands for: `Disc 2`, `CD1`.
pub fn disc_folder(name: &str) -> Option<u32> {
    DISC_FOLDER.captures(name.trim()).and_then(|c| c.get(1)).and_then(|m| m.as_str().parse().ok())
}

/// Names a track: `folders` are the folders between the library root and the file
/// (`["Artist", "Album (2001)", "Disc 1"]`).
pub fn parse_track(folders: &[&str], stem: &str) -> TrackName {
    let mut folders = folders.to_vec();
    let disc_from_folder = folders.last().and_then(|f| disc_folder(f));
    if disc_from_folder.is_some() {
        folders.pop();
    }
    let album_folder = folders.last().copied();
    let artist = if folders.len() >= 2 { folders.get(folders.len() - 2).map(|a| a.trim().to_string()) } else { None };
    let (album, album_year) = match album_folder.map(parse_movie) {
        Some(m) => (Some(m.title), m.year),
        None => (None, None),
    };
    let (disc, track, title) = if let Some(c) = DISC_TRACK.captures(stem) {
        let n = |i| c.get(i).and_then(|m| m.as_str().parse::<u32>().ok());
        (n(1), n(2), c.get(3).map_or(stem, |m| m.as_str()).to_string())
    } else if let Some(c) = TRACK.captures(stem) {
        let n = c.get(1).and_then(|m| m.as_str().parse::<u32>().ok());
        (disc_from_folder, n, c.get(2).map_or(stem, |m| m.as_str()).to_string())
    } else {
        (disc_from_folder, None, stem.to_string())
    };
    let title = title.trim().to_string();
    // `Artist - Title` when the file names its artist (and the folders do not disagree).
    let title = match (&artist, title.split_once(" - ")) {
        (Some(a), Some((prefix, t))) if prefix.eq_ignore_ascii_case(a) => t.trim().to_string(),
        _ => title,
    };
    TrackName { artist, album, album_year, disc: disc.or(disc_from_folder), track, title }
}

#[cfg(test)]
mod tests;
