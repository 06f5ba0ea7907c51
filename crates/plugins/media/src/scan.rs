//! A library scan: walk the folders, name what is found (`naming`), compare with what is
//! stored, probe only new or changed files, and write the difference. A rescan of an
//! unchanged library stats every file and writes nothing.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::catalog::{Catalog, Library};
use crate::naming::{self, LibraryKind};
use crate::store::{FileRow, ItemRow, ScanChanges};

/// Image files that stand for the folder they are in, best first.
const FOLDER_IMAGES: &[&str] =
    &["poster.jpg", "poster.png", "folder.jpg", "folder.png", "cover.jpg", "cover.png", "default.jpg"];

/// A stable item id (32 hex digits, as Jellyfin's are) from what identifies the item.
pub fn item_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// A media file found on disk.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    /// Folders between the library folder and the file.
    pub folders: Vec<String>,
    pub name: String,
    pub size: i64,
    /// Modification time, in milliseconds.
    pub mtime: i64,
}

#[derive(Debug, Default)]
pub struct Walked {
    pub files: Vec<Found>,
    /// The folder image of each folder that has one.
    pub images: HashMap<PathBuf, PathBuf>,
}

/// Walks the folders of a library (blocking). Hidden entries are skipped, and so is a
/// symbolic link that leads outside the library's folder.
pub fn walk(kind: LibraryKind, roots: &[PathBuf]) -> Walked {
    let mut out = Walked::default();
    for root in roots {
        let Ok(canonical_root) = root.canonicalize() else { continue };
        let mut stack = vec![(root.clone(), Vec::<String>::new())];
        while let Some((dir, folders)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            let mut best_image: Option<(usize, PathBuf)> = None;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let path = entry.path();
                let Ok(file_type) = entry.file_type() else { continue };
                if file_type.is_symlink()
                    && !path.canonicalize().is_ok_and(|target| target.starts_with(&canonical_root))
                {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(&path) else { continue };
                if meta.is_dir() {
                    let mut sub = folders.clone();
                    sub.push(name);
                    stack.push((path, sub));
                    continue;
                }
                let lower = name.to_ascii_lowercase();
                if let Some(rank) = FOLDER_IMAGES.iter().position(|i| *i == lower)
                    && best_image.as_ref().is_none_or(|(r, _)| rank < *r)
                {
                    best_image = Some((rank, path.clone()));
                    if kind != LibraryKind::Photos {
                        continue;
                    }
                }
                let wanted = match kind {
                    LibraryKind::Movies | LibraryKind::TvShows => naming::is_video(&name),
                    LibraryKind::Music => naming::is_audio(&name),
                    LibraryKind::Photos => naming::is_image(&name) || naming::is_video(&name),
                };
                if !wanted {
                    continue;
                }
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                let size = i64::try_from(meta.len()).unwrap_or(i64::MAX);
                out.files.push(Found { path, folders: folders.clone(), name, size, mtime });
            }
            if let Some((_, image)) = best_image {
                out.images.insert(dir, image);
            }
        }
    }
    out
}

/// What a scan wants the library to hold.
#[derive(Debug, Default)]
pub struct Plan {
    pub items: HashMap<String, ItemRow>,
    /// Each file with its item id and version label.
    pub files: Vec<(Found, String, Option<String>)>,
}

fn sort_name(name: &str) -> String {
    let lower = name.to_lowercase();
    for article in ["the ", "a ", "an "] {
        if let Some(rest) = lower.strip_prefix(article) {
            return rest.to_string();
        }
    }
    lower
}

struct NewItem<'a> {
    library: &'a Library,
    now: i64,
}

impl NewItem<'_> {
    fn row(&self, id: String, kind: &str, name: String, parent: Option<String>) -> ItemRow {
        ItemRow {
            id,
            library_id: self.library.id.clone(),
            parent_id: parent.or_else(|| Some(self.library.id.clone())),
            kind: kind.to_string(),
            sort_name: sort_name(&name),
            name,
            created_at: self.now,
            ..ItemRow::default()
        }
    }
}

