-- The embedded store as version 2 wrote it (before the arrival indexes), with two orders:
-- 9000001 stored first, 5 stored a second later.
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

-- Rows are only ever inserted: what the pipeline learns about an order (fraud, payment)
-- lives in its own table keyed by order id and is joined when reading, so a write never
-- rewrites a row and alerts or payments may arrive before their order.
-- Orders are listed newest first by scanning the primary key backwards; the filters
-- (country, status, fraud, payment) each keep a large share of orders, so a scan finds a
-- page quickly and secondary indexes would only slow every insert down.
PRAGMA user_version = 2;
INSERT INTO orders VALUES (9000001, 1234, 1999, 'USD', 'US', 'CREATED', 1705314600000000, NULL, 0, 0, 1705314600000000);
INSERT INTO orders VALUES (5, 1234, 2999, 'USD', 'DE', 'CREATED', 1705314601000000, NULL, 1, 0, 1705314601000000);
