//! `sort`: MongoDB's order over mixed types; an array sorts by its least element ascending and
//! its greatest descending; missing sorts as null; an empty array below null.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::Invalid;
use super::path::{Path, reach};
use super::value::{Bracket, compare};

#[derive(Debug, Clone)]
pub struct SortKey {
    pub path: Path,
    pub desc: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Sort(pub Vec<SortKey>);

impl Sort {
    /// `{"price": -1, "name": 1}`.
    pub fn parse(v: &Value, place: &str) -> Result<Self, Invalid> {
        let Value::Object(m) = v else {
            return Err(Invalid::new(place, "`sort` must be an object such as {\"price\": -1}"));
        };
        Self::from_map(m, place)
    }

    pub fn from_map(m: &Map<String, Value>, place: &str) -> Result<Self, Invalid> {
        Self::from_pairs(m.iter(), place)
    }

    /// From an object's entries in their written order ([`super::ordered::Ordered`]).
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a String, &'a Value)>,
        place: &str,
    ) -> Result<Self, Invalid> {
        let mut keys = Vec::new();
        for (k, dir) in pairs {
            let here = format!("{place}.{k}");
            let desc = match dir.as_i64() {
                Some(1) => false,
                Some(-1) => true,
                _ => return Err(Invalid::new(&here, "Sort direction must be 1 or -1")),
            };
            keys.push(SortKey { path: Path::parse(k, &here)?, desc });
        }
        Ok(Self(keys))
    }

    /// `-price,name` (the list convention).
    pub fn parse_list(text: &str, place: &str) -> Result<Self, Invalid> {
        let mut keys = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (desc, name) = match item.strip_prefix('-') {
                Some(n) => (true, n),
                None => (false, item.strip_prefix('+').unwrap_or(item)),
            };
            keys.push(SortKey { path: Path::parse(name, place)?, desc });
        }
        Ok(Self(keys))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn compare(&self, a: &Value, b: &Value) -> Ordering {
        for key in &self.0 {
            let (ka, kb) = (sort_value(a, key), sort_value(b, key));
            let o = cmp_key(&ka, &kb);
            let o = if key.desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }

    /// The values `doc` sorts by, one per key (`None`: an empty array): what a keyset cursor
    /// keeps of the row on its edge.
    pub fn keys_of(&self, doc: &Value) -> Vec<Option<Value>> {
        self.0.iter().map(|key| sort_value(doc, key)).collect()
    }

    /// How a row whose [`Self::keys_of`] are `a` sorts against one whose are `b`.
    pub fn compare_keys(&self, a: &[Option<Value>], b: &[Option<Value>]) -> Ordering {
        for ((key, ka), kb) in self.0.iter().zip(a).zip(b) {
            let o = cmp_key(ka, kb);
            let o = if key.desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }

    /// Sorts stably, so equal keys keep their order (the store's `_id` order).
    pub fn apply(&self, docs: &mut [Value]) {
        if !self.is_empty() {
            docs.sort_by(|a, b| self.compare(a, b));
        }
    }
}

/// A sort key: `None` stands for an empty array, which sorts below null.
type Key = Option<Value>;

fn cmp_key(a: &Key, b: &Key) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => compare(x, y),
    }
}

fn sort_value(doc: &Value, key: &SortKey) -> Key {
    let mut found = Vec::new();
    reach(doc, &key.path.segments, &mut found);
    let mut candidates: Vec<Key> = Vec::new();
    for v in found {
        match v {
            None => candidates.push(Some(Value::Null)),
            Some(Value::Array(items)) if items.is_empty() => candidates.push(None),
            Some(Value::Array(items)) => candidates.extend(items.iter().cloned().map(Some)),
            Some(x) => candidates.push(Some(x.clone())),
        }
    }
    let pick = if key.desc { Iterator::max_by } else { Iterator::min_by };
    pick(candidates.into_iter(), cmp_key).unwrap_or(Some(Value::Null))
}

/// The bracket of a sort key, for `explain`-free tests.
pub fn key_bracket(doc: &Value, key: &SortKey) -> Bracket {
    match sort_value(doc, key) {
        None => Bracket::EmptyArray,
        Some(v) => super::value::bracket(&v),
    }
}
