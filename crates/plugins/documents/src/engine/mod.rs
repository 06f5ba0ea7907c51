//! The document engine: pure Rust, no I/O. Filters, sort, projection, updates and
//! aggregation with MongoDB's semantics; the SQL compiler ([`crate::sql`]) pushes what it can
//! to the database and this engine evaluates the rest.

pub mod aggregate;
pub mod filter;
pub mod ordered;
pub mod path;
pub mod project;
pub mod sort;
pub mod update;
pub mod value;

#[cfg(test)]
pub(crate) mod tests;

/// Bad input, naming where it is (`filter.price.$gte`, `pipeline[2].$group.total`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {message}")]
pub struct Invalid {
    pub place: String,
    pub message: String,
}

impl Invalid {
    pub fn new(place: impl Into<String>, message: impl Into<String>) -> Self {
        Self { place: place.into(), message: message.into() }
    }
}
