//! The production store: a Couchbase bucket reached through the official SDK.
//!
//! Each order, fraud alert and payment is inserted once under its key (`123`, `alert::123`,
//! `payment::123`, after the run's `ns` prefix), with a `type` field and the Kafka
//! `position` it was read at; an insert that finds the key means "already stored", so
//! Kafka's redelivery never writes twice. Totals are one document per (topic, partition)
//! with its last offset applied, moved past each batch with one CAS write ([`totals`],
//! [`batch`]); fraud and payment status are copied onto the order, so every list reads one
//! index ([`indexes`]). What an earlier layout stored is summed once by `ordersctl store
//! init` ([`migration`]).
//!
//! The SDK retries a failing operation until its own timeout and connects lazily, so
//! every call here runs under a `tokio::time::timeout`, and the connection is made by a
//! background task: until it has connected and found the indexes online, every call
//! (including `ping`) answers `StoreError::Unavailable` at once with the last reason.

pub mod batch;
pub mod documents;
pub mod indexes;
pub mod migration;
pub mod totals;

use super::*;
use crate::config::{couchbase_connection_string, Durability, Secret, StoreArgs};
use ::couchbase::authenticator::PasswordAuthenticator;
use ::couchbase::bucket::Bucket;
use ::couchbase::cluster::Cluster;
use ::couchbase::collection::Collection;
use ::couchbase::durability_level::DurabilityLevel;
use ::couchbase::error::{Error as CbError, ErrorKind};
use ::couchbase::options::cluster_options::{ClusterOptions, KvOptions, TlsOptions};
use ::couchbase::options::diagnostic_options::PingOptions;
use ::couchbase::options::diagnostic_options::WaitUntilReadyOptions;
use ::couchbase::options::query_options::{QueryOptions, ScanConsistency};
use ::couchbase::results::diagnostics::{PingReport, PingState};
use ::couchbase::service_type::ServiceType;
use futures::TryStreamExt;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Where the store is and how long to wait for it.
#[derive(Debug, Clone)]
pub struct CouchbaseConfig {
    /// A full connection string (`couchbase://…` or `couchbases://…`).
    pub connection_string: String,
    pub bucket: String,
    pub username: String,
    pub password: Secret,
    /// Prepended to every key and stored as the `ns` field of every document. Empty in
    /// production (keys are the bare order ids of the SPEC); tests set a unique one per
    /// run so runs sharing a bucket never see each other's documents.
    pub key_prefix: String,
    /// Longest wait for one connection attempt (connect, bucket ready, indexes).
    pub connect_timeout: Duration,
    /// Longest pause between two connection attempts (the pause doubles from 0.5 s).
    pub reconnect_max_delay: Duration,
    /// Longest wait for one key-value operation.
    pub kv_timeout: Duration,
    /// Longest wait for one SQL++ statement, rows included.
    pub query_timeout: Duration,
    /// How durable every write must be before it counts as stored (`COUCHBASE_DURABILITY`).
    pub durability: Durability,
    /// CA certificates to trust instead of the SDK's built-in roots and Capella's
    /// (`COUCHBASE_CA_CERT`): the SDK trusts only these when any are given.
    pub ca_certificates: Vec<CertificateDer<'static>>,
    /// How fresh the lists (latest orders, alerts, payments, the windows, the canaries)
    /// must be. Scans and the highest id always see every write made before them.
    pub list_freshness: Freshness,
}

/// How fresh a query's answer must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Freshness {
    /// What the indexes hold now (`not_bounded`): never waits on the index service, so a
    /// list's latency does not follow the write load; the last moments' writes may be
    /// missing from it.
    #[default]
    Indexed,
    /// Every write made before the request (`request_plus`): waits until the indexes
    /// hold them. For reads that must see them: the producer's highest id, the audit's
    /// scans, and the contract suite's lists.
    AllWrites,
}

impl Freshness {
    pub fn scan_consistency(self) -> ScanConsistency {
        match self {
            Freshness::Indexed => ScanConsistency::NotBounded,
            Freshness::AllWrites => ScanConsistency::RequestPlus,
        }
    }
}

impl CouchbaseConfig {
    /// A configuration with the default timeouts and no key prefix.
    pub fn new(
        connection_string: impl Into<String>,
        bucket: impl Into<String>,
        username: impl Into<String>,
        password: Secret,
    ) -> Self {
        CouchbaseConfig {
            connection_string: connection_string.into(),
            bucket: bucket.into(),
            username: username.into(),
            password,
            key_prefix: String::new(),
            connect_timeout: Duration::from_secs(15),
            reconnect_max_delay: Duration::from_secs(30),
            kv_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(30),
            durability: Durability::Majority,
            ca_certificates: Vec::new(),
            list_freshness: Freshness::Indexed,
        }
    }

    /// The SPEC's variables: `None` when `COUCHBASE_HOST` is unset (the embedded store).
    pub fn from_store_args(args: &StoreArgs) -> Result<Option<Self>, StoreError> {
        let Some(host) = args.couchbase_host.as_deref().map(str::trim) else {
            return Ok(None);
        };
        if host.is_empty() {
            return Err(StoreError::Unavailable(
                "COUCHBASE_HOST is set but empty".into(),
            ));
        }
        let username = args
            .couchbase_username
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                StoreError::Unavailable(
                    "COUCHBASE_HOST is set but COUCHBASE_USERNAME is not".into(),
                )
            })?;
        let password = args.couchbase_password.clone().ok_or_else(|| {
            StoreError::Unavailable("COUCHBASE_HOST is set but COUCHBASE_PASSWORD is not".into())
        })?;
        // A bare host with a CA certificate given means TLS.
        let connection_string = match &args.couchbase_ca_cert {
            Some(_) if !host.contains("://") => format!("couchbases://{host}"),
            _ => couchbase_connection_string(host),
        };
        let mut config = CouchbaseConfig::new(
            connection_string,
            args.couchbase_bucket.clone(),
            username,
            password,
        );
        config.durability = args.couchbase_durability;
        if let Some(ca) = &args.couchbase_ca_cert {
            config.ca_certificates = ca_certificates(ca)?;
        }
        config.validate()?;
        Ok(Some(config))
    }

    /// Checks what is spliced into statements (the bucket name, the key prefix): they
    /// come from configuration, not from users, but are still held to a strict alphabet.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bucket_ok = !self.bucket.is_empty()
            && self.bucket.len() <= 100
            && self
                .bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '%'));
        if !bucket_ok {
            return Err(StoreError::Unavailable(format!(
                "COUCHBASE_BUCKET {:?} is not a valid bucket name (letters, digits, _ - . %)",
                self.bucket
            )));
        }
        let prefix_ok = self
            .key_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.'));
        if !prefix_ok {
            return Err(StoreError::Unavailable(format!(
                "key prefix {:?} may hold only letters, digits, _ - : .",
                self.key_prefix
            )));
        }
        if !(self.connection_string.starts_with("couchbase://")
            || self.connection_string.starts_with("couchbases://"))
        {
            return Err(StoreError::Unavailable(format!(
                "{:?} is not a couchbase:// or couchbases:// connection string",
                self.connection_string
            )));
        }
        if !self.ca_certificates.is_empty() && !self.connection_string.starts_with("couchbases://")
        {
            return Err(StoreError::Unavailable(format!(
                "COUCHBASE_CA_CERT is set but {:?} does not use TLS: use couchbases://",
                self.connection_string
            )));
        }
        Ok(())
    }

    /// The SDK's level for `self.durability`.
    pub fn durability_level(&self) -> DurabilityLevel {
        sdk_level(self.durability)
    }
}

/// The SDK's name for a durability level.
fn sdk_level(durability: Durability) -> DurabilityLevel {
    match durability {
        Durability::None => DurabilityLevel::NONE,
        Durability::Majority => DurabilityLevel::MAJORITY,
        Durability::MajorityAndPersistActive => DurabilityLevel::MAJORITY_AND_PERSIST_ACTIVE,
        Durability::PersistToMajority => DurabilityLevel::PERSIST_TO_MAJORITY,
    }
}

/// The certificates of `COUCHBASE_CA_CERT`: PEM text when it holds a PEM header, otherwise
/// the path of a PEM file. Read and checked at start, before any connection.
pub fn ca_certificates(value: &str) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let bad = |why: String| StoreError::Unavailable(format!("COUCHBASE_CA_CERT: {why}"));
    let (pem, from) = if value.contains("-----BEGIN") {
        (value.as_bytes().to_vec(), "the PEM text given".to_owned())
    } else {
        let path = value.trim();
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read {path:?}: {e}")))?;
        (bytes, format!("{path:?}"))
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("{from} is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad(format!("{from} holds no CERTIFICATE block")));
    }
    Ok(certs)
}

/// Maps an SDK error to the store's kinds: `Unavailable` for what a retry or an
/// operator can fix (network, timeouts, credentials, missing bucket, indexes still being
/// built), `Corrupt` for stored data that does not decode, `Query` for the rest.
pub fn store_error(e: &CbError) -> StoreError {
    let text = e.to_string();
    match e.kind() {
        // Retried like an outage (a failed-over node comes back, replicas catch up), with
        // what to change if it never will.
        ErrorKind::DurabilityImpossible | ErrorKind::DurabilityLevelNotAvailable => {
            StoreError::Unavailable(format!(
                "couchbase: {text}: the bucket cannot meet COUCHBASE_DURABILITY now (too few \
                 data nodes for its replicas, or a server without durable writes); see \
                 docs/deploy.md"
            ))
        }
        ErrorKind::ServerTimeout
        | ErrorKind::ClusterDropped
        | ErrorKind::ServiceNotAvailable(_)
        | ErrorKind::AuthenticationFailure
        | ErrorKind::TemporaryFailure
        | ErrorKind::BucketNotFound
        | ErrorKind::ScopeNotFound
        | ErrorKind::CollectionNotFound
        | ErrorKind::IndexNotFound
        | ErrorKind::RateLimitedFailure
        | ErrorKind::QuotaLimitedFailure
        | ErrorKind::RequestCanceled
        | ErrorKind::InternalServerFailure
        | ErrorKind::DocumentLocked
        | ErrorKind::DurabilityAmbiguous
        | ErrorKind::DurabilityWriteInProgress
        | ErrorKind::DurableWriteRecommitInProgress
        // An index scan failing (12xxx, 14xxx: e.g. an index node rebalancing) passes.
        | ErrorKind::IndexFailure
        | ErrorKind::OtherFailure(_) => StoreError::Unavailable(format!("couchbase: {text}")),
        ErrorKind::DecodingFailure(_) | ErrorKind::DocumentNotJSON => {
            StoreError::Corrupt(format!("couchbase: {text}"))
        }
        _ => StoreError::Query(format!("couchbase: {text}")),
    }
}

/// The keyspace of `bucket` in statements (its default collection).
pub fn keyspace(bucket: &str) -> String {
    format!("`{bucket}`")
}

/// `FROM` the bucket as `alias`, through `index` alone: a list's plan must not change with
/// the optimizer's statistics or an index added later, so each statement names its index.
fn from_index(bucket: &str, alias: &str, index: &str) -> String {
    format!(
        "FROM {} AS {alias} USE INDEX ({index} USING GSI)",
        keyspace(bucket)
    )
}

/// The index a list of orders walks: the first filter's (country, status, fraud, payment
/// status, in that order) arrival index, or the plain arrival index. Further filters are
/// checked on the documents the scan yields, still in index order.
pub fn orders_index(q: &OrderQuery) -> &'static str {
    if q.country.is_some() {
        "idx_orders_country_arrival"
    } else if q.status.is_some() {
        "idx_orders_status_arrival"
    } else if q.fraud.is_some() {
        "idx_orders_fraud_arrival"
    } else if q.payment_status.is_some() {
        "idx_orders_payment_arrival"
    } else {
        "idx_orders_arrival"
    }
}

const ORDER_FIELDS: &str = "o.order_id, o.customer_id, o.amount_cents, o.currency, o.country, \
     o.status, o.created_at, o.source, o.kafka_partition, o.kafka_offset, o.processed_at, \
     o.fraud_reason, o.payment_status";

/// Where a page of [`latest_orders_statement`] starts: the arrival of the cursor order
/// (`OrderQuery::before_id`), read from its document first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArrivalCursor {
    /// A document with its arrival time (`processed_us`).
    Stamped { processed_us: i64, order_id: u64 },
    /// A document written before `processed_us` was: such documents list after every
    /// stamped one (`MISSING` sorts last descending), by id.
    Unstamped { order_id: u64 },
}

