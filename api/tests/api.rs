//! Integration tests of the API: the router against a real SQLite store (every endpoint,
//! bad inputs, dependencies down), a server started with `serve`, and the JSON client
//! (`ordersctl json`) against it.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

#[path = "api/common.rs"]
mod common;
#[path = "api/json_cli.rs"]
mod json_cli;
#[path = "api/router.rs"]
mod router;