fn image_of(walked: &Walked, dir: &Path) -> Option<String> {
    walked.images.get(dir).map(|p| p.to_string_lossy().into_owned())
}

/// Names every file found and derives the items (series, seasons, albums, …) above them.
pub fn plan(library: &Library, walked: &Walked, now: i64) -> Plan {
    let mut plan = Plan::default();
    let new = NewItem { library, now };
    let lib = library.id.as_str();
    for found in &walked.files {
        let folders: Vec<&str> = found.folders.iter().map(String::as_str).collect();
        if library.kind != LibraryKind::Photos && naming::is_extra(&folders, &found.name) {
            continue;
        }
        let stem = naming::stem(&found.name);
        let dir = found.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir_key = dir.to_string_lossy().into_owned();
        match library.kind {
            LibraryKind::Movies => {
                let m = naming::parse_movie_file(folders.last().copied(), stem);
                let year = m.year.map(|y| y.to_string()).unwrap_or_default();
                let id = item_id(&[lib, "Movie", &dir_key, &m.title.to_lowercase(), &year]);
                let ids = naming::provider_ids(&[stem, folders.last().copied().unwrap_or_default()]);
                let item = plan.items.entry(id.clone()).or_insert_with(|| {
                    let mut row = new.row(id.clone(), "Movie", m.title.clone(), None);
                    row.year = m.year.map(i64::from);
                    (row.tmdb_id, row.tvdb_id) = (ids.tmdb, ids.tvdb);
                    row.image_path = if folders.is_empty() { None } else { image_of(walked, &dir) };
                    row
                });
                // The default version's path is the movie's.
                if m.version.is_none() || item.path.is_none() {
                    item.path = Some(found.path.to_string_lossy().into_owned());
                }
                plan.files.push((found.clone(), id, m.version));
            }
            LibraryKind::TvShows => {
                let Some(series_folder) = folders.first() else { continue };
                // The first folder under the library's: as many levels up as there are folders.
                let series_dir = found.path.ancestors().nth(folders.len()).map(Path::to_path_buf).unwrap_or_default();
                let series_key = series_dir.to_string_lossy().into_owned();
                let series = naming::parse_series_folder(series_folder);
                let series_id = item_id(&[lib, "Series", &series_key]);
                plan.items.entry(series_id.clone()).or_insert_with(|| {
                    let mut row = new.row(series_id.clone(), "Series", series.title.clone(), None);
                    row.year = series.year.map(i64::from);
                    let ids = naming::provider_ids(&[series_folder]);
                    (row.tmdb_id, row.tvdb_id) = (ids.tmdb, ids.tvdb);
                    row.path = Some(series_key.clone());
                    row.image_path = image_of(walked, &series_dir);
                    row
                });
                let folder_season =
                    if folders.len() >= 2 { folders.last().and_then(|f| naming::season_folder(f)) } else { None };
                let ep = naming::parse_episode(stem, folder_season);
                let season_no = ep.season.or(folder_season).unwrap_or(1);
                let season_id = item_id(&[lib, "Season", &series_key, &season_no.to_string()]);
                plan.items.entry(season_id.clone()).or_insert_with(|| {
                    let name = if season_no == 0 { "Specials".to_string() } else { format!("Season {season_no}") };
                    let mut row = new.row(season_id.clone(), "Season", name, Some(series_id.clone()));
                    row.sort_name = format!("{season_no:04}");
                    row.index_number = Some(i64::from(season_no));
                    row.series_id = Some(series_id.clone());
                    row.series_name = Some(series.title.clone());
                    if folder_season.is_some() {
                        row.path = Some(dir_key.clone());
                        row.image_path = image_of(walked, &dir);
                    }
                    row
                });
                let episode_key = found.path.to_string_lossy().into_owned();
                let id = item_id(&[lib, "Episode", &episode_key]);
                let name = match stem.rsplit_once(" - ") {
                    Some((_, title)) if !title.trim().is_empty() && ep.episode.is_some() => title.trim().to_string(),
                    _ => ep.episode.map_or_else(|| stem.to_string(), |n| format!("Episode {n}")),
                };
                let mut row = new.row(id.clone(), "Episode", name.clone(), Some(season_id.clone()));
                row.sort_name = format!("{season_no:04}-{:04} {}", ep.episode.unwrap_or(0), sort_name(&name));
                row.path = Some(episode_key);
                row.index_number = ep.episode.map(i64::from);
                row.index_number_end = ep.end_episode.map(i64::from);
                row.parent_index_number = Some(i64::from(season_no));
                row.series_id = Some(series_id.clone());
                row.series_name = Some(series.title.clone());
                row.season_id = Some(season_id);
                plan.items.insert(id.clone(), row);
                plan.files.push((found.clone(), id, None));
            }
            LibraryKind::Music => {
                let t = naming::parse_track(&folders, stem);
                let in_disc_folder = folders.last().is_some_and(|f| naming::disc_folder(f).is_some());
                let album_dir = if in_disc_folder {
                    dir.parent().map_or_else(|| dir.clone(), Path::to_path_buf)
                } else {
                    dir.clone()
                };
                let artist_id = t.artist.as_ref().map(|artist| {
                    let id = item_id(&[lib, "MusicArtist", &artist.to_lowercase()]);
                    plan.items.entry(id.clone()).or_insert_with(|| {
                        let mut row = new.row(id.clone(), "MusicArtist", artist.clone(), None);
                        row.image_path = album_dir.parent().and_then(|d| image_of(walked, d));
                        row
                    });
                    id
                });
                let album_id = t.album.as_ref().map(|album| {
                    let key = album_dir.to_string_lossy().into_owned();
                    let id = item_id(&[lib, "MusicAlbum", &key]);
                    plan.items.entry(id.clone()).or_insert_with(|| {
                        let mut row = new.row(id.clone(), "MusicAlbum", album.clone(), artist_id.clone());
                        row.year = t.album_year.map(i64::from);
                        row.path = Some(key.clone());
                        row.album_artist = t.artist.clone();
                        row.image_path = image_of(walked, &album_dir).or_else(|| image_of(walked, &dir));
                        row
                    });
                    id
                });
                let key = found.path.to_string_lossy().into_owned();
                let id = item_id(&[lib, "Audio", &key]);
                let mut row = new.row(id.clone(), "Audio", t.title.clone(), album_id.or(artist_id));
                row.sort_name =
                    format!("{:02}-{:04} {}", t.disc.unwrap_or(1), t.track.unwrap_or(0), sort_name(&t.title));
                row.path = Some(key);
                row.index_number = t.track.map(i64::from);
                row.parent_index_number = t.disc.map(i64::from);
                row.album_artist = t.artist.clone();
                row.image_path =
                    row.parent_id.as_ref().and_then(|p| plan.items.get(p)).and_then(|a| a.image_path.clone());
                plan.items.insert(id.clone(), row);
                plan.files.push((found.clone(), id, None));
            }
            LibraryKind::Photos => {
                let key = found.path.to_string_lossy().into_owned();
                let kind = if naming::is_video(&found.name) { "Video" } else { "Photo" };
                let id = item_id(&[lib, kind, &key]);
                let mut row = new.row(id.clone(), kind, stem.to_string(), None);
                row.path = Some(key.clone());
                if kind == "Photo" {
                    row.image_path = Some(key);
                }
                plan.items.insert(id.clone(), row);
                plan.files.push((found.clone(), id, None));
            }
        }
    }
    plan
}

