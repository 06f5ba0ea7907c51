//! The document database: MongoDB-style collections over SQLite and PostgreSQL. Filters,
//! sorting, paging, counting and the common `$group` stages are compiled to SQL; the engine
//! evaluates in Rust only what SQL cannot express exactly. See `docs/documents.md`.

pub mod engine;
