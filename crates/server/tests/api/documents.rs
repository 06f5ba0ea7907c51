//! The document database over HTTP: the seed's examples verbatim, every route, bulk
//! atomicity, unique indexes, per-collection permissions, events and bad input; on SQLite and
//! (with `NEXUS_TEST_POSTGRES_URL`) PostgreSQL.

use nexus_testkit::reqwest::{Method, StatusCode};
use nexus_testkit::{Reply, TestServer, backends, json};
use serde_json::Value;

async fn seed_products(s: &TestServer, token: &str) {
    let r = s
        .post_as(
            token,
            "/api/database/query",
            json!({"collection": "products", "operation": "insert_many", "documents": [
                {"_id": "p1", "name": "Laptop Pro", "category": "electronics", "price": 499.99, "description": "High-performance laptop", "tags": ["computer"]},
                {"_id": "p2", "name": "Phone", "category": "electronics", "price": 299, "description": "Smart phone"},
                {"_id": "p3", "name": "TV", "category": "electronics", "price": 1200, "description": "Big"},
                {"_id": "p4", "name": "Desk", "category": "furniture", "price": 150, "description": "Oak"},
                {"_id": "p5", "name": "Cable", "category": "electronics", "price": 9.99, "description": "USB"},
                {"_id": "p6", "name": "Mouse", "category": ["electronics", "accessory"], "price": 100, "description": "Wireless"}
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["count"], 6);
}

/// `insert_many` of `docs` into `collection`.
async fn insert_many(s: &TestServer, token: &str, collection: &str, docs: Vec<Value>) -> Reply {
    let body = json!({"collection": collection, "operation": "insert_many", "documents": docs});
    s.post_as(token, "/api/database/query", body).await
}

fn names(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().map(|d| d["name"].as_str().unwrap_or_default().to_string()).collect()
}

#[tokio::test]
async fn seed_query_example_returns_the_seeds_shape() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let token = s.admin_token().await;
        seed_products(&s, &token).await;
        let r = s
            .post_as(
                &token,
                "/api/database/query",
                json!({
                  "collection": "products",
                  "operation": "find",
                  "filter": {"category": "electronics", "price": {"$gte": 100, "$lte": 500}},
                  "projection": ["name", "price", "description"],
                  "sort": {"price": -1},
                  "limit": 10
                }),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?} {}", r.text);
        assert_eq!(r.json["count"], 3);
        assert!(r.json["execution_time_ms"].is_number());
        assert_eq!(
            r.json["data"][0],
            json!({"name": "Laptop Pro", "price": 499.99, "description": "High-performance laptop"})
        );
        assert_eq!(names(&r.json["data"]), ["Laptop Pro", "Phone", "Mouse"], "{backend:?}");

        // count, distinct, find_one, explain
        let r = s
            .post_as(
                &token,
                "/api/database/query",
                json!({"collection": "products", "operation": "count", "filter": {"category": "electronics"}}),
            )
            .await;
        assert_eq!(r.json["count"], 5, "{}", r.text);
        let r = s
            .post_as(
                &token,
                "/api/database/query",
                json!({"collection": "products", "operation": "distinct", "field": "category"}),
            )
            .await;
        assert_eq!(r.json["data"], json!(["accessory", "electronics", "furniture"]), "{}", r.text);
        let r = s
            .post_as(
                &token,
                "/api/database/query",
                json!({"collection": "products", "operation": "find_one", "filter": {"_id": "p4"}}),
            )
            .await;
        assert_eq!(r.json["data"]["name"], "Desk");
        let r = s
            .post_as(
                &token,
                "/api/database/query",
                json!({"collection": "products", "operation": "explain",
            "filter": {"category": "electronics", "name": {"$regex": "^L"}}, "sort": {"price": 1}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["plan"]["filter"], "sql (superset) + engine", "{}", r.text);
        assert_eq!(r.json["plan"]["sort"], "engine");
    }
}

#[tokio::test]
async fn updates_deletes_and_aggregation() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let token = s.admin_token().await;
        seed_products(&s, &token).await;
        let q = |body: Value| {
            let (s, token) = (&s, &token);
            async move { s.post_as(token, "/api/database/query", body).await }
        };
        let r = q(json!({"collection": "products", "operation": "update_many", "filter": {"category": "electronics"}, "update": {"$inc": {"price": 1}, "$push": {"tags": "sale"}}})).await;
        assert_eq!(
            (r.json["matched_count"].as_i64(), r.json["modified_count"].as_i64()),
            (Some(5), Some(5)),
            "{}",
            r.text
        );
        let r = q(json!({"collection": "products", "operation": "find_one", "filter": {"_id": "p2"}})).await;
        assert_eq!(r.json["data"]["price"], 300);
        assert_eq!(r.json["data"]["tags"], json!(["sale"]));
        let r = q(json!({"collection": "products", "operation": "update_one", "filter": {"_id": "p4"}, "update": {"$inc": {"name": 1}}})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(r.json["error"]["code"], "VALIDATION_ERROR");
        assert_eq!(r.json["error"]["details"][0]["field"], "update.$inc.name", "{}", r.text);
        let r = q(json!({"collection": "products", "operation": "update_one", "filter": {"_id": "new"}, "update": {"$set": {"price": 5}}, "upsert": true})).await;
        assert_eq!(r.json["upserted_id"], "new", "{}", r.text);
        let r = q(json!({"collection": "products", "operation": "replace_one", "filter": {"_id": "new"}, "replacement": {"name": "Replaced"}})).await;
        assert_eq!(r.json["modified_count"], 1, "{}", r.text);
        let r = q(json!({"collection": "products", "operation": "aggregate", "pipeline": [
            {"$match": {"price": {"$gt": 0}}},
            {"$group": {"_id": "$category", "total": {"$sum": "$price"}, "avg": {"$avg": "$price"}, "n": {"$sum": 1}}},
            {"$sort": {"n": -1}}
        ]}))
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["data"][0]["_id"], "electronics", "{}", r.text);
        assert_eq!(r.json["data"][0]["n"], 4);
        let total = r.json["data"][0]["total"].as_f64().unwrap_or_default();
        assert!((total - (500.99 + 300.0 + 1201.0 + 10.99)).abs() < 1e-6, "{total}");
        let r = q(json!({"collection": "orders", "operation": "insert_many", "documents": [
            {"_id": "o1", "product": "p1", "qty": 2}, {"_id": "o2", "product": "p4", "qty": 1}]}))
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let r = q(json!({"collection": "orders", "operation": "aggregate", "pipeline": [
            {"$lookup": {"from": "products", "localField": "product", "foreignField": "_id", "as": "item"}},
            {"$unwind": "$item"}, {"$project": {"_id": 1, "name": "$item.name"}}, {"$sort": {"_id": 1}}]}))
        .await;
        assert_eq!(
            r.json["data"],
            json!([{"_id": "o1", "name": "Laptop Pro"}, {"_id": "o2", "name": "Desk"}]),
            "{}",
            r.text
        );
        let r =
            q(json!({"collection": "products", "operation": "delete_many", "filter": {"price": {"$lt": 20}}})).await;
        assert_eq!(r.json["deleted_count"], 1, "{}", r.text);
    }
}

#[tokio::test]
async fn bulk_is_all_or_nothing() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let token = s.admin_token().await;
        let r = s.post_as(&token, "/api/database/query", json!({"collection": "products", "operation": "insert_many", "documents": [
            {"_id": "507f1f77bcf86cd799439011", "name": "Old", "price": 300}, {"_id": "507f1f77bcf86cd799439012", "name": "Gone"}]})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        // The seed's request, verbatim.
        let r = s.post_as(&token, "/api/database/bulk", json!({
          "collection": "products",
          "operations": [
            {"type": "insert", "document": {"name": "New Product", "price": 299.99}},
            {"type": "update", "filter": {"_id": "507f1f77bcf86cd799439011"}, "update": {"$set": {"price": 249.99}}},
            {"type": "delete", "filter": {"_id": "507f1f77bcf86cd799439012"}}
          ]
        })).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(
            r.json,
            json!({"success": true, "results": {"inserted": 1, "updated": 1, "deleted": 1}, "errors": []})
        );
        // A failing second operation writes nothing at all.
        let r = s
            .post_as(
                &token,
                "/api/database/bulk",
                json!({"collection": "products", "operations": [
                    {"type": "insert", "document": {"_id": "x1", "name": "Should vanish"}},
                    {"type": "update", "filter": {"_id": "507f1f77bcf86cd799439011"}, "update": {"$inc": {"name": 1}}}
                ]}),
            )
            .await;
        assert_eq!(r.json["success"], false, "{}", r.text);
        assert_eq!(r.json["errors"][0]["index"], 1);
        let r = s
            .post_as(
                &token,
                "/api/database/query",
                json!({"collection": "products", "operation": "count", "filter": {"_id": "x1"}}),
            )
            .await;
        assert_eq!(r.json["count"], 0, "nothing of a failed bulk is written");
    }
}

