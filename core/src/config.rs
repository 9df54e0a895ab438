//! Configuration shared by the binaries: the SPEC's environment variables, each also a flag.
//!
//! Flags win over the environment, which wins over defaults (clap's `env`). Secrets live in
//! [`Secret`], whose `Debug` and `Display` print `***`, and their env values are hidden
//! from `--help`.

use clap::Args;
use std::convert::Infallible;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A value that must never reach a log, an error message or a debug dump.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The real value, for the one place that hands it to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl FromStr for Secret {
    type Err = Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// Where Kafka is and how to authenticate.
#[derive(Debug, Clone, Default, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (host:port,...). Unset: the embedded broker of a running
    /// `ordersctl up`, whose address is read from <data-dir>/up.json; without one, an error.
    #[arg(long, global = true, env = "KAFKA_BOOTSTRAP_SERVERS")]
    pub kafka_bootstrap_servers: Option<String>,

    /// SASL PLAIN user name (Confluent Cloud API key); with the secret, SASL_SSL is used.
    #[arg(long, global = true, env = "CONFLUENT_API_KEY", hide_env_values = true)]
    pub confluent_api_key: Option<Secret>,

    /// SASL PLAIN password (Confluent Cloud API secret).
    #[arg(
        long,
        global = true,
        env = "CONFLUENT_API_SECRET",
        hide_env_values = true
    )]
    pub confluent_api_secret: Option<Secret>,

    /// The orders topic.
    #[arg(long, global = true, env = "TOPIC_NAME", default_value = "orders")]
    pub topic_name: String,
}

/// Where orders are stored.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Couchbase host or connection string. Unset: the embedded SQLite store.
    #[arg(long, global = true, env = "COUCHBASE_HOST")]
    pub couchbase_host: Option<String>,

    /// Couchbase bucket.
    #[arg(
        long,
        global = true,
        env = "COUCHBASE_BUCKET",
        default_value = "order_analytics"
    )]
    pub couchbase_bucket: String,

    /// Couchbase user name.
    #[arg(
        long,
        global = true,
        env = "COUCHBASE_USERNAME",
        hide_env_values = true
    )]
    pub couchbase_username: Option<String>,

    /// Couchbase password.
    #[arg(
        long,
        global = true,
        env = "COUCHBASE_PASSWORD",
        hide_env_values = true
    )]
    pub couchbase_password: Option<Secret>,

    /// How durable a Couchbase write must be before it is acknowledged, and so before the
    /// Kafka offset behind it is committed: `majority` (replicated to a majority of the
    /// data nodes' memory), `majority_and_persist_active` (and on the active node's disk),
    /// `persist_to_majority` (on a majority's disks), or `none` (the active node's memory
    /// only: a failover can lose acknowledged writes).
    #[arg(
        long,
        global = true,
        env = "COUCHBASE_DURABILITY",
        value_enum,
        default_value_t = Durability::Majority
    )]
    pub couchbase_durability: Durability,

    /// CA certificate(s) to trust for `couchbases://`, as a PEM file's path or the PEM text
    /// itself (a self-managed cluster with a private CA; Capella needs none).
    #[arg(long, global = true, env = "COUCHBASE_CA_CERT")]
    pub couchbase_ca_cert: Option<String>,

    /// Directory of the embedded SQLite store (used when COUCHBASE_HOST is unset).
    #[arg(long, global = true, env = "ORDERS_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
}

/// Couchbase's durability levels (`COUCHBASE_DURABILITY`), weakest first (the server, given
/// two, enforces the greater).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Durability {
    None,
    #[default]
    Majority,
    MajorityAndPersistActive,
    PersistToMajority,
}

impl Default for StoreArgs {
    fn default() -> Self {
        StoreArgs {
            couchbase_host: None,
            couchbase_bucket: "order_analytics".into(),
            couchbase_username: None,
            couchbase_password: None,
            couchbase_durability: Durability::Majority,
            couchbase_ca_cert: None,
            data_dir: PathBuf::from("data"),
        }
    }
}

impl StoreArgs {
    /// The SQLite file inside the data directory.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("orders.db")
    }
}

/// The SPEC's rule for Couchbase connection strings: TLS for Capella hosts.
pub fn couchbase_connection_string(host: &str) -> String {
    if host.starts_with("couchbase://") || host.starts_with("couchbases://") {
        host.to_owned()
    } else if host.trim_end_matches('.').ends_with("cloud.couchbase.com") {
        format!("couchbases://{host}")
    } else {
        format!("couchbase://{host}")
    }
}

