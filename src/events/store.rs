//! The event tables in SQLite: the writer's side (one connection, batched
//! inserts, retention) and the readers' (`pxed events`, the admin pages).
//! The database file is by default the lease database: WAL mode lets readers
//! and both writers share it, and `busy_timeout` makes a writer wait for the
//! other's short transaction instead of failing.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

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
CREATE INDEX IF NOT EXISTS events_by_time ON events (at);
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

/// Creates the event tables, and adds to an older file what it lacks.
pub(crate) fn create_tables(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('machines')")?;
    let have: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for column in MACHINE_COLUMNS_ADDED {
        if !have.iter().any(|h| h == column) {
            conn.execute_batch(&format!("ALTER TABLE machines ADD COLUMN {column} TEXT"))?;
        }
    }
    Ok(())
}

pub(crate) fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
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

    /// Stores a batch in one transaction: new rows, and each machine's
    /// summary. Repeats (see [`Memory::repeat_of`]) only raise the count of
    /// their earlier row, once per row per batch, so a boot loop or a load
    /// test costs a counter in memory per step, not a write.
    pub(super) fn write(
        &mut self,
        batch: &mut Vec<Event>,
        memory: &mut Memory,
    ) -> rusqlite::Result<()> {
        let mut folds: HashMap<i64, (u32, i64)> = HashMap::new();
        let mut seen: HashMap<String, i64> = HashMap::new();
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (at, last_at, mac, ip, stage, outcome, rule, arch, product, detail)
                 VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            let mut machine = tx.prepare_cached(
                "INSERT INTO machines (mac, first_at, last_at, stage, outcome, ip, rule, arch, product,
                                       serial, manufacturer, uuid)
                 VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?10, ?11, ?12)
                 ON CONFLICT (mac) DO UPDATE SET
                    last_at = excluded.last_at, stage = excluded.stage, outcome = excluded.outcome,
                    ip = coalesce(excluded.ip, ip),
                    rule = CASE WHEN ?9 THEN coalesce(excluded.rule, rule) ELSE coalesce(rule, excluded.rule) END,
                    arch = coalesce(excluded.arch, arch),
                    product = coalesce(excluded.product, product),
                    serial = coalesce(excluded.serial, serial),
                    manufacturer = coalesce(excluded.manufacturer, manufacturer),
                    uuid = coalesce(excluded.uuid, uuid)",
            )?;
            for e in batch.drain(..) {
                let at = millis(e.at);
                let mac = e.mac.map(|m| m.to_string());
                if let Some(id) = memory.repeat_of(&e) {
                    let fold = folds.entry(id).or_insert((0, at));
                    fold.0 += 1;
                    fold.1 = at;
                    if let Some(mac) = mac.filter(|_| e.stage.by_machine()) {
                        seen.insert(mac, at);
                    }
                    continue;
                }
                let ip = e.ip.map(|ip| ip.to_string());
                let arch = e.arch.map(|a| a.name());
                insert.execute(params![
                    at,
                    mac,
                    ip,
                    e.stage.name(),
                    e.outcome,
                    e.rule,
                    arch,
                    e.product,
                    e.detail
                ])?;
                let id = tx.last_insert_rowid();
                if let Some(mac) = mac.as_ref().filter(|_| e.stage.by_machine()) {
                    upsert_machine(&mut machine, mac, at, &e)?;
                    seen.remove(mac);
                }
                memory.remember(id, &e);
            }
            let mut fold = tx.prepare_cached(
                "UPDATE events SET count = count + ?2, last_at = max(last_at, ?3) WHERE id = ?1",
            )?;
            for (id, (n, at)) in folds {
                fold.execute(params![id, n, at])?;
            }
            let mut touch =
                tx.prepare_cached("UPDATE machines SET last_at = max(last_at, ?2) WHERE mac = ?1")?;
            for (mac, at) in seen {
                touch.execute(params![mac, at])?;
            }
        }
        tx.commit()
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

