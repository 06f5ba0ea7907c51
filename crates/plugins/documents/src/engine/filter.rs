//! Query filters: parsed into a typed tree (every error names its place) and evaluated with
//! MongoDB's semantics.
//!
//! Negative operators (`$ne`, `$nin`, `$not`, `$exists: false`, `$nor`) are the exact negation of
//! their positive forms over the whole path, so `{f: {$ne: 1}}` matches documents without `f`
//! and arrays without a `1`, as in MongoDB.

use std::cmp::Ordering;

use regex::Regex;
use serde_json::{Map, Value};

use super::Invalid;
use super::path::{Path, reach};
use super::value::{Bracket, bracket, compare, equal, type_matches, type_name};

#[derive(Debug, Clone)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Nor(Vec<Filter>),
    /// Every condition holds for the path.
    Field(Path, Vec<Cond>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Cmp {
    pub fn holds(self, o: Ordering) -> bool {
        match self {
            Cmp::Gt => o == Ordering::Greater,
            Cmp::Gte => o != Ordering::Less,
            Cmp::Lt => o == Ordering::Less,
            Cmp::Lte => o != Ordering::Greater,
        }
    }
}

/// A compiled `$regex`, with its source for SQL and `explain`.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub source: String,
    pub options: String,
    pub regex: Regex,
}

#[derive(Debug, Clone)]
pub enum Cond {
    Eq(Value),
    Ne(Value),
    Cmp(Cmp, Value),
    In(Vec<Value>, Vec<Pattern>),
    Nin(Vec<Value>, Vec<Pattern>),
    Exists(bool),
    Type(Vec<&'static str>),
    Regex(Pattern),
    Size(usize),
    All(Vec<Value>),
    Mod(i64, i64),
    ElemMatch(ElemMatch),
    /// Negation of all the conditions together.
    Not(Vec<Cond>),
}

#[derive(Debug, Clone)]
pub enum ElemMatch {
    /// `{$elemMatch: {$gt: 1, $lt: 5}}`: conditions on the element itself.
    Value(Vec<Cond>),
    /// `{$elemMatch: {price: {$gt: 1}}}`: a query on each element document.
    Doc(Filter),
}

/// The deepest nesting accepted, against stack exhaustion from hostile filters.
const MAX_DEPTH: usize = 32;

impl Filter {
    pub fn all() -> Self {
        Filter::And(Vec::new())
    }

    /// Parses `value` (a JSON object) as a filter; `place` names it in errors (`filter`).
    pub fn parse(value: &Value, place: &str) -> Result<Self, Invalid> {
        parse_doc(value, place, 0)
    }

    pub fn is_all(&self) -> bool {
        matches!(self, Filter::And(v) if v.is_empty())
    }

    /// The one type bracket (numbers or strings) every document this filter selects holds at
    /// `path`, when a comparison or equality on `path` that every match must pass says so and
    /// `path` holds no arrays (a scalar comparison matches only within its bracket; over
    /// arrays it would match by an element).
    pub fn pinned_bracket(&self, path: &Path) -> Option<Bracket> {
        match self {
            Filter::Field(p, conds) if p == path => conds.iter().find_map(|c| match c {
                Cond::Eq(v) | Cond::Cmp(_, v) => {
                    Some(bracket(v)).filter(|b| matches!(b, Bracket::Number | Bracket::String))
                }
                _ => None,
            }),
            Filter::And(all) => all.iter().find_map(|f| f.pinned_bracket(path)),
            _ => None,
        }
    }

    pub fn matches(&self, doc: &Value) -> bool {
        match self {
            Filter::And(fs) => fs.iter().all(|f| f.matches(doc)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(doc)),
            Filter::Nor(fs) => !fs.iter().any(|f| f.matches(doc)),
            Filter::Field(path, conds) => {
                let mut found = Vec::new();
                reach(doc, &path.segments, &mut found);
                conds.iter().all(|c| c.holds(&found))
            }
        }
    }

    /// `_id` when the filter pins exactly one (`{_id: "x"}`), for the primary-key lookup.
    pub fn single_id(&self) -> Option<&str> {
        match self {
            Filter::Field(p, conds) if p.is_id() => match conds.as_slice() {
                [Cond::Eq(Value::String(s))] => Some(s),
                _ => None,
            },
            Filter::And(fs) => fs.iter().find_map(Filter::single_id),
            _ => None,
        }
    }
}

impl Cond {
    /// Whether this condition holds for the values a path reached.
    pub fn holds(&self, found: &[Option<&Value>]) -> bool {
        match self {
            Cond::Ne(v) => !Cond::Eq(v.clone()).holds(found),
            Cond::Nin(vs, ps) => !Cond::In(vs.clone(), ps.clone()).holds(found),
            Cond::Exists(false) => !found.iter().any(Option::is_some),
            Cond::Not(conds) => !conds.iter().all(|c| c.holds(found)),
            positive => found.iter().any(|v| positive.holds_one(*v, true)),
        }
    }

