//! Who holds which address. Two halves:
//! - [`Leases`], the in-memory table the exchange consults and changes; it is
//!   the only allocator, so an address can never be handed to two clients
//!   (one entry per address, one address per client);
//! - a [`LeaseStore`] (SQLite in production, memory in unit tests) that makes
//!   bound, declined and released leases durable. The table is rebuilt from the
//!   store at start. Offers are held in memory only: nothing was promised yet.
//!
//! The exchange never writes the store itself: it returns [`LeaseOp`]s, and the
//! committer (`commit.rs`) applies them in one transaction before it sends the
//! ACKs that depend on them.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};

use crate::config::Subnet;
use crate::core::Mac;

/// Seconds an offered address stays held for the client it was offered to.
pub const OFFER_HOLD: u64 = 30;
/// Seconds a declined address (in use by someone else, says a client's ARP
/// probe) is kept out of the pool.
pub const QUARANTINE: u64 = 600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Offered, not yet requested; memory only.
    Offered,
    Bound,
    /// Declined by a client; quarantined until `expires`.
    Declined,
    /// Given back by the client; free, but the client gets it again first.
    Released,
}

impl State {
    fn code(self) -> i64 {
        match self {
            State::Offered => 0,
            State::Bound => 1,
            State::Declined => 2,
            State::Released => 3,
        }
    }

    fn from_code(c: i64) -> Option<State> {
        match c {
            1 => Some(State::Bound),
            2 => Some(State::Declined),
            3 => Some(State::Released),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    /// Option 61, or hardware type + chaddr when the client sends none.
    /// Empty for a declined address (it belongs to nobody).
    pub client: Vec<u8>,
    pub mac: Mac,
    /// Unix seconds.
    pub expires: u64,
    pub state: State,
}

/// A change to make durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOp {
    Put(Lease),
    Delete(Ipv4Addr),
}

/// Durable lease storage: load everything at start, apply a batch atomically.
pub trait LeaseStore: Send {
    fn load(&mut self) -> anyhow::Result<Vec<Lease>>;
    /// Applies every op in one transaction; returns only once it is committed.
    fn apply(&mut self, ops: &[LeaseOp]) -> anyhow::Result<()>;
}

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
    fn load(&mut self) -> anyhow::Result<Vec<Lease>> {
        let mut stmt = self
            .conn
            .prepare("SELECT ip, client, mac, expires, state FROM leases")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (ip, client, mac, expires, state) = row?;
            let (Ok(ip), Ok(mac), Some(state)) = (
                u32::try_from(ip),
                mac.parse::<Mac>(),
                State::from_code(state),
            ) else {
                tracing::warn!(ip, "skipping an unreadable row in the lease database");
                continue;
            };
            out.push(Lease {
                ip: Ipv4Addr::from(ip),
                client,
                mac,
                expires: u64::try_from(expires).unwrap_or(0),
                state,
            });
        }
        Ok(out)
    }

    fn apply(&mut self, ops: &[LeaseOp]) -> anyhow::Result<()> {
        self.apply_inner(ops).map_err(|e| {
            let e = e.context(format!("cannot write {}", self.path.display()));
            with_reason(&self.path, e)
        })
    }
}

