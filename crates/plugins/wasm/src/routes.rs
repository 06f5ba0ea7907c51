//! The HTTP surface of WebAssembly plugins: their routes, matched at run time (after the
//! router's own, before the 404), through the same conventions as every route (the edge's
//! dialects and metrics, rate limits, authentication), and their part of `/openapi.json`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts as _, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use nexus_identity::{Auth, MaybeAuth};
use nexus_web::ApiError;
use nexus_web::plugin::{BoxFuture, DynamicHandler, DynamicRoutes};
use serde_json::{Value, json};

use crate::host::{Loaded, WasmHost};
use crate::manifest::{Route, Segment};
use crate::runtime;

/// Request bodies handed to a plugin are read up to this size (the edge's own limit applies
/// first).
const MAX_BODY: usize = 8 * 1024 * 1024;

pub struct WasmRoutes(pub Arc<WasmHost>);

impl DynamicRoutes for WasmRoutes {
    fn route(&self, method: &axum::http::Method, path: &str) -> Option<DynamicHandler> {
        let (loaded, route) = self.0.route(method.as_str(), path)?;
        let host = self.0.clone();
        Some(Box::new(move |req: Request| -> BoxFuture<'static, Response> {
            Box::pin(async move { answer(host, loaded, route, req).await })
        }))
    }

    fn document(&self, openapi: &mut Value) {
        let Some(Value::Object(paths)) = openapi.get_mut("paths") else { return };
        for loaded in self.0.all() {
            if !loaded.slot().is_enabled() {
                continue;
            }
            for route in &loaded.routes {
                let parameters: Vec<Value> = route
                    .segments
                    .iter()
                    .filter_map(|s| match s {
                        Segment::Param(name) | Segment::Rest(name) => {
                            Some(json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
                        }
                        Segment::Literal(_) => None,
                    })
                    .collect();
                let error = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"type": "object"}}}});
                let mut op = json!({
                    "tags": [loaded.id()],
                    "summary": route.description,
                    "description": format!("Served by the WebAssembly plugin `{}` {}.", loaded.id(), loaded.manifest.version),
                    "operationId": format!("{}_{}_{}", loaded.id(), route.method.to_lowercase(), openapi_id(route)),
                    "parameters": parameters,
                    "responses": {
                        "200": {"description": "The plugin's answer"},
                        "500": error("PLUGIN_ERROR: the plugin trapped or exceeded its memory limit"),
                        "503": error("The plugin is disabled"),
                        "504": error("PLUGIN_ERROR: the plugin exceeded its time limit"),
                    },
                });
                if !route.public
                    && let Value::Object(map) = &mut op
                {
                    map.insert(String::from("security"), json!([{"bearer": []}, {"api_key": []}]));
                    if let Some(Value::Object(responses)) = map.get_mut("responses") {
                        responses.insert(String::from("401"), error("Not authenticated"));
                    }
                }
                let item = paths.entry(route.template.clone()).or_insert_with(|| json!({}));
                if let Value::Object(item) = item {
                    item.insert(route.method.to_lowercase(), op);
                }
            }
        }
    }
}

fn openapi_id(route: &Route) -> String {
    route
        .segments
        .iter()
        .skip(3)
        .map(|s| match s {
            Segment::Literal(l) | Segment::Param(l) | Segment::Rest(l) => l.replace(['-', '.', '~'], "_"),
        })
        .collect::<Vec<_>>()
        .join("_")
}

async fn answer(host: Arc<WasmHost>, loaded: Arc<Loaded>, route: Route, req: Request) -> Response {
    nexus_web::context::note_dynamic_route(Arc::from(route.template.as_str()), loaded.slot());
    let slot = loaded.slot();
    if !slot.is_enabled() {
        let why = slot.reason().map(|r| format!(": {r}")).unwrap_or_default();
        return ApiError::unavailable(format!("The plugin `{}` is disabled{why}", slot.id()))
            .with_extra("plugin_id", slot.id())
            .into_response();
    }
    let (mut parts, body) = req.into_parts();
    let caller = if route.public {
        match MaybeAuth::from_request_parts(&mut parts, &()).await {
            Ok(MaybeAuth(p)) => p,
            Err(e) => return e.into_response(),
        }
    } else {
        match Auth::from_request_parts(&mut parts, &()).await {
            Ok(Auth(p)) => Some(p),
            Err(e) => return e.into_response(),
        }
    };
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b.to_vec(),
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let request = runtime::Request {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers: parts
            .headers
            .iter()
            // Credentials stay with the host: the plugin learns the caller through `identity`.
            .filter(|(n, _)| !matches!(n.as_str(), "authorization" | "cookie" | "x-api-key" | "x-nexus-api-key"))
            .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str().to_string(), v.to_string())))
            .collect(),
        body,
    };
    match host.handle_request(&loaded, caller, request).await {
        Ok(response) => to_http(response),
        Err(e) => ApiError::from(nexus_kernel::error::Failure::from(e)).into_response(),
    }
}

/// The plugin's response, with what HTTP cannot carry dropped.
fn to_http(r: runtime::Response) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Body::from(r.body));
    *response.status_mut() = status;
    for (name, value) in r.headers {
        let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str())) else {
            continue;
        };
        if matches!(name.as_str(), "content-length" | "transfer-encoding" | "connection" | "set-cookie") {
            continue;
        }
        response.headers_mut().append(name, value);
    }
    response
}