#[tokio::test]
async fn rest_routes_and_seed_list_examples() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let token = s.admin_token().await;
        seed_products(&s, &token).await;
        let r = s
            .get_as(
                &token,
                "/api/products?filter[category]=electronics&filter[price][$gte]=100&filter[price][$lte]=500",
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let mut got = names(&r.json["data"]);
        got.sort();
        assert_eq!(got, ["Laptop Pro", "Mouse", "Phone"]);
        assert_eq!(r.json["pagination"]["total"], 3);
        let r = s.get_as(&token, "/api/products?sort=-price,name&limit=2&page=2&fields=name,price").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(
            r.json["data"],
            json!([{"name": "Phone", "price": 299}, {"name": "Desk", "price": 150}]),
            "{}",
            r.text
        );
        assert_eq!(r.json["pagination"]["has_prev"], true);
        let r = s.post_as(&token, "/api/products", json!({"name": "New Product", "price": 99.99})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let id = r.json["id"].as_str().unwrap_or_default().to_string();
        assert_eq!(id.len(), 24);
        assert_eq!(r.json["name"], "New Product");
        let r = s
            .call_as(
                &token,
                Method::PATCH,
                &format!("/api/collections/products/documents/{id}"),
                Some(json!({"price": 89})),
            )
            .await;
        assert_eq!(r.json["price"], 89, "{}", r.text);
        let r = s.call_as(&token, Method::PUT, &format!("/api/products/{id}"), Some(json!({"name": "Replaced"}))).await;
        assert_eq!(r.json, json!({"_id": id, "name": "Replaced"}), "{}", r.text);
        let r = s.get_as(&token, "/api/collections/products/documents?filter[name]=Replaced").await;
        assert_eq!(r.json["pagination"]["total"], 1, "{}", r.text);
        let r = s.call_as(&token, Method::DELETE, &format!("/api/collections/products/documents/{id}"), None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        let r = s.get_as(&token, &format!("/api/products/{id}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.json["error"]["code"], "RESOURCE_NOT_FOUND");
        // Unknown collections are 404 before credentials, as unknown paths were.
        let r = s.get("/api/nothing-here").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = s.get("/api/products").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        // Routes other plugins own keep answering as before.
        let r = s.get_as(&token, "/api/users").await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.json["pagination"]["total"].as_i64() >= Some(1), "{}", r.text);

        // The seed's batch example.
        let r = s.post_as(&token, "/api/orders", json!({"_id": "456", "total": 10})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let r = s.post_as(&token, "/api/batch", json!({"requests": [
            {"id": "req2", "method": "POST", "url": "/api/products", "body": {"name": "New Product", "price": 99.99}},
            {"id": "req3", "method": "DELETE", "url": "/api/orders/456"}
        ]})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["responses"][0]["status"], 201, "{}", r.text);
        assert_eq!(r.json["responses"][0]["body"]["name"], "New Product");
        assert!(r.json["responses"][0]["body"]["id"].is_string());
        assert_eq!(r.json["responses"][1]["status"], 204, "{}", r.text);
    }
}

#[tokio::test]
async fn collections_indexes_and_unique_conflicts() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let token = s.admin_token().await;
        let r = s.post_as(&token, "/api/database/collections", json!({
            "name": "items",
            "schema": {"type": "object", "required": ["sku"], "properties": {"sku": {"type": "string"}, "price": {"type": ["number", "array"], "minimum": 0}}},
            "indexes": [{"keys": {"sku": 1}, "unique": true}]
        })).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["indexes"][1]["unique"], true, "{}", r.text);
        let r = s.post_as(&token, "/api/database/collections", json!({"name": "items"})).await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        let r = s.post_as(&token, "/api/items", json!({"sku": "a", "price": 1})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let r = s.post_as(&token, "/api/items", json!({"sku": "a", "price": 2})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
        assert_eq!(r.json["error"]["code"], "CONFLICT");
        // Within a large batch (written many rows to a statement), a unique key taken by a
        // stored document or repeated inside the batch is named by its place, and nothing of
        // the batch stays.
        for (clash, at) in [("a", 317), ("s-40", 333)] {
            let docs: Vec<Value> = (0..450)
                .map(|i| json!({"sku": if i == at { clash.to_string() } else { format!("s-{i}") }, "price": i}))
                .collect();
            let r = insert_many(&s, &token, "items", docs).await;
            assert_eq!(r.status, StatusCode::CONFLICT, "{backend:?} {}", r.text);
            assert!(
                r.json["error"]["message"].as_str().unwrap_or_default().contains(&format!("documents[{at}]")),
                "{}",
                r.text
            );
            let n =
                s.post_as(&token, "/api/database/query", json!({"collection": "items", "operation": "count"})).await;
            assert_eq!(n.json["count"], 1, "{backend:?} {}", n.text);
        }
        let r = s.post_as(&token, "/api/items", json!({"price": 2})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(r.json["error"]["details"][0]["field"], "document.sku");
        let r = s.post_as(&token, "/api/items", json!({"sku": "b", "price": -1})).await;
        assert_eq!(r.json["error"]["details"][0]["field"], "document.price", "{}", r.text);
        let r = s.post_as(&token, "/api/database/collections/items/indexes", json!({"keys": {"price": 1}})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let r = s.get_as(&token, "/api/database/collections/items").await;
        assert_eq!(r.json["count"], 1, "{}", r.text);
        assert_eq!(r.json["indexes"].as_array().map(Vec::len), Some(3));
        let r = s.get_as(&token, "/api/database/collections").await;
        assert!(r.json["data"].as_array().is_some_and(|a| a.iter().any(|c| c["name"] == "items")), "{}", r.text);
        // The indexed query uses the expression index (the database's own plan).
        let r = s
            .post_as(
                &token,
                "/api/database/query",
                json!({"collection": "items", "operation": "explain", "filter": {"price": {"$gte": 1}}}),
            )
            .await;
        let plan = r.json["plan"]["query_plan"].to_string();
        assert!(plan.contains("dx_items_price_1") || backend == nexus_testkit::Backend::Postgres, "{plan}");
        assert_eq!(r.json["plan"]["filter"], "sql");
        // An array on the indexed path turns the index multikey; answers stay right.
        let r = s.post_as(&token, "/api/items", json!({"sku": "c", "price": [0.5, 7]})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let r = s
            .post_as(
                &token,
                "/api/database/query",
                json!({"collection": "items", "operation": "find", "filter": {"price": {"$gte": 5}}}),
            )
            .await;
        assert_eq!(r.json["count"], 1, "{}", r.text);
        assert_eq!(r.json["data"][0]["sku"], "c");
        let r = s.post_as(&token, "/api/database/query", json!({"collection": "items", "operation": "find", "filter": {"price": {"$lt": 1}}, "sort": {"price": 1}})).await;
        assert_eq!(r.json["count"], 1, "{}", r.text);
        let r = s.call_as(&token, Method::DELETE, "/api/database/collections/items", None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        let r = s.get_as(&token, "/api/database/collections/items").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn bad_input_is_a_validation_error_naming_the_place() {
    let s = TestServer::start().await;
    let token = s.admin_token().await;
    let cases = [
        (json!({"collection": "p", "operation": "find", "filter": {"$where": "sleep(1000)"}}), "filter.$where"),
        (json!({"collection": "p", "operation": "find", "filter": {"price": {"$foo": 1}}}), "filter.price.$foo"),
        (json!({"collection": "p", "operation": "find", "filter": {"a.$b": 1}}), "filter.a.$b"),
        (json!({"collection": "p", "operation": "find", "filter": {"a\u{0}": 1}}), "filter.a\u{0}"),
        (json!({"collection": "p", "operation": "find", "sort": {"x": 2}}), "sort.x"),
        (json!({"collection": "p", "operation": "nope"}), "operation"),
        (json!({"collection": "p; DROP TABLE documents", "operation": "find"}), "collection"),
        (json!({"collection": "p", "operation": "insert_one", "document": {"$set": 1}}), "document.$set"),
        (
            json!({"collection": "p", "operation": "aggregate", "pipeline": [{"$group": {"_id": null, "x": {"$median": "$a"}}}]}),
            "pipeline[0].$group.x.$median",
        ),
    ];
    for (body, place) in cases {
        let r = s.post_as(&token, "/api/database/query", body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert_eq!(r.json["error"]["code"], "VALIDATION_ERROR");
        assert_eq!(r.json["error"]["details"][0]["field"], place, "{body}: {}", r.text);
    }
    let big = "x".repeat(1024 * 1024 + 10);
    let r = s
        .post_as(
            &token,
            "/api/database/query",
            json!({"collection": "p", "operation": "insert_one", "document": {"big": big}}),
        )
        .await;
    assert!(r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::PAYLOAD_TOO_LARGE, "{}", r.status);
    let r = s.get_as(&token, "/api/collections/products/documents?filter[price][$bogus]=1").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
}

#[tokio::test]
async fn permissions_per_collection_and_events() {
    let s = TestServer::start_with(nexus_testkit::Backend::Sqlite, |c| {
        c.auth
            .roles
            .insert("catalog".into(), vec!["documents.read:products".into(), "documents.write:products".into()]);
    })
    .await;
    let admin = s.admin_token().await;
    let mut events = s.kernel().events.subscribe();
    seed_products(&s, &admin).await;
    let r = s.post_as(&admin, "/api/secretstuff", json!({"_id": "s1", "v": 1})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let catalog = s.user_token("catalog1", &["catalog"]).await;
    let r = s.get_as(&catalog, "/api/products").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = s.get_as(&catalog, "/api/secretstuff").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = s.post_as(&catalog, "/api/database/query", json!({"collection": "secretstuff", "operation": "find"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = s.post_as(&catalog, "/api/database/collections", json!({"name": "products2"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "creating collections needs documents.admin");
    let viewer = s.user_token("viewer1", &["viewer"]).await;
    let r = s.post_as(&viewer, "/api/products", json!({"name": "x"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = s.get_as(&viewer, "/api/products/p1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // The events come from the outbox, written in each change's transaction.
    let mut kinds = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while kinds.len() < 7 {
        let e = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("only these document events arrived: {kinds:?}"))
            .unwrap_or_else(|e| panic!("{e}"));
        if e.kind.starts_with("document.") {
            assert!(e.durable, "{} was not written to the outbox", e.kind);
            kinds.push((
                e.kind.clone(),
                e.data["collection"].as_str().unwrap_or_default().to_string(),
                e.data["id"].clone(),
            ));
        }
    }
    assert_eq!(kinds[0], ("document.inserted".to_string(), "products".to_string(), json!("p1")));
    let r = s.call_as(&admin, Method::DELETE, "/api/products/p1", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    // Events of earlier changes that the outbox relays after their commit (logins) may come first.
    let e = loop {
        let e = events.recv().await.unwrap_or_else(|e| panic!("{e}"));
        if e.kind.starts_with("document.") {
            break e;
        }
    };
    assert_eq!((e.kind.as_str(), &e.data["id"]), ("document.deleted", &json!("p1")));
}

/// The next WebSocket message of `kind`.
async fn ws_next(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    kind: &str,
) -> Value {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind} within 10 s"))
            .unwrap_or_else(|| panic!("the socket closed"))
            .unwrap_or_else(|e| panic!("{e}"));
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
            if v["type"] == kind {
                return v;
            }
        }
    }
}

#[tokio::test]
async fn websocket_rpc_runs_the_same_operations_with_the_same_permissions() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let s = TestServer::start_with(nexus_testkit::Backend::Sqlite, |c| {
        c.auth.roles.insert("catalog".into(), vec!["documents.read:products".into()]);
    })
    .await;
    let admin = s.admin_token().await;
    let url = s.url("/ws").replacen("http://", "ws://", 1);
    let rpc = |id: &str, method: &str, params: Value| {
        Message::text(json!({ "type": "rpc", "id": id, "method": method, "params": params }).to_string())
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap_or_else(|e| panic!("{e}"));
    let auth = |token: &str| Message::text(json!({ "type": "auth", "token": token }).to_string());
    ws.send(auth(&admin)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ws_next(&mut ws, "auth_success").await["type"], "auth_success");

    let doc = json!({ "collection": "products", "document": { "_id": "r1", "name": "Lamp", "price": 20 } });
    ws.send(rpc("1", "documents.insert_one", doc)).await.unwrap_or_else(|e| panic!("{e}"));
    let r = ws_next(&mut ws, "rpc_response").await;
    assert_eq!(r["result"]["inserted_id"], "r1", "{r}");
    let find = json!({ "collection": "products", "filter": { "price": { "$lt": 50 } } });
    ws.send(rpc("2", "documents.find", find.clone())).await.unwrap_or_else(|e| panic!("{e}"));
    let r = ws_next(&mut ws, "rpc_response").await;
    assert_eq!(r["result"]["data"][0]["name"], "Lamp", "{r}");
    // The same validation as HTTP, in the RPC's error shape.
    ws.send(rpc("3", "documents.find", json!({ "collection": "products", "filter": { "$where": "1" } })))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let r = ws_next(&mut ws, "rpc_response").await;
    assert_eq!(r["error"]["code"], "VALIDATION_ERROR", "{r}");

    // A role that may only read `products`: reads there, refused writes and other collections.
    let catalog = s.user_token("catalog2", &["catalog"]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap_or_else(|e| panic!("{e}"));
    ws.send(auth(&catalog)).await.unwrap_or_else(|e| panic!("{e}"));
    ws_next(&mut ws, "auth_success").await;
    ws.send(rpc("4", "documents.count", json!({ "collection": "products" }))).await.unwrap_or_else(|e| panic!("{e}"));
    let r = ws_next(&mut ws, "rpc_response").await;
    assert_eq!(r["result"]["count"], 1, "{r}");
    ws.send(rpc("5", "documents.delete_many", json!({ "collection": "products" })))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let r = ws_next(&mut ws, "rpc_response").await;
    assert_eq!(r["error"]["code"], "PERMISSION_DENIED", "{r}");
    ws.send(rpc("6", "documents.find", json!({ "collection": "orders" }))).await.unwrap_or_else(|e| panic!("{e}"));
    let r = ws_next(&mut ws, "rpc_response").await;
    assert_eq!(r["error"]["code"], "PERMISSION_DENIED", "{r}");
}

#[tokio::test]
async fn the_documents_channel_filters_by_collection() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let url = s.url("/ws").replacen("http://", "ws://", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap_or_else(|e| panic!("{e}"));
    let send = |v: Value| Message::text(v.to_string());
    ws.send(send(json!({ "type": "auth", "token": admin }))).await.unwrap_or_else(|e| panic!("{e}"));
    ws_next(&mut ws, "auth_success").await;
    ws.send(send(json!({ "type": "subscribe", "channel": "documents", "filters": { "collections": ["products"] } })))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    ws_next(&mut ws, "subscribed").await;
    for (collection, id) in [("orders", "o1"), ("products", "p1")] {
        let r = s
            .post_as(
                &admin,
                "/api/database/query",
                json!({ "collection": collection, "operation": "insert_one",
                "document": { "_id": id } }),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    // The orders event came first; the first one delivered is the products one.
    let e = ws_next(&mut ws, "event").await;
    assert_eq!(e["data"]["payload"]["collection"], "products", "{e}");
    assert_eq!(e["data"]["payload"]["id"], "p1", "{e}");

    // A query narrows the channel to the changes whose document matches it, evaluated on each
    // event: the cheap insert and the update that leaves the price low are not delivered; the
    // update that raises it is, and so is the marker after it.
    ws.send(send(json!({ "type": "unsubscribe", "channel": "documents" }))).await.unwrap_or_else(|e| panic!("{e}"));
    ws_next(&mut ws, "unsubscribed").await;
    let sub = json!({ "type": "subscribe", "channel": "documents",
        "filters": { "collections": ["products"], "query": { "$or": [{ "price": { "$gt": 100 } }, { "_id": "marker" }] } } });
    ws.send(send(sub)).await.unwrap_or_else(|e| panic!("{e}"));
    let ack = ws_next(&mut ws, "subscribed").await;
    assert_eq!(ack["filters"]["query"]["$or"][0]["price"]["$gt"], 100, "{ack}");
    let steps = [
        json!({ "operation": "insert_one", "document": { "_id": "cheap", "price": 5 } }),
        json!({ "operation": "update_one", "filter": { "_id": "cheap" }, "update": { "$inc": { "price": 1 } } }),
        json!({ "operation": "update_one", "filter": { "_id": "cheap" }, "update": { "$set": { "price": 500 } } }),
        json!({ "operation": "insert_one", "document": { "_id": "marker" } }),
    ];
    for mut step in steps {
        step["collection"] = json!("products");
        let r = s.post_as(&admin, "/api/database/query", step).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let e = ws_next(&mut ws, "event").await;
    assert_eq!(e["data"]["type"], "document.updated", "{e}");
    assert_eq!(e["data"]["payload"]["document"]["price"], 500, "{e}");
    let e = ws_next(&mut ws, "event").await;
    assert_eq!(e["data"]["payload"]["id"], "marker", "{e}");

    // A bad query, or one on a channel without a query language, is refused.
    for (channel, query) in [("documents", json!({ "price": { "$where": "1" } })), ("user_events", json!({ "a": 1 }))] {
        let sub = json!({ "type": "subscribe", "channel": channel, "filters": { "query": query } });
        ws.send(send(sub)).await.unwrap_or_else(|e| panic!("{e}"));
        let e = ws_next(&mut ws, "error").await;
        assert_eq!(e["code"], "VALIDATION_ERROR", "{e}");
    }
}

/// Walks a cursor list from its first page to its end: the ids in order, and the cursors.
async fn walk(s: &TestServer, token: &str, path: &str) -> (Vec<String>, Vec<Value>) {
    let (mut ids, mut pages) = (Vec::new(), Vec::new());
    let mut url = format!("{path}&cursor=");
    for _ in 0..50 {
        let r = s.get_as(token, &url).await;
        assert_eq!(r.status, StatusCode::OK, "{url}: {}", r.text);
        ids.extend(
            r.json["data"].as_array().into_iter().flatten().map(|d| d["_id"].as_str().unwrap_or_default().to_string()),
        );
        pages.push(r.json["pagination"].clone());
        match r.json["pagination"]["next_cursor"].as_str() {
            Some(next) => url = format!("{path}&cursor={next}"),
            None => return (ids, pages),
        }
    }
    panic!("{path}: no end after 50 pages");
}

#[tokio::test]
async fn cursor_pages_follow_the_sort_over_mixed_types_and_survive_changes() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let token = s.admin_token().await;
        // Prices of every type bracket, missing and arrays (which sort by their least element
        // ascending, their greatest descending), with ties broken by `_id`.
        let mut docs = Vec::new();
        for i in 0..23 {
            let price = match i % 6 {
                0 => json!(i),
                1 => json!(format!("s{}", i % 4)),
                2 => Value::Null,
                3 => json!([i, 100 - i]),
                4 => json!(f64::from(i) / 2.0),
                _ => json!(true),
            };
            let mut d = json!({"_id": format!("d{i:02}"), "kind": if i % 2 == 0 { "even" } else { "odd" }});
            if i % 7 != 5 {
                d["price"] = price;
            }
            docs.push(d);
        }
        let r = insert_many(&s, &token, "mixed", docs).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);

        for query in ["sort=-price", "sort=price,-kind", "filter[kind]=even&sort=price", "filter[kind]=odd"] {
            let all = s.get_as(&token, &format!("/api/mixed?{query}&limit=100")).await;
            assert_eq!(all.status, StatusCode::OK, "{}", all.text);
            let expected: Vec<String> = all.json["data"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| d["_id"].as_str().unwrap_or_default().to_string())
                .collect();
            let (ids, pages) = walk(&s, &token, &format!("/api/mixed?{query}&limit=4")).await;
            assert_eq!(ids, expected, "{backend:?} {query}");
            assert_eq!(pages[0]["prev_cursor"], Value::Null);
            assert_eq!(pages[0]["cursor"], Value::Null);
            assert_eq!(pages.last().map(|p| p["has_more"].clone()), Some(json!(false)));

            // The second page's prev_cursor leads back to the first page.
            if let Some(prev) = pages.get(1).and_then(|p| p["prev_cursor"].as_str()) {
                let r = s.get_as(&token, &format!("/api/mixed?{query}&limit=4&cursor={prev}")).await;
                let back: Vec<&str> =
                    r.json["data"].as_array().into_iter().flatten().filter_map(|d| d["_id"].as_str()).collect();
                assert_eq!(
                    back,
                    expected.iter().take(4).map(String::as_str).collect::<Vec<_>>(),
                    "{backend:?} {query}"
                );
                assert_eq!(r.json["pagination"]["prev_cursor"], Value::Null);
                assert!(r.json["pagination"]["next_cursor"].is_string());
            }
        }

        // A row deleted and one inserted before the position change nothing after it.
        let first = s.get_as(&token, "/api/mixed?sort=price&limit=5&cursor=").await;
        let next = first.json["pagination"]["next_cursor"].as_str().unwrap_or_default().to_string();
        let before: Vec<Value> =
            s.get_as(&token, &format!("/api/mixed?sort=price&limit=5&cursor={next}")).await.json["data"]
                .as_array()
                .cloned()
                .unwrap_or_default();
        let gone = first.json["data"][0]["_id"].as_str().unwrap_or_default().to_string();
        assert_eq!(
            s.call_as(&token, Method::DELETE, &format!("/api/mixed/{gone}"), None).await.status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            s.post_as(&token, "/api/mixed", json!({"_id": "a-new", "price": null})).await.status,
            StatusCode::CREATED
        );
        let after = s.get_as(&token, &format!("/api/mixed?sort=price&limit=5&cursor={next}")).await;
        assert_eq!(after.json["data"].as_array().cloned().unwrap_or_default(), before, "{backend:?}");

        // A cursor belongs to its query; page and cursor exclude each other; forgeries fail.
        for url in [
            format!("/api/mixed?sort=-price&limit=5&cursor={next}"),
            format!("/api/mixed?sort=price&filter[kind]=odd&cursor={next}"),
            format!("/api/collections/mixed/documents?sort=price&cursor={next}x"),
            String::from("/api/mixed?cursor=abc.def"),
            String::from("/api/mixed?cursor=&page=2"),
        ] {
            let r = s.get_as(&token, &url).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}: {}", r.text);
            assert_eq!(r.json["error"]["code"], "VALIDATION_ERROR", "{url}");
        }
    }
}

#[tokio::test]
async fn a_sort_the_filter_pins_to_one_type_reads_the_index_in_order() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let token = s.admin_token().await;
        let r = s
            .post_as(
                &token,
                "/api/database/collections",
                json!({"name": "shop", "indexes": [{"keys": {"cat": 1, "price": 1}}, {"keys": {"name": 1}}]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let mut docs = Vec::new();
        for i in 0..60 {
            // Integers and floats interleave; other types sit outside the range filtered on.
            let price = match i % 4 {
                0 => json!(i),
                1 => json!(f64::from(i) + 0.5),
                2 => json!(format!("p{i}")),
                _ => Value::Null,
            };
            docs.push(json!({"_id": format!("d{i:02}"), "cat": if i % 2 == 0 { "a" } else { "b" }, "price": price, "name": format!("n{:02}", 59 - i)}));
        }
        let r = insert_many(&s, &token, "shop", docs).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let find = |filter: Value, sort: Value| json!({"collection": "shop", "operation": "find", "filter": filter, "sort": sort, "limit": 4, "projection": ["price"]});
        let cases = [
            (
                find(json!({"cat": "b", "price": {"$gte": 10, "$lt": 40}}), json!({"price": -1})),
                json!([37.5, 33.5, 29.5, 25.5]),
            ),
            (find(json!({"cat": "a", "price": {"$gte": 0}}), json!({"price": 1})), json!([0, 4, 8, 12])),
            (find(json!({"name": {"$gt": "n50"}}), json!({"name": 1})), json!([8, Value::Null, "p6", 5.5])),
        ];
        for (query, expected) in cases {
            let r = s.post_as(&token, "/api/database/query", query.clone()).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            let got: Vec<Value> = r.json["data"].as_array().into_iter().flatten().map(|d| d["price"].clone()).collect();
            assert_eq!(Value::Array(got), expected, "{backend:?} {query}");
            let mut explain = query.clone();
            explain["operation"] = json!("explain");
            let r = s.post_as(&token, "/api/database/query", explain).await;
            assert_eq!(r.json["plan"]["sort"], "sql", "{backend:?} {}", r.text);
            if backend == nexus_testkit::Backend::Sqlite {
                // The index, which ends in `_id`, gives the whole order, ties included: no
                // sorter, not even over runs of equal keys.
                let plan = r.json["plan"]["query_plan"].to_string();
                assert!(plan.contains("INDEX dx_shop_") && !plan.contains("TEMP B-TREE"), "{plan}");
            }
        }

        // Equal keys come in `_id` order in the direction of the last key, whether the index
        // or the engine (a sort on a path the filter does not pin) sorted them.
        let docs: Vec<Value> = (0..4).map(|i| json!({"_id": format!("t{i}"), "cat": "t", "price": 7})).collect();
        let r = insert_many(&s, &token, "shop", docs).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        for (filter, dir, expected) in [
            (json!({"cat": "t", "price": {"$gte": 0}}), -1, ["t3", "t2", "t1", "t0"]),
            (json!({"cat": "t", "price": {"$gte": 0}}), 1, ["t0", "t1", "t2", "t3"]),
            (json!({"cat": "t"}), -1, ["t3", "t2", "t1", "t0"]),
        ] {
            let body = json!({"collection": "shop", "operation": "find", "filter": filter, "sort": {"price": dir}});
            let r = s.post_as(&token, "/api/database/query", body).await;
            let ids: Vec<Value> = r.json["data"].as_array().into_iter().flatten().map(|d| d["_id"].clone()).collect();
            assert_eq!(Value::Array(ids), json!(expected), "{backend:?} {filter} {dir}");
        }
    }
}

#[tokio::test]
async fn counts_and_groups_on_plain_indexed_paths_compile_to_the_bare_index() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let token = s.admin_token().await;
        let query = |body: Value| {
            let (s, token) = (&s, &token);
            async move {
                let r = s.post_as(token, "/api/database/query", body).await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.text);
                r.json
            }
        };
        let r = s
            .post_as(
                &token,
                "/api/database/collections",
                json!({"name": "ledger", "indexes": [{"keys": {"cat": 1, "amount": 1}}]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        // Numbers of both kinds, a string, a null and a missing amount; a missing category.
        let docs = json!([
            {"cat": "a", "amount": 1}, {"cat": "a", "amount": 2.5}, {"cat": "a", "amount": "x"},
            {"cat": "b", "amount": 10}, {"cat": "b", "amount": null}, {"cat": "b"},
            {"amount": 4}
        ]);
        query(json!({"collection": "ledger", "operation": "insert_many", "documents": docs})).await;
        let group = json!({"collection": "ledger", "operation": "aggregate", "pipeline": [
            {"$group": {"_id": "$cat", "total": {"$sum": "$amount"}, "avg": {"$avg": "$amount"}, "n": {"$sum": 1}}},
            {"$sort": {"_id": 1}}
        ]});
        let expected = json!([
            {"_id": null, "total": 4, "avg": 4.0, "n": 1},
            {"_id": "a", "total": 3.5, "avg": 1.75, "n": 3},
            {"_id": "b", "total": 10, "avg": 10.0, "n": 3}
        ]);
        let r = query(group.clone()).await;
        assert_eq!(r["data"], expected, "{backend:?}");
        let count = |filter: Value| json!({"collection": "ledger", "operation": "count", "filter": filter});
        for (filter, n) in [
            (json!({"cat": "a"}), 3),
            (json!({"cat": "a", "amount": {"$gte": 1}}), 2),
            (json!({"amount": {"$lt": "y"}}), 1),
            (json!({"amount": {"$lte": 4}}), 3),
            (json!({"amount": null}), 2),
            (json!({"cat": {"$in": ["b", null]}}), 4),
            (json!({"amount": {"$ne": 10}}), 6),
        ] {
            assert_eq!(query(count(filter.clone())).await["count"], n, "{backend:?} {filter}");
        }
        let explain =
            json!({"collection": "ledger", "operation": "explain", "filter": {"cat": "a", "amount": {"$gte": 1}}});
        let plain_sql = query(explain.clone()).await["plan"]["sql"].to_string();
        if backend == nexus_testkit::Backend::Sqlite {
            // No type test reads the documents: the index answers alone.
            assert!(!plain_sql.contains("json_type"), "{plain_sql}");
        }
        // A boolean on the path turns the index's mixed flag on: answers stay right.
        query(json!({"collection": "ledger", "operation": "insert_many", "documents": [
            {"cat": true, "amount": 1}, {"cat": "a", "amount": true}
        ]}))
        .await;
        let mut expected = expected.as_array().cloned().unwrap_or_default();
        expected[1] = json!({"_id": "a", "total": 3.5, "avg": 1.75, "n": 4});
        expected.push(json!({"_id": true, "total": 1, "avg": 1.0, "n": 1}));
        assert_eq!(query(group).await["data"], Value::Array(expected), "{backend:?}");
        assert_eq!(query(count(json!({"cat": "a", "amount": {"$gte": 1}}))).await["count"], 2, "{backend:?}");
        assert_eq!(query(count(json!({"amount": 1}))).await["count"], 2, "{backend:?}");
        if backend == nexus_testkit::Backend::Sqlite {
            let sql = query(explain).await["plan"]["sql"].to_string();
            assert!(sql.contains("json_type"), "{sql}");
        }
    }
}