impl ArrivalCursor {
    fn of(row: &OrderRow) -> Self {
        match row.processed_us {
            Some(processed_us) => ArrivalCursor::Stamped {
                processed_us,
                order_id: row.order_id,
            },
            None => ArrivalCursor::Unstamped {
                order_id: row.order_id,
            },
        }
    }
}

/// Latest orders by arrival with what the pipeline learned about them (copied onto the
/// order's document, so no join). Unfiltered it walks `idx_orders_arrival`; a filter on
/// country, status, fraud or payment status walks that field's arrival index
/// ([`indexes::INDEXES`]), whose keys are `ns`, the field, then the sort, so filter, order
/// and limit go into the index scan. Filters are fixed fragments chosen by which fields of
/// the query are set; every value is a named parameter (`$ns`, `$before_us`, `$before_id`,
/// `$country`, `$status`, `$fraud`, `$payment_status`, `$limit`).
pub fn latest_orders_statement(
    bucket: &str,
    q: &OrderQuery,
    cursor: Option<ArrivalCursor>,
) -> String {
    let from = from_index(bucket, "o", orders_index(q));
    let mut s = format!("SELECT {ORDER_FIELDS} {from} WHERE o.type = \"order\" AND o.ns = $ns");
    match cursor {
        Some(ArrivalCursor::Stamped { .. }) => s.push_str(
            " AND (o.processed_us < $before_us OR (o.processed_us = $before_us \
             AND o.order_id < $before_id) OR o.processed_us IS MISSING)",
        ),
        Some(ArrivalCursor::Unstamped { .. }) => {
            s.push_str(" AND o.processed_us IS MISSING AND o.order_id < $before_id")
        }
        None => {}
    }
    if q.country.is_some() {
        s.push_str(" AND o.country = $country");
    }
    if q.status.is_some() {
        s.push_str(" AND o.status = $status");
    }
    if q.fraud.is_some() {
        s.push_str(" AND o.fraud = $fraud");
    }
    if q.payment_status.is_some() {
        s.push_str(" AND o.payment_status = $payment_status");
    }
    s.push_str(" ORDER BY o.processed_us DESC, o.order_id DESC LIMIT $limit");
    s
}

/// The named parameters of [`latest_orders_statement`] for `q`.
fn latest_orders_params(
    ns: &str,
    q: &OrderQuery,
    cursor: Option<ArrivalCursor>,
) -> Vec<(&'static str, Value)> {
    let mut p = vec![("ns", json!(ns)), ("limit", json!(q.limit))];
    match cursor {
        Some(ArrivalCursor::Stamped {
            processed_us,
            order_id,
        }) => {
            p.push(("before_us", json!(processed_us)));
            p.push(("before_id", json!(order_id)));
        }
        Some(ArrivalCursor::Unstamped { order_id }) => p.push(("before_id", json!(order_id))),
        None => {}
    }
    if let Some(c) = q.country {
        p.push(("country", json!(c.as_str())));
    }
    if let Some(s) = q.status {
        p.push(("status", json!(s.as_str())));
    }
    if let Some(f) = q.fraud {
        p.push(("fraud", json!(f)));
    }
    if let Some(s) = q.payment_status {
        p.push(("payment_status", json!(s.as_str())));
    }
    p
}

/// Orders created in `[$from, $to)` (microseconds) by minute and country: the per-minute
/// windows, one range of `idx_orders_created_minute` (`ns, created_us, country,
/// amount_cents`, covering) — as many entries as orders in the span asked for, never the
/// whole store.
pub fn minute_windows_statement(bucket: &str) -> String {
    format!(
        "SELECT IDIV(o.created_us, {WINDOW_MICROS}) * {WINDOW_MICROS} AS m, o.country AS k, \
         COUNT(1) AS n, SUM(o.amount_cents) AS cents {} \
         WHERE o.type = \"order\" AND o.ns = $ns AND o.created_us >= $from \
         AND o.created_us < $to \
         GROUP BY IDIV(o.created_us, {WINDOW_MICROS}) * {WINDOW_MICROS}, o.country",
        from_index(bucket, "o", "idx_orders_created_minute")
    )
}

pub fn max_order_id_statement(bucket: &str) -> String {
    format!(
        "SELECT RAW o.order_id {} WHERE o.type = \"order\" AND o.ns = $ns \
         ORDER BY o.order_id DESC LIMIT 1",
        from_index(bucket, "o", "idx_orders_latest")
    )
}

pub fn latest_alerts_statement(bucket: &str) -> String {
    format!(
        "SELECT a.order_id, a.reason, a.rule_id, a.amount_cents, a.country, a.detected_at, \
         a.stored_at {} WHERE a.type = \"alert\" AND a.ns = $ns \
         ORDER BY a.stored_us DESC, a.order_id DESC LIMIT $limit",
        from_index(bucket, "a", "idx_alerts_arrival")
    )
}

pub fn latest_payments_statement(bucket: &str) -> String {
    format!(
        "SELECT p.order_id, p.status, p.amount_cents, p.country, p.`timestamp`, p.stored_at \
         {} WHERE p.type = \"payment\" AND p.ns = $ns \
         ORDER BY p.stored_us DESC, p.order_id DESC LIMIT $limit",
        from_index(bucket, "p", "idx_payments_arrival")
    )
}

/// One list the store serves: its statement, sample parameters, and the index meant to
/// answer it (checked offline against [`indexes::INDEXES`], and with `EXPLAIN` by the
/// contract suite).
#[derive(Debug, Clone)]
pub struct ListStatement {
    pub name: &'static str,
    pub index: &'static str,
    pub statement: String,
    pub params: Vec<(&'static str, Value)>,
    /// What its plan must do besides reading `index` alone.
    pub shape: PlanShape,
}

/// What a statement's plan must do besides scanning its index alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanShape {
    /// The limit pushed into the scan, and no sort: a first page.
    LimitPushed,
    /// No sort (the index's order is the answer's), the limit maybe applied after a
    /// filter: a cursor page.
    Ordered,
    /// Every field read from the index, no document fetched: an aggregate.
    Covering,
}

/// What a query plan (`EXPLAIN`) does, as far as the index checks care.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanSummary {
    /// Every operator, depth first (`IndexScan3`, `Fetch`, `Filter`, `Order`, …).
    pub operators: Vec<String>,
    /// The indexes scanned, each with whether the scan carries the limit (pushdown).
    pub index_scans: Vec<(String, bool)>,
}

