//! Update operators: `$set $unset $inc $mul $min $max $rename $push ($each) $pull $addToSet
//! ($each) $pop $currentDate $setOnInsert`, applied to one document. A type error (`$inc` on
//! a string) names the operator and the path, and leaves the document as it was.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::Invalid;
use super::filter::{Cond, Filter};
use super::path::{Path, index};
use super::value::{add, compare, equal, mul};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Set,
    Unset,
    Inc,
    Mul,
    Min,
    Max,
    Rename,
    Push,
    Pull,
    AddToSet,
    Pop,
    CurrentDate,
    SetOnInsert,
}

impl Op {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "$set" => Op::Set,
            "$unset" => Op::Unset,
            "$inc" => Op::Inc,
            "$mul" => Op::Mul,
            "$min" => Op::Min,
            "$max" => Op::Max,
            "$rename" => Op::Rename,
            "$push" => Op::Push,
            "$pull" => Op::Pull,
            "$addToSet" => Op::AddToSet,
            "$pop" => Op::Pop,
            "$currentDate" => Op::CurrentDate,
            "$setOnInsert" => Op::SetOnInsert,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
enum Arg {
    Value(Value),
    Each(Vec<Value>),
    Rename(Path),
    /// `$pull` with a condition: elements matching it are removed.
    PullIf(PullCond),
}

#[derive(Debug, Clone)]
enum PullCond {
    Conds(Vec<Cond>),
    Doc(Filter),
}

#[derive(Debug, Clone)]
struct Action {
    op: Op,
    path: Path,
    arg: Arg,
    place: String,
}

#[derive(Debug, Clone)]
pub struct Update {
    actions: Vec<Action>,
}

impl Update {
    /// Parses an operator document; a document without operators is refused (use
    /// `replace_one`).
    pub fn parse(v: &Value, place: &str) -> Result<Self, Invalid> {
        let Value::Object(m) = v else {
            return Err(Invalid::new(place, "An update must be an object of update operators such as {\"$set\": {…}}"));
        };
        if m.is_empty() {
            return Err(Invalid::new(place, "An update needs at least one operator"));
        }
        let mut actions = Vec::new();
        for (name, fields) in m {
            let here = format!("{place}.{name}");
            let op = Op::parse(name).ok_or_else(|| {
                if name.starts_with('$') {
                    Invalid::new(&here, format!("Unknown update operator `{name}`"))
                } else {
                    Invalid::new(&here, "Updates take operators ($set, $inc, …); to replace a document use replace_one")
                }
            })?;
            let Value::Object(fields) = fields else {
                return Err(Invalid::new(&here, format!("`{name}` takes an object of fields")));
            };
            for (field, arg) in fields {
                let at = format!("{here}.{field}");
                let path = Path::parse(field, &at)?;
                if path.segments.first().is_some_and(|s| s == "_id") && op != Op::SetOnInsert {
                    return Err(Invalid::new(&at, "`_id` cannot be changed"));
                }
                let arg = parse_arg(op, arg, &at)?;
                actions.push(Action { op, path, arg, place: at });
            }
        }
        // Two operators on one path, or on a path and its parent, are ambiguous.
        let mut touched: Vec<(&Path, &str)> = Vec::new();
        for a in &actions {
            let mut paths = vec![&a.path];
            if let Arg::Rename(to) = &a.arg {
                paths.push(to);
            }
            for p in paths {
                if let Some((_, other)) = touched.iter().find(|(q, _)| overlaps(p, q)) {
                    return Err(Invalid::new(&a.place, format!("Conflicts with {other}")));
                }
                touched.push((p, &a.place));
            }
        }
        Ok(Self { actions })
    }

    /// Applies the update to `doc` (`inserting`: the document is being created by an upsert,
    /// so `$setOnInsert` applies). `now` is the RFC 3339 time for `$currentDate`.
    pub fn apply(&self, doc: &Value, inserting: bool, now: &str) -> Result<Value, Invalid> {
        let mut out = doc.clone();
        for a in &self.actions {
            apply_one(&mut out, a, inserting, now)?;
        }
        Ok(out)
    }

