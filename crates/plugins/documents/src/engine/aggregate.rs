//! Aggregation pipelines: `$match $project $addFields $group $sort $skip $limit $count $unwind
//! $lookup`, with the accumulators `$sum $avg $min $max $first $last $push $addToSet $count`
//! and a small expression language (field paths, literals, arithmetic, `$concat`, `$cond`, …).

use std::collections::HashMap;

use serde_json::{Map, Number, Value};

use super::Invalid;
use super::filter::{Cond, Filter};
use super::ordered::StageSpec;
use super::path::{Path, get_expr, reach};
use super::project::Projection;
use super::sort::Sort;
use super::value::{add, as_f64, compare, equal, float, mul};

#[derive(Debug, Clone)]
pub enum Expr {
    Field(Vec<String>),
    Literal(Value),
    Object(Vec<(String, Expr)>),
    Array(Vec<Expr>),
    Op(&'static str, Vec<Expr>),
}

const EXPR_OPS: &[&str] = &[
    "$add",
    "$subtract",
    "$multiply",
    "$divide",
    "$mod",
    "$concat",
    "$toLower",
    "$toUpper",
    "$size",
    "$ifNull",
    "$cond",
    "$eq",
    "$ne",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$and",
    "$or",
    "$not",
    "$abs",
];

impl Expr {
    pub fn parse(v: &Value, place: &str) -> Result<Self, Invalid> {
        Ok(match v {
            Value::String(s) if s.starts_with("$$") => {
                return Err(Invalid::new(place, format!("Variables such as `{s}` are not supported")));
            }
            Value::String(s) if s.starts_with('$') => {
                let path = Path::parse(s.trim_start_matches('$'), place)?;
                Expr::Field(path.segments)
            }
            Value::Array(items) => Expr::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| Expr::parse(x, &format!("{place}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(m) => match m.iter().next() {
                Some((k, arg)) if m.len() == 1 && k == "$literal" => Expr::Literal(arg.clone()),
                Some((k, arg)) if m.len() == 1 && k.starts_with('$') => {
                    let here = format!("{place}.{k}");
                    let op = EXPR_OPS
                        .iter()
                        .find(|o| **o == k.as_str())
                        .ok_or_else(|| Invalid::new(&here, format!("Unknown expression operator `{k}`")))?;
                    let args = match arg {
                        Value::Array(items) => items
                            .iter()
                            .enumerate()
                            .map(|(i, x)| Expr::parse(x, &format!("{here}[{i}]")))
                            .collect::<Result<Vec<_>, _>>()?,
                        one => vec![Expr::parse(one, &here)?],
                    };
                    Expr::Op(op, args)
                }
                _ => {
                    let mut fields = Vec::new();
                    for (k, x) in m {
                        let here = format!("{place}.{k}");
                        if k.starts_with('$') || k.contains('.') || k.is_empty() {
                            return Err(Invalid::new(&here, format!("Invalid field name `{k}`")));
                        }
                        fields.push((k.clone(), Expr::parse(x, &here)?));
                    }
                    Expr::Object(fields)
                }
            },
            other => Expr::Literal(other.clone()),
        })
    }

    /// The value for `doc`; `None` is "missing".
    pub fn eval(&self, doc: &Value) -> Option<Value> {
        match self {
            Expr::Field(segs) => get_expr(doc, segs),
            Expr::Literal(v) => Some(v.clone()),
            Expr::Object(fields) => {
                Some(Value::Object(fields.iter().filter_map(|(k, e)| e.eval(doc).map(|v| (k.clone(), v))).collect()))
            }
            Expr::Array(items) => {
                Some(Value::Array(items.iter().map(|e| e.eval(doc).unwrap_or(Value::Null)).collect()))
            }
            Expr::Op(op, args) => eval_op(op, args, doc),
        }
    }
}

fn num(v: &Option<Value>) -> Option<&Number> {
    match v {
        Some(Value::Number(n)) => Some(n),
        _ => None,
    }
}

fn truthy(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => true,
    }
}

fn eval_op(op: &str, args: &[Expr], doc: &Value) -> Option<Value> {
    let vals: Vec<Option<Value>> = args.iter().map(|a| a.eval(doc)).collect();
    let arg = |i: usize| vals.get(i).cloned().flatten();
    let nullish = |v: &Option<Value>| matches!(v, None | Some(Value::Null));
    Some(match op {
        "$add" | "$multiply" => {
            if vals.iter().any(nullish) {
                return Some(Value::Null);
            }
            let mut acc = Number::from(if op == "$add" { 0 } else { 1 });
            for v in &vals {
                let n = num(v)?;
                acc = if op == "$add" { add(&acc, n) } else { mul(&acc, n) };
            }
            Value::Number(acc)
        }
        "$subtract" | "$divide" | "$mod" => {
            let (a, b) = (arg(0), arg(1));
            if nullish(&a) || nullish(&b) {
                return Some(Value::Null);
            }
            let (x, y) = (num(&a)?, num(&b)?);
            match op {
                "$subtract" => Value::Number(add(x, &mul(y, &Number::from(-1)))),
                "$divide" => {
                    let d = y.as_f64()?;
                    if d == 0.0 {
                        return Some(Value::Null);
                    }
                    Value::Number(float(x.as_f64()? / d))
                }
                _ => match (x.as_i64(), y.as_i64()) {
                    (Some(i), Some(j)) if j != 0 => Value::from(i.checked_rem(j)?),
                    _ => Value::Number(float(x.as_f64()? % y.as_f64()?)),
                },
            }
        }
        "$abs" => match arg(0) {
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Value::from(i.checked_abs()?),
                None => Value::Number(float(n.as_f64()?.abs())),
            },
            _ => Value::Null,
        },
        "$concat" => {
            let mut s = String::new();
            for v in &vals {
                match v {
                    Some(Value::String(x)) => s.push_str(x),
                    _ => return Some(Value::Null),
                }
            }
            Value::String(s)
        }
        "$toLower" | "$toUpper" => match arg(0) {
            Some(Value::String(s)) => Value::String(if op == "$toLower" { s.to_lowercase() } else { s.to_uppercase() }),
            None | Some(Value::Null) => Value::String(String::new()),
            Some(other) => Value::String(other.to_string()),
        },
        "$size" => match arg(0) {
            Some(Value::Array(a)) => Value::from(a.len()),
            _ => Value::Null,
        },
        "$ifNull" => vals.iter().find(|v| !nullish(v)).cloned().flatten().unwrap_or(Value::Null),
        "$cond" => {
            if truthy(&arg(0)) {
                arg(1)?
            } else {
                arg(2)?
            }
        }
        "$eq" | "$ne" | "$gt" | "$gte" | "$lt" | "$lte" => {
            let a = arg(0).unwrap_or(Value::Null);
            let b = arg(1).unwrap_or(Value::Null);
            let o = compare(&a, &b);
            Value::Bool(match op {
                "$eq" => o.is_eq(),
                "$ne" => !o.is_eq(),
                "$gt" => o.is_gt(),
                "$gte" => o.is_ge(),
                "$lt" => o.is_lt(),
                _ => o.is_le(),
            })
        }
        "$and" => Value::Bool(vals.iter().all(truthy)),
        "$or" => Value::Bool(vals.iter().any(truthy)),
        "$not" => Value::Bool(!truthy(&arg(0))),
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acc {
    Sum,
    Avg,
    Min,
    Max,
    First,
    Last,
    Push,
    AddToSet,
    Count,
}

impl Acc {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "$sum" => Acc::Sum,
            "$avg" => Acc::Avg,
            "$min" => Acc::Min,
            "$max" => Acc::Max,
            "$first" => Acc::First,
            "$last" => Acc::Last,
            "$push" => Acc::Push,
            "$addToSet" => Acc::AddToSet,
            "$count" => Acc::Count,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Group {
    pub key: Expr,
    pub fields: Vec<(String, Acc, Expr)>,
}

#[derive(Debug, Clone)]
pub struct Unwind {
    pub path: Path,
    pub preserve: bool,
    pub index_field: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Lookup {
    pub from: String,
    pub local: Path,
    pub foreign: Path,
    pub as_field: Path,
}

#[derive(Debug, Clone)]
pub enum Stage {
    Match(Filter),
    Project { projection: Option<Projection>, computed: Vec<(Path, Expr)> },
    AddFields(Vec<(Path, Expr)>),
    Group(Group),
    Sort(Sort),
    Skip(u64),
    Limit(u64),
    Count(String),
    Unwind(Unwind),
    Lookup(Lookup),
}

/// Longest pipeline accepted.
const MAX_STAGES: usize = 100;

pub fn parse_pipeline(stages: &[StageSpec], place: &str) -> Result<Vec<Stage>, Invalid> {
    if stages.len() > MAX_STAGES {
        return Err(Invalid::new(place, format!("At most {MAX_STAGES} stages")));
    }
    stages.iter().enumerate().map(|(i, s)| parse_stage(s, &format!("{place}[{i}]"))).collect()
}

fn count_arg(v: &Value, place: &str) -> Result<u64, Invalid> {
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0).map(|f| f as u64))
        .ok_or_else(|| Invalid::new(place, "Takes a non-negative whole number"))
}

fn parse_stage(spec: &StageSpec, place: &str) -> Result<Stage, Invalid> {
    let (name, arg) = (&spec.name, &spec.arg);
    let here = format!("{place}.{name}");
    Ok(match name.as_str() {
        "$match" => Stage::Match(Filter::parse(arg, &here)?),
        "$project" => {
            let Value::Object(m) = arg else { return Err(Invalid::new(&here, "`$project` takes an object")) };
            let mut flags = Map::new();
            let mut computed = Vec::new();
            for (k, x) in m {
                let at = format!("{here}.{k}");
                match x {
                    Value::Bool(_) | Value::Number(_) => {
                        flags.insert(k.clone(), x.clone());
                    }
                    _ => computed.push((Path::parse(k, &at)?, Expr::parse(x, &at)?)),
                }
            }
            if !computed.is_empty() && flags.iter().any(|(k, f)| k != "_id" && f.as_f64() == Some(0.0)) {
                return Err(Invalid::new(&here, "Cannot mix exclusion with computed fields"));
            }
            if !computed.is_empty() {
                for (p, _) in &computed {
                    flags.entry(p.text.clone()).or_insert(Value::from(1));
                }
            }
            Stage::Project { projection: Projection::parse(&Value::Object(flags), &here)?, computed }
        }
        "$addFields" | "$set" => {
            let Value::Object(m) = arg else { return Err(Invalid::new(&here, "Takes an object")) };
            let mut fields = Vec::new();
            for (k, x) in m {
                let at = format!("{here}.{k}");
                fields.push((Path::parse(k, &at)?, Expr::parse(x, &at)?));
            }
            Stage::AddFields(fields)
        }
        "$group" => {
            let Value::Object(m) = arg else { return Err(Invalid::new(&here, "`$group` takes an object")) };
            let key = Expr::parse(
                m.get("_id").ok_or_else(|| Invalid::new(&here, "`$group` needs an `_id` (null for one group)"))?,
                &format!("{here}._id"),
            )?;
            let mut fields = Vec::new();
            for (k, spec) in m.iter().filter(|(k, _)| *k != "_id") {
                let at = format!("{here}.{k}");
                if k.contains('.') || k.starts_with('$') {
                    return Err(Invalid::new(&at, "Invalid output field name"));
                }
                let Some((acc_name, acc_arg)) = spec.as_object().filter(|s| s.len() == 1).and_then(|s| s.iter().next())
                else {
                    return Err(Invalid::new(&at, "An accumulator is an object such as {\"$sum\": \"$price\"}"));
                };
                let acc = Acc::parse(acc_name).ok_or_else(|| {
                    Invalid::new(format!("{at}.{acc_name}"), format!("Unknown accumulator `{acc_name}`"))
                })?;
                let expr = if acc == Acc::Count {
                    Expr::Literal(Value::Null)
                } else {
                    Expr::parse(acc_arg, &format!("{at}.{acc_name}"))?
                };
                fields.push((k.clone(), acc, expr));
            }
            Stage::Group(Group { key, fields })
        }
        "$sort" => match &spec.order {
            Some(o) => Stage::Sort(Sort::from_pairs(o.0.iter().map(|(k, v)| (k, v)), &here)?),
            None => Stage::Sort(Sort::parse(arg, &here)?),
        },
        "$skip" => Stage::Skip(count_arg(arg, &here)?),
        "$limit" => {
            let n = count_arg(arg, &here)?;
            if n == 0 {
                return Err(Invalid::new(&here, "`$limit` must be positive"));
            }
            Stage::Limit(n)
        }
        "$count" => match arg {
            Value::String(s) if !s.is_empty() && !s.starts_with('$') && !s.contains('.') => Stage::Count(s.clone()),
            _ => return Err(Invalid::new(&here, "`$count` takes the output field name")),
        },
        "$unwind" => {
            let (path, preserve, index_field) = match arg {
                Value::String(s) => (s.as_str(), false, None),
                Value::Object(m) => {
                    let path = m.get("path").and_then(Value::as_str).unwrap_or_default();
                    let preserve = m.get("preserveNullAndEmptyArrays").and_then(Value::as_bool).unwrap_or(false);
                    let index = m.get("includeArrayIndex").and_then(Value::as_str).map(str::to_string);
                    (path, preserve, index)
                }
                _ => return Err(Invalid::new(&here, "`$unwind` takes \"$field\" or {\"path\": \"$field\"}")),
            };
            let Some(p) = path.strip_prefix('$') else {
                return Err(Invalid::new(&here, "The `$unwind` path starts with `$`"));
            };
            Stage::Unwind(Unwind { path: Path::parse(p, &here)?, preserve, index_field })
        }
        "$lookup" => {
            let field = |k: &str| -> Result<&str, Invalid> {
                arg.get(k)
                    .and_then(Value::as_str)
                    .ok_or_else(|| Invalid::new(format!("{here}.{k}"), format!("`$lookup` needs `{k}`")))
            };
            Stage::Lookup(Lookup {
                from: field("from")?.to_string(),
                local: Path::parse(field("localField")?, &format!("{here}.localField"))?,
                foreign: Path::parse(field("foreignField")?, &format!("{here}.foreignField"))?,
                as_field: Path::parse(field("as")?, &format!("{here}.as"))?,
            })
        }
        other if other.starts_with('$') => {
            return Err(Invalid::new(&here, format!("Unknown or unsupported stage `{other}`")));
        }
        _ => return Err(Invalid::new(&here, "A stage name starts with `$`")),
    })
}

/// Runs one stage other than `$lookup` (which needs the store) over `docs`.
pub fn run_stage(stage: &Stage, docs: Vec<Value>) -> Vec<Value> {
    match stage {
        Stage::Match(f) => docs.into_iter().filter(|d| f.matches(d)).collect(),
        Stage::Project { projection, computed } => docs
            .into_iter()
            .map(|d| {
                let mut out = match projection {
                    Some(p) => p.apply(d.clone()),
                    None => d.clone(),
                };
                for (path, e) in computed {
                    match e.eval(&d) {
                        Some(v) => set_path(&mut out, &path.segments, v),
                        None => remove_path(&mut out, &path.segments),
                    }
                }
                out
            })
            .collect(),
        Stage::AddFields(fields) => docs
            .into_iter()
            .map(|mut d| {
                let values: Vec<Option<Value>> = fields.iter().map(|(_, e)| e.eval(&d)).collect();
                for ((path, _), v) in fields.iter().zip(values) {
                    if let Some(v) = v {
                        set_path(&mut d, &path.segments, v);
                    }
                }
                d
            })
            .collect(),
        Stage::Group(g) => group(g, docs),
        Stage::Sort(s) => {
            let mut docs = docs;
            s.apply(&mut docs);
            docs
        }
        Stage::Skip(n) => docs.into_iter().skip(usize::try_from(*n).unwrap_or(usize::MAX)).collect(),
        Stage::Limit(n) => docs.into_iter().take(usize::try_from(*n).unwrap_or(usize::MAX)).collect(),
        Stage::Count(name) => {
            if docs.is_empty() {
                Vec::new()
            } else {
                vec![Value::Object(Map::from_iter([(name.clone(), Value::from(docs.len()))]))]
            }
        }
        Stage::Unwind(u) => unwind(u, docs),
        Stage::Lookup(_) => docs,
    }
}

fn unwind(u: &Unwind, docs: Vec<Value>) -> Vec<Value> {
    let mut out = Vec::new();
    for d in docs {
        match super::path::get(&d, &u.path.segments) {
            Some(Value::Array(items)) if !items.is_empty() => {
                for (i, item) in items.clone().into_iter().enumerate() {
                    let mut copy = d.clone();
                    set_path(&mut copy, &u.path.segments, item);
                    if let Some(f) = &u.index_field {
                        set_path(&mut copy, std::slice::from_ref(f), Value::from(i));
                    }
                    out.push(copy);
                }
            }
            Some(Value::Array(_)) | Some(Value::Null) | None => {
                if u.preserve {
                    let mut copy = d;
                    // An empty array leaves no field behind, as in MongoDB; null stays.
                    if super::path::get(&copy, &u.path.segments).is_some_and(Value::is_array) {
                        remove_path(&mut copy, &u.path.segments);
                    }
                    if let Some(f) = &u.index_field {
                        set_path(&mut copy, std::slice::from_ref(f), Value::Null);
                    }
                    out.push(copy);
                }
            }
            Some(_) => {
                let mut copy = d;
                if let Some(f) = &u.index_field {
                    set_path(&mut copy, std::slice::from_ref(f), Value::Null);
                }
                out.push(copy);
            }
        }
    }
    out
}

/// The values `$lookup` matches on in `doc`: array elements count separately, and a missing
/// field matches null.
pub fn lookup_keys(doc: &Value, local: &Path) -> Vec<Value> {
    let mut found = Vec::new();
    reach(doc, &local.segments, &mut found);
    let mut keys = Vec::new();
    for v in found {
        match v {
            None => keys.push(Value::Null),
            Some(Value::Array(items)) => keys.extend(items.iter().cloned()),
            Some(x) => keys.push(x.clone()),
        }
    }
    if keys.is_empty() {
        keys.push(Value::Null);
    }
    keys
}

/// Joins `foreign` documents into each of `docs` as `$lookup` does.
pub fn lookup_join(l: &Lookup, docs: Vec<Value>, foreign: &[Value]) -> Vec<Value> {
    docs.into_iter()
        .map(|mut d| {
            let cond = Cond::In(lookup_keys(&d, &l.local), Vec::new());
            let joined: Vec<Value> = foreign
                .iter()
                .filter(|f| {
                    let mut found = Vec::new();
                    reach(f, &l.foreign.segments, &mut found);
                    cond.holds(&found)
                })
                .cloned()
                .collect();
            set_path(&mut d, &l.as_field.segments, Value::Array(joined));
            d
        })
        .collect()
}

/// A group key in canonical form (1 and 1.0 are one group).
pub fn canonical(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => v.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), canonical(x))).collect()),
        other => other.clone(),
    }
}

