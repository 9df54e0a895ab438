//! The embedded store: one SQLite file in WAL mode, one writer, a small pool of readers.
//!
//! Totals live in small tables that each write transaction updates once, from the rows it
//! actually inserted, so they are exact and cost nothing to read.

use super::*;
use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS orders (
    order_id        INTEGER PRIMARY KEY,
    customer_id     INTEGER NOT NULL,
    amount_cents    INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    country         TEXT NOT NULL,
    status          TEXT NOT NULL,
    created_us      INTEGER NOT NULL,
    source          TEXT,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    processed_us    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS fraud_alerts (
    order_id     INTEGER PRIMARY KEY,
    reason       TEXT NOT NULL,
    rule_id      TEXT,
    amount_cents INTEGER NOT NULL,
    country      TEXT NOT NULL,
    detected_us  INTEGER,
    stored_us    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS payments (
    order_id     INTEGER PRIMARY KEY,
    status       TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    country      TEXT NOT NULL,
    ts           REAL NOT NULL,
    stored_us    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS totals_by_country (
    country TEXT PRIMARY KEY, order_count INTEGER NOT NULL, sales_cents INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS totals_by_status (
    status TEXT PRIMARY KEY, order_count INTEGER NOT NULL, sales_cents INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY, value INTEGER NOT NULL);
-- Orders by the minute they were created in, by country: the per-minute tumbling windows,
-- updated with the totals (the overall figure of a minute is the sum of its countries).
CREATE TABLE IF NOT EXISTS order_minutes (
    minute_us INTEGER NOT NULL, country TEXT NOT NULL,
    order_count INTEGER NOT NULL, sales_cents INTEGER NOT NULL,
    PRIMARY KEY (minute_us, country)) WITHOUT ROWID;

-- Rows are only ever inserted: what the pipeline learns about an order (fraud, payment)
-- lives in its own table keyed by order id and is joined when reading, so a write never
-- rewrites a row and alerts or payments may arrive before their order.
-- Orders, alerts and payments are listed newest first by arrival (the time they were
-- stored, then the id), not by id: another client's producer may publish ids far above
-- ours. Each list walks its arrival index backwards (the index holds the rowid, which is
-- the order id, so it serves the whole sort); the filters (country, status, fraud,
-- payment) each keep a large share of orders, so a walk finds a page quickly and more
-- indexes would only slow every insert down.
CREATE INDEX IF NOT EXISTS orders_by_arrival ON orders(processed_us);
CREATE INDEX IF NOT EXISTS fraud_alerts_by_arrival ON fraud_alerts(stored_us);
CREATE INDEX IF NOT EXISTS payments_by_arrival ON payments(stored_us);
-- Canary journeys: one row per canary, each stage's time set once (first wins).
CREATE TABLE IF NOT EXISTS canaries (
    order_id   INTEGER PRIMARY KEY,
    created_us INTEGER,
    stored_us  INTEGER,
    decided_us INTEGER,
    flagged    INTEGER,
    paid_us    INTEGER
);
PRAGMA user_version = 4;
"#;

/// Fills the per-minute windows of a store written before they existed (schema 2 or 3),
/// in the transaction that creates them.
const BACKFILL_MINUTES: &str = "INSERT INTO order_minutes \
     SELECT (created_us / 60000000) * 60000000, country, COUNT(*), SUM(amount_cents) \
     FROM orders GROUP BY 1, 2";

/// The columns `order_row` reads, from `ORDERS_JOINED`.
const ORDER_COLUMNS: &str = "o.order_id, o.customer_id, o.amount_cents, o.currency, o.country, \
     o.status, o.created_us, o.source, o.kafka_partition, o.kafka_offset, o.processed_us, \
     f.reason, p.status";

/// The orders table's columns in the order `stored_order_row` reads them.
const STORED_ORDER_COLUMNS: &str = "order_id, customer_id, amount_cents, currency, country, \
     status, created_us, source, kafka_partition, kafka_offset, processed_us";

/// The upper bound of a scan page: below `before_id`, or every id.
fn scan_bound(before_id: Option<u64>) -> i64 {
    before_id.unwrap_or(u64::MAX).min(i64::MAX as u64) as i64
}

/// A page size as SQLite's `LIMIT` (where a negative value would mean no limit at all).
fn scan_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Orders with what the pipeline learned about them.
const ORDERS_JOINED: &str = "orders o LEFT JOIN fraud_alerts f ON f.order_id = o.order_id \
     LEFT JOIN payments p ON p.order_id = o.order_id";

const READERS: usize = 4;

/// The schema this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 4;

/// Older schemas [`SCHEMA`] upgrades in place: version 2 lacks the arrival indexes, which
/// its `CREATE INDEX IF NOT EXISTS` adds; versions 2 and 3 lack the canaries table, added
/// the same way, and the per-minute windows, created and filled from the stored orders in
/// one transaction.
const UPGRADABLE_VERSIONS: [i64; 2] = [2, 3];

/// How [`SqliteStore::set_write_limit`] limits writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteLimit {
    /// Writes needing one more page fail as on a full disk.
    Full,
    /// Every write fails as on a read-only file.
    ReadOnly,
    Writable,
}

/// The SQLite adapter of [`OrderStore`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Wakes the checkpointer after a commit; dropping it stops the checkpointer.
    checkpoint: mpsc::SyncSender<()>,
}

/// Copies committed pages from the write-ahead log into the database on a thread of its
/// own, so the writer only appends to the log and syncs it. With SQLite's automatic
/// checkpoint, every few commits the writer also copied the log into the file and synced
/// that, inside the transaction the analytics daemon waits for (BENCHMARKS.md). The same
/// PASSIVE checkpoint as the automatic one: it never blocks the writer or readers.
fn checkpointer(path: &Path) -> Result<mpsc::SyncSender<()>, StoreError> {
    let conn = open(path, false)?;
    let (wake, commits) = mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            // Ends when the store is dropped, with a last checkpoint.
            while commits.recv().is_ok() {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                {
                    tracing::debug!(error = %e, "checkpoint failed; tried again after the next commit");
                }
            }
            let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        })
        .map_err(|e| StoreError::Unavailable(format!("starting the checkpointer: {e}")))?;
    Ok(wake)
}

