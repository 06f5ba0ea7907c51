//! Lists as parameterised SQL: filters, sorting and pagination (offset or keyset), built from
//! a declaration of what a list allows.
//!
//! A list declares its fields ([`Listing`]); a request is parsed (in `nexus-web`) into a
//! [`ListQuery`] that can only refer to those declared fields. [`ListQuery::build`] then writes
//! SQL in which every identifier comes from the declaration and every value is a bind
//! parameter (`$n`, understood by both backends): no text of the request reaches the SQL.
//!
//! Cursors are opaque tokens: the sort-key values of a boundary row plus what the query was,
//! HMAC-SHA256 signed with the installation's key ([`sign_cursor`], [`open_cursor`]).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The type of a field's column, deciding how filter values are parsed and bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    Bool,
    /// Microseconds since the epoch in the database; RFC 3339 in requests.
    Time,
}

/// A filter operator, written `filter[field][$op]=value` (`$eq` when omitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    Nin,
    Like,
}

impl Op {
    pub const ALL: [Op; 9] = [Op::Eq, Op::Ne, Op::Gt, Op::Gte, Op::Lt, Op::Lte, Op::In, Op::Nin, Op::Like];
    /// Equality and set membership.
    pub const EQUALITY: &'static [Op] = &[Op::Eq, Op::Ne, Op::In, Op::Nin];
    /// Equality, ranges and sets: for numbers and times.
    pub const ORDERED: &'static [Op] = &[Op::Eq, Op::Ne, Op::Gt, Op::Gte, Op::Lt, Op::Lte, Op::In, Op::Nin];
    /// Everything, for text.
    pub const TEXT: &'static [Op] = &Op::ALL;

    pub fn name(self) -> &'static str {
        match self {
            Op::Eq => "$eq",
            Op::Ne => "$ne",
            Op::Gt => "$gt",
            Op::Gte => "$gte",
            Op::Lt => "$lt",
            Op::Lte => "$lte",
            Op::In => "$in",
            Op::Nin => "$nin",
            Op::Like => "$like",
        }
    }

    pub fn parse(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }

    fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Gt => ">",
            Op::Gte => ">=",
            Op::Lt => "<",
            Op::Lte => "<=",
            Op::In => "IN",
            Op::Nin => "NOT IN",
            Op::Like => "LIKE",
        }
    }
}

/// One field a list exposes to filters and sorting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The name in requests (`filter[name]`, `sort=name`).
    pub name: &'static str,
    /// The column (or column expression) in SQL: part of the declaration, never of a request.
    pub column: &'static str,
    pub kind: Kind,
    /// Operators allowed in filters; empty means not filterable.
    pub ops: &'static [Op],
    /// Whether `sort` may name it (only non-null columns, so that keyset pagination holds).
    pub sortable: bool,
}

/// What a list endpoint allows.
#[derive(Debug, Clone, Copy)]
pub struct Listing {
    /// Names the list in cursors, so that a cursor of one list is refused by another.
    pub name: &'static str,
    pub fields: &'static [Field],
    /// A sortable field unique per row, appended to every sort as the tie-breaker.
    pub unique: &'static str,
    /// The sort when the request names none (`-created_at`, `name`).
    pub default_sort: &'static str,
    /// Rows per page when the request gives no `limit`; `0`: every row (for lists whose seed
    /// documents "no limit" by default).
    pub default_limit: u32,
    /// Names the response items have, for `fields=` (field selection).
    pub select: &'static [&'static str],
}

impl Listing {
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn filterable(&self) -> Vec<&'static str> {
        self.fields.iter().filter(|f| !f.ops.is_empty()).map(|f| f.name).collect()
    }

    pub fn sortable(&self) -> Vec<&'static str> {
        self.fields.iter().filter(|f| f.sortable).map(|f| f.name).collect()
    }
}

/// A value bound to a query parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Int(i64),
    Bool(bool),
    Text(String),
}