impl PlanSummary {
    /// Walks an `EXPLAIN` answer (`{"plan": {"#operator": …, "~children": […]}}`).
    pub fn of(plan: &Value) -> PlanSummary {
        fn walk(v: &Value, out: &mut PlanSummary) {
            match v {
                Value::Object(m) => {
                    if let Some(op) = m.get("#operator").and_then(Value::as_str) {
                        out.operators.push(op.to_owned());
                        if op.starts_with("IndexScan") {
                            let index = m.get("index").and_then(Value::as_str).unwrap_or("");
                            out.index_scans
                                .push((index.to_owned(), m.contains_key("limit")));
                        }
                    }
                    m.values().for_each(|v| walk(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let mut out = PlanSummary::default();
        walk(plan.get("plan").unwrap_or(plan), &mut out);
        out
    }

    /// Why the plan is not one scan of `index` of the `shape` asked for, if not.
    pub fn problem(&self, index: &str, shape: PlanShape) -> Option<String> {
        if self.index_scans.len() != 1 || self.index_scans[0].0 != index {
            return Some(format!("scans {:?}, not {index} alone", self.index_scans));
        }
        let has = |op: &str| self.operators.iter().any(|o| o == op);
        match shape {
            PlanShape::LimitPushed if !self.index_scans[0].1 => {
                Some(format!("the limit is not pushed into {index}"))
            }
            PlanShape::LimitPushed | PlanShape::Ordered if has("Order") => {
                Some(format!("sorts: {:?}", self.operators))
            }
            PlanShape::Covering if has("Fetch") => {
                Some(format!("fetches documents: {:?}", self.operators))
            }
            _ => None,
        }
    }
}

/// Every statement the store runs, each list one filter at a time, first pages and
/// cursor pages.
pub fn list_statements(bucket: &str, ns: &str) -> Vec<ListStatement> {
    let mut all = first_pages(bucket, ns);
    all.extend(cursor_pages(bucket, ns));
    all.extend(aggregates(bucket, ns));
    all
}

/// The pages after a cursor: of every orders list (one filter at a time), from a stamped
/// cursor and from one written before arrival was stamped.
fn cursor_pages(bucket: &str, ns: &str) -> Vec<ListStatement> {
    let names = [
        ("latest orders after a cursor", OrderQuery::default()),
        (
            "orders by country after a cursor",
            OrderQuery {
                country: "DE".parse().ok(),
                ..OrderQuery::default()
            },
        ),
        (
            "orders by status after a cursor",
            OrderQuery {
                status: Some(OrderStatus::Cancelled),
                ..OrderQuery::default()
            },
        ),
        (
            "fraudulent orders after a cursor",
            OrderQuery {
                fraud: Some(true),
                ..OrderQuery::default()
            },
        ),
        (
            "orders by payment status after a cursor",
            OrderQuery {
                payment_status: Some(PaymentStatus::Failed),
                ..OrderQuery::default()
            },
        ),
    ];
    let stamped = ArrivalCursor::Stamped {
        processed_us: 1_700_000_000_000_000,
        order_id: 1 << 40,
    };
    let unstamped = ArrivalCursor::Unstamped { order_id: 1 << 40 };
    let mut pages = Vec::new();
    for (name, q) in names {
        let q = OrderQuery { limit: 20, ..q };
        for cursor in [stamped, unstamped] {
            pages.push(ListStatement {
                name,
                index: orders_index(&q),
                statement: latest_orders_statement(bucket, &q, Some(cursor)),
                params: latest_orders_params(ns, &q, Some(cursor)),
                shape: PlanShape::Ordered,
            });
        }
    }
    pages
}

/// The aggregates: the per-minute windows and the canary journeys, each read from its
/// index alone.
fn aggregates(bucket: &str, ns: &str) -> Vec<ListStatement> {
    vec![
        ListStatement {
            name: "per-minute windows",
            index: "idx_orders_created_minute",
            statement: minute_windows_statement(bucket),
            params: vec![
                ("ns", json!(ns)),
                ("from", json!(1_700_000_000_000_000_i64)),
                ("to", json!(1_700_000_060_000_000_i64)),
            ],
            shape: PlanShape::Covering,
        },
        ListStatement {
            name: "canary journeys",
            index: "idx_canary_stages",
            statement: canary_journeys_statement(bucket),
            params: scan_params(ns, None, 20),
            shape: PlanShape::Covering,
        },
        ListStatement {
            name: "totals of an earlier layout",
            index: migration::BASE_INDEX,
            statement: migration::base_statement(bucket),
            params: vec![("ns", json!(ns))],
            shape: PlanShape::Covering,
        },
    ]
}

/// The first page of every list, one filter at a time.
fn first_pages(bucket: &str, ns: &str) -> Vec<ListStatement> {
    let orders = |name, index, q: OrderQuery| ListStatement {
        name,
        index,
        statement: latest_orders_statement(bucket, &q, None),
        params: latest_orders_params(ns, &q, None),
        shape: PlanShape::LimitPushed,
    };
    let q = OrderQuery {
        limit: 20,
        ..OrderQuery::default()
    };
    let latest = vec![("ns", json!(ns)), ("limit", json!(20))];
    vec![
        orders("latest orders", "idx_orders_arrival", q.clone()),
        orders(
            "orders by country",
            "idx_orders_country_arrival",
            OrderQuery {
                country: "DE".parse().ok(),
                ..q.clone()
            },
        ),
        orders(
            "orders by status",
            "idx_orders_status_arrival",
            OrderQuery {
                status: Some(OrderStatus::Cancelled),
                ..q.clone()
            },
        ),
        orders(
            "fraudulent orders",
            "idx_orders_fraud_arrival",
            OrderQuery {
                fraud: Some(true),
                ..q.clone()
            },
        ),
        orders(
            "orders by payment status",
            "idx_orders_payment_arrival",
            OrderQuery {
                payment_status: Some(PaymentStatus::Failed),
                ..q
            },
        ),
        ListStatement {
            name: "latest alerts",
            index: "idx_alerts_arrival",
            statement: latest_alerts_statement(bucket),
            params: latest.clone(),
            shape: PlanShape::LimitPushed,
        },
        ListStatement {
            name: "latest payments",
            index: "idx_payments_arrival",
            statement: latest_payments_statement(bucket),
            params: latest,
            shape: PlanShape::LimitPushed,
        },
        ListStatement {
            name: "orders before",
            index: "idx_orders_latest",
            statement: orders_before_statement(bucket),
            params: scan_params(ns, Some(1 << 40), 500),
            shape: PlanShape::LimitPushed,
        },
        ListStatement {
            name: "alerts before",
            index: "idx_alerts_latest",
            statement: alerts_before_statement(bucket),
            params: scan_params(ns, Some(1 << 40), 500),
            shape: PlanShape::LimitPushed,
        },
        ListStatement {
            name: "payments before",
            index: "idx_payments_latest",
            statement: payments_before_statement(bucket),
            params: scan_params(ns, Some(1 << 40), 500),
            shape: PlanShape::LimitPushed,
        },
        ListStatement {
            name: "max order id",
            index: "idx_orders_latest",
            statement: max_order_id_statement(bucket),
            params: vec![("ns", json!(ns))],
            shape: PlanShape::LimitPushed,
        },
    ]
}

/// The order fields of a stored order document, for a full scan (no joins: alerts and
/// payments are scanned on their own).
const STORED_ORDER_FIELDS: &str = "o.order_id, o.customer_id, o.amount_cents, o.currency, \
     o.country, o.status, o.created_at, o.source, o.kafka_partition, o.kafka_offset, \
     o.processed_at";

/// A page of the full scan of orders: ids below `$before_id`, highest first, `$limit` of
/// them, one range of `idx_orders_latest` (`ns, order_id DESC`) in its own order.
pub fn orders_before_statement(bucket: &str) -> String {
    format!(
        "SELECT {STORED_ORDER_FIELDS} {} WHERE o.type = \"order\" AND o.ns = $ns \
         AND o.order_id < $before_id ORDER BY o.order_id DESC LIMIT $limit",
        from_index(bucket, "o", "idx_orders_latest")
    )
}

/// A page of the full scan of alerts (`idx_alerts_latest`), like [`orders_before_statement`].
pub fn alerts_before_statement(bucket: &str) -> String {
    format!(
        "SELECT a.order_id, a.reason, a.rule_id, a.amount_cents, a.country, a.detected_at, \
         a.stored_at {} WHERE a.type = \"alert\" AND a.ns = $ns \
         AND a.order_id < $before_id ORDER BY a.order_id DESC LIMIT $limit",
        from_index(bucket, "a", "idx_alerts_latest")
    )
}

/// A page of the full scan of payments (`idx_payments_latest`), like
/// [`orders_before_statement`].
pub fn payments_before_statement(bucket: &str) -> String {
    format!(
        "SELECT p.order_id, p.status, p.amount_cents, p.country, p.`timestamp`, p.stored_at \
         {} WHERE p.type = \"payment\" AND p.ns = $ns \
         AND p.order_id < $before_id ORDER BY p.order_id DESC LIMIT $limit",
        from_index(bucket, "p", "idx_payments_latest")
    )
}

/// The named parameters of a scan page: no bound (`None`) is every id, since ids are at
/// most 2^53 - 1.
fn scan_params(ns: &str, before_id: Option<u64>, limit: usize) -> Vec<(&'static str, Value)> {
    vec![
        ("ns", json!(ns)),
        ("before_id", json!(before_id.unwrap_or(u64::MAX))),
        ("limit", json!(limit)),
    ]
}

/// The keys of one order's documents.
fn order_key(prefix: &str, id: u64) -> String {
    format!("{prefix}{id}")
}
fn alert_key(prefix: &str, id: u64) -> String {
    format!("{prefix}alert::{id}")
}
fn payment_key(prefix: &str, id: u64) -> String {
    format!("{prefix}payment::{id}")
}

/// The stored order document: the SPEC's fields plus exact cents and sortable time.
fn order_document(ns: &str, s: &StoredOrder) -> Value {
    let o = &s.order;
    let mut doc = json!({
        "type": "order",
        "ns": ns,
        "order_id": o.order_id,
        "customer_id": o.customer_id,
        "amount": o.amount,
        "amount_cents": o.amount.0,
        "currency": o.currency,
        "country": o.country,
        "status": o.status,
        "created_at": o.created_at,
        "created_us": o.created_at.micros(),
        "kafka_partition": s.kafka_partition,
        "kafka_offset": s.kafka_offset,
        "processed_at": s.processed_at,
        "processed_us": s.processed_at.micros(),
        // The record that owns the document (see `batch`).
        "position": [s.kafka_partition, s.kafka_offset],
        // What the pipeline learns later is copied here (see `batch`); an order starts
        // without a fraud alert, so the fraud index holds every order.
        "fraud": false,
    });
    if let (Some(source), Some(map)) = (&o.source, doc.as_object_mut()) {
        map.insert("source".into(), json!(source));
    }
    doc
}

fn alert_document(
    ns: &str,
    a: &FraudAlert,
    position: KafkaPosition,
    stored_at: Timestamp,
) -> Value {
    json!({
        "position": [position.partition, position.offset],
        "type": "alert",
        "ns": ns,
        "order_id": a.order_id,
        "reason": a.reason,
        "rule_id": a.rule_id,
        "amount": a.amount,
        "amount_cents": a.amount.0,
        "country": a.country,
        "detected_at": a.detected_at,
        "stored_at": stored_at,
        "stored_us": stored_at.micros(),
    })
}

fn payment_document(ns: &str, p: &Payment, position: KafkaPosition, stored_at: Timestamp) -> Value {
    json!({
        "position": [position.partition, position.offset],
        "type": "payment",
        "ns": ns,
        "order_id": p.order_id,
        "status": p.status,
        "amount": p.amount,
        "amount_cents": p.amount.0,
        "country": p.country,
        "timestamp": p.timestamp,
        "stored_at": stored_at,
        "stored_us": stored_at.micros(),
    })
}

/// An order as read back (a document, or a row of [`latest_orders_statement`]).
#[derive(Debug, Deserialize)]
struct OrderRow {
    order_id: u64,
    customer_id: u32,
    amount_cents: i64,
    currency: String,
    country: Country,
    status: OrderStatus,
    created_at: Timestamp,
    #[serde(default)]
    source: Option<String>,
    kafka_partition: i32,
    kafka_offset: i64,
    processed_at: Timestamp,
    /// Absent from documents written before arrival order was kept, and from query rows.
    #[serde(default)]
    processed_us: Option<i64>,
    #[serde(default)]
    fraud_reason: Option<String>,
    #[serde(default)]
    payment_status: Option<PaymentStatus>,
}

impl From<OrderRow> for OrderDocument {
    fn from(r: OrderRow) -> Self {
        OrderDocument {
            order: Order {
                order_id: r.order_id,
                customer_id: r.customer_id,
                amount: Cents(r.amount_cents),
                currency: r.currency,
                country: r.country,
                status: r.status,
                created_at: r.created_at,
                source: r.source,
            },
            kafka_partition: r.kafka_partition,
            kafka_offset: r.kafka_offset,
            processed_at: r.processed_at,
            fraud: r.fraud_reason.is_some(),
            fraud_reason: r.fraud_reason,
            payment_status: r.payment_status,
        }
    }
}

impl From<OrderRow> for StoredOrder {
    fn from(r: OrderRow) -> Self {
        let doc = OrderDocument::from(r);
        StoredOrder {
            order: doc.order,
            kafka_partition: doc.kafka_partition,
            kafka_offset: doc.kafka_offset,
            processed_at: doc.processed_at,
        }
    }
}

#[derive(Debug, Deserialize)]
struct AlertRow {
    order_id: u64,
    reason: String,
    #[serde(default)]
    rule_id: Option<String>,
    amount_cents: i64,
    country: Country,
    #[serde(default)]
    detected_at: Option<Timestamp>,
    stored_at: Timestamp,
}

impl From<AlertRow> for StoredAlert {
    fn from(r: AlertRow) -> Self {
        StoredAlert {
            alert: FraudAlert {
                order_id: r.order_id,
                reason: r.reason,
                amount: Cents(r.amount_cents),
                country: r.country,
                rule_id: r.rule_id,
                detected_at: r.detected_at,
            },
            stored_at: r.stored_at,
        }
    }
}

#[derive(Debug, Deserialize)]
struct PaymentRow {
    order_id: u64,
    status: PaymentStatus,
    amount_cents: i64,
    country: Country,
    timestamp: f64,
    stored_at: Timestamp,
}

impl From<PaymentRow> for StoredPayment {
    fn from(r: PaymentRow) -> Self {
        StoredPayment {
            payment: Payment {
                order_id: r.order_id,
                status: r.status,
                amount: Cents(r.amount_cents),
                country: r.country,
                timestamp: r.timestamp,
            },
            stored_at: r.stored_at,
        }
    }
}

/// One row of an aggregate: SQL++ numbers may come back as floats, so whole numbers are
/// read from either form and anything else is corrupt.
#[derive(Debug, Deserialize)]
struct AggregateRow {
    /// The minute, in the per-minute windows.
    #[serde(default)]
    m: Option<Value>,
    #[serde(default)]
    k: Option<String>,
    #[serde(default)]
    n: Option<Value>,
    #[serde(default)]
    cents: Option<Value>,
}

/// A whole number from an aggregate (`null` or missing is 0).
fn whole(v: Option<&Value>) -> Result<i64, StoreError> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else {
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
                    _ => Err(StoreError::Corrupt(format!(
                        "aggregate {n} is not a whole number"
                    ))),
                }
            }
        }
        Some(other) => Err(StoreError::Corrupt(format!(
            "aggregate {other} is not a number"
        ))),
    }
}

/// What the background connection task has reached.
#[derive(Clone)]
enum Connection {
    Connecting {
        attempts: u32,
        last_error: Option<String>,
    },
    Ready(Arc<Connected>),
}

struct Connected {
    cluster: Cluster,
    bucket: Bucket,
    /// The records (the bucket's default collection).
    collection: Collection,
    /// The totals ([`documents::TOTALS_COLLECTION`]).
    totals: Collection,
}

/// One endpoint of a ping report: service, address, whether it answered, and why not.
#[derive(Debug, Clone, PartialEq)]
struct Endpoint {
    service: &'static str,
    remote: String,
    ok: bool,
    problem: String,
}

fn endpoints(report: &PingReport) -> Vec<Endpoint> {
    let mut found = Vec::new();
    for (service, name) in [(ServiceType::KV, "kv"), (ServiceType::QUERY, "query")] {
        for e in report.services.get(&service).into_iter().flatten() {
            let problem = match (&e.error, e.state) {
                (Some(err), _) => err.to_string(),
                (None, PingState::Ok) => String::new(),
                (None, PingState::Timeout) => "timed out".to_owned(),
                (None, _) => "failed".to_owned(),
            };
            found.push(Endpoint {
                service: name,
                remote: e.remote.clone(),
                ok: e.state == PingState::Ok,
                problem,
            });
        }
    }
    found
}

/// A quorum (more than half) of the kv endpoints must answer, and one query endpoint at
/// least. Not every kv endpoint: one slow data node, until auto-failover replaces it, would
/// make every task unready at once, and the load balancer would drain them all, though
/// only the documents on that node wait.
fn ping_verdict(endpoints: &[Endpoint]) -> Result<(), StoreError> {
    let of = |service| {
        endpoints
            .iter()
            .filter(move |e: &&Endpoint| e.service == service)
    };
    let (kv, kv_ok) = (of("kv").count(), of("kv").filter(|e| e.ok).count());
    let mut problems = Vec::new();
    if kv == 0 {
        problems.push("no kv service answers for the bucket".to_owned());
    } else if kv_ok * 2 <= kv {
        let down: Vec<String> = of("kv")
            .filter(|e| !e.ok)
            .map(|e| format!("{} {}", e.remote, e.problem))
            .collect();
        problems.push(format!(
            "{kv_ok} of {kv} kv services answer, not a majority ({})",
            down.join("; ")
        ));
    }
    if !of("query").any(|e| e.ok) {
        let why: Vec<String> = of("query")
            .map(|e| format!("{} {}", e.remote, e.problem))
            .collect();
        problems.push(if why.is_empty() {
            "no query service in the cluster".to_owned()
        } else {
            format!("no query service answers ({})", why.join("; "))
        });
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "couchbase: {}",
            problems.join("; ")
        )))
    }
}

