//! The plugin seam and `/api/plugins`: every domain listed with measured traffic, disabled and
//! enabled live in each dialect, configured, refused where it must be; and a plugin added in
//! this test crate through the one list.

use std::sync::Arc;

use nexus_kernel::plugin::{ChannelSpec, Manifest};
use nexus_testkit::reqwest::Method;
use nexus_testkit::{Backend, Plugin, TestServer, backends, json};
use nexus_web::plugin::{BoxFuture, StartContext, StartError, Started};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// A tiny plugin: one route in the media dialect, one channel, a dependency on webhooks.
#[derive(Debug, Default)]
struct Tiny;

/// Says hello.
#[utoipa::path(get, path = "/api/tiny/hello", tag = "tiny", responses((status = 200, description = "A greeting")))]
async fn hello() -> axum::Json<Value> {
    axum::Json(json!({ "message": "hello from tiny" }))
}

/// Its configuration is applied at the next start.
impl nexus_kernel::plugin::Reconfigure for Tiny {}

impl Plugin for Tiny {
    fn manifest(&self) -> Manifest {
        Manifest::builtin("tiny", "Tiny", "example", "A plugin defined by a test")
            .depends_on("webhooks", ">=0.1")
            .channel(ChannelSpec::new("tiny_events", None, &["tiny.*"]))
    }

    fn start<'a>(&'a self, _ctx: &'a mut StartContext) -> BoxFuture<'a, Result<Started, StartError>> {
        Box::pin(async move {
            let routes = OpenApiRouter::new().routes(routes!(hello));
            Ok(Started::routes(routes).mount("/api/tiny", nexus_web::Dialect::Media).tag("tiny", "A test plugin"))
        })
    }
}

fn with_tiny() -> Vec<Arc<dyn Plugin>> {
    let mut plugins = nexus::plugins::builtin();
    plugins.push(Arc::new(Tiny));
    plugins
}

fn ids(list: &Value) -> Vec<String> {
    list["plugins"].as_array().into_iter().flatten().filter_map(|p| p["id"].as_str().map(str::to_string)).collect()
}

