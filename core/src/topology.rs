//! The pipeline's topology on Kafka: the names of its topics and consumer groups and the
//! partition counts it expects. Names only, no client: what the Kafka setup, the lag and
//! progress views and the tools share.

pub const FRAUD_ALERTS_TOPIC: &str = "fraud-alerts";
pub const PAYMENTS_TOPIC: &str = "payments";
pub const ANALYTICS_TOPIC: &str = "order-analytics";
pub const FRAUD_GROUP: &str = "fraud-group";
pub const PAYMENTS_GROUP: &str = "payments-group";
pub const ANALYTICS_GROUP: &str = "analytics-group";
/// The groups that each read every order.
pub const ORDER_GROUPS: [&str; 3] = [FRAUD_GROUP, PAYMENTS_GROUP, ANALYTICS_GROUP];

/// The dead-letter topic of a topic.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// The ledger of handled (redriven or discarded) dead letters: a compacted topic, one per
/// pipeline, read and written by `ordersctl dlq` and read by the api and the audit.
pub fn dlq_handled_topic(orders_topic: &str) -> String {
    format!("{}.handled", dlq_topic(orders_topic))
}

/// The topics operators' tools use beside the pipeline's own (the daemons need none of
/// them); the embedded broker creates them too.
pub fn operator_topics(orders_topic: &str) -> Vec<(String, i32)> {
    vec![(dlq_handled_topic(orders_topic), 1)]
}

/// The topics the pipeline uses and their partition counts (SPEC: `orders` has 6).
pub fn pipeline_topics(orders_topic: &str) -> Vec<(String, i32)> {
    vec![
        (orders_topic.to_owned(), 6),
        (FRAUD_ALERTS_TOPIC.to_owned(), 6),
        (PAYMENTS_TOPIC.to_owned(), 6),
        (ANALYTICS_TOPIC.to_owned(), 1),
        (dlq_topic(orders_topic), 1),
        (dlq_topic(FRAUD_ALERTS_TOPIC), 1),
        (dlq_topic(PAYMENTS_TOPIC), 1),
    ]
}
