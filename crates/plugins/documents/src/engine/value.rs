//! MongoDB's comparison order over JSON values: type brackets first (null, numbers, strings,
//! objects, arrays, booleans, dates), then the value within its bracket. Integers and floats
//! are one bracket and compare numerically.

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

/// A type bracket, in MongoDB's canonical sort order. `EmptyArray` is how an empty array
/// sorts as a sort key (below null); whole values never carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bracket {
    EmptyArray = 0,
    Null = 1,
    Number = 2,
    String = 3,
    Object = 4,
    Array = 5,
    Bool = 6,
    Date = 7,
}

/// `{"$date": "…"}`: the extended-JSON date form, as milliseconds since the epoch.
pub fn as_date(v: &Value) -> Option<i128> {
    let Value::Object(m) = v else { return None };
    if m.len() != 1 {
        return None;
    }
    match m.get("$date")? {
        Value::String(s) => parse_date(s),
        Value::Number(n) => n.as_i64().map(i128::from),
        _ => None,
    }
}

/// An ISO 8601 / RFC 3339 time as milliseconds since the epoch.
pub fn parse_date(s: &str) -> Option<i128> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() / 1_000_000)
}

pub fn bracket(v: &Value) -> Bracket {
    match v {
        Value::Null => Bracket::Null,
        Value::Bool(_) => Bracket::Bool,
        Value::Number(_) => Bracket::Number,
        Value::String(_) => Bracket::String,
        Value::Array(_) => Bracket::Array,
        Value::Object(_) if as_date(v).is_some() => Bracket::Date,
        Value::Object(_) => Bracket::Object,
    }
}

pub fn cmp_numbers(a: &Number, b: &Number) -> Ordering {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x.cmp(&y);
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x.cmp(&y);
    }
    let x = a.as_f64().unwrap_or(0.0);
    let y = b.as_f64().unwrap_or(0.0);
    x.partial_cmp(&y).unwrap_or(Ordering::Equal)
}

/// Total order of MongoDB's `sort` and comparison operators.
pub fn compare(a: &Value, b: &Value) -> Ordering {
    let (ba, bb) = (bracket(a), bracket(b));
    if ba != bb {
        return ba.cmp(&bb);
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => cmp_numbers(x, y),
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => compare_seq(x.iter(), y.iter()),
        (Value::Object(_), Value::Object(_)) if ba == Bracket::Date => as_date(a).cmp(&as_date(b)),
        (Value::Object(x), Value::Object(y)) => compare_objects(x, y),
        _ => Ordering::Equal,
    }
}

fn compare_seq<'a>(mut x: impl Iterator<Item = &'a Value>, mut y: impl Iterator<Item = &'a Value>) -> Ordering {
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(a), Some(b)) => match compare(a, b) {
                Ordering::Equal => {}
                other => return other,
            },
        }
    }
}

fn compare_objects(x: &Map<String, Value>, y: &Map<String, Value>) -> Ordering {
    let mut a = x.iter();
    let mut b = y.iter();
    loop {
        match (a.next(), b.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some((ka, va)), Some((kb, vb))) => {
                let by_value = compare(va, vb);
                if by_value != Ordering::Equal {
                    return by_value;
                }
                let by_key = ka.cmp(kb);
                if by_key != Ordering::Equal {
                    return by_key;
                }
            }
        }
    }
}

/// Equality as `$eq` sees it: same bracket and equal (so `1 == 1.0`, `1 != true`).
pub fn equal(a: &Value, b: &Value) -> bool {
    compare(a, b) == Ordering::Equal
}

/// A number as `f64`, for arithmetic.
pub fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// The sum of two numbers, staying integral while both are integers and no overflow happens.
pub fn add(a: &Number, b: &Number) -> Number {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64())
        && let Some(s) = x.checked_add(y)
    {
        return Number::from(s);
    }
    float(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0))
}

pub fn mul(a: &Number, b: &Number) -> Number {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64())
        && let Some(s) = x.checked_mul(y)
    {
        return Number::from(s);
    }
    float(a.as_f64().unwrap_or(0.0) * b.as_f64().unwrap_or(0.0))
}

/// A float as a JSON number; non-finite results (which JSON cannot hold) become 0.
pub fn float(f: f64) -> Number {
    Number::from_f64(f).unwrap_or_else(|| Number::from(0))
}

/// The names `$type` accepts, and what each matches.
pub fn type_matches(name: &str, v: &Value) -> bool {
    match name {
        "double" => matches!(v, Value::Number(n) if n.is_f64()),
        "int" => matches!(v, Value::Number(n) if n.as_i64().is_some_and(|i| i32::try_from(i).is_ok())),
        "long" => matches!(v, Value::Number(n) if !n.is_f64() && n.as_i64().is_none_or(|i| i32::try_from(i).is_err())),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "object" => bracket(v) == Bracket::Object,
        "array" => v.is_array(),
        "bool" => v.is_boolean(),
        "null" => v.is_null(),
        "date" => bracket(v) == Bracket::Date,
        _ => false,
    }
}

/// `$type`'s names, and the numeric aliases MongoDB accepts for them.
pub fn type_name(v: &Value) -> Option<&'static str> {
    Some(match v {
        Value::String(s) => TYPE_NAMES.iter().find(|n| **n == s.as_str())?,
        Value::Number(n) => match n.as_i64()? {
            1 => "double",
            2 => "string",
            3 => "object",
            4 => "array",
            8 => "bool",
            9 => "date",
            10 => "null",
            16 => "int",
            18 => "long",
            _ => return None,
        },
        _ => return None,
    })
}

pub const TYPE_NAMES: &[&str] =
    &["double", "int", "long", "number", "string", "object", "array", "bool", "null", "date"];

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn brackets_order_types_then_values() {
        let mut values = vec![json!(true), json!("b"), json!([1]), json!({"a": 1}), json!(2.5), json!(null), json!(1)];
        values.sort_by(compare);
        assert_eq!(
            values,
            vec![json!(null), json!(1), json!(2.5), json!("b"), json!({"a": 1}), json!([1]), json!(true)]
        );
        assert!(equal(&json!(1), &json!(1.0)));
        assert!(!equal(&json!(1), &json!(true)));
        assert_eq!(compare(&json!({"$date": "2024-01-01T00:00:00Z"}), &json!(true)), Ordering::Greater);
    }
}
