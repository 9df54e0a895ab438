//! `ordersctl store init`: creates the totals collection, creates and builds the Couchbase
//! indexes every list of the store needs, drops obsolete ones, waits until all are online,
//! and sums what an earlier layout stored into the totals' base. Run once per deploy
//! by a user with Query Manage Index on the bucket (docs/deploy.md); the daemons and the
//! api only check the indexes, and wait while they are not online.

use clap::{Args, Subcommand};
use orders_core::config::Durability;
use orders_core::config::StoreArgs;
use orders_core::store::couchbase::init_store;
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
    /// Creates the totals collection, creates, builds and waits for the Couchbase indexes,
    /// then writes the totals directory with what an earlier layout stored (idempotent;
    /// exits 0 when everything is in place, 2 on a bad setting, 4 when Couchbase is
    /// unreachable or the indexes are not online in time, 6 when the bucket cannot take a
    /// write at COUCHBASE_DURABILITY, with what to change).
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
            if let Some(problem) = &report.durability_problem {
                eprintln!(
                    "ordersctl store init: bucket {} cannot take a write at \
                     COUCHBASE_DURABILITY={}: {problem}",
                    config.bucket,
                    durability_name(args.store.couchbase_durability)
                );
                return ExitCode::from(6);
            }
            let (indexes, migration) = (&report.indexes, &report.migration);
            eprintln!(
                "ordersctl store init: every index online on bucket {} after {:.0?} (built: \
                 {}; dropped: {}); totals collection {}; {} records of an earlier layout in the \
                 totals' base{}",
                config.bucket,
                indexes.waited,
                list(&indexes.built),
                list(&indexes.dropped),
                if report.created_collection {
                    "created"
                } else {
                    "present"
                },
                migration.earlier_records,
                if migration.changed {
                    " (updated)"
                } else {
                    " (unchanged)"
                },
            );
            ExitCode::SUCCESS
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