/// Updates a machine's inventory row with one of its steps.
fn upsert_machine(
    stmt: &mut rusqlite::CachedStatement,
    mac: &str,
    at: i64,
    e: &Event,
) -> rusqlite::Result<()> {
    let smbios = e.smbios.as_deref();
    let field = |f: fn(&super::Smbios) -> &Option<String>| smbios.and_then(|s| f(s).clone());
    stmt.execute(params![
        mac,
        at,
        e.stage.name(),
        e.outcome,
        e.ip.map(|ip| ip.to_string()),
        e.rule,
        e.arch.map(|a| a.name()),
        e.product,
        e.stage.decides_rule(),
        field(|s| &s.serial),
        field(|s| &s.manufacturer),
        field(|s| &s.uuid),
    ])?;
    Ok(())
}

/// One stored step, as `pxed events` and the timeline show it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Increases with every new row (`pxed events --follow` reads past it).
    pub id: i64,
    pub at: SystemTime,
    pub last_at: SystemTime,
    pub count: u32,
    pub mac: Option<String>,
    pub ip: Option<String>,
    pub stage: String,
    pub outcome: String,
    pub rule: Option<String>,
    pub arch: Option<String>,
    pub product: Option<String>,
    pub detail: String,
}

impl StoredEvent {
    /// One `pxed events --json` line: times in RFC 3339, absent values
    /// left out.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "id": self.id,
            "at": humantime::format_rfc3339_millis(self.at).to_string(),
            "stage": self.stage,
            "outcome": self.outcome,
            "detail": self.detail,
            "count": self.count,
        });
        if self.count > 1 {
            v["last_at"] = humantime::format_rfc3339_millis(self.last_at)
                .to_string()
                .into();
        }
        for (key, value) in [
            ("mac", &self.mac),
            ("ip", &self.ip),
            ("rule", &self.rule),
            ("arch", &self.arch),
            ("product", &self.product),
        ] {
            if let Some(value) = value {
                v[key] = value.clone().into();
            }
        }
        v
    }
}

impl fmt::Display for StoredEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        write!(
            f,
            "{}  {:17}  {:15}  {:9}  {:9}  {}",
            humantime::format_rfc3339_millis(self.at),
            dash(&self.mac),
            dash(&self.ip),
            self.stage,
            self.outcome,
            self.detail
        )?;
        if let Some(rule) = &self.rule {
            write!(f, "  rule={rule}")?;
        }
        if let Some(arch) = &self.arch {
            write!(f, "  arch={arch}")?;
        }
        if let Some(product) = &self.product {
            write!(f, "  product={product:?}")?;
        }
        if self.count > 1 {
            write!(
                f,
                "  (x{}, last {})",
                self.count,
                humantime::format_rfc3339_millis(self.last_at)
            )?;
        }
        Ok(())
    }
}

/// One machine's summary, for the machines page.
#[derive(Debug, Clone)]
pub struct Machine {
    pub mac: String,
    pub first_at: SystemTime,
    pub last_at: SystemTime,
    pub stage: String,
    pub outcome: String,
    pub ip: Option<String>,
    pub rule: Option<String>,
    pub arch: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
    pub manufacturer: Option<String>,
    pub uuid: Option<String>,
}

/// Which events [`Reader::query`] returns.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only this machine's.
    pub mac: Option<Mac>,
    /// The newest this many.
    pub limit: usize,
    /// Only those last seen at or after this time.
    pub since: Option<SystemTime>,
    /// Only rows recorded after this one.
    pub after_id: Option<i64>,
}

impl Machine {
    pub(crate) const COLUMNS: &'static str =
        "mac, m.first_at, m.last_at, m.stage, m.outcome, m.ip, m.rule, m.arch, m.product, m.serial, m.manufacturer, m.uuid";

    /// From the columns of [`Machine::COLUMNS`], in that order, at the start
    /// of a row.
    pub(crate) fn from_row(r: &rusqlite::Row) -> rusqlite::Result<Machine> {
        Ok(Machine {
            mac: r.get(0)?,
            first_at: from_millis(r.get(1)?),
            last_at: from_millis(r.get(2)?),
            stage: r.get(3)?,
            outcome: r.get(4)?,
            ip: r.get(5)?,
            rule: r.get(6)?,
            arch: r.get(7)?,
            product: r.get(8)?,
            serial: r.get(9)?,
            manufacturer: r.get(10)?,
            uuid: r.get(11)?,
        })
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
            "SELECT id, at, last_at, count, mac, ip, stage, outcome, rule, arch, product, detail
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
        w.write(&mut batch, m).unwrap();
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
