//! Where the ingest role's database is: `POSTGRES_URL` (a libpq URL or `key=value`
//! string) with libpq's `PG*` environment variables filling in what it leaves out, TLS as
//! libpq's `sslmode` says, and a description for logs that never holds the password.

use native_tls::{Certificate, TlsConnector};
use orders_core::config::Secret;
use postgres_native_tls::MakeTlsConnector;
use std::time::Duration;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::Client;

/// How long a connection attempt may take when the settings name no `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PostgresConfigError {
    #[error("no database: set POSTGRES_URL (or --postgres-url), or the PG* variables")]
    Missing,
    /// The parser's message names the option, never its value.
    #[error("POSTGRES_URL cannot be read: {0}")]
    Invalid(String),
    #[error("PGSSLROOTCERT {path}: {error}")]
    RootCert { path: String, error: String },
    #[error("PGPORT {0:?} is not a port")]
    Port(String),
}

/// The database to connect to, validated.
#[derive(Clone)]
pub struct PostgresSource {
    config: tokio_postgres::Config,
    tls: MakeTlsConnector,
    described: String,
}

impl std::fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.described)
    }
}

/// libpq's `sslmode`, as given (tokio-postgres knows only disable, prefer and require).
fn requested_ssl_mode(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let from_url = url.find("sslmode=").map(|at| {
        url[at + "sslmode=".len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect::<String>()
    });
    from_url.or_else(|| env("PGSSLMODE"))
}

impl PostgresSource {
    /// From `POSTGRES_URL` and the `PG*` variables `env` answers (libpq's: PGHOST, PGPORT,
    /// PGDATABASE, PGUSER, PGPASSWORD, PGSSLMODE, PGSSLROOTCERT, PGAPPNAME,
    /// PGCONNECT_TIMEOUT): what the URL names wins, the variables fill in the rest.
    pub fn new(
        url: Option<&Secret>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, PostgresConfigError> {
        let text = url.map(Secret::expose).unwrap_or_default();
        if text.trim().is_empty() && env("PGHOST").is_none() && env("PGDATABASE").is_none() {
            return Err(PostgresConfigError::Missing);
        }
        let ssl = requested_ssl_mode(text, env);
        let mut config = parse(text)?;
        fill_in(&mut config, text, env)?;
        let tls = tls_connector(ssl.as_deref(), env)?;
        let described = describe(&config, ssl.as_deref());
        Ok(PostgresSource {
            config,
            tls: MakeTlsConnector::new(tls),
            described,
        })
    }

    /// `user@host:port/dbname (sslmode)`: for logs, without the password.
    pub fn describe(&self) -> &str {
        &self.described
    }

    /// Opens a session; its connection runs on a task of its own until the client drops.
    pub async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(self.tls.clone()).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres connection ended");
            }
        });
        Ok(client)
    }

    /// Opens a replication connection streaming `slot` (pgoutput, `publication`) from its
    /// confirmed position, with the same settings and TLS as [`connect`](Self::connect).
    pub async fn replicate(
        &self,
        slot: &str,
        publication: &str,
    ) -> Result<super::replication::ReplicationStream, super::replication::ReplicationError> {
        super::replication::ReplicationStream::start(&self.config, &self.tls, slot, publication)
            .await
    }
}

/// The settings `text` holds. libpq's verify-ca and verify-full are TLS with the
/// certificate checked; the parser knows them as `require`, and the check is made by the
/// TLS connector ([`tls_connector`]).
fn parse(text: &str) -> Result<tokio_postgres::Config, PostgresConfigError> {
    let normalised = text
        .replace("sslmode=verify-full", "sslmode=require")
        .replace("sslmode=verify-ca", "sslmode=require");
    if normalised.trim().is_empty() {
        Ok(tokio_postgres::Config::new())
    } else {
        normalised
            .parse()
            .map_err(|e: tokio_postgres::Error| PostgresConfigError::Invalid(e.to_string()))
    }
}

