//! The documents service: every operation takes the caller, checks `documents.read`,
//! `documents.write` or `documents.admin` (or the per-collection form
//! `documents.read:products`), plans what runs in SQL and what in the engine, and publishes
//! `document.*` events from one place ([`Documents::publish`]).

use std::sync::Arc;
use std::time::Instant;

use nexus_identity::Principal;
use nexus_kernel::Kernel;
use nexus_kernel::clock::Timestamp;
use nexus_kernel::db::StorageError;
use nexus_kernel::events::EventBatch;
use serde_json::{Map, Value, json};

use crate::engine::Invalid;
use crate::engine::aggregate::{Acc, Expr, Stage, lookup_join, lookup_keys, run_stage};
use crate::engine::filter::{Cond, Filter};
use crate::engine::path::Path;
use crate::engine::project::Projection;
use crate::engine::sort::Sort;
use crate::engine::update::Update;
use crate::schema;
use crate::sql::{Builder, Dialect, Param};
use crate::store::{DocumentStore, ShapeProbes, Tx, WriteError};

/// Documents one `insert_many` or bulk request may carry.
pub const MAX_BATCH: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum DocError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    NotFound(String),
    #[error("missing permission {0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The vocabulary every surface answers in (HTTP converts it at its edge, RPC sends it).
impl From<DocError> for nexus_kernel::error::Failure {
    fn from(e: DocError) -> Self {
        use nexus_kernel::error::Failure;
        match e {
            DocError::Invalid(i) => Failure::invalid_field(i.place, i.message),
            DocError::NotFound(m) => Failure::not_found(m),
            DocError::Forbidden(p) => Failure::forbidden(&p),
            DocError::Conflict(m) => Failure::conflict(m),
            DocError::Storage(s) => Failure::from(s),
        }
    }
}

impl From<WriteError> for DocError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Duplicate => DocError::Conflict("A document with this key already exists".into()),
            WriteError::Storage(s) => DocError::Storage(s),
        }
    }
}

impl From<sqlx::Error> for DocError {
    fn from(e: sqlx::Error) -> Self {
        DocError::Storage(e.into())
    }
}

/// Collection names: a letter, then letters, digits, `_` or `-`, at most 64.
pub fn valid_collection(name: &str, place: &str) -> Result<(), Invalid> {
    let ok = name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            place,
            "A collection name starts with a letter and has at most 64 letters, digits, `_` or `-`",
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Admin,
}

/// A `find`: filter, sort, paging and projection.
#[derive(Debug, Clone, Default)]
pub struct Find {
    pub filter: Option<Filter>,
    pub sort: Sort,
    pub skip: u64,
    pub limit: Option<u64>,
    pub projection: Option<Projection>,
}

/// A find's documents: the JSON array text that SQL joined the stored documents into, when
/// nothing was left to do on them in Rust (filter, sort, paging and no projection all ran in
/// SQL), so that an answer can carry it as it is; parsed otherwise.
#[derive(Debug)]
pub enum Found {
    Text(Joined),
    Docs(Vec<Value>),
}

impl Found {
    pub fn into_docs(self) -> Vec<Value> {
        match self {
            Found::Text(joined) => joined.docs(),
            Found::Docs(docs) => docs,
        }
    }
}

/// Stored documents that SQL joined into one JSON array text (each a JSON object this plugin
/// wrote), and how many there are ([`crate::sql::json_docs`]).
#[derive(Debug, Default)]
pub struct Joined {
    pub count: usize,
    pub text: String,
}

impl Joined {
    /// From `json_docs`'s `count,[…]`; none when there is no row.
    fn parse(payload: Option<String>) -> Self {
        let Some(mut payload) = payload else { return Self { count: 0, text: String::from("[]") } };
        match payload.split_once(',').and_then(|(n, _)| Some((n.parse().ok()?, n.len() + 1))) {
            Some((count, at)) => {
                payload.drain(..at);
                Self { count, text: payload }
            }
            None => Self { count: 0, text: String::from("[]") },
        }
    }

    pub fn docs(&self) -> Vec<Value> {
        serde_json::from_str(&self.text).unwrap_or_default()
    }
}

/// Where each part of a query ran, for `explain`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Plan {
    pub sql: String,
    /// `true` when the SQL condition selects exactly the matching documents.
    pub filter_exact: bool,
    pub filter: &'static str,
    pub sort: &'static str,
    pub paging: &'static str,
    /// The `ORDER BY` that SQL ran, when it sorted and paged.
    #[serde(skip)]
    pub order: Option<String>,
}

/// Documents per multi-row `INSERT` (4 parameters each with the shared ones: well under
/// SQLite's 32,766).
const ROWS_PER_INSERT: usize = 200;

/// The indexes of a collection with a flag still off (multikey: no array on a key path or a
/// prefix; mixed: no boolean or object on a key path), with their key paths: read once per
/// write, then checked against each document written.
struct IndexShapes(Vec<Shape>);

struct Shape {
    name: String,
    paths: Vec<Vec<String>>,
    multikey: bool,
    mixed: bool,
}

impl IndexShapes {
    async fn read(docs: &Documents, tx: &mut Tx, collection: &str) -> Result<Self, DocError> {
        let mut out = Vec::new();
        for i in docs.store.list_indexes_in(tx, collection).await?.into_iter().filter(|i| !(i.multikey && i.mixed)) {
            let paths = key_paths(&i.keys);
            out.push(Shape { name: i.name, paths, multikey: i.multikey, mixed: i.mixed });
        }
        Ok(Self(out))
    }

    /// Turns an index's flags on for what `doc` holds on its paths.
    async fn note(&mut self, docs: &Documents, tx: &mut Tx, collection: &str, doc: &Value) -> Result<(), DocError> {
        use crate::engine::path::get;
        for shape in &mut self.0 {
            if !shape.multikey
                && shape.paths.iter().any(|segs| {
                    (1..=segs.len()).any(|n| segs.get(..n).and_then(|p| get(doc, p)).is_some_and(Value::is_array))
                })
            {
                docs.store.set_multikey(tx, collection, &shape.name).await?;
                shape.multikey = true;
            }
            if !shape.mixed
                && shape.paths.iter().any(|segs| matches!(get(doc, segs), Some(Value::Bool(_) | Value::Object(_))))
            {
                docs.store.set_mixed(tx, collection, &shape.name).await?;
                shape.mixed = true;
            }
        }
        self.0.retain(|s| !(s.multikey && s.mixed));
        Ok(())
    }
}

/// A collection's JSON Schema, if it has one.
fn schema_in(collection: Option<crate::store::CollectionRow>) -> Option<Value> {
    collection.and_then(|c| c.schema).and_then(|s| serde_json::from_str(&s).ok())
}

/// The key paths of an index's `keys` (`{"a.b": 1, "c": -1}` → `[["a", "b"], ["c"]]`).
fn key_paths(keys: &str) -> Vec<Vec<String>> {
    match serde_json::from_str::<Value>(keys) {
        Ok(Value::Object(keys)) => keys.keys().map(|k| k.split('.').map(str::to_string).collect()).collect(),
        _ => Vec::new(),
    }
}

/// What a collection's indexes say about the values on their key paths, for the compiler.
#[derive(Debug, Default, Clone)]
struct Paths {
    /// No document holds an array on these (see [`Builder::with_flat_paths`]).
    flat: Vec<Vec<String>>,
    /// Nor a boolean or an object (see [`Builder::with_plain_paths`]).
    plain: Vec<Vec<String>>,
}