fn query_err(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(ref f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::ReadOnly
                    | rusqlite::ErrorCode::SystemIoFailure
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Query(e.to_string()),
    }
}

fn open(path: &Path, read_only: bool) -> Result<Connection, StoreError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(query_err)?;
    // Plans that do not depend on bound values. Without this, SQLite marks a statement
    // with `LIMIT ?` (or a range on a parameter) as expired whenever the parameter is
    // bound again, and re-prepares it on every execution: most of the cost of a cached
    // `latest_orders` call. Every query here walks a primary key or a fixed index anyway.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(query_err)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?;
        }
        let writer = open(&path, false)?;
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF; \
                 PRAGMA cache_size = -8192; PRAGMA temp_store = MEMORY; \
                 PRAGMA wal_autocheckpoint = 0;",
            )
            .map_err(query_err)?;
        let version: i64 = writer
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(query_err)?;
        if version != 0 && version != SCHEMA_VERSION && !UPGRADABLE_VERSIONS.contains(&version) {
            return Err(StoreError::Corrupt(format!(
                "{} has schema version {version}, this build uses {SCHEMA_VERSION}; \
                 move the file away to start a new store",
                path.display()
            )));
        }
        let backfill = if version != 0 && version < 4 {
            BACKFILL_MINUTES
        } else {
            ""
        };
        writer
            .execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA}; {backfill}; COMMIT;"))
            .map_err(query_err)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(open(&path, true)?);
        }
        let checkpoint = checkpointer(&path)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(writer),
                readers: Mutex::new(readers),
                checkpoint,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Makes the store refuse writes as a full or a read-only file does, or lifts that:
    /// what the faults tests use, and a way for an operator to freeze a store.
    pub async fn set_write_limit(&self, limit: WriteLimit) -> Result<(), StoreError> {
        self.write(move |conn| {
            let pages: i64 = conn
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .map_err(query_err)?;
            let (max_pages, query_only) = match limit {
                // At its current size: the next page it needs is refused (SQLITE_FULL).
                WriteLimit::Full => (pages, false),
                WriteLimit::ReadOnly => (i64::from(u32::MAX), true),
                WriteLimit::Writable => (i64::from(u32::MAX), false),
            };
            conn.query_row(&format!("PRAGMA max_page_count = {max_pages}"), [], |_| {
                Ok(())
            })
            .map_err(query_err)?;
            conn.execute_batch(&format!("PRAGMA query_only = {query_only}"))
                .map_err(query_err)
        })
        .await
    }

    /// Runs `f` on the writer connection on the blocking pool.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner
                .writer
                .lock()
                .map_err(|_| StoreError::Unavailable("writer lock poisoned".into()))?;
            let result = f(&mut conn);
            // Full: a wake-up is pending already, and it will see this commit too.
            let _ = inner.checkpoint.try_send(());
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    /// Runs `f` on a pooled reader connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().ok().and_then(|mut p| p.pop());
            let conn = match pooled {
                Some(c) => c,
                None => open(&inner.path, true)?,
            };
            let result = f(&conn);
            if let Ok(mut pool) = inner.readers.lock() {
                if pool.len() < READERS {
                    pool.push(conn);
                }
            }
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

/// Totals changed by one batch, applied once at its end.
#[derive(Default)]
struct TotalsDelta {
    by_country: BTreeMap<Country, (i64, i64)>,
    by_minute: BTreeMap<(i64, Country), (i64, i64)>,
    by_status: BTreeMap<OrderStatus, (i64, i64)>,
    counters: BTreeMap<&'static str, i64>,
}

