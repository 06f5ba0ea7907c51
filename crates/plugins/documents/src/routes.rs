//! HTTP surface of the document database: `POST /api/database/query`, `POST
//! /api/database/bulk`, `/api/database/collections*`, `/api/collections/{name}/documents*` and,
//! for collections whose name no other route owns, `/api/{name}` and `/api/{name}/{id}`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use nexus_identity::Auth;
use nexus_web::{ApiError, Json, Path};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::cursor;
use crate::engine::Invalid;
use crate::engine::filter::Filter;
use crate::engine::project::Projection;
use crate::engine::sort::Sort;
use crate::engine::update::Update;
use crate::operation::{Answer, QueryBody};
use crate::service::{BulkOp, DocError, Documents, Find};

type Api = State<Arc<Documents>>;

fn api_error(e: DocError) -> ApiError {
    ApiError::from(nexus_kernel::error::Failure::from(e))
}

fn invalid(i: Invalid) -> ApiError {
    api_error(DocError::Invalid(i))
}

pub fn all(documents: Arc<Documents>) -> nexus_web::Routes {
    OpenApiRouter::new()
        .routes(routes!(query))
        .routes(routes!(bulk))
        .routes(routes!(create_collection, list_collections))
        .routes(routes!(get_collection, drop_collection))
        .routes(routes!(create_index, list_indexes))
        .routes(routes!(list_documents, create_document))
        .routes(routes!(get_document, replace_document, patch_document, delete_document))
        .routes(routes!(list_short, create_short))
        .routes(routes!(get_short, replace_short, patch_short, delete_short))
        .with_state(documents)
}

/// Run a database operation on a collection.
#[utoipa::path(post, path = "/api/database/query", tag = "documents", request_body = QueryBody,
    responses((status = 200, description = "`{count, data, execution_time_ms}` for reads; counts for writes"),
              (status = 400, description = "VALIDATION_ERROR naming the place"), (status = 403), (status = 409)))]
async fn query(State(docs): Api, Auth(p): Auth, Json(body): Json<QueryBody>) -> Result<Response, ApiError> {
    Ok(match crate::operation::run(&docs, &p, body).await.map_err(api_error)? {
        Answer::Value(v) => Json(v).into_response(),
        Answer::Text(t) => ([(header::CONTENT_TYPE, "application/json")], t).into_response(),
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    #[schema(pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]
    pub collection: String,
    #[schema(value_type = Vec<Object>)]
    pub operations: Vec<Value>,
}

fn bulk_op(v: &Value, i: usize) -> Result<BulkOp, Invalid> {
    let at = |k: &str| format!("operations[{i}].{k}");
    let kind =
        v.get("type").and_then(Value::as_str).ok_or_else(|| Invalid::new(at("type"), "Each operation has a `type`"))?;
    let filter = || match v.get("filter") {
        None | Some(Value::Null) => Ok(Filter::all()),
        Some(f) => Filter::parse(f, &at("filter")),
    };
    let upsert = v.get("upsert").and_then(Value::as_bool).unwrap_or(false);
    Ok(match kind {
        "insert" => BulkOp::Insert(
            v.get("document").cloned().ok_or_else(|| Invalid::new(at("document"), "`insert` needs `document`"))?,
        ),
        "update" | "update_one" | "update_many" => {
            let update = v.get("update").ok_or_else(|| Invalid::new(at("update"), "`update` needs `update`"))?;
            BulkOp::Update {
                filter: filter()?,
                update: Update::parse(update, &at("update"))?,
                many: kind != "update_one",
                upsert,
            }
        }
        "replace" | "replace_one" => BulkOp::Replace {
            filter: filter()?,
            document: v
                .get("document")
                .or(v.get("replacement"))
                .cloned()
                .ok_or_else(|| Invalid::new(at("document"), "`replace` needs `document`"))?,
            upsert,
        },
        "delete" | "delete_one" | "delete_many" => BulkOp::Delete { filter: filter()?, many: kind != "delete_one" },
        other => {
            return Err(Invalid::new(
                at("type"),
                format!(
                    "Unknown operation type `{other}`; allowed: insert, update, update_one, replace, delete, delete_one"
                ),
            ));
        }
    })
}

/// Several writes in one transaction: all or nothing.
#[utoipa::path(post, path = "/api/database/bulk", tag = "documents", request_body = BulkBody,
    responses((status = 200, description = "`{success, results: {inserted, updated, deleted}, errors}`; on failure nothing is written and `errors` names the failing operation")))]
