//! `ordersctl store init`: creates and builds the Couchbase indexes every list of the
//! store needs, drops obsolete ones, waits until all are online, and recounts documents an
//! earlier version stored before the counter documents. Run once per deploy
//! by a user with Query Manage Index on the bucket (docs/deploy.md); the daemons and the
//! api only check the indexes, and wait while they are not online.

use clap::{Args, Subcommand};
use orders_core::config::Durability;
use orders_core::config::StoreArgs;
use orders_core::store::couchbase::{init_store, BucketDurability};
use orders_core::store::CouchbaseConfig;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct StoreCommandArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum StoreCommand {
    /// Creates, builds and waits for the Couchbase indexes, then recounts what an earlier
    /// version stored without counters (idempotent; exits 0 when every index is online and
    /// every document counted, 2 on a bad setting, 4 when Couchbase is unreachable or the
    /// indexes are not online in time, 5 when documents could not be counted, 6 when the
    /// bucket's minimum durability is below COUCHBASE_DURABILITY).
    Init(InitArgs),
}

#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Longest wait for the indexes to be built, in seconds.
    #[arg(long, env = "ORDERS_STORE_INIT_TIMEOUT_SECONDS", default_value_t = 1_800,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout_seconds: u64,
}

pub fn run(args: StoreCommandArgs) -> ExitCode {
    crate::init_logging("warn");
    let StoreCommand::Init(args) = args.command;
    let config = match CouchbaseConfig::from_store_args(&args.store) {
        Ok(Some(config)) => config,
        Ok(None) => {
            eprintln!(
                "ordersctl store init: COUCHBASE_HOST is not set; the embedded store needs no \
                 init"
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("ordersctl store init: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ordersctl store init: {e}");
            return ExitCode::FAILURE;
        }
    };
    let limit = Duration::from_secs(args.timeout_seconds);
    match runtime.block_on(init_store(&config, limit)) {
        Ok(report) => {
            let wanted = args.store.couchbase_durability;
            match &report.durability {
                BucketDurability::Enough => {}
                BucketDurability::Below(level) => {
                    eprintln!(
                        "ordersctl store init: bucket {}'s minimum durability level is {level}, \
                         below COUCHBASE_DURABILITY={}: the Couchbase SDK sends no durability \
                         level with sub-document writes (the totals' counters), so the bucket's \
                         minimum is what makes them durable. Raise it (Capella: the bucket's \
                         settings, Durability Level; self-managed: couchbase-cli bucket-edit \
                         --bucket {} --durability-min-level majority), or set \
                         COUCHBASE_DURABILITY=none to accept losing acknowledged writes on a \
                         failover. Nothing was changed.",
                        config.bucket,
                        durability_name(wanted),
                        config.bucket
                    );
                    return ExitCode::from(6);
                }
                BucketDurability::Unverified(why) => eprintln!(
                    "ordersctl store init: warning: could not read bucket {}'s minimum \
                     durability level ({why}); sub-document writes are durable only if it is at \
                     least {} (docs/deploy.md, Durability)",
                    config.bucket,
                    durability_name(wanted)
                ),
            }
            let (indexes, recount) = (&report.indexes, &report.recount);
            eprintln!(
                "ordersctl store init: every index online on bucket {} after {:.0?} (built: \
                 {}; dropped: {}); {} documents of an earlier version recounted",
                config.bucket,
                indexes.waited,
                list(&indexes.built),
                list(&indexes.dropped),
                recount.recounted,
            );
            if recount.unreadable.is_empty() {
                return ExitCode::SUCCESS;
            }
            eprintln!(
                "ordersctl store init: {} documents could not be counted and are not in the \
                 totals; fix or remove them, then run it again:",
                recount.unreadable.len()
            );
            for (key, why) in recount.unreadable.iter().take(20) {
                eprintln!("  {key}: {why}");
            }
            ExitCode::from(5)
        }
        Err(e) => {
            eprintln!("ordersctl store init: {e}");
            ExitCode::from(4)
        }
    }
}

/// The name `COUCHBASE_DURABILITY` takes for `level`.
fn durability_name(level: Durability) -> String {
    clap::ValueEnum::to_possible_value(&level)
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}
