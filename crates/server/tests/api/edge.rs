//! What every request gets at the edge: request ids, and errors in the owning surface's dialect.

use nexus_testkit::{TestServer, reqwest::Method};

#[tokio::test]
async fn request_id_is_generated_or_echoed() {
    let s = TestServer::start().await;
    let r = s.get("/api/health").await;
    let generated = r.header("x-request-id").unwrap_or_default().to_string();
    assert!(generated.starts_with("req_") && generated.len() > 10, "{generated}");

    let r = s.call(Method::GET, "/nope", None, &[("X-Request-ID", "req_client42")]).await;
    assert_eq!(r.header("x-request-id"), Some("req_client42"));
    assert_eq!(r.json["error"]["request_id"], "req_client42");

    // An id that could forge log lines is replaced, not echoed.
    let r = s.call(Method::GET, "/nope", None, &[("X-Request-ID", "a b\tc")]).await;
    assert_ne!(r.header("x-request-id"), Some("a b\tc"));
}

#[tokio::test]
async fn unknown_paths_are_404_in_each_dialect() {
    let s = TestServer::start().await;

    let r = s.get("/api/nothing-here").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json["error"]["code"], "RESOURCE_NOT_FOUND");
    assert!(r.json["error"]["message"].is_string());
    assert!(r.json["error"]["request_id"].as_str().is_some_and(|id| id.starts_with("req_")));
    assert!(r.json["error"]["timestamp"].is_string());

    let r = s.get("/api/v1/nothing-here").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json["success"], false);
    assert_eq!(r.json["error"], "Not Found");
    assert_eq!(r.json["code"], "RESOURCE_NOT_FOUND");
    assert!(r.json["message"].is_string());
    assert!(r.json["request_id"].is_string());

    let r = s.get("/api/media/nothing-here").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json["error"]["code"], "NOT_FOUND");
    assert_eq!(r.json["error"]["documentation_url"], "/api/errors/NOT_FOUND");
    let doc = s.get("/api/errors/NOT_FOUND").await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.json["status"], 404);
}

#[tokio::test]
async fn wrong_method_is_405_with_allow_in_each_dialect() {
    let s = TestServer::start().await;

    let r = s.call(Method::DELETE, "/api/health", None, &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json["error"]["code"], "METHOD_NOT_ALLOWED");
    assert!(r.header("allow").is_some_and(|a| a.contains("GET")));

    let r = s.call(Method::POST, "/health", None, &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json["error"], "Method Not Allowed");
    assert_eq!(r.json["code"], "METHOD_NOT_ALLOWED");

    let r = s.call(Method::PUT, "/metrics", None, &[]).await;
    assert_eq!(r.status, 405);
    assert!(r.json["error"]["documentation_url"].is_string());
}

#[tokio::test]
async fn oversized_bodies_are_413_before_any_handler() {
    let s = TestServer::start_with(nexus_testkit::Backend::Sqlite, |c| c.server.body_limit_bytes = 1024).await;
    let big = "x".repeat(4096);
    let r = s
        .client
        .post(s.url("/api/v1/health"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .map(nexus_testkit::read);
    let r = match r {
        Ok(fut) => fut.await,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(r.status, 413);
    assert_eq!(r.json["code"], "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn a_request_that_outlives_the_timeout_is_408_in_its_dialect() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start_with(nexus_testkit::Backend::Sqlite, |c| c.server.request_timeout_secs = 1).await;
    let addr = s.url("").trim_start_matches("http://").to_string();
    for (path, code_of) in [("/api/auth/login", "/error/code"), ("/api/v1/auth/login", "/code")] {
        // A body announced but never sent keeps the handler waiting for it.
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap_or_else(|e| panic!("{e}"));
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\nX-Request-ID: slow-1\r\n\r\n{{"
        );
        conn.write_all(head.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
        let mut buf = vec![0u8; 4096];
        let started = std::time::Instant::now();
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{path}: no answer within 10 s"))
            .unwrap_or_else(|e| panic!("{e}"));
        let answer = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).to_string();
        assert!(started.elapsed() >= std::time::Duration::from_millis(900), "{path}: answered early: {answer}");
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        assert_eq!(json.pointer(code_of).and_then(|v| v.as_str()), Some("REQUEST_TIMEOUT"), "{path}: {json}");
        assert!(answer.to_ascii_lowercase().contains("x-request-id: slow-1"), "{answer}");
    }
}

#[tokio::test]
async fn responses_are_compressed_when_asked() {
    let s = TestServer::start().await;
    let r = s.call(Method::GET, "/openapi.json", None, &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let r = s.call(Method::GET, "/openapi.json", None, &[("Accept-Encoding", "br")]).await;
    assert_eq!(r.header("content-encoding"), Some("br"));
    // A small answer gains nothing from it (one segment either way) and goes as it is, with
    // its length.
    let r = s.call(Method::GET, "/health", None, &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("content-length"), Some(r.text.len().to_string().as_str()));
    assert!(r.text.len() < 1024, "{}", r.text);
}

#[tokio::test]
async fn cors_preflight_is_answered_for_configured_origins() {
    let s = TestServer::start_with(nexus_testkit::Backend::Sqlite, |c| {
        c.server.cors_origins = vec!["https://app.example".into()];
    })
    .await;
    let headers = [("Origin", "https://app.example"), ("Access-Control-Request-Method", "POST")];
    let r = s.call(Method::OPTIONS, "/api/health", None, &headers).await;
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example"));
    let headers = [("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST")];
    let r = s.call(Method::OPTIONS, "/api/health", None, &headers).await;
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn cors_and_compression_apply_to_those_who_ask_and_caches_are_told() {
    let s = TestServer::start_with(nexus_testkit::Backend::Sqlite, |c| {
        c.server.cors_origins = vec!["https://app.example".into()];
    })
    .await;
    let vary = |r: &nexus_testkit::Reply| {
        r.headers.get_all("vary").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(", ")
    };
    // No Origin, no Accept-Encoding: no CORS headers, no encoding, but `Vary` names both.
    let r = s.call(Method::GET, "/api/versions", None, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("content-encoding"), None);
    let v = vary(&r);
    assert!(v.contains("origin") && v.contains("accept-encoding"), "{v}");
    // An answer no cache may keep has nothing to vary on.
    let r = s.call(Method::GET, "/api/health", None, &[]).await;
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(vary(&r), "");

    // A cross-origin request from an allowed origin gets its CORS headers on the real answer.
    let r = s.call(Method::GET, "/api/health", None, &[("Origin", "https://app.example")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example"));
    assert!(vary(&r).contains("origin"));
    assert!(r.header("x-request-id").is_some());
}

#[tokio::test]
async fn health_answers_are_not_cached() {
    let s = TestServer::start().await;
    for path in ["/health", "/api/health", "/api/v1/health"] {
        let r = s.call(Method::GET, path, None, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
        assert_eq!(r.header("etag"), None, "{path}");
    }
}
