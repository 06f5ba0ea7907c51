//! Makes the OpenAPI document assembled from every plugin's annotations valid and true to what
//! the server answers: one schema name per type, unique operation ids, a description on every
//! response, and the error answers the shared layers give (validation, authentication, media
//! type, size, rate limits, a disabled plugin) documented in the dialect of each path.
//!
//! Done once at start, as each plugin's part is added and then on the whole, so that a plugin
//! author writes only what is particular to their routes.

use std::collections::{BTreeMap, BTreeSet};

use nexus_web::Dialect;
use serde_json::{Map, Value, json};
use utoipa::openapi::OpenApi;

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "options", "head", "patch"];

/// Routes that take no credential (probes, documentation, sign-in, the WebSocket whose
/// authentication is its first message). Every other route authenticates its caller (the
/// `Auth` extractor) unless its annotation declares its own `security`.
const PUBLIC: &[&str] = &[
    "/health",
    "/api/health",
    "/api/v1/health",
    "/livez",
    "/readyz",
    "/metrics",
    "/api/versions",
    "/api/errors",
    "/api/errors/{code}",
    "/ws",
    "/auth/login",
    "/auth/refresh",
    "/api/auth/login",
    "/api/auth/refresh",
    "/v2/auth/login",
    "/v2/auth/refresh",
    "/api/v1/auth/login",
    "/api/media/Users/authenticatebyname",
    "/api/media/System/Info/Public",
];

/// The document being assembled from the base and every plugin's part, as JSON.
#[derive(Debug)]
pub struct Document {
    doc: Value,
}

impl Document {
    pub fn new(base: &OpenApi) -> Self {
        let mut doc = serde_json::to_value(base).unwrap_or_else(|_| json!({}));
        if let Value::Object(map) = &mut doc {
            map.entry("paths").or_insert_with(|| json!({}));
            let components = map.entry("components").or_insert_with(|| json!({}));
            if let Value::Object(components) = components {
                components.entry("schemas").or_insert_with(|| json!({}));
            }
        }
        Self { doc }
    }

    /// Adds plugin `plugin_id`'s part. Its component schemas that another plugin already
    /// defined differently (`CreateBody` of the webhooks and of the secrets) are renamed
    /// (`WebhooksCreateBody`), so that each route points at its own type.
    pub fn add(&mut self, plugin_id: &str, part: &OpenApi) {
        let Ok(mut part) = serde_json::to_value(part) else { return };
        let prefix = pascal(plugin_id);
        let mut renames = BTreeMap::new();
        if let (Some(Value::Object(mine)), Some(Value::Object(known))) =
            (part.pointer("/components/schemas"), self.doc.pointer("/components/schemas"))
        {
            for (name, schema) in mine {
                if known.get(name).is_some_and(|existing| existing != schema) {
                    renames.insert(name.clone(), format!("{prefix}{name}"));
                }
            }
        }
        rewrite_refs(&mut part, &renames);
        if let Some(Value::Object(mine)) = part.pointer_mut("/components/schemas").map(Value::take)
            && let Some(Value::Object(known)) = self.doc.pointer_mut("/components/schemas")
        {
            for (name, schema) in mine {
                let name = renames.get(&name).cloned().unwrap_or(name);
                known.entry(name).or_insert(schema);
            }
        }
        if let (Some(Value::Object(paths)), Some(Value::Object(all))) =
            (part.get_mut("paths").map(Value::take), self.doc.get_mut("paths"))
        {
            for (path, item) in paths {
                match (all.get_mut(&path), item) {
                    (Some(Value::Object(existing)), Value::Object(item)) => existing.extend(item),
                    (_, item) => {
                        all.insert(path, item);
                    }
                }
            }
        }
    }