impl TotalsDelta {
    fn apply(&self, tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
        let add_to = |table: &str, key: &str, rows: Vec<(&str, i64, i64)>| {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO {table} VALUES (?1, ?2, ?3) ON CONFLICT({key}) DO UPDATE \
                     SET order_count = order_count + ?2, sales_cents = sales_cents + ?3"
                ))
                .map_err(query_err)?;
            for (k, count, cents) in rows {
                stmt.execute(params![k, count, cents]).map_err(query_err)?;
            }
            Ok::<(), StoreError>(())
        };
        add_to(
            "totals_by_country",
            "country",
            self.by_country
                .iter()
                .map(|(c, (n, v))| (c.as_str(), *n, *v))
                .collect(),
        )?;
        add_to(
            "totals_by_status",
            "status",
            self.by_status
                .iter()
                .map(|(s, (n, v))| (s.as_str(), *n, *v))
                .collect(),
        )?;
        let mut minute = tx
            .prepare_cached(
                "INSERT INTO order_minutes VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT(minute_us, country) DO UPDATE \
                 SET order_count = order_count + ?3, sales_cents = sales_cents + ?4",
            )
            .map_err(query_err)?;
        for ((m, country), (n, cents)) in &self.by_minute {
            minute
                .execute(params![m, country.as_str(), n, cents])
                .map_err(query_err)?;
        }
        let mut counter = tx
            .prepare_cached(
                "INSERT INTO counters VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE \
                 SET value = value + ?2",
            )
            .map_err(query_err)?;
        for (name, value) in &self.counters {
            counter.execute(params![name, value]).map_err(query_err)?;
        }
        Ok(())
    }
}

fn apply_batch(conn: &mut Connection, batch: &StoreBatch) -> Result<BatchOutcome, StoreError> {
    let tx = conn.transaction().map_err(query_err)?;
    let mut outcome = BatchOutcome::default();
    let mut delta = TotalsDelta::default();
    let now = Timestamp::now().micros();
    insert_orders(&tx, &batch.orders, &mut outcome, &mut delta)?;
    let alerts = insert_rows(&tx, &batch.alerts, &ALERT_ROWS, |stmt, at, a| {
        stmt.raw_bind_parameter(at, a.order_id as i64)?;
        stmt.raw_bind_parameter(at + 1, &a.reason)?;
        stmt.raw_bind_parameter(at + 2, &a.rule_id)?;
        stmt.raw_bind_parameter(at + 3, a.amount.0)?;
        stmt.raw_bind_parameter(at + 4, a.country.as_str())?;
        stmt.raw_bind_parameter(at + 5, a.detected_at.map(|t| t.micros()))?;
        stmt.raw_bind_parameter(at + 6, now)
    })?;
    for (a, inserted) in batch.alerts.iter().zip(alerts) {
        if inserted {
            outcome.new_alerts += 1;
            *delta.counters.entry("fraud_count").or_default() += 1;
            *delta.counters.entry("fraud_cents").or_default() += a.amount.0;
        }
    }
    let payments = insert_rows(&tx, &batch.payments, &PAYMENT_ROWS, |stmt, at, p| {
        stmt.raw_bind_parameter(at, p.order_id as i64)?;
        stmt.raw_bind_parameter(at + 1, p.status.as_str())?;
        stmt.raw_bind_parameter(at + 2, p.amount.0)?;
        stmt.raw_bind_parameter(at + 3, p.country.as_str())?;
        stmt.raw_bind_parameter(at + 4, p.timestamp)?;
        stmt.raw_bind_parameter(at + 5, now)
    })?;
    for (p, inserted) in batch.payments.iter().zip(payments) {
        if inserted {
            outcome.new_payments += 1;
            *delta.counters.entry("payment_count").or_default() += 1;
            if p.status == PaymentStatus::Paid {
                *delta.counters.entry("paid_count").or_default() += 1;
            }
        }
    }
    delta.apply(&tx)?;
    tx.commit().map_err(query_err)?;
    Ok(outcome)
}

/// Inserts the orders not stored yet and adds them to `delta`; an order whose id is stored
/// already is a redelivery when its content is the same, else a conflict in `outcome`.
fn insert_orders(
    tx: &rusqlite::Transaction<'_>,
    orders: &[StoredOrder],
    outcome: &mut BatchOutcome,
    delta: &mut TotalsDelta,
) -> Result<(), StoreError> {
    let inserted = insert_rows(tx, orders, &ORDER_ROWS, |stmt, at, s| {
        let o = &s.order;
        stmt.raw_bind_parameter(at, o.order_id as i64)?;
        stmt.raw_bind_parameter(at + 1, o.customer_id)?;
        stmt.raw_bind_parameter(at + 2, o.amount.0)?;
        stmt.raw_bind_parameter(at + 3, &o.currency)?;
        stmt.raw_bind_parameter(at + 4, o.country.as_str())?;
        stmt.raw_bind_parameter(at + 5, o.status.as_str())?;
        stmt.raw_bind_parameter(at + 6, o.created_at.micros())?;
        stmt.raw_bind_parameter(at + 7, &o.source)?;
        stmt.raw_bind_parameter(at + 8, s.kafka_partition)?;
        stmt.raw_bind_parameter(at + 9, s.kafka_offset)?;
        stmt.raw_bind_parameter(at + 10, s.processed_at.micros())
    })?;
    let mut stored_order = tx
        .prepare_cached(&format!(
            "SELECT {STORED_ORDER_COLUMNS} FROM orders WHERE order_id = ?1"
        ))
        .map_err(query_err)?;
    for (s, inserted) in orders.iter().zip(inserted) {
        let o = &s.order;
        if !inserted {
            // Stored already: a redelivery, or another order under the same id.
            let stored = stored_order
                .query_row(params![o.order_id as i64], stored_order_row)
                .map_err(query_err)??;
            outcome
                .conflicts
                .extend(OrderConflict::between(&stored.order, s));
            continue;
        }
        outcome.new_orders += 1;
        let c = delta.by_country.entry(o.country).or_default();
        c.0 += 1;
        c.1 += o.amount.0;
        let st = delta.by_status.entry(o.status).or_default();
        st.0 += 1;
        st.1 += o.amount.0;
        let m = delta
            .by_minute
            .entry((minute_of(o.created_at.micros()), o.country))
            .or_default();
        m.0 += 1;
        m.1 += o.amount.0;
    }
    Ok(())
}

