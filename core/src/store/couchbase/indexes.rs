//! The secondary indexes behind every list the store serves: their definitions, the one
//! place that creates, builds and waits for them (`ordersctl store init`, run once per
//! deploy by a user with Query Manage Index), and the check every other role makes at
//! start (it reads `system:indexes`, it never creates anything).
//!
//! Each list is an equality on `ns` (the run's key prefix), equalities on its filter, and
//! an `ORDER BY … LIMIT`; its index has exactly those keys in that order, so the planner
//! pushes the filter, the order and the limit into one index range scan (no sort).

use super::{keyspace, CouchbaseConfig};
use crate::store::StoreError;
use ::couchbase::cluster::Cluster;
use ::couchbase::options::query_options::QueryOptions;
use futures::TryStreamExt;
use serde_json::json;
use std::time::{Duration, Instant};

/// One secondary index: partial (on the document `type`, mostly), over `keys` in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexDefinition {
    pub name: &'static str,
    /// The documents it holds: its `WHERE` (`type = "order"`, ...).
    pub condition: &'static str,
    /// Index keys, each a field name with ` DESC` when descending.
    pub keys: &'static [&'static str],
}

/// Every index a statement of the store uses.
pub const INDEXES: &[IndexDefinition] = &[
    IndexDefinition {
        name: "idx_orders_latest",
        condition: "type = \"order\"",
        keys: &["ns", "order_id DESC"],
    },
    IndexDefinition {
        name: "idx_orders_arrival",
        condition: "type = \"order\"",
        keys: &["ns", "processed_us DESC", "order_id DESC"],
    },
    IndexDefinition {
        name: "idx_orders_country_arrival",
        condition: "type = \"order\"",
        keys: &["ns", "country", "processed_us DESC", "order_id DESC"],
    },
    IndexDefinition {
        name: "idx_orders_status_arrival",
        condition: "type = \"order\"",
        keys: &["ns", "status", "processed_us DESC", "order_id DESC"],
    },
    IndexDefinition {
        name: "idx_orders_fraud_arrival",
        condition: "type = \"order\"",
        keys: &["ns", "fraud", "processed_us DESC", "order_id DESC"],
    },
    IndexDefinition {
        name: "idx_orders_payment_arrival",
        condition: "type = \"order\"",
        keys: &["ns", "payment_status", "processed_us DESC", "order_id DESC"],
    },
    // The per-minute windows: a range of creation times, covering (the country and the
    // amount are read from the index, no document fetched).
    IndexDefinition {
        name: "idx_orders_created_minute",
        condition: "type = \"order\"",
        keys: &["ns", "created_us", "country", "amount_cents"],
    },
    IndexDefinition {
        name: "idx_alerts_latest",
        condition: "type = \"alert\"",
        keys: &["ns", "order_id DESC"],
    },
    IndexDefinition {
        name: "idx_alerts_arrival",
        condition: "type = \"alert\"",
        keys: &["ns", "stored_us DESC", "order_id DESC"],
    },
    IndexDefinition {
        name: "idx_payments_latest",
        condition: "type = \"payment\"",
        keys: &["ns", "order_id DESC"],
    },
    IndexDefinition {
        name: "idx_payments_arrival",
        condition: "type = \"payment\"",
        keys: &["ns", "stored_us DESC", "order_id DESC"],
    },
    // Canary journeys: every stage document of a canary, grouped by id, highest first
    // (covering: the stages' times are read from the index).
    IndexDefinition {
        name: "idx_canary_stages",
        condition: "type = \"canary_stage\"",
        keys: &[
            "ns",
            "order_id DESC",
            "stage",
            "at_us",
            "created_us",
            "flagged",
        ],
    },
    // The records an earlier layout wrote, with what they add to the totals (covering;
    // see `migration`): new records carry `position`, so they never enter it.
    IndexDefinition {
        name: super::migration::BASE_INDEX,
        condition: super::migration::BASE_CONDITION,
        keys: &["ns", "type", "country", "status", "amount_cents"],
    },
];