/// The row on the edge of a keyset page: where the next (or previous) page starts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Edge {
    /// The row's [`Sort::keys_of`] under the page's sort.
    #[serde(with = "edge_keys")]
    pub keys: Vec<Option<Value>>,
    pub id: String,
}

/// Each key as `[value]`, or `[]` for `None`: serde would read a `Some(null)` back as `None`.
mod edge_keys {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(keys: &[Option<Value>], s: S) -> Result<S::Ok, S::Error> {
        let wrapped: Vec<Vec<&Value>> = keys.iter().map(|k| k.iter().collect()).collect();
        wrapped.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Option<Value>>, D::Error> {
        let wrapped: Vec<Vec<Value>> = Vec::deserialize(d)?;
        Ok(wrapped.into_iter().map(|k| k.into_iter().next()).collect())
    }
}

/// One keyset page: its rows in order and whether more lie beyond them in the direction read.
#[derive(Debug, Clone, Default)]
pub struct KeysetPage {
    pub docs: Vec<Value>,
    pub more: bool,
    /// The first and last rows' edges (before projection), for the cursors either side.
    pub first: Option<Edge>,
    pub last: Option<Edge>,
}

#[derive(Debug, Clone, Default)]
pub struct UpdateResult {
    pub matched: u64,
    pub modified: u64,
    pub upserted_id: Option<String>,
}

/// One operation of a bulk request.
#[derive(Debug, Clone)]
pub enum BulkOp {
    Insert(Value),
    Update { filter: Filter, update: Update, many: bool, upsert: bool },
    Replace { filter: Filter, document: Value, upsert: bool },
    Delete { filter: Filter, many: bool },
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BulkCounts {
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
}

/// A change, published after its transaction commits.
#[derive(Debug, Clone)]
/// A document checked for storage: its `_id`, value, stored JSON text and place in the
/// request.
struct Prepared {
    id: String,
    doc: Value,
    text: String,
    at: String,
}

struct Change {
    kind: &'static str,
    collection: String,
    id: String,
    data: Value,
}

#[derive(Debug)]
pub struct Documents {
    kernel: Arc<Kernel>,
    store: Arc<dyn DocumentStore>,
    config: crate::DocumentsConfig,
    /// Each collection's index shapes as last read: reads compile against them without a
    /// query, and check in their own statement that they still hold ([`Documents::shapes`]).
    shapes: std::sync::RwLock<std::collections::HashMap<String, Arc<Shapes>>>,
}

/// A collection's flat and plain paths and the index fingerprint they were read under.
#[derive(Debug)]
struct Shapes {
    fingerprint: String,
    paths: Paths,
}

/// How often a read recompiles after finding the index flags changed under it (each change
/// turns a flag on for good, so a few suffice).
const SHAPE_ATTEMPTS: usize = 5;

fn now_micros() -> i64 {
    Timestamp::now().as_micros()
}

fn id_of(doc: &Value) -> String {
    match doc.get("_id") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// A 24-hex id laid out as MongoDB's ObjectId: seconds since the epoch, 5 bytes drawn once per
/// process, and a 3-byte counter that starts at a random value. Unique across instances
/// without a system call per id (8 fresh random bytes each were 3% of a bulk insert), and
/// increasing within a second, so that new ids go to the end of the primary key's B-tree.
pub fn new_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static PROCESS: std::sync::OnceLock<(String, AtomicU32)> = std::sync::OnceLock::new();
    let (process, counter) = PROCESS.get_or_init(|| {
        let r = nexus_kernel::id::random_bytes::<8>();
        let [a, b, c, d, e, f, g, h] = r;
        (nexus_kernel::id::hex(&[a, b, c, d, e]), AtomicU32::new(u32::from_le_bytes([f, g, h, 0])))
    });
    let secs = u32::try_from(Timestamp::now().as_unix_seconds()).unwrap_or(0);
    let n = counter.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
    format!("{secs:08x}{process}{n:06x}")
}

impl Documents {
    pub fn new(kernel: Arc<Kernel>, config: crate::DocumentsConfig) -> Self {
        let store = crate::store::open(&kernel.db);
        Self { kernel, store, config, shapes: std::sync::RwLock::default() }
    }

    pub fn kernel(&self) -> &Arc<Kernel> {
        &self.kernel
    }

    pub fn store(&self) -> &dyn DocumentStore {
        self.store.as_ref()
    }

    /// `documents.<access>` or `documents.<access>:<collection>`; `documents.admin` holds all.
    pub fn require(&self, p: &Principal, access: Access, collection: Option<&str>) -> Result<(), DocError> {
        let name = match access {
            Access::Read => "documents.read",
            Access::Write => "documents.write",
            Access::Admin => "documents.admin",
        };
        let mut ok = p.has(name) || p.has("documents.admin");
        if let Some(c) = collection {
            ok = ok || p.has(&format!("{name}:{c}")) || p.has(&format!("documents.admin:{c}"));
        }
        if ok { Ok(()) } else { Err(DocError::Forbidden(name.to_string())) }
    }

    fn exists_filter(collection: &str) -> String {
        Builder::collection(collection)
    }

    /// Commits `tx` with the events of `changes` in it: the outbox delivers them (bus, other
    /// instances, WebSocket, webhooks) once committed, also after a crash.
    async fn commit(&self, tx: Tx, changes: Vec<Change>) -> Result<(), DocError> {
        let mut events = self.kernel.events.batch("documents");
        for c in changes {
            let mut data = Map::new();
            data.insert("collection".into(), Value::String(c.collection));
            data.insert("id".into(), Value::String(c.id));
            if let Value::Object(extra) = c.data {
                data.extend(extra);
            }
            events.push(c.kind, &Value::Object(data));
        }
        self.commit_events(tx, events).await
    }

    /// Commits `tx` with `events` in it (see [`Self::commit`]).
    async fn commit_events(&self, mut tx: Tx, events: EventBatch) -> Result<(), DocError> {
        self.store.write_events(&mut tx, &events).await?;
        tx.commit().await?;
        if !events.is_empty() {
            self.kernel.outbox.committed();
        }
        Ok(())
    }

    /// The `document.inserted` events of `docs`, built from their stored text (before the
    /// transaction: see [`EventBatch`]).
    fn inserted_events(&self, collection: &str, docs: &[Prepared]) -> EventBatch {
        let mut events = self.kernel.events.batch("documents");
        let collection = Value::from(collection).to_string();
        let mut data = String::new();
        for d in docs {
            data.clear();
            data.push_str("{\"collection\":");
            data.push_str(&collection);
            data.push_str(",\"id\":");
            data.push_str(&Value::from(d.id.as_str()).to_string());
            data.push_str(",\"document\":");
            data.push_str(&d.text);
            data.push('}');
            events.push_raw("document.inserted", &data);
        }
        events
    }

    /// The flat and plain key paths of `collection`'s indexes, read inside `tx` when given.
    async fn flat_paths(&self, collection: &str, tx: Option<&mut Tx>) -> Result<Paths, DocError> {
        let indexes = match tx {
            Some(tx) => self.store.list_indexes_in(tx, collection).await?,
            None => self.store.list_indexes(collection).await?,
        };
        let mut out = Paths::default();
        for i in indexes.into_iter().filter(|i| !i.multikey) {
            let paths = key_paths(&i.keys);
            if !i.mixed {
                out.plain.extend(paths.iter().cloned());
            }
            out.flat.extend(paths);
        }
        Ok(out)
    }