/// Parses the command line; a bad flag prints one line on stderr and exits with 2.
pub fn parse_args_or_exit<T: clap::Parser>() -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || matches!(
                    e.kind(),
                    ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                )
            {
                let _ = e.print();
                std::process::exit(
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        2
                    } else {
                        0
                    },
                );
            }
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let bin = std::env::args()
                .next()
                .and_then(|a| {
                    std::path::Path::new(&a)
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                })
                .unwrap_or_default();
            eprintln!(
                "{bin}: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            std::process::exit(2);
        }
    }
}

/// Where a running `ordersctl up` can be reached; written to `<data-dir>/up.json` so other
/// processes (a second daemon, `ordersctl tui`, kcat) can attach.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpInfo {
    pub api: String,
    pub kafka: String,
}

impl UpInfo {
    pub fn path(data_dir: &std::path::Path) -> PathBuf {
        data_dir.join("up.json")
    }

    pub fn write(&self, data_dir: &std::path::Path) -> std::io::Result<()> {
        std::fs::create_dir_all(data_dir)?;
        let tmp = data_dir.join("up.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, Self::path(data_dir))
    }

    pub fn read(data_dir: &std::path::Path) -> std::io::Result<UpInfo> {
        let bytes = std::fs::read(Self::path(data_dir))?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }

    pub fn remove(data_dir: &std::path::Path) {
        let _ = std::fs::remove_file(Self::path(data_dir));
    }
}

/// The data directory's owner: the process that produces its order ids and publishes its
/// `up.json`. An advisory lock on `<data-dir>/owner.lock`, held for the life of the process
/// (the kernel releases it when the process dies, so a crash never leaves it stuck), with
/// the owner's PID written inside so a second process can say who holds it.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

#[derive(Debug, thiserror::Error)]
pub enum DataDirLockError {
    #[error("data dir {dir} in use by PID {pid}")]
    InUse { dir: String, pid: String },
    #[error("cannot lock data dir {dir}: {error}")]
    Io { dir: String, error: std::io::Error },
}

impl DataDirLock {
    pub fn path(data_dir: &std::path::Path) -> PathBuf {
        data_dir.join("owner.lock")
    }

    /// Takes the lock at once, or fails naming the PID that holds it.
    pub fn acquire(data_dir: &std::path::Path) -> Result<Self, DataDirLockError> {
        use std::io::{Read, Seek, Write};
        let io = |error| DataDirLockError::Io {
            dir: data_dir.display().to_string(),
            error,
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        // Not truncated on open: the holder's PID must stay readable.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(Self::path(data_dir))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(DataDirLockError::InUse {
                    dir: data_dir.display().to_string(),
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.to_owned()
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        store: StoreArgs,
    }

    #[test]
    fn a_data_dir_has_one_owner_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let second = DataDirLock::acquire(dir.path()).unwrap_err();
        assert_eq!(
            second.to_string(),
            format!(
                "data dir {} in use by PID {}",
                dir.path().display(),
                std::process::id()
            )
        );
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn secrets_never_print() {
        let cli = Cli::parse_from([
            "t",
            "--confluent-api-key",
            "KEY-VALUE-1",
            "--confluent-api-secret",
            "SECRET-VALUE-2",
            "--couchbase-password",
            "PASSWORD-VALUE-3",
        ]);
        let dump = format!("{cli:?} {cli:#?}");
        for s in ["KEY-VALUE-1", "SECRET-VALUE-2", "PASSWORD-VALUE-3"] {
            assert!(!dump.contains(s), "{s} leaked in {dump}");
        }
        assert!(dump.contains("***"));
        assert_eq!(
            cli.kafka.confluent_api_secret.as_ref().map(Secret::expose),
            Some("SECRET-VALUE-2")
        );
    }

    #[test]
    fn help_hides_secret_env_values() {
        use clap::CommandFactory;
        // SAFETY of the test: set only variables no other test reads.
        std::env::set_var("CONFLUENT_API_SECRET", "ENV-SECRET-4");
        std::env::set_var("COUCHBASE_PASSWORD", "ENV-PASSWORD-5");
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("CONFLUENT_API_SECRET"));
        assert!(!help.contains("ENV-SECRET-4"));
        assert!(!help.contains("ENV-PASSWORD-5"));
    }

    #[test]
    fn defaults_follow_the_spec() {
        let cli = Cli::parse_from(["t"]);
        assert_eq!(cli.kafka.topic_name, "orders");
        assert_eq!(cli.store.couchbase_bucket, "order_analytics");
    }

    #[test]
    fn couchbase_scheme_rule() {
        assert_eq!(
            couchbase_connection_string("cb.abc.cloud.couchbase.com"),
            "couchbases://cb.abc.cloud.couchbase.com"
        );
        assert_eq!(
            couchbase_connection_string("couchbase"),
            "couchbase://couchbase"
        );
        assert_eq!(
            couchbase_connection_string("couchbases://x.example:11207"),
            "couchbases://x.example:11207"
        );
    }
}
