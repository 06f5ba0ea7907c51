//! The list conventions of every surface (framework seed, "Pagination" and "Filtering and
//! Sorting"), parsed once from the raw query string against a list's declaration
//! ([`Listing`]):
//!
//! - offset pages `page` + `limit`, or cursor pages `cursor` + `limit` (a `cursor` parameter,
//!   even empty, selects cursor mode);
//! - `filter[field]=v` and `filter[field][$op]=v` with `$eq $ne $gt $gte $lt $lte $in $nin
//!   $like` (`$in`/`$nin` take a comma-separated list; `$like` matches case-insensitively, `*`
//!   being the only wildcard, and without one it matches a substring);
//! - `sort=-price,name` and `fields=id,name`.
//!
//! Anything not declared is a 400 naming what is allowed. Parameters other than these are left
//! to the endpoint.

use std::collections::BTreeSet;

use nexus_kernel::Kernel;
use nexus_kernel::clock::Timestamp;
use nexus_kernel::query::{
    Condition, CursorState, Field, Kind, ListQuery, Listing, Op, Page, Paging, SortKey, Value, escape_like,
    open_cursor, sign_cursor,
};
use serde_json::{Map, json};

use crate::error::{ApiError, ErrorCode, FieldError};

/// Values one `$in` / `$nin` filter may list.
const MAX_SET: usize = 100;

/// A list request, ready for the store ([`ListRequest::query`]) and for rendering the page.
#[derive(Debug, Clone)]
pub struct ListRequest {
    pub query: ListQuery,
    /// The page number in offset mode (from 1); `None` in cursor mode.
    pub page: Option<u32>,
    /// The cursor this request came with, if any.
    pub cursor: Option<String>,
    /// Field selection; `None` means every field.
    pub fields: Option<Vec<String>>,
    listing: Listing,
    signature: String,
    key: Vec<u8>,
    /// Whether `page` was in the request (rather than defaulted to 1).
    page_given: bool,
}

/// The page size of a list whose declaration has no default limit (`default_limit: 0`) when the
/// request gives none: every row.
pub const UNLIMITED: u32 = u32::MAX;

fn bad(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::invalid_fields(vec![FieldError::new(field, message)])
}

fn bad_allowed(field: impl Into<String>, message: impl Into<String>, allowed: &[&str]) -> ApiError {
    bad(field, message).with_extra("allowed", allowed.to_vec())
}