#[tokio::test]
async fn every_domain_is_listed_with_the_seed_fields_filters_and_pages() {
    let s = TestServer::start().await;
    assert_eq!(s.get("/api/plugins").await.status, 401);
    let admin = s.admin_token().await;
    let all = s.get_as(&admin, "/api/plugins").await;
    assert_eq!(all.status, 200, "{}", all.text);
    let listed = ids(&all.json);
    for id in ["system", "identity", "secrets", "realtime", "webhooks", "plugins", "api"] {
        assert!(listed.contains(&id.to_string()), "{id} missing from {listed:?}");
    }
    assert_eq!(all.json["total"], listed.len());
    assert_eq!((all.json["page"].as_u64(), all.json["limit"].as_u64()), (Some(1), Some(20)));
    let secrets = all.json["plugins"].as_array().into_iter().flatten().find(|p| p["id"] == "secrets").cloned();
    let secrets = secrets.unwrap_or_default();
    for field in [
        "name",
        "category",
        "version",
        "status",
        "description",
        "author",
        "dependencies",
        "api_endpoints",
        "enabled",
        "config",
    ] {
        assert!(!secrets[field].is_null(), "field {field} missing: {secrets}");
    }
    assert_eq!(secrets["status"], "active");
    assert_eq!(secrets["dependencies"], json!(["identity"]));
    assert!(secrets["api_endpoints"].as_array().is_some_and(|e| e.iter().any(|p| p == "/api/v1/secrets")));

    let security = s.get_as(&admin, "/api/plugins?category=security").await;
    let mut sec = ids(&security.json);
    sec.sort();
    assert_eq!(sec, ["identity", "secrets"]);
    assert_eq!(ids(&s.get_as(&admin, "/api/plugins?status=inactive").await.json), Vec::<String>::new());
    let page2 = s.get_as(&admin, "/api/plugins?limit=2&page=2").await;
    assert_eq!(ids(&page2.json), listed.get(2..4).unwrap_or_default());
    assert_eq!(page2.json["total"], listed.len());

    for bad in [
        "/api/plugins?status=sleeping",
        "/api/plugins?limit=0",
        "/api/plugins?limit=101",
        "/api/plugins?page=0",
        "/api/plugins?page=x",
        "/api/plugins?colour=red",
    ] {
        let r = s.get_as(&admin, bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        assert_eq!(r.json["error"]["code"], "VALIDATION_ERROR", "{bad}");
    }
    // Reading needs only an authenticated caller.
    let viewer = s.user_token("vera", &["viewer"]).await;
    assert_eq!(s.get_as(&viewer, "/api/plugins").await.status, 200);
}

#[tokio::test]
async fn details_carry_the_manifest_and_measured_traffic() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    for _ in 0..5 {
        assert_eq!(s.get_as(&admin, "/api/v1/secrets").await.status, 200);
    }
    assert_eq!(s.get_as(&admin, "/api/v1/secrets/nope/missing").await.status, 404);
    let d = s.get_as(&admin, "/api/plugins/secrets").await;
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(d.json["license"], "Apache-2.0");
    assert_eq!(d.json["dependencies"], json!({ "identity": "*" }));
    assert!(d.json["permissions"].as_array().is_some_and(|p| p.contains(&json!("secret.read"))));
    let endpoints = d.json["api_endpoints"].as_array().cloned().unwrap_or_default();
    assert!(
        endpoints
            .iter()
            .any(|e| e["path"] == "/api/v1/secrets" && e["method"] == "POST" && e["description"].is_string()),
        "{endpoints:?}"
    );
    assert!(d.json["configuration"].is_object());
    let m = &d.json["metrics"];
    assert_eq!(m["total_requests"], 6, "{m}");
    assert!(m["average_response_time_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{m}");
    assert_eq!(m["error_rate"], 0.0, "a 404 is not a server error");
    // The identity plugin's credentials are masked in its configuration.
    let identity = s.get_as(&admin, "/api/plugins/identity").await;
    assert!(!identity.text.contains(nexus_testkit::ADMIN_PASSWORD), "{}", identity.text);
    let missing = s.get_as(&admin, "/api/plugins/ghost").await;
    assert_eq!((missing.status.as_u16(), missing.json["error"]["code"].as_str()), (404, Some("RESOURCE_NOT_FOUND")));
}

#[tokio::test]
async fn a_disabled_plugin_answers_503_in_each_dialect_until_enabled_also_after_a_restart() {
    for backend in backends() {
        disable_and_enable(backend).await;
    }
}

async fn disable_and_enable(backend: Backend) {
    let mut s = TestServer::start_on(backend).await;
    let admin = s.admin_token().await;
    let mut events = s.kernel().events.subscribe();
    let off = json!({ "enabled": false, "reason": "Maintenance" });
    let r = s.call_as(&admin, Method::PUT, "/api/plugins/secrets/status", Some(off.clone())).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json,
        json!({ "plugin_id": "secrets", "enabled": false, "status": "inactive", "message": "Plugin disabled successfully" })
    );
    let event = loop {
        let e = events.recv().await.unwrap_or_else(|e| panic!("bus: {e}"));
        if e.kind.starts_with("plugin.") {
            break e;
        }
    };
    assert_eq!((event.kind.as_str(), event.source.as_str()), ("plugin.disabled", "plugins"));
    assert_eq!(event.data["plugin_id"], "secrets");
    assert!(event.durable, "written to the outbox with the stored state");

    // v1 dialect.
    let r = s.get_as(&admin, "/api/v1/secrets").await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!((r.json["success"].as_bool(), r.json["code"].as_str()), (Some(false), Some("SERVICE_UNAVAILABLE")));
    assert!(r.json["message"].as_str().is_some_and(|m| m.contains("Maintenance")), "{}", r.text);
    let r = s.call_as(&admin, Method::PUT, "/api/plugins/webhooks/status", Some(off.clone())).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Framework dialect, and the media dialect of the same plugin's media route.
    let r = s.get_as(&admin, "/api/webhooks").await;
    assert_eq!((r.status.as_u16(), r.json["error"]["code"].as_str()), (503, Some("SERVICE_UNAVAILABLE")), "{}", r.text);
    let r = s
        .post_as(&admin, "/webhooks/register", json!({ "url": "https://example.com/h", "events": ["user.created"] }))
        .await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.json["error"]["documentation_url"].is_string(), "media dialect: {}", r.text);
    // Also inside a batch.
    let batch = json!({ "requests": [{ "id": "1", "method": "GET", "url": "/api/webhooks" }] });
    let r = s.post_as(&admin, "/api/batch", batch).await;
    assert_eq!(r.json["responses"][0]["status"], 503, "{}", r.text);
    assert_eq!(s.get_as(&admin, "/api/plugins?status=inactive").await.json["total"], 2);

    // The state outlives the process.
    s.restart().await;
    let admin = s.admin_token().await;
    assert_eq!(s.get_as(&admin, "/api/v1/secrets").await.status, 503);
    let d = s.get_as(&admin, "/api/plugins/secrets").await;
    assert_eq!((d.json["status"].as_str(), d.json["reason"].as_str()), (Some("inactive"), Some("Maintenance")));

    let on = json!({ "enabled": true });
    let r = s.call_as(&admin, Method::PUT, "/api/plugins/secrets/status", Some(on)).await;
    assert_eq!((r.status.as_u16(), r.json["status"].as_str()), (200, Some("active")), "{}", r.text);
    assert_eq!(s.get_as(&admin, "/api/v1/secrets").await.status, 200);
}