    /// The tags, with their descriptions, in order.
    pub fn set_tags(&mut self, tags: &[(&str, &str)]) {
        let tags: Vec<Value> =
            tags.iter().map(|(name, description)| json!({ "name": name, "description": description })).collect();
        if let Value::Object(map) = &mut self.doc {
            map.insert("tags".into(), Value::Array(tags));
        }
    }

    /// Sets `info.version`.
    pub fn set_version(&mut self, version: &str) {
        if let Some(Value::Object(info)) = self.doc.get_mut("info") {
            info.insert("version".into(), Value::String(version.to_string()));
        }
    }
}

fn rewrite_refs(v: &mut Value, renames: &BTreeMap<String, String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/components/schemas/")
                && let Some(to) = renames.get(name)
            {
                *r = format!("#/components/schemas/{to}");
            }
            for child in map.values_mut() {
                rewrite_refs(child, renames);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|child| rewrite_refs(child, renames)),
        _ => {}
    }
}

fn pascal(id: &str) -> String {
    id.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

/// What the shared layers in front of a route may answer, for [`complete`].
pub struct Layers<'a> {
    /// The error dialect of a path.
    pub dialect: &'a dyn Fn(&str) -> Dialect,
    /// Whether requests to a path are rate-limited.
    pub rate_limited: &'a dyn Fn(&str) -> bool,
    /// Whether the plugin serving a path can be disabled (its routes then answer 503).
    pub can_be_disabled: &'a dyn Fn(&str) -> bool,
}

/// The assembled document, completed (see the module's documentation). JSON, not utoipa's
/// types: they cannot read back everything they write (an any-value schema, `{}`).
pub fn complete(document: Document, layers: &Layers<'_>) -> Value {
    let mut doc = document.doc;
    if let Some(Value::Object(schemas)) = doc.pointer_mut("/components/schemas") {
        schemas.insert("FrameworkError".into(), framework_error(false));
        schemas.insert("MediaError".into(), framework_error(true));
        schemas.insert("V1Error".into(), v1_error());
    }
    let mut operation_ids = BTreeSet::new();
    if let Some(Value::Object(paths)) = doc.get_mut("paths") {
        for (path, item) in paths.iter_mut() {
            let Value::Object(item) = item else { continue };
            for method in METHODS {
                let Some(Value::Object(op)) = item.get_mut(method) else { continue };
                unique_operation_id(op, method, path, &mut operation_ids);
                declare_path_parameters(op, path);
                add_layer_answers(op, method, path, layers);
                describe_responses(op);
            }
        }
    }
    doc
}

/// Operation ids are function names, which repeat across surfaces (`login` on four of them).
fn unique_operation_id(op: &mut Map<String, Value>, method: &str, path: &str, seen: &mut BTreeSet<String>) {
    let base = op.get("operationId").and_then(Value::as_str).map_or_else(|| format!("{method}_{path}"), str::to_string);
    let mut id = base.clone();
    if seen.contains(&id) {
        let slug: String = path
            .split('/')
            .filter(|s| !s.is_empty() && !s.starts_with('{'))
            .collect::<Vec<_>>()
            .join("_")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
            .collect();
        id = format!("{base}_{method}_{slug}");
        let mut n = 2;
        while seen.contains(&id) {
            id = format!("{base}_{method}_{slug}_{n}");
            n += 1;
        }
    }
    seen.insert(id.clone());
    op.insert("operationId".into(), Value::String(id));
}

/// Every `{name}` of the path template is a required parameter; annotations that leave one
/// out make the document invalid.
fn declare_path_parameters(op: &mut Map<String, Value>, path: &str) {
    let names: Vec<&str> =
        path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
    if names.is_empty() {
        return;
    }
    let params = op.entry("parameters").or_insert_with(|| json!([]));
    let Value::Array(params) = params else { return };
    for name in names {
        let declared = params.iter().any(|p| p["in"] == "path" && p["name"] == name);
        if !declared {
            params.push(json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }));
        }
    }
}

