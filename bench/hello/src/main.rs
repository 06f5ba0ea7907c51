//! Minimal axum server: GET / -> {"status":"ok"}. Usage: bench-hello PORT
//! Listens on 127.0.0.1 only; the ceiling that bench/run compares nexus to.

use axum::{Router, http::header, response::IntoResponse, routing::get};

async fn root() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], r#"{"status":"ok"}"#)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let port: u16 = match std::env::args().nth(1).map(|p| p.parse()) {
        Some(Ok(port)) => port,
        _ => {
            eprintln!("usage: bench-hello PORT");
            std::process::exit(2);
        }
    };
    let app = Router::new().route("/", get(root));
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bench-hello: cannot bind 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("bench-hello: {e}");
        std::process::exit(1);
    }
}
