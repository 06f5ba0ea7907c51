//! Table-driven semantics: each case a dataset, a query and the expected result, following
//! MongoDB's documentation where implementations disagree. The filter table is shared with
//! the SQL tests (`crate::sql`), which run it against SQLite and must give the same answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use serde_json::{Value, json};

use super::aggregate::{parse_pipeline, run_stage};
use super::filter::Filter;
use super::project::Projection;
use super::sort::Sort;
use super::update::Update;

pub fn datasets() -> Vec<(&'static str, Vec<Value>)> {
    vec![
        (
            "scalars",
            vec![
                json!({"_id": "a", "x": 1}),
                json!({"_id": "b", "x": 2.5}),
                json!({"_id": "c", "x": "1"}),
                json!({"_id": "d", "x": null}),
                json!({"_id": "e"}),
                json!({"_id": "f", "x": [1, 3]}),
                json!({"_id": "g", "x": [[1], 2]}),
                json!({"_id": "h", "x": true}),
                json!({"_id": "i", "x": {"y": 1}}),
                json!({"_id": "j", "x": []}),
                json!({"_id": "k", "x": "abc"}),
                json!({"_id": "l", "x": -5}),
                json!({"_id": "m", "x": {"$date": "2024-01-01T00:00:00Z"}}),
                json!({"_id": "n", "x": [null]}),
                json!({"_id": "o", "x": 1.0}),
            ],
        ),
        (
            "nested",
            vec![
                json!({"_id": "a", "a": {"b": 1}}),
                json!({"_id": "b", "a": [{"b": 1}, {"b": 2}]}),
                json!({"_id": "c", "a": [{"c": 1}]}),
                json!({"_id": "d", "a": {"b": null}}),
                json!({"_id": "e", "a": 5}),
                json!({"_id": "f", "a": []}),
                json!({"_id": "g", "a": [{"b": [3, 4]}]}),
                json!({"_id": "h", "a": {"b": {"c": "x"}}}),
                json!({"_id": "i", "a": [1, 2]}),
                json!({"_id": "j"}),
            ],
        ),
        (
            "products",
            vec![
                json!({"_id": "p1", "name": "Laptop Pro", "category": "electronics", "price": 499.99,
                       "tags": ["computer", "portable"], "stock": 5, "specs": {"ram": 16}}),
                json!({"_id": "p2", "name": "Phone", "category": "electronics", "price": 299,
                       "tags": ["mobile"], "stock": 0, "specs": {"ram": 8}}),
                json!({"_id": "p3", "name": "Desk", "category": "furniture", "price": 150, "tags": [], "stock": 12}),
                json!({"_id": "p4", "name": "Chair", "category": "furniture", "price": 75.5, "tags": ["office"],
                       "stock": 30, "discontinued": true}),
                json!({"_id": "p5", "name": "Cable", "category": "electronics", "price": 9.99,
                       "tags": ["accessory", "computer"], "stock": 200}),
                json!({"_id": "p6", "name": "TV", "category": "electronics", "price": 1200, "stock": 3,
                       "specs": {"ram": 2}}),
                json!({"_id": "p7", "name": "lamp", "category": "furniture", "price": "unknown", "stock": null}),
                json!({"_id": "p8", "name": "Mouse", "category": ["electronics", "accessory"], "price": 25,
                       "tags": ["computer"], "stock": 50}),
            ],
        ),
    ]
}