    /// `collection`'s index shapes, from the cache or read afresh.
    async fn shapes(&self, collection: &str) -> Result<Arc<Shapes>, DocError> {
        let cached = self.shapes.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(collection).cloned();
        if let Some(s) = cached {
            return Ok(s);
        }
        // The fingerprint first: flags that change between the two reads leave paths newer
        // than their fingerprint, which the next checked read notices (the reverse would go
        // unnoticed).
        let (fingerprint, _) = self.store.read_checked(collection, "SELECT NULL", &[]).await?;
        let paths = self.flat_paths(collection, None).await?;
        let shapes = Arc::new(Shapes { fingerprint, paths });
        self.shapes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(collection.to_string(), shapes.clone());
        Ok(shapes)
    }

    /// Runs `payload` (one text column) with the check that `shapes` still hold; `None` when
    /// they do not (the cache entry is gone: compile again).
    async fn read_checked(
        &self,
        collection: &str,
        shapes: &Shapes,
        payload: &str,
        params: &[Param],
    ) -> Result<Option<Option<String>>, DocError> {
        let (fingerprint, out) = self.store.read_checked(collection, payload, params).await?;
        if fingerprint == shapes.fingerprint {
            return Ok(Some(out));
        }
        self.shapes.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(collection);
        Ok(None)
    }

    /// The documents `SELECT … WHERE {where_sql} ORDER BY {order}` pages to, as the one JSON
    /// array text SQL joins them into, in one checked read (see [`Documents::read_checked`]).
    #[allow(clippy::too_many_arguments)]
    async fn select_checked(
        &self,
        collection: &str,
        shapes: &Shapes,
        where_sql: &str,
        params: &[Param],
        order: &str,
        limit: Option<u64>,
        offset: u64,
    ) -> Result<Option<Joined>, DocError> {
        let payload = crate::sql::json_docs(self.store.dialect(), where_sql, order, limit, offset);
        Ok(self.read_checked(collection, shapes, &payload, params).await?.map(Joined::parse))
    }

    /// Runs `read` against `collection`'s index shapes, again with fresh ones while it answers
    /// `None` (they changed under it).
    async fn with_shapes<T, Fut>(&self, collection: &str, read: impl Fn(Arc<Shapes>) -> Fut) -> Result<T, DocError>
    where
        Fut: Future<Output = Result<Option<T>, DocError>>,
    {
        for _ in 0..SHAPE_ATTEMPTS {
            if let Some(out) = read(self.shapes(collection).await?).await? {
                return Ok(out);
            }
        }
        Err(DocError::Storage(StorageError::Unavailable(
            "The collection's indexes kept changing during the query; try again".into(),
        )))
    }

    /// SQL for `filter` in `collection`: (WHERE text, parameters, exact).
    async fn compile(&self, collection: &str, filter: &Filter) -> Result<(String, Vec<Param>, bool), DocError> {
        let flat = self.flat_paths(collection, None).await?;
        Ok(self.compile_with(flat, collection, filter))
    }

    /// [`Self::compile`] inside `tx`.
    async fn compile_in(
        &self,
        tx: &mut Tx,
        collection: &str,
        filter: &Filter,
    ) -> Result<(String, Vec<Param>, bool), DocError> {
        let flat = self.flat_paths(collection, Some(tx)).await?;
        Ok(self.compile_with(flat, collection, filter))
    }

    fn compile_with(&self, paths: Paths, collection: &str, filter: &Filter) -> (String, Vec<Param>, bool) {
        let mut b = Builder::new(self.store.dialect()).with_flat_paths(paths.flat).with_plain_paths(paths.plain);
        let c = b.filter(filter);
        let base = Self::exists_filter(collection);
        let sql = match c.sql {
            Some(cond) => format!("{base} AND {cond}"),
            None => base,
        };
        (sql, b.params, c.exact)
    }

    pub async fn find(&self, p: &Principal, collection: &str, q: &Find) -> Result<(Vec<Value>, Plan), DocError> {
        let (found, plan) = self.find_found(p, collection, q).await?;
        Ok((found.into_docs(), plan))
    }

    /// [`Documents::find`], with the documents left as SQL joined them where nothing else was
    /// to be done on them.
    pub async fn find_found(&self, p: &Principal, collection: &str, q: &Find) -> Result<(Found, Plan), DocError> {
        self.require(p, Access::Read, Some(collection))?;
        valid_collection(collection, "collection")?;
        self.with_shapes(collection, |shapes| async move { self.find_with(collection, q, &shapes).await }).await
    }

    /// [`Documents::find`] compiled against `shapes`; `None` when they no longer hold.
    async fn find_with(&self, collection: &str, q: &Find, shapes: &Shapes) -> Result<Option<(Found, Plan)>, DocError> {
        let all = Filter::all();
        let filter = q.filter.as_ref().unwrap_or(&all);
        let flat = &shapes.paths;
        // Sort paths the filter pins to one type bracket, on paths that hold no arrays.
        let pinned: Vec<_> = q
            .sort
            .0
            .iter()
            .map_while(|k| flat.flat.contains(&k.path.segments).then(|| filter.pinned_bracket(&k.path)).flatten())
            .collect();
        let (where_sql, params, exact) = self.compile_with(flat.clone(), collection, filter);
        let mut plan = Plan { sql: where_sql.clone(), filter_exact: exact, ..Plan::default() };
        plan.filter = if exact { "sql" } else { "sql (superset) + engine" };
        let b = Builder::new(self.store.dialect());
        let sql_order = if q.sort.is_empty() {
            Some("id ASC".to_string())
        } else if exact && pinned.len() == q.sort.0.len() {
            // No array or object can be at a pinned path: no guard to probe.
            b.order_by_pinned(&q.sort, &pinned)
        } else if exact {
            match (b.order_by(&q.sort), b.sort_guard(&q.sort)) {
                (Some(order), Some(guard)) => {
                    let probe = format!(
                        "SELECT count(*) FROM (SELECT 1 FROM documents WHERE {where_sql} AND {guard} LIMIT 1) t"
                    );
                    (self.store.scalar(probe, &params).await? == 0).then_some(order)
                }
                _ => None,
            }
        } else {
            None
        };
        let docs = match (exact, sql_order) {
            (true, Some(order)) => {
                plan.sort = if q.sort.is_empty() { "none" } else { "sql" };
                plan.paging = "sql";
                plan.order = Some(order.clone());
                let Some(joined) =
                    self.select_checked(collection, shapes, &where_sql, &params, &order, q.limit, q.skip).await?
                else {
                    return Ok(None);
                };
                match &q.projection {
                    None => return Ok(Some((Found::Text(joined), plan))),
                    Some(_) => joined.docs(),
                }
            }
            (exact, _) => {
                plan.sort = if q.sort.is_empty() { "none" } else { "engine" };
                plan.paging = "engine";
                let Some(joined) =
                    self.select_checked(collection, shapes, &where_sql, &params, "id ASC", None, 0).await?
                else {
                    return Ok(None);
                };
                let mut rows = joined.docs();
                if !exact {
                    rows.retain(|d| filter.matches(d));
                }
                // Rows come in `_id` order and the sort is stable: equal keys end up in the
                // order SQL gives them (`Builder::tie_break`).
                if Builder::ties_descending(&q.sort) {
                    rows.reverse();
                }
                q.sort.apply(&mut rows);
                let skip = usize::try_from(q.skip).unwrap_or(usize::MAX);
                let take = q.limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
                rows.into_iter().skip(skip).take(take).collect()
            }
        };
        let docs = match &q.projection {
            Some(proj) => docs.into_iter().map(|d| proj.apply(d)).collect(),
            None => docs,
        };
        Ok(Some((Found::Docs(docs), plan)))
    }