impl ListRequest {
    /// Parses `raw` (the query string, undecoded) for `listing`, with the kernel's limits and
    /// cursor key.
    pub fn parse(raw: &str, listing: &Listing, kernel: &Kernel) -> Result<Self, ApiError> {
        let api = &kernel.config.api;
        let mut page: Option<u32> = None;
        let mut limit: Option<u32> = None;
        let mut cursor: Option<String> = None;
        let mut sort_param: Option<String> = None;
        let mut fields: Option<Vec<String>> = None;
        let mut conditions = Vec::new();
        for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
            match name.as_ref() {
                "page" => {
                    let n: u32 = value.trim().parse().map_err(|_| bad("page", "Must be a whole number from 1"))?;
                    if n == 0 {
                        return Err(bad("page", "Page numbers start at 1"));
                    }
                    page = Some(n);
                }
                "limit" => {
                    let n: i64 = value.trim().parse().map_err(|_| bad("limit", "Must be a whole number"))?;
                    if n < 1 {
                        return Err(bad("limit", format!("Must be between 1 and {}", api.max_limit)));
                    }
                    limit = Some(u32::try_from(n).unwrap_or(u32::MAX).min(api.max_limit));
                }
                "cursor" => cursor = Some(value.into_owned()),
                "sort" => sort_param = Some(value.into_owned()),
                "fields" => {
                    let mut chosen = Vec::new();
                    for f in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                        if !listing.select.contains(&f) {
                            return Err(bad_allowed(
                                "fields",
                                format!("Unknown field `{f}`; allowed: {}", listing.select.join(", ")),
                                listing.select,
                            ));
                        }
                        if !chosen.iter().any(|c| c == f) {
                            chosen.push(f.to_string());
                        }
                    }
                    fields = (!chosen.is_empty()).then_some(chosen);
                }
                other if other.starts_with("filter[") => conditions.push(parse_filter(other, &value, listing)?),
                _ => {}
            }
        }
        let sort = parse_sort(sort_param.as_deref().unwrap_or(listing.default_sort), listing)?;
        // A list declared without a default limit (`0`) returns every row unless asked for fewer.
        let limit = match limit {
            Some(n) => n.min(api.max_limit).max(1),
            None if listing.default_limit == 0 => UNLIMITED,
            None => listing.default_limit.min(api.max_limit).max(1),
        };
        let page_given = page.is_some();
        if cursor.is_some() && page.is_some() {
            return Err(bad("cursor", "Use either `cursor` or `page`, not both"));
        }
        let mut query = ListQuery { conditions, sort, limit, paging: Paging::Offset { offset: 0 } };
        let signature = query.signature();
        let key = kernel.cursor_key.clone();
        match cursor.as_deref().map(str::trim) {
            None => {
                let page = page.unwrap_or(1);
                query.paging = Paging::Offset { offset: u64::from(page - 1) * u64::from(limit) };
                Ok(Self {
                    query,
                    page: Some(page),
                    cursor: None,
                    fields,
                    listing: *listing,
                    signature,
                    key,
                    page_given,
                })
            }
            Some("") => {
                query.paging = Paging::Keyset { key: None, backward: false };
                Ok(Self { query, page: None, cursor: None, fields, listing: *listing, signature, key, page_given })
            }
            Some(token) => {
                let stale =
                    || bad("cursor", "The cursor is invalid or no longer valid for this query; start again without it");
                let state = open_cursor(&key, token).ok_or_else(stale)?;
                let age = Timestamp::now().as_unix_seconds().saturating_sub(state.t);
                let ttl = i64::try_from(api.cursor_ttl_secs).unwrap_or(i64::MAX);
                if state.l != listing.name || state.q != signature || state.k.len() != query.sort.len() || age > ttl {
                    return Err(stale());
                }
                query.paging = Paging::Keyset { key: Some(state.k), backward: state.b };
                let cursor = Some(token.to_string());
                Ok(Self { query, page: None, cursor, fields, listing: *listing, signature, key, page_given })
            }
        }
    }

    /// Whether this request returns every row (no `limit` on a list declared without one).
    pub fn unlimited(&self) -> bool {
        self.query.limit == UNLIMITED
    }

    /// Skips `offset` rows instead of whole pages, for surfaces whose seed pages with an
    /// `offset` parameter (named `param` in errors). Refused together with `cursor` or `page`;
    /// the `pagination` object then reports the page that `offset` falls in.
    pub fn skip(&mut self, param: &str, offset: u64) -> Result<(), ApiError> {
        if self.page.is_none() {
            return Err(bad(param, format!("Use either `{param}` or `cursor`, not both")));
        }
        if self.page_given {
            return Err(bad(param, format!("Use either `{param}` or `page`, not both")));
        }
        let limit = u64::from(self.query.limit);
        self.query.paging = Paging::Offset { offset };
        self.page = Some(u32::try_from(offset / limit + 1).unwrap_or(u32::MAX));
        Ok(())
    }

    fn sign(&self, key: Vec<Value>, backward: bool) -> String {
        let state = CursorState {
            l: self.listing.name.to_string(),
            q: self.signature.clone(),
            k: key,
            b: backward,
            t: Timestamp::now().as_unix_seconds(),
        };
        sign_cursor(&self.key, &state)
    }

    /// The `pagination` object of `page`: offset fields (`page`, `limit`, `total`,
    /// `total_pages`, `has_next`, `has_prev`) or cursor fields (`cursor`, `next_cursor`,
    /// `prev_cursor`, `has_more`, `limit`).
    pub fn pagination<T>(&self, page: &Page<T>) -> serde_json::Value {
        let limit = self.query.limit;
        // An unlimited list shows `limit: null`.
        let shown_limit = (!self.unlimited()).then_some(limit);
        match self.page {
            Some(number) => {
                let total = page.total.unwrap_or(0).max(0);
                let total_pages = (total + i64::from(limit) - 1) / i64::from(limit);
                json!({
                    "page": number,
                    "limit": shown_limit,
                    "total": total,
                    "total_pages": total_pages,
                    "has_next": page.has_next,
                    "has_prev": page.has_prev,
                })
            }
            None => {
                let next = page.has_next.then(|| page.last_key.clone()).flatten().map(|k| self.sign(k, false));
                let prev = page.has_prev.then(|| page.first_key.clone()).flatten().map(|k| self.sign(k, true));
                let mut out = json!({
                    "cursor": self.cursor,
                    "next_cursor": next,
                    "prev_cursor": prev,
                    "has_more": page.has_next,
                    "limit": shown_limit,
                });
                if let (Some(total), Some(obj)) = (page.total, out.as_object_mut()) {
                    obj.insert("total".into(), total.into());
                }
                out
            }
        }
    }

    /// `item` reduced to the selected fields (all of them when no `fields` was given).
    pub fn project(&self, item: serde_json::Value) -> serde_json::Value {
        match (&self.fields, item) {
            (Some(fields), serde_json::Value::Object(mut map)) => {
                let mut out = Map::new();
                for f in fields {
                    if let Some(v) = map.remove(f) {
                        out.insert(f.clone(), v);
                    }
                }
                serde_json::Value::Object(out)
            }
            (_, item) => item,
        }
    }

    /// Each item serialised and reduced to the selected fields.
    pub fn project_all<T: serde::Serialize>(&self, items: Vec<T>) -> Vec<serde_json::Value> {
        items.into_iter().map(|i| self.project(serde_json::to_value(i).unwrap_or_default())).collect()
    }
}

