//! The document database over HTTP: the seed's examples verbatim, every route, bulk
//! atomicity, unique indexes, per-collection permissions, events and bad input; on SQLite and
//! (with `NEXUS_TEST_POSTGRES_URL`) PostgreSQL.

use nexus_testkit::reqwest::{Method, StatusCode};
use nexus_testkit::{TestServer, backends, json};
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