    /// The top-level fields this update changes, for events.
    pub fn changed_fields(&self) -> Vec<String> {
        let mut out: Vec<String> = self.actions.iter().map(|a| a.path.text.clone()).collect();
        out.extend(self.actions.iter().filter_map(|a| match &a.arg {
            Arg::Rename(to) => Some(to.text.clone()),
            _ => None,
        }));
        out
    }
}

fn overlaps(a: &Path, b: &Path) -> bool {
    a.segments.iter().zip(&b.segments).all(|(x, y)| x == y)
}

fn parse_arg(op: Op, arg: &Value, place: &str) -> Result<Arg, Invalid> {
    Ok(match op {
        Op::Inc | Op::Mul => {
            if !arg.is_number() {
                return Err(Invalid::new(place, "Takes a number"));
            }
            Arg::Value(arg.clone())
        }
        Op::Rename => {
            let Value::String(to) = arg else {
                return Err(Invalid::new(place, "`$rename` takes the new field name"));
            };
            let to = Path::parse(to, place)?;
            if to.is_id() {
                return Err(Invalid::new(place, "`_id` cannot be changed"));
            }
            Arg::Rename(to)
        }
        Op::Push | Op::AddToSet => match arg {
            Value::Object(m) if m.contains_key("$each") => {
                if let Some(k) = m.keys().find(|k| *k != "$each") {
                    return Err(Invalid::new(place, format!("`{k}` is not supported with `$each`")));
                }
                let Some(Value::Array(items)) = m.get("$each") else {
                    return Err(Invalid::new(place, "`$each` takes an array"));
                };
                Arg::Each(items.clone())
            }
            v => Arg::Each(vec![v.clone()]),
        },
        Op::Pop => match arg.as_i64() {
            Some(1 | -1) => Arg::Value(arg.clone()),
            _ => return Err(Invalid::new(place, "`$pop` takes 1 (last) or -1 (first)")),
        },
        Op::Pull => match arg {
            Value::Object(m) if m.keys().next().is_some_and(|k| k.starts_with('$')) => {
                let wrapped = serde_json::json!({ "v": arg });
                match Filter::parse(&wrapped, place)? {
                    Filter::Field(_, conds) => Arg::PullIf(PullCond::Conds(conds)),
                    _ => return Err(Invalid::new(place, "Invalid `$pull` condition")),
                }
            }
            Value::Object(_) => Arg::PullIf(PullCond::Doc(Filter::parse(arg, place)?)),
            v => Arg::PullIf(PullCond::Conds(vec![Cond::Eq(v.clone())])),
        },
        Op::CurrentDate => match arg {
            Value::Bool(true) => Arg::Value(Value::String("date".into())),
            Value::Object(m) => match m.get("$type").and_then(Value::as_str) {
                Some("date") => Arg::Value(Value::String("date".into())),
                Some("timestamp") => Arg::Value(Value::String("timestamp".into())),
                _ => return Err(Invalid::new(place, "`$currentDate` takes true or {\"$type\": \"date\"}")),
            },
            _ => return Err(Invalid::new(place, "`$currentDate` takes true or {\"$type\": \"date\"}")),
        },
        Op::Set | Op::Unset | Op::Min | Op::Max | Op::SetOnInsert => Arg::Value(arg.clone()),
    })
}

fn type_error(a: &Action, found: &Value, wanted: &str) -> Invalid {
    let kind = match found {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    Invalid::new(&a.place, format!("Cannot apply to `{}`: it is {kind}, not {wanted}", a.path.text))
}

fn apply_one(doc: &mut Value, a: &Action, inserting: bool, now: &str) -> Result<(), Invalid> {
    let segs = &a.path.segments;
    match (&a.op, &a.arg) {
        (Op::SetOnInsert, _) if !inserting => Ok(()),
        (Op::Set | Op::SetOnInsert, Arg::Value(v)) => {
            *slot(doc, segs, a)? = v.clone();
            Ok(())
        }
        (Op::Unset, _) => {
            take(doc, segs);
            Ok(())
        }
        (Op::Inc | Op::Mul, Arg::Value(Value::Number(by))) => {
            let target = slot(doc, segs, a)?;
            let result = match target {
                Value::Null if get_is_missing(target) => {
                    if a.op == Op::Inc {
                        by.clone()
                    } else {
                        mul(by, &serde_json::Number::from(0))
                    }
                }
                Value::Number(n) => {
                    if a.op == Op::Inc {
                        add(n, by)
                    } else {
                        mul(n, by)
                    }
                }
                other => return Err(type_error(a, other, "a number")),
            };
            *target = Value::Number(result);
            Ok(())
        }
        (Op::Min | Op::Max, Arg::Value(v)) => {
            let target = slot(doc, segs, a)?;
            let replace = get_is_missing(target) || {
                let o = compare(v, target);
                if a.op == Op::Min { o == Ordering::Less } else { o == Ordering::Greater }
            };
            if replace {
                *target = v.clone();
            }
            Ok(())
        }
        (Op::Rename, Arg::Rename(to)) => {
            if let Some(v) = take(doc, segs) {
                *slot(doc, &to.segments, a)? = v;
            }
            Ok(())
        }
        (Op::Push | Op::AddToSet, Arg::Each(items)) => {
            let target = slot(doc, segs, a)?;
            if get_is_missing(target) {
                *target = Value::Array(Vec::new());
            }
            let Value::Array(arr) = target else { return Err(type_error(a, target, "an array")) };
            for item in items {
                if a.op == Op::Push || !arr.iter().any(|x| equal(x, item)) {
                    arr.push(item.clone());
                }
            }
            Ok(())
        }
        (Op::Pop, Arg::Value(side)) => match find_mut(doc, segs) {
            None => Ok(()),
            Some(Value::Array(arr)) => {
                if side.as_i64() == Some(-1) {
                    if !arr.is_empty() {
                        arr.remove(0);
                    }
                } else {
                    arr.pop();
                }
                Ok(())
            }
            Some(other) => Err(type_error(a, other, "an array")),
        },
        (Op::Pull, Arg::PullIf(cond)) => match find_mut(doc, segs) {
            None => Ok(()),
            Some(Value::Array(arr)) => {
                arr.retain(|e| match cond {
                    PullCond::Conds(conds) => !conds.iter().all(|c| c.holds(&[Some(e)])),
                    PullCond::Doc(f) => !(e.is_object() && f.matches(e)),
                });
                Ok(())
            }
            Some(other) => Err(type_error(a, other, "an array")),
        },
        (Op::CurrentDate, Arg::Value(kind)) => {
            let value = if kind.as_str() == Some("timestamp") {
                serde_json::json!(super::value::parse_date(now).unwrap_or(0) as i64)
            } else {
                serde_json::json!({ "$date": now })
            };
            *slot(doc, segs, a)? = value;
            Ok(())
        }
        _ => Err(Invalid::new(&a.place, "Invalid update")),
    }
}

/// A marker for "created by `slot`": a fresh slot is `Null` inside a one-key object
/// `{"\u{0}missing": true}` would be clumsy, so `slot` returns null and callers treat null as
/// missing where MongoDB treats missing specially (`$inc`, `$min`, `$push`).
fn get_is_missing(v: &Value) -> bool {
    v.is_null()
}

/// The value at `segs`, created (as null, with parent objects) when missing. Indexes past an
/// array's end pad it with nulls, as MongoDB does.
fn slot<'a>(doc: &'a mut Value, segs: &[String], a: &Action) -> Result<&'a mut Value, Invalid> {
    let mut cur = doc;
    for seg in segs {
        cur = match cur {
            Value::Object(m) => m.entry(seg.clone()).or_insert(Value::Null),
            Value::Array(items) => {
                let Some(i) = index(seg) else {
                    return Err(Invalid::new(
                        &a.place,
                        format!("Cannot create field `{seg}` of `{}`: it is inside an array", a.path.text),
                    ));
                };
                if i > 100_000 {
                    return Err(Invalid::new(&a.place, "Array index too large"));
                }
                while items.len() <= i {
                    items.push(Value::Null);
                }
                items.get_mut(i).ok_or_else(|| Invalid::new(&a.place, "Array index out of range"))?
            }
            Value::Null => {
                *cur = Value::Object(Map::new());
                match cur {
                    Value::Object(m) => m.entry(seg.clone()).or_insert(Value::Null),
                    _ => return Err(Invalid::new(&a.place, "Invalid path")),
                }
            }
            other => {
                return Err(Invalid::new(
                    &a.place,
                    format!("Cannot create field `{seg}` of `{}`: its parent is {}", a.path.text, short(other)),
                ));
            }
        };
    }
    Ok(cur)
}

fn short(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        _ => "not a document",
    }
}

fn find_mut<'a>(doc: &'a mut Value, segs: &[String]) -> Option<&'a mut Value> {
    let mut cur = doc;
    for seg in segs {
        cur = match cur {
            Value::Object(m) => m.get_mut(seg)?,
            Value::Array(items) => items.get_mut(index(seg)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Removes the value at `segs`; an array element becomes null (as `$unset` does in MongoDB).
fn take(doc: &mut Value, segs: &[String]) -> Option<Value> {
    let (last, parent) = segs.split_last()?;
    match find_mut(doc, parent)? {
        Value::Object(m) => m.remove(last),
        Value::Array(items) => items.get_mut(index(last)?).map(std::mem::take),
        _ => None,
    }
}