/// One accumulator's running state.
#[derive(Debug, Clone)]
pub enum State {
    Sum(Number),
    Avg(f64, u64),
    Pick(Option<Value>),
    List(Vec<Value>),
    Count(u64),
}

impl State {
    pub fn new(acc: Acc) -> Self {
        match acc {
            Acc::Sum => State::Sum(Number::from(0)),
            Acc::Avg => State::Avg(0.0, 0),
            Acc::Min | Acc::Max | Acc::First | Acc::Last => State::Pick(None),
            Acc::Push | Acc::AddToSet => State::List(Vec::new()),
            Acc::Count => State::Count(0),
        }
    }

    pub fn add(&mut self, acc: Acc, v: Option<Value>, first: bool) {
        match (self, acc) {
            (State::Sum(total), Acc::Sum) => {
                if let Some(Value::Number(n)) = &v {
                    *total = add(total, n);
                }
            }
            (State::Avg(total, count), Acc::Avg) => {
                if let Some(f) = v.as_ref().and_then(as_f64) {
                    *total += f;
                    *count += 1;
                }
            }
            (State::Pick(cur), Acc::Min | Acc::Max) => {
                if let Some(x) = v.filter(|x| !x.is_null()) {
                    let better = match cur {
                        None => true,
                        Some(c) => {
                            let o = compare(&x, c);
                            if acc == Acc::Min { o.is_lt() } else { o.is_gt() }
                        }
                    };
                    if better {
                        *cur = Some(x);
                    }
                }
            }
            (State::Pick(cur), Acc::First) if first => *cur = Some(v.unwrap_or(Value::Null)),
            (State::Pick(cur), Acc::Last) => *cur = Some(v.unwrap_or(Value::Null)),
            (State::List(items), Acc::Push) => {
                if let Some(x) = v {
                    items.push(x);
                }
            }
            (State::List(items), Acc::AddToSet) => {
                if let Some(x) = v
                    && !items.iter().any(|i| equal(i, &x))
                {
                    items.push(x);
                }
            }
            (State::Count(n), Acc::Count) => *n += 1,
            _ => {}
        }
    }