/// One filter condition on a declared field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub field: Field,
    pub op: Op,
    /// One value, or several for `$in` / `$nin`.
    pub values: Vec<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    pub field: Field,
    pub desc: bool,
}

/// Which rows of the filtered, sorted list are wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paging {
    Offset {
        offset: u64,
    },
    /// Keyset pagination: rows after (or, `backward`, before) the row whose sort key is `key`;
    /// from the start when `key` is `None`.
    Keyset {
        key: Option<Vec<Value>>,
        backward: bool,
    },
}

/// A parsed list request: only declared fields, every value typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub conditions: Vec<Condition>,
    /// Ends with the listing's unique field.
    pub sort: Vec<SortKey>,
    pub limit: u32,
    pub paging: Paging,
}

/// SQL fragments of a [`ListQuery`], numbered from a given first placeholder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Built {
    /// The filter conditions (`1 = 1` when none), to follow `WHERE … AND`.
    pub filter: String,
    /// The values of `filter`'s placeholders, in order: all a `COUNT(*)` needs.
    pub filter_params: Vec<Value>,
    /// `AND (…)` restricting to the keyset page, or empty.
    pub keyset: String,
    /// `ORDER BY …`.
    pub order: String,
    /// `LIMIT $n` (and `OFFSET $m`).
    pub window: String,
    /// Every placeholder's value in order: filter, keyset, then limit and offset.
    pub params: Vec<Value>,
}

impl ListQuery {
    /// The SQL of this query; placeholders start at `$first`. Only declared column names and
    /// fixed keywords are written into the text; every value is a parameter.
    pub fn build(&self, first: usize) -> Built {
        let mut params: Vec<Value> = Vec::new();
        let next = |value: Value, params: &mut Vec<Value>| {
            params.push(value);
            format!("${}", first + params.len() - 1)
        };
        let mut parts = Vec::new();
        for c in &self.conditions {
            let column = c.field.column;
            match c.op {
                Op::In | Op::Nin => {
                    let list: Vec<String> = c.values.iter().map(|v| next(v.clone(), &mut params)).collect();
                    parts.push(format!("{column} {} ({})", c.op.sql(), list.join(", ")));
                }
                Op::Like => {
                    let pattern = c.values.first().cloned().unwrap_or(Value::Text(String::new()));
                    let p = next(pattern, &mut params);
                    parts.push(format!("LOWER({column}) LIKE {p} ESCAPE '\\'"));
                }
                op => {
                    let value = c.values.first().cloned().unwrap_or(Value::Text(String::new()));
                    let p = next(value, &mut params);
                    parts.push(format!("{column} {} {p}", op.sql()));
                }
            }
        }
        let filter = if parts.is_empty() { String::from("1 = 1") } else { parts.join(" AND ") };
        let filter_params = params.clone();

        let backward = matches!(self.paging, Paging::Keyset { backward: true, .. });
        let mut keyset = String::new();
        if let Paging::Keyset { key: Some(key), .. } = &self.paging {
            let mut alternatives = Vec::new();
            for (i, sort) in self.sort.iter().enumerate() {
                let mut terms = Vec::new();
                for (earlier, value) in self.sort.iter().zip(key).take(i) {
                    let p = next(value.clone(), &mut params);
                    terms.push(format!("{} = {p}", earlier.field.column));
                }
                let Some(value) = key.get(i) else { break };
                let p = next(value.clone(), &mut params);
                let cmp = if sort.desc != backward { "<" } else { ">" };
                terms.push(format!("{} {cmp} {p}", sort.field.column));
                alternatives.push(format!("({})", terms.join(" AND ")));
            }
            if !alternatives.is_empty() {
                keyset = format!("AND ({})", alternatives.join(" OR "));
            }
        }
        let order_terms: Vec<String> = self
            .sort
            .iter()
            .map(|s| format!("{} {}", s.field.column, if s.desc != backward { "DESC" } else { "ASC" }))
            .collect();
        let order = format!("ORDER BY {}", order_terms.join(", "));
        let window = match self.paging {
            Paging::Offset { offset } => {
                let l = next(Value::Int(i64::from(self.limit)), &mut params);
                let o = next(Value::Int(i64::try_from(offset).unwrap_or(i64::MAX)), &mut params);
                format!("LIMIT {l} OFFSET {o}")
            }
            // One row more than asked tells whether there is another page.
            Paging::Keyset { .. } => format!("LIMIT {}", next(Value::Int(i64::from(self.limit) + 1), &mut params)),
        };
        Built { filter, filter_params, keyset, order, window, params }
    }

