//! Misbehaves on request (`GET /api/plugins/probe/{loop|bomb|trap|kv|ok}`), so that the tests
//! can show the sandbox holds: the host stops the loop at the time limit, refuses memory above
//! the limit, contains the trap, and refuses imports that were not granted.

use nexus_plugin_sdk::{Event, Guest, Request, Response, json, kv};

struct Probe;

impl Guest for Probe {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn handle_request(req: Request) -> Response {
        match req.plugin_segments().as_slice() {
            ["ok"] => Response::json(200, &json!({"ok": true})),
            ["loop"] => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            ["bomb"] => {
                let mut blocks: Vec<Vec<u8>> = Vec::new();
                loop {
                    blocks.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&blocks);
                }
            }
            ["trap"] => panic!("the probe was asked to trap"),
            ["kv"] => match kv::set("x", b"1") {
                Ok(()) => Response::json(200, &json!({"kv": "granted"})),
                Err(e) => Response::error(403, "CAPABILITY_DENIED", &e),
            },
            _ => Response::error(404, "NOT_FOUND", "no such route"),
        }
    }

    fn handle_event(_event: Event) -> Result<(), String> {
        Ok(())
    }

    fn handle_rpc(method: String, _params: String) -> Result<String, String> {
        Err(format!("no RPC method `{method}`"))
    }
}

nexus_plugin_sdk::export!(Probe);