/// A file that needs probing before it is written.
#[derive(Debug)]
pub struct ToProbe {
    pub row: FileRow,
}

/// The difference between `plan` and what the catalog holds for `library`: items and files to
/// write or delete, and which of the files need probing (new or changed on disk).
pub fn diff(library: &Library, catalog: &Catalog, mut plan: Plan) -> (ScanChanges, Vec<ToProbe>) {
    let mut changes = ScanChanges::default();
    let mut existing_files: HashMap<&str, &FileRow> = HashMap::new();
    let mut existing_items: HashSet<&str> = HashSet::new();
    for item in catalog.sorted.iter().filter(|i| i.row.library_id == library.id) {
        existing_items.insert(item.id());
        for f in &item.files {
            existing_files.insert(f.id.as_str(), f);
        }
        match plan.items.get_mut(item.id()) {
            Some(wanted) => {
                wanted.created_at = item.row.created_at;
                if *wanted != item.row {
                    changes.upsert_items.push(wanted.clone());
                }
            }
            None => changes.delete_items.push(item.row.id.clone()),
        }
    }
    for (id, row) in &plan.items {
        if !existing_items.contains(id.as_str()) {
            changes.upsert_items.push(row.clone());
        }
    }
    let mut to_probe = Vec::new();
    let mut kept: HashSet<String> = HashSet::new();
    for (found, item_id_, version) in plan.files {
        let path = found.path.to_string_lossy().into_owned();
        let id = item_id(&[&library.id, "File", &path]);
        kept.insert(id.clone());
        let container = naming::extension(&found.name).unwrap_or_default();
        let mut row = FileRow {
            id: id.clone(),
            item_id: item_id_,
            library_id: library.id.clone(),
            path,
            size: found.size,
            mtime: found.mtime,
            container,
            version,
            runtime_ticks: None,
            streams: String::from("[]"),
            probed: 0,
        };
        match existing_files.get(id.as_str()) {
            Some(old) if old.size == row.size && old.mtime == row.mtime => {
                row.runtime_ticks = old.runtime_ticks;
                row.streams = old.streams.clone();
                row.probed = old.probed;
                if **old != row {
                    changes.upsert_files.push(row);
                }
            }
            _ => to_probe.push(ToProbe { row }),
        }
    }
    for id in existing_files.keys() {
        if !kept.contains(*id) {
            changes.delete_files.push((*id).to_string());
        }
    }
    (changes, to_probe)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::LibraryRow;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    fn catalog_after(library: &LibraryRow, changes: &ScanChanges, probed: Vec<FileRow>) -> Catalog {
        let mut files = changes.upsert_files.clone();
        files.extend(probed);
        Catalog::build(std::slice::from_ref(library), changes.upsert_items.clone(), files)
    }

    #[test]
    fn a_rescan_of_an_unchanged_library_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        touch(&root.join("Show (2010)/Season 01/Show S01E01.mkv"));
        touch(&root.join("Show (2010)/Season 01/Show S01E02-E03.mkv"));
        touch(&root.join("Show (2010)/Specials/Show S00E01.mkv"));
        touch(&root.join("Show (2010)/folder.jpg"));
        let row = LibraryRow {
            id: String::from("lib"),
            name: String::from("Shows"),
            kind: String::from("tvshows"),
            paths: serde_json::to_string(&[root.to_string_lossy()]).unwrap(),
            source: String::from("config"),
            created_at: 1,
        };
        let library = Library::from_row(&row).unwrap();

        let walked = walk(library.kind, &library.paths);
        let (changes, to_probe) = diff(&library, &Catalog::default(), plan(&library, &walked, 1));
        // A series, two seasons, three episode files.
        assert_eq!(changes.upsert_items.len(), 6);
        assert_eq!(to_probe.len(), 3);
        let series = changes.upsert_items.iter().find(|i| i.kind == "Series").unwrap();
        assert!(series.image_path.as_deref().unwrap().ends_with("folder.jpg"));

        let catalog = catalog_after(&row, &changes, to_probe.into_iter().map(|t| t.row).collect());
        let walked = walk(library.kind, &library.paths);
        let (again, to_probe) = diff(&library, &catalog, plan(&library, &walked, 2));
        assert!(again.is_empty(), "{again:?}");
        assert!(to_probe.is_empty());

        std::fs::remove_file(root.join("Show (2010)/Specials/Show S00E01.mkv")).unwrap();
        let walked = walk(library.kind, &library.paths);
        let (removed, to_probe) = diff(&library, &catalog, plan(&library, &walked, 3));
        assert_eq!((removed.delete_files.len(), removed.delete_items.len(), to_probe.len()), (1, 2, 0));
    }
}