/// What the settings (`text`, parsed into `config`) leave out, from libpq's `PG*`
/// variables and its defaults.
fn fill_in(
    config: &mut tokio_postgres::Config,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), PostgresConfigError> {
    if config.get_hosts().is_empty() {
        config.host(env("PGHOST").as_deref().unwrap_or("localhost"));
    }
    if config.get_ports().is_empty() {
        if let Some(port) = env("PGPORT") {
            config.port(
                port.trim()
                    .parse()
                    .map_err(|_| PostgresConfigError::Port(port.clone()))?,
            );
        }
    }
    if config.get_user().is_none() {
        let user = env("PGUSER")
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".to_owned());
        config.user(user);
    }
    if config.get_dbname().is_none() {
        if let Some(db) = env("PGDATABASE") {
            config.dbname(db);
        }
    }
    if config.get_password().is_none() {
        if let Some(password) = env("PGPASSWORD") {
            config.password(password);
        }
    }
    if config.get_application_name().is_none() {
        config.application_name(env("PGAPPNAME").as_deref().unwrap_or("ordersd-ingest"));
    }
    if config.get_connect_timeout().is_none() {
        let timeout = env("PGCONNECT_TIMEOUT")
            .and_then(|t| t.trim().parse::<u64>().ok())
            .filter(|t| *t > 0)
            .map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_secs);
        config.connect_timeout(timeout);
    }
    if !text.contains("sslmode=") {
        match env("PGSSLMODE").as_deref() {
            Some("disable" | "allow") => {
                config.ssl_mode(SslMode::Disable);
            }
            Some("require" | "verify-ca" | "verify-full") => {
                config.ssl_mode(SslMode::Require);
            }
            _ => {}
        }
    }
    Ok(())
}

/// TLS as libpq's `sslmode` (`ssl`) asks: the certificate checked for verify-ca and
/// verify-full (its host name too for verify-full), against `PGSSLROOTCERT` when set.
fn tls_connector(
    ssl: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<TlsConnector, PostgresConfigError> {
    let mut tls = TlsConnector::builder();
    if !matches!(ssl, Some("verify-ca" | "verify-full")) {
        // libpq's prefer and require encrypt without checking the certificate.
        tls.danger_accept_invalid_certs(true);
    }
    if let Some(path) = env("PGSSLROOTCERT") {
        let pem = std::fs::read(&path).map_err(|e| PostgresConfigError::RootCert {
            path: path.clone(),
            error: e.to_string(),
        })?;
        let cert = Certificate::from_pem(&pem).map_err(|e| PostgresConfigError::RootCert {
            path: path.clone(),
            error: e.to_string(),
        })?;
        tls.add_root_certificate(cert);
    }
    if ssl == Some("verify-ca") {
        tls.danger_accept_invalid_hostnames(true);
    }
    tls.build().map_err(|e| PostgresConfigError::RootCert {
        path: "(TLS setup)".into(),
        error: e.to_string(),
    })
}

fn describe(config: &tokio_postgres::Config, ssl: Option<&str>) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or_default();
    let db = config.get_dbname().unwrap_or(user);
    format!(
        "{user}@{host}:{port}/{db} (sslmode {})",
        ssl.unwrap_or("prefer")
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_url_wins_and_pg_variables_fill_in() {
        let url =
            Secret::new("postgresql://ingest:S3CRET-PW@db.example:6543/shop?sslmode=verify-full");
        let s = PostgresSource::new(
            Some(&url),
            &env(&[
                ("PGHOST", "other"),
                ("PGUSER", "someone"),
                ("PGPASSWORD", "nope"),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.describe(),
            "ingest@db.example:6543/shop (sslmode verify-full)"
        );
        assert_eq!(s.config.get_password(), Some(&b"S3CRET-PW"[..]));
        let s = PostgresSource::new(
            None,
            &env(&[
                ("PGHOST", "pg.internal"),
                ("PGPORT", "5433"),
                ("PGUSER", "ingest"),
                ("PGDATABASE", "shop"),
                ("PGPASSWORD", "ENV-PW"),
                ("PGSSLMODE", "require"),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.describe(),
            "ingest@pg.internal:5433/shop (sslmode require)"
        );
        assert_eq!(s.config.get_password(), Some(&b"ENV-PW"[..]));
        assert_eq!(s.config.get_ssl_mode(), SslMode::Require);
        let kv = Secret::new("host=h1 user=u dbname=d password=KV-PW");
        let s = PostgresSource::new(Some(&kv), &env(&[])).unwrap();
        assert_eq!(s.describe(), "u@h1:5432/d (sslmode prefer)");
    }

    #[test]
    fn the_password_never_reaches_a_description_or_an_error() {
        let url = Secret::new("postgresql://ingest:S3CRET-PW@db.example:6543/shop");
        let s = PostgresSource::new(Some(&url), &env(&[])).unwrap();
        assert!(!format!("{s:?} {}", s.describe()).contains("S3CRET-PW"));
        let bad = Secret::new("postgresql://ingest:S3CRET-PW@db.example:notaport/shop");
        let e = PostgresSource::new(Some(&bad), &env(&[])).unwrap_err();
        assert!(!e.to_string().contains("S3CRET-PW"), "{e}");
        assert!(matches!(
            PostgresSource::new(None, &env(&[])),
            Err(PostgresConfigError::Missing)
        ));
        assert!(matches!(
            PostgresSource::new(None, &env(&[("PGHOST", "h"), ("PGPORT", "x")])),
            Err(PostgresConfigError::Port(_))
        ));
    }
}