/// `@dataset` switches the dataset; `filter | expected ids`.
const FILTERS: &str = r#"
@scalars
{"x":1} | a f o
{"x":2.5} | b
{"x":"1"} | c
{"x":null} | d e n
{"x":true} | h
{"x":[1,3]} | f
{"x":[1]} | g
{"x":[]} | j
{"x":{"y":1}} | i
{"x":{"$eq":1}} | a f o
{"x":{"$eq":null}} | d e n
{"x":{"$ne":1}} | b c d e g h i j k l m n
{"x":{"$gt":1}} | b f g
{"x":{"$gte":1}} | a b f g o
{"x":{"$lt":1}} | l
{"x":{"$lte":1}} | a f l o
{"x":{"$gt":"1"}} | k
{"x":{"$gte":"1"}} | c k
{"x":{"$lt":"b"}} | c k
{"x":{"$gt":null}} |
{"x":{"$gte":null}} | d e n
{"x":{"$lt":null}} |
{"x":{"$lte":null}} | d e n
{"x":{"$gt":false}} | h
{"x":{"$lt":true}} |
{"x":{"$gt":[1]}} | f g
{"x":{"$in":[1,"1"]}} | a c f o
{"x":{"$in":[null]}} | d e n
{"x":{"$in":[]}} |
{"x":{"$in":[true,2.5]}} | b h
{"x":{"$nin":[1,"1"]}} | b d e g h i j k l m n
{"x":{"$nin":[null]}} | a b c f g h i j k l m o
{"x":{"$nin":[]}} | a b c d e f g h i j k l m n o
{"x":{"$exists":true}} | a b c d f g h i j k l m n o
{"x":{"$exists":false}} | e
{"x":{"$type":"string"}} | c k
{"x":{"$type":"number"}} | a b f g l o
{"x":{"$type":"double"}} | b o
{"x":{"$type":"int"}} | a f g l
{"x":{"$type":"array"}} | f g j n
{"x":{"$type":"null"}} | d n
{"x":{"$type":"bool"}} | h
{"x":{"$type":"object"}} | i
{"x":{"$type":"date"}} | m
{"x":{"$type":["string","bool"]}} | c h k
{"x":{"$type":2}} | c k
{"x":{"$size":2}} | f g
{"x":{"$size":0}} | j
{"x":{"$size":1}} | n
{"x":{"$all":[1,3]}} | f
{"x":{"$all":[1]}} | a f o
{"x":{"$all":[]}} |
{"x":{"$mod":[2,1]}} | a f o
{"x":{"$mod":[2,0]}} | b g
{"x":{"$mod":[5,0]}} | l
{"x":{"$regex":"^a"}} | k
{"x":{"$regex":"^A","$options":"i"}} | k
{"x":{"$regex":"1"}} | c
{"x":{"$not":{"$gt":1}}} | a c d e h i j k l m n o
{"x":{"$not":{"$regex":"^a"}}} | a b c d e f g h i j l m n o
{"x":{"$elemMatch":{"$gt":2}}} | f
{"x":{"$elemMatch":{"$gte":1,"$lte":1}}} | f
{"x":{"$gt":0,"$lt":2}} | a f o
{"x":{"$elemMatch":{"$gt":0,"$lt":2}}} | f
{"x":{"$gt":1,"$lt":3}} | b f g
{"x":{"$eq":{"$date":"2024-01-01T00:00:00Z"}}} | m
{"x":{"$gt":{"$date":"2023-01-01T00:00:00Z"}}} | m
{"x":{"$lt":{"$date":"2023-01-01T00:00:00Z"}}} |
{"$or":[{"x":1},{"x":"abc"}]} | a f k o
{"$and":[{"x":{"$gte":1}},{"x":{"$lte":2}}]} | a f g o
{"$nor":[{"x":1},{"x":null}]} | b c g h i j k l m
{"x":{"$in":[{"$regex":"^a"},1]}} | a f k o
{"x":{"$ne":null}} | a b c f g h i j k l m o
{"x":{"$exists":true,"$ne":null}} | a b c f g h i j k l m o
{"_id":"a"} | a
{"_id":{"$in":["a","b"]}} | a b
{"_id":{"$gt":"m"}} | n o
{"x.0":1} | f g
{"x.0":null} | a b c d e h i k l m n o
{"x.0":{"$exists":true}} | f g n
{"x.y":1} | i
{"x":-5} | l
{"x":{"$gte":-5,"$lt":0}} | l
{} | a b c d e f g h i j k l m n o
@nested
{"a.b":1} | a b
{"a.b":2} | b
{"a.b":3} | g
{"a.b":null} | c d e i j
{"a.b":{"$exists":true}} | a b d g h
{"a.b":{"$exists":false}} | c e f i j
{"a.b":{"$gt":1}} | b g
{"a.b":{"$ne":1}} | c d e f g h i j
{"a.b.c":"x"} | h
{"a.b":{"c":"x"}} | h
{"a.b":{"$size":2}} | g
{"a":{"$size":0}} | f
{"a":{"$elemMatch":{"b":1}}} | b
{"a":{"$elemMatch":{"b":{"$gte":2}}}} | b g
{"a":{"$elemMatch":{"c":{"$exists":true}}}} | c
{"a":{"$elemMatch":{"$gt":1}}} | i
{"a.0.b":1} | b
{"a.1":2} | i
{"a.b":{"$in":[2,3]}} | b g
{"a.b":{"$nin":[2,3]}} | a c d e f h i j
{"a":5} | e
{"a":{"$type":"array"}} | b c f g i
{"a":{"$type":"object"}} | a b c d g h
{"a.b":{"$type":"array"}} | g
{"a":{"b":1}} | a b
{"a":{"$all":[1,2]}} | i
{"a":[1,2]} | i
{"a":[2,1]} |
{"a.b":{"$all":[3,4]}} | g
{"a.b":{"$lt":2}} | a b
{"a.b.c":{"$exists":true}} | h
{"a":{"$exists":true}} | a b c d e f g h i
{"a":{"$not":{"$size":0}}} | a b c d e g h i j
{"a.b":{"$regex":"x"}} |
{"$or":[{"a.b":1},{"a":5}]} | a b e
{"a.b":{"$type":"null"}} | d
{"a.b":{"$gte":1,"$lte":1}} | a b
{"a.b":{"$elemMatch":{"$gt":3}}} | g
@products
{"category":"electronics","price":{"$gte":100,"$lte":500}} | p1 p2
{"category":"electronics"} | p1 p2 p5 p6 p8
{"category":{"$ne":"electronics"}} | p3 p4 p7
{"price":{"$gt":100}} | p1 p2 p3 p6
{"price":{"$type":"string"}} | p7
{"price":{"$lt":50}} | p5 p8
{"tags":"computer"} | p1 p5 p8
{"tags":{"$all":["computer","portable"]}} | p1
{"tags":{"$size":0}} | p3
{"tags":{"$exists":false}} | p6 p7
{"tags":{"$in":["office","mobile"]}} | p2 p4
{"tags":{"$nin":["computer"]}} | p2 p3 p4 p6 p7
{"stock":null} | p7
{"stock":{"$gt":10}} | p3 p4 p5 p8
{"stock":0} | p2
{"specs.ram":{"$gte":8}} | p1 p2
{"specs.ram":{"$exists":false}} | p3 p4 p5 p7 p8
{"discontinued":{"$ne":true}} | p1 p2 p3 p5 p6 p7 p8
{"name":{"$regex":"^l","$options":"i"}} | p1 p7
{"name":{"$regex":"^l"}} | p7
{"name":{"$in":["TV","Desk"]}} | p3 p6
{"$or":[{"price":{"$lt":20}},{"stock":{"$gt":40}}]} | p5 p8
{"$and":[{"category":"furniture"},{"price":{"$type":"number"}}]} | p3 p4
{"$nor":[{"category":"electronics"},{"price":{"$gt":100}}]} | p4 p7
{"price":{"$mod":[100,0]}} | p6
{"stock":{"$not":{"$gt":10}}} | p1 p2 p6 p7
{"category":{"$all":["electronics","accessory"]}} | p8
{"name":{"$gt":"M"}} | p2 p6 p7 p8
{"price":{"$gte":75.5,"$lt":150}} | p4
{"price":{"$in":[25,150]}} | p3 p8
{"stock":{"$exists":true}} | p1 p2 p3 p4 p5 p6 p7 p8
{"stock":{"$type":"null"}} | p7
{"$or":[{"specs.ram":16},{"tags":"office"}],"price":{"$lt":100}} | p4
{"category":"electronics","tags":{"$size":1}} | p2 p8
"#;

