//! The read side of `orders`: an HTTP API over the order store and Kafka's consumer
//! offsets (JSON endpoints, a web view, Prometheus metrics, an OpenAPI document), and the
//! JSON client that scripts use (`ordersctl json`).

pub mod lag_status;