async fn bulk(State(docs): Api, Auth(p): Auth, Json(body): Json<BulkBody>) -> Result<Json<Value>, ApiError> {
    let mut ops = Vec::with_capacity(body.operations.len());
    for (i, v) in body.operations.iter().enumerate() {
        ops.push(bulk_op(v, i).map_err(invalid)?);
    }
    match docs.bulk(&p, &body.collection, ops).await.map_err(api_error)? {
        Ok(counts) => Ok(Json(json!({ "success": true, "results": counts, "errors": [] }))),
        Err((index, e)) => {
            let e = api_error(e);
            Ok(Json(json!({
                "success": false,
                "results": { "inserted": 0, "updated": 0, "deleted": 0 },
                "errors": [{ "index": index, "code": e.code.as_str(), "message": e.message, "details": e.details }],
            })))
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectionBody {
    #[schema(pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]
    pub name: String,
    /// JSON Schema (subset) every document must satisfy.
    #[schema(value_type = Object)]
    pub schema: Option<Value>,
    #[schema(value_type = Vec<Object>)]
    pub indexes: Option<Vec<IndexBody>>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexBody {
    #[schema(value_type = Object)]
    pub keys: Value,
    pub unique: Option<bool>,
}

/// Create a collection (`documents.admin`).
#[utoipa::path(post, path = "/api/database/collections", tag = "documents", request_body = CollectionBody,
    responses((status = 201), (status = 409, description = "CONFLICT: exists")))]
async fn create_collection(
    State(docs): Api,
    Auth(p): Auth,
    Json(body): Json<CollectionBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let indexes = body.indexes.unwrap_or_default().into_iter().map(|i| (i.keys, i.unique.unwrap_or(false))).collect();
    docs.create_collection(&p, &body.name, body.schema, indexes).await.map_err(api_error)?;
    let out = docs.get_collection(&p, &body.name).await.map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(out)))
}

/// List collections with their document counts.
#[utoipa::path(get, path = "/api/database/collections", tag = "documents", responses((status = 200)))]
async fn list_collections(State(docs): Api, Auth(p): Auth) -> Result<Json<Value>, ApiError> {
    let data = docs.list_collections(&p).await.map_err(api_error)?;
    Ok(Json(json!({ "data": data, "total": data.len() })))
}

/// A collection with its stats and indexes.
#[utoipa::path(get, path = "/api/database/collections/{name}", tag = "documents", params(("name" = String, Path, pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", description = "The collection")), responses((status = 200), (status = 404)))]
async fn get_collection(State(docs): Api, Auth(p): Auth, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(docs.get_collection(&p, &name).await.map_err(api_error)?))
}

/// Drop a collection, its documents and indexes (`documents.admin`).
#[utoipa::path(delete, path = "/api/database/collections/{name}", tag = "documents", params(("name" = String, Path, pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", description = "The collection")), responses((status = 204), (status = 404)))]
async fn drop_collection(State(docs): Api, Auth(p): Auth, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    docs.drop_collection(&p, &name).await.map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Create an index: `{"keys": {"price": 1}, "unique": true}`.
#[utoipa::path(post, path = "/api/database/collections/{name}/indexes", tag = "documents", params(("name" = String, Path, pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", description = "The collection")), request_body = IndexBody,
    responses((status = 201), (status = 409, description = "CONFLICT: exists, or duplicates for a unique index")))]
async fn create_index(
    State(docs): Api,
    Auth(p): Auth,
    Path(name): Path<String>,
    Json(body): Json<IndexBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let out = docs.create_index(&p, &name, &body.keys, body.unique.unwrap_or(false)).await.map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(out)))
}

/// A collection's indexes.
#[utoipa::path(get, path = "/api/database/collections/{name}/indexes", tag = "documents", params(("name" = String, Path, pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", description = "The collection")), responses((status = 200)))]
async fn list_indexes(State(docs): Api, Auth(p): Auth, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let data = docs.indexes(&p, &name).await.map_err(api_error)?;
    Ok(Json(json!({ "data": data })))
}

