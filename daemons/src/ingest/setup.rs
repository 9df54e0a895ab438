//! The ingest's setup, checked at every connection and again while it runs: the table with
//! the order columns, `wal_level = logical`, the publication publishing the table's inserts,
//! and the slot (pgoutput, this database). A missing piece stops the daemon with one line.
//! Whether updates and deletes are published too (so they are seen, and refused visibly)
//! and what the table's replica identity says of an old row are logged.

use super::{classify, row, IngestConfig, SessionError};
use tokio_postgres::Client;

/// What the stream carries besides inserts, by the publication and the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    pub publication: String,
    pub table: String,
    /// The publication publishes updates (they are seen, and dead-lettered).
    pub updates: bool,
    /// The publication publishes deletes.
    pub deletes: bool,
    /// `pg_class.relreplident`: `d` the primary key, `f` the whole row, `i` an index,
    /// `n` nothing.
    pub replica_identity: char,
    pub has_primary_key: bool,
}

impl Setup {
    /// Says in the log what happens to an update or delete of the table.
    pub fn log(&self) {
        let old = match self.replica_identity {
            'f' => "the whole old row (REPLICA IDENTITY FULL): each changed column is named",
            'n' => "nothing (REPLICA IDENTITY NOTHING): PostgreSQL refuses the table's updates and deletes while they are published",
            'd' if !self.has_primary_key => "nothing: the table has no primary key, so PostgreSQL refuses its updates and deletes while they are published (set REPLICA IDENTITY FULL)",
            _ => "the key only (the default replica identity): other old values are not named (REPLICA IDENTITY FULL adds them)",
        };
        if self.updates && self.deletes {
            tracing::info!(
                publication = %self.publication,
                table = %self.table,
                old_row = old,
                "the publication publishes inserts, updates and deletes: an update or delete is \
                 never published as an order, it is dead-lettered (source-update, source-delete) \
                 and counted (docs/ingest.md)"
            );
        } else {
            let seen = match (self.updates, self.deletes) {
                (true, false) => "inserts and updates only: deletes",
                (false, true) => "inserts and deletes only: updates",
                _ => "inserts only: updates and deletes",
            };
            tracing::warn!(
                publication = %self.publication,
                table = %self.table,
                "the publication publishes {seen} of the table are not seen, and an order \
                 changed there differs from the store without notice; ALTER PUBLICATION {} SET \
                 (publish = 'insert, update, delete') makes each one a dead letter \
                 (docs/ingest.md)",
                self.publication
            );
        }
    }
}

/// The table, its columns, the publication and the slot must be there: the SQL under
/// ops/ creates them, in the order that captures every row (docs/ingest.md).
pub async fn check(client: &Client, c: &IngestConfig) -> Result<Setup, SessionError> {
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
    check_publication_and_slot(client, c).await?;
    what_is_published(client, c).await
}

/// Which changes the publication publishes (inserts it must), and the table's replica
/// identity.
async fn what_is_published(client: &Client, c: &IngestConfig) -> Result<Setup, SessionError> {
    let row = client
        .query_one(
            "SELECT p.pubinsert, p.pubupdate, p.pubdelete, t.relreplident::text, \
             EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = t.oid AND i.indisprimary) \
             FROM pg_publication p, pg_class t \
             WHERE p.pubname = $1 AND t.oid = $2::text::regclass",
            &[&c.publication, &c.table],
        )
        .await
        .map_err(|e| classify("reading what the publication publishes", &e))?;
    let inserts: bool = row.get(0);
    if !inserts {
        return Err(SessionError::Fatal(format!(
            "publication {} does not publish inserts: no order would ever be read; ALTER \
             PUBLICATION {} SET (publish = 'insert, update, delete') (docs/ingest.md)",
            c.publication, c.publication
        )));
    }
    let identity: String = row.get(3);
    Ok(Setup {
        publication: c.publication.clone(),
        table: c.table.clone(),
        updates: row.get(1),
        deletes: row.get(2),
        replica_identity: identity.chars().next().unwrap_or('d'),
        has_primary_key: row.get(4),
    })
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