fn add_layer_answers(op: &mut Map<String, Value>, method: &str, path: &str, layers: &Layers<'_>) {
    let error = match (layers.dialect)(path) {
        Dialect::V1 => "V1Error",
        Dialect::Media => "MediaError",
        _ => "FrameworkError",
    };
    let has_body = op.contains_key("requestBody");
    let has_params = op.get("parameters").and_then(Value::as_array).is_some_and(|p| !p.is_empty());
    let secured = op.contains_key("security") || !PUBLIC.contains(&path);
    if secured && !op.contains_key("security") {
        op.insert("security".into(), json!([{ "bearer": [] }, { "api_key": [] }]));
    }
    let mut add = vec![];
    if has_body || has_params || matches!(method, "post" | "put" | "patch") {
        add.push(("400", "The request is invalid (`VALIDATION_ERROR`, with the fields in `details`)"));
    }
    if secured {
        add.push(("401", "No valid credential (`UNAUTHORIZED`)"));
    }
    if path.contains('{') {
        add.push(("404", "Not found (`RESOURCE_NOT_FOUND`)"));
    }
    if has_body {
        add.push(("413", "The body is larger than the server accepts (`PAYLOAD_TOO_LARGE`)"));
        add.push(("415", "The body is not `application/json` (`UNSUPPORTED_MEDIA_TYPE`)"));
    }
    if (layers.rate_limited)(path) {
        add.push(("429", "Rate limit exceeded (`RATE_LIMIT_EXCEEDED`); see `Retry-After`"));
    }
    if (layers.can_be_disabled)(path) {
        add.push(("503", "The plugin serving this route is disabled (`SERVICE_UNAVAILABLE`)"));
    }
    let Some(Value::Object(responses)) = op.get_mut("responses") else { return };
    for (status, description) in add {
        responses.entry(status).or_insert_with(|| {
            json!({
                "description": description,
                "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{error}") } } }
            })
        });
    }
}

/// Every response needs a description; an annotation without one gets the status's name.
fn describe_responses(op: &mut Map<String, Value>) {
    let Some(Value::Object(responses)) = op.get_mut("responses") else { return };
    for (status, response) in responses.iter_mut() {
        let Value::Object(response) = response else { continue };
        let missing = response.get("description").and_then(Value::as_str).is_none_or(str::is_empty);
        if missing && !response.contains_key("$ref") {
            let reason = status
                .parse::<u16>()
                .ok()
                .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Response");
            response.insert("description".into(), Value::String(reason.to_string()));
        }
    }
}

fn framework_error(media: bool) -> Value {
    let mut inner = json!({
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": { "type": "string", "description": "One of the codes at `/api/errors`" },
            "message": { "type": "string" },
            "details": { "type": "array", "items": {
                "type": "object",
                "properties": { "field": { "type": "string" }, "message": { "type": "string" } }
            } },
            "request_id": { "type": "string" },
            "timestamp": { "type": "string", "format": "date-time" }
        }
    });
    if media && let Some(Value::Object(props)) = inner.get_mut("properties") {
        props.insert("documentation_url".into(), json!({ "type": "string" }));
        // The media dialect names the fields in one line (see `nexus_web::dialect`).
        props.insert(
            "details".into(),
            json!({ "type": "string", "description": "The invalid fields, `field: message` joined by `; `" }),
        );
    }
    json!({ "type": "object", "required": ["error"], "properties": { "error": inner } })
}

fn v1_error() -> Value {
    json!({
        "type": "object",
        "required": ["success", "error", "message"],
        "properties": {
            "success": { "type": "boolean", "enum": [false] },
            "error": { "type": "string", "description": "The status's name (`Not Found`)" },
            "message": { "type": "string" },
            "code": { "type": "string" },
            "request_id": { "type": "string" }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pascal_case_of_plugin_ids() {
        assert_eq!(pascal("webhooks"), "Webhooks");
        assert_eq!(pascal("my-plugin_x"), "MyPluginX");
    }
}