/// The Couchbase adapter of [`OrderStore`].
#[derive(Clone)]
pub struct CouchbaseStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: CouchbaseConfig,
    state: watch::Receiver<Connection>,
    task: tokio::task::JoinHandle<()>,
    /// Connection attempts made so far (the successful one included).
    attempts: Arc<AtomicU32>,
    /// The totals documents (and the partitions known to be listed, cached).
    totals: totals::TotalsBook,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for CouchbaseStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.inner.state.borrow() {
            Connection::Connecting { attempts, .. } => format!("connecting ({attempts} tries)"),
            Connection::Ready(_) => "ready".to_owned(),
        };
        f.debug_struct("CouchbaseStore")
            .field("config", &self.inner.config)
            .field("state", &state)
            .finish()
    }
}

/// Runs `fut` under `limit`; a timeout is `Unavailable`, naming what timed out.
async fn deadline<T>(
    what: &str,
    limit: Duration,
    fut: impl Future<Output = T>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| StoreError::Unavailable(format!("couchbase {what} timed out after {limit:?}")))
}

/// Replaces the password in a message, should the SDK ever echo it.
fn scrub(e: StoreError, secret: &Secret) -> StoreError {
    let s = secret.expose();
    if s.is_empty() {
        return e;
    }
    let clean = |m: String| m.replace(s, "***");
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(clean(m)),
        StoreError::Query(m) => StoreError::Query(clean(m)),
        StoreError::Corrupt(m) => StoreError::Corrupt(clean(m)),
    }
}

/// The message of an error, without its kind (which the caller wraps again).
fn detail(e: StoreError) -> String {
    match e {
        StoreError::Unavailable(m) | StoreError::Query(m) | StoreError::Corrupt(m) => m,
    }
}

/// Connects to the cluster: the one handle every later attempt reuses.
async fn connect_cluster(config: &CouchbaseConfig) -> Result<Cluster, StoreError> {
    let auth = PasswordAuthenticator::new(config.username.clone(), config.password.expose());
    let mut options = ClusterOptions::new(auth.into())
        .kv_options(KvOptions::new().connect_timeout(config.connect_timeout));
    if !config.ca_certificates.is_empty() {
        options = options.tls_options(
            TlsOptions::new().add_ca_certificates(config.ca_certificates.iter().cloned()),
        );
    }
    // The SDK keeps retrying a refused connection or a rejected login until our deadline,
    // so a timeout here names what to check.
    tokio::time::timeout(
        config.connect_timeout,
        Cluster::connect(&config.connection_string, options),
    )
    .await
    .map_err(|_| {
        StoreError::Unavailable(format!(
            "connecting to couchbase at {} timed out after {:?}: check COUCHBASE_HOST, that \
             the cluster is reachable, and COUCHBASE_USERNAME/COUCHBASE_PASSWORD",
            config.connection_string, config.connect_timeout
        ))
    })?
    .map_err(|e| store_error(&e))
}

/// What to say when the bucket does not open on a cluster that did connect: Couchbase
/// answers a missing bucket and one the user has no role on alike.
fn bucket_problem(config: &CouchbaseConfig, why: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "couchbase at {} is reachable but bucket {:?} did not open ({why}): check that \
         COUCHBASE_BUCKET names an existing bucket and that COUCHBASE_USERNAME has a role \
         on it (Couchbase answers a missing bucket and a forbidden one alike)",
        config.connection_string, config.bucket
    ))
}

/// The cluster and bucket handles of a connection, made once and kept across attempts:
/// each `Cluster` owns connections and background tasks, and each `Cluster::bucket` call
/// spawns a task that tries to open the bucket until it exists (never stopped, even when
/// the handle is dropped), so a retry that made new ones would leave the old behind.
#[derive(Default)]
struct Handles(Option<(Cluster, Bucket)>);

/// Opens the bucket (with the handles of an earlier attempt, or new ones) and waits until
/// its key-value and query services answer.
async fn open_bucket(
    config: &CouchbaseConfig,
    handles: &mut Handles,
) -> Result<(Cluster, Bucket), StoreError> {
    if handles.0.is_none() {
        let cluster = connect_cluster(config).await?;
        let bucket = cluster.bucket(config.bucket.clone());
        handles.0 = Some((cluster, bucket));
    }
    let Some((cluster, bucket)) = handles.0.as_ref() else {
        return Err(StoreError::Unavailable(
            "couchbase cluster not connected".into(),
        ));
    };
    // Only the services the store uses: a search or eventing node down is no reason to wait.
    let services =
        WaitUntilReadyOptions::new().service_types(vec![ServiceType::KV, ServiceType::QUERY]);
    match tokio::time::timeout(config.connect_timeout, bucket.wait_until_ready(services)).await {
        Err(_) => {
            return Err(bucket_problem(
                config,
                &format!("not ready after {:?}", config.connect_timeout),
            ))
        }
        Ok(Err(e))
            if matches!(
                e.kind(),
                ErrorKind::BucketNotFound | ErrorKind::AuthenticationFailure
            ) =>
        {
            return Err(bucket_problem(config, &e.to_string()))
        }
        Ok(Err(e)) => return Err(store_error(&e)),
        Ok(Ok(())) => {}
    }
    Ok((cluster.clone(), bucket.clone()))
}

/// One connection attempt: the bucket open, every index online and the totals directory
/// there (this only checks: `ordersctl store init` creates them).
async fn connect_once(
    config: &CouchbaseConfig,
    handles: &mut Handles,
) -> Result<Connected, StoreError> {
    let (cluster, bucket) = open_bucket(config, handles).await?;
    indexes::check_online(config, &cluster).await?;
    let connected = Connected {
        collection: bucket.default_collection(),
        totals: bucket.collection(documents::TOTALS_COLLECTION),
        bucket,
        cluster,
    };
    let map_error = |e: &CbError| store_error(e);
    let docs = connected.documents(config, &map_error);
    totals::read_directory(&docs, &config.key_prefix)
        .await
        .map_err(|e| {
            StoreError::Unavailable(format!(
                "couchbase totals not ready ({}): run `ordersctl store init` once per deploy",
                detail(e)
            ))
        })?;
    Ok(connected)
}

impl Connected {
    /// The key-value operations of the write path and the totals.
    fn documents<'a>(
        &'a self,
        config: &CouchbaseConfig,
        map_error: &'a (dyn Fn(&CbError) -> StoreError + Send + Sync),
    ) -> documents::SdkDocuments<'a> {
        documents::SdkDocuments {
            records: &self.collection,
            totals: &self.totals,
            kv_timeout: config.kv_timeout,
            durability: config.durability_level(),
            map_error,
        }
    }
}

/// What to change when the bucket cannot take a write at `COUCHBASE_DURABILITY`: a
/// majority of a bucket's copies (active + `replicas`) must answer, so a bucket with
/// replicas needs more data nodes than a single one.
pub fn durability_advice(config: &CouchbaseConfig, replicas: Option<u32>) -> String {
    let wanted = <Durability as clap::ValueEnum>::to_possible_value(&config.durability)
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default();
    let copies = match replicas {
        Some(r) => format!(
            "bucket {:?} keeps {r} replica(s), so COUCHBASE_DURABILITY={wanted} needs {} data \
             nodes answering",
            config.bucket,
            r + 1
        ),
        None => format!(
            "COUCHBASE_DURABILITY={wanted} needs a majority of bucket {:?}'s copies (active + \
             replicas) on data nodes that answer",
            config.bucket
        ),
    };
    format!(
        "{copies}. Either give the bucket as many data nodes as copies, or on a single node \
         set its replicas to 0 (Capella: a bucket of 0 replicas; self-managed: couchbase-cli \
         bucket-edit --bucket {} --bucket-replica 0, then rebalance), or set \
         COUCHBASE_DURABILITY=none to accept losing acknowledged writes on a failover",
        config.bucket
    )
}

/// The bucket's replica count, when the user may read its settings.
async fn bucket_replicas(config: &CouchbaseConfig, cluster: &Cluster) -> Option<u32> {
    let settings = deadline(
        "reading the bucket's settings",
        config.query_timeout,
        cluster.buckets().get_bucket(config.bucket.clone(), None),
    )
    .await;
    settings.ok()?.ok()?.num_replicas
}

/// What `ordersctl store init` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitReport {
    /// When the bucket could not take the directory's write at `COUCHBASE_DURABILITY`:
    /// what failed and what to change (nothing else was left undone but that write).
    pub durability_problem: Option<String>,
    pub indexes: indexes::IndexReport,
    /// Whether it created the totals collection (it was there already otherwise).
    pub created_collection: bool,
    pub migration: migration::MigrationReport,
}

/// Creates the totals collection unless it exists; `true` when it created it.
async fn create_totals_collection(
    bucket: &Bucket,
    config: &CouchbaseConfig,
) -> Result<bool, StoreError> {
    let created = deadline(
        "creating the totals collection",
        config.query_timeout,
        bucket.collections().create_collection(
            "_default",
            documents::TOTALS_COLLECTION,
            None,
            None,
        ),
    )
    .await?;
    match created {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.kind(), ErrorKind::CollectionExists) => Ok(false),
        Err(e) => Err(store_error(&e)),
    }
}

