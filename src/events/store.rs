//! The event tables in SQLite: the writer's side (one connection, batched
//! inserts, retention) and the readers' (`pxed events`, the admin pages).
//! The database file is by default `pxed-events.sqlite`, apart from the
//! leases (`storage/split.rs`); an operator may still name the lease file, and then
//! WAL mode lets readers and both writers share it, and `busy_timeout` makes
//! a writer wait for the other's transaction instead of failing.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

pub(crate) use super::stored::{from_millis, millis};
pub use super::stored::{Machine, Query, StoredEvent};
use super::{Event, Memory, Retention};
use crate::core::Mac;

/// How long a writer waits for the other writer of the same file.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The event tables (see [`create_tables`]).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,          -- unix milliseconds
    last_at INTEGER NOT NULL,     -- of the last repeat folded into this row
    count INTEGER NOT NULL DEFAULT 1,
    mac TEXT,
    ip TEXT,
    stage TEXT NOT NULL,
    outcome TEXT NOT NULL,
    rule TEXT,
    arch TEXT,
    product TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_mac ON events (mac, id);
-- No index on `at`: no query looks rows up by it (`--since` and retention
-- read `last_at`, over the id order), and every insert paid for it.
DROP INDEX IF EXISTS events_by_time;
CREATE TABLE IF NOT EXISTS machines (
    mac TEXT PRIMARY KEY,
    first_at INTEGER NOT NULL,
    last_at INTEGER NOT NULL,
    stage TEXT NOT NULL,
    outcome TEXT NOT NULL,
    ip TEXT,
    rule TEXT,
    arch TEXT,
    product TEXT
);
CREATE INDEX IF NOT EXISTS machines_by_time ON machines (last_at);
";

/// Columns added to `machines` after its first release (the SMBIOS identity
/// of the machine inventory, issue 17): added to older files at open.
const MACHINE_COLUMNS_ADDED: &[&str] = &["serial", "manufacturer", "uuid"];
/// Columns added to `events` after its first release: the server that
/// handled the step (issue 18).
const EVENT_COLUMNS_ADDED: &[&str] = &["server"];

/// Creates the event tables, and adds to an older file what it lacks.
pub(crate) fn create_tables(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    for (table, added) in [
        ("machines", MACHINE_COLUMNS_ADDED),
        ("events", EVENT_COLUMNS_ADDED),
    ] {
        let mut stmt = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
        let have: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for column in added {
            if !have.iter().any(|h| h == column) {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} TEXT"))?;
            }
        }
    }
    Ok(())
}

pub struct Writer {
    conn: Connection,
}

impl Writer {
    pub fn open(path: &Path) -> rusqlite::Result<Writer> {
        let conn = Connection::open(path)?;
        // SQLite quietly opens read-only what it cannot write (a read-only
        // filesystem); such a writer would fail every batch and could hold
        // up the lease database's commits in the same file.
        if conn.is_readonly(rusqlite::MAIN_DB)? {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
                Some("the database is read-only here".into()),
            ));
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        create_tables(&conn)?;
        Ok(Writer { conn })
    }

    /// Every machine's last known address, to attribute steps after a restart.
    pub fn known_addresses(&self) -> rusqlite::Result<Vec<(IpAddr, Mac)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT ip, mac FROM machines WHERE ip IS NOT NULL")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        Ok(rows
            .filter_map(Result::ok)
            .filter_map(|(ip, mac)| Some((ip.parse().ok()?, mac.parse().ok()?)))
            .collect())
    }

    /// Stores a batch in one transaction (see `batch.rs`), each step
    /// tagged with `server`.
    pub(super) fn write(
        &mut self,
        batch: &mut Vec<Event>,
        memory: &mut Memory,
        server: &str,
    ) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        super::batch::write(batch, memory, &mut SqliteSink { tx: &tx, server })?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes events older than the retention time and the oldest beyond
    /// the row limit, and machines not seen within the retention time.
    pub fn prune(&mut self, r: Retention, now: SystemTime) -> rusqlite::Result<usize> {
        let cutoff = millis(now.checked_sub(r.keep).unwrap_or(UNIX_EPOCH));
        let max = i64::try_from(r.max_events).unwrap_or(i64::MAX);
        let tx = self.conn.transaction()?;
        let mut deleted = tx.execute("DELETE FROM events WHERE last_at < ?1", params![cutoff])?;
        deleted += tx.execute(
            "DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?1",
            params![max],
        )?;
        tx.execute("DELETE FROM machines WHERE last_at < ?1", params![cutoff])?;
        tx.execute(
            "DELETE FROM machines WHERE mac IN
               (SELECT mac FROM machines ORDER BY last_at DESC LIMIT -1 OFFSET ?1)",
            params![max],
        )?;
        tx.commit()?;
        Ok(deleted)
    }
}