    /// A keyset page of `q` (its `skip` is ignored): the `q.limit` rows after `from`, or
    /// before it when `backward`, or the first ones without `from`. The order is `q.sort`
    /// then `_id`, so that a row inserted or deleted elsewhere neither repeats nor skips one.
    /// Unsorted pages run in SQL on the primary key; sorted ones sort in the engine, because
    /// MongoDB's order over mixed types has no SQL row comparison.
    pub async fn find_keyset(
        &self,
        p: &Principal,
        collection: &str,
        q: &Find,
        from: Option<&Edge>,
        backward: bool,
    ) -> Result<KeysetPage, DocError> {
        self.require(p, Access::Read, Some(collection))?;
        valid_collection(collection, "collection")?;
        let all = Filter::all();
        let filter = q.filter.as_ref().unwrap_or(&all);
        let limit = usize::try_from(q.limit.unwrap_or(u64::MAX)).unwrap_or(usize::MAX).max(1);
        let (mut where_sql, params, exact) = self.compile(collection, filter).await?;
        let mut rows = if q.sort.is_empty() && exact {
            let mut b = Builder::new(self.store.dialect());
            b.params = params;
            if let Some(edge) = from {
                let at = b.bind(Param::Text(edge.id.clone()));
                where_sql = format!("{where_sql} AND id {} {at}", if backward { "<" } else { ">" });
            }
            let order = if backward { "id DESC" } else { "id ASC" };
            let take = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
            let mut rows = self.store.select(&where_sql, &b.params, order, Some(take), 0).await?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            if backward {
                rows.reverse();
            }
            (rows, more)
        } else {
            let mut rows = self.store.select(&where_sql, &params, "id ASC", None, 0).await?;
            if !exact {
                rows.retain(|d| filter.matches(d));
            }
            let mut keyed: Vec<(Edge, Value)> =
                rows.into_iter().map(|d| (Edge { keys: q.sort.keys_of(&d), id: id_of(&d) }, d)).collect();
            // Equal keys in `_id` order as `find` gives them (`Builder::tie_break`).
            let ties_descending = Builder::ties_descending(&q.sort);
            let order = |a: &Edge, b: &Edge| {
                q.sort
                    .compare_keys(&a.keys, &b.keys)
                    .then_with(|| if ties_descending { b.id.cmp(&a.id) } else { a.id.cmp(&b.id) })
            };
            keyed.sort_by(|a, b| order(&a.0, &b.0));
            if let Some(edge) = from {
                let wanted = if backward { std::cmp::Ordering::Less } else { std::cmp::Ordering::Greater };
                keyed.retain(|(e, _)| order(e, edge) == wanted);
            }
            let mut rows: Vec<Value> = keyed.into_iter().map(|(_, d)| d).collect();
            let more = rows.len() > limit;
            if backward {
                let cut = rows.len().saturating_sub(limit);
                rows.drain(..cut);
            } else {
                rows.truncate(limit);
            }
            (rows, more)
        };
        let edge = |d: &Value| Edge { keys: q.sort.keys_of(d), id: id_of(d) };
        let mut page = KeysetPage {
            first: rows.0.first().map(edge),
            last: rows.0.last().map(edge),
            more: rows.1,
            docs: Vec::new(),
        };
        if let Some(proj) = &q.projection {
            rows.0 = rows.0.into_iter().map(|d| proj.apply(d)).collect();
        }
        page.docs = rows.0;
        Ok(page)
    }

    pub async fn count(&self, p: &Principal, collection: &str, filter: &Filter) -> Result<u64, DocError> {
        self.require(p, Access::Read, Some(collection))?;
        valid_collection(collection, "collection")?;
        self.with_shapes(collection, |shapes| async move {
            let (where_sql, params, exact) = self.compile_with(shapes.paths.clone(), collection, filter);
            if exact {
                let payload = format!("SELECT CAST(count(*) AS TEXT) FROM documents WHERE {where_sql}");
                let n = self.read_checked(collection, &shapes, &payload, &params).await?;
                return Ok(n.map(|n| n.and_then(|n| n.parse().ok()).unwrap_or(0)));
            }
            let joined = self.select_checked(collection, &shapes, &where_sql, &params, "id ASC", None, 0).await?;
            Ok(joined.map(|j| j.docs().iter().filter(|d| filter.matches(d)).count() as u64))
        })
        .await
    }

    pub async fn distinct(
        &self,
        p: &Principal,
        collection: &str,
        field: &Path,
        filter: &Filter,
    ) -> Result<Vec<Value>, DocError> {
        let (docs, _) = self.find(p, collection, &Find { filter: Some(filter.clone()), ..Find::default() }).await?;
        let mut out: Vec<Value> = Vec::new();
        for d in &docs {
            let mut found = Vec::new();
            crate::engine::path::reach(d, &field.segments, &mut found);
            for v in found.into_iter().flatten() {
                let items: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    x => vec![x],
                };
                for x in items {
                    if !out.iter().any(|o| crate::engine::value::equal(o, x)) {
                        out.push(x.clone());
                    }
                }
            }
        }
        out.sort_by(crate::engine::value::compare);
        Ok(out)
    }

    /// Runs a pipeline: a leading `$match` (and `$sort`/`$skip`/`$limit`, or a simple
    /// `$group`/`$count`) in SQL when exact, the rest in the engine.
    pub async fn aggregate(
        &self,
        p: &Principal,
        collection: &str,
        stages: &[Stage],
    ) -> Result<(Vec<Value>, Vec<&'static str>), DocError> {
        self.require(p, Access::Read, Some(collection))?;
        valid_collection(collection, "collection")?;
        let mut rest = stages;
        let mut filter = Filter::all();
        if let Some((Stage::Match(f), tail)) = rest.split_first() {
            filter = f.clone();
            rest = tail;
        }
        let mut ran = Vec::new();
        // `$group` (and `$count`) directly after the match, in SQL when it can be.
        if let Some((first, tail)) = rest.split_first()
            && let Some(rows) = self.group_in_sql(collection, &filter, first).await?
        {
            ran.push("sql: $match + $group");
            let mut docs = rows;
            for s in tail {
                docs = self.stage(p, s, docs).await?;
            }
            ran.push("engine: remaining stages");
            return Ok((docs, ran));
        }
        let mut find = Find { filter: Some(filter), ..Find::default() };
        while let Some((s, tail)) = rest.split_first() {
            match s {
                Stage::Sort(sort) if find.sort.is_empty() && find.limit.is_none() && find.skip == 0 => {
                    find.sort = sort.clone()
                }
                Stage::Skip(n) if find.limit.is_none() => find.skip = find.skip.saturating_add(*n),
                Stage::Limit(n) => find.limit = Some(find.limit.map_or(*n, |l| l.min(*n))),
                _ => break,
            }
            rest = tail;
        }
        let (mut docs, plan) = self.find(p, collection, &find).await?;
        ran.push(if plan.filter_exact { "sql: $match" } else { "sql (superset) + engine: $match" });
        for s in rest {
            docs = self.stage(p, s, docs).await?;
        }
        if !rest.is_empty() {
            ran.push("engine: remaining stages");
        }
        Ok((docs, ran))
    }