/// `ordersctl store init`: connects, creates the totals collection, creates and builds the
/// indexes, drops obsolete ones, waits (at most `limit`) until every index is online, then
/// writes the totals directory with the figures of what an earlier layout stored
/// ([`migration`]; none on a new bucket). That write is made at `COUCHBASE_DURABILITY`, so a
/// bucket that cannot meet it is found here, with what to change. Run once per deploy, by a
/// user with Query Manage Index and Manage Collections on the bucket; every other role
/// only checks.
pub async fn init_store(
    config: &CouchbaseConfig,
    limit: Duration,
) -> Result<InitReport, StoreError> {
    config.validate()?;
    let scrubbed = |e| scrub(e, &config.password);
    let mut handles = Handles::default();
    let (cluster, bucket) = open_bucket(config, &mut handles).await.map_err(scrubbed)?;
    let created_collection = create_totals_collection(&bucket, config)
        .await
        .map_err(scrubbed)?;
    let indexes = indexes::init(config, &cluster, limit)
        .await
        .map_err(scrubbed)?;
    let connected = Connected {
        collection: bucket.default_collection(),
        totals: bucket.collection(documents::TOTALS_COLLECTION),
        bucket,
        cluster,
    };
    let durability_impossible = std::sync::atomic::AtomicBool::new(false);
    let map_error = |e: &CbError| {
        if matches!(
            e.kind(),
            ErrorKind::DurabilityImpossible | ErrorKind::DurabilityLevelNotAvailable
        ) {
            durability_impossible.store(true, Ordering::Relaxed);
        }
        store_error(e)
    };
    let docs = connected.documents(config, &map_error);
    let earlier = migration::QueryEarlier {
        cluster: &connected.cluster,
        config,
    };
    // A collection just made may take a moment to reach every node.
    let mut attempt = 0;
    let migration = loop {
        attempt += 1;
        match migration::migrate(&docs, &config.key_prefix, &earlier).await {
            Ok(report) => break report,
            Err(e) if durability_impossible.load(Ordering::Relaxed) => {
                let replicas = bucket_replicas(config, &connected.cluster).await;
                let problem = format!("{}: {}", detail(e), durability_advice(config, replicas));
                return Ok(InitReport {
                    durability_problem: Some(detail(scrubbed(StoreError::Unavailable(problem)))),
                    indexes,
                    created_collection,
                    migration: migration::MigrationReport::default(),
                });
            }
            Err(e) if attempt < 10 && created_collection => {
                tracing::debug!(error = %e, "the totals collection is not there yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(scrubbed(e)),
        }
    };
    Ok(InitReport {
        durability_problem: None,
        indexes,
        created_collection,
        migration,
    })
}

/// Connects until it succeeds, publishing each failure so callers can say why.
async fn connect_loop(
    config: CouchbaseConfig,
    state: watch::Sender<Connection>,
    attempts: Arc<AtomicU32>,
) {
    let mut backoff = Duration::from_millis(500);
    let mut handles = Handles::default();
    loop {
        let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
        match connect_once(&config, &mut handles).await {
            Ok(connected) => {
                tracing::info!(bucket = %config.bucket, attempts = attempt, "connected to couchbase");
                let _ = state.send(Connection::Ready(Arc::new(connected)));
                return;
            }
            Err(e) => {
                let e = scrub(e, &config.password);
                tracing::warn!(error = %e, attempts = attempt, "couchbase not ready; retrying");
                let _ = state.send(Connection::Connecting {
                    attempts: attempt,
                    last_error: Some(detail(e)),
                });
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(config.reconnect_max_delay);
    }
}

impl CouchbaseStore {
    /// Starts connecting in the background and returns at once; calls answer
    /// `Unavailable` until the connection and the indexes are ready. Needs a Tokio runtime.
    pub fn connect(config: CouchbaseConfig) -> Result<Self, StoreError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            StoreError::Unavailable("the couchbase store needs a Tokio runtime".into())
        })?;
        let (tx, rx) = watch::channel(Connection::Connecting {
            attempts: 0,
            last_error: None,
        });
        let attempts = Arc::new(AtomicU32::new(0));
        let config_key_prefix = config.key_prefix.clone();
        let task = runtime.spawn(connect_loop(config.clone(), tx, attempts.clone()));
        Ok(CouchbaseStore {
            inner: Arc::new(Inner {
                config,
                state: rx,
                task,
                attempts,
                totals: totals::TotalsBook::new(config_key_prefix),
            }),
        })
    }

    pub fn config(&self) -> &CouchbaseConfig {
        &self.inner.config
    }

    /// How many connection attempts have been made so far (the successful one included).
    pub fn connect_attempts(&self) -> u32 {
        self.inner.attempts.load(Ordering::Relaxed)
    }

    /// Waits until connected, or until an attempt fails (its error), or `limit` passes.
    pub async fn wait_ready(&self, limit: Duration) -> Result<(), StoreError> {
        let start = Instant::now();
        let mut rx = self.inner.state.clone();
        let waited = tokio::time::timeout(limit, async {
            loop {
                match &*rx.borrow_and_update() {
                    Connection::Ready(_) => return Ok(()),
                    Connection::Connecting {
                        last_error: Some(e),
                        ..
                    } => return Err(StoreError::Unavailable(e.clone())),
                    Connection::Connecting { .. } => {}
                }
                if rx.changed().await.is_err() {
                    return Err(StoreError::Unavailable(
                        "couchbase connection task ended".into(),
                    ));
                }
            }
        })
        .await;
        waited.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "couchbase at {} not ready after {:?}",
                self.inner.config.connection_string,
                start.elapsed()
            )))
        })
    }

    /// The live connection, or `Unavailable` with the reason it is not there yet.
    fn connected(&self) -> Result<Arc<Connected>, StoreError> {
        match &*self.inner.state.borrow() {
            Connection::Ready(c) => Ok(c.clone()),
            Connection::Connecting { last_error, .. } => Err(StoreError::Unavailable(format!(
                "not connected to couchbase at {} yet{}",
                self.inner.config.connection_string,
                last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ))),
        }
    }

    fn ns(&self) -> &str {
        &self.inner.config.key_prefix
    }

    /// An SDK error as a store error, with the password scrubbed from its message.
    fn sdk_error(&self, e: &CbError) -> StoreError {
        scrub(store_error(e), &self.inner.config.password)
    }

    /// The query plan of `statement` (`EXPLAIN`), for the contract suite's checks that
    /// each list walks its index with the filter, order and limit pushed down.
    pub async fn explain(
        &self,
        statement: &str,
        params: Vec<(&'static str, Value)>,
    ) -> Result<Value, StoreError> {
        let rows = self
            .query::<Value>(format!("EXPLAIN {statement}"), params, Freshness::Indexed)
            .await?;
        rows.into_iter()
            .next()
            .ok_or_else(|| StoreError::Query(format!("EXPLAIN gave no plan for {statement}")))
    }

    /// Runs one SQL++ statement with named parameters, as fresh as `freshness` says, rows
    /// included in the deadline.
    async fn query<T: DeserializeOwned + 'static>(
        &self,
        statement: String,
        params: Vec<(&'static str, Value)>,
        freshness: Freshness,
    ) -> Result<Vec<T>, StoreError> {
        let conn = self.connected()?;
        let config = &self.inner.config;
        let mut options = QueryOptions::new()
            .scan_consistency(freshness.scan_consistency())
            .server_timeout(config.query_timeout)
            .read_only(true);
        for (name, value) in params {
            options = options
                .add_named_parameter(name, value)
                .map_err(|e| store_error(&e))?;
        }
        let run = async {
            let mut result = conn.cluster.query(statement, options).await?;
            result.rows::<T>().try_collect::<Vec<T>>().await
        };
        deadline("query", config.query_timeout, run)
            .await?
            .map_err(|e| self.sdk_error(&e))
    }

    /// Reads one document; `None` when it does not exist.
    async fn get<T: DeserializeOwned>(&self, key: String) -> Result<Option<T>, StoreError> {
        let conn = self.connected()?;
        let config = &self.inner.config;
        match deadline("get", config.kv_timeout, conn.collection.get(&key, None)).await? {
            Ok(doc) => doc
                .content_as::<T>()
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("document {key}: {e}"))),
            Err(e) if matches!(e.kind(), ErrorKind::DocumentNotFound) => Ok(None),
            Err(e) => Err(self.sdk_error(&e)),
        }
    }

    /// The key-value operations of the write path and the totals, on `conn`.
    fn documents<'a>(
        &'a self,
        conn: &'a Connected,
        map_error: &'a (dyn Fn(&CbError) -> StoreError + Send + Sync),
    ) -> documents::SdkDocuments<'a> {
        conn.documents(&self.inner.config, map_error)
    }
}

#[async_trait]
impl OrderStore for CouchbaseStore {
    /// Not one transaction: each record is inserted on its own, then each partition's
    /// totals move past the batch (see [`batch`]). A failed batch is retried whole by the
    /// writer; what it had stored is found again, and counted once.
    async fn apply(&self, batch: Arc<StoreBatch>) -> Result<BatchOutcome, StoreError> {
        if batch.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let conn = self.connected()?;
        let map_error = |e: &CbError| self.sdk_error(e);
        let docs = self.documents(&conn, &map_error);
        batch::apply(&docs, &self.inner.totals, &batch, Timestamp::now()).await
    }

    async fn minute_windows(
        &self,
        from_us: i64,
        to_us: i64,
    ) -> Result<Vec<MinuteWindow>, StoreError> {
        let rows = self
            .query::<AggregateRow>(
                minute_windows_statement(&self.inner.config.bucket),
                vec![
                    ("ns", json!(self.ns())),
                    ("from", json!(from_us)),
                    ("to", json!(to_us)),
                ],
                self.inner.config.list_freshness,
            )
            .await?;
        let mut by_minute: BTreeMap<i64, MinuteWindow> = BTreeMap::new();
        for row in rows {
            let (Some(m), Some(country)) = (row.m.as_ref(), row.k.clone()) else {
                return Err(StoreError::Corrupt(format!(
                    "a per-minute window row without its minute or country: {row:?}"
                )));
            };
            let m = whole(Some(m))?;
            let minute = Timestamp::from_micros(m)
                .ok_or_else(|| StoreError::Corrupt(format!("window minute {m}")))?;
            let (n, cents) = (whole(row.n.as_ref())? as u64, whole(row.cents.as_ref())?);
            let w = by_minute.entry(m).or_insert_with(|| MinuteWindow {
                minute,
                order_count: 0,
                total_sales: Cents(0),
                by_country: BTreeMap::new(),
            });
            w.order_count += n;
            w.total_sales.0 += cents;
            w.by_country.insert(
                country,
                CountAndSum {
                    count: n,
                    sales: Cents(cents),
                },
            );
        }
        Ok(by_minute.into_values().collect())
    }

    /// Key lookups only: the directory and each partition's totals.
    async fn totals(&self) -> Result<Totals, StoreError> {
        let conn = self.connected()?;
        let map_error = |e: &CbError| self.sdk_error(e);
        let docs = self.documents(&conn, &map_error);
        self.inner.totals.totals(&docs).await
    }

    async fn max_order_id(&self) -> Result<Option<u64>, StoreError> {
        let rows: Vec<Option<u64>> = self
            .query(
                max_order_id_statement(&self.inner.config.bucket),
                vec![("ns", json!(self.ns()))],
                Freshness::AllWrites,
            )
            .await?;
        Ok(rows.into_iter().flatten().next())
    }