/// A table's insert of rows keyed by order id that keeps what is stored (`ON CONFLICT DO
/// NOTHING`) and returns the ids it inserted.
struct RowInsert {
    /// `INSERT INTO table (columns)`.
    head: &'static str,
    columns: usize,
}

const ORDER_ROWS: RowInsert = RowInsert {
    head: "INSERT INTO orders (order_id, customer_id, amount_cents, currency, country, status, \
           created_us, source, kafka_partition, kafka_offset, processed_us)",
    columns: 11,
};
const ALERT_ROWS: RowInsert = RowInsert {
    head: "INSERT INTO fraud_alerts (order_id, reason, rule_id, amount_cents, country, \
           detected_us, stored_us)",
    columns: 7,
};
const PAYMENT_ROWS: RowInsert = RowInsert {
    head: "INSERT INTO payments (order_id, status, amount_cents, country, ts, stored_us)",
    columns: 6,
};

impl RowInsert {
    /// The statement for one row.
    fn sql(&self) -> String {
        format!(
            "{} VALUES ({}) ON CONFLICT(order_id) DO NOTHING",
            self.head,
            vec!["?"; self.columns].join(",")
        )
    }
}

/// Inserts `rows` (each bound by `bind` from its first parameter's index on) in the order of
/// their ids; says for each row whether it was inserted. Of two rows with one id, the first
/// is inserted and the second is not.
///
/// In id order, each table's rows are appended at the right edge of its B-tree. In the order
/// they were read, six partitions' ids interleave: most went into the middle of pages that
/// then split half full (`balance_nonroot` and its copying were a fifth of the store's CPU
/// time; `cargo bench -p orders-core --bench store`).
fn insert_rows<T>(
    tx: &rusqlite::Transaction<'_>,
    rows: &[T],
    table: &RowInsert,
    bind: impl Fn(&mut rusqlite::Statement<'_>, usize, &T) -> rusqlite::Result<()>,
) -> Result<Vec<bool>, StoreError>
where
    T: OrderKeyed,
{
    let mut inserted = vec![false; rows.len()];
    if rows.is_empty() {
        return Ok(inserted);
    }
    let mut in_id_order: Vec<usize> = (0..rows.len()).collect();
    // Stable: of two rows with one id, the first read is the first inserted.
    in_id_order.sort_by_key(|i| rows[*i].order_id());
    let mut stmt = tx.prepare_cached(&table.sql()).map_err(query_err)?;
    for i in in_id_order {
        bind(&mut stmt, 1, &rows[i]).map_err(query_err)?;
        inserted[i] = stmt.raw_execute().map_err(query_err)? == 1;
    }
    Ok(inserted)
}

/// A row of a table keyed by order id.
trait OrderKeyed {
    fn order_id(&self) -> u64;
}
impl OrderKeyed for StoredOrder {
    fn order_id(&self) -> u64 {
        self.order.order_id
    }
}
impl OrderKeyed for FraudAlert {
    fn order_id(&self) -> u64 {
        self.order_id
    }
}
impl OrderKeyed for Payment {
    fn order_id(&self) -> u64 {
        self.order_id
    }
}

/// When the order `order_id` was stored (its place in the arrival order), if it is.
fn arrival_of(conn: &Connection, order_id: i64) -> Result<Option<i64>, StoreError> {
    conn.prepare_cached("SELECT processed_us FROM orders WHERE order_id = ?1")
        .map_err(query_err)?
        .query_row([order_id], |r| r.get(0))
        .optional()
        .map_err(query_err)
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn ts_from_us(us: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_micros(us).ok_or_else(|| corrupt("timestamp", us))
}

/// Reads the first eleven columns of `ORDER_COLUMNS` (or of `STORED_ORDER_COLUMNS`): the
/// order as analytics stored it.
fn stored_order_row(row: &Row<'_>) -> rusqlite::Result<Result<StoredOrder, StoreError>> {
    let country: String = row.get(4)?;
    let status: String = row.get(5)?;
    let created_us: i64 = row.get(6)?;
    let build = || -> Result<StoredOrder, StoreError> {
        let order = Order {
            order_id: row.get::<_, i64>(0).map_err(query_err)? as u64,
            customer_id: row.get(1).map_err(query_err)?,
            amount: Cents(row.get(2).map_err(query_err)?),
            currency: row.get(3).map_err(query_err)?,
            country: country.parse().map_err(|e| corrupt("country", e))?,
            status: status.parse().map_err(|e| corrupt("status", e))?,
            created_at: ts_from_us(created_us)?,
            source: row.get(7).map_err(query_err)?,
        };
        Ok(StoredOrder {
            order,
            kafka_partition: row.get(8).map_err(query_err)?,
            kafka_offset: row.get(9).map_err(query_err)?,
            processed_at: ts_from_us(row.get(10).map_err(query_err)?)?,
        })
    };
    Ok(build())
}

/// Reads one row of `ORDER_COLUMNS`.
fn order_row(row: &Row<'_>) -> rusqlite::Result<Result<OrderDocument, StoreError>> {
    let fraud_reason: Option<String> = row.get(11)?;
    let payment_status: Option<String> = row.get(12)?;
    let build = |stored: StoredOrder| -> Result<OrderDocument, StoreError> {
        Ok(OrderDocument {
            order: stored.order,
            kafka_partition: stored.kafka_partition,
            kafka_offset: stored.kafka_offset,
            processed_at: stored.processed_at,
            fraud: fraud_reason.is_some(),
            fraud_reason,
            payment_status: payment_status
                .map(|s| s.parse().map_err(|e| corrupt("payment_status", e)))
                .transpose()?,
        })
    };
    Ok(stored_order_row(row)?.and_then(build))
}

fn alert_row(row: &Row<'_>) -> rusqlite::Result<Result<StoredAlert, StoreError>> {
    let country: String = row.get(4)?;
    let detected: Option<i64> = row.get(5)?;
    let stored: i64 = row.get(6)?;
    let alert = FraudAlert {
        order_id: row.get::<_, i64>(0)? as u64,
        reason: row.get(1)?,
        rule_id: row.get(2)?,
        amount: Cents(row.get(3)?),
        country: match country.parse() {
            Ok(c) => c,
            Err(e) => return Ok(Err(corrupt("country", e))),
        },
        detected_at: detected.and_then(Timestamp::from_micros),
    };
    Ok(ts_from_us(stored).map(|stored_at| StoredAlert { alert, stored_at }))
}

fn payment_row(row: &Row<'_>) -> rusqlite::Result<Result<StoredPayment, StoreError>> {
    let status: String = row.get(1)?;
    let country: String = row.get(3)?;
    let stored: i64 = row.get(5)?;
    let build = || -> Result<StoredPayment, StoreError> {
        Ok(StoredPayment {
            payment: Payment {
                order_id: row.get::<_, i64>(0).map_err(query_err)? as u64,
                status: status.parse().map_err(|e| corrupt("status", e))?,
                amount: Cents(row.get(2).map_err(query_err)?),
                country: country.parse().map_err(|e| corrupt("country", e))?,
                timestamp: row.get(4).map_err(query_err)?,
            },
            stored_at: ts_from_us(stored)?,
        })
    };
    Ok(build())
}

fn collect<T>(
    rows: impl Iterator<Item = rusqlite::Result<Result<T, StoreError>>>,
) -> Result<Vec<T>, StoreError> {
    rows.map(|r| r.map_err(query_err).and_then(|x| x)).collect()
}

fn read_totals(conn: &Connection) -> Result<Totals, StoreError> {
    let mut t = Totals::default();
    let mut stmt = conn
        .prepare_cached("SELECT country, order_count, sales_cents FROM totals_by_country")
        .map_err(query_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(query_err)?;
    for row in rows {
        let (country, count, cents) = row.map_err(query_err)?;
        t.order_count += count as u64;
        t.total_sales.0 += cents;
        t.by_country.insert(
            country,
            CountAndSum {
                count: count as u64,
                sales: Cents(cents),
            },
        );
    }
    let mut stmt = conn
        .prepare_cached("SELECT status, order_count, sales_cents FROM totals_by_status")
        .map_err(query_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(query_err)?;
    for row in rows {
        let (status, count, cents) = row.map_err(query_err)?;
        t.by_status.insert(
            status,
            CountAndSum {
                count: count as u64,
                sales: Cents(cents),
            },
        );
    }
    let mut stmt = conn
        .prepare_cached("SELECT name, value FROM counters")
        .map_err(query_err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(query_err)?;
    for row in rows {
        let (name, value) = row.map_err(query_err)?;
        match name.as_str() {
            "fraud_count" => t.fraud_count = value as u64,
            "fraud_cents" => t.fraud_sales = Cents(value),
            "payment_count" => t.payment_count = value as u64,
            "paid_count" => t.paid_count = value as u64,
            _ => {}
        }
    }
    Ok(t)
}

#[async_trait]
impl OrderStore for SqliteStore {
    async fn apply(&self, batch: Arc<StoreBatch>) -> Result<BatchOutcome, StoreError> {
        if batch.is_empty() {
            return Ok(BatchOutcome::default());
        }
        self.write(move |conn| apply_batch(conn, &batch)).await
    }

    async fn totals(&self) -> Result<Totals, StoreError> {
        self.read(read_totals).await
    }

    async fn minute_windows(
        &self,
        from_us: i64,
        to_us: i64,
    ) -> Result<Vec<MinuteWindow>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT minute_us, country, order_count, sales_cents FROM order_minutes \
                     WHERE minute_us >= ?1 AND minute_us < ?2 ORDER BY minute_us",
                )
                .map_err(query_err)?;
            let rows = stmt
                .query_map(params![from_us, to_us], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(query_err)?;
            let mut windows: Vec<MinuteWindow> = Vec::new();
            for row in rows {
                let (minute, country, n, cents) = row.map_err(query_err)?;
                if windows.last().is_none_or(|w| w.minute.micros() != minute) {
                    windows.push(MinuteWindow {
                        minute: ts_from_us(minute)?,
                        order_count: 0,
                        total_sales: Cents(0),
                        by_country: BTreeMap::new(),
                    });
                }
                if let Some(w) = windows.last_mut() {
                    w.order_count += n as u64;
                    w.total_sales.0 += cents;
                    w.by_country.insert(
                        country,
                        CountAndSum {
                            count: n as u64,
                            sales: Cents(cents),
                        },
                    );
                }
            }
            Ok(windows)
        })
        .await
    }

    async fn max_order_id(&self) -> Result<Option<u64>, StoreError> {
        self.read(|conn| {
            conn.query_row("SELECT MAX(order_id) FROM orders", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .map(|v| v.map(|v| v as u64))
            .map_err(query_err)
        })
        .await
    }

    async fn latest_orders(&self, query: &OrderQuery) -> Result<Vec<OrderDocument>, StoreError> {
        let q = query.clone();
        self.read(move |conn| {
            let mut sql = format!("SELECT {ORDER_COLUMNS} FROM {ORDERS_JOINED} WHERE 1 = 1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            if let Some(before) = q.before_id {
                // The cursor is an order: list what arrived before it. The first term is
                // the range of the arrival index; the second orders ties by id.
                let before = before.min(i64::MAX as u64) as i64;
                let Some(arrived) = arrival_of(conn, before)? else {
                    return Ok(Vec::new());
                };
                sql.push_str(" AND o.processed_us <= ? AND (o.processed_us < ? OR o.order_id < ?)");
                args.extend([arrived.into(), arrived.into(), before.into()]);
            }
            if let Some(c) = q.country {
                sql.push_str(" AND o.country = ?");
                args.push(c.as_str().to_owned().into());
            }
            if let Some(s) = q.status {
                sql.push_str(" AND o.status = ?");
                args.push(s.as_str().to_owned().into());
            }
            match q.fraud {
                Some(true) => sql.push_str(" AND f.order_id IS NOT NULL"),
                Some(false) => sql.push_str(" AND f.order_id IS NULL"),
                None => {}
            }
            if let Some(p) = q.payment_status {
                sql.push_str(" AND p.status = ?");
                args.push(p.as_str().to_owned().into());
            }
            sql.push_str(" ORDER BY o.processed_us DESC, o.order_id DESC LIMIT ?");
            args.push((q.limit as i64).into());
            let mut stmt = conn.prepare_cached(&sql).map_err(query_err)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args), order_row)
                .map_err(query_err)?;
            collect(rows)
        })
        .await
    }

    async fn order(&self, order_id: u64) -> Result<Option<OrderDocument>, StoreError> {
        self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {ORDER_COLUMNS} FROM {ORDERS_JOINED} WHERE o.order_id = ?1"),
                [order_id.min(i64::MAX as u64) as i64],
                order_row,
            )
            .optional()
            .map_err(query_err)?
            .transpose()
        })
        .await
    }

    async fn alert(&self, order_id: u64) -> Result<Option<StoredAlert>, StoreError> {
        self.read(move |conn| {
            conn.query_row(
                "SELECT order_id, reason, rule_id, amount_cents, country, detected_us, stored_us \
                 FROM fraud_alerts WHERE order_id = ?1",
                [order_id.min(i64::MAX as u64) as i64],
                alert_row,
            )
            .optional()
            .map_err(query_err)?
            .transpose()
        })
        .await
    }

    async fn payment(&self, order_id: u64) -> Result<Option<StoredPayment>, StoreError> {
        self.read(move |conn| {
            conn.query_row(
                "SELECT order_id, status, amount_cents, country, ts, stored_us \
                 FROM payments WHERE order_id = ?1",
                [order_id.min(i64::MAX as u64) as i64],
                payment_row,
            )
            .optional()
            .map_err(query_err)?
            .transpose()
        })
        .await
    }

    async fn latest_alerts(&self, limit: usize) -> Result<Vec<StoredAlert>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT order_id, reason, rule_id, amount_cents, country, detected_us, \
                     stored_us FROM fraud_alerts ORDER BY stored_us DESC, order_id DESC LIMIT ?1",
                )
                .map_err(query_err)?;
            let rows = stmt
                .query_map([limit as i64], alert_row)
                .map_err(query_err)?;
            collect(rows)
        })
        .await
    }

    async fn latest_payments(&self, limit: usize) -> Result<Vec<StoredPayment>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT order_id, status, amount_cents, country, ts, stored_us \
                     FROM payments ORDER BY stored_us DESC, order_id DESC LIMIT ?1",
                )
                .map_err(query_err)?;
            let rows = stmt
                .query_map([limit as i64], payment_row)
                .map_err(query_err)?;
            collect(rows)
        })
        .await
    }

    async fn orders_before(
        &self,
        before_id: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredOrder>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {STORED_ORDER_COLUMNS} FROM orders WHERE order_id < ?1 \
                     ORDER BY order_id DESC LIMIT ?2"
                ))
                .map_err(query_err)?;
            let rows = stmt
                .query_map(
                    params![scan_bound(before_id), scan_limit(limit)],
                    stored_order_row,
                )
                .map_err(query_err)?;
            collect(rows)
        })
        .await
    }

    async fn alerts_before(
        &self,
        before_id: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT order_id, reason, rule_id, amount_cents, country, detected_us, \
                     stored_us FROM fraud_alerts WHERE order_id < ?1 \
                     ORDER BY order_id DESC LIMIT ?2",
                )
                .map_err(query_err)?;
            let rows = stmt
                .query_map(params![scan_bound(before_id), scan_limit(limit)], alert_row)
                .map_err(query_err)?;
            collect(rows)
        })
        .await
    }

    async fn payments_before(
        &self,
        before_id: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredPayment>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT order_id, status, amount_cents, country, ts, stored_us \
                     FROM payments WHERE order_id < ?1 ORDER BY order_id DESC LIMIT ?2",
                )
                .map_err(query_err)?;
            let rows = stmt
                .query_map(
                    params![scan_bound(before_id), scan_limit(limit)],
                    payment_row,
                )
                .map_err(query_err)?;
            collect(rows)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(query_err)
        })
        .await
    }

    async fn record_canary_stages(&self, stages: Arc<Vec<CanaryStage>>) -> Result<(), StoreError> {
        if stages.is_empty() {
            return Ok(());
        }
        self.write(move |conn| record_canary_stages(conn, &stages))
            .await
    }

    async fn canaries_before(
        &self,
        before_id: Option<u64>,
        limit: usize,
    ) -> Result<Vec<CanaryJourney>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT order_id, created_us, stored_us, decided_us, flagged, paid_us \
                     FROM canaries WHERE order_id < ?1 ORDER BY order_id DESC LIMIT ?2",
                )
                .map_err(query_err)?;
            let rows = stmt
                .query_map(
                    params![scan_bound(before_id), scan_limit(limit)],
                    canary_row,
                )
                .map_err(query_err)?;
            collect(rows)
        })
        .await
    }
}