/// The batch's statements on one SQLite transaction.
struct SqliteSink<'a> {
    tx: &'a rusqlite::Transaction<'a>,
    server: &'a str,
}

/// A machine's summary row updated with its steps of a batch
/// ([`super::batch::MachineUpdate`]): the rule is the one a script or menu
/// step chose (DHCP only knows MAC and arch); the rest keeps the last known
/// value.
const UPSERT_MACHINE: &str =
    "INSERT INTO machines (mac, first_at, last_at, stage, outcome, ip, rule, arch, product,
                       serial, manufacturer, uuid)
 VALUES (?1, ?2, ?3, ?4, ?5, ?6, coalesce(?7, ?8), ?9, ?10, ?11, ?12, ?13)
 ON CONFLICT (mac) DO UPDATE SET
    last_at = excluded.last_at, stage = excluded.stage, outcome = excluded.outcome,
    ip = coalesce(excluded.ip, ip),
    rule = coalesce(?7, rule, ?8),
    arch = coalesce(excluded.arch, arch),
    product = coalesce(excluded.product, product),
    serial = coalesce(excluded.serial, serial),
    manufacturer = coalesce(excluded.manufacturer, manufacturer),
    uuid = coalesce(excluded.uuid, uuid)";

impl super::batch::Sink for SqliteSink<'_> {
    fn insert(&mut self, e: &Event, at: i64) -> anyhow::Result<i64> {
        let mut insert = self.tx.prepare_cached(
            "INSERT INTO events (at, last_at, mac, ip, stage, outcome, rule, arch, product, detail, server)
             VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        insert.execute(params![
            at,
            e.mac.map(|m| m.to_string()),
            e.ip.map(|ip| ip.to_string()),
            e.stage.name(),
            e.outcome,
            e.rule,
            e.arch.map(|a| a.name()),
            e.product,
            e.detail,
            self.server,
        ])?;
        Ok(self.tx.last_insert_rowid())
    }

    fn machine(&mut self, mac: &str, m: &super::batch::MachineUpdate) -> anyhow::Result<()> {
        let mut stmt = self.tx.prepare_cached(UPSERT_MACHINE)?;
        stmt.execute(params![
            mac,
            m.first_at,
            m.last_at,
            m.stage,
            m.outcome,
            m.ip,
            m.rule,
            m.rule_fallback,
            m.arch,
            m.product,
            m.serial,
            m.manufacturer,
            m.uuid,
        ])?;
        Ok(())
    }

    fn fold(&mut self, id: i64, n: u32, at: i64) -> anyhow::Result<()> {
        let mut fold = self.tx.prepare_cached(
            "UPDATE events SET count = count + ?2, last_at = max(last_at, ?3) WHERE id = ?1",
        )?;
        fold.execute(params![id, n, at])?;
        Ok(())
    }

    fn touch(&mut self, mac: &str, at: i64) -> anyhow::Result<()> {
        let mut touch = self
            .tx
            .prepare_cached("UPDATE machines SET last_at = max(last_at, ?2) WHERE mac = ?1")?;
        touch.execute(params![mac, at])?;
        Ok(())
    }
}

/// A read-only view of the event database.
pub struct Reader {
    conn: Connection,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no event database at {0} (nothing recorded yet, or [events] db points elsewhere)")]
    Missing(String),
    #[error("cannot read the event database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader, ReadError> {
        if !path.exists() {
            return Err(ReadError::Missing(path.display().to_string()));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let has_events: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if has_events.is_none() {
            return Err(ReadError::Missing(path.display().to_string()));
        }
        Ok(Reader { conn })
    }

    /// The newest `limit` events (of one machine, if `mac`), oldest first.
    pub fn events(&self, mac: Option<Mac>, limit: usize) -> Result<Vec<StoredEvent>, ReadError> {
        self.query(&Query {
            mac,
            limit,
            since: None,
            after_id: None,
        })
    }