    async fn latest_orders(&self, query: &OrderQuery) -> Result<Vec<OrderDocument>, StoreError> {
        let cursor = match query.before_id {
            Some(id) => match self.get::<OrderRow>(order_key(self.ns(), id)).await? {
                Some(row) => Some(ArrivalCursor::of(&row)),
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        let rows: Vec<OrderRow> = self
            .query(
                latest_orders_statement(&self.inner.config.bucket, query, cursor),
                latest_orders_params(self.ns(), query, cursor),
                self.inner.config.list_freshness,
            )
            .await?;
        Ok(rows.into_iter().map(OrderDocument::from).collect())
    }

    /// Three key-value reads: the order, and its alert and payment if any.
    async fn order(&self, order_id: u64) -> Result<Option<OrderDocument>, StoreError> {
        let ns = self.ns();
        let (order, alert, payment) = tokio::try_join!(
            self.get::<OrderRow>(order_key(ns, order_id)),
            self.get::<AlertRow>(alert_key(ns, order_id)),
            self.get::<PaymentRow>(payment_key(ns, order_id)),
        )?;
        Ok(order.map(|mut row| {
            row.fraud_reason = alert.map(|a| a.reason);
            row.payment_status = payment.map(|p| p.status);
            OrderDocument::from(row)
        }))
    }

    async fn alert(&self, order_id: u64) -> Result<Option<StoredAlert>, StoreError> {
        let row = self.get::<AlertRow>(alert_key(self.ns(), order_id)).await?;
        Ok(row.map(StoredAlert::from))
    }

    async fn payment(&self, order_id: u64) -> Result<Option<StoredPayment>, StoreError> {
        let row = self
            .get::<PaymentRow>(payment_key(self.ns(), order_id))
            .await?;
        Ok(row.map(StoredPayment::from))
    }

    async fn latest_alerts(&self, limit: usize) -> Result<Vec<StoredAlert>, StoreError> {
        let rows: Vec<AlertRow> = self
            .query(
                latest_alerts_statement(&self.inner.config.bucket),
                vec![("ns", json!(self.ns())), ("limit", json!(limit))],
                self.inner.config.list_freshness,
            )
            .await?;
        Ok(rows.into_iter().map(StoredAlert::from).collect())
    }

    async fn latest_payments(&self, limit: usize) -> Result<Vec<StoredPayment>, StoreError> {
        let rows: Vec<PaymentRow> = self
            .query(
                latest_payments_statement(&self.inner.config.bucket),
                vec![("ns", json!(self.ns())), ("limit", json!(limit))],
                self.inner.config.list_freshness,
            )
            .await?;
        Ok(rows.into_iter().map(StoredPayment::from).collect())
    }

    async fn orders_before(
        &self,
        before_id: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredOrder>, StoreError> {
        let rows: Vec<OrderRow> = self
            .query(
                orders_before_statement(&self.inner.config.bucket),
                scan_params(self.ns(), before_id, limit),
                Freshness::AllWrites,
            )
            .await?;
        Ok(rows.into_iter().map(StoredOrder::from).collect())
    }

    async fn alerts_before(
        &self,
        before_id: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        let rows: Vec<AlertRow> = self
            .query(
                alerts_before_statement(&self.inner.config.bucket),
                scan_params(self.ns(), before_id, limit),
                Freshness::AllWrites,
            )
            .await?;
        Ok(rows.into_iter().map(StoredAlert::from).collect())
    }

    async fn payments_before(
        &self,
        before_id: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredPayment>, StoreError> {
        let rows: Vec<PaymentRow> = self
            .query(
                payments_before_statement(&self.inner.config.bucket),
                scan_params(self.ns(), before_id, limit),
                Freshness::AllWrites,
            )
            .await?;
        Ok(rows.into_iter().map(StoredPayment::from).collect())
    }

    /// Ready when connected with the indexes and the totals in place, and a ping finds a
    /// majority of the bucket's key-value endpoints and at least one query endpoint
    /// answering within the key-value deadline ([`ping_verdict`]).
    async fn ping(&self) -> Result<(), StoreError> {
        let conn = self.connected()?;
        // The query ping's own timeout (75 s by default) is kept under the whole ping's
        // deadline, so a slow query node is reported by name, not as a timed-out ping.
        let kv_timeout = self.inner.config.kv_timeout;
        let options = PingOptions::new()
            .service_types(vec![ServiceType::KV, ServiceType::QUERY])
            .kv_timeout(kv_timeout * 3 / 4)
            .query_timeout(kv_timeout * 3 / 4);
        let report = deadline(
            "ping",
            self.inner.config.kv_timeout,
            conn.bucket.ping(options),
        )
        .await?
        .map_err(|e| self.sdk_error(&e))?;
        ping_verdict(&endpoints(&report))
    }

    async fn record_canary_stages(&self, stages: Arc<Vec<CanaryStage>>) -> Result<(), StoreError> {
        self.insert_canary_stages(&stages).await
    }

    async fn canaries_before(
        &self,
        before_id: Option<u64>,
        limit: usize,
    ) -> Result<Vec<CanaryJourney>, StoreError> {
        self.canary_journeys(before_id, limit).await
    }
}

// Canary journeys. Each stage of a canary is its own document, `canary::<id>::<stage>`,
// inserted like the other documents (with the same durability): the first write of a
// stage wins and a redelivery finds it there, with no read-modify-write between the
// three topics' records. A journey is the stages of one id, grouped by one query over
// `idx_canary_stages`.

/// The journeys of the canaries below `$before_id`, highest id first.
pub fn canary_journeys_statement(bucket: &str) -> String {
    format!(
        "SELECT c.order_id, MIN(c.created_us) AS created_us, \
         MIN(CASE WHEN c.stage = \"stored\" THEN c.at_us END) AS stored_us, \
         MIN(CASE WHEN c.stage = \"decided\" THEN c.at_us END) AS decided_us, \
         MIN(CASE WHEN c.stage = \"decided\" THEN c.flagged END) AS flagged, \
         MIN(CASE WHEN c.stage = \"paid\" THEN c.at_us END) AS paid_us \
         {} WHERE c.type = \"canary_stage\" AND c.ns = $ns \
         AND c.order_id < $before_id GROUP BY c.order_id ORDER BY c.order_id DESC LIMIT $limit",
        from_index(bucket, "c", "idx_canary_stages")
    )
}

/// The key and document of one canary stage.
fn canary_stage_document(ns: &str, stage: &CanaryStage) -> (String, Value) {
    let id = stage.order_id();
    let (name, at, created, flagged) = match *stage {
        CanaryStage::Stored {
            created_at,
            stored_at,
            ..
        } => ("stored", stored_at, Some(created_at.micros()), None),
        CanaryStage::Decided { at, flagged, .. } => ("decided", at, None, Some(flagged)),
        CanaryStage::Paid { at, .. } => ("paid", at, None, None),
    };
    let mut doc = json!({
        "type": "canary_stage",
        "ns": ns,
        "order_id": id,
        "stage": name,
        "at": at,
        "at_us": at.micros(),
    });
    if let Some(map) = doc.as_object_mut() {
        if let Some(created) = created {
            map.insert("created_us".into(), json!(created));
        }
        if let Some(flagged) = flagged {
            map.insert("flagged".into(), json!(flagged));
        }
    }
    (format!("{ns}canary::{id}::{name}"), doc)
}

/// One row of [`canary_journeys_statement`].
#[derive(Debug, Deserialize)]
struct CanaryRow {
    order_id: u64,
    #[serde(default)]
    created_us: Option<Value>,
    #[serde(default)]
    stored_us: Option<Value>,
    #[serde(default)]
    decided_us: Option<Value>,
    #[serde(default)]
    flagged: Option<bool>,
    #[serde(default)]
    paid_us: Option<Value>,
}

impl CanaryRow {
    fn journey(self) -> Result<CanaryJourney, StoreError> {
        let at = |v: Option<Value>| -> Result<Option<Timestamp>, StoreError> {
            match v {
                None | Some(Value::Null) => Ok(None),
                Some(v) => {
                    let us = whole(Some(&v))?;
                    Timestamp::from_micros(us)
                        .map(Some)
                        .ok_or_else(|| StoreError::Corrupt(format!("canary time {us}")))
                }
            }
        };
        Ok(CanaryJourney {
            order_id: self.order_id,
            created_at: at(self.created_us)?,
            decided_at: at(self.decided_us)?,
            flagged: self.flagged,
            paid_at: at(self.paid_us)?,
            stored_at: at(self.stored_us)?,
        })
    }
}

impl CouchbaseStore {
    async fn insert_canary_stages(&self, stages: &[CanaryStage]) -> Result<(), StoreError> {
        if stages.is_empty() {
            return Ok(());
        }
        let conn = self.connected()?;
        let map_error = |e: &CbError| self.sdk_error(e);
        let docs = self.documents(&conn, &map_error);
        // A stage already stored (a redelivery) keeps its first time: insert, never replace.
        let stages: Vec<(String, Value)> = stages
            .iter()
            .map(|s| canary_stage_document(self.ns(), s))
            .collect();
        use documents::Documents;
        let space = documents::Space::Records;
        futures::future::try_join_all(stages.iter().map(|(key, doc)| docs.insert(space, key, doc)))
            .await
            .map(|_| ())
    }

    async fn canary_journeys(
        &self,
        before_id: Option<u64>,
        limit: usize,
    ) -> Result<Vec<CanaryJourney>, StoreError> {
        let rows: Vec<CanaryRow> = self
            .query(
                canary_journeys_statement(&self.inner.config.bucket),
                scan_params(self.ns(), before_id, limit),
                self.inner.config.list_freshness,
            )
            .await?;
        rows.into_iter().map(CanaryRow::journey).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `store init` says when the bucket cannot take a write at the configured level.
    #[test]
    fn a_bucket_that_cannot_meet_the_durability_is_told_what_to_change() {
        let c = config("couchbase://h");
        let advice = durability_advice(&c, Some(1));
        assert!(
            advice.contains(
                "keeps 1 replica(s), so COUCHBASE_DURABILITY=majority needs 2 data nodes"
            ),
            "{advice}"
        );
        assert!(
            advice
                .contains("couchbase-cli bucket-edit --bucket order_analytics --bucket-replica 0"),
            "{advice}"
        );
        assert!(advice.contains("COUCHBASE_DURABILITY=none"), "{advice}");
        let unknown = durability_advice(&c, None);
        assert!(unknown.contains("a majority of bucket"), "{unknown}");
    }

    /// Lists read what the indexes hold, without waiting for them; the reads that must see
    /// every write (the highest id, the scans) wait.
    #[test]
    fn lists_do_not_wait_for_the_indexes() {
        let c = config("couchbase://h");
        assert_eq!(c.list_freshness, Freshness::Indexed);
        assert_eq!(
            c.list_freshness.scan_consistency(),
            ScanConsistency::NotBounded
        );
        assert_eq!(
            Freshness::AllWrites.scan_consistency(),
            ScanConsistency::RequestPlus
        );
    }

    fn kind(e: StoreError) -> &'static str {
        match e {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Query(_) => "query",
            StoreError::Corrupt(_) => "corrupt",
        }
    }

    #[test]
    fn sdk_errors_map_to_store_kinds() {
        let cases = [
            (ErrorKind::ServerTimeout, "unavailable"),
            (ErrorKind::AuthenticationFailure, "unavailable"),
            (ErrorKind::BucketNotFound, "unavailable"),
            (ErrorKind::TemporaryFailure, "unavailable"),
            (ErrorKind::RequestCanceled, "unavailable"),
            (
                ErrorKind::ServiceNotAvailable(ServiceType::QUERY),
                "unavailable",
            ),
            (ErrorKind::IndexNotFound, "unavailable"),
            (ErrorKind::IndexFailure, "unavailable"),
            (
                ErrorKind::OtherFailure("connection refused".into()),
                "unavailable",
            ),
            (ErrorKind::DecodingFailure("bad".into()), "corrupt"),
            (ErrorKind::DocumentNotJSON, "corrupt"),
            (ErrorKind::ParsingFailure, "query"),
            (ErrorKind::PlanningFailure, "query"),
            (ErrorKind::ValueTooLarge, "query"),
            (ErrorKind::EncodingFailure("x".into()), "query"),
            (ErrorKind::DocumentExists, "query"),
            (ErrorKind::DurabilityAmbiguous, "unavailable"),
            (ErrorKind::DurabilityImpossible, "unavailable"),
            (ErrorKind::DurabilityLevelNotAvailable, "unavailable"),
        ];
        for (k, want) in cases {
            let e = CbError::new(k.clone());
            let mapped = store_error(&e);
            assert!(mapped.to_string().contains("couchbase"), "{mapped}");
            assert_eq!(kind(mapped), want, "{k:?}");
        }
    }

    #[test]
    fn statements_are_golden() {
        let b = "order_analytics";
        assert_eq!(
            latest_orders_statement(
                b,
                &OrderQuery {
                    limit: 10,
                    ..OrderQuery::default()
                },
                None
            ),
            "SELECT o.order_id, o.customer_id, o.amount_cents, o.currency, o.country, o.status, \
             o.created_at, o.source, o.kafka_partition, o.kafka_offset, o.processed_at, \
             o.fraud_reason, o.payment_status FROM `order_analytics` AS o \
             USE INDEX (idx_orders_arrival USING GSI) WHERE o.type = \"order\" AND o.ns = $ns \
             ORDER BY o.processed_us DESC, o.order_id DESC LIMIT $limit"
        );
        assert_eq!(
            max_order_id_statement(b),
            "SELECT RAW o.order_id FROM `order_analytics` AS o USE INDEX (idx_orders_latest \
             USING GSI) WHERE o.type = \"order\" AND o.ns = $ns ORDER BY o.order_id DESC LIMIT 1"
        );
        assert_eq!(
            latest_alerts_statement(b),
            "SELECT a.order_id, a.reason, a.rule_id, a.amount_cents, a.country, a.detected_at, \
             a.stored_at FROM `order_analytics` AS a USE INDEX (idx_alerts_arrival USING GSI) \
             WHERE a.type = \"alert\" AND a.ns = $ns \
             ORDER BY a.stored_us DESC, a.order_id DESC LIMIT $limit"
        );
        assert_eq!(
            latest_payments_statement(b),
            "SELECT p.order_id, p.status, p.amount_cents, p.country, p.`timestamp`, p.stored_at \
             FROM `order_analytics` AS p USE INDEX (idx_payments_arrival USING GSI) \
             WHERE p.type = \"payment\" AND p.ns = $ns \
             ORDER BY p.stored_us DESC, p.order_id DESC LIMIT $limit"
        );
    }

    /// The keys a statement filters on by equality (besides `type`, which every index is
    /// partial on) and those it sorts by, with their direction.
    fn filter_and_sort_keys(statement: &str) -> (Vec<String>, Vec<String>) {
        let where_at = statement.find(" WHERE ").unwrap() + 7;
        let order_at = statement.find(" ORDER BY ").unwrap();
        let filter = &statement[where_at..order_at];
        let mut eq: Vec<String> = filter
            .split(" AND ")
            .filter_map(|p| {
                let (lhs, rhs) = p.trim().split_once(" = ")?;
                let field = lhs.split_once('.')?.1;
                (rhs.starts_with('$') && field != "type").then(|| field.to_owned())
            })
            .collect();
        eq.sort();
        let rest = &statement[order_at + 10..];
        let sort = rest[..rest.find(" LIMIT").unwrap()]
            .split(", ")
            .map(|k| k.split_once('.').unwrap().1.to_owned())
            .collect();
        (eq, sort)
    }

    /// Each list's equality keys, then its sort keys (same order and direction), are the
    /// leading keys of its index, and its document type is the index's: so the filter, the
    /// order and the limit all go into one index scan.
    /// The plan reader on the shape Couchbase's `EXPLAIN` answers (a pushed-down scan,
    /// and one that sorts after a scan of another index).
    #[test]
    fn plans_are_read_for_their_index_limit_and_sort() {
        let good = json!({"plan": {"#operator": "Sequence", "~children": [
            {"#operator": "IndexScan3", "index": "idx_orders_country_arrival",
             "limit": "$limit", "spans": [{"range": []}]},
            {"#operator": "Fetch", "as": "o"},
            {"#operator": "Parallel", "~child": {"#operator": "Sequence", "~children": [
                {"#operator": "Filter"}, {"#operator": "InitialProject"}]}},
            {"#operator": "Limit", "expr": "$limit"}]}, "text": "SELECT …"});
        let s = PlanSummary::of(&good);
        assert_eq!(
            s.index_scans,
            vec![("idx_orders_country_arrival".to_owned(), true)]
        );
        assert_eq!(
            s.problem("idx_orders_country_arrival", PlanShape::LimitPushed),
            None
        );
        assert!(s
            .problem("idx_orders_arrival", PlanShape::LimitPushed)
            .is_some());
        assert!(
            s.problem("idx_orders_country_arrival", PlanShape::Covering)
                .unwrap()
                .contains("fetches"),
            "not covering"
        );
        let sorting = json!({"plan": {"#operator": "Sequence", "~children": [
            {"#operator": "IndexScan3", "index": "idx_orders_by_country"},
            {"#operator": "Fetch"}, {"#operator": "Order", "sort_terms": []},
            {"#operator": "Limit"}]}});
        let s = PlanSummary::of(&sorting);
        assert!(s
            .problem("idx_orders_by_country", PlanShape::LimitPushed)
            .unwrap()
            .contains("limit"));
        assert!(s
            .problem("idx_orders_by_country", PlanShape::Ordered)
            .unwrap()
            .contains("sorts"));
        let mut pushed = s.clone();
        pushed.index_scans[0].1 = true;
        assert!(pushed
            .problem("idx_orders_by_country", PlanShape::LimitPushed)
            .unwrap()
            .contains("sorts"));
    }

    #[test]
    fn every_list_has_an_index_that_leads_with_its_filter_and_sort() {
        let lists = list_statements("order_analytics", "run:");
        for list in &lists {
            assert!(
                list.statement
                    .contains(&format!(" USE INDEX ({} USING GSI) ", list.index)),
                "{}: names {}",
                list.name,
                list.index
            );
        }
        let cursor_pages = lists.iter().filter(|l| l.shape == PlanShape::Ordered);
        assert_eq!(cursor_pages.count(), 10, "five lists, two kinds of cursor");
        for list in lists.iter().filter(|l| l.shape == PlanShape::LimitPushed) {
            let index = indexes::definition(list.index)
                .unwrap_or_else(|| panic!("{}: no index {}", list.name, list.index));
            let (eq, sort) = filter_and_sort_keys(&list.statement);
            assert!(
                list.statement.contains(&format!(".{}", index.condition)),
                "{}: not on the documents of {}",
                list.name,
                index.condition
            );
            assert!(
                index.keys.len() >= eq.len() + sort.len(),
                "{}: {:?} + {:?} longer than {:?}",
                list.name,
                eq,
                sort,
                index.keys
            );
            let mut leading: Vec<String> = index.keys[..eq.len()]
                .iter()
                .map(|k| k.to_string())
                .collect();
            leading.sort();
            assert_eq!(
                leading, eq,
                "{}: equality keys lead {}",
                list.name, index.name
            );
            let following: Vec<String> = index.keys[eq.len()..eq.len() + sort.len()]
                .iter()
                .map(|k| k.to_string())
                .collect();
            assert_eq!(
                following, sort,
                "{}: sort keys follow in {}",
                list.name, index.name
            );
            assert!(list.statement.contains("LIMIT"), "{}", list.name);
            for (param, _) in &list.params {
                assert!(
                    list.statement.contains(&format!("${param}")),
                    "{}: ${param}",
                    list.name
                );
            }
        }
        // The one aggregate, the per-minute windows: an equality on ns and a range of
        // creation times lead its index, which holds every field it reads (covering).
        let windows = minute_windows_statement("order_analytics");
        let window_index = indexes::definition("idx_orders_created_minute").unwrap();
        assert_eq!(window_index.keys[..2], ["ns", "created_us"]);
        assert!(
            windows.contains(".type = \"order\"") && window_index.condition == "type = \"order\""
        );
        for part in ["o.ns = $ns", "o.created_us >= $from", "o.created_us < $to"] {
            assert!(windows.contains(part), "{part}: {windows}");
        }
        let fields: std::collections::BTreeSet<&str> = windows
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .filter_map(|w| w.strip_prefix("o."))
            .collect();
        for field in fields.iter().filter(|f| **f != "type") {
            assert!(
                window_index.keys.contains(field),
                "the windows read {field}, not in {:?}",
                window_index.keys
            );
        }
        // The canary journeys: an equality on ns, ids walked highest first, every stage
        // field read from the index.
        let canaries = canary_journeys_statement("order_analytics");
        let canary_index = indexes::definition("idx_canary_stages").unwrap();
        assert_eq!(canary_index.keys[..2], ["ns", "order_id DESC"]);
        for part in [
            "c.type = \"canary_stage\" AND c.ns = $ns",
            "ORDER BY c.order_id DESC LIMIT $limit",
        ] {
            assert!(canaries.contains(part), "{part}: {canaries}");
        }
        for field in ["stage", "at_us", "created_us", "flagged"] {
            assert!(canary_index.keys.contains(&field), "{field}");
        }
        // Every index serves a statement, none left over.
        for index in indexes::INDEXES {
            assert!(
                lists.iter().any(|l| l.index == index.name),
                "{} serves no list",
                index.name
            );
        }
        // The checker itself: a sort the index does not keep fails it.
        let (eq, sort) = filter_and_sort_keys(
            "SELECT 1 FROM b AS o WHERE o.type = \"order\" AND o.ns = $ns AND o.country = $c \
             ORDER BY o.created_us DESC LIMIT $limit",
        );
        assert_eq!(eq, vec!["country", "ns"]);
        assert_eq!(sort, vec!["created_us DESC"]);
    }

    #[test]
    fn scan_statements_walk_the_descending_indexes() {
        let b = "order_analytics";
        assert_eq!(
            orders_before_statement(b),
            "SELECT o.order_id, o.customer_id, o.amount_cents, o.currency, o.country, o.status, \
             o.created_at, o.source, o.kafka_partition, o.kafka_offset, o.processed_at \
             FROM `order_analytics` AS o USE INDEX (idx_orders_latest USING GSI) \
             WHERE o.type = \"order\" AND o.ns = $ns \
             AND o.order_id < $before_id ORDER BY o.order_id DESC LIMIT $limit"
        );
        assert_eq!(
            alerts_before_statement(b),
            "SELECT a.order_id, a.reason, a.rule_id, a.amount_cents, a.country, a.detected_at, \
             a.stored_at FROM `order_analytics` AS a USE INDEX (idx_alerts_latest USING GSI) \
             WHERE a.type = \"alert\" AND a.ns = $ns \
             AND a.order_id < $before_id ORDER BY a.order_id DESC LIMIT $limit"
        );
        assert_eq!(
            payments_before_statement(b),
            "SELECT p.order_id, p.status, p.amount_cents, p.country, p.`timestamp`, p.stored_at \
             FROM `order_analytics` AS p USE INDEX (idx_payments_latest USING GSI) \
             WHERE p.type = \"payment\" AND p.ns = $ns \
             AND p.order_id < $before_id ORDER BY p.order_id DESC LIMIT $limit"
        );
        let params = scan_params("run1:", None, 500);
        assert_eq!(
            params,
            vec![
                ("ns", json!("run1:")),
                ("before_id", json!(u64::MAX)),
                ("limit", json!(500))
            ]
        );
        assert_eq!(scan_params("", Some(42), 1)[1], ("before_id", json!(42)));
    }

    #[test]
    fn filters_add_fixed_fragments_and_named_parameters_only() {
        let hostile = "US\" OR 1=1 --";
        assert!(
            hostile.parse::<Country>().is_err(),
            "domain types reject it first"
        );
        let q = OrderQuery {
            limit: 5,
            before_id: Some(42),
            country: Some("DE".parse().unwrap()),
            status: Some(OrderStatus::Cancelled),
            fraud: Some(false),
            payment_status: Some(PaymentStatus::Paid),
        };
        let cursor = Some(ArrivalCursor::Stamped {
            processed_us: 1_705_314_600_123_456,
            order_id: 42,
        });
        let s = latest_orders_statement("order_analytics", &q, cursor);
        assert!(s.ends_with(
            "WHERE o.type = \"order\" AND o.ns = $ns AND (o.processed_us < $before_us \
             OR (o.processed_us = $before_us AND o.order_id < $before_id) \
             OR o.processed_us IS MISSING) \
             AND o.country = $country AND o.status = $status AND o.fraud = $fraud \
             AND o.payment_status = $payment_status \
             ORDER BY o.processed_us DESC, o.order_id DESC LIMIT $limit"
        ));
        assert!(!s.contains("\"DE\"") && !s.contains("42") && !s.contains("CANCELLED"));
        let params = latest_orders_params("run1:", &q, cursor);
        let get = |k: &str| params.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("ns"), Some(json!("run1:")));
        assert_eq!(get("before_id"), Some(json!(42)));
        assert_eq!(get("before_us"), Some(json!(1_705_314_600_123_456_i64)));
        // A cursor written before arrival was stamped pages on among the unstamped.
        let legacy = Some(ArrivalCursor::Unstamped { order_id: 42 });
        assert!(latest_orders_statement("b", &q, legacy)
            .contains("AND o.processed_us IS MISSING AND o.order_id < $before_id AND o.country"));
        let params = latest_orders_params("run1:", &q, legacy);
        assert!(params.iter().all(|(n, _)| *n != "before_us"));
        assert_eq!(get("country"), Some(json!("DE")));
        assert_eq!(get("status"), Some(json!("CANCELLED")));
        assert_eq!(get("payment_status"), Some(json!("PAID")));
        assert_eq!(get("limit"), Some(json!(5)));
        let fraud_only = latest_orders_statement(
            "b",
            &OrderQuery {
                limit: 1,
                fraud: Some(true),
                ..OrderQuery::default()
            },
            None,
        );
        assert!(fraud_only.contains(" AND o.fraud = $fraud ORDER BY"));
        assert_eq!(
            latest_orders_params(
                "",
                &OrderQuery {
                    limit: 1,
                    fraud: Some(true),
                    ..OrderQuery::default()
                },
                None
            )
            .into_iter()
            .find(|(n, _)| *n == "fraud"),
            Some(("fraud", json!(true)))
        );
    }

    #[test]
    fn keys_follow_the_spec_and_the_prefix() {
        assert_eq!(order_key("", 123), "123");
        assert_eq!(alert_key("", 123), "alert::123");
        assert_eq!(payment_key("", 123), "payment::123");
        assert_eq!(order_key("t1:", 7), "t1:7");
        assert_eq!(alert_key("t1:", 7), "t1:alert::7");
    }

    #[test]
    fn order_documents_round_trip_exactly() {
        let g = crate::generator::OrderGenerator::new(3);
        let mut order = g.order(77, Timestamp::now());
        order.source = Some("order-service".into());
        let stored = StoredOrder {
            order: order.clone(),
            kafka_partition: 4,
            kafka_offset: 99,
            processed_at: Timestamp::now(),
        };
        let doc = order_document("", &stored);
        assert_eq!(doc["type"], "order");
        assert_eq!(doc["order_id"], 77);
        assert_eq!(doc["amount_cents"], order.amount.0);
        assert_eq!(doc["kafka_partition"], 4);
        assert_eq!(doc["kafka_offset"], 99);
        assert!(doc["processed_at"].is_string());
        // The arrival key the lists sort on, and the cursor it makes.
        assert_eq!(doc["processed_us"], stored.processed_at.micros());
        let row: OrderRow = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(
            ArrivalCursor::of(&row),
            ArrivalCursor::Stamped {
                processed_us: stored.processed_at.micros(),
                order_id: 77,
            }
        );
        let mut legacy = doc.clone();
        legacy.as_object_mut().unwrap().remove("processed_us");
        let legacy: OrderRow = serde_json::from_value(legacy).unwrap();
        assert_eq!(
            ArrivalCursor::of(&legacy),
            ArrivalCursor::Unstamped { order_id: 77 }
        );
        let back = OrderDocument::from(row);
        let scanned: OrderRow = serde_json::from_value(doc).unwrap();
        assert_eq!(StoredOrder::from(scanned), stored, "what a full scan reads");
        assert_eq!(back.order, order);
        assert!(!back.fraud);

        let alert = FraudAlert {
            order_id: 77,
            reason: "R".into(),
            amount: Cents(35_001),
            country: "DE".parse().unwrap(),
            rule_id: None,
            detected_at: None,
        };
        let now = Timestamp::now();
        assert_eq!(
            alert_document("", &alert, KafkaPosition::default(), now)["stored_us"],
            now.micros()
        );
        let back: AlertRow =
            serde_json::from_value(alert_document("", &alert, KafkaPosition::default(), now))
                .unwrap();
        assert_eq!(StoredAlert::from(back).alert, alert);
        let payment = Payment {
            order_id: 77,
            status: PaymentStatus::Failed,
            amount: Cents(24_999),
            country: "US".parse().unwrap(),
            timestamp: 1705314600.123,
        };
        assert_eq!(
            payment_document("", &payment, KafkaPosition::default(), now)["stored_us"],
            now.micros()
        );
        let back: PaymentRow = serde_json::from_value(payment_document(
            "",
            &payment,
            KafkaPosition::default(),
            now,
        ))
        .unwrap();
        assert_eq!(StoredPayment::from(back).payment, payment);
    }

    fn config(connection_string: &str) -> CouchbaseConfig {
        CouchbaseConfig::new(
            connection_string,
            "order_analytics",
            "app",
            Secret::new("PASSWORD-VALUE-9"),
        )
    }

    #[test]
    fn config_follows_the_spec_and_rejects_bad_names() {
        let args = StoreArgs {
            couchbase_host: Some("cb.abc.cloud.couchbase.com".into()),
            couchbase_username: Some("app".into()),
            couchbase_password: Some(Secret::new("pw")),
            ..StoreArgs::default()
        };
        let c = CouchbaseConfig::from_store_args(&args).unwrap().unwrap();
        assert_eq!(
            c.connection_string,
            "couchbases://cb.abc.cloud.couchbase.com"
        );
        assert_eq!(c.bucket, "order_analytics");
        assert_eq!(c.key_prefix, "");
        assert!(CouchbaseConfig::from_store_args(&StoreArgs::default())
            .unwrap()
            .is_none());
        let no_password = StoreArgs {
            couchbase_password: None,
            ..args.clone()
        };
        let err = CouchbaseConfig::from_store_args(&no_password).unwrap_err();
        assert!(err.to_string().contains("COUCHBASE_PASSWORD"), "{err}");
        let bad_bucket = StoreArgs {
            couchbase_bucket: "a`b".into(),
            ..args
        };
        assert!(CouchbaseConfig::from_store_args(&bad_bucket).is_err());
        let mut c = config("couchbase://h");
        c.key_prefix = "x\"".into();
        assert!(c.validate().is_err());
        assert!(config("http://h").validate().is_err());
    }

    /// Readiness needs a majority of the kv endpoints and one query endpoint answering,
    /// and names those that do not.
    #[test]
    fn readiness_needs_a_quorum_of_kv_endpoints_and_one_query_endpoint() {
        let e = |service, remote: &str, ok: bool| Endpoint {
            service,
            remote: remote.into(),
            ok,
            problem: if ok {
                String::new()
            } else {
                "timed out".into()
            },
        };
        let healthy = [
            e("kv", "n1:11210", true),
            e("kv", "n2:11210", true),
            e("query", "n1:8093", true),
            e("query", "n2:8093", false),
        ];
        assert!(ping_verdict(&healthy).is_ok());
        // One slow node of three: still ready.
        let one_slow = [
            e("kv", "n1:11210", true),
            e("kv", "n2:11210", false),
            e("kv", "n3:11210", true),
            e("query", "n1:8093", true),
        ];
        assert!(ping_verdict(&one_slow).is_ok());
        let kv_down = [
            e("kv", "n1:11210", true),
            e("kv", "n2:11210", false),
            e("query", "n1:8093", true),
        ];
        let err = ping_verdict(&kv_down).unwrap_err().to_string();
        assert!(
            err.contains("1 of 2 kv services answer, not a majority (n2:11210 timed out)"),
            "{err}"
        );
        let query_down = [e("kv", "n1:11210", true), e("query", "n1:8093", false)];
        let err = ping_verdict(&query_down).unwrap_err().to_string();
        assert!(
            err.contains("no query service answers (n1:8093 timed out)"),
            "{err}"
        );
        let no_query = [e("kv", "n1:11210", true)];
        let err = ping_verdict(&no_query).unwrap_err().to_string();
        assert!(err.contains("no query service in the cluster"), "{err}");
        let err = ping_verdict(&[]).unwrap_err().to_string();
        assert!(err.contains("no kv service"), "{err}");
    }

    /// Writes are majority-durable unless told otherwise; every level of the setting maps
    /// to the SDK's, and a bad one is a usage error naming the choices.
    #[test]
    fn durability_defaults_to_majority_and_follows_the_setting() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            store: StoreArgs,
        }
        let base = ["t", "--couchbase-host", "h", "--couchbase-username", "u"];
        let parse = |extra: &[&str]| {
            let mut argv: Vec<&str> = base.to_vec();
            argv.extend_from_slice(&["--couchbase-password", "p"]);
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|cli| {
                CouchbaseConfig::from_store_args(&cli.store)
                    .unwrap()
                    .unwrap()
            })
        };
        assert_eq!(
            parse(&[]).unwrap().durability_level(),
            DurabilityLevel::MAJORITY
        );
        for (value, level) in [
            ("none", DurabilityLevel::NONE),
            ("majority", DurabilityLevel::MAJORITY),
            (
                "majority_and_persist_active",
                DurabilityLevel::MAJORITY_AND_PERSIST_ACTIVE,
            ),
            ("persist_to_majority", DurabilityLevel::PERSIST_TO_MAJORITY),
        ] {
            let c = parse(&["--couchbase-durability", value]).unwrap();
            assert_eq!(c.durability_level(), level, "{value}");
        }
        let err = parse(&["--couchbase-durability", "all"]).err().unwrap();
        assert!(err.to_string().contains("persist_to_majority"), "{err}");
    }