    async fn stage(&self, p: &Principal, s: &Stage, docs: Vec<Value>) -> Result<Vec<Value>, DocError> {
        match s {
            Stage::Lookup(l) => {
                valid_collection(&l.from, "pipeline.$lookup.from")?;
                let mut keys: Vec<Value> = Vec::new();
                for d in &docs {
                    keys.extend(lookup_keys(d, &l.local));
                }
                let filter = Filter::Field(l.foreign.clone(), vec![Cond::In(keys, Vec::new())]);
                let (foreign, _) = self.find(p, &l.from, &Find { filter: Some(filter), ..Find::default() }).await?;
                Ok(lookup_join(l, docs, &foreign))
            }
            other => Ok(run_stage(other, docs)),
        }
    }

    /// `$group` by a field (or null) with `$sum`/`$avg`/`$count`, or `$count`, in SQL.
    async fn group_in_sql(
        &self,
        collection: &str,
        filter: &Filter,
        stage: &Stage,
    ) -> Result<Option<Vec<Value>>, DocError> {
        self.with_shapes(collection, |shapes| async move { self.group_with(collection, filter, stage, &shapes).await })
            .await
    }

    /// [`Documents::group_in_sql`] compiled against `shapes`: `None` when they no longer
    /// hold, `Some(None)` when the stage cannot run in SQL.
    async fn group_with(
        &self,
        collection: &str,
        filter: &Filter,
        stage: &Stage,
        shapes: &Shapes,
    ) -> Result<Option<Option<Vec<Value>>>, DocError> {
        let dialect = self.store.dialect();
        let b = Builder::new(dialect).with_plain_paths(shapes.paths.plain.clone());
        let (where_sql, params, exact) = self.compile_with(shapes.paths.clone(), collection, filter);
        if !exact {
            return Ok(Some(None));
        }
        match stage {
            Stage::Count(name) => {
                let payload = format!("SELECT CAST(count(*) AS TEXT) FROM documents WHERE {where_sql}");
                let Some(n) = self.read_checked(collection, shapes, &payload, &params).await? else {
                    return Ok(None);
                };
                let n: i64 = n.and_then(|n| n.parse().ok()).unwrap_or(0);
                Ok(Some(Some(if n == 0 { Vec::new() } else { vec![json!({ name.clone(): n })] })))
            }
            Stage::Group(g) => {
                let (group_by, key_json) = match &g.key {
                    Expr::Literal(Value::Null) => (None, "'null'".to_string()),
                    Expr::Field(segs) => {
                        let path = Path { text: segs.join("."), segments: segs.clone() };
                        match b.group_key(&path) {
                            Some((g, k)) => (Some(g), k),
                            None => return Ok(Some(None)),
                        }
                    }
                    _ => return Ok(Some(None)),
                };
                let mut cols = vec![key_json];
                for (_, acc, e) in &g.fields {
                    let col = match (acc, e) {
                        (Acc::Count, _) | (Acc::Sum, Expr::Literal(Value::Number(_))) if !matches!(e, Expr::Literal(Value::Number(n)) if n.as_i64() != Some(1)) => {
                            "CAST(count(*) AS TEXT)".to_string()
                        }
                        (Acc::Sum | Acc::Avg, Expr::Field(segs)) => {
                            let path = Path { text: segs.join("."), segments: segs.clone() };
                            let Some(num) = b.numeric(&path) else { return Ok(Some(None)) };
                            if *acc == Acc::Sum {
                                format!("CAST(COALESCE(SUM({num}), 0) AS TEXT)")
                            } else {
                                format!("CAST(AVG({num}) AS TEXT)")
                            }
                        }
                        _ => return Ok(Some(None)),
                    };
                    cols.push(col);
                }
                // Without a group key, an empty match yields no group at all: the last column
                // counts the match.
                if group_by.is_none() {
                    cols.push("CAST(count(*) AS TEXT)".into());
                }
                let aliased: Vec<String> = cols.iter().enumerate().map(|(i, c)| format!("{c} AS c{i}")).collect();
                let mut inner = format!("SELECT {} FROM documents WHERE {where_sql}", aliased.join(", "));
                if let Some(g) = &group_by {
                    inner.push_str(&format!(" GROUP BY {g}"));
                }
                let payload = crate::sql::json_rows(dialect, &inner, cols.len());
                let Some(text) = self.read_checked(collection, shapes, &payload, &params).await? else {
                    return Ok(None);
                };
                let rows: Vec<Vec<Option<String>>> =
                    text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
                let mut out = Vec::new();
                for r in rows {
                    if group_by.is_none() && r.last().cloned().flatten().as_deref() == Some("0") {
                        continue;
                    }
                    let mut m = Map::new();
                    let key =
                        r.first().cloned().flatten().and_then(|k| serde_json::from_str(&k).ok()).unwrap_or(Value::Null);
                    m.insert("_id".into(), key);
                    for ((name, acc, _), v) in g.fields.iter().zip(r.iter().skip(1)) {
                        let v = v.as_deref().and_then(parse_number).unwrap_or(Value::Null);
                        let v = if *acc == Acc::Avg { v.as_f64().map_or(Value::Null, Value::from) } else { v };
                        m.insert(name.clone(), v);
                    }
                    out.push(Value::Object(m));
                }
                Ok(Some(Some(out)))
            }
            _ => Ok(Some(None)),
        }
    }

    pub async fn explain(&self, p: &Principal, collection: &str, q: &Find) -> Result<Value, DocError> {
        self.require(p, Access::Read, Some(collection))?;
        let started = Instant::now();
        let (docs, plan) = self.find(p, collection, q).await?;
        let (where_sql, params, _) = self.compile(collection, q.filter.as_ref().unwrap_or(&Filter::all())).await?;
        // The plan of the query as it ran: with its order and page when SQL sorted.
        let tail = match &plan.order {
            Some(order) => format!(" ORDER BY {order}{}", crate::sql::paging(self.store.dialect(), q.limit, q.skip)),
            None => String::new(),
        };
        let query_plan = self.query_plan(&format!("SELECT id FROM documents WHERE {where_sql}{tail}"), &params).await?;
        Ok(json!({
            "collection": collection,
            "filter": plan.filter,
            "filter_exact": plan.filter_exact,
            "sort": plan.sort,
            "paging": plan.paging,
            "projection": if q.projection.is_some() { "engine" } else { "none" },
            "sql": plan.sql,
            "query_plan": query_plan,
            "returned": docs.len(),
            "execution_time_ms": started.elapsed().as_secs_f64() * 1000.0,
        }))
    }

    /// The database's own plan for `sql` (SQLite `EXPLAIN QUERY PLAN`, PostgreSQL `EXPLAIN`).
    pub async fn query_plan(&self, sql: &str, params: &[Param]) -> Result<Vec<String>, DocError> {
        let (text, col) = match self.store.dialect() {
            Dialect::Sqlite => (format!("EXPLAIN QUERY PLAN {sql}"), 3),
            Dialect::Postgres => (format!("EXPLAIN {sql}"), 0),
        };
        let rows = self.store.text_rows(text, params, col + 1).await?;
        Ok(rows.into_iter().filter_map(|r| r.get(col).cloned().flatten()).collect())
    }

    /// Checks and completes a document for storage: an object, `_id` a string (generated when
    /// absent), no `$`-prefixed or dotted field names, within the size limit, valid against
    /// the collection's schema.
    fn prepare(&self, doc: Value, place: &str, schema: Option<&Value>) -> Result<(String, Value), DocError> {
        let (id, doc, _) = self.prepare_text(doc, place, schema)?;
        Ok((id, doc))
    }