    /// The newest `q.limit` events that `q` selects, oldest first.
    pub fn query(&self, q: &Query) -> Result<Vec<StoredEvent>, ReadError> {
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, at, last_at, count, mac, ip, stage, outcome, rule, arch, product, detail, server
             FROM (SELECT * FROM events
                   WHERE (?1 IS NULL OR mac = ?1) AND (?3 IS NULL OR last_at >= ?3)
                     AND (?4 IS NULL OR id > ?4)
                   ORDER BY id DESC LIMIT ?2)
             ORDER BY at, id",
        )?;
        let mac = q.mac.map(|m| m.to_string());
        let since = q.since.map(millis);
        let rows = stmt.query_map(params![mac, limit, since, q.after_id], |r| {
            Ok(StoredEvent {
                id: r.get(0)?,
                at: from_millis(r.get(1)?),
                last_at: from_millis(r.get(2)?),
                count: r.get(3)?,
                mac: r.get(4)?,
                ip: r.get(5)?,
                stage: r.get(6)?,
                outcome: r.get(7)?,
                rule: r.get(8)?,
                arch: r.get(9)?,
                product: r.get(10)?,
                detail: r.get(11)?,
                server: r.get(12)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The id of the newest row (0 when there is none).
    pub fn last_id(&self) -> Result<i64, ReadError> {
        Ok(self
            .conn
            .query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))?)
    }

    /// Every machine seen, most recent first (at most `limit`).
    pub fn machines(&self, limit: usize) -> Result<Vec<Machine>, ReadError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {} FROM machines m ORDER BY last_at DESC LIMIT ?1",
            Machine::COLUMNS
        ))?;
        let rows = stmt.query_map(params![limit], Machine::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Stage;

    fn mac(n: u8) -> Mac {
        format!("52:54:00:00:00:{n:02x}").parse().unwrap()
    }

    fn write(w: &mut Writer, m: &mut Memory, events: Vec<Event>) {
        let mut batch = events;
        for e in &mut batch {
            m.attribute(e);
        }
        w.write(&mut batch, m, "test").unwrap();
    }

    #[test]
    fn events_round_trip_fold_and_summarise_machines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.sqlite");
        let mut w = Writer::open(&path).unwrap();
        let mut m = Memory::default();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        write(
            &mut w,
            &mut m,
            vec![
                Event::new(Stage::Dhcp, "ok", "request → ack")
                    .mac(Some(mac(1)))
                    .ip(ip)
                    .rule(Some("by-mac")),
                Event::new(Stage::Tftp, "ok", "undionly.kpxe").ip(ip),
                Event::new(Stage::Script, "ok", "script")
                    .mac(Some(mac(1)))
                    .ip(ip)
                    .rule(Some("by-product")),
                Event::new(Stage::Script, "ok", "script")
                    .mac(Some(mac(1)))
                    .ip(ip)
                    .rule(Some("by-product")),
                Event::new(Stage::Dhcp, "ok", "discover → offer").mac(Some(mac(2))),
            ],
        );
        // A DHCP step after the script does not take the machine's rule back.
        write(
            &mut w,
            &mut m,
            vec![Event::new(Stage::Dhcp, "ok", "request → ack")
                .mac(Some(mac(1)))
                .ip(ip)
                .rule(Some("by-mac"))],
        );
        let r = Reader::open(&path).unwrap();
        let one = r.events(Some(mac(1)), 100).unwrap();
        let stages: Vec<_> = one.iter().map(|e| (e.stage.as_str(), e.count)).collect();
        assert_eq!(
            stages,
            [("dhcp", 1), ("tftp", 1), ("script", 2), ("dhcp", 1)]
        );
        assert_eq!(r.events(None, 100).unwrap().len(), 5);
        assert_eq!(r.events(None, 2).unwrap().len(), 2, "limit");
        let machines = r.machines(100).unwrap();
        assert_eq!(machines.len(), 2);
        let m1 = machines
            .iter()
            .find(|x| x.mac == mac(1).to_string())
            .unwrap();
        assert_eq!(m1.rule.as_deref(), Some("by-product"));
        assert_eq!(m1.stage, "dhcp");
        assert_eq!(m1.ip.as_deref(), Some("10.0.0.5"));
        // A writer reopened after a restart still knows who had the address.
        drop(w);
        let w2 = Writer::open(&path).unwrap();
        assert_eq!(w2.known_addresses().unwrap(), vec![(ip, mac(1))]);
    }

    #[test]
    fn retention_deletes_by_age_and_by_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.sqlite");
        let mut w = Writer::open(&path).unwrap();
        let mut m = Memory::default();
        let old = SystemTime::now() - Duration::from_secs(40 * 86_400);
        let mut events: Vec<Event> = (0..5)
            .map(|i| {
                let mut e = Event::new(Stage::Dhcp, "ok", format!("old {i}")).mac(Some(mac(i)));
                e.at = old;
                e
            })
            .collect();
        events.extend(
            (0..20).map(|i| Event::new(Stage::Dhcp, "ok", format!("new {i}")).mac(Some(mac(100)))),
        );
        write(&mut w, &mut m, events);
        let keep = Retention {
            keep: Duration::from_secs(30 * 86_400),
            max_events: 10,
        };
        w.prune(keep, SystemTime::now()).unwrap();
        let r = Reader::open(&path).unwrap();
        let left = r.events(None, 1000).unwrap();
        assert_eq!(left.len(), 10);
        assert!(left.iter().all(|e| e.detail.starts_with("new")));
        assert_eq!(left.last().unwrap().detail, "new 19");
        assert_eq!(
            r.machines(100).unwrap().len(),
            1,
            "machines unseen for 40 days are gone"
        );
    }

    #[test]
    fn a_missing_database_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Reader::open(&dir.path().join("none.sqlite")).err().unwrap();
        assert!(err.to_string().contains("no event database"), "{err}");
    }
}