    /// Whether this condition holds for `v` itself, without looking into it when it is an
    /// array (how `$elemMatch` tests each element).
    pub fn holds_flat(&self, v: &Value) -> bool {
        match self {
            Cond::Ne(x) => !Cond::Eq(x.clone()).holds_flat(v),
            Cond::Nin(xs, ps) => !Cond::In(xs.clone(), ps.clone()).holds_flat(v),
            Cond::Exists(false) => false,
            Cond::Not(conds) => !conds.iter().all(|c| c.holds_flat(v)),
            positive => positive.holds_one(Some(v), false),
        }
    }

    fn holds_one(&self, v: Option<&Value>, expand: bool) -> bool {
        let Some(v) = v else {
            return match self {
                Cond::Eq(Value::Null) => true,
                Cond::Cmp(Cmp::Gte | Cmp::Lte, Value::Null) => true,
                Cond::In(vs, _) => vs.iter().any(Value::is_null),
                Cond::All(vs) => !vs.is_empty() && vs.iter().all(Value::is_null),
                _ => false,
            };
        };
        let elements = || v.as_array().filter(|_| expand).into_iter().flatten();
        match self {
            Cond::Eq(x) => equal(v, x) || elements().any(|e| equal(e, x)),
            Cond::Cmp(op, x) => cmp_one(*op, v, x) || elements().any(|e| cmp_one(*op, e, x)),
            Cond::In(xs, ps) => {
                xs.iter().any(|x| equal(v, x) || elements().any(|e| equal(e, x)))
                    || ps.iter().any(|p| regex_one(p, v) || elements().any(|e| regex_one(p, e)))
            }
            Cond::Exists(want) => *want,
            Cond::Type(names) => {
                names.iter().any(|n| type_matches(n, v) || (*n != "array" && elements().any(|e| type_matches(n, e))))
            }
            Cond::Regex(p) => regex_one(p, v) || elements().any(|e| regex_one(p, e)),
            Cond::Size(n) => v.as_array().is_some_and(|a| a.len() == *n),
            Cond::All(xs) => !xs.is_empty() && xs.iter().all(|x| Cond::Eq(x.clone()).holds_one(Some(v), expand)),
            Cond::Mod(d, r) => mod_one(*d, *r, v) || elements().any(|e| mod_one(*d, *r, e)),
            Cond::ElemMatch(m) => elements().any(|e| match m {
                ElemMatch::Value(conds) => conds.iter().all(|c| c.holds_flat(e)),
                ElemMatch::Doc(f) => e.is_object() && f.matches(e),
            }),
            Cond::Ne(_) | Cond::Nin(..) | Cond::Not(_) => self.holds(&[Some(v)]),
        }
    }
}

/// A range comparison holds only within one type bracket (null compares with null only).
fn cmp_one(op: Cmp, v: &Value, x: &Value) -> bool {
    bracket(v) == bracket(x) && op.holds(compare(v, x))
}

fn regex_one(p: &Pattern, v: &Value) -> bool {
    matches!(v, Value::String(s) if p.regex.is_match(s))
}

/// `$mod` truncates floats towards zero, as MongoDB does.
fn mod_one(d: i64, r: i64, v: &Value) -> bool {
    let Value::Number(n) = v else { return false };
    let i = match n.as_i64() {
        Some(i) => i,
        None => match n.as_f64() {
            Some(f) if f.is_finite() && f.abs() < 9.2e18 => f.trunc() as i64,
            _ => return false,
        },
    };
    i.checked_rem(d) == Some(r)
}

fn parse_doc(value: &Value, place: &str, depth: usize) -> Result<Filter, Invalid> {
    if depth > MAX_DEPTH {
        return Err(Invalid::new(place, format!("Nested more than {MAX_DEPTH} levels deep")));
    }
    let Value::Object(map) = value else {
        return Err(Invalid::new(place, "A filter must be a JSON object"));
    };
    let mut parts = Vec::with_capacity(map.len());
    for (key, v) in map {
        let here = format!("{place}.{key}");
        parts.push(match key.as_str() {
            "$and" | "$or" | "$nor" => {
                let Value::Array(items) = v else {
                    return Err(Invalid::new(&here, format!("`{key}` takes a non-empty array of filters")));
                };
                if items.is_empty() {
                    return Err(Invalid::new(&here, format!("`{key}` takes a non-empty array of filters")));
                }
                let subs = items
                    .iter()
                    .enumerate()
                    .map(|(i, f)| parse_doc(f, &format!("{here}[{i}]"), depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                match key.as_str() {
                    "$and" => Filter::And(subs),
                    "$or" => Filter::Or(subs),
                    _ => Filter::Nor(subs),
                }
            }
            "$where" | "$function" | "$accumulator" => {
                return Err(Invalid::new(&here, format!("`{key}` (JavaScript) is not supported")));
            }
            k if k.starts_with('$') => {
                return Err(Invalid::new(&here, format!("Unknown top-level operator `{k}`")));
            }
            k => {
                let path = Path::parse(k, &here)?;
                Filter::Field(path, parse_conds(v, &here, depth + 1)?)
            }
        });
    }
    Ok(match parts.len() {
        1 => parts.pop().unwrap_or_else(Filter::all),
        _ => Filter::And(parts),
    })
}

/// Whether `v` is an operator object (`{$gt: 1}`) rather than a literal to compare with.
fn is_operator_object(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.keys().next().is_some_and(|k| k.starts_with('$')) && !is_date_literal(m))
}

fn is_date_literal(m: &Map<String, Value>) -> bool {
    m.len() == 1 && m.contains_key("$date")
}

fn parse_conds(v: &Value, place: &str, depth: usize) -> Result<Vec<Cond>, Invalid> {
    if depth > MAX_DEPTH {
        return Err(Invalid::new(place, format!("Nested more than {MAX_DEPTH} levels deep")));
    }
    if !is_operator_object(v) {
        check_literal(v, place, 0)?;
        return Ok(vec![Cond::Eq(v.clone())]);
    }
    let Value::Object(ops) = v else { return Ok(vec![Cond::Eq(v.clone())]) };
    let options = match ops.get("$options") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(Invalid::new(format!("{place}.$options"), "`$options` must be a string")),
    };
    if options.is_some() && !ops.contains_key("$regex") {
        return Err(Invalid::new(format!("{place}.$options"), "`$options` needs `$regex`"));
    }
    let mut conds = Vec::with_capacity(ops.len());
    for (op, arg) in ops {
        let here = format!("{place}.{op}");
        let literal = |x: &Value| check_literal(x, &here, 0).map(|()| x.clone());
        conds.push(match op.as_str() {
            "$eq" => Cond::Eq(literal(arg)?),
            "$ne" => Cond::Ne(literal(arg)?),
            "$gt" => Cond::Cmp(Cmp::Gt, literal(arg)?),
            "$gte" => Cond::Cmp(Cmp::Gte, literal(arg)?),
            "$lt" => Cond::Cmp(Cmp::Lt, literal(arg)?),
            "$lte" => Cond::Cmp(Cmp::Lte, literal(arg)?),
            "$in" | "$nin" => {
                let Value::Array(items) = arg else {
                    return Err(Invalid::new(&here, format!("`{op}` takes an array")));
                };
                let mut values = Vec::new();
                let mut patterns = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{here}[{i}]");
                    match item {
                        Value::Object(m) if m.contains_key("$regex") => {
                            patterns.push(parse_regex(m.get("$regex"), m.get("$options"), &at)?);
                        }
                        x if is_operator_object(x) => {
                            return Err(Invalid::new(&at, "Operators are not allowed inside `$in`/`$nin`"));
                        }
                        x => {
                            check_literal(x, &at, 0)?;
                            values.push(x.clone());
                        }
                    }
                }
                if op == "$in" { Cond::In(values, patterns) } else { Cond::Nin(values, patterns) }
            }
            "$exists" => Cond::Exists(truthy(arg)),
            "$type" => {
                let names = match arg {
                    Value::Array(items) => items.iter().map(type_name).collect::<Option<Vec<_>>>(),
                    one => type_name(one).map(|n| vec![n]),
                };
                let names = names.filter(|n| !n.is_empty()).ok_or_else(|| {
                    Invalid::new(&here, format!("Unknown type; known: {}", super::value::TYPE_NAMES.join(", ")))
                })?;
                Cond::Type(names)
            }
            "$regex" => Cond::Regex(parse_regex(Some(arg), ops.get("$options"), &here)?),
            "$options" => continue,
            "$size" => {
                let n = arg
                    .as_u64()
                    .or_else(|| arg.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64))
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| Invalid::new(&here, "`$size` takes a non-negative whole number"))?;
                Cond::Size(n)
            }
            "$all" => {
                let Value::Array(items) = arg else {
                    return Err(Invalid::new(&here, "`$all` takes an array"));
                };
                for (i, item) in items.iter().enumerate() {
                    check_literal(item, &format!("{here}[{i}]"), 0)?;
                }
                Cond::All(items.clone())
            }
            "$mod" => {
                let pair = arg.as_array().filter(|a| a.len() == 2);
                let int = |x: Option<&Value>| {
                    x.and_then(|x| {
                        x.as_i64().or_else(|| x.as_f64().filter(|f| f.is_finite()).map(|f| f.trunc() as i64))
                    })
                };
                let (Some(d), Some(r)) = (int(pair.and_then(|p| p.first())), int(pair.and_then(|p| p.get(1)))) else {
                    return Err(Invalid::new(&here, "`$mod` takes [divisor, remainder]"));
                };
                if d == 0 {
                    return Err(Invalid::new(&here, "`$mod` divisor must not be 0"));
                }
                Cond::Mod(d, r)
            }
            "$elemMatch" => {
                let Value::Object(m) = arg else {
                    return Err(Invalid::new(&here, "`$elemMatch` takes an object"));
                };
                let value_form = !m.is_empty()
                    && m.keys().all(|k| k.starts_with('$') && !matches!(k.as_str(), "$and" | "$or" | "$nor"));
                if value_form {
                    Cond::ElemMatch(ElemMatch::Value(parse_conds(arg, &here, depth + 1)?))
                } else {
                    Cond::ElemMatch(ElemMatch::Doc(parse_doc(arg, &here, depth + 1)?))
                }
            }
            "$not" => match arg {
                Value::Object(m) if m.contains_key("$regex") || is_operator_object(arg) => {
                    Cond::Not(parse_conds(arg, &here, depth + 1)?)
                }
                _ => return Err(Invalid::new(&here, "`$not` takes an operator object, e.g. {\"$not\": {\"$gt\": 5}}")),
            },
            "$where" | "$function" | "$expr" => {
                return Err(Invalid::new(&here, format!("`{op}` is not supported")));
            }
            other => return Err(Invalid::new(&here, format!("Unknown operator `{other}`"))),
        });
    }
    Ok(conds)
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Null => false,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => true,
    }
}