    /// [`Documents::prepare`], with the document's JSON text as it is stored.
    fn prepare_text(
        &self,
        doc: Value,
        place: &str,
        schema: Option<&Value>,
    ) -> Result<(String, Value, String), DocError> {
        let Value::Object(mut m) = doc else {
            return Err(Invalid::new(place, "A document must be a JSON object").into());
        };
        let id = match m.get("_id") {
            None | Some(Value::Null) => new_id(),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 && !s.contains('\0') => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(Invalid::new(format!("{place}._id"), "`_id` must be a non-empty string").into()),
        };
        m.insert("_id".into(), Value::String(id.clone()));
        let doc = Value::Object(m);
        check_names(&doc, place, 0)?;
        let text = doc.to_string();
        let (size, max) = (text.len(), self.config.max_document_bytes);
        if size > max {
            return Err(Invalid::new(place, format!("The document is {size} bytes; at most {max} are allowed")).into());
        }
        if let Some(s) = schema {
            schema::validate(s, &doc, place)?;
        }
        Ok((id, doc, text))
    }

    async fn schema_of(&self, tx: &mut Tx, collection: &str) -> Result<Option<Value>, DocError> {
        Ok(schema_in(self.store.get_collection_in(tx, collection).await?))
    }

    /// Checks and completes `docs` (see [`Documents::prepare`]) against `schema`.
    fn prepare_all(&self, docs: Vec<Value>, place: &str, schema: Option<&Value>) -> Result<Vec<Prepared>, DocError> {
        let mut out = Vec::with_capacity(docs.len());
        for (i, d) in docs.into_iter().enumerate() {
            let at =
                if place.ends_with(']') || place == "document" { place.to_string() } else { format!("{place}[{i}]") };
            let (id, doc, text) = self.prepare_text(d, &at, schema)?;
            out.push(Prepared { id, doc, text, at });
        }
        Ok(out)
    }

    async fn insert_in(
        &self,
        tx: &mut Tx,
        collection: &str,
        docs: Vec<Value>,
        place: &str,
        changes: &mut Vec<Change>,
    ) -> Result<Vec<String>, DocError> {
        self.store.create_collection(tx, collection, None, now_micros()).await?;
        let schema = self.schema_of(tx, collection).await?;
        let docs = self.prepare_all(docs, place, schema.as_ref())?;
        self.insert_prepared(tx, collection, docs, place, Some(changes)).await
    }

    /// Writes documents checked against the collection's schema as it is inside `tx`.
    async fn insert_prepared(
        &self,
        tx: &mut Tx,
        collection: &str,
        docs: Vec<Prepared>,
        place: &str,
        mut changes: Option<&mut Vec<Change>>,
    ) -> Result<Vec<String>, DocError> {
        let now = now_micros();
        let mut ids = Vec::with_capacity(docs.len());
        let mut flat = IndexShapes::read(self, tx, collection).await?;
        let mut rows = Vec::with_capacity(docs.len());
        let mut places = Vec::with_capacity(docs.len());
        for Prepared { id, doc, text, at } in docs {
            flat.note(self, tx, collection, &doc).await?;
            rows.push((id.clone(), text));
            places.push(at);
            if let Some(changes) = changes.as_deref_mut() {
                changes.push(Change {
                    kind: "document.inserted",
                    collection: collection.into(),
                    id: id.clone(),
                    data: json!({ "document": doc }),
                });
            }
            ids.push(id);
        }
        let conflict = |at: &str, id: &str| {
            DocError::Conflict(format!("{at}: a document with `_id` {id} or another unique key already exists"))
        };
        for (chunk, at) in rows.chunks(ROWS_PER_INSERT).zip(places.chunks(ROWS_PER_INSERT)) {
            match self.store.insert_rows(tx, collection, chunk, now).await {
                Ok(()) => {}
                // None of the chunk stayed: one at a time names the document that conflicts.
                Err(WriteError::Duplicate) => {
                    for ((id, doc), at) in chunk.iter().zip(at) {
                        self.store.insert(tx, collection, id, doc, now).await.map_err(|e| match e {
                            WriteError::Duplicate => conflict(at, id),
                            WriteError::Storage(s) => DocError::Storage(s),
                        })?;
                    }
                    // One at a time, the repeat of a key (in the chunk or stored) failed above;
                    // a key taken meanwhile by another writer is named here.
                    return Err(DocError::Conflict(format!("{place}: a unique key already exists")));
                }
                Err(WriteError::Storage(s)) => return Err(DocError::Storage(s)),
            }
        }
        Ok(ids)
    }

    pub async fn insert(&self, p: &Principal, collection: &str, docs: Vec<Value>) -> Result<Vec<String>, DocError> {
        self.require(p, Access::Write, Some(collection))?;
        valid_collection(collection, "collection")?;
        if docs.len() > MAX_BATCH {
            return Err(Invalid::new("documents", format!("At most {MAX_BATCH} documents per request")).into());
        }
        let place = if docs.len() == 1 { "document" } else { "documents" };
        // Checked and serialised before the transaction, which holds SQLite's one write lock:
        // against the schema as read now, and again inside should it have changed meanwhile.
        let schema = schema_in(self.store.get_collection(collection).await?);
        let mut docs = self.prepare_all(docs, place, schema.as_ref())?;
        let mut events = self.inserted_events(collection, &docs);
        let mut tx = self.store.begin().await?;
        self.store.create_collection(&mut tx, collection, None, now_micros()).await?;
        let now_schema = self.schema_of(&mut tx, collection).await?;
        if now_schema != schema {
            let again: Vec<Value> = docs.into_iter().map(|d| d.doc).collect();
            docs = self.prepare_all(again, place, now_schema.as_ref())?;
            events = self.inserted_events(collection, &docs);
        }
        let ids = self.insert_prepared(&mut tx, collection, docs, place, None).await?;
        self.commit_events(tx, events).await?;
        Ok(ids)
    }

    /// The documents of `collection` matching `filter` inside `tx`, in `_id` order.
    async fn matching(
        &self,
        tx: &mut Tx,
        collection: &str,
        filter: &Filter,
        one: bool,
    ) -> Result<Vec<Value>, DocError> {
        let (where_sql, params, exact) = self.compile_in(tx, collection, filter).await?;
        let limit = (one && exact).then_some(1);
        let mut rows = self.store.select_tx(tx, &where_sql, &params, limit).await?;
        if !exact {
            rows.retain(|d| filter.matches(d));
        }
        if one {
            rows.truncate(1);
        }
        Ok(rows)
    }