/// A filter value from a query string: a number, `true`/`false`/`null`, a JSON-quoted
/// string (`"123"` stays text), else the text itself.
fn typed(v: &str) -> Value {
    let t = v.trim();
    if t.starts_with('"')
        && t.ends_with('"')
        && t.len() >= 2
        && let Ok(s) = serde_json::from_str::<String>(t)
    {
        return Value::String(s);
    }
    match t {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        "null" => return Value::Null,
        _ => {}
    }
    if let Ok(i) = t.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(f) = t.parse::<f64>()
        && f.is_finite()
        && t.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
    {
        return Value::from(f);
    }
    Value::String(v.to_string())
}

/// The query of the list routes, for the OpenAPI document: [`list_in`] reads the raw query,
/// where `filter` nests (`filter[price][$gte]=100`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ListQuery {
    /// The page, from 1 (not with `cursor`).
    #[param(minimum = 1)]
    page: Option<u64>,
    /// Documents per page (default 20; more than 100 is 100).
    #[param(minimum = 1)]
    limit: Option<u64>,
    /// `next_cursor` or `prev_cursor` of an earlier page of the same list: keyset pages.
    cursor: Option<String>,
    /// Sort keys, comma separated, `-` for descending: `-price,name`.
    sort: Option<String>,
    /// The fields to return, comma separated.
    fields: Option<String>,
    /// `filter[field]=value` (equality) or `filter[field][$op]=value` with `$eq $ne $gt $gte
    /// $lt $lte $in $nin $exists $regex` (lists comma separated).
    #[param(style = DeepObject, explode, value_type = Object)]
    filter: Option<std::collections::HashMap<String, String>>,
}

/// The list conventions (`page`, `limit`, `filter[f]`, `filter[f][$op]`, `sort=-price,name`,
/// `fields=a,b`, or `cursor` for keyset pages) turned into a `find`.
struct ListParams {
    find: Find,
    page: u64,
    limit: u64,
    /// `Some` in cursor mode (a `cursor` parameter, even empty): the token given.
    cursor: Option<String>,
    /// The filter and sort parameters, which a cursor is bound to.
    query: Vec<(String, String)>,
}

const MAX_LIMIT: u64 = 100;

fn list_params(raw: Option<&str>) -> Result<ListParams, ApiError> {
    let mut filter = serde_json::Map::new();
    let mut page = 1u64;
    let mut limit = 20u64;
    let mut sort = Sort::default();
    let mut fields = None;
    let mut cursor = None;
    let mut page_given = false;
    let mut query = Vec::new();
    for (name, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if name == "sort" || name.starts_with("filter[") {
            query.push((name.to_string(), value.to_string()));
        }
        match name.as_ref() {
            "cursor" => cursor = Some(value.into_owned()),
            "page" => {
                page_given = true;
                page = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| ApiError::invalid_field("page", "Must be a whole number from 1"))?;
            }
            "limit" => {
                limit = value
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| ApiError::invalid_field("limit", format!("Must be between 1 and {MAX_LIMIT}")))?
                    .min(MAX_LIMIT);
            }
            "sort" => sort = Sort::parse_list(&value, "sort").map_err(invalid)?,
            "fields" => {
                let list: Vec<Value> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_string()))
                    .collect();
                fields = Projection::parse(&Value::Array(list), "fields").map_err(invalid)?;
            }
            other if other.starts_with("filter[") => {
                let rest = other.strip_prefix("filter[").unwrap_or_default();
                let (field, rest) = rest
                    .split_once(']')
                    .ok_or_else(|| ApiError::invalid_field(other, "Expected filter[field] or filter[field][$op]"))?;
                let value = match rest {
                    "" => typed(&value),
                    r => {
                        let op = r
                            .strip_prefix('[')
                            .and_then(|r| r.strip_suffix(']'))
                            .ok_or_else(|| ApiError::invalid_field(other, "Expected filter[field][$op]"))?;
                        let arg = match op {
                            "$in" | "$nin" | "$all" => Value::Array(value.split(',').map(typed).collect()),
                            "$regex" | "$options" => Value::String(value.to_string()),
                            "$exists" => Value::Bool(!matches!(value.trim(), "false" | "0")),
                            "$size" => typed(&value),
                            _ => typed(&value),
                        };
                        let mut ops = match filter.remove(field) {
                            Some(Value::Object(m)) if m.keys().all(|k| k.starts_with('$')) => m,
                            Some(eq) => serde_json::Map::from_iter([("$eq".to_string(), eq)]),
                            None => serde_json::Map::new(),
                        };
                        ops.insert(op.to_string(), arg);
                        Value::Object(ops)
                    }
                };
                filter.insert(field.to_string(), value);
            }
            _ => {}
        }
    }
    if cursor.is_some() && page_given {
        return Err(ApiError::invalid_field("cursor", "Use either `page` or `cursor`, not both"));
    }
    query.sort();
    let filter = Filter::parse(&Value::Object(filter), "filter").map_err(invalid)?;
    Ok(ListParams {
        find: Find {
            filter: Some(filter),
            sort,
            skip: (page - 1).saturating_mul(limit),
            limit: Some(limit),
            projection: fields,
        },
        page,
        limit,
        cursor,
        query,
    })
}

