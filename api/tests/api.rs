//! Integration tests of the API: the router against a real SQLite store (every endpoint,
//! bad inputs, dependencies down) and a server started with `serve`.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

#[path = "api/common.rs"]
mod common;
#[path = "api/router.rs"]
mod router;