    async fn update_in(
        &self,
        tx: &mut Tx,
        collection: &str,
        op: &BulkOp,
        changes: &mut Vec<Change>,
    ) -> Result<UpdateResult, DocError> {
        let now = now_micros();
        let stamp = Timestamp::now().to_rfc3339();
        let schema = self.schema_of(tx, collection).await?;
        let (filter, many, upsert) = match op {
            BulkOp::Update { filter, many, upsert, .. } => (filter, *many, *upsert),
            BulkOp::Replace { filter, upsert, .. } => (filter, false, *upsert),
            _ => return Ok(UpdateResult::default()),
        };
        let found = self.matching(tx, collection, filter, !many).await?;
        let mut result = UpdateResult { matched: found.len() as u64, ..UpdateResult::default() };
        let mut flat = IndexShapes::read(self, tx, collection).await?;
        for old in &found {
            let id = id_of(old);
            let new = match op {
                BulkOp::Update { update, .. } => update.apply(old, false, &stamp)?,
                BulkOp::Replace { document, .. } => {
                    let mut d = document.clone();
                    if let Value::Object(m) = &mut d {
                        if m.get("_id").is_some_and(|x| x.as_str() != Some(id.as_str())) {
                            return Err(Invalid::new("replacement._id", "`_id` cannot be changed").into());
                        }
                        m.insert("_id".into(), Value::String(id.clone()));
                    }
                    d
                }
                _ => continue,
            };
            if &new == old {
                continue;
            }
            let (_, new) = self.prepare(new, "update", schema.as_ref())?;
            flat.note(self, tx, collection, &new).await?;
            self.store.replace(tx, collection, &id, &new.to_string(), now).await?;
            result.modified += 1;
            let data = match op {
                BulkOp::Update { update, .. } => json!({ "changed_fields": update.changed_fields(), "document": new }),
                _ => json!({ "document": new }),
            };
            changes.push(Change { kind: "document.updated", collection: collection.into(), id, data });
        }
        if found.is_empty() && upsert {
            let mut base = Map::new();
            seed_from_filter(filter, &mut base);
            let doc = match op {
                BulkOp::Update { update, .. } => update.apply(&Value::Object(base), true, &stamp)?,
                BulkOp::Replace { document, .. } => {
                    let mut d = document.clone();
                    if let (Value::Object(m), Some(id)) = (&mut d, base.get("_id")) {
                        m.entry("_id").or_insert(id.clone());
                    }
                    d
                }
                _ => Value::Object(base),
            };
            let ids = self.insert_in(tx, collection, vec![doc], "document", changes).await?;
            result.upserted_id = ids.into_iter().next();
        }
        Ok(result)
    }

    pub async fn update(&self, p: &Principal, collection: &str, op: BulkOp) -> Result<UpdateResult, DocError> {
        self.require(p, Access::Write, Some(collection))?;
        valid_collection(collection, "collection")?;
        let mut tx = self.store.begin().await?;
        let mut changes = Vec::new();
        let r = self.update_in(&mut tx, collection, &op, &mut changes).await?;
        self.commit(tx, changes).await?;
        Ok(r)
    }

    async fn delete_in(
        &self,
        tx: &mut Tx,
        collection: &str,
        filter: &Filter,
        many: bool,
        changes: &mut Vec<Change>,
    ) -> Result<u64, DocError> {
        let found = self.matching(tx, collection, filter, !many).await?;
        let mut n = 0;
        for d in found {
            let id = id_of(&d);
            if self.store.delete(tx, collection, &id).await? {
                n += 1;
                changes.push(Change { kind: "document.deleted", collection: collection.into(), id, data: json!({}) });
            }
        }
        Ok(n)
    }

    pub async fn delete(&self, p: &Principal, collection: &str, filter: &Filter, many: bool) -> Result<u64, DocError> {
        self.require(p, Access::Write, Some(collection))?;
        valid_collection(collection, "collection")?;
        let mut tx = self.store.begin().await?;
        let mut changes = Vec::new();
        let n = self.delete_in(&mut tx, collection, filter, many, &mut changes).await?;
        self.commit(tx, changes).await?;
        Ok(n)
    }

    /// Every operation in one transaction: all or nothing. On failure, the index of the
    /// failing operation and why.
    pub async fn bulk(
        &self,
        p: &Principal,
        collection: &str,
        ops: Vec<BulkOp>,
    ) -> Result<Result<BulkCounts, (usize, DocError)>, DocError> {
        self.require(p, Access::Write, Some(collection))?;
        valid_collection(collection, "collection")?;
        if ops.len() > MAX_BATCH {
            return Err(Invalid::new("operations", format!("At most {MAX_BATCH} operations per request")).into());
        }
        let mut tx = self.store.begin().await?;
        let mut changes = Vec::new();
        let mut counts = BulkCounts::default();
        for (i, op) in ops.iter().enumerate() {
            let r: Result<(), DocError> = async {
                match op {
                    BulkOp::Insert(doc) => {
                        let place = format!("operations[{i}].document");
                        counts.inserted +=
                            self.insert_in(&mut tx, collection, vec![doc.clone()], &place, &mut changes).await?.len()
                                as u64;
                    }
                    BulkOp::Update { .. } | BulkOp::Replace { .. } => {
                        let r = self.update_in(&mut tx, collection, op, &mut changes).await?;
                        counts.updated += r.modified;
                        counts.inserted += u64::from(r.upserted_id.is_some());
                    }
                    BulkOp::Delete { filter, many } => {
                        counts.deleted += self.delete_in(&mut tx, collection, filter, *many, &mut changes).await?;
                    }
                }
                Ok(())
            }
            .await;
            if let Err(e) = r {
                return Ok(Err((i, e)));
            }
        }
        self.commit(tx, changes).await?;
        Ok(Ok(counts))
    }

    pub async fn get(&self, p: &Principal, collection: &str, id: &str) -> Result<Value, DocError> {
        let filter = Filter::Field(
            Path { text: "_id".into(), segments: vec!["_id".into()] },
            vec![Cond::Eq(Value::String(id.into()))],
        );
        let (docs, _) =
            self.find(p, collection, &Find { filter: Some(filter), limit: Some(1), ..Find::default() }).await?;
        docs.into_iter().next().ok_or_else(|| DocError::NotFound(format!("No document `{id}` in `{collection}`")))
    }

    /// Whether `name` is a collection (no permission needed: routing asks it).
    pub async fn collection_exists(&self, name: &str) -> Result<bool, DocError> {
        if valid_collection(name, "name").is_err() {
            return Ok(false);
        }
        Ok(self.store.get_collection(name).await?.is_some())
    }

    pub fn id_filter(id: &str) -> Filter {
        Filter::Field(
            Path { text: "_id".into(), segments: vec!["_id".into()] },
            vec![Cond::Eq(Value::String(id.into()))],
        )
    }

    // Collections.

    pub async fn create_collection(
        &self,
        p: &Principal,
        name: &str,
        schema: Option<Value>,
        indexes: Vec<(Value, bool)>,
    ) -> Result<(), DocError> {
        self.require(p, Access::Admin, Some(name))?;
        valid_collection(name, "name")?;
        if let Some(s) = &schema {
            schema::check(s, "schema")?;
        }
        let mut tx = self.store.begin().await?;
        let text = schema.as_ref().map(Value::to_string);
        if !self.store.create_collection(&mut tx, name, text.as_deref(), now_micros()).await? {
            return Err(DocError::Conflict(format!("Collection `{name}` already exists")));
        }
        tx.commit().await?;
        for (i, (keys, unique)) in indexes.into_iter().enumerate() {
            self.create_index_in(name, &keys, unique, &format!("indexes[{i}]")).await?;
        }
        Ok(())
    }

    pub async fn list_collections(&self, p: &Principal) -> Result<Vec<Value>, DocError> {
        self.require(p, Access::Read, None).or_else(|e| {
            if p.permissions.list().iter().any(|x| x.starts_with("documents.")) { Ok(()) } else { Err(e) }
        })?;
        let rows = self.store.list_collections().await?;
        Ok(rows
            .into_iter()
            .filter(|(c, _)| self.require(p, Access::Read, Some(&c.name)).is_ok())
            .map(|(c, n)| {
                json!({
                    "name": c.name,
                    "count": n,
                    "schema": c.schema.and_then(|s| serde_json::from_str::<Value>(&s).ok()),
                    "created_at": Timestamp::from_micros(c.created_at).to_rfc3339(),
                })
            })
            .collect())
    }

