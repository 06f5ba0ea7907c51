//! The media library service: libraries, scans, item queries, per-user data and the files a
//! stream may serve. Every operation takes the caller and checks `media.read`/`media.write`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use nexus_identity::Principal;
use nexus_kernel::Kernel;
use nexus_kernel::clock::Timestamp;

use crate::MediaError;
use crate::catalog::{Catalog, Item, Library};
use crate::jobs::ScanJobs;
use crate::metrics::MediaMetrics;
use crate::naming::LibraryKind;
use crate::scan::item_id;
use crate::sessions::Sessions;
use crate::store::{FileRow, LibraryRow, MediaStore, UserDataRow};

pub const READ: &str = "media.read";
pub const WRITE: &str = "media.write";

pub use crate::query::ItemQuery;

/// One entry of a result: a library's folder or an item, with the caller's data on it.
#[derive(Debug, Clone)]
pub enum Entry {
    Library(Arc<Library>),
    Item(Arc<Item>),
}

impl Entry {
    pub fn id(&self) -> &str {
        match self {
            Entry::Library(l) => &l.id,
            Entry::Item(i) => i.id(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Found {
    pub entry: Entry,
    pub user_data: UserDataRow,
}

#[derive(Debug)]
pub struct Page {
    pub items: Vec<Found>,
    pub total: usize,
    pub start_index: usize,
}

/// A file a stream may serve, checked to lie inside its library.
#[derive(Debug, Clone)]
pub struct Servable {
    pub path: PathBuf,
    pub container: String,
    pub size: i64,
    pub mtime: i64,
}

pub struct Media {
    pub(crate) kernel: Arc<Kernel>,
    /// Users, tokens and API keys: handed over at start.
    pub(crate) identity: Arc<nexus_identity::Identity>,
    pub(crate) store: Arc<dyn MediaStore>,
    catalog: RwLock<Arc<Catalog>>,
    /// Counts catalog reloads, for those who act on what a scan added (requests completing).
    reloads: tokio::sync::watch::Sender<u64>,
    pub(crate) jobs: ScanJobs,
    pub sessions: Sessions,
    pub(crate) metrics: MediaMetrics,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media").finish_non_exhaustive()
    }
}

fn check(p: &Principal, permission: &str) -> Result<(), MediaError> {
    if p.has(permission) { Ok(()) } else { Err(MediaError::Forbidden(permission.to_string())) }
}

/// The id of the library named `name` (names are unique, case-insensitively).
pub fn library_id(name: &str) -> String {
    item_id(&["library", &name.trim().to_lowercase()])
}

impl Media {
    /// Opens the service: writes the configured libraries, loads the catalog.
    pub async fn open(kernel: Arc<Kernel>, identity: Arc<nexus_identity::Identity>) -> Result<Arc<Self>, MediaError> {
        let store = crate::store::open(&kernel.db);
        let metrics = MediaMetrics::register(&kernel.metrics);
        let configured = kernel.config.media.libraries.clone();
        let existing = store.libraries().await?;
        let now = Timestamp::now().as_micros();
        let mut configured_ids = Vec::new();
        for lib in &configured {
            let Some(kind) = LibraryKind::parse(&lib.kind) else {
                tracing::warn!(library = %lib.name, kind = %lib.kind, "media library type must be movies, tvshows, music or photos; skipped");
                continue;
            };
            let id = library_id(&lib.name);
            let paths = serde_json::to_string(&[lib.path.to_string_lossy()]).unwrap_or_else(|_| String::from("[]"));
            let row = LibraryRow {
                id: id.clone(),
                name: lib.name.trim().to_string(),
                kind: kind.as_str().to_string(),
                paths,
                source: String::from("config"),
                created_at: existing.iter().find(|e| e.id == id).map_or(now, |e| e.created_at),
            };
            store.put_library(&row).await?;
            configured_ids.push(id);
        }
        for old in existing.iter().filter(|e| e.source == "config" && !configured_ids.contains(&e.id)) {
            store.delete_library(&old.id).await?;
        }
        let media = Arc::new(Self {
            kernel,
            identity,
            store,
            catalog: RwLock::new(Arc::new(Catalog::default())),
            reloads: tokio::sync::watch::Sender::new(0),
            jobs: ScanJobs::default(),
            sessions: Sessions::default(),
            metrics,
        });
        media.reload().await?;
        Ok(media)
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        match self.catalog.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads libraries, items and files from the store.
    pub(crate) async fn reload(&self) -> Result<(), MediaError> {
        let libraries = self.store.libraries().await?;
        let items = self.store.items().await?;
        let files = self.store.files().await?;
        let catalog = Arc::new(Catalog::build(&libraries, items, files));
        self.metrics.set_items(&catalog);
        match self.catalog.write() {
            Ok(mut c) => *c = catalog,
            Err(poisoned) => *poisoned.into_inner() = catalog,
        }
        self.reloads.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Changes each time the catalog is reloaded (after a scan that changed something).
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    pub(crate) fn count_streamed(&self, bytes: u64) {
        self.metrics.streamed_bytes.inc_by(bytes);
    }

    pub fn server_id(&self) -> &str {
        &self.kernel.server_id
    }

    pub fn libraries(&self, p: &Principal) -> Result<Vec<Arc<Library>>, MediaError> {
        check(p, READ)?;
        Ok(self.catalog().libraries.clone())
    }

    /// Adds a library (or more folders to one of the same name) and scans it.
    pub async fn add_library(
        self: &Arc<Self>,
        p: &Principal,
        name: &str,
        kind: &str,
        paths: &[String],
    ) -> Result<(), MediaError> {
        check(p, WRITE)?;
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(MediaError::field("name", "A library needs a name of 1 to 200 characters"));
        }
        let Some(kind) = LibraryKind::parse(kind) else {
            return Err(MediaError::field("collectionType", "Must be movies, tvshows, music or photos"));
        };
        let mut folders = Vec::new();
        for path in paths.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let dir = Path::new(path);
            if !dir.is_absolute() || !dir.is_dir() {
                return Err(MediaError::field("paths", format!("`{path}` is not an existing absolute folder")));
            }
            folders.push(path.to_string());
        }
        let id = library_id(name);
        if let Some(existing) = self.catalog().library(&id) {
            for path in &existing.paths {
                let path = path.to_string_lossy().into_owned();
                if !folders.contains(&path) {
                    folders.insert(0, path);
                }
            }
        }
        let row = LibraryRow {
            id,
            name: name.to_string(),
            kind: kind.as_str().to_string(),
            paths: serde_json::to_string(&folders).unwrap_or_else(|_| String::from("[]")),
            source: String::from("api"),
            created_at: Timestamp::now().as_micros(),
        };
        self.store.put_library(&row).await?;
        self.reload().await?;
        self.start_scan();
        Ok(())
    }

    pub async fn remove_library(&self, p: &Principal, name: &str) -> Result<(), MediaError> {
        check(p, WRITE)?;
        if !self.store.delete_library(&library_id(name)).await? {
            return Err(MediaError::NotFound("library"));
        }
        self.reload().await
    }

    /// Starts a scan of every library in the background (`Library/Refresh`).
    pub fn refresh(self: &Arc<Self>, p: &Principal) -> Result<(), MediaError> {
        check(p, WRITE)?;
        self.start_scan();
        Ok(())
    }

    pub(crate) fn start_scan(self: &Arc<Self>) {
        let media = self.clone();
        tokio::spawn(async move { media.scan_all().await });
    }

    /// The caller's data on every item they touched.
    async fn user_data_map(&self, user_id: &str) -> Result<HashMap<String, UserDataRow>, MediaError> {
        Ok(self.store.user_data(user_id).await?.into_iter().map(|d| (d.item_id.clone(), d)).collect())
    }

    /// The caller's data on `items` only (a page), by item id.
    async fn user_data_of<'a>(
        &self,
        user_id: &str,
        items: impl Iterator<Item = &'a str>,
    ) -> Result<HashMap<String, UserDataRow>, MediaError> {
        let ids: Vec<String> = items.map(str::to_string).collect();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(self.store.user_items_data(user_id, &ids).await?.into_iter().map(|d| (d.item_id.clone(), d)).collect())
    }

    fn user_for(p: &Principal, user_id: Option<&str>) -> Result<String, MediaError> {
        match user_id.filter(|u| !u.is_empty()) {
            Some(u) if !u.eq_ignore_ascii_case(&p.user_id) && !p.is_admin() => {
                Err(MediaError::Forbidden(String::from("user.read")))
            }
            Some(u) => Ok(u.to_string()),
            None => Ok(p.user_id.clone()),
        }
    }

    /// `Items`: filters, sorts and pages the catalog for the caller (or `user_id`, for admins).
    pub async fn query(&self, p: &Principal, user_id: Option<&str>, q: &ItemQuery) -> Result<Page, MediaError> {
        check(p, READ)?;
        let user = Self::user_for(p, user_id)?;
        let catalog = self.catalog();
        let limit = q.limit.unwrap_or(usize::MAX);

        // Library folders: the answer to a non-recursive query without a parent (the views).
        if q.parent_id.is_none() && !q.recursive && q.ids.is_empty() {
            let libs: Vec<Arc<Library>> = catalog.libraries.iter().skip(q.start_index).take(limit).cloned().collect();
            let mut data = self.user_data_of(&user, libs.iter().map(|l| l.id.as_str())).await?;
            let items = libs
                .into_iter()
                .map(|l| Found { user_data: data.remove(&l.id).unwrap_or_default(), entry: Entry::Library(l) })
                .collect();
            return Ok(Page { items, total: catalog.libraries.len(), start_index: q.start_index });
        }
        // All of the caller's data when the selection reads it, else only the page's.
        let mut data = if q.reads_user_data() { self.user_data_map(&user).await? } else { HashMap::new() };
        let selection = crate::query::select(&catalog, q, &data);
        if !q.reads_user_data() {
            data = self.user_data_of(&user, selection.items.iter().map(|i| i.id())).await?;
        }
        let items = selection
            .items
            .into_iter()
            .map(|i| Found { user_data: data.remove(i.id()).unwrap_or_default(), entry: Entry::Item(i) })
            .collect();
        Ok(Page { items, total: selection.total, start_index: q.start_index })
    }

    /// One item (or a library's folder) by id, with the caller's data on it.
    pub async fn item(&self, p: &Principal, user_id: Option<&str>, id: &str) -> Result<Found, MediaError> {
        check(p, READ)?;
        let user = Self::user_for(p, user_id)?;
        let id = id.to_ascii_lowercase();
        let catalog = self.catalog();
        let entry = if let Some(item) = catalog.item(&id) {
            Entry::Item(item.clone())
        } else if let Some(lib) = catalog.library(&id) {
            Entry::Library(lib.clone())
        } else {
            return Err(MediaError::NotFound("item"));
        };
        let user_data = self.store.user_item_data(&user, &id).await?.unwrap_or_default();
        Ok(Found { entry, user_data })
    }

    /// Marks an item played or not, or favourite or not, for the caller.
    pub async fn set_user_flag(
        &self,
        p: &Principal,
        user_id: Option<&str>,
        id: &str,
        flag: UserFlag,
    ) -> Result<UserDataRow, MediaError> {
        check(p, READ)?;
        let user = Self::user_for(p, user_id)?;
        let id = id.to_ascii_lowercase();
        if self.catalog().item(&id).is_none() {
            return Err(MediaError::NotFound("item"));
        }
        let mut d = self.store.user_item_data(&user, &id).await?.unwrap_or_else(|| UserDataRow {
            user_id: user.clone(),
            item_id: id.clone(),
            ..Default::default()
        });
        match flag {
            UserFlag::Played(true) => {
                if d.played == 0 {
                    d.play_count += 1;
                }
                d.played = 1;
                d.position_ticks = 0;
                d.last_played_at = Some(Timestamp::now().as_micros());
            }
            UserFlag::Played(false) => {
                d.played = 0;
                d.position_ticks = 0;
            }
            UserFlag::Favorite(f) => d.favorite = i64::from(f),
        }
        self.store.put_user_data(&d).await?;
        Ok(d)
    }

    /// Records a playback position; past 90 % of the runtime the item counts as played.
    pub(crate) async fn record_position(
        &self,
        user: &str,
        id: &str,
        position_ticks: i64,
        finished: bool,
    ) -> Result<(), MediaError> {
        let Some(item) = self.catalog().item(id).cloned() else { return Ok(()) };
        let mut d = self.store.user_item_data(user, id).await?.unwrap_or_else(|| UserDataRow {
            user_id: user.to_string(),
            item_id: id.to_string(),
            ..Default::default()
        });
        let runtime = item.runtime_ticks().unwrap_or(0);
        let done = finished && runtime > 0 && position_ticks >= runtime * 9 / 10;
        d.last_played_at = Some(Timestamp::now().as_micros());
        if done {
            d.played = 1;
            d.play_count += 1;
            d.position_ticks = 0;
        } else {
            d.position_ticks = position_ticks.max(0);
        }
        self.store.put_user_data(&d).await?;
        Ok(())
    }

    /// The file to stream for `id` (its `MediaSourceId` version, or the default one). A path
    /// that is not inside one of its library's folders is never served.
    pub fn servable(&self, p: &Principal, id: &str, source: Option<&str>) -> Result<Servable, MediaError> {
        check(p, READ)?;
        let catalog = self.catalog();
        let item = catalog.item(&id.to_ascii_lowercase()).ok_or(MediaError::NotFound("item"))?;
        let file: &FileRow = match source.filter(|s| !s.is_empty()) {
            Some(s) => {
                item.files.iter().find(|f| f.id.eq_ignore_ascii_case(s)).ok_or(MediaError::NotFound("media source"))?
            }
            None => item.files.first().ok_or(MediaError::NotFound("media file"))?,
        };
        let library = catalog.library(&item.row.library_id).ok_or(MediaError::NotFound("library"))?;
        let path = PathBuf::from(&file.path);
        inside(library, &path)?;
        Ok(Servable { path, container: file.container.clone(), size: file.size, mtime: file.mtime })
    }

    /// The primary image of an item (its own, its parents', or a library's first item's).
    pub fn image(&self, p: &Principal, id: &str) -> Result<PathBuf, MediaError> {
        check(p, READ)?;
        let catalog = self.catalog();
        let id = id.to_ascii_lowercase();
        let item = catalog.item(&id).ok_or(MediaError::NotFound("image"))?;
        let image = item.row.image_path.clone().ok_or(MediaError::NotFound("image"))?;
        let library = catalog.library(&item.row.library_id).ok_or(MediaError::NotFound("library"))?;
        let path = PathBuf::from(image);
        inside(library, &path)?;
        Ok(path)
    }
}

/// Which way a user flag goes.
#[derive(Debug, Clone, Copy)]
pub enum UserFlag {
    Played(bool),
    Favorite(bool),
}

/// `Ok` when `path` resolves to a place inside one of `library`'s folders.
fn inside(library: &Library, path: &Path) -> Result<(), MediaError> {
    let resolved = path.canonicalize().map_err(|_| MediaError::NotFound("media file"))?;
    let ok = library.paths.iter().filter_map(|root| root.canonicalize().ok()).any(|root| resolved.starts_with(root));
    if ok { Ok(()) } else { Err(MediaError::NotFound("media file")) }
}

/// Jellyfin's `MediaType` of an item type.
pub fn media_type(kind: &str) -> Option<&'static str> {
    match kind {
        "Movie" | "Episode" | "Video" => Some("Video"),
        "Audio" => Some("Audio"),
        "Photo" => Some("Photo"),
        _ => None,
    }
}
