//! Analytics: ingestion (shapes, per-event errors, idempotency, limits, permissions), queries
//! checked against counts computed here from the events sent, time buckets across DST,
//! retention, the WebSocket channel, import/export, and acknowledged events surviving kill -9.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use nexus_testkit::reqwest::Method;
use nexus_testkit::{Backend, Reply, TestServer, backends, json};
use serde_json::Value;

const EVENTS: &str = "/v2/analytics/events";

async fn post_events(s: &TestServer, token: &str, body: Value) -> Reply {
    s.post_as(token, EVENTS, body).await
}

fn ids(r: &Reply) -> Vec<String> {
    r.json["ids"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn ingestion_shapes_errors_duplicates_and_permissions() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let admin = s.admin_token().await;

        // One event.
        let r =
            post_events(&s, &admin, json!({"event_name": "signup", "event_category": "acq", "user_id": "u1"})).await;
        assert_eq!(r.status, 202, "{}", r.text);
        let single = r.json["id"].as_str().unwrap_or_default().to_string();
        assert!(!single.is_empty() && r.json["accepted"] == 1, "{}", r.text);

        // An array, with refused events reported by index and the rest stored.
        let auth = format!("Bearer {admin}");
        let headers = [("Authorization", auth.as_str()), ("User-Agent", "probe/1.0")];
        let r = s
            .call(
                Method::POST,
                EVENTS,
                Some(json!([
                {"event_name": "a", "event_category": "c"},
                {"event_category": "c"},
                {"event_name": "b", "event_category": "c", "timestamp": "yesterday"},
                {"event_name": "c", "event_category": "c", "properties": [1]},
                "not an object",
                {"event_name": "d", "event_category": "c", "timestamp": "2026-11-20T10:00:00.250+01:00"},
                ])),
                &headers,
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
        assert_eq!((r.json["accepted"].as_i64(), r.json["rejected"].as_i64()), (Some(2), Some(4)));
        let refused: Vec<(i64, String)> = r.json["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| (e["index"].as_i64().unwrap_or(-1), e["field"].as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            refused,
            [(1, "event_name".into()), (2, "timestamp".into()), (3, "properties".into()), (4, "event".into())]
        );
        let indexes: Vec<i64> = r.json["events"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["index"].as_i64()).collect())
            .unwrap_or_default();
        assert_eq!(indexes, [0, 5]);

        // Wrapped, with an idempotent event_id: the retry is a duplicate naming the first id.
        let body = json!({"events": [{"event_name": "pay", "event_category": "rev", "event_id": "evt-1"}]});
        let first = post_events(&s, &admin, body.clone()).await;
        assert_eq!(first.status, 202, "{}", first.text);
        let again = post_events(&s, &admin, body).await;
        assert_eq!(again.status, 202, "{}", again.text);
        assert_eq!(again.json["accepted"], 0);
        assert_eq!(again.json["duplicates"], 1);
        assert_eq!(again.json["events"][0]["status"], "duplicate");
        assert_eq!(again.json["events"][0]["id"], ids(&first)[0].as_str());
        // The same id twice in one request is stored once.
        let twice = json!([{"event_name": "x", "event_category": "c", "event_id": "evt-2"},
                           {"event_name": "x", "event_category": "c", "event_id": "evt-2"}]);
        let r = post_events(&s, &admin, twice).await;
        assert_eq!((r.json["accepted"].as_i64(), r.json["duplicates"].as_i64()), (Some(1), Some(1)), "{}", r.text);

        // Every event refused: 400 with the per-event errors.
        let r = post_events(&s, &admin, json!([{"event_name": "a"}, {"event_category": "b"}])).await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.json["error"]["code"], "VALIDATION_ERROR");
        assert_eq!(r.json["error"]["errors"][1]["index"], 1);
        assert_eq!(r.json["error"]["errors"][1]["field"], "event_name");
        let r = s.call_as(&admin, Method::POST, EVENTS, None).await;
        assert_eq!(r.status, 400, "{}", r.text);

        // Stored as sent, with the client's address and agent, and the time's fraction.
        let r = s.get_as(&admin, &format!("{EVENTS}?event_name=d")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["data"][0]["timestamp"], "2026-11-20T09:00:00.25Z");
        assert_eq!(r.json["data"][0]["ip_address"], "127.0.0.1");
        assert_eq!(r.json["data"][0]["user_agent"], "probe/1.0");
        let total = s.get_as(&admin, &format!("{EVENTS}?limit=100")).await;
        assert_eq!(total.json["pagination"]["total"], 5, "{}", total.text);

        // Permissions: a viewer cannot write, a plain user cannot read, an API key scoped to
        // analytics.write can write; nobody anonymous can do either.
        let viewer = s.user_token("viewer1", &["viewer"]).await;
        let r = post_events(&s, &viewer, json!({"event_name": "a", "event_category": "b"})).await;
        assert_eq!(r.status, 403, "{}", r.text);
        let user = s.user_token("user1", &["user"]).await;
        assert_eq!(s.get_as(&user, EVENTS).await.status, 403);
        assert_eq!(s.get_as(&user, "/v2/analytics/summary").await.status, 403);
        let r = s.post_as(&user, "/api/auth/api-keys", json!({"name": "ingest", "scopes": ["analytics.write"]})).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let key = r.json["key"].as_str().unwrap_or_default().to_string();
        let r = s
            .call(
                Method::POST,
                EVENTS,
                Some(json!({"event_name": "k", "event_category": "c"})),
                &[("X-API-Key", key.as_str())],
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
        assert_eq!(s.call(Method::GET, EVENTS, None, &[("X-API-Key", key.as_str())]).await.status, 403);
        assert_eq!(s.post(EVENTS, json!({"event_name": "a", "event_category": "b"})).await.status, 401);

        // A user_id naming a Nexus user keeps the link; any other string is kept as given.
        let me = s.get_as(&admin, "/api/users?filter[username]=user1").await;
        let uid = me.json["users"][0]["id"].as_str().unwrap_or_default().to_string();
        assert!(!uid.is_empty(), "{}", me.text);
        let r = post_events(
            &s,
            &admin,
            json!([{"event_name": "l", "event_category": "c", "user_id": uid},
                                               {"event_name": "l", "event_category": "c", "user_id": "someone"}]),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text);
        let r = s.get_as(&admin, &format!("{EVENTS}?event_name=l&sort=timestamp")).await;
        let linked: BTreeSet<(String, String)> = r.json["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (e["user_id"].as_str().unwrap_or("").into(), e["linked_user_id"].as_str().unwrap_or("-").into())
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(linked, BTreeSet::from([(uid.clone(), uid.clone()), ("someone".into(), "-".into())]));
        assert!(!single.is_empty());
    }
}

#[tokio::test]
async fn limits_are_413_or_per_event_errors_never_silent() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.analytics.max_event_bytes = 300;
        c.analytics.max_batch_events = 3;
        c.analytics.max_request_bytes = 2000;
        c.analytics.max_depth = 3;
        c.analytics.future_tolerance_secs = 60;
        c.analytics.record_client = false;
    })
    .await;
    let admin = s.admin_token().await;
    let ok = json!({"event_name": "a", "event_category": "b"});
    let r = post_events(&s, &admin, json!([ok, ok, ok, ok])).await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "PAYLOAD_TOO_LARGE");
    let big = "x".repeat(900);
    let r = post_events(&s, &admin, json!([{"event_name": "a", "event_category": big}, {"event_name": "a", "event_category": big}, {"event_name": "a", "event_category": big}])).await;
    assert_eq!(r.status, 413, "{}", r.text);
    let long = "y".repeat(290);
    let soon = nexus_kernel::clock::Timestamp::now().add_seconds(30).to_rfc3339();
    let later = nexus_kernel::clock::Timestamp::now().add_seconds(3600).to_rfc3339();
    let r = post_events(
        &s,
        &admin,
        json!([
            {"event_name": "a", "event_category": "b", "properties": {"p": long}},
            {"event_name": "a", "event_category": "b", "properties": {"a": {"b": {"c": 1}}}, "timestamp": soon},
            {"event_name": "a", "event_category": "b", "properties": {"a": {"b": {"c": {"d": 1}}}}, "timestamp": later},
        ]),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let refused: Vec<(i64, String)> = r.json["errors"]
        .as_array()
        .map(|a| {
            a.iter().map(|e| (e["index"].as_i64().unwrap_or(-1), e["field"].as_str().unwrap_or("").into())).collect()
        })
        .unwrap_or_default();
    // Index 2 has two faults; the first found is reported.
    assert_eq!(refused, [(0, "event".to_string()), (2, "timestamp".to_string())]);
    let r = post_events(
        &s,
        &admin,
        json!([{"event_name": "a", "event_category": "b", "properties": {"a": {"b": {"c": {"d": 1}}}}}]),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.json["error"]["errors"][0]["field"].as_str()),
        (400, Some("properties")),
        "{}",
        r.text
    );
    // record_client off: no address or agent kept.
    let r = s.get_as(&admin, EVENTS).await;
    assert_eq!(r.json["data"][0]["ip_address"], Value::Null, "{}", r.text);
    assert_eq!(r.json["data"][0]["user_agent"], Value::Null);
}

