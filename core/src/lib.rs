//! The core of `orders`: domain model, configuration, Kafka setup and the order store.
//!
//! Nothing here knows about HTTP or terminals.

pub mod audit;
pub mod canary;
pub mod client_log;
pub mod config;
pub mod cpu_time;
pub mod dead_letters;
pub mod domain;
pub mod fraud;
pub mod generator;
pub mod kafka;
pub mod lag;
pub mod liveness;
pub mod money;
pub mod progress;
pub mod schemas;
pub mod store;
pub mod topology;

pub use domain::{
    AnalyticsTotals, Country, DecodeError, FraudAlert, Order, OrderStatus, Payment, PaymentStatus,
    Timestamp,
};
pub use money::Cents;