pub struct Case {
    pub dataset: &'static str,
    pub filter: Value,
    pub expected: Vec<String>,
}

fn ids_of(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    v.sort();
    v
}

/// The filter table, each case also as its negation (`$nor`, which must give exactly the
/// rest) and inside an `$or` with a case that matches nothing.
pub fn filter_cases() -> Vec<Case> {
    let data = datasets();
    let mut dataset = "";
    let mut out = Vec::new();
    for line in FILTERS.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(name) = line.strip_prefix('@') {
            dataset = data.iter().find(|(n, _)| *n == name).map(|(n, _)| *n).expect("dataset");
            continue;
        }
        let (filter, ids) = line.rsplit_once('|').expect("filter | ids");
        let filter: Value = serde_json::from_str(filter.trim()).unwrap_or_else(|e| panic!("{line}: {e}"));
        let expected = ids_of(ids);
        let all: Vec<String> = data
            .iter()
            .find(|(n, _)| *n == dataset)
            .map(|(_, docs)| docs.iter().map(|d| d["_id"].as_str().unwrap().to_string()).collect())
            .unwrap();
        let mut rest: Vec<String> = all.into_iter().filter(|id| !expected.contains(id)).collect();
        rest.sort();
        out.push(Case { dataset, filter: json!({"$nor": [filter.clone()]}), expected: rest });
        out.push(Case {
            dataset,
            filter: json!({"$or": [filter.clone(), {"_id": "none"}]}),
            expected: expected.clone(),
        });
        out.push(Case { dataset, filter, expected });
    }
    out
}

