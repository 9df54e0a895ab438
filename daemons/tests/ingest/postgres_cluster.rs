//! A throwaway PostgreSQL cluster for the ingest tests: initdb in a temporary directory,
//! `wal_level = logical`, a free port on 127.0.0.1, password authentication, run as an
//! unprivileged user (PostgreSQL refuses to run as root), stopped when dropped.

use super::common::free_port;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The superuser's password (the cluster's own, not the ingest's).
const SUPERUSER_PASSWORD: &str = "cluster-admin-pw";
/// The ingest's role and password: the password the tests look for in logs.
pub const INGEST_USER: &str = "ingest";
pub const INGEST_PASSWORD: &str = "Ingest-Pw-7f3a9c";
/// uid/gid of `nobody` on Debian.
const NOBODY: u32 = 65534;

pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
}

/// The newest installed server's binaries (Debian keeps them under
/// /usr/lib/postgresql/<version>/bin), or a failure naming the package.
fn server_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "the ingest tests need a real PostgreSQL server (initdb, pg_ctl): install the Debian \
             package `postgresql` (apt-get install postgresql); .ci/run installs it"
        ),
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

impl PgCluster {
    /// Creates and starts a cluster, and runs the orders SQL of ops/postgres in database
    /// `shop` as the ingest role (REPLICATION, owner of the table).
    pub fn start() -> PgCluster {
        PgCluster::start_with(&[], "")
    }

    /// [`start`](Self::start) with more `initdb` arguments and `postgresql.conf` lines.
    pub fn start_with(initdb_args: &[&str], conf_lines: &str) -> PgCluster {
        let bin = server_bin();
        let dir = tempfile::Builder::new()
            .prefix("orders-pg-")
            .tempdir()
            .unwrap();
        if is_root() {
            std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
        }
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).unwrap();
        if is_root() {
            std::os::unix::fs::chown(&pwfile, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        let cluster = PgCluster {
            bin,
            port: free_port(),
            dir,
        };
        let data = cluster.data();
        cluster.run_checked(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "scram-sha-256",
                "--pwfile",
                pwfile.to_str().unwrap(),
                "--no-sync",
                "-E",
                "UTF8",
                "--locale",
                "C",
            ]
            .into_iter()
            .chain(initdb_args.iter().copied())
            .collect::<Vec<_>>(),
        );
        let conf = format!(
            "\nwal_level = logical\nmax_replication_slots = 10\nmax_wal_senders = 10\n\
             listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             fsync = off\nfull_page_writes = off\nshared_buffers = 32MB\nmax_connections = 40\n\
             log_min_messages = warning\n{conf_lines}\n",
            cluster.port,
            cluster.dir.path().display()
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(&mut f, conf.as_bytes()).unwrap();
        cluster.start_server();
        cluster.psql(
            "postgres",
            &format!("CREATE ROLE {INGEST_USER} LOGIN REPLICATION PASSWORD '{INGEST_PASSWORD}'"),
        );
        cluster.psql(
            "postgres",
            &format!("CREATE DATABASE shop OWNER {INGEST_USER}"),
        );
        let sql = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/postgres/orders.sql");
        let out = Command::new(cluster.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
            .arg(&sql)
            .arg(cluster.url_for(INGEST_USER, INGEST_PASSWORD, "shop"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {out:?}", sql.display());
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs a server binary, as `nobody` when this process is root.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let path = self.bin.join(program);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        // A directory nobody can read makes initdb's `cd` fail; the temp dir is fine.
        cmd.current_dir(self.dir.path())
            .args(args)
            .output()
            .unwrap()
    }

    fn run_checked(&self, program: &str, args: &[&str]) {
        let out = self.run(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn start_server(&self) {
        let data = self.data();
        let log = self.dir.path().join("server.log");
        self.run_checked(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server (fast: sessions are cut, as in an outage or a failover).
    pub fn stop_server(&self) {
        let data = self.data();
        self.run_checked(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }

    /// `postgresql://user:password@127.0.0.1:port/db`.
    pub fn url_for(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// The ingest's URL to database `shop`.
    pub fn url(&self) -> String {
        self.url_for(INGEST_USER, INGEST_PASSWORD, "shop")
    }

    /// Runs SQL as the superuser.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(self.url_for("postgres", SUPERUSER_PASSWORD, db))
            .output()
            .unwrap();
        assert!(out.status.success(), "{sql}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A client session as the ingest role on `shop` (the tests' writers).
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}
