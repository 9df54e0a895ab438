//! Integration tests of the API: who gets in and how much they may ask, the router against a real SQLite store (every endpoint,
//! bad inputs, dependencies down), a server started with `serve`, and the JSON client
//! (`ordersctl json`) against it, consumer lag against the embedded pipeline, and the web
//! view in a real headless browser.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

#[path = "api/access.rs"]
mod access;
#[path = "api/alb_keys.rs"]
mod alb_keys;
#[path = "api/common.rs"]
mod common;
#[path = "api/dead_letters.rs"]
mod dead_letters;
#[path = "api/json_cli.rs"]
mod json_cli;
#[path = "api/lag_pipeline.rs"]
mod lag_pipeline;
#[path = "api/ops_readyz.rs"]
mod ops_readyz;
#[path = "api/router.rs"]
mod router;
#[path = "api/schemas.rs"]
mod schemas;
#[path = "api/web_view.rs"]
mod web_view;