impl SqliteStore {
    fn apply_inner(&mut self, ops: &[LeaseOp]) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO leases (ip, client, mac, expires, state) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(ip) DO UPDATE SET client = ?2, mac = ?3, expires = ?4, state = ?5",
            )?;
            let mut del = tx.prepare_cached("DELETE FROM leases WHERE ip = ?1")?;
            for op in ops {
                match op {
                    LeaseOp::Put(l) => {
                        put.execute(params![
                            u32::from(l.ip),
                            l.client,
                            l.mac.to_string(),
                            i64::try_from(l.expires).unwrap_or(i64::MAX),
                            l.state.code()
                        ])?;
                    }
                    LeaseOp::Delete(ip) => {
                        del.execute(params![u32::from(*ip)])?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// A store that forgets everything: for unit tests.
#[derive(Default)]
pub struct MemoryStore {
    pub rows: HashMap<Ipv4Addr, Lease>,
}

impl LeaseStore for MemoryStore {
    fn load(&mut self) -> anyhow::Result<Vec<Lease>> {
        Ok(self.rows.values().cloned().collect())
    }

    fn apply(&mut self, ops: &[LeaseOp]) -> anyhow::Result<()> {
        for op in ops {
            match op {
                LeaseOp::Put(l) => {
                    self.rows.insert(l.ip, l.clone());
                }
                LeaseOp::Delete(ip) => {
                    self.rows.remove(ip);
                }
            }
        }
        Ok(())
    }
}

/// The in-memory lease table: the allocator.
#[derive(Debug, Default)]
pub struct Leases {
    by_ip: HashMap<Ipv4Addr, Lease>,
    by_client: HashMap<Vec<u8>, Ipv4Addr>,
    /// Next address to try, per subnet (by network address).
    cursors: HashMap<Ipv4Addr, u32>,
}

impl Leases {
    pub fn from_stored(leases: Vec<Lease>) -> Leases {
        let mut t = Leases::default();
        for l in leases {
            if !l.client.is_empty() {
                t.by_client.insert(l.client.clone(), l.ip);
            }
            t.by_ip.insert(l.ip, l);
        }
        t
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    pub fn get(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.by_ip.get(&ip)
    }

    /// The address this client holds or was offered, whatever its state.
    pub fn of_client(&self, client: &[u8]) -> Option<&Lease> {
        self.by_client
            .get(client)
            .and_then(|ip| self.by_ip.get(ip))
            .filter(|l| l.client == client)
    }

    /// Whether `client` may have `ip`: nobody else holds it (an unexpired
    /// offer or binding, or a quarantine).
    pub fn is_free_for(&self, ip: Ipv4Addr, client: &[u8], now: u64) -> bool {
        match self.by_ip.get(&ip) {
            None => true,
            Some(l) if l.state == State::Declined => l.expires <= now,
            Some(l) => l.client == client || l.expires <= now || l.state == State::Released,
        }
    }

    /// Picks an address for `client` in `subnet`: its reservation, then the
    /// address it already has, then the one it asks for, then a never-used one,
    /// then the longest-expired one. `reserved` holds every reserved address
    /// (never handed to anyone else). `None`: the pool is exhausted.
    pub fn allocate(
        &mut self,
        subnet: &Subnet,
        client: &[u8],
        reservation: Option<Ipv4Addr>,
        requested: Option<Ipv4Addr>,
        reserved: &HashSet<Ipv4Addr>,
        now: u64,
    ) -> Option<Ipv4Addr> {
        if let Some(ip) = reservation.filter(|ip| subnet.contains(*ip)) {
            return self.is_free_for(ip, client, now).then_some(ip);
        }
        let usable = |ip: Ipv4Addr| subnet.in_pool(ip) && !reserved.contains(&ip);
        if let Some(l) = self.of_client(client) {
            if usable(l.ip) && self.is_free_for(l.ip, client, now) {
                return Some(l.ip);
            }
        }
        if let Some(ip) = requested {
            if usable(ip) && self.is_free_for(ip, client, now) {
                return Some(ip);
            }
        }
        let (first, last) = subnet.pool?;
        let (first, last) = (u32::from(first), u32::from(last));
        let size = last - first + 1;
        let cursor = self.cursors.entry(subnet.network).or_insert(first);
        let start = (*cursor).clamp(first, last);
        for i in 0..size {
            let ip = Ipv4Addr::from(first + (start - first + i) % size);
            if !self.by_ip.contains_key(&ip) && !reserved.contains(&ip) {
                *cursor = u32::from(ip).saturating_add(1);
                return Some(ip);
            }
        }
        self.by_ip
            .values()
            .filter(|l| usable(l.ip) && self.is_free_for(l.ip, client, now))
            .min_by_key(|l| (l.expires, u32::from(l.ip)))
            .map(|l| l.ip)
    }

    /// Takes `ip` for `client` in `state` until `expires`. Returns what must
    /// be made durable: the new lease, and the client's previous address if it
    /// moved (offers are memory-only and return nothing).
    pub fn take(
        &mut self,
        ip: Ipv4Addr,
        client: &[u8],
        mac: Mac,
        state: State,
        expires: u64,
    ) -> Vec<LeaseOp> {
        let mut ops = Vec::new();
        if let Some(old) = self.by_ip.get(&ip) {
            if old.client != client && self.by_client.get(&old.client) == Some(&ip) {
                let old_client = old.client.clone();
                self.by_client.remove(&old_client);
            }
        }
        if let Some(prev) = self.by_client.insert(client.to_vec(), ip) {
            if prev != ip {
                if let Some(p) = self.by_ip.remove(&prev) {
                    if p.state != State::Offered {
                        ops.push(LeaseOp::Delete(prev));
                    }
                }
            }
        }
        let lease = Lease {
            ip,
            client: client.to_vec(),
            mac,
            expires,
            state,
        };
        if state != State::Offered {
            ops.push(LeaseOp::Put(lease.clone()));
        }
        self.by_ip.insert(ip, lease);
        ops
    }

    /// Forgets an offer the client turned down (it chose another server).
    pub fn drop_offer(&mut self, client: &[u8]) {
        if let Some(l) = self.of_client(client) {
            if l.state == State::Offered {
                let ip = l.ip;
                self.by_ip.remove(&ip);
                self.by_client.remove(client);
            }
        }
    }

    /// A client says `ip` is in use by someone else: quarantine it.
    pub fn decline(&mut self, ip: Ipv4Addr, client: &[u8], now: u64) -> Option<LeaseOp> {
        let l = self.by_ip.get_mut(&ip).filter(|l| l.client == client)?;
        l.client = Vec::new();
        l.state = State::Declined;
        l.expires = now + QUARANTINE;
        let op = LeaseOp::Put(l.clone());
        self.by_client.remove(client);
        Some(op)
    }

    /// A client gives `ip` back.
    pub fn release(&mut self, ip: Ipv4Addr, client: &[u8], now: u64) -> Option<LeaseOp> {
        let l = self
            .by_ip
            .get_mut(&ip)
            .filter(|l| l.client == client && l.state == State::Bound)?;
        l.state = State::Released;
        l.expires = now;
        Some(LeaseOp::Put(l.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(first: u8, last: u8) -> Subnet {
        Subnet {
            network: Ipv4Addr::new(10, 0, 0, 0),
            prefix: 24,
            pool: Some((
                Ipv4Addr::new(10, 0, 0, first),
                Ipv4Addr::new(10, 0, 0, last),
            )),
            router: None,
            dns: vec![],
            domain: None,
            lease_time: 60,
        }
    }

    const M: Mac = Mac([2, 0, 0, 0, 0, 1]);

    #[test]
    fn never_two_clients_on_one_address_and_exhaustion() {
        let s = subnet(10, 12);
        let mut t = Leases::default();
        let none = HashSet::new();
        let mut got = HashSet::new();
        for c in 0u8..3 {
            let ip = t.allocate(&s, &[c], None, None, &none, 100).unwrap();
            assert!(got.insert(ip), "{ip} handed out twice");
            t.take(ip, &[c], M, State::Bound, 200);
        }
        assert_eq!(t.allocate(&s, &[9], None, None, &none, 100), None);
        // The same client gets its own address back.
        let mine = t.of_client(&[1]).unwrap().ip;
        assert_eq!(t.allocate(&s, &[1], None, None, &none, 100), Some(mine));
        // After expiry a new client reuses the longest-expired address.
        let ip = t.allocate(&s, &[9], None, None, &none, 300).unwrap();
        let ops = t.take(ip, &[9], M, State::Bound, 400);
        assert_eq!(ops.len(), 1);
        assert!(t.of_client(&[0]).is_none() || t.of_client(&[0]).unwrap().ip != ip);
    }

    #[test]
    fn reserved_addresses_are_skipped_and_declines_quarantined() {
        let s = subnet(10, 11);
        let mut t = Leases::default();
        let reserved: HashSet<_> = [Ipv4Addr::new(10, 0, 0, 10)].into();
        let ip = t.allocate(&s, b"a", None, None, &reserved, 0).unwrap();
        assert_eq!(ip, Ipv4Addr::new(10, 0, 0, 11));
        t.take(ip, b"a", M, State::Bound, 100);
        assert!(t.decline(ip, b"a", 0).is_some());
        assert_eq!(t.allocate(&s, b"a", None, None, &reserved, 1), None);
        assert_eq!(
            t.allocate(&s, b"a", None, None, &reserved, QUARANTINE + 1),
            Some(ip)
        );
        // The reservation holder gets its address.
        assert_eq!(
            t.allocate(
                &s,
                b"r",
                Some(Ipv4Addr::new(10, 0, 0, 10)),
                None,
                &reserved,
                0
            ),
            Some(Ipv4Addr::new(10, 0, 0, 10))
        );
    }

    #[test]
    fn moving_a_client_deletes_its_old_row_and_sqlite_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("l.sqlite"), false).unwrap();
        let mut t = Leases::default();
        let a = Ipv4Addr::new(10, 0, 0, 10);
        let b = Ipv4Addr::new(10, 0, 0, 11);
        store.apply(&t.take(a, b"c", M, State::Bound, 50)).unwrap();
        let ops = t.take(b, b"c", M, State::Bound, 60);
        assert_eq!(ops[0], LeaseOp::Delete(a));
        store.apply(&ops).unwrap();
        let rows = store.load().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].ip, b);
        assert_eq!(rows[0].expires, 60);
        let t2 = Leases::from_stored(rows);
        assert_eq!(t2.of_client(b"c").map(|l| l.ip), Some(b));
    }
}
