//! Integration tests: real servers on ephemeral ports, spoken to over HTTP (and the `nexus`
//! binary itself, for the command line). One test binary, so the suite links once.

// JSON values index to `Null` instead of panicking; tests read responses that way.
#![allow(clippy::indexing_slicing)]

mod cli;
mod conventions;
mod docs;
mod edge;
mod health;
mod identity;
mod identity_core_v2;
mod identity_media;
mod lists;
mod realtime;
mod secrets;
mod storage;
mod webhooks;
