//! What the Couchbase tests share: the cluster they run against, when one is configured.

use orders_core::config::{couchbase_connection_string, Durability, Secret};
use orders_core::store::CouchbaseConfig;

/// The store's settings for `bucket` on the cluster of `COUCHBASE_CONNSTR` (a host or a
/// connection string), `COUCHBASE_USERNAME` and `COUCHBASE_PASSWORD`; `None` when no cluster
/// is configured, after saying on the real stderr (past the harness's capture, so every
/// run shows it) that `what` was skipped.
pub fn couchbase_config(bucket: String, what: &str) -> Option<CouchbaseConfig> {
    let Some(host) = std::env::var("COUCHBASE_CONNSTR")
        .ok()
        .filter(|s| !s.is_empty())
    else {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {what}: set COUCHBASE_CONNSTR (with COUCHBASE_USERNAME, \
             COUCHBASE_PASSWORD, COUCHBASE_BUCKET, COUCHBASE_DURABILITY) to run it against a \
             cluster (one node with a bucket of 0 replicas meets the default, majority)"
        );
        return None;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let mut config = CouchbaseConfig::new(
        couchbase_connection_string(&host),
        bucket,
        var("COUCHBASE_USERNAME"),
        Secret::new(var("COUCHBASE_PASSWORD")),
    );
    if let Ok(level) = std::env::var("COUCHBASE_DURABILITY") {
        config.durability = <Durability as clap::ValueEnum>::from_str(&level, true)
            .unwrap_or_else(|e| panic!("COUCHBASE_DURABILITY={level:?}: {e}"));
    }
    Some(config)
}
