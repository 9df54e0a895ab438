//! Prometheus metrics of the API (requests by route and status, a latency histogram, store
//! errors, refused credentials, clients over their rate) and of the pipeline (the `Progress` counters, when this process runs it), in
//! the text exposition format.

use crate::error::AuthFailure;
use crate::error::StoreFailed;
use crate::lag::LagSnapshot;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use orders_core::domain::DecodeError;
use orders_core::progress::{GroupCounters, HistogramSnapshot, Progress, DURATION_BUCKETS};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    /// Non-cumulative counts per bucket; the last one is +Inf.
    buckets: [u64; BUCKETS.len() + 1],
    sum_seconds: f64,
    count: u64,
}

/// What the API counts about itself.
#[derive(Default)]
pub struct Metrics {
    routes: Mutex<BTreeMap<String, RouteStats>>,
    store_errors: AtomicU64,
    /// Requests refused 401, by [`AuthFailure::reason`].
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    rate_limited: AtomicU64,
    overloaded: AtomicU64,
    /// How the api authenticates ([`crate::auth::Access::mode`]); unset until a router is built.
    auth_mode: Mutex<Option<&'static str>>,
}

impl Metrics {
    pub fn record(&self, route: &str, status: u16, seconds: f64, store_failed: bool) {
        if store_failed {
            self.store_errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let stats = match routes.get_mut(route) {
            Some(s) => s,
            None => routes.entry(route.to_owned()).or_default(),
        };
        *stats.by_status.entry(status).or_default() += 1;
        let bucket = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        stats.buckets[bucket] += 1;
        stats.sum_seconds += seconds;
        stats.count += 1;
    }

    /// Counts a request that was refused 401 for `why`.
    pub fn record_auth_failure(&self, why: AuthFailure) {
        let mut failures = self.auth_failures.lock().unwrap_or_else(|e| e.into_inner());
        *failures.entry(why.reason()).or_default() += 1;
    }

    /// Notes how the api authenticates, for `orders_api_auth_mode`.
    pub fn set_auth_mode(&self, mode: &'static str) {
        *self.auth_mode.lock().unwrap_or_else(|e| e.into_inner()) = Some(mode);
    }

    pub fn store_errors(&self) -> u64 {
        self.store_errors.load(Ordering::Relaxed)
    }

    /// The text exposition of everything known.
    pub fn render(&self, progress: Option<&Progress>, lag: Option<&LagSnapshot>) -> String {
        let mut out = String::with_capacity(4096);
        self.render_routes(&mut out);
        let _ = writeln!(
            out,
            "# HELP orders_api_store_errors_total Requests that failed because the store did.\n\
             # TYPE orders_api_store_errors_total counter\n\
             orders_api_store_errors_total {}",
            self.store_errors()
        );
        self.render_auth_failures(&mut out);
        let _ = writeln!(
            out,
            "# HELP orders_api_rate_limited_total Requests refused 429: the client was over its rate.\n\
             # TYPE orders_api_rate_limited_total counter\n\
             orders_api_rate_limited_total {}\n\
             # HELP orders_api_overloaded_total Requests refused 503: too many in flight.\n\
             # TYPE orders_api_overloaded_total counter\n\
             orders_api_overloaded_total {}",
            self.rate_limited.load(Ordering::Relaxed),
            self.overloaded.load(Ordering::Relaxed)
        );
        self.render_auth_mode(&mut out);
        if let Some(lag) = lag {
            render_lag(&mut out, lag);
        }
        if let Some(p) = progress {
            render_progress(&mut out, p);
        }
        out
    }
}

impl Metrics {
    /// Requests answered, by route and status, and their durations by route.
    fn render_routes(&self, out: &mut String) {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str(
            "# HELP orders_api_requests_total HTTP requests answered, by route and status.\n\
             # TYPE orders_api_requests_total counter\n",
        );
        for (route, s) in routes.iter() {
            for (status, n) in &s.by_status {
                let _ = writeln!(
                    out,
                    "orders_api_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    label(route)
                );
            }
        }
        out.push_str(
            "# HELP orders_api_request_duration_seconds Time to answer a request, by route.\n\
             # TYPE orders_api_request_duration_seconds histogram\n",
        );
        for (route, s) in routes.iter() {
            let route = label(route);
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += s.buckets[i];
                let _ = writeln!(
                    out,
                    "orders_api_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "orders_api_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\n\
                 orders_api_request_duration_seconds_sum{{route=\"{route}\"}} {}\n\
                 orders_api_request_duration_seconds_count{{route=\"{route}\"}} {}",
                s.count, s.sum_seconds, s.count
            );
        }
    }

    /// Requests refused 401, by reason.
    fn render_auth_failures(&self, out: &mut String) {
        out.push_str(
            "# HELP orders_api_auth_failures_total Requests refused 401, by reason (missing, bad_token, bad_identity).\n\
             # TYPE orders_api_auth_failures_total counter\n",
        );
        let failures = self.auth_failures.lock().unwrap_or_else(|e| e.into_inner());
        for reason in ["missing", "bad_token", "bad_identity"] {
            let n = failures.get(reason).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "orders_api_auth_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
    }

    /// `orders_api_auth_mode`: 1 for the mode in force, so a dashboard shows an open api.
    fn render_auth_mode(&self, out: &mut String) {
        let Some(mode) = *self.auth_mode.lock().unwrap_or_else(|e| e.into_inner()) else {
            return;
        };
        out.push_str(
            "# HELP orders_api_auth_mode 1 for how the api authenticates: required (tokens or sign-in), local (loopback, no credentials), open (ORDERS_API_AUTH=none).\n\
             # TYPE orders_api_auth_mode gauge\n",
        );
        for m in crate::auth::Access::MODES {
            let _ = writeln!(
                out,
                "orders_api_auth_mode{{mode=\"{m}\"}} {}",
                u8::from(m == mode)
            );
        }
    }
}

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_lag(out: &mut String, lag: &LagSnapshot) {
    out.push_str(
        "# HELP orders_consumer_lag_records Records not yet consumed, by group.\n\
         # TYPE orders_consumer_lag_records gauge\n",
    );
    for g in &lag.groups {
        let _ = writeln!(
            out,
            "orders_consumer_lag_records{{group=\"{}\"}} {}",
            label(&g.lag.group),
            g.lag.total()
        );
    }
    out.push_str(
        "# HELP orders_consumer_lag_seconds Age of the oldest unconsumed record, by group.\n\
         # TYPE orders_consumer_lag_seconds gauge\n",
    );
    for g in &lag.groups {
        if let Some(s) = g.lag.max_lag_seconds() {
            let _ = writeln!(
                out,
                "orders_consumer_lag_seconds{{group=\"{}\"}} {s}",
                label(&g.lag.group)
            );
        }
    }
    out.push_str(
        "# HELP orders_consumer_status 1 for the group's current status (OK, WARN, STALL, STOP).\n\
         # TYPE orders_consumer_status gauge\n",
    );
    for g in &lag.groups {
        for s in ["OK", "WARN", "STALL", "STOP"] {
            let on = u8::from(g.verdict.status.as_str() == s);
            let _ = writeln!(
                out,
                "orders_consumer_status{{group=\"{}\",status=\"{s}\"}} {on}",
                label(&g.lag.group)
            );
        }
    }
}

/// Picks one counter of a group.
type CounterOf = fn(&GroupCounters) -> &AtomicU64;

/// The pipeline's metrics (the [`Progress`] of this process), in the text exposition
/// format: the one definition both the api's `/metrics` and every daemon's ops `/metrics`
/// render.
pub fn render_pipeline(p: &Progress) -> String {
    let mut out = String::with_capacity(8192);
    render_progress(&mut out, p);
    out
}

pub(crate) fn render_histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (bound, n) in DURATION_BUCKETS.iter().zip(&h.cumulative) {
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
    }
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}\n{name}_sum{braces} {}\n{name}_count{braces} {}",
        h.count, h.sum_seconds, h.count
    );
}

/// The ingest role's metrics, when this process runs it.
fn render_ingest(out: &mut String, p: &Progress) {
    let i = &p.ingest;
    if !i.active.load(Ordering::Relaxed) {
        return;
    }
    let get = GroupCounters::get;
    let _ = writeln!(
        out,
        "# HELP orders_ingest_rows_published_total Rows of the orders table published to the orders topic and acknowledged by Kafka.\n\
         # TYPE orders_ingest_rows_published_total counter\n\
         orders_ingest_rows_published_total {}\n\
         # HELP orders_ingest_transactions_total Committed transactions published and confirmed on the replication slot.\n\
         # TYPE orders_ingest_transactions_total counter\n\
         orders_ingest_transactions_total {}",
        get(&i.rows_published),
        get(&i.transactions)
    );
    out.push_str(
        "# HELP orders_ingest_dead_lettered_total Rows sent to the dead-letter topic, by reason.\n\
         # TYPE orders_ingest_dead_lettered_total counter\n",
    );
    for (reason, n) in DecodeError::CODES.iter().zip(&i.dead_lettered_by_reason) {
        let _ = writeln!(
            out,
            "orders_ingest_dead_lettered_total{{reason=\"{reason}\"}} {}",
            get(n)
        );
    }
    out.push_str(
        "# HELP orders_ingest_refused_changes_total Updates and deletes of the table's rows not published (the orders topic and the store keep the row as inserted), each dead-lettered as source-update or source-delete.\n\
         # TYPE orders_ingest_refused_changes_total counter\n",
    );
    for (kind, n) in orders_core::progress::REFUSED_CHANGE_KINDS
        .iter()
        .zip(&i.refused_changes)
    {
        let _ = writeln!(
            out,
            "orders_ingest_refused_changes_total{{kind=\"{kind}\"}} {}",
            get(n)
        );
    }
    let (state, _) = i.postgres_state();
    let _ = writeln!(
        out,
        "# HELP orders_ingest_postgres_up 1 while the database answers the ingest role.\n\
         # TYPE orders_ingest_postgres_up gauge\n\
         orders_ingest_postgres_up {}",
        u8::from(state == "ok")
    );
    let lag = i.lag_bytes.load(Ordering::Relaxed);
    if lag >= 0 {
        let _ = writeln!(
            out,
            "# HELP orders_ingest_lag_bytes Bytes of the database's log not yet published (the slot's confirmed position to the current one).\n\
             # TYPE orders_ingest_lag_bytes gauge\n\
             orders_ingest_lag_bytes {lag}"
        );
    }
    render_ingest_slot(out, i);
}

/// The replication slot's log retention, as the ingest's watcher last measured it.
fn render_ingest_slot(out: &mut String, i: &orders_core::progress::IngestCounters) {
    let _ = writeln!(
        out,
        "# HELP orders_ingest_dead_letters_refused_total Dead letters Kafka refused for good (each row is logged with its key, table and log position).\n\
         # TYPE orders_ingest_dead_letters_refused_total counter\n\
         orders_ingest_dead_letters_refused_total {}",
        i.dead_letters_refused.load(Ordering::Relaxed)
    );
    if let Some(state) = i.slot_state() {
        out.push_str(
            "# HELP orders_ingest_slot_wal_status The replication slot's wal_status (1 for the current one): reserved, extended, unreserved (removed at the next checkpoint), lost (the slot is invalidated).\n\
             # TYPE orders_ingest_slot_wal_status gauge\n",
        );
        for s in orders_core::progress::WAL_STATUSES {
            let _ = writeln!(
                out,
                "orders_ingest_slot_wal_status{{status=\"{s}\"}} {}",
                u8::from(s == state)
            );
        }
    }
    let safe = i.safe_wal_bytes.load(Ordering::Relaxed);
    if safe != i64::MIN {
        let _ = writeln!(
            out,
            "# HELP orders_ingest_slot_safe_wal_bytes Log that can still be written before the slot risks invalidation (safe_wal_size; absent without max_slot_wal_keep_size).\n\
             # TYPE orders_ingest_slot_safe_wal_bytes gauge\n\
             orders_ingest_slot_safe_wal_bytes {safe}"
        );
    }
    let gauges = [
        (
            "orders_ingest_slot_retained_bytes",
            "Log the server keeps for the slot (from its restart position).",
            &i.retained_bytes,
        ),
        (
            "orders_ingest_slot_oldest_retained_seconds",
            "Age of the oldest log the slot keeps: how long the slot has been pinned.",
            &i.oldest_retained_seconds,
        ),
    ];
    for (name, help, gauge) in gauges {
        let v = gauge.load(Ordering::Relaxed);
        if v >= 0 {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
    }
}

/// The pipeline's metrics: the ingest's, then the producer's and each group's, then the
/// store's and the latency.
fn render_progress(out: &mut String, p: &Progress) {
    render_ingest(out, p);
    let _ = writeln!(
        out,
        "# HELP orders_pipeline_orders_produced_total Orders produced by this process.\n\
         # TYPE orders_pipeline_orders_produced_total counter\n\
         orders_pipeline_orders_produced_total {}",
        GroupCounters::get(&p.orders_produced)
    );
    let groups = [
        (orders_core::kafka::FRAUD_GROUP, &p.fraud),
        (orders_core::kafka::PAYMENTS_GROUP, &p.payments),
        (orders_core::kafka::ANALYTICS_GROUP, &p.analytics),
    ];
    render_group_counters(out, &groups);
    render_group_records(out, &groups);
    render_group_partitions(out, &groups);
    render_process(out, p);
    render_process_counters(out, p);
}

/// The consumer groups this process is a member of, by name.
type Groups<'a> = [(&'static str, &'a GroupCounters); 3];

/// One counter of each group per kind: consumed, done, decode errors, rebalances …
fn render_group_counters(out: &mut String, groups: &Groups) {
    let get = GroupCounters::get;
    let per_group: [(&str, &str, CounterOf); 6] = [
        ("consumed", "Records received from Kafka.", |g| &g.consumed),
        (
            "done",
            "Records whose effect is durable and offset stored.",
            |g| &g.done,
        ),
        ("orders_done", "Orders-topic records among done.", |g| {
            &g.orders_done
        }),
        (
            "decode_errors",
            "Records that could not be decoded (each is dead-lettered).",
            |g| &g.decode_errors,
        ),
        (
            "rebalances",
            "Rebalances this member took part in (assignments and revocations).",
            |g| &g.rebalances,
        ),
        (
            "produced",
            "Records produced (alerts, payments, totals).",
            |g| &g.produced,
        ),
    ];
    for (name, help, field) in per_group {
        let _ = writeln!(
            out,
            "# HELP orders_pipeline_{name}_total {help}\n# TYPE orders_pipeline_{name}_total counter"
        );
        for (group, counters) in groups {
            let _ = writeln!(
                out,
                "orders_pipeline_{name}_total{{group=\"{group}\"}} {}",
                get(field(counters))
            );
        }
    }
}

/// Each group's dead letters by reason, and its chunk durations.
fn render_group_records(out: &mut String, groups: &Groups) {
    let get = GroupCounters::get;
    out.push_str(
        "# HELP orders_pipeline_dead_lettered_total Records sent to a dead-letter topic, by reason.\n\
         # TYPE orders_pipeline_dead_lettered_total counter\n",
    );
    for (group, counters) in groups {
        for (reason, n) in DecodeError::CODES
            .iter()
            .zip(&counters.dead_lettered_by_reason)
        {
            let _ = writeln!(
                out,
                "orders_pipeline_dead_lettered_total{{group=\"{group}\",reason=\"{reason}\"}} {}",
                get(n)
            );
        }
    }
    out.push_str(
        "# HELP orders_pipeline_chunk_duration_seconds Records received to effects durable and offsets stored, per chunk.\n\
         # TYPE orders_pipeline_chunk_duration_seconds histogram\n",
    );
    for (group, counters) in groups {
        render_histogram(
            out,
            "orders_pipeline_chunk_duration_seconds",
            &format!("group=\"{group}\""),
            &counters.chunk_seconds.snapshot(),
        );
    }
}

/// Each group's partitions: how many assigned, and the lag on each.
fn render_group_partitions(out: &mut String, groups: &Groups) {
    let get = GroupCounters::get;
    out.push_str(
        "# HELP orders_pipeline_assigned_partitions Partitions assigned to this member now.\n\
         # TYPE orders_pipeline_assigned_partitions gauge\n",
    );
    for (group, counters) in groups {
        let _ = writeln!(
            out,
            "orders_pipeline_assigned_partitions{{group=\"{group}\"}} {}",
            get(&counters.assigned_partitions)
        );
    }
    out.push_str(
        "# HELP orders_pipeline_member_lag_records Records between this member's stored offset and the high watermark, by assigned partition.\n\
         # TYPE orders_pipeline_member_lag_records gauge\n",
    );
    for (group, counters) in groups {
        for ((topic, partition), lag) in counters.lag() {
            let _ = writeln!(
                out,
                "orders_pipeline_member_lag_records{{group=\"{group}\",topic=\"{}\",partition=\"{partition}\"}} {lag}",
                label(&topic)
            );
        }
    }
}

/// The process's loops and store: poll ages, store write times, payments in flight.
fn render_process(out: &mut String, p: &Progress) {
    out.push_str(
        "# HELP orders_pipeline_last_poll_age_seconds Seconds since the group's consumer loop last polled (it polls at least once a second while alive).\n\
         # TYPE orders_pipeline_last_poll_age_seconds gauge\n",
    );
    for (group, age) in p.liveness.poll_ages() {
        let _ = writeln!(
            out,
            "orders_pipeline_last_poll_age_seconds{{group=\"{}\"}} {}",
            label(&group),
            age.as_secs_f64()
        );
    }
    out.push_str(
        "# HELP orders_pipeline_store_write_duration_seconds Time of each store write attempt (a transaction of many records).\n\
         # TYPE orders_pipeline_store_write_duration_seconds histogram\n",
    );
    render_histogram(
        out,
        "orders_pipeline_store_write_duration_seconds",
        "",
        &p.store_write_seconds.snapshot(),
    );
    let _ = writeln!(
        out,
        "# HELP orders_pipeline_payments_in_flight Payments being simulated now.\n\
         # TYPE orders_pipeline_payments_in_flight gauge\n\
         orders_pipeline_payments_in_flight {}",
        p.payments_in_flight.load(Ordering::Relaxed)
    );
}

/// The process's counters (produce errors, records stored …) and its latency.
fn render_process_counters(out: &mut String, p: &Progress) {
    let get = GroupCounters::get;
    for (name, help, v) in [
        (
            "produce_errors",
            "Records Kafka refused (then sent again) or rejected for good.",
            &p.produce_errors,
        ),
        (
            "produce_retries",
            "Records sent again after Kafka refused them.",
            &p.produce_retries,
        ),
        (
            "orders_stored",
            "Orders newly written to the store.",
            &p.orders_stored,
        ),
        (
            "alerts_stored",
            "Fraud alerts newly written to the store.",
            &p.alerts_stored,
        ),
        (
            "payments_stored",
            "Payments newly written to the store.",
            &p.payments_stored,
        ),
        (
            "store_errors",
            "Store writes that failed and were retried.",
            &p.store_errors,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP orders_pipeline_{name}_total {help}\n\
             # TYPE orders_pipeline_{name}_total counter\n\
             orders_pipeline_{name}_total {}",
            get(v)
        );
    }
    let l = p.latency();
    let _ = writeln!(
        out,
        "# HELP orders_pipeline_latency_seconds Created to stored, over the orders stored by this process.\n\
         # TYPE orders_pipeline_latency_seconds summary\n\
         orders_pipeline_latency_seconds{{quantile=\"0.5\"}} {}\n\
         orders_pipeline_latency_seconds{{quantile=\"0.99\"}} {}\n\
         orders_pipeline_latency_seconds_count {}",
        l.p50_ms / 1000.0,
        l.p99_ms / 1000.0,
        l.count
    );
}

/// The middleware that counts every answer, under its route template (so ids do not
/// become labels) or `unmatched`.
pub async fn track(
    State(metrics): State<std::sync::Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let response = next.run(request).await;
    let store_failed = response.extensions().get::<StoreFailed>().is_some();
    if let Some(why) = response.extensions().get::<AuthFailure>() {
        metrics.record_auth_failure(*why);
    }
    match response.extensions().get::<crate::error::Refused>() {
        Some(crate::error::Refused::RateLimited) => {
            metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
        Some(crate::error::Refused::Overloaded) => {
            metrics.overloaded.fetch_add(1, Ordering::Relaxed);
        }
        None => {}
    }
    metrics.record(
        route.as_deref().unwrap_or("unmatched"),
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
        store_failed,
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_histogram_and_progress() {
        let m = Metrics::default();
        m.record("/api/orders", 200, 0.0007, false);
        m.record("/api/orders", 200, 0.2, false);
        m.record("/api/orders", 503, 0.003, true);
        let p = Progress::default();
        p.fraud.consumed.fetch_add(7, Ordering::Relaxed);
        let text = m.render(Some(&p), None);
        assert!(text.contains("orders_api_requests_total{route=\"/api/orders\",status=\"200\"} 2"));
        assert!(text.contains("orders_api_requests_total{route=\"/api/orders\",status=\"503\"} 1"));
        assert!(text.contains(
            "orders_api_request_duration_seconds_bucket{route=\"/api/orders\",le=\"0.001\"} 1"
        ));
        assert!(text.contains(
            "orders_api_request_duration_seconds_bucket{route=\"/api/orders\",le=\"0.005\"} 2"
        ));
        assert!(text.contains(
            "orders_api_request_duration_seconds_bucket{route=\"/api/orders\",le=\"+Inf\"} 3"
        ));
        assert!(text.contains("orders_api_store_errors_total 1"));
        assert!(text.contains("orders_api_auth_failures_total{reason=\"bad_token\"} 0"));
        m.record_auth_failure(AuthFailure::BadToken);
        m.record_auth_failure(AuthFailure::BadToken);
        m.record_auth_failure(AuthFailure::Missing);
        let text = m.render(Some(&p), None);
        assert!(text.contains("orders_api_auth_failures_total{reason=\"bad_token\"} 2"));
        assert!(text.contains("orders_api_auth_failures_total{reason=\"missing\"} 1"));
        assert!(text.contains("orders_api_rate_limited_total 0"));
        assert!(text.contains("orders_pipeline_consumed_total{group=\"fraud-group\"} 7"));
        let invalid = DecodeError::Invalid(String::new()).code_index();
        p.payments.dead_lettered(invalid, 2);
        p.store_write_seconds
            .observe(std::time::Duration::from_millis(3));
        let text = render_pipeline(&p);
        assert!(text.contains(
            "orders_pipeline_dead_lettered_total{group=\"payments-group\",reason=\"invalid-value\"} 2"
        ));
        assert!(text.contains(
            "orders_pipeline_dead_lettered_total{group=\"payments-group\",reason=\"not-json\"} 0"
        ));
        assert!(
            text.contains("orders_pipeline_store_write_duration_seconds_bucket{le=\"0.0025\"} 0")
        );
        assert!(
            text.contains("orders_pipeline_store_write_duration_seconds_bucket{le=\"0.005\"} 1")
        );
        assert!(text.contains("orders_pipeline_store_write_duration_seconds_count 1"));
        assert!(
            !text.contains("orders_api_"),
            "the daemons' exposition has no api metrics"
        );
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