pub fn docs_of(name: &str) -> Vec<Value> {
    datasets().into_iter().find(|(n, _)| *n == name).map(|(_, d)| d).unwrap()
}

#[test]
fn filter_table() {
    let cases = filter_cases();
    assert!(cases.len() >= 300, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let f = Filter::parse(&case.filter, "filter").unwrap_or_else(|e| panic!("{}: {e}", case.filter));
        let mut got: Vec<String> = docs_of(case.dataset)
            .iter()
            .filter(|d| f.matches(d))
            .map(|d| d["_id"].as_str().unwrap().to_string())
            .collect();
        got.sort();
        if got != case.expected {
            failures.push(format!("{} {}: expected {:?}, got {:?}", case.dataset, case.filter, case.expected, got));
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// `sort | ids in order` over the `scalars` dataset (ties keep `_id` order).
const SORTS: &str = r#"
{"x":1} | j d e n l a f o g b c k i h m
{"x":-1} | m h g i k c f b a o l d e n j
{"x":1,"_id":-1} | j n e d l o f a g b c k i h m
"#;

#[test]
fn sort_table() {
    let mut failures = Vec::new();
    for line in SORTS.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (spec, ids) = line.split_once('|').unwrap();
        let pairs: super::ordered::Ordered = serde_json::from_str(spec.trim()).unwrap();
        let sort = Sort::from_pairs(pairs.0.iter().map(|(k, v)| (k, v)), "sort").unwrap();
        let mut docs = docs_of("scalars");
        sort.apply(&mut docs);
        let got: Vec<&str> = docs.iter().map(|d| d["_id"].as_str().unwrap()).collect();
        let want: Vec<&str> = ids.split_whitespace().collect();
        if got != want {
            failures.push(format!("{spec}: expected {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn mixed_type_and_array_sorting_follows_mongodb() {
    let mut docs = vec![
        json!({"_id": 1, "v": [5, 1]}),
        json!({"_id": 2, "v": 3}),
        json!({"_id": 3, "v": [2, 9]}),
        json!({"_id": 4}),
    ];
    Sort::parse(&json!({"v": 1}), "sort").unwrap().apply(&mut docs);
    let ids: Vec<i64> = docs.iter().map(|d| d["_id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![4, 1, 3, 2], "ascending uses each array's least element");
    Sort::parse(&json!({"v": -1}), "sort").unwrap().apply(&mut docs);
    let ids: Vec<i64> = docs.iter().map(|d| d["_id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![3, 1, 2, 4], "descending uses each array's greatest element");
}

/// `document | update | result` (or `! place` for a refused update).
const UPDATES: &str = r#"
{"a":1} | {"$set":{"a":2}} | {"a":2}
{"a":1} | {"$set":{"b.c":2}} | {"a":1,"b":{"c":2}}
{"a":[1,2]} | {"$set":{"a.1":5}} | {"a":[1,5]}
{"a":[1]} | {"$set":{"a.3":5}} | {"a":[1,null,null,5]}
{"a":1,"b":2} | {"$unset":{"a":""}} | {"b":2}
{"a":{"b":1,"c":2}} | {"$unset":{"a.b":""}} | {"a":{"c":2}}
{"a":1} | {"$unset":{"zz":""}} | {"a":1}
{"a":1} | {"$inc":{"a":2}} | {"a":3}
{"a":1} | {"$inc":{"a":0.5}} | {"a":1.5}
{} | {"$inc":{"a":-2}} | {"a":-2}
{"a":"x"} | {"$inc":{"a":1}} | ! update.$inc.a
{"a":3} | {"$mul":{"a":2}} | {"a":6}
{} | {"$mul":{"a":2}} | {"a":0}
{"a":[1]} | {"$mul":{"a":2}} | ! update.$mul.a
{"a":5} | {"$min":{"a":3}} | {"a":3}
{"a":5} | {"$min":{"a":8}} | {"a":5}
{"a":5} | {"$max":{"a":8}} | {"a":8}
{} | {"$max":{"a":8}} | {"a":8}
{"a":5} | {"$max":{"a":"s"}} | {"a":"s"}
{"a":1,"b":2} | {"$rename":{"a":"c"}} | {"b":2,"c":1}
{"a":{"b":1}} | {"$rename":{"a.b":"d"}} | {"a":{},"d":1}
{"b":2} | {"$rename":{"a":"c"}} | {"b":2}
{"a":[1]} | {"$push":{"a":2}} | {"a":[1,2]}
{} | {"$push":{"a":2}} | {"a":[2]}
{"a":[1]} | {"$push":{"a":{"$each":[2,3]}}} | {"a":[1,2,3]}
{"a":[1]} | {"$push":{"a":[2]}} | {"a":[1,[2]]}
{"a":1} | {"$push":{"a":2}} | ! update.$push.a
{"a":[1,2,1,3]} | {"$pull":{"a":1}} | {"a":[2,3]}
{"a":[1,2,3,4]} | {"$pull":{"a":{"$gte":3}}} | {"a":[1,2]}
{"a":[{"b":1},{"b":2}]} | {"$pull":{"a":{"b":1}}} | {"a":[{"b":2}]}
{"a":[1,2]} | {"$pull":{"a":{"$in":[1,2]}}} | {"a":[]}
{"a":"x"} | {"$pull":{"a":1}} | ! update.$pull.a
{"a":[1,2]} | {"$addToSet":{"a":2}} | {"a":[1,2]}
{"a":[1,2]} | {"$addToSet":{"a":3}} | {"a":[1,2,3]}
{"a":[1]} | {"$addToSet":{"a":{"$each":[1,2,2]}}} | {"a":[1,2]}
{"a":[1.0]} | {"$addToSet":{"a":1}} | {"a":[1.0]}
{"a":[1,2,3]} | {"$pop":{"a":1}} | {"a":[1,2]}
{"a":[1,2,3]} | {"$pop":{"a":-1}} | {"a":[2,3]}
{"a":[]} | {"$pop":{"a":1}} | {"a":[]}
{"a":1} | {"$pop":{"a":2}} | ! update.$pop.a
{} | {"$currentDate":{"t":true}} | {"t":{"$date":"2026-12-02T10:00:00Z"}}
{"a":1} | {"$setOnInsert":{"b":1}} | {"a":1}
{"a":1} | {"$set":{"a.b":1}} | ! update.$set.a.b
{"a":1} | {"$set":{"a":1},"$inc":{"a":1}} | ! update.$set.a
{"a":1} | {"$set":{"_id":"z"}} | ! update.$set._id
{"a":1} | {"$bogus":{"a":1}} | ! update.$bogus
{"a":1} | {"a":2} | ! update.a
{"a":1} | {"$set":{"$x":1}} | ! update.$set.$x
{"a":1} | {"$set":{"a..b":1}} | ! update.$set.a..b
{"a":{"b":[{"c":1}]}} | {"$set":{"a.b.0.c":2}} | {"a":{"b":[{"c":2}]}}
{"n":9007199254740993} | {"$inc":{"n":1}} | {"n":9007199254740994}
{"a":2} | {"$mul":{"a":1.5}} | {"a":3.0}
"#;

#[test]
fn update_table() {
    let mut failures = Vec::new();
    let mut count = 0;
    for line in UPDATES.lines().map(str::trim).filter(|l| !l.is_empty()) {
        count += 1;
        let parts: Vec<&str> = line.split(" | ").collect();
        let doc: Value = serde_json::from_str(parts[0]).unwrap();
        let update: Value = serde_json::from_str(parts[1]).unwrap();
        let result = Update::parse(&update, "update").and_then(|u| u.apply(&doc, false, "2026-12-02T10:00:00Z"));
        match (parts[2].strip_prefix("! "), result) {
            (Some(place), Err(e)) if e.place == place => {}
            (None, Ok(got)) if got == serde_json::from_str::<Value>(parts[2]).unwrap() => {}
            (_, got) => failures.push(format!("{line}: got {got:?}")),
        }
    }
    assert!(count >= 50);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn set_on_insert_applies_only_when_inserting() {
    let u = Update::parse(&json!({"$setOnInsert": {"b": 1}, "$set": {"a": 2}}), "update").unwrap();
    assert_eq!(u.apply(&json!({}), true, "2026-12-02T10:00:00Z").unwrap(), json!({"a": 2, "b": 1}));
}

/// `projection | result` over one document.
#[test]
fn projection_table() {
    let doc = json!({"_id": "1", "name": "n", "price": 5, "spec": {"ram": 8, "cpu": "x"},
                     "items": [{"a": 1, "b": 2}, 3, {"a": 4}]});
    let cases = [
        (json!(["name", "price"]), json!({"name": "n", "price": 5})),
        (json!(["_id", "name"]), json!({"_id": "1", "name": "n"})),
        (json!({"name": 1}), json!({"_id": "1", "name": "n"})),
        (json!({"name": 1, "_id": 0}), json!({"name": "n"})),
        (json!({"spec.ram": 1}), json!({"_id": "1", "spec": {"ram": 8}})),
        (json!({"items.a": 1, "_id": 0}), json!({"items": [{"a": 1}, {"a": 4}]})),
        (json!({"spec": 0, "items": 0}), json!({"_id": "1", "name": "n", "price": 5})),
        (json!({"spec.cpu": 0, "items": 0, "_id": 0}), json!({"name": "n", "price": 5, "spec": {"ram": 8}})),
        (
            json!({"_id": 0}),
            json!({"name": "n", "price": 5, "spec": {"ram": 8, "cpu": "x"},
                                    "items": [{"a": 1, "b": 2}, 3, {"a": 4}]}),
        ),
        (json!({"missing": 1}), json!({"_id": "1"})),
    ];
    for (spec, want) in cases {
        let p = Projection::parse(&spec, "projection").unwrap().unwrap();
        assert_eq!(p.apply(doc.clone()), want, "{spec}");
    }
    assert!(Projection::parse(&json!({"a": 1, "b": 0}), "projection").is_err());
    assert!(Projection::parse(&json!({"$a": 1}), "projection").is_err());
}

/// `pipeline | result` over the `products` dataset.
const PIPELINES: &str = r#"
[{"$match":{"category":"furniture"}},{"$count":"n"}] | [{"n":3}]
[{"$match":{"_id":"none"}},{"$count":"n"}] | []
[{"$group":{"_id":"$category","n":{"$sum":1}}},{"$sort":{"n":-1,"_id":1}}] | [{"_id":"electronics","n":4},{"_id":"furniture","n":3},{"_id":["electronics","accessory"],"n":1}]
[{"$match":{"category":"furniture"}},{"$group":{"_id":null,"total":{"$sum":"$price"},"avg":{"$avg":"$price"},"min":{"$min":"$price"},"max":{"$max":"$price"}}}] | [{"_id":null,"total":225.5,"avg":112.75,"min":75.5,"max":"unknown"}]
[{"$match":{"category":"furniture"}},{"$sort":{"_id":1}},{"$group":{"_id":"$category","first":{"$first":"$name"},"last":{"$last":"$name"},"names":{"$push":"$name"},"c":{"$count":{}}}}] | [{"_id":"furniture","first":"Desk","last":"lamp","names":["Desk","Chair","lamp"],"c":3}]
[{"$unwind":"$tags"},{"$group":{"_id":"$tags","n":{"$sum":1}}},{"$sort":{"n":-1,"_id":1}},{"$limit":2}] | [{"_id":"computer","n":3},{"_id":"accessory","n":1}]
[{"$unwind":{"path":"$tags","preserveNullAndEmptyArrays":true}},{"$match":{"_id":{"$in":["p3","p6"]}}},{"$project":{"tags":1}}] | [{"_id":"p3"},{"_id":"p6"}]
[{"$match":{"_id":"p1"}},{"$unwind":{"path":"$tags","includeArrayIndex":"i"}},{"$project":{"_id":0,"tags":1,"i":1}}] | [{"tags":"computer","i":0},{"tags":"portable","i":1}]
[{"$match":{"_id":"p2"}},{"$project":{"name":1,"double":{"$multiply":["$price",2]},"label":{"$concat":["$name","!"]}}}] | [{"_id":"p2","name":"Phone","double":598,"label":"Phone!"}]
[{"$match":{"_id":"p2"}},{"$addFields":{"cheap":{"$lt":["$price",500]},"ram":"$specs.ram"}},{"$project":{"_id":0,"cheap":1,"ram":1}}] | [{"cheap":true,"ram":8}]
[{"$sort":{"price":-1}},{"$skip":1},{"$limit":2},{"$project":{"_id":1}}] | [{"_id":"p6"},{"_id":"p1"}]
[{"$match":{"stock":{"$gt":0}}},{"$group":{"_id":"$category","avg":{"$avg":"$stock"},"set":{"$addToSet":"$specs.ram"}}},{"$sort":{"_id":1}}] | [{"_id":["electronics","accessory"],"avg":50.0,"set":[]},{"_id":"electronics","avg":69.33333333333333,"set":[16,2]},{"_id":"furniture","avg":21.0,"set":[]}]
[{"$group":{"_id":{"c":"$category","d":"$discontinued"},"n":{"$sum":1}}},{"$match":{"_id.d":true}}] | [{"_id":{"c":"furniture","d":true},"n":1}]
[{"$match":{"_id":"p4"}},{"$project":{"x":{"$cond":["$discontinued","gone","here"]},"_id":0}}] | [{"x":"gone"}]
[{"$match":{"_id":"p7"}},{"$project":{"s":{"$ifNull":["$stock","none"]},"_id":0}}] | [{"s":"none"}]
[{"$match":{"_id":"p1"}},{"$project":{"n":{"$size":"$tags"},"u":{"$toUpper":"$name"},"_id":0}}] | [{"n":2,"u":"LAPTOP PRO"}]
[{"$group":{"_id":null,"n":{"$sum":"$stock"}}}] | [{"_id":null,"n":300}]
[{"$match":{"price":{"$type":"number"}}},{"$group":{"_id":null,"total":{"$sum":"$price"}}}] | [{"_id":null,"total":2259.48}]
[{"$group":{"_id":"$stock","n":{"$sum":1}}},{"$match":{"_id":null}}] | [{"_id":null,"n":1}]
[{"$project":{"spec":0,"tags":0,"name":0,"category":0,"price":0,"stock":0,"specs":0,"discontinued":0}},{"$limit":1}] | [{"_id":"p1"}]
"#;

#[test]
fn pipeline_table() {
    let mut failures = Vec::new();
    for line in PIPELINES.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (p, want) = line.split_once(" | ").unwrap();
        let specs: Vec<super::ordered::StageSpec> = serde_json::from_str(p).unwrap();
        let stages = parse_pipeline(&specs, "pipeline").unwrap_or_else(|e| panic!("{p}: {e}"));
        let mut docs = docs_of("products");
        for s in &stages {
            docs = run_stage(s, docs);
        }
        let want: Value = serde_json::from_str(want).unwrap();
        if Value::Array(docs.clone()) != want {
            failures.push(format!("{p}:\n  want {want}\n  got  {}", Value::Array(docs)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Bad input is refused, naming its place.
#[test]
fn errors_name_their_place() {
    let cases = [
        (json!({"x": {"$foo": 1}}), "filter.x.$foo"),
        (json!({"$where": "this.x == 1"}), "filter.$where"),
        (json!({"x": {"$where": "1"}}), "filter.x.$where"),
        (json!({"$foo": []}), "filter.$foo"),
        (json!({"a.$b": 1}), "filter.a.$b"),
        (json!({"a\u{0}b": 1}), "filter.a\u{0}b"),
        (json!({"a..b": 1}), "filter.a..b"),
        (json!({"$and": {}}), "filter.$and"),
        (json!({"$or": []}), "filter.$or"),
        (json!({"$or": [{"x": {"$bad": 1}}]}), "filter.$or[0].x.$bad"),
        (json!({"x": {"$in": 1}}), "filter.x.$in"),
        (json!({"x": {"$size": -1}}), "filter.x.$size"),
        (json!({"x": {"$size": "a"}}), "filter.x.$size"),
        (json!({"x": {"$mod": [0, 1]}}), "filter.x.$mod"),
        (json!({"x": {"$mod": [1]}}), "filter.x.$mod"),
        (json!({"x": {"$regex": "("}}), "filter.x.$regex"),
        (json!({"x": {"$regex": "a", "$options": "q"}}), "filter.x.$regex"),
        (json!({"x": {"$options": "i"}}), "filter.x.$options"),
        (json!({"x": {"$type": "nope"}}), "filter.x.$type"),
        (json!({"x": {"$not": 5}}), "filter.x.$not"),
        (json!({"x": {"$elemMatch": 1}}), "filter.x.$elemMatch"),
        (json!({"x": {"$eq": {"$where": "1"}}}), "filter.x.$eq"),
        (json!({"x": {"$expr": {}}}), "filter.x.$expr"),
        (json!([1]), "filter"),
        (json!({"x": {"$all": 1}}), "filter.x.$all"),
    ];
    for (filter, place) in cases {
        let e = Filter::parse(&filter, "filter").expect_err(&filter.to_string());
        assert_eq!(e.place, place, "{filter}: {e}");
    }
    let mut deep = json!({"x": 1});
    for _ in 0..100 {
        deep = json!({"$and": [deep]});
    }
    assert!(Filter::parse(&deep, "filter").is_err(), "deep nesting is refused, not a stack overflow");
    for (p, place) in [
        (json!([{"$bogus": {}}]), "pipeline[0].$bogus"),
        (json!([{"$group": {"n": {"$sum": 1}}}]), "pipeline[0].$group"),
        (json!([{"$group": {"_id": null, "n": {"$median": 1}}}]), "pipeline[0].$group.n.$median"),
        (json!([{"$limit": -1}]), "pipeline[0].$limit"),
        (json!([{"$match": {"$where": "1"}}]), "pipeline[0].$match.$where"),
        (json!([{"$project": {"a": {"$function": {}}}}]), "pipeline[0].$project.a.$function"),
        (json!([{"$unwind": "tags"}]), "pipeline[0].$unwind"),
        (json!([{"$lookup": {"from": "x"}}]), "pipeline[0].$lookup.localField"),
    ] {
        let specs: Vec<super::ordered::StageSpec> = serde_json::from_value(p.clone()).unwrap();
        let e = parse_pipeline(&specs, "pipeline").expect_err(&p.to_string());
        assert_eq!(e.place, place, "{p}: {e}");
    }
}