/// Each stage sets its columns only where they are still empty: the first time wins.
fn record_canary_stages(conn: &mut Connection, stages: &[CanaryStage]) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(query_err)?;
    {
        let mut upsert = tx
            .prepare_cached(
                "INSERT INTO canaries (order_id, created_us, stored_us, decided_us, flagged, \
                 paid_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(order_id) DO UPDATE SET \
                 created_us = COALESCE(created_us, excluded.created_us), \
                 stored_us = COALESCE(stored_us, excluded.stored_us), \
                 flagged = CASE WHEN decided_us IS NULL THEN excluded.flagged ELSE flagged END, \
                 decided_us = COALESCE(decided_us, excluded.decided_us), \
                 paid_us = COALESCE(paid_us, excluded.paid_us)",
            )
            .map_err(query_err)?;
        for stage in stages {
            let id = stage.order_id().min(i64::MAX as u64) as i64;
            let none: Option<i64> = None;
            let result = match *stage {
                CanaryStage::Stored {
                    created_at,
                    stored_at,
                    ..
                } => upsert.execute(params![
                    id,
                    created_at.micros(),
                    stored_at.micros(),
                    none,
                    none,
                    none
                ]),
                CanaryStage::Decided { at, flagged, .. } => {
                    upsert.execute(params![id, none, none, at.micros(), flagged, none])
                }
                CanaryStage::Paid { at, .. } => {
                    upsert.execute(params![id, none, none, none, none, at.micros()])
                }
            };
            result.map_err(query_err)?;
        }
    }
    tx.commit().map_err(query_err)
}