/// The events of the query test: (name, category, user, source, plan, n, seconds after BASE).
type Ev = (&'static str, &'static str, Option<String>, &'static str, &'static str, i64, i64);

const BASE: i64 = 1_795_651_200; // 2026-11-20T00:00:00Z

fn dataset() -> Vec<Ev> {
    let names = ["signup", "activate", "purchase", "view"];
    (0..120i64)
        .map(|i| {
            let name = names[usize::try_from((i * 7 + i / 5) % 4).unwrap_or(0)];
            let category = if i % 3 == 0 { "acq" } else { "eng" };
            let user = (i % 10 != 0).then(|| format!("u{}", (i * 13) % 9));
            let source = if i % 4 == 1 { "ios" } else { "web" };
            let plan = if i % 5 == 0 { "pro" } else { "free" };
            (name, category, user, source, plan, i % 3, i * 47 * 60)
        })
        .collect()
}

fn to_json(e: &Ev) -> Value {
    let ts = nexus_kernel::clock::Timestamp::from_micros((BASE + e.6) * 1_000_000).to_rfc3339();
    json!({"event_name": e.0, "event_category": e.1, "user_id": e.2, "source": e.3,
           "properties": {"plan": e.4, "n": e.5}, "timestamp": ts})
}

fn iso(secs: i64) -> String {
    nexus_kernel::clock::Timestamp::from_micros(secs * 1_000_000).to_rfc3339()
}

