//! Collection validation with a JSON Schema subset: `type` (one or a list), `properties`,
//! `required`, `additionalProperties: false`, `enum`, `minimum`/`maximum`,
//! `minLength`/`maxLength`, `pattern`, `items`, `minItems`/`maxItems`. Other keywords are
//! refused when the collection is created, so that no rule is silently ignored.

use serde_json::Value;

use crate::engine::Invalid;

const KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "items",
    "minItems",
    "maxItems",
    "title",
    "description",
    "$schema",
];

/// Checks that `schema` only uses the supported keywords.
pub fn check(schema: &Value, place: &str) -> Result<(), Invalid> {
    let Value::Object(m) = schema else { return Err(Invalid::new(place, "A schema is a JSON object")) };
    for (k, v) in m {
        let here = format!("{place}.{k}");
        if !KEYWORDS.contains(&k.as_str()) {
            return Err(Invalid::new(&here, format!("Unsupported schema keyword; supported: {}", KEYWORDS.join(", "))));
        }
        match k.as_str() {
            "properties" => {
                let Value::Object(props) = v else { return Err(Invalid::new(&here, "Must be an object")) };
                for (name, sub) in props {
                    check(sub, &format!("{here}.{name}"))?;
                }
            }
            "items" => check(v, &here)?,
            "pattern" => {
                let Value::String(p) = v else { return Err(Invalid::new(&here, "Must be a string")) };
                regex::Regex::new(p).map_err(|_| Invalid::new(&here, "Invalid regular expression"))?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn type_ok(name: &str, v: &Value) -> bool {
    match name {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.as_i64().is_some() || v.as_u64().is_some() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    }
}

/// Validates `doc` against `schema`; the first violation names its path.
pub fn validate(schema: &Value, doc: &Value, place: &str) -> Result<(), Invalid> {
    let Value::Object(s) = schema else { return Ok(()) };
    let fail = |msg: String| Err(Invalid::new(place, msg));
    if let Some(t) = s.get("type") {
        let names: Vec<&str> = match t {
            Value::String(n) => vec![n.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !names.is_empty() && !names.iter().any(|n| type_ok(n, doc)) {
            return fail(format!("Must be of type {}", names.join(" or ")));
        }
    }
    if let Some(Value::Array(options)) = s.get("enum")
        && !options.contains(doc)
    {
        return fail("Must be one of the allowed values".into());
    }
    if let Some(n) = doc.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            return fail(format!("Must be at least {min}"));
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            return fail(format!("Must be at most {max}"));
        }
    }
    if let Value::String(text) = doc {
        let len = text.chars().count() as u64;
        if s.get("minLength").and_then(Value::as_u64).is_some_and(|m| len < m) {
            return fail("Too short".into());
        }
        if s.get("maxLength").and_then(Value::as_u64).is_some_and(|m| len > m) {
            return fail("Too long".into());
        }
        if let Some(Value::String(p)) = s.get("pattern")
            && regex::Regex::new(p).is_ok_and(|r| !r.is_match(text))
        {
            return fail(format!("Must match the pattern {p}"));
        }
    }
    if let Value::Array(items) = doc {
        let n = items.len() as u64;
        if s.get("minItems").and_then(Value::as_u64).is_some_and(|m| n < m) {
            return fail("Too few items".into());
        }
        if s.get("maxItems").and_then(Value::as_u64).is_some_and(|m| n > m) {
            return fail("Too many items".into());
        }
        if let Some(item_schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate(item_schema, item, &format!("{place}[{i}]"))?;
            }
        }
    }
    if let Value::Object(m) = doc {
        if let Some(Value::Array(required)) = s.get("required") {
            for r in required.iter().filter_map(Value::as_str) {
                if !m.contains_key(r) {
                    return Err(Invalid::new(format!("{place}.{r}"), "This field is required"));
                }
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, v) in m {
            match props.and_then(|p| p.get(k)) {
                Some(sub) => validate(sub, v, &format!("{place}.{k}"))?,
                None if k != "_id" && s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(Invalid::new(format!("{place}.{k}"), "This field is not allowed"));
                }
                None => {}
            }
        }
    }
    Ok(())
}
