//! The library as the API reads it: every item of every library in memory, rebuilt from the
//! store after each scan that changed something. Queries (`Items?…`) filter and page this
//! snapshot, so a page of a 20,000-item library costs no SQL.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::naming::LibraryKind;
use crate::store::{FileRow, ItemRow, LibraryRow};

#[derive(Debug, Clone)]
pub struct Library {
    pub id: String,
    pub name: String,
    pub kind: LibraryKind,
    pub paths: Vec<PathBuf>,
    /// `config` or `api`.
    pub source: String,
    pub created_at: i64,
}

impl Library {
    pub fn from_row(row: &LibraryRow) -> Option<Self> {
        let paths: Vec<String> = serde_json::from_str(&row.paths).ok()?;
        Some(Self {
            id: row.id.clone(),
            name: row.name.clone(),
            kind: LibraryKind::parse(&row.kind)?,
            paths: paths.into_iter().map(PathBuf::from).collect(),
            source: row.source.clone(),
            created_at: row.created_at,
        })
    }

    /// Jellyfin's item type of a library's own folder item.
    pub fn collection_type(&self) -> &'static str {
        self.kind.as_str()
    }
}

#[derive(Debug, Clone)]
pub struct Item {
    pub row: ItemRow,
    /// The files of a playable item, the first being the default version.
    pub files: Vec<FileRow>,
    /// The ids above this item, nearest first, ending with its library's.
    pub ancestors: Vec<String>,
    /// `DateCreated` and `PremiereDate` as shown, formatted once per catalog rather than on
    /// every page that shows the item.
    pub date_created: String,
    pub premiere_date: Option<String>,
}

impl Item {
    pub fn id(&self) -> &str {
        &self.row.id
    }

    pub fn kind(&self) -> &str {
        &self.row.kind
    }

    pub fn is_folder(&self) -> bool {
        matches!(self.row.kind.as_str(), "Series" | "Season" | "MusicAlbum" | "MusicArtist")
    }

    pub fn runtime_ticks(&self) -> Option<i64> {
        self.files.first().and_then(|f| f.runtime_ticks)
    }
}

#[derive(Debug, Default)]
pub struct Catalog {
    pub libraries: Vec<Arc<Library>>,
    pub items: HashMap<String, Arc<Item>>,
    /// Every item, by sort name.
    pub sorted: Vec<Arc<Item>>,
    /// Children of each item or library, by sort name.
    pub children: HashMap<String, Vec<Arc<Item>>>,
    /// Everything under each item or library at any depth, by sort name, whole and per item
    /// type: a recursive query (`ParentId=…&Recursive=true&IncludeItemTypes=Movie`) pages a
    /// ready list instead of testing every item of the catalog.
    descendants: HashMap<String, Descendants>,
    /// Every item per item type.
    by_kind: HashMap<String, Vec<Arc<Item>>>,
}

#[derive(Debug, Default)]
struct Descendants {
    all: Vec<Arc<Item>>,
    by_kind: HashMap<String, Vec<Arc<Item>>>,
}

impl Catalog {
    pub fn build(libraries: &[LibraryRow], items: Vec<ItemRow>, files: Vec<FileRow>) -> Self {
        let libraries: Vec<Arc<Library>> = libraries.iter().filter_map(Library::from_row).map(Arc::new).collect();
        let mut files_by_item: HashMap<String, Vec<FileRow>> = HashMap::new();
        for f in files {
            files_by_item.entry(f.item_id.clone()).or_default().push(f);
        }
        for list in files_by_item.values_mut() {
            // The version without a label first, then by label.
            list.sort_by(|a, b| {
                (a.version.is_some(), &a.version, &a.path).cmp(&(b.version.is_some(), &b.version, &b.path))
            });
        }
        let parents: HashMap<String, Option<String>> =
            items.iter().map(|i| (i.id.clone(), i.parent_id.clone())).collect();
        let mut all = Vec::with_capacity(items.len());
        for row in items {
            if !libraries.iter().any(|l| l.id == row.library_id) {
                continue;
            }
            let mut ancestors = Vec::new();
            let mut next = row.parent_id.clone();
            while let Some(p) = next {
                if ancestors.contains(&p) || ancestors.len() > 8 {
                    break;
                }
                next = parents.get(&p).cloned().flatten();
                ancestors.push(p);
            }
            if ancestors.last() != Some(&row.library_id) {
                ancestors.push(row.library_id.clone());
            }
            let files = files_by_item.remove(&row.id).unwrap_or_default();
            let date_created = nexus_kernel::clock::Timestamp::from_micros(row.created_at).to_rfc3339();
            let premiere_date = row.year.map(|y| format!("{y:04}-01-01T00:00:00.0000000Z"));
            all.push(Arc::new(Item { row, files, ancestors, date_created, premiere_date }));
        }
        all.sort_by(|a, b| a.row.sort_name.cmp(&b.row.sort_name).then_with(|| a.row.id.cmp(&b.row.id)));
        let mut children: HashMap<String, Vec<Arc<Item>>> = HashMap::new();
        for item in &all {
            let parent = item.row.parent_id.clone().unwrap_or_else(|| item.row.library_id.clone());
            children.entry(parent).or_default().push(item.clone());
        }
        let mut descendants: HashMap<String, Descendants> = HashMap::new();
        let mut by_kind: HashMap<String, Vec<Arc<Item>>> = HashMap::new();
        for item in &all {
            for ancestor in &item.ancestors {
                let under = descendants.entry(ancestor.clone()).or_default();
                under.all.push(item.clone());
                under.by_kind.entry(item.row.kind.clone()).or_default().push(item.clone());
            }
            by_kind.entry(item.row.kind.clone()).or_default().push(item.clone());
        }
        let items = all.iter().map(|i| (i.row.id.clone(), i.clone())).collect();
        Self { libraries, items, sorted: all, children, descendants, by_kind }
    }

    /// The items under `ancestor` at any depth (every item for `None`), of type `kind` when
    /// given (compared as Jellyfin does, ignoring case), by sort name.
    pub fn descendants(&self, ancestor: Option<&str>, kind: Option<&str>) -> &[Arc<Item>] {
        let (all, by_kind) = match ancestor {
            None => (self.sorted.as_slice(), &self.by_kind),
            Some(id) => match self.descendants.get(id) {
                Some(d) => (d.all.as_slice(), &d.by_kind),
                None => return &[],
            },
        };
        match kind {
            None => all,
            Some(kind) => by_kind
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(kind))
                .map(|(_, list)| list.as_slice())
                .unwrap_or_default(),
        }
    }

    pub fn library(&self, id: &str) -> Option<&Arc<Library>> {
        self.libraries.iter().find(|l| l.id == id)
    }

    pub fn item(&self, id: &str) -> Option<&Arc<Item>> {
        self.items.get(id)
    }

    /// How many items of each library there are (for metrics).
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut out: HashMap<String, usize> = self.libraries.iter().map(|l| (l.name.clone(), 0)).collect();
        for item in &self.sorted {
            if let Some(l) = self.library(&item.row.library_id) {
                *out.entry(l.name.clone()).or_default() += 1;
            }
        }
        out
    }
}
