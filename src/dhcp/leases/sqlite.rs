//! The SQLite lease store: one file in WAL mode, written by the lease thread
//! in one transaction per batch, checkpointed by a thread of its own.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};

use super::{Applied, Lease, Lease6, LeaseOp, LeaseStore, State};
use crate::core::Mac;

/// SQLite in WAL mode. `fsync = false` (synchronous=NORMAL): a commit has
/// reached the OS when `apply` returns, which survives `kill -9` of pxed but not
/// a power cut; `fsync = true` (synchronous=FULL) also survives a power cut at
/// the cost of one fsync per batch. See docs/decisions.md.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

/// Why the lease database's directory cannot take writes, if the filesystem
/// says so: the words an operator needs next to SQLite's own error ("disk
/// I/O error" is all it says when ext4 turns read-only after a disk error).
/// Asks `access(2)`, then tries to write a probe file, which is removed.
pub fn unwritable_reason(db: &Path) -> Option<String> {
    let dir = match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let errno = match nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK) {
        Err(e) => e as i32,
        Ok(()) => {
            let probe = dir.join(".pxed-write-test");
            let written = std::fs::write(&probe, b"x");
            let _ = std::fs::remove_file(&probe);
            written.err()?.raw_os_error()?
        }
    };
    let dir = dir.display();
    Some(match nix::errno::Errno::from_raw(errno) {
        nix::errno::Errno::EROFS => format!("{dir} is on a read-only filesystem"),
        nix::errno::Errno::ENOSPC | nix::errno::Errno::EDQUOT => {
            format!("the filesystem of {dir} is full")
        }
        e => format!("{dir} is not writable: {}", e.desc()),
    })
}

/// Adds the filesystem's reason, if any, to a database error.
fn with_reason(db: &Path, e: anyhow::Error) -> anyhow::Error {
    match unwritable_reason(db) {
        Some(why) => e.context(why),
        None => e,
    }
}

impl SqliteStore {
    pub fn open(path: &Path, fsync: bool) -> anyhow::Result<SqliteStore> {
        Self::open_inner(path, fsync).map_err(|e| with_reason(path, e))
    }

    fn open_inner(path: &Path, fsync: bool) -> anyhow::Result<SqliteStore> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", if fsync { "FULL" } else { "NORMAL" })?;
        // The boot-event writer shares this file when `[events] db` names it
        // (src/events/store.rs): wait for its transactions rather than fail
        // a commit.
        conn.busy_timeout(crate::events::store::BUSY_TIMEOUT)?;
        // Checkpoints (which fsync) run on their own thread, see
        // `spawn_checkpointer`, so that they never hold up a commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // SQLite falls back to a read-only connection when it cannot write
        // (a read-only filesystem): every commit would fail, so it is not
        // open as far as pxed is concerned.
        if conn.is_readonly(rusqlite::MAIN_DB)? {
            anyhow::bail!("the database can only be opened read-only");
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS leases (
                ip INTEGER PRIMARY KEY,
                client BLOB NOT NULL,
                mac TEXT NOT NULL,
                expires INTEGER NOT NULL,
                state INTEGER NOT NULL
            );
            CREATE TABLE IF NOT EXISTS leases6 (
                ip BLOB PRIMARY KEY,
                client BLOB NOT NULL,
                mac TEXT,
                expires INTEGER NOT NULL,
                state INTEGER NOT NULL
            );",
        )?;
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
        })
    }
}

/// Copies the WAL into the database file every second from a connection of
/// its own. A checkpoint fsyncs; done by the committer (SQLite's default
/// auto-checkpoint) it stalled every ACK behind a disk flush for up to hundreds
/// of milliseconds on a busy disk. A PASSIVE checkpoint never blocks the writer.
/// A failing checkpoint (disk full, read-only) is logged when it starts
/// failing and when it works again, not every second: the commit path reports
/// what clients feel (withheld ACKs).
pub fn spawn_checkpointer(path: &Path) -> anyhow::Result<()> {
    let conn = Connection::open(path)?;
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("pxed-checkpoint".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    Ok(()) if failing => {
                        tracing::info!(db = %path.display(), "lease database checkpoint works again");
                        failing = false;
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        let e = with_reason(&path, e.into());
                        tracing::warn!(db = %path.display(), error = format!("{e:#}"), "lease database checkpoint failed (the WAL keeps every commit meanwhile)");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
        })?;
    Ok(())
}

impl LeaseStore for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite {}", self.path.display())
    }

    fn load(&mut self) -> anyhow::Result<Vec<Lease>> {
        self.rows("leases", |r| {
            let (Ok(ip), Ok(mac), Some(state)) = (
                u32::try_from(r.get::<_, i64>(0)?),
                r.get::<_, String>(2)?.parse::<Mac>(),
                state_from_code(r.get(4)?),
            ) else {
                return Ok(None);
            };
            Ok(Some(Lease {
                ip: Ipv4Addr::from(ip),
                client: r.get(1)?,
                mac,
                expires: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                state,
            }))
        })
    }

    fn load6(&mut self) -> anyhow::Result<Vec<Lease6>> {
        self.rows("leases6", |r| {
            let ip = <[u8; 16]>::try_from(r.get::<_, Vec<u8>>(0)?.as_slice()).map(Ipv6Addr::from);
            let mac = r
                .get::<_, Option<String>>(2)?
                .map(|m| m.parse::<Mac>())
                .transpose();
            let (Ok(ip), Ok(mac), Some(state)) = (ip, mac, state_from_code(r.get(4)?)) else {
                return Ok(None);
            };
            Ok(Some(Lease6 {
                ip,
                client: r.get(1)?,
                mac,
                expires: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                state,
            }))
        })
    }

    fn apply(&mut self, ops: &[LeaseOp]) -> anyhow::Result<Applied> {
        self.apply_inner(ops)
            .map(|()| Applied::default())
            .map_err(|e| {
                let e = e.context(format!("cannot write {}", self.path.display()));
                with_reason(&self.path, e)
            })
    }
}