fn canary_row(row: &Row<'_>) -> rusqlite::Result<Result<CanaryJourney, StoreError>> {
    let at = |i: usize| -> rusqlite::Result<Result<Option<Timestamp>, StoreError>> {
        Ok(row.get::<_, Option<i64>>(i)?.map(ts_from_us).transpose())
    };
    let (created, stored, decided, paid) = (at(1)?, at(2)?, at(3)?, at(5)?);
    let order_id = row.get::<_, i64>(0)? as u64;
    let flagged: Option<bool> = row.get(4)?;
    let build = || -> Result<CanaryJourney, StoreError> {
        Ok(CanaryJourney {
            order_id,
            created_at: created?,
            decided_at: decided?,
            flagged,
            paid_at: paid?,
            stored_at: stored?,
        })
    };
    Ok(build())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test
    use super::*;

    /// Rows are inserted in id order, not read order: whatever the order, each id is stored
    /// once, from the first record read, and a later record of the same id with other
    /// content is a conflict, counted nowhere.
    #[tokio::test]
    async fn rows_out_of_id_order_and_repeated_in_one_batch_keep_the_first_read() {
        use crate::generator::OrderGenerator;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("orders.db")).unwrap();
        let g = OrderGenerator::new(3);
        let now = Timestamp::now();
        let stored = |order: Order, offset: i64| StoredOrder {
            order,
            kafka_partition: 0,
            kafka_offset: offset,
            processed_at: now,
        };
        let first_of_5 = g.order(5, now);
        let mut other_5 = first_of_5.clone();
        other_5.amount = Cents(first_of_5.amount.0 + 1);
        let mut batch = StoreBatch::default();
        for (i, order) in [
            g.order(9, now),
            first_of_5.clone(),
            g.order(2, now),
            other_5,
        ]
        .into_iter()
        .enumerate()
        {
            let payment = Payment {
                order_id: order.order_id,
                status: PaymentStatus::Paid,
                amount: order.amount,
                country: order.country,
                timestamp: 1.0 + i as f64,
            };
            batch.push_payment(payment, KafkaPosition::default());
            batch.orders.push(stored(order, i as i64));
        }
        let outcome = store.apply(Arc::new(batch)).await.unwrap();
        assert_eq!((outcome.new_orders, outcome.new_payments), (3, 3));
        assert_eq!(outcome.conflicts.len(), 1, "{:?}", outcome.conflicts);
        assert_eq!(
            (
                outcome.conflicts[0].order_id,
                outcome.conflicts[0].kafka_offset
            ),
            (5, 3)
        );
        assert_eq!(store.order(5).await.unwrap().unwrap().order, first_of_5);
        let payments = store.latest_payments(10).await.unwrap();
        let paid_5 = payments.iter().find(|p| p.payment.order_id == 5).unwrap();
        assert_eq!(
            paid_5.payment.timestamp, 2.0,
            "the first payment read is kept"
        );
        let totals = store.totals().await.unwrap();
        assert_eq!(totals.order_count, 3);
    }

    #[test]
    fn connections_keep_plans_stable_across_bindings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.db");
        SqliteStore::open(&path).unwrap();
        for read_only in [false, true] {
            let conn = open(&path, read_only).unwrap();
            assert!(conn
                .db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG)
                .unwrap());
        }
    }

    /// Every arrival-ordered list walks an index: no sort of the whole table per page.
    #[test]
    fn arrival_lists_are_served_by_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.db");
        SqliteStore::open(&path).unwrap();
        let conn = open(&path, true).unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
            rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("; ")
        };
        for (sql, index) in [
            (
                format!(
                    "SELECT {ORDER_COLUMNS} FROM {ORDERS_JOINED} WHERE 1 = 1 AND o.processed_us \
                     <= 5 AND (o.processed_us < 5 OR o.order_id < 7) \
                     ORDER BY o.processed_us DESC, o.order_id DESC LIMIT 10"
                ),
                "orders_by_arrival",
            ),
            (
                "SELECT * FROM fraud_alerts ORDER BY stored_us DESC, order_id DESC LIMIT 5".into(),
                "fraud_alerts_by_arrival",
            ),
            (
                "SELECT * FROM payments ORDER BY stored_us DESC, order_id DESC LIMIT 5".into(),
                "payments_by_arrival",
            ),
        ] {
            let plan = plan(&sql);
            assert!(plan.contains(index), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
    }

    /// The writer only appends to the write-ahead log; the checkpointer copies it into the
    /// database as it goes, so the log stays small (it would hold every write otherwise).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_write_ahead_log_is_checkpointed_off_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.db");
        let store = SqliteStore::open(&path).unwrap();
        let generator = crate::generator::OrderGenerator::new(1);
        let now = Timestamp::now();
        let batches = 40;
        for b in 0..batches {
            let orders = (1..=2_000)
                .map(|i| StoredOrder {
                    order: generator.order(b * 2_000 + i, now),
                    kafka_partition: 0,
                    kafka_offset: (b * 2_000 + i) as i64,
                    processed_at: now,
                })
                .collect();
            let batch = StoreBatch {
                orders,
                ..StoreBatch::default()
            };
            store.apply(Arc::new(batch)).await.unwrap();
        }
        let wal = std::fs::metadata(dir.path().join("orders.db-wal"))
            .unwrap()
            .len();
        let db = std::fs::metadata(&path).unwrap().len();
        // Without checkpoints the log holds every page written, more than the database.
        assert!(wal < db / 2, "log {wal} bytes, database {db} bytes");
        let conn = open(&path, true).unwrap();
        let count: i64 = conn
            .query_row("SELECT COUNT(*) FROM orders", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, batches as i64 * 2_000);
    }
}