    pub async fn get_collection(&self, p: &Principal, name: &str) -> Result<Value, DocError> {
        self.require(p, Access::Read, Some(name))?;
        valid_collection(name, "name")?;
        let c = self
            .store
            .get_collection(name)
            .await?
            .ok_or_else(|| DocError::NotFound(format!("Collection `{name}` not found")))?;
        let count = self
            .store
            .scalar(format!("SELECT count(*) FROM documents WHERE {}", Builder::collection(name)), &[])
            .await?;
        let size = self
            .store
            .scalar(
                format!(
                    "SELECT CAST(COALESCE(SUM(length({})), 0) AS BIGINT) FROM documents WHERE {}",
                    match self.store.dialect() {
                        Dialect::Sqlite => "doc",
                        Dialect::Postgres => "doc::text",
                    },
                    Builder::collection(name)
                ),
                &[],
            )
            .await?;
        let indexes = self.indexes(p, name).await?;
        Ok(json!({
            "name": c.name,
            "count": count,
            "size_bytes": size,
            "indexes": indexes,
            "schema": c.schema.and_then(|s| serde_json::from_str::<Value>(&s).ok()),
            "created_at": Timestamp::from_micros(c.created_at).to_rfc3339(),
        }))
    }

    pub async fn drop_collection(&self, p: &Principal, name: &str) -> Result<(), DocError> {
        self.require(p, Access::Admin, Some(name))?;
        valid_collection(name, "name")?;
        if self.store.drop_collection(name).await? {
            Ok(())
        } else {
            Err(DocError::NotFound(format!("Collection `{name}` not found")))
        }
    }

    pub async fn create_index(
        &self,
        p: &Principal,
        collection: &str,
        keys: &Value,
        unique: bool,
    ) -> Result<Value, DocError> {
        self.require(p, Access::Admin, Some(collection))?;
        valid_collection(collection, "collection")?;
        let mut tx = self.store.begin().await?;
        self.store.create_collection(&mut tx, collection, None, now_micros()).await?;
        tx.commit().await?;
        self.create_index_in(collection, keys, unique, "").await
    }

    async fn create_index_in(
        &self,
        collection: &str,
        keys: &Value,
        unique: bool,
        place: &str,
    ) -> Result<Value, DocError> {
        let at = |k: &str| if place.is_empty() { k.to_string() } else { format!("{place}.{k}") };
        let Value::Object(m) = keys else {
            return Err(Invalid::new(at("keys"), "`keys` is an object such as {\"price\": 1}").into());
        };
        if m.is_empty() || m.len() > 8 {
            return Err(Invalid::new(at("keys"), "An index has 1 to 8 keys").into());
        }
        let mut exprs = Vec::new();
        let (mut arrays, mut mixed) = (Vec::new(), Vec::new());
        let mut names = Vec::new();
        for (k, dir) in m {
            let here = at(&format!("keys.{k}"));
            let path = Path::parse(k, &here)?;
            if !matches!(dir.as_i64(), Some(1 | -1)) {
                return Err(Invalid::new(&here, "Index direction must be 1 or -1").into());
            }
            let expr = Builder::index_expr(self.store.dialect(), &path)
                .ok_or_else(|| Invalid::new(&here, "Index keys are field names of letters, digits, `_` and `-`"))?;
            exprs.push(expr);
            arrays.push(Builder::array_probe(self.store.dialect(), &path).unwrap_or_else(|| "1 = 1".into()));
            mixed.push(Builder::mixed_probe(self.store.dialect(), &path).unwrap_or_else(|| "1 = 1".into()));
            names.push(format!("{k}_{dir}"));
        }
        let name = format!("dx_{}_{}", collection.replace('-', "_"), names.join("_").replace(['-', '.'], "_"));
        let name: String = if name.len() > 60 { format!("dx_{:016x}", fnv(&name)) } else { name };
        let probes = ShapeProbes { arrays: arrays.join(" OR "), mixed: mixed.join(" OR ") };
        let created = self
            .store
            .create_index(collection, &name, &exprs, &keys.to_string(), unique, now_micros(), &probes)
            .await
            .map_err(|e| match e {
                WriteError::Duplicate => {
                    DocError::Conflict("Existing documents have duplicate values for this unique index".into())
                }
                WriteError::Storage(s) => DocError::Storage(s),
            })?;
        if !created {
            return Err(DocError::Conflict(format!("Index `{name}` already exists")));
        }
        Ok(json!({ "name": name, "keys": keys, "unique": unique }))
    }

    pub async fn indexes(&self, p: &Principal, collection: &str) -> Result<Vec<Value>, DocError> {
        self.require(p, Access::Read, Some(collection))?;
        let mut out = vec![json!({ "name": "_id_", "keys": {"_id": 1}, "unique": true })];
        for i in self.store.list_indexes(collection).await? {
            out.push(json!({
                "name": i.name,
                "keys": serde_json::from_str::<Value>(&i.keys).unwrap_or(Value::Null),
                "unique": i.unique,
            }));
        }
        Ok(out)
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn parse_number(s: &str) -> Option<Value> {
    if let Ok(i) = s.parse::<i64>() {
        return Some(Value::from(i));
    }
    s.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(|n| {
        // An integral sum of integers comes back as `300.0` from some engines.
        Value::Number(n)
    })
}

/// Equality fields of a filter, the base of an upserted document.
fn seed_from_filter(f: &Filter, out: &mut Map<String, Value>) {
    match f {
        Filter::And(fs) => fs.iter().for_each(|f| seed_from_filter(f, out)),
        Filter::Field(path, conds) => {
            for c in conds {
                if let Cond::Eq(v) = c {
                    crate::engine::aggregate::set_path_map(out, &path.segments, v.clone());
                }
            }
        }
        _ => {}
    }
}

fn check_names(v: &Value, place: &str, depth: usize) -> Result<(), Invalid> {
    if depth > 100 {
        return Err(Invalid::new(place, "The document is nested more than 100 levels deep"));
    }
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("$date") => Ok(()),
        Value::Object(m) => {
            for (k, x) in m {
                if k.starts_with('$') || k.contains('.') || k.contains('\0') || k.is_empty() {
                    return Err(Invalid::new(
                        format!("{place}.{k}"),
                        "Field names must not be empty, start with `$`, or contain `.` or NUL",
                    ));
                }
                check_names(x, place, depth + 1)?;
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|x| check_names(x, place, depth + 1)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::Joined;

    #[test]
    fn new_ids_are_object_ids_that_increase_within_a_second() {
        let ids: Vec<String> = (0..1000).map(|_| super::new_id()).collect();
        assert!(ids.iter().all(|id| id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit())));
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
        // Same process part; the counter goes up by one (mod 2^24).
        let counter = |id: &str| u32::from_str_radix(&id[18..], 16).unwrap_or_default();
        for pair in ids.windows(2) {
            assert_eq!(pair[0][8..18], pair[1][8..18]);
            assert_eq!(counter(&pair[1]), (counter(&pair[0]) + 1) & 0x00ff_ffff);
        }
    }

    #[test]
    fn joined_documents_keep_their_text_and_count() {
        let j = Joined::parse(Some(String::from(r#"2,[{"_id":"a","n":"x,y"},{"_id":"b"}]"#)));
        assert_eq!((j.count, j.text.as_str()), (2, r#"[{"_id":"a","n":"x,y"},{"_id":"b"}]"#));
        assert_eq!(j.docs().len(), 2);
        let empty = Joined::parse(Some(String::from("0,[]")));
        assert_eq!((empty.count, empty.text.as_str()), (0, "[]"));
        for none in [None, Some(String::from("[]")), Some(String::from("x,[]"))] {
            let j = Joined::parse(none);
            assert_eq!((j.count, j.text.as_str()), (0, "[]"));
        }
    }
}