#[tokio::test]
async fn disabling_is_refused_for_essentials_and_plugins_others_need_and_to_non_admins() {
    let s = TestServer::start_with_plugins(Backend::Sqlite, |_| {}, with_tiny()).await;
    let admin = s.admin_token().await;
    let off = json!({ "enabled": false });
    for essential in ["identity", "system", "plugins"] {
        let r = s.call_as(&admin, Method::PUT, &format!("/api/plugins/{essential}/status"), Some(off.clone())).await;
        assert_eq!(
            (r.status.as_u16(), r.json["error"]["code"].as_str()),
            (409, Some("CONFLICT")),
            "{essential}: {}",
            r.text
        );
    }
    let r = s.call_as(&admin, Method::PUT, "/api/plugins/webhooks/status", Some(off.clone())).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.json["error"]["message"].as_str().is_some_and(|m| m.contains("tiny")), "{}", r.text);
    assert_eq!(r.json["error"]["dependents"], json!(["tiny"]));
    // Once the dependent is off, it may go; the dependent cannot come back without it.
    assert_eq!(s.call_as(&admin, Method::PUT, "/api/plugins/tiny/status", Some(off.clone())).await.status, 200);
    assert_eq!(s.call_as(&admin, Method::PUT, "/api/plugins/webhooks/status", Some(off.clone())).await.status, 200);
    let r = s.call_as(&admin, Method::PUT, "/api/plugins/tiny/status", Some(json!({ "enabled": true }))).await;
    assert_eq!(r.status, 409, "{}", r.text);

    let user = s.user_token("uma", &["user"]).await;
    let r = s.call_as(&user, Method::PUT, "/api/plugins/secrets/status", Some(off.clone())).await;
    assert_eq!((r.status.as_u16(), r.json["error"]["code"].as_str()), (403, Some("PERMISSION_DENIED")), "{}", r.text);
    for bad in [json!({}), json!({ "enabled": "no" }), json!({ "enabled": false, "extra": 1 })] {
        let r = s.call_as(&admin, Method::PUT, "/api/plugins/secrets/status", Some(bad.clone())).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
    }
    let r = s.call_as(&admin, Method::DELETE, "/api/plugins/secrets", None).await;
    assert_eq!((r.status.as_u16(), r.json["error"]["code"].as_str()), (409, Some("CONFLICT")), "{}", r.text);
    let r = s
        .post_as(&admin, "/api/plugins/install", json!({ "source": "registry", "package": "x", "version": "1.0.0" }))
        .await;
    // Without a registry folder configured, installs come by upload only (see `wasm.rs`).
    assert_eq!((r.status.as_u16(), r.json["error"]["code"].as_str()), (400, Some("VALIDATION_ERROR")), "{}", r.text);
    assert!(r.text.contains("plugins.registry_dir"), "{}", r.text);
}

