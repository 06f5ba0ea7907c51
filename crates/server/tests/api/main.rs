//! Integration tests: real servers on ephemeral ports, spoken to over HTTP (and the `nexus`
//! binary itself, for the command line). One test binary, so the suite links once.

mod cli;
mod conventions;
mod docs;
mod edge;
mod health;
mod identity;
mod identity_core_v2;
mod identity_media;
mod realtime;
mod secrets;
mod storage;
mod webhooks;
