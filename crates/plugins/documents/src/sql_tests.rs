//! The SQL path against the engine: the filter table on SQLite (and PostgreSQL when
//! `NEXUS_TEST_POSTGRES_URL` is set), and a property test with random filters and documents.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use nexus_kernel::db::Db;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::engine::filter::Filter;
use crate::engine::tests::{datasets, filter_cases};
use crate::sql::Builder;
use crate::store::DocumentStore;

async fn sqlite() -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let db = Db::connect(&url, Some(2)).await.unwrap();
    db.migrate(&[&crate::MIGRATIONS]).await.unwrap();
    (db, dir)
}

async fn postgres() -> Option<Db> {
    let url = std::env::var("NEXUS_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty())?;
    let schema = format!("nx_docs_{}", nexus_kernel::id::random_alphanumeric(12).to_lowercase());
    let admin = Db::connect(&url, Some(1)).await.unwrap();
    let Db::Postgres(pool) = &admin else { return None };
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(pool).await.unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let db = Db::connect(&format!("{url}{sep}options=-c%20search_path%3D{schema}"), Some(2)).await.unwrap();
    db.migrate(&[&crate::MIGRATIONS]).await.unwrap();
    Some(db)
}

async fn load(store: &dyn DocumentStore, collection: &str, docs: &[Value]) {
    let mut tx = store.begin().await.unwrap();
    for d in docs {
        let id = d["_id"].as_str().unwrap();
        store.insert(&mut tx, collection, id, &d.to_string(), 0).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// The ids SQL selects for `filter` (re-checked by the engine when the SQL is a superset).
async fn sql_ids(store: &dyn DocumentStore, collection: &str, filter: &Filter) -> (Vec<String>, bool) {
    sql_ids_with(store, collection, filter, Builder::new(store.dialect())).await
}

/// [`sql_ids`] with a builder that may declare flat and plain paths.
async fn sql_ids_with(
    store: &dyn DocumentStore,
    collection: &str,
    filter: &Filter,
    mut b: Builder,
) -> (Vec<String>, bool) {
    let c = b.filter(filter);
    let mut sql = Builder::collection(collection);
    if let Some(cond) = &c.sql {
        sql = format!("{sql} AND {cond}");
    }
    let rows = store.select(&sql, &b.params, "id ASC", None, 0).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut ids: Vec<String> =
        rows.iter().filter(|d| c.exact || filter.matches(d)).map(|d| d["_id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    (ids, c.exact)
}

async fn run_table(db: Db) {
    let store = crate::store::open(&db);
    for (name, docs) in datasets() {
        load(store.as_ref(), name, &docs).await;
    }
    let mut failures = Vec::new();
    let mut exact = 0;
    let cases = filter_cases();
    for case in &cases {
        let f = Filter::parse(&case.filter, "filter").unwrap();
        let (got, was_exact) = sql_ids(store.as_ref(), case.dataset, &f).await;
        exact += usize::from(was_exact);
        if got != case.expected {
            failures.push(format!(
                "{} {} (exact {was_exact}): expected {:?}, got {:?}",
                case.dataset, case.filter, case.expected, got
            ));
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    // Most of the table runs entirely in SQL.
    assert!(exact * 10 >= cases.len() * 7, "{exact} of {} exact", cases.len());
}

#[tokio::test]
async fn filter_table_on_sqlite() {
    let (db, _dir) = sqlite().await;
    run_table(db).await;
}

#[tokio::test]
async fn filter_table_on_postgres() {
    if let Some(db) = postgres().await {
        run_table(db).await;
    }
}

#[tokio::test]
async fn indexed_paths_use_the_expression_index() {
    let (db, _dir) = sqlite().await;
    let store = crate::store::open(&db);
    let docs: Vec<Value> =
        (0..200).map(|i| json!({"_id": format!("d{i:03}"), "price": i, "category": format!("c{}", i % 5)})).collect();
    load(store.as_ref(), "items", &docs).await;
    let path = crate::engine::path::Path::parse("price", "keys").unwrap();
    let expr = Builder::index_expr(store.dialect(), &path).unwrap();
    let probes = crate::store::ShapeProbes {
        arrays: Builder::array_probe(store.dialect(), &path).unwrap(),
        mixed: Builder::mixed_probe(store.dialect(), &path).unwrap(),
    };
    assert!(
        store.create_index("items", "dx_items_price_1", &[expr], "{\"price\":1}", false, 0, &probes).await.unwrap()
    );
    let f = Filter::parse(&json!({"price": {"$gte": 190}}), "filter").unwrap();
    let mut b = Builder::new(store.dialect()).with_flat_paths(vec![vec!["price".into()]]);
    let c = b.filter(&f);
    assert!(c.exact);
    let sql = format!(
        "EXPLAIN QUERY PLAN SELECT id FROM documents WHERE {} AND {}",
        Builder::collection("items"),
        c.sql.unwrap()
    );
    let sql_text = sql.clone();
    let indexes = store.text_rows("SELECT sql FROM sqlite_master WHERE type = 'index'".into(), &[], 1).await.unwrap();
    let sql_text = format!("{sql_text} {indexes:?}");
    let plan = store.text_rows(sql, &b.params, 4).await.unwrap();
    let text = format!("{plan:?}");
    assert!(text.contains("USING INDEX dx_items_price_1"), "{text} {sql_text}");
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..4).prop_map(Value::from),
        prop_oneof![Just(1.5), Just(-0.5), Just(2.0)].prop_map(Value::from),
        prop_oneof![Just("a"), Just("b"), Just("B"), Just("ab"), Just("")].prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => scalar(),
        1 => prop::collection::vec(scalar(), 0..3).prop_map(Value::Array),
        1 => scalar().prop_map(|v| json!({"b": v})),
        1 => prop::collection::vec(scalar().prop_map(|v| json!({"b": v})), 0..3).prop_map(Value::Array),
    ]
}

/// Numbers, strings and nulls only: the values a plain path holds.
fn plain_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..4).prop_map(Value::from),
        prop_oneof![Just(1.5), Just(-0.5), Just(2.0)].prop_map(Value::from),
        prop_oneof![Just("a"), Just("b"), Just("B"), Just("ab"), Just(""), Just("[1]"), Just("{")]
            .prop_map(Value::from),
        Just(Value::Null),
        plain_scalar_object(),
    ]
}

fn plain_scalar_object() -> impl Strategy<Value = Value> {
    (-3i64..4).prop_map(|v| json!({"b": v}))
}

fn doc() -> impl Strategy<Value = Value> {
    prop_oneof![document(value().boxed()), document(plain_value().boxed())]
}

fn document(value: BoxedStrategy<Value>) -> impl Strategy<Value = Value> {
    (prop::option::of(value.clone()), prop::option::of(value)).prop_map(|(a, b)| {
        let mut m = serde_json::Map::new();
        if let Some(a) = a {
            m.insert("a".into(), a);
        }
        if let Some(b) = b {
            m.insert("b".into(), b);
        }
        Value::Object(m)
    })
}

fn cond() -> impl Strategy<Value = Value> {
    prop_oneof![
        scalar(),
        scalar().prop_map(|v| json!({"$eq": v})),
        scalar().prop_map(|v| json!({"$ne": v})),
        scalar().prop_map(|v| json!({"$gt": v})),
        scalar().prop_map(|v| json!({"$gte": v})),
        scalar().prop_map(|v| json!({"$lt": v})),
        scalar().prop_map(|v| json!({"$lte": v})),
        prop::collection::vec(scalar(), 0..3).prop_map(|v| json!({"$in": v})),
        prop::collection::vec(scalar(), 0..3).prop_map(|v| json!({"$nin": v})),
        any::<bool>().prop_map(|b| json!({"$exists": b})),
        (0usize..3).prop_map(|n| json!({"$size": n})),
        prop_oneof![Just("number"), Just("string"), Just("bool"), Just("null"), Just("array")]
            .prop_map(|t| json!({"$type": t})),
        prop::collection::vec(scalar(), 1..3).prop_map(|v| json!({"$all": v})),
        scalar().prop_map(|v| json!({"$not": {"$gt": v}})),
        // Two bounds on one path, as ranges are written (and compiled together).
        (scalar(), scalar()).prop_map(|(x, y)| json!({"$gte": x, "$lte": y})),
        (scalar(), scalar()).prop_map(|(x, y)| json!({"$gt": x, "$lt": y})),
        (scalar(), scalar()).prop_map(|(x, y)| json!({"$lt": x, "$not": {"$gte": y}})),
        (scalar(), scalar()).prop_map(|(x, y)| json!({"$elemMatch": {"$gte": x, "$lte": y}})),
    ]
}

fn filter() -> impl Strategy<Value = Value> {
    let field = (prop_oneof![Just("a"), Just("b"), Just("a.b")], cond()).prop_map(|(p, c)| json!({ p: c }));
    field.prop_recursive(2, 6, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..3).prop_map(|v| json!({"$and": v})),
            prop::collection::vec(inner.clone(), 1..3).prop_map(|v| json!({"$or": v})),
            prop::collection::vec(inner, 1..3).prop_map(|v| json!({"$nor": v})),
        ]
    })
}

