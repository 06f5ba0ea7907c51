//! The API conventions that wrap every route (framework seed: "Rate Limiting",
//! "API Versioning", "Batch Requests"; plus `ETag` / `If-None-Match`). List conventions
//! (pagination, filters, sorting, field selection) live in `nexus_web::list` and
//! `nexus_kernel::query`, declared by each list endpoint.

pub mod batch;
pub mod etag;
pub mod ratelimit;
pub mod service;
pub mod version;
