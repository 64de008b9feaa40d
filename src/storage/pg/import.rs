//! `pxed migrate`: one host's SQLite state copied into the shared database
//! (docs/ha.md "From one host to several"). Leases, boot events, the machine
//! inventory and machine state (overrides, labels) go over in one
//! transaction; a database that already holds leases or events is refused,
//! so a second run, or a run against a live fleet, changes nothing.

use std::path::Path;

use rusqlite::Connection;
use tokio_postgres::types::ToSql;

use super::{explain, Db};

/// How many rows of each kind were copied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Imported {
    pub leases: u64,
    pub events: u64,
    pub machines: u64,
    pub machine_state: u64,
}

/// A table read whole: its rows, each a list of values in the column order
/// of `columns`.
struct Table {
    columns: &'static str,
    rows: Vec<Vec<Value>>,
}

type Value = Box<dyn ToSql + Sync + Send>;

/// Reads `sql` from `conn`, each column converted by `cols` (`i` bigint,
/// `n` integer, `s` smallint, `t` text or NULL, `b` bytes).
fn read(conn: &Connection, sql: &str, cols: &str) -> anyhow::Result<Vec<Vec<Value>>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([], |r| {
        let mut row: Vec<Value> = Vec::with_capacity(cols.len());
        for (i, kind) in cols.chars().enumerate() {
            row.push(match kind {
                'i' => Box::new(r.get::<_, Option<i64>>(i)?),
                'n' => Box::new(
                    r.get::<_, Option<i64>>(i)?
                        .and_then(|v| i32::try_from(v).ok()),
                ),
                's' => Box::new(
                    r.get::<_, Option<i64>>(i)?
                        .and_then(|v| i16::try_from(v).ok()),
                ),
                'b' => Box::new(r.get::<_, Vec<u8>>(i)?),
                _ => Box::new(r.get::<_, Option<String>>(i)?),
            });
        }
        Ok(row)
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn has_table(conn: &Connection, name: &str) -> anyhow::Result<bool> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// The tables of the SQLite files: leases from `lease_db`; events, the
/// inventory and machine state from `events_db` (by default the same file).
/// Leases are marked as written by `server` (a name: letters, digits,
/// `-_.`, checked by the config).
fn tables(
    lease_db: &Path,
    events_db: &Path,
    server: &str,
) -> anyhow::Result<Vec<(&'static str, Table)>> {
    let mut out = Vec::new();
    let leases = Connection::open(lease_db)?;
    if has_table(&leases, "leases")? {
        let sql = format!(
            "SELECT ip, client, mac, expires, state, '{server}' FROM leases WHERE state IN (1, 2, 3)"
        );
        let rows = read(&leases, &sql, "ibtist")?;
        let columns = "ip, client, mac, expires, state, server";
        out.push(("leases", Table { columns, rows }));
    }
    let conn = Connection::open(events_db)?;
    if has_table(&conn, "events")? {
        // Older files lack newer columns: the daemon's own upgrade adds them.
        crate::events::store::create_tables(&conn)?;
        let rows = read(
            &conn,
            "SELECT at, last_at, count, mac, ip, stage, outcome, rule, arch, product, detail, server
             FROM events ORDER BY id",
            "iinttttttttt",
        )?;
        let columns =
            "at, last_at, count, mac, ip, stage, outcome, rule, arch, product, detail, server";
        out.push(("events", Table { columns, rows }));
        let rows = read(
            &conn,
            "SELECT mac, first_at, last_at, stage, outcome, ip, rule, arch, product, serial,
                    manufacturer, uuid FROM machines",
            "tiittttttttt",
        )?;
        let columns = "mac, first_at, last_at, stage, outcome, ip, rule, arch, product, serial, manufacturer, uuid";
        out.push(("machines", Table { columns, rows }));
    }
    if has_table(&conn, "machine_state")? {
        let rows = read(
            &conn,
            "SELECT mac, labels, override_kind, override_rule, override_by, override_at, boots, tokens
             FROM machine_state",
            "tttttint",
        )?;
        let columns =
            "mac, labels, override_kind, override_rule, override_by, override_at, boots, tokens";
        out.push(("machine_state", Table { columns, rows }));
    }
    Ok(out)
}

/// Copies the SQLite state into `db` (see the module's doc).
pub async fn import_sqlite(db: &Db, lease_db: &Path, events_db: &Path) -> anyhow::Result<Imported> {
    let tables = tables(lease_db, events_db, &db.server)?;
    let mut c = db.client().await?;
    let tx = c.transaction().await.map_err(explain)?;
    let held: i64 = tx
        .query_one(
            "SELECT (SELECT count(*) FROM leases) + (SELECT count(*) FROM events)",
            &[],
        )
        .await
        .map_err(explain)?
        .get(0);
    if held > 0 {
        anyhow::bail!(
            "{} already holds {held} leases and events: pxed migrate copies into an empty database only",
            db.describe()
        );
    }
    let mut done = Imported::default();
    for (name, table) in &tables {
        let n = table.columns.split(',').count();
        let marks: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO {name} ({}) VALUES ({})",
            table.columns,
            marks.join(", ")
        );
        let stmt = tx.prepare(&sql).await.map_err(explain)?;
        for row in &table.rows {
            let params: Vec<&(dyn ToSql + Sync)> =
                row.iter().map(|v| &**v as &(dyn ToSql + Sync)).collect();
            tx.execute(&stmt, &params).await.map_err(explain)?;
        }
        let count = table.rows.len() as u64;
        match *name {
            "leases" => done.leases = count,
            "events" => done.events = count,
            "machines" => done.machines = count,
            _ => done.machine_state = count,
        }
    }
    tx.execute("SELECT nextval('machine_state_version')", &[])
        .await
        .map_err(explain)?;
    tx.commit().await.map_err(explain)?;
    Ok(done)
}