/// (count, unique users) of `events`.
fn tally<'a>(events: impl Iterator<Item = &'a Ev>) -> (i64, i64) {
    let mut n = 0;
    let mut users = HashSet::new();
    for e in events {
        n += 1;
        if let Some(u) = &e.2 {
            users.insert(u.clone());
        }
    }
    (n, i64::try_from(users.len()).unwrap_or(0))
}

#[tokio::test]
async fn queries_agree_with_counts_computed_from_the_events_sent() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let admin = s.admin_token().await;
        let events = dataset();
        for chunk in events.chunks(50) {
            let r = post_events(&s, &admin, Value::Array(chunk.iter().map(to_json).collect())).await;
            assert_eq!(r.status, 202, "{}", r.text);
        }
        let (from, to) = (BASE + 3600, BASE + 4 * 86400);
        let in_range: Vec<&Ev> = events.iter().filter(|e| BASE + e.6 >= from && BASE + e.6 < to).collect();
        let range = format!("from={}&to={}", iso(from), iso(to));

        // The list: filters, and every page of a cursor walk.
        let mut seen = Vec::new();
        let mut url = format!("{EVENTS}?{range}&limit=7&cursor=");
        loop {
            let r = s.get_as(&admin, &url).await;
            assert_eq!(r.status, 200, "{}", r.text);
            for e in r.json["data"].as_array().cloned().unwrap_or_default() {
                seen.push(e["id"].as_str().unwrap_or_default().to_string());
            }
            match r.json["pagination"]["next_cursor"].as_str() {
                Some(c) => url = format!("{EVENTS}?{range}&limit=7&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), in_range.len());
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len(), "a cursor walk repeats nothing");
        let cases: Vec<(String, usize)> = vec![
            (
                format!("event_name=signup&user_id=u4&{range}"),
                in_range.iter().filter(|e| e.0 == "signup" && e.2.as_deref() == Some("u4")).count(),
            ),
            (
                String::from("event_category=acq&source=ios"),
                events.iter().filter(|e| e.1 == "acq" && e.3 == "ios").count(),
            ),
            (String::from("properties.n=1"), events.iter().filter(|e| e.5 == 1).count()),
            (
                String::from("properties.plan=pro&event_name=view"),
                events.iter().filter(|e| e.4 == "pro" && e.0 == "view").count(),
            ),
        ];
        for (q, expected) in cases {
            let r = s.get_as(&admin, &format!("{EVENTS}?{q}&limit=100")).await;
            assert_eq!(r.json["pagination"]["total"].as_u64(), Some(expected as u64), "{q}: {}", r.text);
            assert_eq!(r.json["data"].as_array().map(Vec::len), Some(expected), "{q}");
        }
        let r = s.get_as(&admin, &format!("{EVENTS}?properties.bad%20key=1")).await;
        assert_eq!(r.status, 400, "{}", r.text);

        // Summary by event name.
        let r = s.get_as(&admin, &format!("/v2/analytics/summary?{range}&group_by=event_name")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let mut expected: Vec<(i64, String, i64)> = ["signup", "activate", "purchase", "view"]
            .iter()
            .map(|n| {
                let (c, u) = tally(in_range.iter().copied().filter(|e| e.0 == *n));
                (-c, (*n).to_string(), u)
            })
            .filter(|(c, _, _)| *c != 0)
            .collect();
        expected.sort();
        let got: Vec<(i64, String, i64)> = r.json["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|g| {
                        (
                            -g["count"].as_i64().unwrap_or(0),
                            g["event_name"].as_str().unwrap_or("").into(),
                            g["unique_users"].as_i64().unwrap_or(-1),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(got, expected);
        let (c, u) = tally(in_range.iter().copied());
        assert_eq!((r.json["total"]["count"].as_i64(), r.json["total"]["unique_users"].as_i64()), (Some(c), Some(u)));
        assert_eq!(r.json["group_by"], json!(["event_name"]));

        // By a property and the source, filtered; by user; by day with a filter.
        let r = s
            .get_as(
                &admin,
                &format!("/v2/analytics/summary?{range}&event_category=eng&group_by=properties.plan,source"),
            )
            .await;
        let mut want: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
        for plan in ["free", "pro"] {
            for source in ["web", "ios"] {
                let t = tally(in_range.iter().copied().filter(|e| e.1 == "eng" && e.4 == plan && e.3 == source));
                if t.0 > 0 {
                    want.insert((plan.into(), source.into()), t);
                }
            }
        }
        let got: BTreeMap<(String, String), (i64, i64)> = r.json["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|g| {
                        let k = (
                            g["properties.plan"].as_str().unwrap_or("").to_string(),
                            g["source"].as_str().unwrap_or("").to_string(),
                        );
                        (k, (g["count"].as_i64().unwrap_or(0), g["unique_users"].as_i64().unwrap_or(0)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(got, want, "{}", r.text);
        let r = s.get_as(&admin, &format!("/v2/analytics/summary?{range}&group_by=properties.n")).await;
        let ns: BTreeMap<i64, i64> = r.json["data"]
            .as_array()
            .map(|a| {
                a.iter().map(|g| (g["properties.n"].as_i64().unwrap_or(-1), g["count"].as_i64().unwrap_or(0))).collect()
            })
            .unwrap_or_default();
        let want: BTreeMap<i64, i64> =
            (0..3).map(|n| (n, tally(in_range.iter().copied().filter(|e| e.5 == n)).0)).collect();
        assert_eq!(ns, want, "{}", r.text);
        let r = s.get_as(&admin, &format!("/v2/analytics/summary?{range}&group_by=user_id")).await;
        let users: i64 = r.json["data"]
            .as_array()
            .map(|a| a.iter().filter(|g| !g["user_id"].is_null()).count())
            .unwrap_or(0)
            .try_into()
            .unwrap_or(0);
        assert_eq!(users, u);
        let r = s.get_as(&admin, &format!("/v2/analytics/summary?{range}&event_name=view&group_by=day")).await;
        let days: Vec<(String, i64)> = r.json["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|g| (g["bucket"].as_str().unwrap_or("").into(), g["count"].as_i64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        let mut want: BTreeMap<i64, i64> = BTreeMap::new();
        for e in in_range.iter().filter(|e| e.0 == "view") {
            *want.entry((BASE + e.6).div_euclid(86400)).or_default() += 1;
        }
        let want: Vec<(String, i64)> =
            want.into_iter().map(|(d, n)| (iso(d * 86400).replace('Z', "+00:00"), n)).collect();
        assert_eq!(days, want, "{}", r.text);
        for bad in
            ["group_by=hour,day", "group_by=nope", "timezone=Mars/Base", "from=soon", "group_by=properties.a%20b"]
        {
            let r = s.get_as(&admin, &format!("/v2/analytics/summary?{bad}")).await;
            assert_eq!(r.status, 400, "{bad}: {}", r.text);
        }

        // Funnel: signup -> activate -> purchase within 6 hours, computed here the same way.
        let steps = ["signup", "activate", "purchase"];
        let window = 6 * 3600;
        let mut reached = [0i64; 3];
        let by_user: BTreeSet<&String> = in_range.iter().filter_map(|e| e.2.as_ref()).collect();
        for user in by_user {
            let mine: Vec<&&Ev> = in_range.iter().filter(|e| e.2.as_ref() == Some(user)).collect();
            let mut best = 0;
            for (i, e) in mine.iter().enumerate() {
                if e.0 != steps[0] {
                    continue;
                }
                let mut k = 1;
                for f in mine.iter().skip(i + 1) {
                    if f.6 > e.6 + window || k == 3 {
                        break;
                    }
                    if f.0 == steps[k] {
                        k += 1;
                    }
                }
                best = best.max(k);
            }
            for r in reached.iter_mut().take(best) {
                *r += 1;
            }
        }
        let r = s
            .post_as(
                &admin,
                "/v2/analytics/funnel",
                json!({"steps": steps, "window_secs": window, "from": iso(from), "to": iso(to)}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let got: Vec<i64> = r.json["steps"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s["users"].as_i64()).collect())
            .unwrap_or_default();
        assert_eq!(got, reached.to_vec(), "{}", r.text);
        assert!(reached[0] > reached[2], "the data exercises drop-off: {reached:?}");
        let r = s.post_as(&admin, "/v2/analytics/funnel", json!({"steps": ["one"]})).await;
        assert_eq!(r.status, 400);
    }
}

#[tokio::test]
async fn time_buckets_follow_a_named_zone_across_dst() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let admin = s.admin_token().await;
        // Europe/Berlin leaves summer time at 2026-10-25T01:00Z (03:00 CEST -> 02:00 CET): one
        // event every 30 minutes from 22:00Z to 03:30Z.
        let start = 1_792_879_200; // 2026-10-24T22:00:00Z
        let batch: Vec<Value> = (0..12)
            .map(|i| json!({"event_name": "tick", "event_category": "t", "timestamp": iso(start + i * 1800)}))
            .collect();
        assert_eq!(post_events(&s, &admin, Value::Array(batch)).await.status, 202);
        let range = format!("from={}&to={}", iso(start), iso(start + 6 * 3600));
        let r = s.get_as(&admin, &format!("/v2/analytics/summary?{range}&group_by=hour&timezone=Europe/Berlin")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let hours: Vec<(String, i64)> = r.json["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|g| (g["bucket"].as_str().unwrap_or("").into(), g["count"].as_i64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        let want: Vec<(String, i64)> = [
            "2026-10-25T00:00:00+02:00",
            "2026-10-25T01:00:00+02:00",
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T03:00:00+01:00",
            "2026-10-25T04:00:00+01:00",
        ]
        .iter()
        .map(|b| ((*b).to_string(), 2))
        .collect();
        assert_eq!(hours, want);
        // Days: the local day of the change has 25 hours; events before local midnight fall on the 24th.
        let r = s.get_as(&admin, &format!("/v2/analytics/summary?{range}&group_by=day&timezone=Europe/Berlin")).await;
        let days: Vec<(String, i64)> = r.json["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|g| (g["bucket"].as_str().unwrap_or("").into(), g["count"].as_i64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(days, [("2026-10-25T00:00:00+02:00".to_string(), 12)], "{}", r.text);
        let r = s.get_as(&admin, &format!("/v2/analytics/summary?{range}&group_by=day")).await;
        let days: Vec<(String, i64)> = r.json["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|g| (g["bucket"].as_str().unwrap_or("").into(), g["count"].as_i64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(days, [("2026-10-24T00:00:00+00:00".to_string(), 4), ("2026-10-25T00:00:00+00:00".to_string(), 8)]);
        // A week bucket starts on the local Monday.
        let r =
            s.get_as(&admin, &format!("/v2/analytics/summary?{range}&group_by=week&timezone=America/New_York")).await;
        assert_eq!(r.json["data"][0]["bucket"], "2026-10-19T00:00:00-04:00", "{}", r.text);
    }
}

#[tokio::test]
async fn retention_deletes_old_events_in_the_background() {
    for backend in backends() {
        let s = TestServer::start_with(backend, |c| {
            c.analytics.retention_days = 30;
            c.analytics.retention_interval_secs = 1;
        })
        .await;
        let admin = s.admin_token().await;
        let now = nexus_kernel::clock::Timestamp::now();
        let old = now.add_seconds(-40 * 86400).to_rfc3339();
        let recent = now.add_seconds(-20 * 86400).to_rfc3339();
        let r = post_events(
            &s,
            &admin,
            json!([
                {"event_name": "old", "event_category": "c", "timestamp": old},
                {"event_name": "recent", "event_category": "c", "timestamp": recent},
            ]),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = s.get_as(&admin, &format!("{EVENTS}?limit=10")).await;
            let names: Vec<String> = r.json["data"]
                .as_array()
                .map(|a| a.iter().filter_map(|e| e["event_name"].as_str().map(String::from)).collect())
                .unwrap_or_default();
            if names == ["recent"] {
                break;
            }
            assert!(names.contains(&"recent".to_string()), "{names:?}");
            assert!(Instant::now() < deadline, "old events still there: {names:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn stored_events_reach_the_analytics_channel_filtered_by_name() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let url = s.url("/ws").replace("http://", "ws://");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap_or_else(|e| panic!("ws: {e}"));
    let send = |v: Value| Message::Text(v.to_string().into());
    ws.send(send(json!({"type": "auth", "token": admin}))).await.unwrap_or_else(|e| panic!("{e}"));
    ws.send(send(json!({"type": "subscribe", "channel": "analytics", "filters": {"event_names": ["wanted"]}})))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut next = async || -> Value {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.ok().flatten();
            match msg {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap_or(Value::Null),
                Some(Ok(_)) => {}
                other => panic!("no message: {other:?}"),
            }
        }
    };
    loop {
        if next().await["type"] == "subscribed" {
            break;
        }
    }
    let r = post_events(
        &s,
        &admin,
        json!([{"event_name": "other", "event_category": "c"},
                                           {"event_name": "wanted", "event_category": "c", "properties": {"k": 1}}]),
    )
    .await;
    assert_eq!(r.status, 202);
    let ev = loop {
        let m = next().await;
        if m["type"] == "event" {
            break m;
        }
    };
    assert_eq!(ev["channel"], "analytics");
    assert_eq!(ev["data"]["type"], "analytics.event");
    assert_eq!(ev["data"]["payload"]["event_name"], "wanted", "the filter let only `wanted` through");
    assert_eq!(ev["data"]["payload"]["properties"]["k"], 1);
}

fn nexus_bin() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nexus"));
    for (k, _) in std::env::vars() {
        if k.starts_with("NEXUS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NEXUS_ADMIN_PASSWORD", nexus_testkit::ADMIN_PASSWORD);
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Starts `nexus` on `data` and waits until it answers; the child and its base URL.
async fn spawn_nexus(data: &std::path::Path, client: &nexus_testkit::reqwest::Client) -> (std::process::Child, String) {
    let port = free_port();
    let child = nexus_bin()
        .args(["--data-dir", &data.to_string_lossy(), "--port", &port.to_string(), "--log-level", "warn"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run nexus: {e}"));
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/health")).send().await.map(|r| r.status() != 200).unwrap_or(true) {
        assert!(Instant::now() < deadline, "nexus did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, base)
}

async fn login(client: &nexus_testkit::reqwest::Client, base: &str) -> String {
    let r = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"username": "admin", "password": nexus_testkit::ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let v: Value = r.json().await.unwrap_or(Value::Null);
    v["access_token"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn events_acknowledged_before_kill_9_survive_the_restart() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let client = nexus_testkit::reqwest::Client::new();
    let (mut child, base) = spawn_nexus(dir.path(), &client).await;
    let token = login(&client, &base).await;
    // Concurrent batches, so that group commits carry rows of several requests.
    let posts: Vec<_> = (0..16)
        .map(|b| {
            let client = client.clone();
            let url = format!("{base}{EVENTS}");
            let token = token.clone();
            tokio::spawn(async move {
                let batch: Vec<Value> = (0..50)
                    .map(|i| json!({"event_name": "crash", "event_category": "t", "properties": {"b": b, "i": i}}))
                    .collect();
                let r = client.post(url).bearer_auth(token).json(&batch).send().await.ok()?;
                if r.status() != 202 {
                    return None;
                }
                let v: Value = r.json().await.ok()?;
                Some(v["ids"].as_array()?.iter().filter_map(|i| i.as_str().map(String::from)).collect::<Vec<_>>())
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for p in posts {
        acknowledged.extend(p.await.ok().flatten().unwrap_or_default());
    }
    // Killed right after the last acknowledgement: no graceful shutdown, no checkpoint.
    let _ = std::process::Command::new("kill").args(["-KILL", &child.id().to_string()]).status();
    let _ = child.wait();
    assert_eq!(acknowledged.len(), 800);

    let (mut child, base) = spawn_nexus(dir.path(), &client).await;
    let token = login(&client, &base).await;
    let mut found = HashSet::new();
    let mut url = format!("{base}{EVENTS}?event_name=crash&limit=100&cursor=");
    loop {
        let v: Value = client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or(Value::Null);
        for e in v["data"].as_array().cloned().unwrap_or_default() {
            found.insert(e["id"].as_str().unwrap_or_default().to_string());
        }
        match v["pagination"]["next_cursor"].as_str() {
            Some(c) => url = format!("{base}{EVENTS}?event_name=crash&limit=100&cursor={c}"),
            None => break,
        }
    }
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    let missing: Vec<&String> = acknowledged.iter().filter(|id| !found.contains(*id)).collect();
    assert!(missing.is_empty(), "{} acknowledged events lost", missing.len());
}

#[test]
fn import_and_export_events_as_json_lines() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().join("data");
    let file = dir.path().join("events.ndjson");
    let mut lines: Vec<String> = (0..25)
        .map(|i| json!({"event_name": "imp", "event_category": "c", "event_id": format!("e{i}"), "timestamp": iso(BASE + i * 60)}).to_string())
        .collect();
    lines.push(String::from("{broken"));
    std::fs::write(&file, lines.join("\n")).unwrap_or_else(|e| panic!("{e}"));
    let run = |args: &[&str]| {
        nexus_bin().args(args).args(["--data-dir", &data.to_string_lossy()]).output().unwrap_or_else(|e| panic!("{e}"))
    };
    let o = run(&["analytics", "import", &file.to_string_lossy()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("imported 25 events"), "{out} {}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("line 26"), "the broken line is named");
    // Again: every event_id is known, nothing is stored twice.
    let o = run(&["analytics", "import", &file.to_string_lossy()]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("25 duplicates"), "{}", String::from_utf8_lossy(&o.stdout));
    let o = run(&["analytics", "export", "--from", &iso(BASE + 5 * 60), "--to", &iso(BASE + 10 * 60)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let exported: Vec<Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap_or(Value::Null)).collect();
    let keys: Vec<&str> = exported.iter().filter_map(|e| e["event_id"].as_str()).collect();
    assert_eq!(keys, ["e5", "e6", "e7", "e8", "e9"]);
}

/// The event types of `hook`'s deliveries so far.
async fn delivered_types(s: &TestServer, token: &str, hook: &str) -> Vec<String> {
    let r = s.get_as(token, &format!("/api/webhooks/{hook}/deliveries?limit=100")).await;
    r.json["deliveries"]
        .as_array()
        .map(|a| a.iter().filter_map(|d| d["event_type"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn webhooks_get_analytics_events_only_when_switched_on() {
    for on in [false, true] {
        let s = TestServer::start_with(Backend::Sqlite, |c| {
            c.webhooks.allow_private = true;
            c.analytics.webhook_events = on;
        })
        .await;
        let admin = s.admin_token().await;
        let body = json!({"url": "http://127.0.0.1:9/hook", "events": ["analytics.event", "user.created"]});
        let r = s.post_as(&admin, "/api/webhooks", body).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let hook = r.json["id"].as_str().unwrap_or_default().to_string();
        assert_eq!(post_events(&s, &admin, json!({"event_name": "a", "event_category": "b"})).await.status, 202);
        // A marker published after the analytics event: once it is queued, so would the
        // analytics event be (the outbox takes the bus in order).
        let user = json!({"username": "marker", "email": "marker@example.com", "password": "user-Pass1"});
        assert_eq!(s.post_as(&admin, "/api/users", user).await.status, 201);
        let deadline = Instant::now() + Duration::from_secs(20);
        let types = loop {
            let types = delivered_types(&s, &admin, &hook).await;
            if types.iter().any(|t| t == "user.created") {
                break types;
            }
            assert!(Instant::now() < deadline, "the marker was never queued: {types:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(types.iter().any(|t| t == "analytics.event"), on, "webhook_events={on}: {types:?}");
    }
}

/// (name, hour start, count, unique users) of `events` = (name, user, seconds) within `range`.
fn by_name_and_hour(events: &[(String, String, i64)], from: i64, to: i64) -> Vec<(String, i64, i64, i64)> {
    let mut groups: std::collections::BTreeMap<(String, i64), (i64, HashSet<String>)> = Default::default();
    for (name, user, t) in events.iter().filter(|e| e.2 >= from && e.2 < to) {
        let g = groups.entry((name.clone(), t - t.rem_euclid(3600))).or_default();
        g.0 += 1;
        g.1.insert(user.clone());
    }
    groups
        .into_iter()
        .map(|((name, hour), (n, users))| (name, hour, n, i64::try_from(users.len()).unwrap_or(0)))
        .collect()
}

fn summary_groups(r: &Reply) -> Vec<(String, i64, i64, i64)> {
    let mut got: Vec<(String, i64, i64, i64)> = r.json["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|g| {
                    let hour = nexus_kernel::clock::Timestamp::parse_rfc3339(g["bucket"].as_str().unwrap_or_default())
                        .map_or(0, |t| t.as_unix_seconds());
                    let name = g["event_name"].as_str().unwrap_or_default().to_string();
                    (name, hour, g["count"].as_i64().unwrap_or(-1), g["unique_users"].as_i64().unwrap_or(-1))
                })
                .collect()
        })
        .unwrap_or_default();
    got.sort();
    got
}

#[tokio::test]
async fn summaries_from_hourly_rollups_match_the_events_and_follow_late_ones() {
    for backend in backends() {
        let s = TestServer::start_on(backend).await;
        let admin = s.admin_token().await;
        let mut events: Vec<(String, String, i64)> = (0..40i64)
            .map(|k| {
                (["a", "b"][usize::try_from(k % 2).unwrap_or(0)].to_string(), format!("u{}", k % 5), BASE + k * 17 * 60)
            })
            .collect();
        let body = |e: &[(String, String, i64)]| {
            Value::Array(
                e.iter()
                    .map(
                        |(n, u, t)| json!({"event_name": n, "event_category": "c", "user_id": u, "timestamp": iso(*t)}),
                    )
                    .collect(),
            )
        };
        assert_eq!(post_events(&s, &admin, body(&events)).await.status, 202);
        // Ends inside hours: the partial hours are read raw, the whole ones from the rollups.
        let (from, to) = (BASE + 10 * 60, BASE + 9 * 3600 + 5 * 60);
        let url = format!("/v2/analytics/summary?from={}&to={}&group_by=event_name,hour", iso(from), iso(to));
        let r = s.get_as(&admin, &url).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(summary_groups(&r), by_name_and_hour(&events, from, to), "{backend:?}");
        let users: HashSet<String> = events.iter().filter(|e| e.2 >= from && e.2 < to).map(|e| e.1.clone()).collect();
        assert_eq!(r.json["total"]["unique_users"], users.len(), "{backend:?}: {}", r.text);

        // A late event for an hour already rolled up, by a new user: counted at once.
        let late = vec![(String::from("a"), String::from("late-user"), BASE + 2 * 3600 + 60)];
        assert_eq!(post_events(&s, &admin, body(&late)).await.status, 202);
        events.extend(late);
        let r = s.get_as(&admin, &url).await;
        assert_eq!(summary_groups(&r), by_name_and_hour(&events, from, to), "{backend:?}: after a late event");
        assert_eq!(r.json["total"]["unique_users"], users.len() + 1, "{backend:?}: {}", r.text);
    }
}
