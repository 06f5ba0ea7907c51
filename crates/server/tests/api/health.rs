use nexus_testkit::{TestServer, backends};

#[tokio::test]
async fn every_surface_reports_health_on_every_backend() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;

        let r = s.get("/health").await;
        assert_eq!(r.status, 200, "{backend:?}: {}", r.text);
        assert_eq!(r.json["status"], "healthy");
        assert!(r.json["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));

        let r = s.get("/api/health").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json["status"], "healthy");
        assert_eq!(r.json["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(r.json["services"]["database"], "connected");
        assert_eq!(r.json["services"]["cache"], "connected");
        assert!(r.json["timestamp"].is_string());

        let r = s.get("/api/v1/health").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json["status"], "ok");
        assert!(r.json["timestamp"].is_string());
    }
}

#[tokio::test]
async fn health_is_503_with_an_error_when_the_database_is_gone() {
    let s = TestServer::start().await;
    s.kernel().db.close().await;
    // A report is reused for a quarter of a second; the outage shows after that.
    let deadline = std::time::Instant::now() + nexus_kernel::health::FRESH_FOR * 20;
    let r = loop {
        let r = s.get("/health").await;
        if r.status == 503 || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(r.status, 503);
    assert_eq!(r.json["status"], "unhealthy");
    assert_eq!(r.json["error"], "database connection failed");

    let r = s.get("/api/health").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json["services"]["database"], "disconnected");

    let r = s.get("/api/v1/health").await;
    assert_eq!(r.status, 503);
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let s = TestServer::start().await;
    s.get("/health").await;
    s.get("/api/errors/NOT_FOUND").await;
    s.get("/no/such/path").await;
    let r = s.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/plain")));
    assert!(r.text.contains(r#"http_requests_total{method="GET",route="/health",status="200"} 1"#), "{}", r.text);
    assert!(r.text.contains(r#"route="/api/errors/{code}",status="200""#));
    assert!(r.text.contains(r#"route="unmatched",status="404""#));
    assert!(r.text.contains("http_request_duration_seconds_bucket"));
    assert!(r.text.contains("process_resident_memory_bytes"));
    assert!(r.text.contains("process_cpu_seconds_total"));
}