    /// `COUCHBASE_CA_CERT` takes a PEM file's path or the PEM itself, is checked at start,
    /// and asks for TLS.
    #[test]
    fn a_ca_certificate_is_read_from_a_path_or_pem_and_needs_tls() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/test-ca.pem");
        let pem = std::fs::read_to_string(path).unwrap();
        assert_eq!(ca_certificates(path).unwrap().len(), 1);
        assert_eq!(ca_certificates(&pem).unwrap().len(), 1);
        let two = format!("{pem}{pem}");
        assert_eq!(ca_certificates(&two).unwrap().len(), 2);
        let missing = ca_certificates("/no/such/ca.pem").unwrap_err();
        assert!(missing.to_string().contains("cannot read"), "{missing}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let none = ca_certificates(empty.to_str().unwrap()).unwrap_err();
        assert!(none.to_string().contains("no CERTIFICATE"), "{none}");
        let broken =
            ca_certificates("-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n")
                .unwrap_err();
        assert!(broken.to_string().contains("COUCHBASE_CA_CERT"), "{broken}");

        let args = StoreArgs {
            couchbase_host: Some("cb.example.internal".into()),
            couchbase_username: Some("app".into()),
            couchbase_password: Some(Secret::new("pw")),
            couchbase_ca_cert: Some(path.into()),
            ..StoreArgs::default()
        };
        let c = CouchbaseConfig::from_store_args(&args).unwrap().unwrap();
        assert_eq!(c.ca_certificates.len(), 1);
        assert_eq!(c.connection_string, "couchbases://cb.example.internal");
        let plain = StoreArgs {
            couchbase_host: Some("couchbase://cb.example.internal".into()),
            ..args
        };
        let err = CouchbaseConfig::from_store_args(&plain).unwrap_err();
        assert!(err.to_string().contains("couchbases://"), "{err}");
    }