/// `filter[name]` or `filter[name][$op]` = `value`.
fn parse_filter(param: &str, value: &str, listing: &Listing) -> Result<Condition, ApiError> {
    let rest = param.strip_prefix("filter[").unwrap_or_default();
    let (name, rest) =
        rest.split_once(']').ok_or_else(|| bad(param, "Expected filter[field] or filter[field][$op]"))?;
    let op_name = match rest {
        "" => None,
        r => Some(
            r.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .ok_or_else(|| bad(param, "Expected filter[field] or filter[field][$op]"))?,
        ),
    };
    let allowed_fields = listing.filterable();
    let field = listing.field(name).filter(|f| !f.ops.is_empty()).ok_or_else(|| {
        bad_allowed(
            format!("filter[{name}]"),
            format!("Unknown filter field `{name}`; allowed: {}", allowed_fields.join(", ")),
            &allowed_fields,
        )
    })?;
    let allowed_ops: Vec<&str> = field.ops.iter().map(|o| o.name()).collect();
    let op = match op_name {
        None => Op::Eq,
        Some(o) => Op::parse(o).filter(|op| field.ops.contains(op)).ok_or_else(|| {
            bad_allowed(
                param,
                format!("Operator `{o}` is not allowed on `{name}`; allowed: {}", allowed_ops.join(", ")),
                &allowed_ops,
            )
        })?,
    };
    let values = match op {
        Op::In | Op::Nin => {
            let items: Vec<&str> = value.split(',').collect();
            if items.len() > MAX_SET {
                return Err(bad(param, format!("At most {MAX_SET} values")));
            }
            items.into_iter().map(|v| typed(field, v, param)).collect::<Result<Vec<_>, _>>()?
        }
        Op::Like => {
            let lowered = value.to_lowercase();
            let pattern = if lowered.contains('*') {
                lowered.split('*').map(escape_like).collect::<Vec<_>>().join("%")
            } else {
                format!("%{}%", escape_like(&lowered))
            };
            vec![Value::Text(pattern)]
        }
        _ => vec![typed(field, value, param)?],
    };
    Ok(Condition { field: *field, op, values })
}

/// `value` as the type of `field`'s column.
fn typed(field: &Field, value: &str, param: &str) -> Result<Value, ApiError> {
    match field.kind {
        Kind::Text => Ok(Value::Text(value.to_string())),
        Kind::Int => value.trim().parse().map(Value::Int).map_err(|_| bad(param, "Must be a whole number")),
        Kind::Bool => match value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(Value::Bool(true)),
            "false" | "0" => Ok(Value::Bool(false)),
            _ => Err(bad(param, "Must be true or false")),
        },
        Kind::Time => Timestamp::parse_rfc3339(value.trim())
            .map(|t| Value::Int(t.as_micros()))
            .ok_or_else(|| bad(param, "Must be an RFC 3339 time, e.g. 2024-01-20T15:30:00Z")),
    }
}

fn parse_sort(text: &str, listing: &Listing) -> Result<Vec<SortKey>, ApiError> {
    let allowed = listing.sortable();
    let mut keys: Vec<SortKey> = Vec::new();
    let mut seen = BTreeSet::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (desc, name) = match item.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, item.strip_prefix('+').unwrap_or(item)),
        };
        let field = listing.field(name).filter(|f| f.sortable).ok_or_else(|| {
            bad_allowed("sort", format!("Cannot sort by `{name}`; allowed: {}", allowed.join(", ")), &allowed)
        })?;
        if seen.insert(field.name) {
            keys.push(SortKey { field: *field, desc });
        }
    }
    if !seen.contains(listing.unique)
        && let Some(field) = listing.field(listing.unique)
    {
        keys.push(SortKey { field: *field, desc: false });
    }
    if keys.is_empty() {
        return Err(ApiError::new(ErrorCode::InternalError, "list has no sortable unique field"));
    }
    Ok(keys)
}
