//! Overseerr requests complete (status 5, the media available) when a scan finds their media
//! in the library: by the TMDB/TVDB id its names tag, else by title and year.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use nexus_kernel::config::MediaLibraryConfig;
use nexus_testkit::{TestServer, backends, eventually, json};
use serde_json::Value;

const BASE: &str = "/api/requests/api/v1/request";

fn touch(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"placeholder").unwrap();
}

/// Polls request `id` until its status is `status`.
async fn until_status(s: &TestServer, token: &str, id: i64, status: i64) -> Value {
    eventually(|| async move {
        let r = s.get_as(token, &format!("{BASE}/{id}")).await;
        if r.json["status"] == status { Ok(r.json) } else { Err(format!("request {id} is not {status}: {}", r.text)) }
    })
    .await
}

async fn refresh(s: &TestServer, token: &str) {
    let r = s.post_as(token, "/api/media/Library/Refresh", json!({})).await;
    assert_eq!(r.status, 204, "{}", r.text);
}

#[tokio::test]
async fn requests_complete_when_a_scan_finds_their_media() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let (movies, shows) = (root.join("movies"), root.join("shows"));
        std::fs::create_dir_all(&movies).unwrap();
        std::fs::create_dir_all(&shows).unwrap();
        let (m, sh) = (movies.clone(), shows.clone());
        let s = TestServer::start_with(backend, move |c| {
            c.media.watch_interval_ms = 0;
            c.media.libraries = vec![
                MediaLibraryConfig { name: "Movies".into(), path: m, kind: "movies".into() },
                MediaLibraryConfig { name: "Shows".into(), path: sh, kind: "tvshows".into() },
            ];
        })
        .await;
        let admin = s.admin_token().await;
        let user = s.user_token("asker", &["user"]).await;

        // By id: an admin's request is approved at once and waits for its media.
        let matrix = s.post_as(&admin, BASE, json!({"mediaType": "movie", "mediaId": 603})).await;
        assert_eq!((matrix.status.as_u16(), matrix.json["status"].as_i64()), (201, Some(2)), "{}", matrix.text);
        let matrix = matrix.json["id"].as_i64().unwrap();
        // By title and year, for an item that tags no id.
        let body = json!({"mediaType": "movie", "mediaId": 634_649, "title": "Spider-Man: No Way Home", "year": 2021});
        let spider = s.post_as(&user, BASE, body).await;
        assert_eq!(spider.json["status"], 1, "{}", spider.text);
        let spider = spider.json["id"].as_i64().unwrap();
        // Same title, another year: not fulfilled by the 2021 film.
        let body = json!({"mediaType": "movie", "mediaId": 1, "title": "Spider-Man: No Way Home", "year": 1990});
        let other = s.post_as(&admin, BASE, body).await.json["id"].as_i64().unwrap();
        // A show: every requested season must be there.
        let body = json!({"mediaType": "tv", "mediaId": 1396, "tvdbId": 81189, "seasons": [1, 2]});
        let show = s.post_as(&admin, BASE, body).await.json["id"].as_i64().unwrap();

        touch(&movies.join("The Matrix (1999) [tmdbid-603]/The Matrix (1999) [tmdbid-603].mkv"));
        touch(&movies.join("Spider-Man No Way Home (2021)/Spider-Man No Way Home (2021).mkv"));
        touch(&shows.join("Breaking Bad (2008) [tvdbid-81189]/Season 01/Breaking Bad S01E01.mkv"));
        refresh(&s, &admin).await;

        let done = until_status(&s, &admin, matrix, 5).await;
        assert_eq!(done["media"]["status"], 5, "the media is available: {done}");
        // A pending request is not completed by the scan; approving it once its media is
        // there completes it at once.
        let r = s.get_as(&user, &format!("{BASE}/{spider}")).await;
        assert_eq!(r.json["status"], 1, "{}", r.text);
        let r = s.post_as(&admin, &format!("{BASE}/{spider}/approve"), json!({})).await;
        assert_eq!((r.json["status"].as_i64(), r.json["media"]["status"].as_i64()), (Some(5), Some(5)), "{}", r.text);

        touch(&shows.join("Breaking Bad (2008) [tvdbid-81189]/Season 02/Breaking Bad S02E01.mkv"));
        let r = s.get_as(&admin, &format!("{BASE}/{show}")).await;
        assert_eq!(r.json["status"], 2, "season 2 is missing: {}", r.text);
        refresh(&s, &admin).await;
        until_status(&s, &admin, show, 5).await;

        let available = s.get_as(&admin, &format!("{BASE}?filter=available")).await;
        let mut ids: Vec<i64> =
            available.json["results"].as_array().unwrap().iter().filter_map(|r| r["id"].as_i64()).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![matrix, spider, show], "{}", available.text);
        let r = s.get_as(&admin, &format!("{BASE}/{other}")).await;
        assert_eq!(r.json["status"], 2, "{}", r.text);
    }
}