    #[tokio::test]
    async fn secrets_never_print() {
        let store = CouchbaseStore::connect(config("couchbase://127.0.0.1:1")).unwrap();
        let dump = format!("{store:?} {store:#?} {:?}", store.config());
        assert!(!dump.contains("PASSWORD-VALUE-9"), "{dump}");
        assert!(dump.contains("***"), "{dump}");
        let e = scrub(
            StoreError::Unavailable("auth PASSWORD-VALUE-9 failed".into()),
            &store.config().password,
        );
        assert!(!e.to_string().contains("PASSWORD-VALUE-9"));
    }

    #[test]
    fn connecting_needs_a_runtime_and_says_so() {
        let err = CouchbaseStore::connect(config("couchbase://127.0.0.1:1")).unwrap_err();
        assert!(err.to_string().contains("Tokio runtime"), "{err}");
    }

    #[tokio::test]
    async fn a_closed_port_fails_clearly_within_seconds() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut c = config(&format!("couchbase://127.0.0.1:{port}"));
        c.connect_timeout = Duration::from_secs(3);
        let store = CouchbaseStore::connect(c).unwrap();
        let start = Instant::now();
        // Not ready: calls answer at once instead of hanging in the SDK's retries.
        let e = store.ping().await.unwrap_err();
        assert_eq!(kind(e), "unavailable");
        let e = store.totals().await.unwrap_err();
        assert_eq!(kind(e), "unavailable");
        let e = store
            .apply(Arc::new(StoreBatch {
                payments: vec![Payment {
                    order_id: 1,
                    status: PaymentStatus::Paid,
                    amount: Cents(1),
                    country: "US".parse().unwrap(),
                    timestamp: 0.0,
                }],
                ..StoreBatch::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(kind(e), "unavailable");
        let e = store.wait_ready(Duration::from_secs(15)).await.unwrap_err();
        let elapsed = start.elapsed();
        assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
        let text = e.to_string();
        eprintln!("closed port after {elapsed:?}: {text}");
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert_eq!(kind(e), "unavailable");
        assert!(!text.contains("PASSWORD-VALUE-9"), "{text}");
        let e = store.ping().await.unwrap_err();
        assert!(e.to_string().contains("not connected"), "{e}");
        assert!(e.to_string().contains(&port.to_string()), "{e}");
    }

    #[test]
    fn canary_stages_are_documents_of_their_own_grouped_by_one_indexed_query() {
        let t = Timestamp::from_micros(1_700_000_000_000_000).unwrap();
        let (key, doc) = canary_stage_document(
            "run1:",
            &CanaryStage::Decided {
                order_id: 42,
                at: t,
                flagged: true,
            },
        );
        assert_eq!(key, "run1:canary::42::decided");
        assert_eq!(doc["type"], "canary_stage");
        assert_eq!(doc["at_us"], json!(1_700_000_000_000_000_i64));
        assert_eq!(doc["flagged"], json!(true));
        let (key, doc) = canary_stage_document(
            "",
            &CanaryStage::Stored {
                order_id: 7,
                created_at: t,
                stored_at: t,
            },
        );
        assert_eq!(key, "canary::7::stored");
        assert_eq!(doc["created_us"], json!(1_700_000_000_000_000_i64));
        let index = indexes::definition("idx_canary_stages").unwrap();
        assert_eq!(index.keys[..3], ["ns", "order_id DESC", "stage"]);
        assert_eq!(index.condition, "type = \"canary_stage\"");
        let statement = canary_journeys_statement("order_analytics");
        assert!(statement.contains("c.type = \"canary_stage\" AND c.ns = $ns"));
        assert!(statement.contains("ORDER BY c.order_id DESC LIMIT $limit"));
        // Aggregates may come back as floats; a missing stage is null.
        let row: CanaryRow = serde_json::from_value(json!({
            "order_id": 7, "created_us": 1.7e15, "stored_us": 1_700_000_000_500_000_i64,
            "decided_us": null, "flagged": null
        }))
        .unwrap();
        let journey = row.journey().unwrap();
        assert_eq!(
            journey.created_at,
            Timestamp::from_micros(1_700_000_000_000_000)
        );
        assert_eq!(
            journey.stored_at,
            Timestamp::from_micros(1_700_000_000_500_000)
        );
        assert_eq!((journey.decided_at, journey.paid_at), (None, None));
    }
}
