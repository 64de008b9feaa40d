//! The PostgreSQL schema, as numbered migrations applied at start.
//!
//! Each server applies what the database lacks, in one transaction under an
//! advisory lock, so servers that start together take turns and a failed
//! migration leaves nothing half done. A migration, once released, is never
//! edited: a change is a new entry at the end. Hand-written rather than a
//! migration crate: the lock for concurrent starts is the part that matters
//! and is three lines here (docs/decisions.md).

use deadpool_postgres::Object;

use super::explain;

/// The advisory lock key every pxed takes while migrating ("pxed" in ASCII).
const LOCK: i64 = 0x7078_6564;

/// `(version, SQL)`, oldest first.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "
CREATE SEQUENCE lease_seq;
-- One row per address: the primary key is what makes handing one address
-- to two clients impossible. Writes are conditional (src/storage/pg/leases.rs).
CREATE TABLE leases (
    ip bigint PRIMARY KEY,
    client bytea NOT NULL,
    mac text NOT NULL,
    expires bigint NOT NULL,          -- unix seconds
    state smallint NOT NULL,          -- 1 bound, 2 declined, 3 released
    server text NOT NULL,             -- who wrote the row last
    seq bigint NOT NULL DEFAULT nextval('lease_seq')  -- for the other servers' follow
);
CREATE INDEX leases_by_seq ON leases (seq);

CREATE TABLE events (
    id bigserial PRIMARY KEY,
    at bigint NOT NULL,               -- unix milliseconds
    last_at bigint NOT NULL,
    count integer NOT NULL DEFAULT 1,
    mac text,
    ip text,
    stage text NOT NULL,
    outcome text NOT NULL,
    rule text,
    arch text,
    product text,
    detail text NOT NULL,
    server text
);
CREATE INDEX events_by_mac ON events (mac, id);
CREATE INDEX events_by_time ON events (at);
CREATE INDEX events_by_last ON events (last_at);

CREATE TABLE machines (
    mac text PRIMARY KEY,
    first_at bigint NOT NULL,
    last_at bigint NOT NULL,
    stage text NOT NULL,
    outcome text NOT NULL,
    ip text,
    rule text,
    arch text,
    product text,
    serial text,
    manufacturer text,
    uuid text,
    server text
);
CREATE INDEX machines_by_time ON machines (last_at);

CREATE SEQUENCE machine_state_version;
CREATE TABLE machine_state (
    mac text PRIMARY KEY,
    labels text NOT NULL DEFAULT '{}',
    override_kind text CHECK (override_kind IN ('once', 'until_cleared', 'local')),
    override_rule text,
    override_by text,
    override_at bigint,
    boots integer NOT NULL DEFAULT 0,
    tokens text NOT NULL DEFAULT ''
);
",
    ),
    (
        2,
        "
-- DHCPv6 leases (src/dhcp/v6/): one row per address, written like leases
-- (src/storage/pg/leases6.rs). `mac` is NULL for a client whose MAC nothing
-- carried; `client` is the MAC-derived key or DUID + IAID.
CREATE TABLE leases6 (
    ip bytea PRIMARY KEY,
    client bytea NOT NULL,
    mac text,
    expires bigint NOT NULL,
    state smallint NOT NULL,
    server text NOT NULL,
    seq bigint NOT NULL DEFAULT nextval('lease_seq')
);
CREATE INDEX leases6_by_seq ON leases6 (seq);
",
    ),
];

/// Brings the schema up to date; returns the versions applied now.
pub async fn apply(c: &mut Object, server: &str) -> anyhow::Result<Vec<i32>> {
    let tx = c.transaction().await.map_err(explain)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await
        .map_err(explain)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS pxed_schema (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now(),
            applied_by text NOT NULL
        )",
    )
    .await
    .map_err(explain)?;
    let have: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM pxed_schema", &[])
        .await
        .map_err(explain)?
        .get(0);
    if let Some(newest) = MIGRATIONS.last().filter(|m| have > m.0) {
        anyhow::bail!(
            "the database schema is version {have}, newer than this pxed knows ({}): upgrade pxed",
            newest.0
        );
    }
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > have) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| explain(e).context(format!("schema migration {version}")))?;
        tx.execute(
            "INSERT INTO pxed_schema (version, applied_by) VALUES ($1, $2)",
            &[version, &server],
        )
        .await
        .map_err(explain)?;
        applied.push(*version);
    }
    tx.commit().await.map_err(explain)?;
    if !applied.is_empty() {
        tracing::info!(versions = ?applied, "database schema migrated");
    }
    Ok(applied)
}
