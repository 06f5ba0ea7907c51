//! A URL shortener: `POST /api/plugins/shortener/links {"url"}` makes a short code (from a
//! counter in the key-value store), `GET /api/plugins/shortener/links/{code}` resolves it and
//! counts the hit, `GET /api/s/{code}/go` redirects. The base URL of the short links comes from the
//! configuration; every link is also a document of the collection `links`, and
//! `GET /api/plugins/shortener/links` lists the caller's.

use nexus_plugin_sdk::{Event, Guest, Request, Response, config, json, kv, log};

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

struct Shortener;

fn encode(mut n: u64) -> String {
    let mut out = Vec::new();
    loop {
        let digit = usize::try_from(n % 62).unwrap_or(0);
        out.push(ALPHABET.get(digit).copied().unwrap_or(b'0'));
        n /= 62;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn failed(message: String) -> Response {
    log::error(&message);
    Response::error(500, "PLUGIN_FAILURE", &message)
}

fn base_url() -> Result<String, String> {
    Ok(config::get("base_url")?.and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default())
}

fn shorten(req: &Request) -> Result<Response, String> {
    let body: nexus_plugin_sdk::Value = match req.json() {
        Ok(v) => v,
        Err(e) => return Ok(Response::error(400, "INVALID_INPUT", &e)),
    };
    let Some(url) = body.get("url").and_then(|u| u.as_str()) else {
        return Ok(Response::error(400, "INVALID_INPUT", "`url` is required"));
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Ok(Response::error(400, "INVALID_INPUT", "`url` must start with http:// or https://"));
    }
    let n = kv::increment("next", 1)?;
    let code = encode(u64::try_from(n).unwrap_or(0));
    kv::set(&format!("link:{code}"), url.as_bytes())?;
    let owner = nexus_plugin_sdk::caller()?.map(|c| c.username).unwrap_or_default();
    kv::set(&format!("owner:{code}"), owner.as_bytes())?;
    let short = format!("{}/{code}", base_url()?);
    nexus_plugin_sdk::docs::insert("links", &json!({"code": code, "url": url, "created_by": owner}))?;
    Ok(Response::json(201, &json!({"code": code, "url": url, "short_url": short, "created_by": owner})))
}

fn mine() -> Result<Response, String> {
    let owner = nexus_plugin_sdk::caller()?.map(|c| c.username).unwrap_or_default();
    let links = nexus_plugin_sdk::docs::find("links", &json!({"created_by": owner}), 100)?;
    Ok(Response::json(200, &json!({"links": links})))
}

fn resolve(code: &str) -> Result<Response, String> {
    let Some(url) = kv::get_string(&format!("link:{code}"))? else {
        return Ok(Response::error(404, "NOT_FOUND", &format!("no short link `{code}`")));
    };
    let hits = kv::increment(&format!("hits:{code}"), 1)?;
    Ok(Response::json(200, &json!({"code": code, "url": url, "hits": hits})))
}

fn redirect(code: &str) -> Result<Response, String> {
    let Some(url) = kv::get_string(&format!("link:{code}"))? else {
        return Ok(Response::error(404, "NOT_FOUND", &format!("no short link `{code}`")));
    };
    kv::increment(&format!("hits:{code}"), 1)?;
    Ok(Response { status: 302, headers: vec![(String::from("location"), url)], body: Vec::new() })
}

impl Guest for Shortener {
    fn init(config: String) -> Result<(), String> {
        let config: nexus_plugin_sdk::Value = serde_json(&config)?;
        if let Some(base) = config.get("base_url")
            && !base.as_str().is_some_and(|b| b.starts_with("http"))
        {
            return Err(String::from("base_url must be an http(s) URL"));
        }
        Ok(())
    }

    fn handle_request(req: Request) -> Response {
        let result = if let Some(code) = req.path.strip_prefix("/api/s/").and_then(|p| p.strip_suffix("/go")) {
            redirect(code)
        } else {
            let segments = req.plugin_segments();
            match (req.method.as_str(), segments.as_slice()) {
                ("GET", ["hello"]) => {
                    let greeting = config::get("greeting").ok().flatten().and_then(|g| g.as_str().map(str::to_string));
                    Ok(Response::json(
                        200,
                        &json!({"message": greeting.unwrap_or_else(|| String::from("hello from shortener"))}),
                    ))
                }
                ("POST", ["links"]) => shorten(&req),
                ("GET", ["links"]) => mine(),
                ("GET", ["links", code]) => resolve(code),
                _ => Ok(Response::error(404, "NOT_FOUND", "no such route")),
            }
        };
        result.unwrap_or_else(failed)
    }

    fn handle_event(_event: Event) -> Result<(), String> {
        Ok(())
    }

    fn handle_rpc(method: String, _params: String) -> Result<String, String> {
        Err(format!("no RPC method `{method}`"))
    }
}

fn serde_json(text: &str) -> Result<nexus_plugin_sdk::Value, String> {
    nexus_plugin_sdk::serde_json::from_str(text).map_err(|e| e.to_string())
}

nexus_plugin_sdk::export!(Shortener);