async fn list_in(
    docs: &Documents,
    p: &nexus_identity::Principal,
    name: &str,
    raw: Option<&str>,
) -> Result<Json<Value>, ApiError> {
    let params = list_params(raw)?;
    if let Some(token) = &params.cursor {
        return list_keyset(docs, p, name, &params, token).await;
    }
    let (data, _) = docs.find(p, name, &params.find).await.map_err(api_error)?;
    let total = docs.count(p, name, params.find.filter.as_ref().unwrap_or(&Filter::all())).await.map_err(api_error)?;
    let total_pages = total.div_ceil(params.limit);
    Ok(Json(json!({
        "data": data,
        "pagination": {
            "page": params.page, "limit": params.limit, "total": total, "total_pages": total_pages,
            "has_next": params.page < total_pages, "has_prev": params.page > 1,
        }
    })))
}

/// A cursor page: `next_cursor` / `prev_cursor` point past its last / before its first row,
/// `null` at either end.
async fn list_keyset(
    docs: &Documents,
    p: &nexus_identity::Principal,
    name: &str,
    params: &ListParams,
    token: &str,
) -> Result<Json<Value>, ApiError> {
    let key = &docs.kernel().cursor_key;
    let signature = cursor::signature(key, name, &params.query);
    let from = match token.trim() {
        "" => None,
        t => {
            let c = cursor::open(key, t).filter(|c| c.q == signature).ok_or_else(|| {
                ApiError::invalid_field(
                    "cursor",
                    "Not a cursor of this list: cursors come from `next_cursor`/`prev_cursor` of the same collection, filter and sort",
                )
            })?;
            Some(c)
        }
    };
    let back = from.as_ref().is_some_and(|c| c.back);
    let page =
        docs.find_keyset(p, name, &params.find, from.as_ref().map(|c| &c.edge), back).await.map_err(api_error)?;
    // Rows lie beyond the page in the direction read when `more`; the other way whenever the
    // page started from a cursor.
    let (has_next, has_prev) = if back { (true, page.more) } else { (page.more, from.is_some()) };
    let seal = |edge: Option<crate::service::Edge>, back: bool| {
        edge.map(|edge| cursor::seal(key, &cursor::Cursor { q: signature.clone(), edge, back }))
    };
    let next = if has_next { seal(page.last.clone(), false) } else { None };
    let prev = if has_prev { seal(page.first.clone(), true) } else { None };
    Ok(Json(json!({
        "data": page.docs,
        "pagination": {
            "cursor": (!token.is_empty()).then_some(token),
            "next_cursor": next,
            "prev_cursor": prev,
            "has_more": next.is_some(),
            "limit": params.limit,
        }
    })))
}

async fn create_in(
    docs: &Documents,
    p: &nexus_identity::Principal,
    name: &str,
    body: Value,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ids = docs.insert(p, name, vec![body]).await.map_err(api_error)?;
    let id = ids.into_iter().next().unwrap_or_default();
    let mut doc = docs.get(p, name, &id).await.map_err(api_error)?;
    // The seed's REST examples name the key `id`; `_id` stays for MongoDB clients.
    if let Value::Object(m) = &mut doc {
        m.entry("id").or_insert(Value::String(id));
    }
    Ok((StatusCode::CREATED, Json(doc)))
}