    /// A short digest of what is filtered and how it is sorted, so that a cursor is only
    /// accepted by the query it was made for.
    pub fn signature(&self) -> String {
        let mut text = String::new();
        for c in &self.conditions {
            text.push_str(&format!("{}|{}|{:?};", c.field.name, c.op.name(), c.values));
        }
        for s in &self.sort {
            text.push_str(&format!("{}{};", if s.desc { "-" } else { "+" }, s.field.name));
        }
        crate::id::hex(Sha256::digest(text.as_bytes()).get(..8).unwrap_or_default())
    }

    /// Turns the fetched rows (see [`Built`]) into a page: trims the look-ahead row, restores
    /// the order of a backward page, and notes the boundary keys.
    pub fn finish<T: Keyed>(&self, mut rows: Vec<T>, total: Option<i64>) -> Page<T> {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        let (has_next, has_prev) = match &self.paging {
            Paging::Offset { offset } => {
                let end = offset.saturating_add(rows.len() as u64);
                let total = total.and_then(|t| u64::try_from(t).ok()).unwrap_or(end);
                (end < total, *offset > 0)
            }
            Paging::Keyset { key, backward: false } => {
                let more = rows.len() > limit;
                rows.truncate(limit);
                (more, key.is_some())
            }
            Paging::Keyset { key: _, backward: true } => {
                let more = rows.len() > limit;
                rows.truncate(limit);
                rows.reverse();
                (true, more)
            }
        };
        let key_of = |row: &T| self.sort.iter().map(|s| row.key(s.field.name)).collect::<Vec<_>>();
        let first_key = rows.first().map(key_of);
        let last_key = rows.last().map(key_of);
        Page { items: rows, total, first_key, last_key, has_next, has_prev }
    }
}

/// A row that can tell the value of each of its list's sortable fields.
pub trait Keyed {
    fn key(&self, field: &str) -> Value;
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Rows matching the filters, when counted.
    pub total: Option<i64>,
    /// Sort keys of the first and last items, for cursors.
    pub first_key: Option<Vec<Value>>,
    pub last_key: Option<Vec<Value>>,
    pub has_next: bool,
    pub has_prev: bool,
}

impl<T> Page<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            total: self.total,
            first_key: self.first_key,
            last_key: self.last_key,
            has_next: self.has_next,
            has_prev: self.has_prev,
        }
    }
}

/// What a cursor carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorState {
    /// The listing's name.
    pub l: String,
    /// The query's [`ListQuery::signature`].
    pub q: String,
    /// The boundary row's sort key.
    pub k: Vec<Value>,
    /// Rows before the boundary rather than after it.
    pub b: bool,
    /// Issued at, Unix seconds.
    pub t: i64,
}

/// An opaque, tamper-evident token for `state`.
pub fn sign_cursor(key: &[u8], state: &CursorState) -> String {
    seal(key, state)
}

/// The state of a token made by [`sign_cursor`] with `key`; `None` when forged or malformed.
pub fn open_cursor(key: &[u8], token: &str) -> Option<CursorState> {
    unseal(key, token)
}

