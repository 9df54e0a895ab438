//! The ingest's setup, checked at every connection and again while it runs: the table with
//! the order columns, `wal_level = logical`, the publication publishing the table, and the
//! slot (pgoutput, this database). A missing piece stops the daemon with one line.

use super::{classify, row, IngestConfig, SessionError};
use tokio_postgres::Client;

/// The table, its columns, the publication and the slot must be there: the SQL under
/// ops/ creates them, in the order that captures every row (docs/ingest.md).
pub async fn check(client: &Client, c: &IngestConfig) -> Result<(), SessionError> {
    let columns: Vec<String> = client
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::regclass \
             AND attnum > 0 AND NOT attisdropped",
            &[&c.table],
        )
        .await
        .map_err(|e| classify(&format!("reading the columns of table {}", c.table), &e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<&str> = row::COLUMNS
        .iter()
        .copied()
        .filter(|name| !columns.iter().any(|c| c == name))
        .collect();
    if !missing.is_empty() {
        return Err(SessionError::Fatal(format!(
            "table {} lacks the order columns {} (docs/ingest.md)",
            c.table,
            missing.join(", ")
        )));
    }
    let wal_level: String = client
        .query_one("SELECT current_setting('wal_level')", &[])
        .await
        .map_err(|e| classify("reading wal_level", &e))?
        .get(0);
    if wal_level != "logical" {
        return Err(SessionError::Fatal(format!(
            "the server's wal_level is {wal_level}, logical decoding needs wal_level = logical \
             (on RDS: rds.logical_replication = 1; docs/deploy.md)"
        )));
    }
    check_publication_and_slot(client, c).await
}

/// The publication publishes the table, and the slot is there, with pgoutput, on this
/// database.
async fn check_publication_and_slot(client: &Client, c: &IngestConfig) -> Result<(), SessionError> {
    let published = client
        .query_opt(
            "SELECT 1 FROM pg_publication_tables p JOIN pg_class c ON c.relname = p.tablename \
             JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = p.schemaname \
             WHERE p.pubname = $1 AND c.oid = $2::text::regclass",
            &[&c.publication, &c.table],
        )
        .await
        .map_err(|e| classify("reading the publication", &e))?;
    if published.is_none() {
        return Err(SessionError::Fatal(format!(
            "publication {} does not publish table {}: create it with the SQL under ops/postgres \
             (docs/ingest.md)",
            c.publication, c.table
        )));
    }
    let slot = client
        .query_opt(
            "SELECT plugin::text, database::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&c.slot],
        )
        .await
        .map_err(|e| classify("reading the replication slot", &e))?;
    let Some(slot) = slot else {
        return Err(SessionError::Fatal(format!(
            "replication slot {} does not exist: create it with the SQL under ops/postgres, \
             before the first order is written (docs/ingest.md)",
            c.slot
        )));
    };
    let plugin: Option<String> = slot.get(0);
    if plugin.as_deref() != Some("pgoutput") {
        return Err(SessionError::Fatal(format!(
            "replication slot {} uses plugin {}, not pgoutput",
            c.slot,
            plugin.as_deref().unwrap_or("(none: a physical slot)")
        )));
    }
    let database: Option<String> = slot.get(1);
    let current: String = client
        .query_one("SELECT current_database()::text", &[])
        .await
        .map_err(|e| classify("reading the database name", &e))?
        .get(0);
    if database.as_deref() != Some(current.as_str()) {
        return Err(SessionError::Fatal(format!(
            "replication slot {} belongs to database {}, not {current}",
            c.slot,
            database.as_deref().unwrap_or("?")
        )));
    }
    Ok(())
}