#[test]
fn sql_and_engine_agree_on_random_filters() {
    // Debug builds of proptest's shrinking and of nested strategies need a deep stack.
    std::thread::Builder::new().stack_size(256 << 20).spawn(random_filters).unwrap().join().unwrap();
}

fn random_filters() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (db, _dir) = rt.block_on(sqlite());
    let store = crate::store::open(&db);
    let config = ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let round = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&(prop::collection::vec(doc(), 0..8), filter()), |(docs, f)| {
            let n = round.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let collection = format!("p{n}");
            let docs: Vec<Value> = docs
                .into_iter()
                .enumerate()
                .map(|(i, mut d)| {
                    d["_id"] = Value::from(format!("{i}"));
                    d
                })
                .collect();
            let parsed = Filter::parse(&f, "filter").unwrap();
            let mut want: Vec<String> =
                docs.iter().filter(|d| parsed.matches(d)).map(|d| d["_id"].as_str().unwrap().to_string()).collect();
            want.sort();
            // Declare the paths as an index's flags would: flat without arrays on them, plain
            // also without booleans or objects.
            let (mut flat, mut plain) = (Vec::new(), Vec::new());
            for path in [vec!["a"], vec!["b"], vec!["a", "b"]] {
                let segs: Vec<String> = path.iter().map(|s| s.to_string()).collect();
                let get = |d: &Value, n: usize| crate::engine::path::get(d, &segs[..n]).cloned();
                if docs.iter().any(|d| (1..=segs.len()).any(|n| get(d, n).is_some_and(|v| v.is_array()))) {
                    continue;
                }
                if !docs.iter().any(|d| matches!(get(d, segs.len()), Some(Value::Bool(_) | Value::Object(_)))) {
                    plain.push(segs.clone());
                }
                flat.push(segs);
            }
            let b = Builder::new(store.dialect()).with_flat_paths(flat).with_plain_paths(plain);
            let (got, exact) = rt.block_on(async {
                load(store.as_ref(), &collection, &docs).await;
                sql_ids_with(store.as_ref(), &collection, &parsed, b).await
            });
            prop_assert_eq!(got, want, "filter {} (exact {}) docs {}", f, exact, Value::Array(docs.clone()));
            Ok(())
        })
        .unwrap();
}
