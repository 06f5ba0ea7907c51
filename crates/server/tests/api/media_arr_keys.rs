//! *arr API keys set through the plugin API: sealed in the database, masked wherever
//! configuration is shown, injected upstream by the gateway at once and after a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use nexus_kernel::db::Db;
use nexus_testkit::reqwest::Method;
use nexus_testkit::{Backend, TestServer, json};

const KEY: &str = "sonarr-key-7f3a9c1e5b";

/// The configuration row stored for `plugin`, as it is in the table.
async fn stored_row(s: &TestServer, plugin: &str) -> String {
    let sql = "SELECT config FROM nexus_plugin_state WHERE plugin_id = $1";
    let row: Option<(Option<String>,)> = match &s.kernel().db {
        Db::Sqlite(pool) => sqlx::query_as(sql).bind(plugin).fetch_optional(pool).await.unwrap(),
        Db::Postgres(pool) => sqlx::query_as(sql).bind(plugin).fetch_optional(pool).await.unwrap(),
    };
    row.and_then(|(config,)| config).unwrap_or_default()
}

/// Whether any file of the data directory (the SQLite database, its WAL) holds `needle`.
fn data_dir_holds(s: &TestServer, needle: &str) -> bool {
    fn walk(dir: &std::path::Path, needle: &[u8]) -> bool {
        std::fs::read_dir(dir).into_iter().flatten().flatten().any(|entry| {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, needle)
            } else {
                std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            }
        })
    }
    walk(&s.config.data_dir, needle.as_bytes())
}

#[tokio::test]
async fn an_arr_key_set_through_the_api_is_sealed_at_rest_never_shown_and_injected_upstream() {
    let upstream = crate::media::fake_arr().await;
    let mut s = TestServer::start_with(Backend::Sqlite, |c| c.media.watch_interval_ms = 0).await;
    let admin = s.admin_token().await;
    assert_eq!(s.get_as(&admin, "/api/arr/sonarr/api/v3/series").await.status, 503);

    let body = json!({"config": {"arr": {"sonarr": {"url": format!("http://{upstream}"), "api_key": KEY}}}});
    let r = s.call_as(&admin, Method::PUT, "/api/plugins/media/config", Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains(KEY), "the answer masks the key: {}", r.text);
    assert_eq!(r.json["config"]["arr"]["sonarr"]["api_key"], "***masked***", "{}", r.text);
    assert_eq!(r.json["restart_required"], false, "gateway changes apply live: {}", r.text);

    let r = s.get_as(&admin, "/api/arr/sonarr/api/v3/series").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["api_key"], KEY, "the new key is injected at once");

    let row = stored_row(&s, "media").await;
    assert!(row.contains(&format!("http://{upstream}")), "the rest stays readable: {row}");
    assert!(row.contains("sealed:v1:") && !row.contains(KEY), "the key is sealed: {row}");
    assert!(!data_dir_holds(&s, KEY), "no file of the data directory holds the key");

    for path in [
        "/api/plugins/media",
        "/api/plugins",
        "/api/v1/config",
        "/api/v1/config?section=media",
        // Write-only: not even an operator allowed to read the configuration unmasked sees it.
        "/api/v1/config?section=media&mask_secrets=false",
    ] {
        let r = s.get_as(&admin, path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert!(!r.text.contains(KEY), "{path} shows the key: {}", r.text);
    }

    // A later change that leaves the key out keeps it.
    let body = json!({"config": {"arr_timeout_secs": 20}});
    let r = s.call_as(&admin, Method::PUT, "/api/plugins/media/config", Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["restart_required"], true, "{}", r.text);
    assert!(!stored_row(&s, "media").await.contains(KEY));

    s.restart().await;
    let admin = s.admin_token().await;
    let r = s.get_as(&admin, "/api/arr/sonarr/api/v3/series").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["api_key"], KEY, "the sealed key is opened at start");
    let r = s.get_as(&admin, "/api/plugins/media").await;
    assert!(!r.text.contains(KEY), "{}", r.text);
    assert_eq!(s.kernel().config.media.arr_timeout_secs, 20);
}
