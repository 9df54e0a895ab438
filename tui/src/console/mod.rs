//! `ordersctl tui`: the operator console — totals, consumer lag, live orders and fraud alerts
//! from the HTTP API, in one terminal screen.
//!
//! State (`state`), update (`keys`, [`state::App::apply`]) and drawing are apart; a
//! background task (`fetch`) does all network work and sends what it learns over a channel,
//! so drawing never waits on the API.

pub mod api;
pub mod fetch;
pub mod filter;
pub mod keys;
pub mod layout;
pub mod state;
pub mod text;
pub mod theme;
