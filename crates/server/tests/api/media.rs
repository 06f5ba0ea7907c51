//! The Jellyfin-compatible media surface: a library generated in a temp dir (files named by
//! Jellyfin's conventions; real short media made with `ffmpeg` when it is installed), scanned
//! and browsed over HTTP, streamed with ranges, watched for changes, and played in sessions
//! with remote control over the socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use nexus_kernel::config::MediaLibraryConfig;
use nexus_testkit::reqwest::Method;
use nexus_testkit::{ADMIN_PASSWORD, Backend, Reply, TestServer, backends, json};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// Bytes of the placeholder files: 0..=255 four times.
fn placeholder() -> Vec<u8> {
    (0..1024u32).map(|i| (i % 256) as u8).collect()
}

fn has_ffmpeg() -> bool {
    std::process::Command::new("ffmpeg").arg("-version").output().is_ok_and(|o| o.status.success())
}

/// Writes `path` as real media when ffmpeg is there (`video`: 2 s test pattern; else a 2 s
/// tone), else as the placeholder.
fn media_file(path: &Path, video: bool, ffmpeg: bool) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if ffmpeg {
        let input: &[&str] = if video {
            &["-f", "lavfi", "-i", "testsrc=duration=2:size=64x48:rate=10", "-pix_fmt", "yuv420p"]
        } else {
            &["-f", "lavfi", "-i", "sine=frequency=440:duration=2"]
        };
        let ok = std::process::Command::new("ffmpeg")
            .args(["-y", "-loglevel", "error"])
            .args(input)
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
    }
    std::fs::write(path, placeholder()).unwrap();
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

struct Library {
    _dir: tempfile::TempDir,
    root: PathBuf,
    ffmpeg: bool,
}

/// Movies, a series with a special and a multi-episode file, and an album.
fn library() -> Library {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let ffmpeg = has_ffmpeg();
    let m = root.join("movies");
    media_file(&m.join("Heat (1995)/Heat (1995).mkv"), true, ffmpeg);
    write(&m.join("Heat (1995)/Heat (1995) - 720p.mkv"), &placeholder());
    write(&m.join("Heat (1995)/poster.jpg"), b"\xff\xd8\xff\xe0poster");
    write(&m.join("Arrival (2016)/Arrival (2016).mp4"), &placeholder());
    write(&m.join("Arrival (2016)/Arrival (2016)-trailer.mp4"), &placeholder());
    write(&m.join("Arrival (2016)/notes.txt"), b"not media");
    let s = root.join("shows/Breaking Bad (2008)");
    write(&s.join("folder.jpg"), b"\xff\xd8\xff\xe0folder");
    write(&s.join("Season 01/Breaking Bad S01E01.mkv"), &placeholder());
    write(&s.join("Season 01/Breaking Bad S01E02-E03 - Double.mkv"), &placeholder());
    write(&s.join("Season 00/Breaking Bad S00E01 - Special.mkv"), &placeholder());
    media_file(&root.join("music/Artist/Album (2001)/01 - Song.mp3"), false, ffmpeg);
    write(&root.join("music/Artist/Album (2001)/02 - Other Song.mp3"), &placeholder());
    Library { _dir: dir, root, ffmpeg }
}

async fn server(backend: Backend, lib: &Library) -> TestServer {
    let root = lib.root.clone();
    TestServer::start_with(backend, move |c| {
        c.auth.login_attempts_per_minute = 1000;
        c.media.watch_interval_ms = 100;
        c.media.libraries = vec![
            MediaLibraryConfig { name: "Movies".into(), path: root.join("movies"), kind: "movies".into() },
            MediaLibraryConfig { name: "Shows".into(), path: root.join("shows"), kind: "tvshows".into() },
            MediaLibraryConfig { name: "Music".into(), path: root.join("music"), kind: "music".into() },
        ];
    })
    .await
}

const CLIENT: &str = r#"MediaBrowser Client="Nexus Tests", Device="cargo", DeviceId="dev-1", Version="1.0""#;