fn parse_regex(source: Option<&Value>, options: Option<&Value>, place: &str) -> Result<Pattern, Invalid> {
    let Some(Value::String(source)) = source else {
        return Err(Invalid::new(place, "`$regex` takes a string"));
    };
    let options = match options {
        None => "",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(Invalid::new(place, "`$options` must be a string")),
    };
    let mut builder = regex::RegexBuilder::new(source);
    for c in options.chars() {
        match c {
            'i' => builder.case_insensitive(true),
            'm' => builder.multi_line(true),
            's' => builder.dot_matches_new_line(true),
            'x' => builder.ignore_whitespace(true),
            other => {
                return Err(Invalid::new(place, format!("Unknown `$options` flag `{other}`; allowed: i, m, s, x")));
            }
        };
    }
    let regex = builder
        .size_limit(1 << 20)
        .build()
        .map_err(|e| Invalid::new(place, format!("Invalid regular expression: {}", first_line(&e.to_string()))))?;
    Ok(Pattern { source: source.clone(), options: options.to_string(), regex })
}

fn first_line(s: &str) -> &str {
    s.lines().last().unwrap_or(s).trim()
}

/// A literal operand must not hide operators or JavaScript (`{$where: …}` nested in `$eq`).
fn check_literal(v: &Value, place: &str, depth: usize) -> Result<(), Invalid> {
    if depth > MAX_DEPTH {
        return Err(Invalid::new(place, format!("Nested more than {MAX_DEPTH} levels deep")));
    }
    match v {
        Value::Object(m) if is_date_literal(m) => {
            if super::value::as_date(v).is_none() {
                return Err(Invalid::new(place, "`$date` takes an ISO 8601 time or milliseconds"));
            }
            Ok(())
        }
        Value::Object(m) => {
            for (k, x) in m {
                if k.starts_with('$') {
                    return Err(Invalid::new(place, format!("Operator `{k}` is not allowed inside a value")));
                }
                check_literal(x, place, depth + 1)?;
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|x| check_literal(x, place, depth + 1)),
        _ => Ok(()),
    }
}

/// Whether `v` belongs to a bracket SQL compares natively (null, numbers, strings, booleans).
pub fn is_scalar(v: &Value) -> bool {
    matches!(bracket(v), Bracket::Null | Bracket::Number | Bracket::String | Bracket::Bool)
}
