//! Boot events and machine state in a file of their own. Up to issue 21 they
//! shared the lease database by default, and every event batch held the
//! file's one write lock while the lease committer waited for it (SQLite's
//! busy handler sleeps 1, 2, 5, 10… ms): ACKs queued behind events and left
//! in bursts that overflowed clients' socket buffers (docs/decisions.md,
//! "Events in their own file"). The default is now `pxed-events.sqlite`
//! beside the lease database; [`move_from_leases`] carries over what an
//! older version recorded in the lease file, once, at start.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

/// The tables that move, with the columns copied (every column the current
/// schema has: [`crate::events::store::create_tables`] brings an older file's tables
/// up to it first).
const MOVED: &[(&str, &str)] = &[
    (
        "events",
        "id, at, last_at, count, mac, ip, stage, outcome, rule, arch, product, detail, server",
    ),
    (
        "machines",
        "mac, first_at, last_at, stage, outcome, ip, rule, arch, product, serial, manufacturer, uuid",
    ),
    (
        "machine_state",
        "mac, labels, override_kind, override_rule, override_by, override_at, boots, tokens",
    ),
];

/// What [`move_from_leases`] moved.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Moved {
    pub events: u64,
    pub machines: u64,
}

/// Moves the event record and the machine state an older pxed kept in
/// `leases` into `events` (created if needed), then drops them from
/// `leases`. `None` when `leases` holds none of them (a new install, or
/// already moved). Copies first, in one transaction, and drops only after
/// that commit: a crash in between leaves the rows in both files, and the
/// next start copies again without duplicates (every table has a primary
/// key; rows already in `events` are kept).
pub fn move_from_leases(leases: &Path, events: &Path) -> anyhow::Result<Option<Moved>> {
    if !leases.exists() {
        return Ok(None);
    }
    let old = Connection::open(leases)?;
    old.busy_timeout(crate::events::store::BUSY_TIMEOUT)?;
    let present: Vec<&str> = MOVED
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| has_table(&old, t).unwrap_or(false))
        .collect();
    if present.is_empty() {
        return Ok(None);
    }
    // The old file's tables as the current schema has them (columns added
    // since it was written), so that one column list fits every version.
    crate::events::store::create_tables(&old)?;
    crate::machines::create_state_table(&old)?;
    drop(old);

    let mut new = Connection::open(events)?;
    new.pragma_update(None, "journal_mode", "WAL")?;
    new.busy_timeout(crate::events::store::BUSY_TIMEOUT)?;
    crate::events::store::create_tables(&new)?;
    crate::machines::create_state_table(&new)?;
    new.execute("ATTACH DATABASE ?1 AS old", [leases.to_string_lossy()])?;
    let tx = new.transaction()?;
    for (table, columns) in MOVED {
        tx.execute_batch(&format!(
            "INSERT OR IGNORE INTO main.{table} ({columns}) SELECT {columns} FROM old.{table}"
        ))?;
    }
    let count = |t: &str| -> rusqlite::Result<u64> {
        let n: i64 = tx.query_row(&format!("SELECT count(*) FROM old.{t}"), [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    let moved = Moved {
        events: count("events")?,
        machines: count("machines")?,
    };
    tx.commit()?;
    let tx = new.transaction()?;
    for (table, _) in MOVED {
        tx.execute_batch(&format!("DROP TABLE IF EXISTS old.{table}"))?;
    }
    tx.commit()?;
    new.execute("DETACH DATABASE old", [])?;
    Ok(Some(moved))
}

fn has_table(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease file as an older pxed left it: leases, events, machines and
    /// machine state in one database.
    fn old_layout(path: &Path) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "CREATE TABLE leases (ip INTEGER PRIMARY KEY, client BLOB NOT NULL, mac TEXT NOT NULL,
                                  expires INTEGER NOT NULL, state INTEGER NOT NULL);
             INSERT INTO leases VALUES (1, x'01', '52:54:00:00:00:01', 99, 1);",
        )
        .unwrap();
        // The first release's event tables: `create_tables` adds the
        // columns they lack before the copy.
        conn.execute_batch(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, last_at INTEGER NOT NULL,
                                  count INTEGER NOT NULL DEFAULT 1, mac TEXT, ip TEXT, stage TEXT NOT NULL,
                                  outcome TEXT NOT NULL, rule TEXT, arch TEXT, product TEXT, detail TEXT NOT NULL);
             CREATE TABLE machines (mac TEXT PRIMARY KEY, first_at INTEGER NOT NULL, last_at INTEGER NOT NULL,
                                    stage TEXT NOT NULL, outcome TEXT NOT NULL, ip TEXT, rule TEXT, arch TEXT,
                                    product TEXT);",
        )
        .unwrap();
        crate::machines::create_state_table(&conn).unwrap();
        conn.execute_batch(
            "INSERT INTO events (at, last_at, mac, stage, outcome, detail)
                 VALUES (1, 1, '52:54:00:00:00:01', 'dhcp', 'ok', 'discover'),
                        (2, 2, '52:54:00:00:00:01', 'script', 'ok', 'iPXE script');
             INSERT INTO machines (mac, first_at, last_at, stage, outcome)
                 VALUES ('52:54:00:00:00:01', 1, 2, 'script', 'ok');
             INSERT INTO machine_state (mac, override_kind) VALUES ('52:54:00:00:00:01', 'local');",
        )
        .unwrap();
    }

    fn rows(path: &Path, table: &str) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn events_and_machine_state_move_out_of_the_lease_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let (leases, events) = (dir.path().join("l.sqlite"), dir.path().join("e.sqlite"));
        old_layout(&leases);
        let moved = move_from_leases(&leases, &events).unwrap();
        assert_eq!(
            moved,
            Some(Moved {
                events: 2,
                machines: 1
            })
        );
        assert_eq!(rows(&events, "events"), 2);
        assert_eq!(rows(&events, "machines"), 1);
        assert_eq!(rows(&events, "machine_state"), 1);
        // The leases stay; what moved is gone from the lease file.
        assert_eq!(rows(&leases, "leases"), 1);
        let old = Connection::open(&leases).unwrap();
        for (table, _) in MOVED {
            assert!(
                !has_table(&old, table).unwrap(),
                "{table} still in the lease file"
            );
        }
        // The next start finds nothing to move.
        assert_eq!(move_from_leases(&leases, &events).unwrap(), None);
        assert_eq!(rows(&events, "events"), 2);
    }

    #[test]
    fn a_copy_interrupted_before_the_drop_is_redone_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let (leases, events) = (dir.path().join("l.sqlite"), dir.path().join("e.sqlite"));
        old_layout(&leases);
        // As if a first start copied, then died before dropping.
        let half = Connection::open(&events).unwrap();
        crate::events::store::create_tables(&half).unwrap();
        crate::events::store::create_tables(&Connection::open(&leases).unwrap()).unwrap();
        half.execute("ATTACH DATABASE ?1 AS old", [leases.to_string_lossy()])
            .unwrap();
        half.execute_batch("INSERT INTO events SELECT * FROM old.events")
            .unwrap();
        drop(half);
        move_from_leases(&leases, &events).unwrap();
        assert_eq!(rows(&events, "events"), 2);
        assert_eq!(rows(&events, "machine_state"), 1);
    }

    #[test]
    fn a_new_install_or_a_missing_lease_file_moves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (leases, events) = (dir.path().join("l.sqlite"), dir.path().join("e.sqlite"));
        assert_eq!(move_from_leases(&leases, &events).unwrap(), None);
        Connection::open(&leases)
            .unwrap()
            .execute_batch("CREATE TABLE leases (ip INTEGER PRIMARY KEY)")
            .unwrap();
        assert_eq!(move_from_leases(&leases, &events).unwrap(), None);
        assert!(!events.exists());
    }
}