/// `value` as a tamper-evident token under `key`: base64url JSON and a truncated HMAC. Any
/// list's cursor (a plugin's own position type too) is one of these.
pub fn seal<T: Serialize>(key: &[u8], value: &T) -> String {
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default());
    let mac = hmac_sha256(key, body.as_bytes());
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(mac.get(..16).unwrap_or_default()))
}

/// The value in a token made by [`seal`] with `key`; `None` when forged or malformed.
pub fn unseal<T: serde::de::DeserializeOwned>(key: &[u8], token: &str) -> Option<T> {
    let (body, mac) = token.split_once('.')?;
    let given = URL_SAFE_NO_PAD.decode(mac).ok()?;
    let expected = hmac_sha256(key, body.as_bytes());
    let expected = expected.get(..16)?;
    if given.len() != expected.len() || given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 {
        return None;
    }
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        let digest = Sha256::digest(key);
        for (b, k) in block.iter_mut().zip(digest.iter()) {
            *b = *k;
        }
    } else {
        for (b, k) in block.iter_mut().zip(key) {
            *b = *k;
        }
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner);
    let mut out = [0u8; 32];
    for (o, d) in out.iter_mut().zip(outer.finalize().iter()) {
        *o = *d;
    }
    out
}

/// Escapes `%`, `_` and `\` so that text is matched literally inside a LIKE pattern.
pub fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Binds every value of `params` to a `sqlx` query, in order.
#[macro_export]
macro_rules! bind_values {
    ($query:expr, $params:expr) => {{
        let mut q = $query;
        for value in $params {
            q = match value {
                $crate::query::Value::Int(v) => q.bind(*v),
                $crate::query::Value::Bool(v) => q.bind(*v),
                $crate::query::Value::Text(v) => q.bind(v.clone()),
            };
        }
        q
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: Field = Field { name: "name", column: "name", kind: Kind::Text, ops: Op::TEXT, sortable: true };
    const ID: Field = Field { name: "id", column: "id", kind: Kind::Text, ops: Op::EQUALITY, sortable: true };

    #[test]
    fn values_become_parameters() {
        let q = ListQuery {
            conditions: vec![
                Condition { field: NAME, op: Op::Eq, values: vec![Value::Text("x' OR 1=1 --".into())] },
                Condition { field: ID, op: Op::In, values: vec![Value::Text("a".into()), Value::Text("b".into())] },
            ],
            sort: vec![SortKey { field: NAME, desc: true }, SortKey { field: ID, desc: false }],
            limit: 10,
            paging: Paging::Keyset {
                key: Some(vec![Value::Text("n".into()), Value::Text("i".into())]),
                backward: false,
            },
        };
        let b = q.build(3);
        assert_eq!(b.filter, "name = $3 AND id IN ($4, $5)");
        assert_eq!(b.keyset, "AND ((name < $6) OR (name = $7 AND id > $8))");
        assert_eq!(b.order, "ORDER BY name DESC, id ASC");
        assert_eq!(b.window, "LIMIT $9");
        assert_eq!(b.params.len(), 7);
        assert_eq!(b.filter_params.len(), 3);
        assert!(!b.filter.contains("OR 1=1"));
    }

    #[test]
    fn cursors_are_tamper_evident() {
        let state = CursorState { l: "users".into(), q: "x".into(), k: vec![Value::Int(5)], b: false, t: 1 };
        let token = sign_cursor(b"key", &state);
        assert_eq!(open_cursor(b"key", &token), Some(state));
        assert_eq!(open_cursor(b"other", &token), None);
        let (body, mac) = token.split_once('.').unwrap_or_default();
        let forged = format!("{}A.{mac}", body);
        assert_eq!(open_cursor(b"key", &forged), None);
        assert_eq!(open_cursor(b"key", "garbage"), None);
    }

    #[test]
    fn hmac_matches_rfc4231() {
        let mac = hmac_sha256(&[0x0b; 20], b"Hi There");
        assert_eq!(crate::id::hex(&mac), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    }
}