/// Logs in the way Jellyfin clients do; returns (token, user id, server id).
async fn jellyfin_login(s: &TestServer) -> (String, String, String) {
    let r = s
        .call(
            Method::POST,
            "/api/media/Users/AuthenticateByName",
            Some(json!({"username": "admin", "Pw": ADMIN_PASSWORD})),
            &[("Authorization", CLIENT)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let s = |p: &str| r.json.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
    (s("/AccessToken"), s("/User/Id"), s("/ServerId"))
}

async fn get(s: &TestServer, token: &str, path: &str) -> Reply {
    let auth = format!("{CLIENT}, Token=\"{token}\"");
    s.call(Method::GET, path, None, &[("Authorization", auth.as_str())]).await
}

async fn post(s: &TestServer, token: &str, path: &str, body: Value) -> Reply {
    let auth = format!("{CLIENT}, Token=\"{token}\"");
    s.call(Method::POST, path, Some(body), &[("Authorization", auth.as_str())]).await
}

/// Polls `path` until `done` holds.
async fn until(s: &TestServer, token: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    nexus_testkit::eventually(|| async {
        let r = get(s, token, path).await;
        if r.status == 200 && done(&r.json) { Ok(r.json) } else { Err(format!("{path}: {}", r.text)) }
    })
    .await
}

fn names(v: &Value) -> Vec<String> {
    v["Items"].as_array().into_iter().flatten().filter_map(|i| i["Name"].as_str().map(str::to_string)).collect()
}

fn library_id(libraries: &Value, name: &str) -> String {
    libraries
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["Name"] == name)
        .and_then(|l| l["ItemId"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Waits for the first scan to have written every file of the generated library.
async fn scanned(s: &TestServer, token: &str) -> Value {
    until(s, token, "/api/media/Items?Recursive=true&IncludeItemTypes=Movie,Episode,Audio", |v| {
        v["TotalRecordCount"] == 7
    })
    .await
}

#[tokio::test]
async fn a_generated_library_is_scanned_and_browsed_like_jellyfin() {
    let lib = library();
    for backend in backends() {
        let s = server(backend, &lib).await;
        // Lower-case paths, as jellyfin-apiclient-python sends them.
        let public = s.get("/api/media/system/info/public").await;
        assert_eq!(public.status, 200, "{}", public.text);
        assert_eq!(public.json["ProductName"], "Jellyfin Server");
        assert!(public.json["Version"].as_str().unwrap().starts_with("10.1"));
        assert_eq!(public.json["StartupWizardCompleted"], true);
        let (token, user_id, server_id) = jellyfin_login(&s).await;
        assert_eq!(public.json["Id"], server_id.as_str(), "ServerId of the login is System/Info's Id");
        assert_eq!(get(&s, &token, "/api/media/System/Info").await.json["Id"], server_id.as_str());
        assert_eq!(get(&s, &token, "/api/media/Users/Me").await.json["Id"], user_id.as_str());
        let user = get(&s, &token, &format!("/api/media/Users/{user_id}")).await;
        assert_eq!(user.json["Policy"]["IsAdministrator"], true, "{}", user.text);
        assert_eq!(s.get("/api/media/Items").await.status, 401);

        scanned(&s, &token).await;
        let folders = get(&s, &token, "/api/media/Library/VirtualFolders").await;
        assert_eq!(folders.json.as_array().map(Vec::len), Some(3), "{}", folders.text);
        let movies = library_id(&folders.json, "Movies");
        let shows = library_id(&folders.json, "Shows");

        // Views: the libraries.
        let views = get(&s, &token, &format!("/api/media/Users/{user_id}/Views")).await;
        assert_eq!(names(&views.json), ["Movies", "Music", "Shows"], "{}", views.text);
        assert_eq!(views.json["TotalRecordCount"], 3);

        // PascalCase with comma lists; the trailer and the text file are not items; two
        // versions of Heat are one movie with two media sources.
        let q = format!(
            "/api/media/Items?ParentId={movies}&Recursive=true&IncludeItemTypes=Movie&Fields=MediaSources,Path&SortBy=SortName&SortOrder=Ascending"
        );
        let r = get(&s, &token, &q).await;
        assert_eq!(names(&r.json), ["Arrival", "Heat"], "{}", r.text);
        assert_eq!(r.json["TotalRecordCount"], 2);
        let heat = &r.json["Items"][1];
        assert_eq!(heat["ProductionYear"], 1995);
        assert_eq!(heat["Type"], "Movie");
        assert_eq!(heat["MediaType"], "Video");
        assert_eq!(heat["ServerId"], server_id.as_str());
        assert_eq!(heat["ParentId"], movies.as_str());
        assert_eq!(heat["MediaSources"].as_array().map(Vec::len), Some(2), "{heat}");
        assert_eq!(heat["MediaSources"][1]["Name"], "720p");
        assert!(heat["ImageTags"]["Primary"].is_string());
        assert!(heat["Path"].as_str().unwrap().ends_with("Heat (1995).mkv"));
        if lib.ffmpeg {
            let ticks = heat["RunTimeTicks"].as_i64().unwrap_or(0);
            assert!((15_000_000..=25_000_000).contains(&ticks), "2 s of video: {heat}");
            let streams = &heat["MediaSources"][0]["MediaStreams"];
            assert_eq!(streams[0]["Type"], "Video", "{streams}");
            assert_eq!(streams[0]["Width"], 64);
        }
        let heat_id = heat["Id"].as_str().unwrap().to_string();
        let metrics = s.get("/metrics").await.text;
        assert!(metrics.contains("nexus_media_items{library=\"Movies\"} 2"), "{metrics}");
        assert!(metrics.contains("nexus_media_scan_duration_seconds_count"), "{metrics}");

        // camelCase, repeated lists, descending, paging.
        let r = get(&s, &token, &format!("/api/media/Items?parentId={movies}&recursive=true&includeItemTypes=Movie&fields=Path&fields=MediaSources&sortBy=SortName&sortOrder=Descending&startIndex=1&limit=1")).await;
        assert_eq!(names(&r.json), ["Arrival"], "{}", r.text);
        assert_eq!((r.json["TotalRecordCount"].as_i64(), r.json["StartIndex"].as_i64()), (Some(2), Some(1)));
        let r = get(&s, &token, "/api/media/Items?Recursive=true&SearchTerm=hea&ExcludeItemTypes=Episode").await;
        assert_eq!(names(&r.json), ["Heat"]);
        let r = get(&s, &token, &format!("/api/media/Items?Ids={heat_id}")).await;
        assert_eq!(names(&r.json), ["Heat"]);

        // A series: seasons (Specials is season 0), episodes with a multi-episode file.
        let series = get(&s, &token, &format!("/api/media/Items?ParentId={shows}")).await;
        assert_eq!(names(&series.json), ["Breaking Bad"], "{}", series.text);
        let series_id = series.json["Items"][0]["Id"].as_str().unwrap().to_string();
        assert_eq!(series.json["Items"][0]["ProductionYear"], 2008);
        assert_eq!(series.json["Items"][0]["IsFolder"], true);
        let seasons = get(&s, &token, &format!("/api/media/Items?ParentId={series_id}&SortBy=IndexNumber")).await;
        assert_eq!(names(&seasons.json), ["Specials", "Season 1"], "{}", seasons.text);
        let episodes = get(&s, &token, &format!("/api/media/Items?ParentId={series_id}&Recursive=true&IncludeItemTypes=Episode&SortBy=ParentIndexNumber,IndexNumber")).await;
        let eps = episodes.json["Items"].as_array().unwrap();
        let numbers: Vec<(i64, i64)> = eps
            .iter()
            .map(|e| (e["ParentIndexNumber"].as_i64().unwrap(), e["IndexNumber"].as_i64().unwrap()))
            .collect();
        assert_eq!(numbers, [(0, 1), (1, 1), (1, 2)], "{}", episodes.text);
        assert_eq!(eps[2]["IndexNumberEnd"], 3);
        assert_eq!(eps[2]["Name"], "Double");
        assert_eq!(eps[2]["SeriesName"], "Breaking Bad");
        assert_eq!(eps[2]["SeriesId"], series_id.as_str());

        // Music: artist → album → tracks.
        let tracks = get(&s, &token, "/api/media/Items?Recursive=true&IncludeItemTypes=Audio&SortBy=IndexNumber").await;
        assert_eq!(names(&tracks.json), ["Song", "Other Song"], "{}", tracks.text);
        assert_eq!(tracks.json["Items"][0]["Album"], "Album");
        assert_eq!(tracks.json["Items"][0]["AlbumArtist"], "Artist");

        // One item, the legacy per-user forms, case-insensitive paths.
        let one = get(&s, &token, &format!("/api/media/items/{heat_id}")).await;
        assert_eq!(one.json["Name"], "Heat", "{}", one.text);
        let legacy = get(&s, &token, &format!("/api/media/Users/{user_id}/Items/{heat_id}")).await;
        assert_eq!(legacy.json["Id"], heat_id.as_str());
        let legacy_list = get(&s, &token, &format!("/api/media/users/{user_id}/items?ParentId={movies}")).await;
        assert_eq!(legacy_list.json["TotalRecordCount"], 2, "{}", legacy_list.text);
        assert_eq!(get(&s, &token, "/api/media/Items/00000000000000000000000000000000").await.status, 404);
        assert_eq!(get(&s, &token, "/api/media/Items?StartIndex=x").await.status, 400);

        // The folder image.
        let (status, h, body) = stream(&s, &token, &format!("/api/media/Items/{heat_id}/Images/Primary"), &[]).await;
        assert_eq!((status, h["content-type"].to_str().unwrap()), (200, "image/jpeg"));
        assert_eq!(body, b"\xff\xd8\xff\xe0poster");
        assert_eq!(get(&s, &token, &format!("/api/media/Items/{series_id}/Images/Primary")).await.status, 200);

        // The `ApiKey` query parameter authenticates, as stream and socket URLs need.
        let r = s.get(&format!("/api/media/Items/{heat_id}?ApiKey={token}")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(s.get(&format!("/api/media/Items/{heat_id}?api_key=wrong")).await.status, 401);

        // User data: favourite, played, and the filters that read them.
        let fav = post(&s, &token, &format!("/api/media/UserFavoriteItems/{heat_id}"), json!({})).await;
        assert_eq!(fav.status, 200, "{}", fav.text);
        assert_eq!(fav.json["IsFavorite"], true);
        let played = post(&s, &token, &format!("/api/media/Users/{user_id}/PlayedItems/{heat_id}"), json!({})).await;
        assert_eq!((played.json["Played"].as_bool(), played.json["PlayCount"].as_i64()), (Some(true), Some(1)));
        let favs = get(&s, &token, "/api/media/Items?Recursive=true&Filters=IsFavorite").await;
        assert_eq!(names(&favs.json), ["Heat"]);
        let unplayed = get(&s, &token, &format!("/api/media/Items?ParentId={movies}&Filters=IsUnplayed")).await;
        assert_eq!(names(&unplayed.json), ["Arrival"]);
        let r = get(&s, &token, &format!("/api/media/Items/{heat_id}")).await;
        assert_eq!(r.json["UserData"]["IsFavorite"], true);
        assert_eq!(r.json["UserData"]["Played"], true);
    }
}

async fn stream(
    s: &TestServer,
    token: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = s.client.get(s.url(path)).header("Authorization", format!("{CLIENT}, Token=\"{token}\""));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn static_streams_answer_byte_ranges() {
    let lib = library();
    let s = server(Backend::Sqlite, &lib).await;
    let (token, _, _) = jellyfin_login(&s).await;
    scanned(&s, &token).await;
    let r = get(&s, &token, "/api/media/Items?Recursive=true&SearchTerm=Heat&Fields=MediaSources").await;
    let heat = &r.json["Items"][0];
    let id = heat["Id"].as_str().unwrap();
    let v720 = heat["MediaSources"][1]["Id"].as_str().unwrap();
    let base = format!("/api/media/Videos/{id}/stream.mkv?static=true&MediaSourceId={v720}");
    let all = placeholder();

    let (status, h, body) = stream(&s, &token, &base, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body, all);
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["content-type"], "video/x-matroska");
    assert_eq!(h["content-length"], "1024");
    // Compression never touches a stream, even when the client accepts it.
    let (_, h, body) = stream(&s, &token, &base, &[("Accept-Encoding", "gzip, br")]).await;
    assert!(h.get("content-encoding").is_none());
    assert_eq!(body, all);

    let (status, h, body) = stream(&s, &token, &base, &[("Range", "bytes=0-99")]).await;
    assert_eq!(status, 206);
    assert_eq!(h["content-range"], "bytes 0-99/1024");
    assert_eq!(body, all[..100]);
    let (status, h, body) = stream(&s, &token, &base, &[("Range", "bytes=-24")]).await;
    assert_eq!((status, h["content-range"].to_str().unwrap()), (206, "bytes 1000-1023/1024"));
    assert_eq!(body, all[1000..]);
    let (status, h, body) = stream(&s, &token, &base, &[("Range", "bytes=1000-")]).await;
    assert_eq!((status, h["content-range"].to_str().unwrap()), (206, "bytes 1000-1023/1024"));
    assert_eq!(body, all[1000..]);
    let (status, h, _) = stream(&s, &token, &base, &[("Range", "bytes=2000-")]).await;
    assert_eq!((status, h["content-range"].to_str().unwrap()), (416, "bytes */1024"));
    let (status, _, _) = stream(&s, &token, &base, &[("Range", "bytes=abc")]).await;
    assert_eq!(status, 416);

    // If-Range: the range holds for the current version only.
    let (_, h, _) = stream(&s, &token, &base, &[]).await;
    let etag = h["etag"].to_str().unwrap().to_string();
    let (status, _, body) = stream(&s, &token, &base, &[("Range", "bytes=0-9"), ("If-Range", &etag)]).await;
    assert_eq!((status, body.len()), (206, 10));
    let (status, _, body) = stream(&s, &token, &base, &[("Range", "bytes=0-9"), ("If-Range", "\"old\"")]).await;
    assert_eq!((status, body.len()), (200, 1024));

    // HEAD: the headers without the body.
    let resp = s
        .client
        .head(s.url(&base))
        .header("Authorization", format!("{CLIENT}, Token=\"{token}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], "1024");

    // The token in the query, as players do; audio; the default version; MIME of mp4.
    let (status, _, _) =
        stream(&s, "x", &format!("/api/media/videos/{id}/stream?static=true&api_key={token}"), &[]).await;
    assert_eq!(status, 401, "a wrong header token is not rescued by the query");
    let resp =
        s.client.get(s.url(&format!("/api/media/Videos/{id}/stream?static=true&ApiKey={token}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let r = get(&s, &token, "/api/media/Items?Recursive=true&IncludeItemTypes=Audio&SortBy=IndexNumber").await;
    let song = r.json["Items"][0]["Id"].as_str().unwrap().to_string();
    let (status, h, _) =
        stream(&s, &token, &format!("/api/media/Audio/{song}/stream.mp3?static=true"), &[("Range", "bytes=0-0")]).await;
    assert_eq!((status, h["content-type"].to_str().unwrap()), (206, "audio/mpeg"));
    let r = get(&s, &token, "/api/media/Items?Recursive=true&SearchTerm=Arrival").await;
    let arrival = r.json["Items"][0]["Id"].as_str().unwrap().to_string();
    let (_, h, _) = stream(&s, &token, &format!("/api/media/Videos/{arrival}/stream?static=true"), &[]).await;
    assert_eq!(h["content-type"], "video/mp4");

    let metrics = s.get("/metrics").await.text;
    let streamed = metrics.lines().find_map(|l| l.strip_prefix("nexus_media_streamed_bytes_total ")).unwrap_or("0");
    assert!(streamed.parse::<u64>().unwrap_or(0) >= 1024, "{metrics}");

    // Transcoding is not offered; unknown items and sources are 404.
    let r = get(&s, &token, &format!("/api/media/Videos/{id}/stream.mp4?VideoCodec=h264")).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("static=true"), "{}", r.text);
    assert_eq!(get(&s, &token, "/api/media/Videos/0123/stream?static=true").await.status, 404);
    assert_eq!(
        get(&s, &token, &format!("/api/media/Videos/{id}/stream?static=true&MediaSourceId=nope")).await.status,
        404
    );
}

#[tokio::test]
async fn the_watcher_picks_up_added_and_removed_files() {
    let lib = library();
    let s = server(Backend::Sqlite, &lib).await;
    let (token, _, _) = jellyfin_login(&s).await;
    scanned(&s, &token).await;
    let mut events = s.kernel().events.subscribe();
    write(&lib.root.join("movies/Alien (1979)/Alien (1979).mkv"), &placeholder());
    let movies =
        until(&s, &token, "/api/media/Items?Recursive=true&IncludeItemTypes=Movie", |v| v["TotalRecordCount"] == 3)
            .await;
    assert!(names(&movies).contains(&String::from("Alien")));
    // The addition is announced on the event bus (WebSocket subscribers, webhooks).
    let added = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = events.recv().await.unwrap();
            if event.kind == "media.added" {
                return event;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(added.data["items"][0]["name"], "Alien", "{:?}", added.data);
    assert_eq!(added.data["library"], "Movies");
    assert!(added.durable, "written to the outbox with the scan's changes");
    std::fs::remove_dir_all(lib.root.join("movies/Arrival (2016)")).unwrap();
    let movies =
        until(&s, &token, "/api/media/Items?Recursive=true&IncludeItemTypes=Movie", |v| v["TotalRecordCount"] == 2)
            .await;
    assert_eq!(names(&movies), ["Alien", "Heat"]);
    // A rescan of the unchanged library writes nothing and the task reports it.
    let r = post(&s, &token, "/api/media/Library/Refresh", json!({})).await;
    assert_eq!(r.status, 204);
    let tasks = get(&s, &token, "/api/media/ScheduledTasks").await;
    assert_eq!(tasks.json[0]["Key"], "RefreshLibrary", "{}", tasks.text);
}

#[tokio::test]
async fn libraries_are_managed_through_virtual_folders() {
    let lib = library();
    let s = TestServer::start_with(Backend::Sqlite, |c| c.media.watch_interval_ms = 0).await;
    let (token, _, _) = jellyfin_login(&s).await;
    let path = lib.root.join("shows");
    let q = format!("/api/media/Library/VirtualFolders?name=TV&collectionType=tvshows&paths={}", path.display());
    let r = post(&s, &token, &q, json!({})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let eps =
        until(&s, &token, "/api/media/Items?Recursive=true&IncludeItemTypes=Episode", |v| v["TotalRecordCount"] == 3)
            .await;
    assert_eq!(eps["Items"][0]["SeriesName"], "Breaking Bad");
    let r = post(
        &s,
        &token,
        "/api/media/Library/VirtualFolders?name=Bad&collectionType=movies&paths=/no/such/dir",
        json!({}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = post(&s, &token, "/api/media/Library/VirtualFolders?name=Bad&collectionType=books", json!({})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let viewer = s.user_token("viewer1", &["viewer"]).await;
    let r = s.call_as(&viewer, Method::POST, &q, None).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = s.call_as(&token, Method::DELETE, "/api/media/Library/VirtualFolders?name=TV", None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(get(&s, &token, "/api/media/Items?Recursive=true").await.json["TotalRecordCount"], 0);
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Socket) -> Value {
    let msg = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
    serde_json::from_str(msg.to_text().unwrap()).unwrap()
}

#[tokio::test]
async fn playback_sessions_record_positions_and_take_remote_control() {
    let lib = library();
    let s = server(Backend::Sqlite, &lib).await;
    let (token, _, _) = jellyfin_login(&s).await;
    scanned(&s, &token).await;
    let r = get(&s, &token, "/api/media/Items?Recursive=true&SearchTerm=Arrival").await;
    let id = r.json["Items"][0]["Id"].as_str().unwrap().to_string();

    // The client's socket: ForceKeepAlive first, KeepAlive answered.
    let url =
        format!("ws://{}/api/media/socket?api_key={token}&deviceId=dev-1", s.url("").trim_start_matches("http://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["MessageType"], "ForceKeepAlive");
    ws.send(Message::Text(json!({"MessageType": "KeepAlive"}).to_string().into())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["MessageType"], "KeepAlive");

    let r = post(
        &s,
        &token,
        "/api/media/Sessions/Playing",
        json!({"ItemId": id, "PositionTicks": 0, "PlaySessionId": "p1"}),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = post(
        &s,
        &token,
        "/api/media/Sessions/Playing/Progress",
        json!({"ItemId": id, "PositionTicks": 50_000_000, "IsPaused": true}),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(post(&s, &token, "/api/media/Sessions/Playing/Ping", json!({})).await.status, 204);
    let sessions = get(&s, &token, "/api/media/Sessions").await;
    let me = sessions.json.as_array().unwrap().iter().find(|x| x["DeviceId"] == "dev-1").unwrap().clone();
    assert_eq!(me["NowPlayingItem"]["Id"], id.as_str(), "{}", sessions.text);
    assert_eq!(me["PlayState"]["PositionTicks"], 50_000_000);
    assert_eq!(me["PlayState"]["IsPaused"], true);
    assert_eq!(me["Client"], "Nexus Tests");
    assert_eq!(me["SupportsRemoteControl"], true);
    assert!(s.get("/metrics").await.text.contains("nexus_media_active_sessions 1"));
    let session = me["Id"].as_str().unwrap().to_string();

    // Remote control reaches the socket.
    let r = post(
        &s,
        &token,
        &format!("/api/media/Sessions/{session}/Playing?ItemIds={id}&StartPositionTicks=10"),
        json!({}),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let play = next_json(&mut ws).await;
    assert_eq!((play["MessageType"].as_str(), play["Data"]["ItemIds"][0].as_str()), (Some("Play"), Some(id.as_str())));
    assert_eq!(play["Data"]["StartPositionTicks"], 10);
    for command in ["Pause", "Unpause", "Stop"] {
        let r = post(&s, &token, &format!("/api/media/Sessions/{session}/Playing/{command}"), json!({})).await;
        assert_eq!(r.status, 204, "{}", r.text);
        let m = next_json(&mut ws).await;
        assert_eq!((m["MessageType"].as_str(), m["Data"]["Command"].as_str()), (Some("Playstate"), Some(command)));
    }
    let r =
        post(&s, &token, &format!("/api/media/Sessions/{session}/Playing/Seek?SeekPositionTicks=77"), json!({})).await;
    assert_eq!(r.status, 204);
    assert_eq!(next_json(&mut ws).await["Data"]["SeekPositionTicks"], 77);
    assert_eq!(post(&s, &token, "/api/media/Sessions/nope/Playing/Pause", json!({})).await.status, 404);
    assert_eq!(
        post(&s, &token, &format!("/api/media/Sessions/{session}/Playing/Explode"), json!({})).await.status,
        404
    );

    // Stopped part-way: resumable, with its position.
    let r = post(&s, &token, "/api/media/Sessions/Playing/Stopped", json!({"ItemId": id, "PositionTicks": 60_000_000}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let resumable = get(&s, &token, "/api/media/Items?Recursive=true&Filters=IsResumable").await;
    assert_eq!(names(&resumable.json), ["Arrival"], "{}", resumable.text);
    assert_eq!(resumable.json["Items"][0]["UserData"]["PlaybackPositionTicks"], 60_000_000);
    let sessions = get(&s, &token, "/api/media/Sessions").await;
    let me = sessions.json.as_array().unwrap().iter().find(|x| x["DeviceId"] == "dev-1").unwrap().clone();
    assert!(me["NowPlayingItem"].is_null());
    assert!(s.get("/metrics").await.text.contains("nexus_media_active_sessions 0"));

    // Bad reports are 4xx.
    assert_eq!(post(&s, &token, "/api/media/Sessions/Playing", json!({})).await.status, 400);
    assert_eq!(post(&s, &token, "/api/media/Sessions/Playing", json!({"ItemId": "nope"})).await.status, 404);
    assert_eq!(
        post(&s, &token, "/api/media/Sessions/Playing", json!({"ItemId": id, "PositionTicks": "x"})).await.status,
        400
    );
}

#[tokio::test]
async fn tautulli_commands_report_nexus_own_playback() {
    let lib = library();
    for backend in backends() {
        let s = server(backend, &lib).await;
        let (token, user_id, _) = jellyfin_login(&s).await;
        scanned(&s, &token).await;
        let r = get(&s, &token, "/api/media/Items?Recursive=true&IncludeItemTypes=Episode&SortBy=IndexNumber").await;
        let episode = r.json["Items"][0]["Id"].as_str().unwrap().to_string();
        let episode_name = r.json["Items"][0]["Name"].as_str().unwrap().to_string();
        let tautulli = |cmd: &str| format!("/api/tautulli/api/v2?apikey={token}&cmd={cmd}");

        let r = post(&s, &token, "/api/media/Sessions/Playing", json!({"ItemId": episode, "PositionTicks": 0})).await;
        assert_eq!(r.status, 204);
        let activity = s.get(&tautulli("get_activity")).await;
        assert_eq!(activity.status, 200, "{}", activity.text);
        assert_eq!(activity.json["response"]["result"], "success");
        let data = &activity.json["response"]["data"];
        assert_eq!(data["stream_count"], "1", "{}", activity.text);
        assert_eq!(data["sessions"][0]["media_type"], "episode");
        assert_eq!(data["sessions"][0]["grandparent_title"], "Breaking Bad");
        assert_eq!(data["sessions"][0]["user"], "admin");
        let r =
            post(&s, &token, "/api/media/Sessions/Playing/Stopped", json!({"ItemId": episode, "PositionTicks": 1000}))
                .await;
        assert_eq!(r.status, 204);

        let history = s.get(&format!("{}&start=0&length=10", tautulli("get_history"))).await;
        let data = &history.json["response"]["data"];
        assert_eq!(
            (data["recordsTotal"].as_i64(), data["recordsFiltered"].as_i64()),
            (Some(1), Some(1)),
            "{}",
            history.text
        );
        assert_eq!(data["data"][0]["full_title"], format!("Breaking Bad - {episode_name}").as_str());
        assert_eq!(data["data"][0]["user_id"], user_id.as_str());
        assert!(data["data"][0]["stopped"].is_i64());
        let none = s.get(&format!("{}&media_type=movie", tautulli("get_history"))).await;
        assert_eq!(none.json["response"]["data"]["recordsFiltered"], 0);

        let libraries = s.get(&tautulli("get_libraries_table")).await;
        let rows = libraries.json["response"]["data"]["data"].as_array().unwrap().clone();
        let shows = rows.iter().find(|r| r["section_name"] == "Shows").unwrap();
        assert_eq!(
            (shows["section_type"].as_str(), shows["count"].as_i64(), shows["plays"].as_i64()),
            (Some("show"), Some(1), Some(1))
        );
        let users = s.get(&tautulli("get_users_table")).await;
        assert_eq!(users.json["response"]["data"]["data"][0]["username"], "admin", "{}", users.text);
        assert_eq!(users.json["response"]["data"]["data"][0]["plays"], 1);
        let home = s.get(&tautulli("get_home_stats")).await;
        let stats = home.json["response"]["data"].as_array().unwrap().clone();
        let top_tv = stats.iter().find(|x| x["stat_id"] == "top_tv").unwrap();
        assert_eq!(top_tv["rows"][0]["title"], "Breaking Bad", "{}", home.text);

        // Errors in Tautulli's envelope.
        let bad = s.get("/api/tautulli/api/v2?apikey=nope&cmd=get_activity").await;
        assert_eq!(
            (bad.status.as_u16(), bad.json["response"]["result"].as_str()),
            (401, Some("error")),
            "{}",
            bad.text
        );
        let unknown = s.get(&tautulli("get_everything")).await;
        assert_eq!((unknown.status.as_u16(), unknown.json["response"]["result"].as_str()), (400, Some("error")));
        let viewer = s.user_token("statsviewer", &["viewer"]).await;
        let denied = s.get(&format!("/api/tautulli/api/v2?apikey={viewer}&cmd=get_history")).await;
        assert_eq!(denied.status, 403, "{}", denied.text);
    }
}

/// A stand-in *arr server: answers every request with what it received.
pub async fn fake_arr() -> std::net::SocketAddr {
    use axum::extract::Request;
    let app = axum::Router::new().fallback(|req: Request| async move {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        let seen = json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "api_key": header("x-api-key"),
            "authorization": header("authorization"),
            "body": String::from_utf8_lossy(&body),
        });
        let status = if parts.method == axum::http::Method::POST { 201 } else { 200 };
        (axum::http::StatusCode::from_u16(status).unwrap(), [("x-upstream", "yes")], axum::Json(seen))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn the_arr_gateway_forwards_with_the_key_injected_and_maps_errors() {
    let upstream = fake_arr().await;
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let s = TestServer::start_with(Backend::Sqlite, move |c| {
        c.media.watch_interval_ms = 0;
        c.media.arr.insert(
            "sonarr".into(),
            nexus_kernel::config::ArrUpstream {
                url: format!("http://{upstream}/"),
                api_key: Some("upstream-key".into()),
            },
        );
        c.media.arr.insert(
            "radarr".into(),
            nexus_kernel::config::ArrUpstream { url: format!("http://{closed}"), api_key: Some("radarr-key".into()) },
        );
    })
    .await;
    let admin = s.admin_token().await;

    let r = s.get_as(&admin, "/api/arr/sonarr/api/v3/series?term=abc&page=2").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-upstream"), Some("yes"));
    assert_eq!(r.json["path"], "/api/v3/series");
    assert_eq!(r.json["query"], "term=abc&page=2");
    assert_eq!(r.json["api_key"], "upstream-key", "the key is injected");
    assert!(r.json["authorization"].is_null(), "the caller's credential is not forwarded: {}", r.text);

    let r = s.post_as(&admin, "/api/arr/sonarr/api/v3/command", json!({"name": "RefreshSeries"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["method"], "POST");
    assert_eq!(r.json["body"], r#"{"name":"RefreshSeries"}"#);

    let r = s.get_as(&admin, "/api/arr/radarr/api/v3/movie").await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert!(r.json["error"]["message"].as_str().unwrap().contains("radarr"), "{}", r.text);
    assert!(!r.text.contains("radarr-key"));
    let r = s.get_as(&admin, "/api/arr/prowlarr/api/v1/indexer").await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.json["error"]["message"].as_str().unwrap().contains("media.arr.prowlarr.url"), "{}", r.text);
    assert_eq!(s.get_as(&admin, "/api/arr/lidarr/api/v1/artist").await.status, 404);

    let viewer = s.user_token("arrviewer", &["viewer"]).await;
    assert_eq!(s.get_as(&viewer, "/api/arr/sonarr/api/v3/series").await.status, 403);
    assert_eq!(s.get("/api/arr/sonarr/api/v3/series").await.status, 401);

    let metrics = s.get("/metrics").await.text;
    assert!(metrics.contains(r#"nexus_media_arr_requests_total{service="sonarr",outcome="2xx"} 2"#), "{metrics}");
    assert!(
        metrics.contains(r#"nexus_media_arr_requests_total{service="radarr",outcome="unreachable"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn requests_follow_overseerr_lifecycle_and_reach_radarr() {
    let upstream = fake_arr().await;
    for backend in backends() {
        let s = TestServer::start_with(backend, move |c| {
            c.media.watch_interval_ms = 0;
            c.media.arr.insert(
                "radarr".into(),
                nexus_kernel::config::ArrUpstream { url: format!("http://{upstream}"), api_key: Some("k".into()) },
            );
        })
        .await;
        let admin = s.admin_token().await;
        let user = s.user_token("requester", &["user"]).await;
        let base = "/api/requests/api/v1/request";

        let r = s.post_as(&user, base, json!({"mediaType": "movie", "mediaId": 603})).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!((r.json["status"].as_i64(), r.json["type"].as_str()), (Some(1), Some("movie")));
        assert_eq!(r.json["media"]["tmdbId"], 603);
        let id = r.json["id"].as_i64().unwrap();
        let dup = s.post_as(&user, base, json!({"mediaType": "movie", "mediaId": 603})).await;
        assert_eq!(dup.status, 409, "{}", dup.text);
        assert_eq!(s.post_as(&user, base, json!({"mediaType": "book", "mediaId": 1})).await.status, 400);
        assert_eq!(s.post_as(&user, base, json!({"mediaType": "movie"})).await.status, 400);

        // Only managers approve; approval sends the movie to Radarr.
        assert_eq!(s.post_as(&user, &format!("{base}/{id}/approve"), json!({})).await.status, 403);
        let r = s.post_as(&admin, &format!("{base}/{id}/approve"), json!({})).await;
        assert_eq!(r.json["status"], 2, "{}", r.text);
        let metrics = s.get("/metrics").await.text;
        assert!(metrics.contains(r#"nexus_media_arr_requests_total{service="radarr",outcome="2xx"} 1"#), "{metrics}");

        // Declined: may be requested again. An admin's request is approved at once.
        let tv = s
            .post_as(&user, base, json!({"mediaType": "tv", "mediaId": 1399, "tvdbId": 121361, "seasons": [1, 2]}))
            .await;
        let tv_id = tv.json["id"].as_i64().unwrap();
        assert_eq!(tv.json["seasons"].as_array().map(Vec::len), Some(2), "{}", tv.text);
        let r = s.post_as(&admin, &format!("{base}/{tv_id}/decline"), json!({})).await;
        assert_eq!(r.json["status"], 3);
        let again = s.post_as(&admin, base, json!({"mediaType": "tv", "mediaId": 1399})).await;
        assert_eq!((again.status.as_u16(), again.json["status"].as_i64()), (201, Some(2)), "{}", again.text);

        // Lists: the requester sees their own, a manager everyone's; filters and paging.
        let mine = s.get_as(&user, &format!("{base}?take=10&skip=0")).await;
        assert_eq!(mine.json["pageInfo"]["results"], 2, "{}", mine.text);
        let all = s.get_as(&admin, &format!("{base}?filter=all&take=2&skip=0")).await;
        assert_eq!(
            (all.json["pageInfo"]["results"].as_i64(), all.json["pageInfo"]["pages"].as_i64()),
            (Some(3), Some(2))
        );
        assert_eq!(all.json["results"].as_array().map(Vec::len), Some(2));
        let declined = s.get_as(&admin, &format!("{base}?filter=declined")).await;
        assert_eq!(declined.json["results"][0]["id"], tv_id);
        assert_eq!(s.get_as(&admin, &format!("{base}?filter=nonsense")).await.status, 400);

        // Deleting: not an approved one by its requester; a manager may.
        let r = s.call_as(&user, Method::DELETE, &format!("{base}/{id}"), None).await;
        assert_eq!(r.status, 403, "{}", r.text);
        assert_eq!(s.call_as(&admin, Method::DELETE, &format!("{base}/{id}"), None).await.status, 204);
        assert_eq!(s.get_as(&admin, &format!("{base}/{id}")).await.status, 404);
        assert_eq!(s.get_as(&admin, &format!("{base}/abc")).await.status, 400);
    }
}
