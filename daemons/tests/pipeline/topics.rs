//! What the daemons left on the topics, read back to the end: the `order-analytics` records
//! (the totals record and the per-country table), and every record checked against the
//! published JSON Schemas (docs/schemas/).

use super::*;
use orders_core::domain::CountryTotals;
use std::collections::BTreeMap;

/// One record as read back.
pub struct Read {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// Every record on `topic`, from the beginning to the high watermarks as they are now, in
/// offset order per partition.
pub async fn read_to_end(kafka: &KafkaSettings, topic: &str) -> Vec<Read> {
    let (kafka, topic) = (kafka.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = kafka
            .consumer_config("topic-reader", "topic-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .unwrap();
        let partitions: Vec<i32> = metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| p.id())
            .collect();
        let mut tpl = TopicPartitionList::new();
        let mut remaining = 0;
        let mut ends = BTreeMap::new();
        for p in partitions {
            let (low, high) = consumer
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .unwrap();
            if high > low {
                tpl.add_partition_offset(&topic, p, Offset::Offset(low))
                    .unwrap();
                remaining += high - low;
                ends.insert(p, high);
            }
        }
        let mut records = Vec::new();
        if remaining == 0 {
            return records;
        }
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while remaining > 0 {
            assert!(
                Instant::now() < deadline,
                "{topic}: {remaining} records unread"
            );
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m.unwrap();
            if m.offset() >= ends[&m.partition()] {
                continue;
            }
            remaining -= 1;
            records.push(Read {
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
            });
        }
        records
    })
    .await
    .unwrap()
}

/// The totals record as the seed's readers parse it: every record without a key, the two
/// fields they read (and nothing more, so an unknown field would not break them either).
#[derive(serde::Deserialize)]
struct SeedTotals {
    total_sales: f64,
    order_count: u64,
}

/// `order-analytics` read to the end holds, as its last record without a key, the exact
/// totals of orders 1..=n, and as the last record per country key the exact figures of that
/// country's orders (the table the seed's ksqlDB kept); every record is one of the two shapes.
pub async fn assert_analytics_topic(kafka: &KafkaSettings, n: u64) {
    let generator = OrderGenerator::new(SEED);
    let t0 = Timestamp::now();
    let mut expected: BTreeMap<String, (u64, Cents)> = BTreeMap::new();
    for id in 1..=n {
        let o = generator.order(id, t0);
        let e = expected.entry(o.country.to_string()).or_default();
        e.0 += 1;
        e.1 = e.1 + o.amount;
    }
    let expected_sales: Cents = expected.values().map(|e| e.1).sum();

    let records = read_to_end(kafka, orders_core::kafka::ANALYTICS_TOPIC).await;
    let mut last_totals = None;
    let mut last_by_country: BTreeMap<String, CountryTotals> = BTreeMap::new();
    for r in &records {
        match &r.key {
            None => {
                let t: SeedTotals = serde_json::from_slice(&r.payload).unwrap();
                let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
                assert!(v.get("country").is_none(), "a totals record with a country");
                last_totals = Some(t);
            }
            Some(key) => {
                let c: CountryTotals = serde_json::from_slice(&r.payload).unwrap();
                assert_eq!(
                    key.as_slice(),
                    c.country.as_str().as_bytes(),
                    "key = country"
                );
                last_by_country.insert(c.key(), c);
            }
        }
    }
    let totals = last_totals.expect("no totals record on order-analytics");
    assert_eq!(
        totals.order_count, n,
        "order_count of the last totals record"
    );
    assert_eq!(
        Cents::from_dollars(totals.total_sales),
        Some(expected_sales),
        "total_sales of the last totals record"
    );
    let got: BTreeMap<String, (u64, Cents)> = last_by_country
        .into_iter()
        .map(|(k, c)| (k, (c.order_count, c.total_sales)))
        .collect();
    assert_eq!(got, expected, "last per-country record per key");
}

/// A published schema, compiled with format assertions on (`date-time` is checked).
pub struct Checker {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
    name: &'static str,
}

impl Checker {
    pub fn named(name: &'static str) -> Self {
        let s = orders_core::schemas::by_name(name).unwrap();
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.enable_format_assertions();
        let url = format!("urn:orders:{name}");
        compiler
            .add_resource(&url, serde_json::from_str(s.document).unwrap())
            .unwrap();
        let index = compiler.compile(&url, &mut schemas).unwrap();
        Checker {
            schemas,
            index,
            name,
        }
    }

    pub fn check(&self, v: &serde_json::Value, context: &str) {
        if let Err(e) = self.schemas.validate(v, self.index) {
            panic!("{context}: {} refused {v}: {e:#}", self.name);
        }
    }
}

/// Every record the daemons produced on the pipeline's topics is valid against its
/// published schema; returns how many records each topic had.
pub async fn assert_records_match_schemas(kafka: &KafkaSettings) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for (topic, name) in [
        ("orders", "order"),
        (FRAUD_ALERTS_TOPIC, "fraud-alert"),
        (PAYMENTS_TOPIC, "payment"),
    ] {
        let checker = Checker::named(name);
        let records = read_to_end(kafka, topic).await;
        for r in &records {
            let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
            checker.check(&v, topic);
        }
        counts.insert(topic, records.len());
    }
    let (totals, country) = (
        Checker::named("analytics-totals"),
        Checker::named("analytics-country"),
    );
    let records = read_to_end(kafka, orders_core::kafka::ANALYTICS_TOPIC).await;
    for r in &records {
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        match r.key {
            None => totals.check(&v, "order-analytics, no key"),
            Some(_) => country.check(&v, "order-analytics, keyed"),
        }
    }
    counts.insert(orders_core::kafka::ANALYTICS_TOPIC, records.len());
    counts
}
