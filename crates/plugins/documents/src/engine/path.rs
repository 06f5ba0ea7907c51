//! Dotted paths into documents (`address.city`, `items.0.price`) and how MongoDB walks them
//! through arrays.

use serde_json::Value;

use super::Invalid;

/// A validated dotted path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    pub text: String,
    pub segments: Vec<String>,
}

impl Path {
    /// Refuses empty segments, `$` at the start of a segment, and NUL anywhere.
    pub fn parse(text: &str, place: &str) -> Result<Self, Invalid> {
        if text.is_empty() {
            return Err(Invalid::new(place, "A field path must not be empty"));
        }
        if text.len() > 1024 {
            return Err(Invalid::new(place, "A field path must not be longer than 1024 bytes"));
        }
        if text.contains('\0') {
            return Err(Invalid::new(place, "A field path must not contain NUL"));
        }
        let mut segments = Vec::new();
        for seg in text.split('.') {
            if seg.is_empty() {
                return Err(Invalid::new(place, format!("`{text}` has an empty path segment")));
            }
            if seg.starts_with('$') {
                return Err(Invalid::new(place, format!("`{text}`: a field name must not start with `$`")));
            }
            segments.push(seg.to_string());
        }
        Ok(Self { text: text.to_string(), segments })
    }

    pub fn is_id(&self) -> bool {
        self.text == "_id"
    }
}

/// An array index segment (`0`, `12`), as MongoDB reads one.
pub fn index(seg: &str) -> Option<usize> {
    if seg.is_empty() || seg.len() > 9 || !seg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    seg.parse().ok()
}

/// Every value `segments` reaches in `v` for matching, `None` standing for "missing".
/// A field segment applied to an array applies to each element (objects only; other elements
/// reach "missing"); a numeric segment applied to an array indexes it (out of range reaches
/// nothing) and, as in MongoDB, also looks for that field name in the array's object elements.
pub fn reach<'a>(v: &'a Value, segments: &[String], out: &mut Vec<Option<&'a Value>>) {
    let Some((seg, rest)) = segments.split_first() else {
        out.push(Some(v));
        return;
    };
    match v {
        Value::Object(m) => match m.get(seg) {
            Some(x) => reach(x, rest, out),
            None => out.push(None),
        },
        Value::Array(items) => {
            if let Some(i) = index(seg) {
                if let Some(x) = items.get(i) {
                    reach(x, rest, out);
                }
                for item in items.iter().filter(|x| x.is_object()) {
                    if let Some(x) = item.get(seg.as_str()) {
                        reach(x, rest, out);
                    }
                }
                return;
            }
            for item in items {
                match item {
                    Value::Object(m) => match m.get(seg) {
                        Some(x) => reach(x, rest, out),
                        None => out.push(None),
                    },
                    _ => out.push(None),
                }
            }
        }
        _ => out.push(None),
    }
}

/// The one value at `segments` without array traversal (numeric segments index arrays):
/// what `$project`, `$group` keys and updates read.
pub fn get<'a>(v: &'a Value, segments: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in segments {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(items) => items.get(index(seg)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// The value at a field path for aggregation expressions: through arrays it collects the
/// field of every element, as MongoDB's `"$a.b"` does.
pub fn get_expr(v: &Value, segments: &[String]) -> Option<Value> {
    let Some((seg, rest)) = segments.split_first() else {
        return Some(v.clone());
    };
    match v {
        Value::Object(m) => get_expr(m.get(seg)?, rest),
        Value::Array(items) => {
            Some(Value::Array(items.iter().filter(|x| x.is_object()).filter_map(|x| get_expr(x, segments)).collect()))
        }
        _ => None,
    }
}