async fn replace_in(
    docs: &Documents,
    p: &nexus_identity::Principal,
    name: &str,
    id: &str,
    body: Value,
) -> Result<Json<Value>, ApiError> {
    let r = docs
        .update(p, name, BulkOp::Replace { filter: Documents::id_filter(id), document: body, upsert: false })
        .await
        .map_err(api_error)?;
    if r.matched == 0 {
        return Err(ApiError::not_found(format!("No document `{id}` in `{name}`")));
    }
    Ok(Json(docs.get(p, name, id).await.map_err(api_error)?))
}

/// PATCH: update operators, or a plain object merged with `$set`.
async fn patch_in(
    docs: &Documents,
    p: &nexus_identity::Principal,
    name: &str,
    id: &str,
    body: Value,
) -> Result<Json<Value>, ApiError> {
    let spec = match &body {
        Value::Object(m) if m.keys().any(|k| k.starts_with('$')) => body,
        Value::Object(m) => {
            let fields: serde_json::Map<String, Value> =
                m.iter().filter(|(k, _)| *k != "_id" && *k != "id").map(|(k, v)| (k.clone(), v.clone())).collect();
            json!({ "$set": fields })
        }
        _ => return Err(ApiError::invalid_field("body", "A JSON object of fields or update operators")),
    };
    let update = Update::parse(&spec, "body").map_err(invalid)?;
    let r = docs
        .update(p, name, BulkOp::Update { filter: Documents::id_filter(id), update, many: false, upsert: false })
        .await
        .map_err(api_error)?;
    if r.matched == 0 {
        return Err(ApiError::not_found(format!("No document `{id}` in `{name}`")));
    }
    Ok(Json(docs.get(p, name, id).await.map_err(api_error)?))
}