#[tokio::test]
async fn configuration_is_validated_stored_and_applied_at_the_next_start() {
    let mut s = TestServer::start().await;
    let admin = s.admin_token().await;
    let put = |cfg: Value| json!({ "config": cfg });
    let r = s
        .call_as(&admin, Method::PUT, "/api/plugins/webhooks/config", Some(put(json!({ "timeout_secs": "soon" }))))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json["error"]["details"][0]["field"], "config.timeout_secs", "{}", r.text);
    let r =
        s.call_as(&admin, Method::PUT, "/api/plugins/webhooks/config", Some(put(json!({ "no_such_key": 1 })))).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = s.call_as(&admin, Method::PUT, "/api/plugins/webhooks/config", Some(json!({ "config": [1] }))).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = s
        .call_as(
            &admin,
            Method::PUT,
            "/api/plugins/identity/config",
            Some(put(json!({ "jwt_secret": "***masked***" }))),
        )
        .await;
    assert_eq!(r.status, 400, "masked values are not stored: {}", r.text);

    let r =
        s.call_as(&admin, Method::PUT, "/api/plugins/webhooks/config", Some(put(json!({ "timeout_secs": 7 })))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!((r.json["plugin_id"].as_str(), r.json["restart_required"].as_bool()), (Some("webhooks"), Some(true)));
    assert_eq!(r.json["config"]["timeout_secs"], 7);
    let d = s.get_as(&admin, "/api/plugins/webhooks").await;
    assert_eq!(d.json["configuration"]["timeout_secs"], 7);
    // The schema says what the check enforces, with the defaults.
    let schema = &d.json["config_schema"];
    assert_eq!(schema["properties"]["timeout_secs"]["type"], "integer", "{schema}");
    assert_eq!(schema["default"]["timeout_secs"], 10, "{schema}");
    let identity = s.get_as(&admin, "/api/plugins/identity").await;
    assert_eq!(identity.json["configuration"]["jwt_secret"], Value::Null, "{}", identity.text);
    assert!(identity.json["config_schema"]["properties"]["access_token_ttl_secs"].is_object());
    let r = s
        .call_as(&admin, Method::PUT, "/api/plugins/documents/config", Some(put(json!({ "max_document_bytes": 64 }))))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    s.restart().await;
    let admin = s.admin_token().await;
    let r = s
        .post_as(
            &admin,
            "/api/database/query",
            json!({ "collection": "c", "operation": "insert_one",
            "document": { "text": "more than sixty-four bytes of JSON, once the _id is added to it" } }),
        )
        .await;
    assert_eq!(r.status, 400, "documents.max_document_bytes applies after the restart: {}", r.text);
    assert_eq!(s.kernel().config.webhooks.timeout_secs, 7, "the stored change is applied at start");
    let admin = s.admin_token().await;
    let d = s.get_as(&admin, "/api/plugins/webhooks").await;
    assert_eq!(d.json["configuration"]["timeout_secs"], 7);
}

#[tokio::test]
async fn a_plugin_added_to_the_list_brings_its_route_docs_listing_and_channel() {
    let s = TestServer::start_with_plugins(Backend::Sqlite, |_| {}, with_tiny()).await;
    let r = s.get("/api/tiny/hello").await;
    assert_eq!((r.status.as_u16(), r.json["message"].as_str()), (200, Some("hello from tiny")));
    // Its mount's dialect: an unknown path below it is answered in the media dialect.
    let r = s.get("/api/tiny/nothing").await;
    assert_eq!(r.status, 404);
    assert!(r.json["error"]["documentation_url"].is_string(), "{}", r.text);
    let doc = s.get("/openapi.json").await;
    assert!(doc.json["paths"]["/api/tiny/hello"]["get"].is_object());
    assert!(doc.json["tags"].as_array().is_some_and(|t| t.iter().any(|t| t["name"] == "tiny")));
    let admin = s.admin_token().await;
    let d = s.get_as(&admin, "/api/plugins/tiny").await;
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(
        d.json["api_endpoints"],
        json!([{ "path": "/api/tiny/hello", "method": "GET", "description": "Says hello." }])
    );
    assert_eq!(d.json["channels"], json!(["tiny_events"]));
    assert_eq!(d.json["metrics"]["total_requests"], 1);
    assert_eq!(d.json["dependencies"], json!({ "webhooks": ">=0.1" }));
}

#[tokio::test]
async fn a_missing_dependency_or_unknown_section_stops_start_up_with_one_line() {
    let only = vec![Arc::new(Tiny) as Arc<dyn Plugin>];
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut config = nexus_kernel::config::Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
    config.server.port = 0;
    let err = nexus::start_with(config.clone(), only).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(err, "plugin `tiny` needs plugin `webhooks`, which is not installed");
    config.plugins.insert("tinny".into(), json!({ "x": 1 }));
    let err = nexus::start(config).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(err, "configuration key `tinny`: no plugin has this id");
}