/// Indexes earlier versions created that no statement uses any more (the aggregates
/// behind the totals, which counters replaced; a creation-time order nothing lists by; the
/// counters' recount, which the partition totals replaced). `store init` drops them, since
/// every index slows every write of its documents.
pub const OBSOLETE_INDEXES: &[&str] = &[
    "idx_orders_created",
    "idx_orders_by_country",
    "idx_orders_by_status",
    "idx_recount_pending",
];

/// The index an index name stands for.
pub fn definition(name: &str) -> Option<&'static IndexDefinition> {
    INDEXES.iter().find(|d| d.name == name)
}

/// The DDL that creates `index`, deferred (built by [`build_statement`], all at once, so
/// the index service scans the bucket once for all of them). `IF NOT EXISTS` makes it
/// safe to run again.
pub fn create_statement(bucket: &str, index: &IndexDefinition) -> String {
    format!(
        "CREATE INDEX IF NOT EXISTS {} ON {}({}) WHERE {} WITH {{\"defer_build\": true}}",
        index.name,
        keyspace(bucket),
        index.keys.join(", "),
        index.condition
    )
}

/// Builds the deferred indexes named.
pub fn build_statement(bucket: &str, names: &[&str]) -> String {
    format!("BUILD INDEX ON {}({})", keyspace(bucket), names.join(", "))
}

pub fn drop_statement(bucket: &str, name: &str) -> String {
    format!("DROP INDEX IF EXISTS {name} ON {}", keyspace(bucket))
}

/// Indexes on `$bucket`'s default collection, in either shape `system:indexes` lists them:
/// made `ON bucket` (no `bucket_id`), or `ON bucket._default._default` (as the SDK's own
/// index manager asks).
const ON_BUCKET: &str = "((i.keyspace_id = $bucket AND i.bucket_id IS MISSING) OR \
     (i.bucket_id = $bucket AND i.scope_id = \"_default\" AND i.keyspace_id = \"_default\"))";

/// The state of the store's indexes of `$bucket` (default collection), by name.
pub fn state_statement() -> String {
    format!(
        "SELECT i.name, i.state FROM system:indexes AS i WHERE {ON_BUCKET} AND i.name IN $names"
    )
}

/// The indexes that are not online, with their state (`missing` when absent), in
/// [`INDEXES`] order.
pub fn not_online(states: &[(String, String)]) -> Vec<(&'static str, String)> {
    INDEXES
        .iter()
        .filter_map(|d| match states.iter().find(|(name, _)| name == d.name) {
            Some((_, state)) if state == "online" => None,
            Some((_, state)) => Some((d.name, state.clone())),
            None => Some((d.name, "missing".to_owned())),
        })
        .collect()
}

/// The error every role but `store init` reports while indexes are not online.
pub fn not_ready_error(missing: &[(&'static str, String)]) -> StoreError {
    let names: Vec<String> = missing
        .iter()
        .map(|(name, state)| format!("{name} ({state})"))
        .collect();
    StoreError::Unavailable(format!(
        "couchbase indexes not ready: {}; run `ordersctl store init` once per deploy (with \
         a user holding Query Manage Index on the bucket), or wait for it to finish",
        names.join(", ")
    ))
}

async fn run(
    cluster: &Cluster,
    config: &CouchbaseConfig,
    statement: String,
    params: Vec<(&str, serde_json::Value)>,
) -> Result<Vec<serde_json::Value>, StoreError> {
    rows(cluster, config, statement, params, QueryOptions::new()).await
}

/// The rows of one statement, within the store's query deadline.
pub(super) async fn rows(
    cluster: &Cluster,
    config: &CouchbaseConfig,
    statement: String,
    params: Vec<(&str, serde_json::Value)>,
    options: QueryOptions,
) -> Result<Vec<serde_json::Value>, StoreError> {
    let mut options = options.server_timeout(config.query_timeout);
    for (name, value) in params {
        options = options
            .add_named_parameter(name, value)
            .map_err(|e| super::store_error(&e))?;
    }
    let rows = async {
        let mut result = cluster.query(statement, options).await?;
        result
            .rows::<serde_json::Value>()
            .try_collect::<Vec<_>>()
            .await
    };
    super::deadline("index statement", config.query_timeout, rows)
        .await?
        .map_err(|e| super::store_error(&e))
}

/// The state of every index of [`INDEXES`] (by reading `system:indexes`).
pub async fn states(
    config: &CouchbaseConfig,
    cluster: &Cluster,
) -> Result<Vec<(String, String)>, StoreError> {
    let names: Vec<&str> = INDEXES.iter().map(|d| d.name).collect();
    let rows = run(
        cluster,
        config,
        state_statement(),
        vec![("bucket", json!(config.bucket)), ("names", json!(names))],
    )
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some((
                r["name"].as_str()?.to_owned(),
                r["state"].as_str()?.to_owned(),
            ))
        })
        .collect())
}

