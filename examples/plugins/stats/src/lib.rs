//! Event statistics: counts the events it is subscribed to (`user.*`, `document.*`) in its
//! key-value store; RPC `plugin.stats.getStats` (and `GET /api/plugins/stats/stats`) answers the
//! counts, RPC `plugin.stats.reset` forgets them and publishes `stats.reset`.

use nexus_plugin_sdk::{Event, Guest, Request, Response, Value, json, kv};

struct Stats;

fn stats() -> Result<Value, String> {
    let total = kv::get_string("total")?.and_then(|t| t.parse::<i64>().ok()).unwrap_or(0);
    let mut by_type = nexus_plugin_sdk::serde_json::Map::new();
    for key in kv::keys("type:", 1000)? {
        let count = kv::get_string(&key)?.and_then(|t| t.parse::<i64>().ok()).unwrap_or(0);
        if let Some(kind) = key.strip_prefix("type:") {
            by_type.insert(kind.to_string(), json!(count));
        }
    }
    Ok(json!({"total_events": total, "by_type": by_type}))
}

impl Guest for Stats {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn handle_request(req: Request) -> Response {
        match (req.method.as_str(), req.plugin_segments().as_slice()) {
            ("GET", ["stats"]) => match stats() {
                Ok(s) => Response::json(200, &s),
                Err(e) => Response::error(500, "PLUGIN_FAILURE", &e),
            },
            _ => Response::error(404, "NOT_FOUND", "no such route"),
        }
    }

    fn handle_event(event: Event) -> Result<(), String> {
        kv::increment("total", 1)?;
        kv::increment(&format!("type:{}", event.kind), 1)?;
        Ok(())
    }

    fn handle_rpc(method: String, _params: String) -> Result<String, String> {
        match method.as_str() {
            "getStats" => Ok(stats()?.to_string()),
            "reset" => {
                let before = stats()?;
                for key in kv::keys("", 10_000)? {
                    kv::delete(&key)?;
                }
                nexus_plugin_sdk::publish("stats.reset", &json!({"before": before}))?;
                Ok(json!({"reset": true}).to_string())
            }
            other => Err(format!("no RPC method `{other}`")),
        }
    }
}

nexus_plugin_sdk::export!(Stats);
