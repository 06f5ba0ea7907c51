use nexus_testkit::TestServer;

#[tokio::test]
async fn openapi_document_is_3_1_and_lists_the_routes() {
    let s = TestServer::start().await;
    let r = s.get("/openapi.json").await;
    assert_eq!(r.status, 200);
    assert!(r.json["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")));
    assert_eq!(r.json["info"]["version"], env!("CARGO_PKG_VERSION"));
    let paths = r.json["paths"].as_object().cloned().unwrap_or_default();
    for path in ["/health", "/api/health", "/api/v1/health", "/metrics", "/api/errors", "/api/errors/{code}"] {
        assert!(paths.contains_key(path), "{path} missing from {:?}", paths.keys());
    }
    // The Jellyfin surface, under the paths Jellyfin documents, with its item shape.
    for path in [
        "/api/media/System/Info/Public",
        "/api/media/Items",
        "/api/media/Items/{itemId}",
        "/api/media/Users/{userId}/Items",
        "/api/media/Library/VirtualFolders",
        "/api/media/Videos/{itemId}/stream",
        "/api/media/Sessions/Playing/Progress",
        "/api/media/Sessions/{sessionId}/Playing/{command}",
    ] {
        assert!(paths.contains_key(path), "{path} missing from {:?}", paths.keys());
    }
    let items = &r.json["paths"]["/api/media/Items"]["get"];
    let names: Vec<&str> =
        items["parameters"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str()).collect();
    for name in ["ParentId", "Recursive", "IncludeItemTypes", "StartIndex", "Limit", "Fields", "Filters"] {
        assert!(names.contains(&name), "Items documents {name}: {names:?}");
    }
    let item = &r.json["components"]["schemas"]["BaseItemDto"]["properties"];
    for field in ["Name", "Id", "ServerId", "Type", "IsFolder", "RunTimeTicks", "MediaSources", "UserData"] {
        assert!(item.get(field).is_some(), "BaseItemDto.{field}: {item}");
    }
    // Every operation names its responses, and every referenced schema is defined.
    let schemas = r.json["components"]["schemas"].as_object().cloned().unwrap_or_default();
    for refs in r.text.match_indices("#/components/schemas/") {
        let rest = &r.text[refs.0 + refs.1.len()..];
        let name: String = rest.chars().take_while(|c| *c != '"').collect();
        assert!(schemas.contains_key(&name), "schema {name} referenced but not defined");
    }
    // A path parameter is a `{name}` segment of its path, and each segment is declared once: a
    // query struct documented without `parameter_in = Query` breaks every OpenAPI validator.
    for (path, item) in &paths {
        let segments: Vec<&str> =
            path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
        for (method, op) in item.as_object().into_iter().flatten() {
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let in_path: Vec<&str> =
                params.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect();
            for name in &in_path {
                assert!(segments.contains(name), "{method} {path}: path parameter `{name}` is not in the path");
            }
            for name in &segments {
                assert_eq!(in_path.iter().filter(|n| *n == name).count(), 1, "{method} {path}: `{name}` declared once");
            }
        }
    }
}

/// Fetches every `src`/`href` asset of an HTML page and checks the server serves it.
async fn assert_assets_local(s: &TestServer, page: &str) {
    let r = s.get(page).await;
    assert_eq!(r.status, 200, "{page}");
    let html = r.text;
    let mut found = 0;
    for attr in ["src=\"", "href=\""] {
        for (i, _) in html.match_indices(attr) {
            let rest = &html[i + attr.len()..];
            let link: String = rest.chars().take_while(|c| *c != '"').collect();
            assert!(!link.starts_with("http"), "{page} loads {link} from elsewhere");
            let url = if link.starts_with('/') {
                link.clone()
            } else {
                format!("{}/{}", page.trim_end_matches('/'), link.trim_start_matches("./"))
            };
            let a = s.get(&url).await;
            assert_eq!(a.status, 200, "{page} asset {url}");
            found += 1;
        }
    }
    assert!(found > 0, "{page} has no assets");
}

#[tokio::test]
async fn swagger_ui_and_redoc_load_their_assets_from_the_server() {
    let s = TestServer::start().await;
    assert_assets_local(&s, "/docs/").await;
    assert_assets_local(&s, "/redoc").await;
    let init = s.get("/docs/swagger-initializer.js").await;
    assert!(init.text.contains("/openapi.json"));
}
