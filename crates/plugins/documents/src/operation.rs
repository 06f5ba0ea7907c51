//! One operation on a collection, as `POST /api/database/query` and the WebSocket RPC methods
//! `documents.<operation>` take it: parsing, the permission checks of the service, the answer.

use std::time::Instant;

use nexus_kernel::principal::Principal;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::engine::Invalid;
use crate::engine::aggregate::parse_pipeline;
use crate::engine::filter::Filter;
use crate::engine::ordered::{Ordered, StageSpec};
use crate::engine::path::Path as FieldPath;
use crate::engine::project::Projection;
use crate::engine::sort::Sort;
use crate::engine::update::Update;
use crate::service::{BulkOp, DocError, Documents, Find, Found, Joined};

/// Every operation `run` knows.
pub const OPERATIONS: [&str; 13] = [
    "find",
    "find_one",
    "count",
    "distinct",
    "aggregate",
    "insert_one",
    "insert_many",
    "update_one",
    "update_many",
    "replace_one",
    "delete_one",
    "delete_many",
    "explain",
];

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    #[schema(pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]
    pub collection: String,
    #[schema(
        pattern = r"^(find|find_one|count|distinct|aggregate|insert_one|insert_many|update_one|update_many|replace_one|delete_one|delete_many|explain)$"
    )]
    pub operation: String,
    #[schema(value_type = Object)]
    pub filter: Option<Value>,
    /// A list of field names, or `{field: 1|0}`.
    #[schema(value_type = Object)]
    pub projection: Option<Value>,
    #[schema(value_type = Object)]
    pub sort: Option<Ordered>,
    pub skip: Option<u64>,
    pub limit: Option<u64>,
    #[schema(value_type = Object)]
    pub document: Option<Value>,
    #[schema(value_type = Vec<Object>)]
    pub documents: Option<Vec<Value>>,
    #[schema(value_type = Object)]
    pub update: Option<Value>,
    #[schema(value_type = Object)]
    pub replacement: Option<Value>,
    pub upsert: Option<bool>,
    /// For `distinct`.
    pub field: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub pipeline: Option<Vec<StageSpec>>,
}

impl QueryBody {
    fn filter(&self) -> Result<Filter, Invalid> {
        match &self.filter {
            None | Some(Value::Null) => Ok(Filter::all()),
            Some(f) => Filter::parse(f, "filter"),
        }
    }

    fn find(&self) -> Result<Find, Invalid> {
        let sort = match &self.sort {
            Some(o) => Sort::from_pairs(o.0.iter().map(|(k, v)| (k, v)), "sort")?,
            None => Sort::default(),
        };
        let projection = match &self.projection {
            Some(p) => Projection::parse(p, "projection")?,
            None => None,
        };
        Ok(Find { filter: Some(self.filter()?), sort, skip: self.skip.unwrap_or(0), limit: self.limit, projection })
    }
}

fn need<'a, T>(v: &'a Option<T>, name: &str, op: &str) -> Result<&'a T, Invalid> {
    v.as_ref().ok_or_else(|| Invalid::new(name, format!("`{op}` needs `{name}`")))
}

/// [`need`], taking the value out of the body (a bulk insert's documents are not copied).
fn take<T>(v: &mut Option<T>, name: &str, op: &str) -> Result<T, Invalid> {
    v.take().ok_or_else(|| Invalid::new(name, format!("`{op}` needs `{name}`")))
}

fn ms(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

/// An operation's answer: a JSON value, or JSON text ready to send (a find whose documents
/// went from the database to the answer as they are stored).
#[derive(Debug)]
pub enum Answer {
    Value(Value),
    Text(String),
}

impl Answer {
    pub fn into_value(self) -> Value {
        match self {
            Answer::Value(v) => v,
            // The text was serialized from values here; reading it back cannot fail.
            Answer::Text(t) => serde_json::from_str(&t).unwrap_or(Value::Null),
        }
    }
}

/// `{count, data, execution_time_ms}` with the documents moved in: `json!` would copy each.
fn page(data: Vec<Value>, started: Instant) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("count".into(), json!(data.len()));
    out.insert("data".into(), Value::Array(data));
    out.insert("execution_time_ms".into(), json!(ms(started)));
    Value::Object(out)
}

/// [`page`] for documents still in the text SQL joined them into: the text goes into the
/// answer as it is, with the count SQL gave (no parse of the documents).
fn text_page(joined: &Joined, started: Instant) -> Answer {
    let elapsed = serde_json::to_string(&ms(started)).unwrap_or_else(|_| String::from("0.0"));
    let mut out = String::with_capacity(joined.text.len() + 64);
    out.push_str("{\"count\":");
    out.push_str(&joined.count.to_string());
    out.push_str(",\"data\":");
    out.push_str(&joined.text);
    out.push_str(",\"execution_time_ms\":");
    out.push_str(&elapsed);
    out.push('}');
    Answer::Text(out)
}