/// Checks that every index is online; the error names those that are not.
pub async fn check_online(config: &CouchbaseConfig, cluster: &Cluster) -> Result<(), StoreError> {
    let missing = not_online(&states(config, cluster).await?);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(not_ready_error(&missing))
    }
}

/// What `store init` did to the indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexReport {
    /// Indexes built by this run (the others were online already).
    pub built: Vec<&'static str>,
    /// Obsolete indexes dropped.
    pub dropped: Vec<&'static str>,
    pub waited: Duration,
}

/// Creates the missing indexes deferred, builds every one not yet built in one
/// `BUILD INDEX`, drops the obsolete ones, and waits until all are online (at most
/// `limit`). Idempotent: a second run finds everything online and does nothing.
pub async fn init(
    config: &CouchbaseConfig,
    cluster: &Cluster,
    limit: Duration,
) -> Result<IndexReport, StoreError> {
    let start = Instant::now();
    let mut report = IndexReport::default();
    let states_now = states(config, cluster).await?;
    let pending = not_online(&states_now);
    for (name, state) in &pending {
        if state == "missing" {
            if let Some(d) = definition(name) {
                run(cluster, config, create_statement(&config.bucket, d), vec![]).await?;
            }
        }
    }
    // Indexes created (or left deferred by an interrupted run) need a build; those
    // already building or online do not.
    let to_build: Vec<&'static str> = not_online(&states(config, cluster).await?)
        .into_iter()
        .filter(|(_, state)| matches!(state.as_str(), "deferred" | "created"))
        .map(|(name, _)| name)
        .collect();
    if !to_build.is_empty() {
        run(
            cluster,
            config,
            build_statement(&config.bucket, &to_build),
            vec![],
        )
        .await?;
    }
    report.built = pending.iter().map(|(name, _)| *name).collect();
    for name in OBSOLETE_INDEXES {
        let present = run(
            cluster,
            config,
            format!(
                "SELECT RAW i.name FROM system:indexes AS i WHERE {ON_BUCKET} AND i.name = $name"
            ),
            vec![("bucket", json!(config.bucket)), ("name", json!(name))],
        )
        .await?;
        if !present.is_empty() {
            run(
                cluster,
                config,
                drop_statement(&config.bucket, name),
                vec![],
            )
            .await?;
            report.dropped.push(name);
        }
    }
    loop {
        let missing = not_online(&states(config, cluster).await?);
        if missing.is_empty() {
            break;
        }
        if start.elapsed() >= limit {
            return Err(not_ready_error(&missing));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    report.waited = start.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_is_deferred_idempotent_and_partial_by_type() {
        let d = definition("idx_orders_country_arrival").unwrap();
        assert_eq!(
            create_statement("order_analytics", d),
            "CREATE INDEX IF NOT EXISTS idx_orders_country_arrival ON `order_analytics`(ns, \
             country, processed_us DESC, order_id DESC) WHERE type = \"order\" \
             WITH {\"defer_build\": true}"
        );
        assert_eq!(
            build_statement("b", &["idx_a", "idx_b"]),
            "BUILD INDEX ON `b`(idx_a, idx_b)"
        );
        assert_eq!(
            drop_statement("b", "idx_orders_created"),
            "DROP INDEX IF EXISTS idx_orders_created ON `b`"
        );
        for obsolete in OBSOLETE_INDEXES {
            assert!(
                definition(obsolete).is_none(),
                "{obsolete} is still defined"
            );
        }
    }

    /// The compose stack's init script (its image has no `ordersctl`) creates exactly
    /// these indexes and drops the obsolete ones.
    #[test]
    fn the_compose_init_script_creates_the_same_indexes() {
        let script = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../ops/compose/couchbase-init.sh"
        ))
        .unwrap();
        for d in INDEXES {
            let ddl = format!(
                "CREATE INDEX IF NOT EXISTS {} ON $B({}) WHERE {}\"",
                d.name,
                d.keys.join(", "),
                d.condition.replace('"', "\\\"")
            );
            assert!(script.contains(&ddl), "{ddl}");
        }
        assert_eq!(
            script.matches("\"CREATE INDEX IF NOT EXISTS").count(),
            INDEXES.len()
        );
        for name in OBSOLETE_INDEXES {
            assert!(
                script.contains(&format!("DROP INDEX IF EXISTS {name} ON $B")),
                "{name}"
            );
        }
        // The totals collection, and the directory `store init` writes on a new bucket.
        let collection = super::super::documents::TOTALS_COLLECTION;
        assert!(script.contains(&format!(
            "\"CREATE COLLECTION IF NOT EXISTS $B._default.{collection}\""
        )));
        let line = script
            .lines()
            .find(|l| l.starts_with("directory=\"INSERT INTO"))
            .expect("the directory's insert");
        assert!(line.contains(&format!(
            "$B._default.{collection} (KEY, VALUE) VALUES (\\\"totals\\\", "
        )));
        let value = line
            .split_once("VALUES (\\\"totals\\\", ")
            .and_then(|(_, v)| v.strip_suffix(")\""))
            .expect("the directory's value")
            .replace("\\\"", "\"");
        let doc: serde_json::Value = serde_json::from_str(&value).unwrap();
        assert_eq!(doc["type"], "totals_directory");
        assert_eq!(doc["ns"], "");
        let dir: super::super::totals::Directory = serde_json::from_value(doc).unwrap();
        assert_eq!(dir, super::super::totals::Directory::default());
        assert_eq!(super::super::totals::directory_key(""), "totals");
    }

    /// An index made `ON bucket` or `ON bucket._default._default` is found either way.
    #[test]
    fn the_index_state_is_read_in_both_shapes_of_system_indexes() {
        let s = state_statement();
        assert!(
            s.contains("(i.keyspace_id = $bucket AND i.bucket_id IS MISSING)"),
            "{s}"
        );
        assert!(
            s.contains(
                "(i.bucket_id = $bucket AND i.scope_id = \"_default\" AND i.keyspace_id = \"_default\")"
            ),
            "{s}"
        );
        assert!(s.ends_with("AND i.name IN $names"), "{s}");
    }

    #[test]
    fn indexes_not_online_are_named_with_their_state() {
        let states = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .collect()
        };
        let all_online: Vec<(String, String)> = INDEXES
            .iter()
            .map(|d| (d.name.to_owned(), "online".to_owned()))
            .collect();
        assert!(not_online(&all_online).is_empty());
        let mut some = all_online.clone();
        some.retain(|(n, _)| n != "idx_orders_fraud_arrival");
        some.iter_mut()
            .filter(|(n, _)| n == "idx_alerts_arrival")
            .for_each(|(_, s)| *s = "building".into());
        let missing = not_online(&some);
        assert_eq!(
            missing,
            vec![
                ("idx_orders_fraud_arrival", "missing".to_owned()),
                ("idx_alerts_arrival", "building".to_owned()),
            ]
        );
        let e = not_ready_error(&missing).to_string();
        assert!(
            e.contains(
                "indexes not ready: idx_orders_fraud_arrival (missing), idx_alerts_arrival \
                 (building)"
            ),
            "{e}"
        );
        assert!(e.contains("ordersctl store init"), "{e}");
        assert_eq!(not_online(&states(&[])).len(), INDEXES.len());
    }
}