impl SqliteStore {
    /// Every row of `table` (`ip, client, mac, expires, state`) that `read`
    /// makes a lease of; an unreadable one is skipped, with a warning.
    fn rows<T>(
        &self,
        table: &str,
        read: impl Fn(&rusqlite::Row) -> rusqlite::Result<Option<T>>,
    ) -> anyhow::Result<Vec<T>> {
        let sql = format!("SELECT ip, client, mac, expires, state FROM {table}");
        let mut stmt = self.conn.prepare(&sql)?;
        let mut out = Vec::new();
        for row in stmt.query_map([], |r| read(r))? {
            match row? {
                Some(l) => out.push(l),
                None => tracing::warn!(table, "skipping an unreadable row in the lease database"),
            }
        }
        Ok(out)
    }

    fn apply_inner(&mut self, ops: &[LeaseOp]) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO leases (ip, client, mac, expires, state) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(ip) DO UPDATE SET client = ?2, mac = ?3, expires = ?4, state = ?5",
            )?;
            let mut del = tx.prepare_cached("DELETE FROM leases WHERE ip = ?1")?;
            let mut put6 = tx.prepare_cached(
                "INSERT INTO leases6 (ip, client, mac, expires, state) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(ip) DO UPDATE SET client = ?2, mac = ?3, expires = ?4, state = ?5",
            )?;
            let mut del6 = tx.prepare_cached("DELETE FROM leases6 WHERE ip = ?1")?;
            for op in ops {
                match op {
                    LeaseOp::Put(l) => {
                        put.execute(params![
                            u32::from(l.ip),
                            l.client,
                            l.mac.to_string(),
                            i64::try_from(l.expires).unwrap_or(i64::MAX),
                            state_code(l.state)
                        ])?;
                    }
                    LeaseOp::Delete { ip, .. } => {
                        del.execute(params![u32::from(*ip)])?;
                    }
                    LeaseOp::Put6(l) => {
                        put6.execute(params![
                            l.ip.octets().as_slice(),
                            l.client,
                            l.mac.map(|m| m.to_string()),
                            i64::try_from(l.expires).unwrap_or(i64::MAX),
                            state_code(l.state)
                        ])?;
                    }
                    LeaseOp::Delete6 { ip, .. } => {
                        del6.execute(params![ip.octets().as_slice()])?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// A lease state as stored in the `state` column. Offers are never stored.
fn state_code(s: State) -> i64 {
    match s {
        State::Offered => 0,
        State::Bound => 1,
        State::Declined => 2,
        State::Released => 3,
    }
}

fn state_from_code(c: i64) -> Option<State> {
    match c {
        1 => Some(State::Bound),
        2 => Some(State::Declined),
        3 => Some(State::Released),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::leases::Leases;

    const M: Mac = Mac([2, 0, 0, 0, 0, 1]);

    #[test]
    fn moving_a_client_deletes_its_old_row_and_sqlite_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("l.sqlite"), false).unwrap();
        let mut t = Leases::default();
        let a = Ipv4Addr::new(10, 0, 0, 10);
        let b = Ipv4Addr::new(10, 0, 0, 11);
        store.apply(&t.take(a, b"c", M, State::Bound, 50)).unwrap();
        let ops = t.take(b, b"c", M, State::Bound, 60);
        assert_eq!(
            ops[0],
            LeaseOp::Delete {
                ip: a,
                client: b"c".to_vec()
            }
        );
        store.apply(&ops).unwrap();
        let rows = store.load().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].ip, b);
        assert_eq!(rows[0].expires, 60);
        let t2 = Leases::from_stored(rows);
        assert_eq!(t2.of_client(b"c").map(|l| l.ip), Some(b));
    }

    /// DHCPv6 leases round-trip in their own table, in the same batches.
    #[test]
    fn ipv6_leases_share_the_batch_and_round_trip() {
        use crate::dhcp::leases::{Lease6, Leases6};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sqlite");
        let mut store = SqliteStore::open(&path, false).unwrap();
        let mut t = Leases6::default();
        let a: Ipv6Addr = "fd00::10".parse().unwrap();
        let b: Ipv6Addr = "fd00::11".parse().unwrap();
        let mut ops = t.take(a, b"k", Some(M), State::Bound, 50);
        ops.extend(Leases::default().take(Ipv4Addr::new(10, 0, 0, 9), b"c", M, State::Bound, 70));
        store.apply(&ops).unwrap();
        let ops = t.take(b, b"k", None, State::Bound, 60);
        assert!(matches!(&ops[0], LeaseOp::Delete6 { ip, .. } if *ip == a));
        store.apply(&ops).unwrap();
        let mut again = SqliteStore::open(&path, false).unwrap();
        let rows = again.load6().unwrap();
        let want = Lease6 {
            ip: b,
            client: b"k".to_vec(),
            mac: None,
            expires: 60,
            state: State::Bound,
        };
        assert_eq!(rows, vec![want]);
        assert_eq!(again.load().unwrap().len(), 1);
    }
}