    pub fn finish(self) -> Value {
        match self {
            State::Sum(n) => Value::Number(n),
            State::Avg(_, 0) => Value::Null,
            State::Avg(total, count) => Value::Number(float(total / count as f64)),
            State::Pick(v) => v.unwrap_or(Value::Null),
            State::List(items) => Value::Array(items),
            State::Count(n) => Value::from(n),
        }
    }
}

pub fn group(g: &Group, docs: Vec<Value>) -> Vec<Value> {
    let mut order: Vec<(Value, Vec<State>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for d in &docs {
        let key = canonical(&g.key.eval(d).unwrap_or(Value::Null));
        let text = key.to_string();
        let (slot, first) = match index.get(&text) {
            Some(i) => (*i, false),
            None => {
                index.insert(text, order.len());
                order.push((key, g.fields.iter().map(|(_, acc, _)| State::new(*acc)).collect()));
                (order.len() - 1, true)
            }
        };
        if let Some((_, states)) = order.get_mut(slot) {
            for ((_, acc, e), st) in g.fields.iter().zip(states.iter_mut()) {
                st.add(*acc, e.eval(d), first);
            }
        }
    }
    order
        .into_iter()
        .map(|(key, states)| {
            let mut m = Map::new();
            m.insert("_id".into(), key);
            for ((name, _, _), st) in g.fields.iter().zip(states) {
                m.insert(name.clone(), st.finish());
            }
            Value::Object(m)
        })
        .collect()
}

pub fn set_path(doc: &mut Value, segs: &[String], v: Value) {
    let Some((last, parents)) = segs.split_last() else { return };
    let mut cur = doc;
    for seg in parents {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(m) = cur else { return };
        cur = m.entry(seg.clone()).or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    if let Value::Object(m) = cur {
        m.insert(last.clone(), v);
    }
}

fn remove_path(doc: &mut Value, segs: &[String]) {
    let Some((last, parents)) = segs.split_last() else { return };
    let mut cur = doc;
    for seg in parents {
        match cur.get_mut(seg.as_str()) {
            Some(x) => cur = x,
            None => return,
        }
    }
    if let Value::Object(m) = cur {
        m.remove(last);
    }
}

/// [`set_path`] on a document's map.
pub fn set_path_map(m: &mut Map<String, Value>, segs: &[String], v: Value) {
    let mut doc = Value::Object(std::mem::take(m));
    set_path(&mut doc, segs, v);
    if let Value::Object(out) = doc {
        *m = out;
    }
}
