//! Projection: an inclusion list (`["name", "price"]`: exactly those fields), or
//! `{field: 1|0}` with MongoDB's rules (`_id` shown unless excluded; inclusion and exclusion
//! are not mixed, except for `_id`).

use serde_json::{Map, Value};

use super::Invalid;
use super::path::Path;

#[derive(Debug, Clone)]
pub enum Projection {
    Include { paths: Vec<Path>, id: bool },
    Exclude(Vec<Path>),
}

impl Projection {
    pub fn parse(v: &Value, place: &str) -> Result<Option<Self>, Invalid> {
        match v {
            Value::Null => Ok(None),
            Value::Array(items) => {
                let mut paths = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let here = format!("{place}[{i}]");
                    let Value::String(s) = item else {
                        return Err(Invalid::new(&here, "Projection list entries are field names"));
                    };
                    paths.push(Path::parse(s, &here)?);
                }
                let id = paths.iter().any(Path::is_id);
                Ok(Some(Projection::Include { paths: paths.into_iter().filter(|p| !p.is_id()).collect(), id }))
            }
            Value::Object(m) if m.is_empty() => Ok(None),
            Value::Object(m) => {
                let mut include = Vec::new();
                let mut exclude = Vec::new();
                let mut id = None;
                for (k, flag) in m {
                    let here = format!("{place}.{k}");
                    let on = match flag {
                        Value::Bool(b) => *b,
                        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                        _ => return Err(Invalid::new(&here, "Projection values are 1 or 0")),
                    };
                    let path = Path::parse(k, &here)?;
                    if path.is_id() {
                        id = Some(on);
                    } else if on {
                        include.push(path);
                    } else {
                        exclude.push(path);
                    }
                }
                match (include.is_empty(), exclude.is_empty()) {
                    (false, false) => Err(Invalid::new(place, "A projection cannot mix inclusion and exclusion")),
                    (true, false) | (true, true) if id != Some(true) || !exclude.is_empty() => {
                        let mut exclude = exclude;
                        if id == Some(false) {
                            exclude.push(Path::parse("_id", place)?);
                        }
                        Ok(Some(Projection::Exclude(exclude)))
                    }
                    _ => Ok(Some(Projection::Include { paths: include, id: id.unwrap_or(true) })),
                }
            }
            _ => Err(Invalid::new(place, "A projection is a list of field names or an object of 1/0")),
        }
    }

    pub fn apply(&self, doc: Value) -> Value {
        match self {
            Projection::Include { paths, id } => {
                let mut out = Map::new();
                let Value::Object(m) = doc else { return Value::Object(out) };
                if *id && let Some(v) = m.get("_id") {
                    out.insert("_id".to_string(), v.clone());
                }
                include(&m, &Tree::of(paths), &mut out);
                Value::Object(out)
            }
            Projection::Exclude(paths) => {
                let mut doc = doc;
                for p in paths {
                    remove(&mut doc, &p.segments);
                }
                doc
            }
        }
    }
}

/// Included paths as a tree: a leaf takes the whole value.
#[derive(Debug, Default)]
struct Tree(std::collections::BTreeMap<String, Option<Tree>>);

impl Tree {
    fn of(paths: &[Path]) -> Self {
        let mut root = Tree::default();
        for p in paths {
            let mut node = &mut root;
            let n = p.segments.len();
            for (i, seg) in p.segments.iter().enumerate() {
                let entry = node.0.entry(seg.clone()).or_insert_with(|| Some(Tree::default()));
                if i + 1 == n {
                    *entry = None;
                    break;
                }
                match entry {
                    Some(t) => node = t,
                    None => break,
                }
            }
        }
        root
    }
}

/// What `tree` selects of the document `m`; through arrays, of each element document
/// (other elements vanish under a nested inclusion, as in MongoDB).
fn include(m: &Map<String, Value>, tree: &Tree, out: &mut Map<String, Value>) {
    for (k, node) in &tree.0 {
        let Some(v) = m.get(k) else { continue };
        match (node, v) {
            (None, v) => {
                out.insert(k.clone(), v.clone());
            }
            (Some(t), Value::Object(inner)) => {
                let mut o = Map::new();
                include(inner, t, &mut o);
                out.insert(k.clone(), Value::Object(o));
            }
            (Some(t), Value::Array(items)) => {
                let kept = items
                    .iter()
                    .filter_map(Value::as_object)
                    .map(|inner| {
                        let mut o = Map::new();
                        include(inner, t, &mut o);
                        Value::Object(o)
                    })
                    .collect();
                out.insert(k.clone(), Value::Array(kept));
            }
            (Some(_), _) => {}
        }
    }
}

fn remove(v: &mut Value, segments: &[String]) {
    let Some((seg, rest)) = segments.split_first() else { return };
    match v {
        Value::Object(m) => {
            if rest.is_empty() {
                m.remove(seg);
            } else if let Some(x) = m.get_mut(seg) {
                remove(x, rest);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|x| remove(x, segments)),
        _ => {}
    }
}