async fn delete_in(
    docs: &Documents,
    p: &nexus_identity::Principal,
    name: &str,
    id: &str,
) -> Result<StatusCode, ApiError> {
    let n = docs.delete(p, name, &Documents::id_filter(id), false).await.map_err(api_error)?;
    if n == 0 {
        return Err(ApiError::not_found(format!("No document `{id}` in `{name}`")));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// List a collection's documents with the list conventions.
#[utoipa::path(get, path = "/api/collections/{name}/documents", tag = "documents", params(("name" = String, Path, pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", description = "The collection"), ListQuery), responses((status = 200), (status = 400)))]
async fn list_documents(
    State(docs): Api,
    Auth(p): Auth,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    list_in(&docs, &p, &name, q.as_deref()).await
}

/// Insert a document (201).
#[utoipa::path(post, path = "/api/collections/{name}/documents", tag = "documents", params(("name" = String, Path, pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", description = "The collection")), request_body(content = Object, description = "A JSON document (an object)"), responses((status = 201)))]
async fn create_document(
    State(docs): Api,
    Auth(p): Auth,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    create_in(&docs, &p, &name, body).await
}

/// One document.
#[utoipa::path(get, path = "/api/collections/{name}/documents/{id}", tag = "documents", params(("name" = String, Path, pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", description = "The collection"), ("id" = String, Path, description = "The document's `_id`")), responses((status = 200), (status = 404)))]
async fn get_document(
    State(docs): Api,
    Auth(p): Auth,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(docs.get(&p, &name, &id).await.map_err(api_error)?))
}

/// Replace a document.
#[utoipa::path(put, path = "/api/collections/{name}/documents/{id}", tag = "documents", params(("name" = String, Path, pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", description = "The collection"), ("id" = String, Path, description = "The document's `_id`")), request_body(content = Object, description = "A JSON document (an object)"), responses((status = 200), (status = 404)))]
async fn replace_document(
    State(docs): Api,
    Auth(p): Auth,
    Path((name, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    replace_in(&docs, &p, &name, &id, body).await
}

/// Change fields of a document.
#[utoipa::path(patch, path = "/api/collections/{name}/documents/{id}", tag = "documents", params(("name" = String, Path, pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", description = "The collection"), ("id" = String, Path, description = "The document's `_id`")), request_body(content = Object, description = "A JSON document (an object)"), responses((status = 200), (status = 404)))]
async fn patch_document(
    State(docs): Api,
    Auth(p): Auth,
    Path((name, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    patch_in(&docs, &p, &name, &id, body).await
}

/// Delete a document (204).
#[utoipa::path(delete, path = "/api/collections/{name}/documents/{id}", tag = "documents", params(("name" = String, Path, pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", description = "The collection"), ("id" = String, Path, description = "The document's `_id`")), responses((status = 204), (status = 404)))]
async fn delete_document(
    State(docs): Api,
    Auth(p): Auth,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    delete_in(&docs, &p, &name, &id).await
}

/// `/api/{name}` is also every unknown `/api/...` path: a collection that does not exist is
/// a 404 before any credential is asked for, as an unknown path was before.
async fn existing(
    docs: &Documents,
    name: &str,
    auth: Result<Auth, ApiError>,
) -> Result<nexus_identity::Principal, ApiError> {
    if !docs.collection_exists(name).await.map_err(api_error)? {
        return Err(ApiError::not_found(format!("No route or collection `{name}`")));
    }
    auth.map(|Auth(p)| p)
}

/// A collection as a REST resource, for names no other route owns (`/api/products`).
#[utoipa::path(get, path = "/api/{name}", tag = "documents", params(("name" = String, Path, pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", description = "The collection"), ListQuery), responses((status = 200), (status = 400)))]
async fn list_short(
    State(docs): Api,
    auth: Result<Auth, ApiError>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let p = existing(&docs, &name, auth).await?;
    list_in(&docs, &p, &name, q.as_deref()).await
}

/// Insert into a collection (`POST /api/products` → 201).
#[utoipa::path(post, path = "/api/{name}", tag = "documents", params(("name" = String, Path, pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", description = "The collection")), request_body(content = Object, description = "A JSON document (an object)"), responses((status = 201)))]
async fn create_short(
    State(docs): Api,
    Auth(p): Auth,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    create_in(&docs, &p, &name, body).await
}

#[utoipa::path(get, path = "/api/{name}/{id}", tag = "documents", params(("name" = String, Path, pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", description = "The collection"), ("id" = String, Path, description = "The document's `_id`")), responses((status = 200), (status = 404)))]
async fn get_short(
    State(docs): Api,
    auth: Result<Auth, ApiError>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let p = existing(&docs, &name, auth).await?;
    Ok(Json(docs.get(&p, &name, &id).await.map_err(api_error)?))
}

#[utoipa::path(put, path = "/api/{name}/{id}", tag = "documents", params(("name" = String, Path, pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", description = "The collection"), ("id" = String, Path, description = "The document's `_id`")), request_body(content = Object, description = "A JSON document (an object)"), responses((status = 200), (status = 404)))]
async fn replace_short(
    State(docs): Api,
    auth: Result<Auth, ApiError>,
    Path((name, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let p = existing(&docs, &name, auth).await?;
    replace_in(&docs, &p, &name, &id, body).await
}

#[utoipa::path(patch, path = "/api/{name}/{id}", tag = "documents", params(("name" = String, Path, pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", description = "The collection"), ("id" = String, Path, description = "The document's `_id`")), request_body(content = Object, description = "A JSON document (an object)"), responses((status = 200), (status = 404)))]
async fn patch_short(
    State(docs): Api,
    auth: Result<Auth, ApiError>,
    Path((name, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let p = existing(&docs, &name, auth).await?;
    patch_in(&docs, &p, &name, &id, body).await
}

/// `DELETE /api/orders/456` → 204.
#[utoipa::path(delete, path = "/api/{name}/{id}", tag = "documents", params(("name" = String, Path, pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", description = "The collection"), ("id" = String, Path, description = "The document's `_id`")), responses((status = 204), (status = 404)))]
async fn delete_short(
    State(docs): Api,
    auth: Result<Auth, ApiError>,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let p = existing(&docs, &name, auth).await?;
    delete_in(&docs, &p, &name, &id).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn request_bodies_keep_sort_key_order() {
        let body = br#"{"collection":"x","operation":"aggregate","sort":{"n":-1,"_id":1},"pipeline":[{"$sort":{"n":-1,"_id":1}}]}"#;
        let q: super::QueryBody = nexus_web::extract::parse_json(body).unwrap();
        let keys: Vec<&str> = q.sort.as_ref().unwrap().0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["n", "_id"]);
        let stage = &q.pipeline.as_ref().unwrap()[0];
        let keys: Vec<&str> = stage.order.as_ref().unwrap().0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["n", "_id"]);
    }
}
