//! JSON objects whose key order matters (`sort: {"price": -1, "name": 1}`, `$sort` stages):
//! serde_json's map keeps keys sorted, so these are read in document order here.

use std::fmt;

use serde::de::{Deserialize, Deserializer, Error, MapAccess, Visitor};
use serde_json::Value;

/// An object's entries in the order they were written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ordered(pub Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// One pipeline stage as written: `{"$sort": {…}}` keeps its keys' order.
#[derive(Debug, Clone)]
pub struct StageSpec {
    pub name: String,
    pub arg: Value,
    /// The argument's entries in order, for `$sort`.
    pub order: Option<Ordered>,
}

impl<'de> Deserialize<'de> for StageSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StageSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a stage object with one key, such as {\"$match\": {…}}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StageSpec, A::Error> {
                let Some(name) = map.next_key::<String>()? else {
                    return Err(A::Error::custom("a stage needs one key, such as $match"));
                };
                let (arg, order) = if name == "$sort" {
                    let o: Ordered = map.next_value()?;
                    (Value::Object(o.0.iter().cloned().collect()), Some(o))
                } else {
                    (map.next_value()?, None)
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(A::Error::custom("a stage has exactly one key"));
                }
                Ok(StageSpec { name, arg, order })
            }
        }
        d.deserialize_map(V)
    }
}