/// Runs `body` for `p`: what `POST /api/database/query` and the `documents.*` RPC methods do.
pub async fn run(docs: &Documents, p: &Principal, mut body: QueryBody) -> Result<Answer, DocError> {
    let started = Instant::now();
    let (collection, operation) = (std::mem::take(&mut body.collection), std::mem::take(&mut body.operation));
    let (c, op) = (collection.as_str(), operation.as_str());
    let out = match op {
        "find" => match docs.find_found(p, c, &body.find()?).await?.0 {
            Found::Text(joined) => return Ok(text_page(&joined, started)),
            Found::Docs(data) => page(data, started),
        },
        "find_one" => {
            let mut f = body.find()?;
            f.limit = Some(1);
            let (data, _) = docs.find(p, c, &f).await?;
            json!({ "data": data.into_iter().next(), "execution_time_ms": ms(started) })
        }
        "count" => {
            let n = docs.count(p, c, &body.filter()?).await?;
            json!({ "count": n, "execution_time_ms": ms(started) })
        }
        "distinct" => {
            let field = need(&body.field, "field", op)?;
            let path = FieldPath::parse(field, "field")?;
            let data = docs.distinct(p, c, &path, &body.filter()?).await?;
            page(data, started)
        }
        "aggregate" => {
            let specs = need(&body.pipeline, "pipeline", op)?;
            let stages = parse_pipeline(specs, "pipeline")?;
            let (data, _) = docs.aggregate(p, c, &stages).await?;
            page(data, started)
        }
        "insert_one" => {
            let doc = take(&mut body.document, "document", op)?;
            let ids = docs.insert(p, c, vec![doc]).await?;
            json!({ "inserted_id": ids.first(), "count": 1, "execution_time_ms": ms(started) })
        }
        "insert_many" => {
            let list = take(&mut body.documents, "documents", op)?;
            if list.is_empty() {
                return Err(Invalid::new("documents", "At least one document").into());
            }
            let ids = docs.insert(p, c, list).await?;
            json!({ "inserted_ids": ids, "count": ids.len(), "execution_time_ms": ms(started) })
        }
        "update_one" | "update_many" | "replace_one" => {
            let filter = body.filter()?;
            let upsert = body.upsert.unwrap_or(false);
            let bulk_op = if op == "replace_one" {
                let document =
                    need(&body.replacement, "replacement", op).or_else(|_| need(&body.document, "replacement", op))?;
                BulkOp::Replace { filter, document: document.clone(), upsert }
            } else {
                let update = Update::parse(need(&body.update, "update", op)?, "update")?;
                BulkOp::Update { filter, update, many: op == "update_many", upsert }
            };
            let r = docs.update(p, c, bulk_op).await?;
            json!({ "matched_count": r.matched, "modified_count": r.modified, "upserted_id": r.upserted_id,
                    "execution_time_ms": ms(started) })
        }
        "delete_one" | "delete_many" => {
            let n = docs.delete(p, c, &body.filter()?, op == "delete_many").await?;
            json!({ "deleted_count": n, "execution_time_ms": ms(started) })
        }
        "explain" => {
            let plan = docs.explain(p, c, &body.find()?).await?;
            json!({ "plan": plan, "execution_time_ms": ms(started) })
        }
        other => {
            return Err(Invalid::new(
                "operation",
                format!(
                    "Unknown operation `{other}`; allowed: find, find_one, count, distinct, aggregate, insert_one, insert_many, update_one, update_many, replace_one, delete_one, delete_many, explain"
                ),
            )
            .into());
        }
    };
    Ok(Answer::Value(out))
}

/// Registers `documents.<operation>` for every operation: the params are `POST
/// /api/database/query`'s body without `operation`. The service checks the caller's
/// permissions, per collection, as for HTTP.
pub fn register_rpc(docs: &std::sync::Arc<Documents>) {
    use nexus_kernel::error::Failure;
    use nexus_kernel::rpc::{RpcCall, handler};
    for op in OPERATIONS {
        let weak = std::sync::Arc::downgrade(docs);
        let result = docs.kernel().rpc.register(
            &format!("documents.{op}"),
            None,
            &format!("`{op}` on a collection: the params of POST /api/database/query without `operation`"),
            handler(move |call: RpcCall| {
                let docs = weak.upgrade();
                async move {
                    let docs = docs.ok_or_else(|| Failure::internal("the document database stopped"))?;
                    let mut params = match call.params {
                        Value::Object(map) => map,
                        Value::Null => serde_json::Map::new(),
                        _ => {
                            return Err(Failure::invalid_field(
                                "params",
                                "An object, as the body of POST /api/database/query",
                            ));
                        }
                    };
                    if params.get("operation").is_some_and(|o| o != op) {
                        return Err(Failure::invalid_field("params.operation", format!("This method runs `{op}`")));
                    }
                    params.insert("operation".into(), Value::String(op.to_string()));
                    let body: QueryBody = serde_path_to_error::deserialize(Value::Object(params)).map_err(|e| {
                        let path = e.path().to_string();
                        Failure::invalid_field(format!("params.{path}"), e.into_inner().to_string())
                    })?;
                    Ok(run(&docs, &call.caller, body).await?.into_value())
                }
            }),
        );
        if let Err(e) = result {
            tracing::error!(error = %e, "could not register a documents RPC method");
        }
    }
}
