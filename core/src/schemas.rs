//! The JSON Schema documents of every topic's records (docs/schemas/), compiled in so the
//! schemas the API serves are the files the docs hold.

/// One published schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSchema {
    /// The name it is served under: `/api/schemas/{name}`, `docs/schemas/{name}.json`.
    pub name: &'static str,
    /// The topic whose records it describes (`<orders topic>`: whatever `TOPIC_NAME` says).
    pub topic: &'static str,
    /// Which part of the record: `value`, or `headers` for the dead-letter headers.
    pub part: &'static str,
    /// Which of the topic's records, when it carries more than one kind.
    pub records: &'static str,
    /// The JSON Schema document (draft 2020-12), as the file holds it.
    pub document: &'static str,
}

/// Every published schema, in the order the topics are read.
pub const ALL: [TopicSchema; 6] = [
    TopicSchema {
        name: "order",
        topic: "orders",
        part: "value",
        records: "every record (key: the order id)",
        document: include_str!("../../docs/schemas/order.json"),
    },
    TopicSchema {
        name: "fraud-alert",
        topic: "fraud-alerts",
        part: "value",
        records: "every record (key: the order id)",
        document: include_str!("../../docs/schemas/fraud-alert.json"),
    },
    TopicSchema {
        name: "payment",
        topic: "payments",
        part: "value",
        records: "every record (key: the order id)",
        document: include_str!("../../docs/schemas/payment.json"),
    },
    TopicSchema {
        name: "analytics-totals",
        topic: "order-analytics",
        part: "value",
        records: "the totals record (no key)",
        document: include_str!("../../docs/schemas/analytics-totals.json"),
    },
    TopicSchema {
        name: "analytics-country",
        topic: "order-analytics",
        part: "value",
        records: "the per-country records (key: the country code)",
        document: include_str!("../../docs/schemas/analytics-country.json"),
    },
    TopicSchema {
        name: "dead-letter-headers",
        topic: "<topic>.dlq",
        part: "headers",
        records: "every record (key and value: the unusable record's)",
        document: include_str!("../../docs/schemas/dead-letter-headers.json"),
    },
];

/// The schema served under `name`.
pub fn by_name(name: &str) -> Option<&'static TopicSchema> {
    ALL.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// Each document is JSON, an object, and titled; the names are unique.
    #[test]
    fn every_document_is_a_json_schema_object() {
        let mut names = std::collections::BTreeSet::new();
        for s in super::ALL {
            assert!(names.insert(s.name), "{} twice", s.name);
            let doc: serde_json::Value = serde_json::from_str(s.document).unwrap();
            assert_eq!(
                doc["$schema"], "https://json-schema.org/draft/2020-12/schema",
                "{}",
                s.name
            );
            assert_eq!(doc["type"], "object", "{}", s.name);
            assert!(doc["title"].is_string(), "{}", s.name);
        }
    }
}
