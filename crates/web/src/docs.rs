//! API documentation served by the binary itself: the OpenAPI 3.1 document, Swagger UI and
//! ReDoc, with every asset embedded (nothing is fetched at build or run time), and the error
//! code catalogue that error bodies link to.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use serde_json::json;
use utoipa_swagger_ui::SwaggerUi;

use std::sync::Arc;

use crate::error::{ApiError, ErrorCode};
use crate::extract::{Json, Path};
use crate::plugin::DynamicRoutes;

const REDOC_JS: &str = include_str!("../assets/redoc/redoc.standalone.js");

const REDOC_HTML: &str = r#"<!DOCTYPE html>
<html>
  <head>
    <title>Nexus API — ReDoc</title>
    <meta charset="utf-8"/>
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <style>body { margin: 0; padding: 0; }</style>
  </head>
  <body>
    <redoc spec-url="/openapi.json"></redoc>
    <script src="/redoc/redoc.standalone.js"></script>
  </body>
</html>
"#;

/// `/openapi.json`, `/docs` (Swagger UI) and `/redoc`. The error catalogue handlers below are
/// mounted (and documented) by the system plugin. `/openapi.json` is `openapi` with the routes
/// `dynamic` has at the time of the request added: rendered once when there are none, and on
/// each request otherwise.
pub fn router(openapi: serde_json::Value, dynamic: Vec<Arc<dyn DynamicRoutes>>) -> Router {
    let rendered: Arc<str> = Arc::from(openapi.to_string());
    let openapi = Arc::new(openapi);
    let document = move || {
        let (rendered, openapi, dynamic) = (rendered.clone(), openapi.clone(), dynamic.clone());
        async move {
            let body = if dynamic.is_empty() {
                rendered.to_string()
            } else {
                let mut live = (*openapi).clone();
                for routes in &dynamic {
                    routes.document(&mut live);
                }
                live.to_string()
            };
            ([(CONTENT_TYPE, "application/json")], body).into_response()
        }
    };
    Router::new()
        .merge(SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::new(["/openapi.json"])))
        .route("/openapi.json", get(document))
        .route("/redoc", get(|| async { Html(REDOC_HTML) }))
        .route(
            "/redoc/redoc.standalone.js",
            get(|| async {
                ([(CONTENT_TYPE, "application/javascript"), (CACHE_CONTROL, "public, max-age=86400")], REDOC_JS)
                    .into_response()
            }),
        )
}

fn describe(code: ErrorCode) -> serde_json::Value {
    json!({
        "code": code.as_str(),
        "media_code": crate::dialect::media_code(code),
        "status": code.http_status(),
        "description": code.description(),
    })
}

/// Every error code, with its media-surface name, status and meaning.
#[utoipa::path(get, path = "/api/errors", tag = "health", responses((status = 200, description = "The error code catalogue")))]
pub async fn error_catalogue() -> Json<serde_json::Value> {
    Json(json!({ "errors": ErrorCode::ALL.iter().map(|c| describe(*c)).collect::<Vec<_>>() }))
}

/// One error code (framework or media spelling), as linked from `documentation_url`.
#[utoipa::path(get, path = "/api/errors/{code}", tag = "health", params(("code" = String, Path)),
    responses((status = 200, description = "The code's status and meaning"), (status = 404, description = "No such code")))]
pub async fn error_code(Path(code): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    ErrorCode::ALL
        .iter()
        .find(|c| c.as_str().eq_ignore_ascii_case(&code) || crate::dialect::media_code(**c).eq_ignore_ascii_case(&code))
        .map(|c| Json(describe(*c)))
        .ok_or_else(|| ApiError::not_found(format!("No error code `{code}`")))
}
