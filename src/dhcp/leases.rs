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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::Path;

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
}

impl SqliteStore {
    pub fn open(path: &Path, fsync: bool) -> anyhow::Result<SqliteStore> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", if fsync { "FULL" } else { "NORMAL" })?;
        // The boot-event writer shares this file (src/events/store.rs): wait
        // for its short transactions rather than fail a commit.
        conn.busy_timeout(crate::events::store::BUSY_TIMEOUT)?;
        // Checkpoints (which fsync) run on their own thread, see
        // `spawn_checkpointer`, so that they never hold up a commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS leases (
                ip INTEGER PRIMARY KEY,
                client BLOB NOT NULL,
                mac TEXT NOT NULL,
                expires INTEGER NOT NULL,
                state INTEGER NOT NULL
            );",
        )?;
        Ok(SqliteStore { conn })
    }
}

/// Copies the WAL into the database file every second from a connection of
/// its own. A checkpoint fsyncs; done by the committer (SQLite's default
/// auto-checkpoint) it stalled every ACK behind a disk flush for up to hundreds
/// of milliseconds on a busy disk. A PASSIVE checkpoint never blocks the writer.
pub fn spawn_checkpointer(path: &Path) -> anyhow::Result<()> {
    let conn = Connection::open(path)?;
    std::thread::Builder::new()
        .name("pxed-checkpoint".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "lease database checkpoint failed");
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
///
/// Every operation a client can trigger is O(log n) or amortised O(1), so a
/// flood cannot make each packet cost a scan of the pool:
/// - never-used addresses are handed out by a cursor per pool that only moves
///   forward (an address behind it always has an entry, see [`Leases::retire`]);
/// - reuse takes the longest-expired entry from `by_expiry`;
/// - held offers are capped ([`Leases::offer`]), the oldest let go first.
///
/// Its size is bounded by the configuration: one entry per pool or reserved
/// address, whatever clients send.
#[derive(Debug, Default)]
pub struct Leases {
    by_ip: HashMap<Ipv4Addr, Lease>,
    by_client: HashMap<Vec<u8>, Ipv4Addr>,
    /// Addresses per hardware address: one machine shows several client ids
    /// (PXE ROM, installer, installed OS), and a cap per MAC needs the count.
    by_mac: HashMap<Mac, Vec<Ipv4Addr>>,
    /// Every entry by (expires, ip): reuse takes the first free one.
    by_expiry: BTreeSet<(u64, Ipv4Addr)>,
    /// The relay circuit (giaddr + option 82 circuit id) each address was
    /// handed out through, and its inverse: a cap per switch port needs the
    /// count. Memory only: after a restart, counting starts again.
    circuit_of: HashMap<Ipv4Addr, Box<[u8]>>,
    by_circuit: HashMap<Box<[u8]>, HashSet<Ipv4Addr>>,
    /// Offers by (expires, ip), oldest first; expired ones are pruned lazily.
    offers: BTreeSet<(u64, Ipv4Addr)>,
    /// Next never-used address per pool (first, last).
    cursors: HashMap<(Ipv4Addr, Ipv4Addr), u32>,
    /// Reserved addresses a cursor stepped over: if a reload frees one, it can
    /// still be handed out (the cursor does not come back for it).
    skipped_reserved: BTreeSet<Ipv4Addr>,
}

impl Leases {
    pub fn from_stored(leases: Vec<Lease>) -> Leases {
        let mut t = Leases::default();
        for l in leases {
            if !l.client.is_empty() {
                t.by_client.insert(l.client.clone(), l.ip);
            }
            t.insert(l);
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

    /// Offers currently held (expired ones may still count until the next offer).
    pub fn offers_held(&self) -> usize {
        self.offers.len()
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
            Some(l) => Self::free_for(l, client, now),
        }
    }

    fn free_for(l: &Lease, client: &[u8], now: u64) -> bool {
        match l.state {
            State::Declined => l.expires <= now,
            _ => l.client == client || l.expires <= now || l.state == State::Released,
        }
    }

    /// How many addresses `mac` holds under client ids other than `client`
    /// (live offers and bindings).
    pub fn held_by_mac(&self, mac: Mac, client: &[u8], now: u64) -> usize {
        self.by_mac
            .get(&mac)
            .map_or(0, |ips| self.live_of_others(ips.iter(), client, now))
    }

    /// How many addresses clients other than `client` hold through this relay
    /// circuit ([`super::packet::Circuit::key`]).
    pub fn held_by_circuit(&self, circuit: &[u8], client: &[u8], now: u64) -> usize {
        self.by_circuit
            .get(circuit)
            .map_or(0, |ips| self.live_of_others(ips.iter(), client, now))
    }

    fn live_of_others<'a>(
        &self,
        ips: impl Iterator<Item = &'a Ipv4Addr>,
        client: &[u8],
        now: u64,
    ) -> usize {
        ips.filter_map(|ip| self.by_ip.get(ip))
            .filter(|l| {
                l.client != client
                    && l.expires > now
                    && matches!(l.state, State::Offered | State::Bound)
            })
            .count()
    }

    /// Records that `ip` went out through `circuit` (or through none). Call
    /// after [`Leases::take`] / [`Leases::offer`]; a new holder of an address
    /// starts without a circuit.
    pub fn set_circuit(&mut self, ip: Ipv4Addr, circuit: Option<Box<[u8]>>) {
        self.clear_circuit(ip);
        if let Some(c) = circuit {
            self.by_circuit.entry(c.clone()).or_default().insert(ip);
            self.circuit_of.insert(ip, c);
        }
    }

    fn clear_circuit(&mut self, ip: Ipv4Addr) {
        if let Some(old) = self.circuit_of.remove(&ip) {
            if let Some(ips) = self.by_circuit.get_mut(&old) {
                ips.remove(&ip);
                if ips.is_empty() {
                    self.by_circuit.remove(&old);
                }
            }
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
        let pool = subnet.pool?;
        if let Some(ip) = self.never_used(pool, reserved) {
            return Some(ip);
        }
        if let Some(ip) = self
            .skipped_reserved
            .iter()
            .find(|ip| usable(**ip) && !self.by_ip.contains_key(ip))
        {
            return Some(*ip);
        }
        // Longest-expired first; `(now, MAX)` includes everything expired by now.
        self.by_expiry
            .range(..=(now, Ipv4Addr::BROADCAST))
            .map(|(_, ip)| *ip)
            .find(|ip| {
                usable(*ip)
                    && self
                        .by_ip
                        .get(ip)
                        .is_some_and(|l| Self::free_for(l, client, now))
            })
    }

    /// The next address of `pool` nobody ever had, moving the pool's cursor.
    fn never_used(
        &mut self,
        (first, last): (Ipv4Addr, Ipv4Addr),
        reserved: &HashSet<Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        let (lo, hi) = (u32::from(first), u32::from(last));
        let cursor = self.cursors.entry((first, last)).or_insert(lo);
        while *cursor <= hi {
            let ip = Ipv4Addr::from(*cursor);
            if !self.by_ip.contains_key(&ip) {
                if !reserved.contains(&ip) {
                    // The cursor stays: the address has no entry until taken.
                    return Some(ip);
                }
                self.skipped_reserved.insert(ip);
            }
            *cursor += 1;
            if *cursor == 0 {
                // 255.255.255.255 as the last address: wrapped.
                break;
            }
        }
        None
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
                if let Some(p) = self.retire(prev) {
                    if p != State::Offered {
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
        self.insert(lease);
        ops
    }

    /// Holds `ip` for `client` until `now + OFFER_HOLD`. With `max_offers`
    /// held already, the oldest offer is let go first: its address is free
    /// again, and its client's REQUEST is still ACKed if nobody took it since.
    /// So a flood of DISCOVERs holds at most `max_offers` addresses.
    pub fn offer(&mut self, ip: Ipv4Addr, client: &[u8], mac: Mac, now: u64, max_offers: usize) {
        while let Some(&(expires, oldest)) = self.offers.first() {
            let expired = expires <= now;
            if !expired && self.offers.len() < max_offers.max(1) {
                break;
            }
            self.offers.remove(&(expires, oldest));
            if !expired && oldest != ip {
                self.set_expiry(oldest, now);
            }
        }
        self.take(ip, client, mac, State::Offered, now + OFFER_HOLD);
    }

    /// Forgets an offer the client turned down (it chose another server).
    pub fn drop_offer(&mut self, client: &[u8]) {
        if let Some(l) = self.of_client(client) {
            if l.state == State::Offered {
                let ip = l.ip;
                self.retire(ip);
                self.by_client.remove(client);
            }
        }
    }

    /// A client says `ip` is in use by someone else: quarantine it.
    pub fn decline(&mut self, ip: Ipv4Addr, client: &[u8], now: u64) -> Option<LeaseOp> {
        let mut l = self.by_ip.get(&ip).filter(|l| l.client == client)?.clone();
        l.client = Vec::new();
        l.state = State::Declined;
        l.expires = now + QUARANTINE;
        let op = LeaseOp::Put(l.clone());
        self.insert(l);
        self.by_client.remove(client);
        Some(op)
    }

    /// A client gives `ip` back.
    pub fn release(&mut self, ip: Ipv4Addr, client: &[u8], now: u64) -> Option<LeaseOp> {
        let mut l = self
            .by_ip
            .get(&ip)
            .filter(|l| l.client == client && l.state == State::Bound)?
            .clone();
        l.state = State::Released;
        l.expires = now;
        let op = LeaseOp::Put(l.clone());
        self.insert(l);
        Some(op)
    }

    /// Frees `ip` but keeps its entry, expired since forever: an address never
    /// loses its entry, which is what lets the never-used cursor move only
    /// forward. Returns the state it had.
    fn retire(&mut self, ip: Ipv4Addr) -> Option<State> {
        let state = self.by_ip.get(&ip)?.state;
        self.set_expiry(ip, 0);
        Some(state)
    }

    /// Changes when `ip`'s entry expires; an offer moved into the past stops
    /// counting as held.
    fn set_expiry(&mut self, ip: Ipv4Addr, expires: u64) {
        if let Some(mut l) = self.by_ip.get(&ip).cloned() {
            l.expires = expires;
            self.insert(l);
            self.offers.remove(&(expires, ip));
        }
    }

    /// Puts `lease` in the table and every index, replacing the entry for its
    /// address. `by_client` is the caller's business (who holds what).
    fn insert(&mut self, lease: Lease) {
        if self
            .by_ip
            .get(&lease.ip)
            .is_some_and(|old| old.client != lease.client)
        {
            self.clear_circuit(lease.ip);
        }
        if let Some(old) = self.by_ip.get(&lease.ip) {
            self.by_expiry.remove(&(old.expires, old.ip));
            self.offers.remove(&(old.expires, old.ip));
            if let Some(ips) = self.by_mac.get_mut(&old.mac) {
                ips.retain(|a| *a != old.ip);
                if ips.is_empty() {
                    self.by_mac.remove(&old.mac);
                }
            }
        }
        self.by_expiry.insert((lease.expires, lease.ip));
        if lease.state == State::Offered {
            self.offers.insert((lease.expires, lease.ip));
        }
        if !lease.client.is_empty() {
            self.by_mac.entry(lease.mac).or_default().push(lease.ip);
        }
        self.by_ip.insert(lease.ip, lease);
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

    fn mac(n: u32) -> Mac {
        let b = n.to_be_bytes();
        Mac([2, 0, b[0], b[1], b[2], b[3]])
    }

    /// DISCOVER as the exchange does it: allocate, then hold as an offer.
    fn discover(t: &mut Leases, s: &Subnet, n: u32, now: u64, cap: usize) -> Option<Ipv4Addr> {
        let client = n.to_be_bytes();
        let ip = t.allocate(s, &client, None, None, &HashSet::new(), now)?;
        t.offer(ip, &client, mac(n), now, cap);
        Some(ip)
    }

    #[test]
    fn a_discover_flood_holds_at_most_max_offers_addresses() {
        let s = subnet(10, 19);
        let mut t = Leases::default();
        for n in 0..10_000 {
            assert!(
                discover(&mut t, &s, n, 1000, 3).is_some(),
                "flood client {n}"
            );
            assert!(t.offers_held() <= 3);
        }
        let held = (10..=19)
            .map(|i| Ipv4Addr::new(10, 0, 0, i))
            .filter(|ip| !t.is_free_for(*ip, b"newcomer", 1000))
            .count();
        assert_eq!(held, 3, "only the newest offers hold an address");
        // A well-behaved client arriving during the flood gets an address and
        // binds it.
        let ip = t
            .allocate(&s, b"newcomer", None, None, &HashSet::new(), 1000)
            .expect("an address for the newcomer");
        t.take(ip, b"newcomer", M, State::Bound, 5000);
        assert!(!t.is_free_for(ip, b"flood", 1001));
        // The table holds one entry per pool address, whatever the flood sent.
        assert_eq!(t.len(), 10);
        // Offers expire: after the hold, nothing is held by the flood.
        assert!(discover(&mut t, &s, 99_999, 1000 + OFFER_HOLD, 3).is_some());
        assert_eq!(t.offers_held(), 1);
    }

    #[test]
    fn reuse_takes_the_longest_expired_and_skips_live_leases() {
        let s = subnet(1, 200);
        let mut t = Leases::default();
        let none = HashSet::new();
        for n in 0..200u32 {
            let c = n.to_be_bytes();
            let ip = t.allocate(&s, &c, None, None, &none, 0).unwrap();
            // Expiry order is the reverse of address order; every third lives on.
            let expires = if n % 3 == 0 {
                10_000
            } else {
                500 - u64::from(n)
            };
            t.take(ip, &c, mac(n), State::Bound, expires);
        }
        assert_eq!(t.allocate(&s, b"x", None, None, &none, 300), None);
        let mut last = 0;
        for k in 0..100u32 {
            let c = format!("new{k}");
            let Some(ip) = t.allocate(&s, c.as_bytes(), None, None, &none, 1000) else {
                break;
            };
            let old = t.get(ip).unwrap().clone();
            assert!(old.expires >= last && old.expires <= 1000, "{old:?}");
            last = old.expires;
            t.take(ip, c.as_bytes(), M, State::Bound, 5000);
        }
        // 133 expired leases were reusable; the 67 live ones were never touched.
        let live = (0..200u32).filter(|n| n % 3 == 0).count();
        assert_eq!(
            (1..=200)
                .filter(|i| t.get(Ipv4Addr::new(10, 0, 0, *i)).unwrap().expires == 10_000)
                .count(),
            live
        );
    }

    #[test]
    fn addresses_per_mac_count_other_client_ids_only_while_live() {
        let s = subnet(10, 20);
        let mut t = Leases::default();
        let none = HashSet::new();
        for id in [&b"rom"[..], b"os", b"installer"] {
            let ip = t.allocate(&s, id, None, None, &none, 0).unwrap();
            t.take(ip, id, M, State::Bound, 100);
        }
        assert_eq!(t.held_by_mac(M, b"rom", 50), 2);
        assert_eq!(t.held_by_mac(M, b"fourth", 50), 3);
        assert_eq!(t.held_by_mac(mac(7), b"fourth", 50), 0);
        assert_eq!(t.held_by_mac(M, b"fourth", 100), 0, "expired");
        // Moving a client to another address keeps one count, not two.
        let ip = t.allocate(&s, b"elsewhere", None, None, &none, 50).unwrap();
        t.take(ip, b"os", M, State::Bound, 100);
        assert_eq!(t.held_by_mac(M, b"fourth", 50), 3);
    }

    #[test]
    fn addresses_per_circuit_follow_their_holder() {
        let s = subnet(10, 20);
        let mut t = Leases::default();
        let none = HashSet::new();
        let port: Box<[u8]> = Box::from(&b"relay+port-7"[..]);
        for n in 0..3u32 {
            let c = n.to_be_bytes();
            let ip = t.allocate(&s, &c, None, None, &none, 0).unwrap();
            t.offer(ip, &c, mac(n), 0, 100);
            t.set_circuit(ip, Some(port.clone()));
        }
        assert_eq!(t.held_by_circuit(&port, b"other", 1), 3);
        assert_eq!(t.held_by_circuit(&port, &0u32.to_be_bytes(), 1), 2);
        assert_eq!(t.held_by_circuit(b"elsewhere", b"other", 1), 0);
        // Offers expire; an address taken by a client elsewhere leaves the port.
        assert_eq!(t.held_by_circuit(&port, b"other", OFFER_HOLD), 0);
        let first = Ipv4Addr::new(10, 0, 0, 10);
        t.take(first, b"direct", M, State::Bound, 1000);
        t.set_circuit(first, None);
        assert_eq!(t.held_by_circuit(&port, b"other", 1), 2);
        assert!(t.by_circuit.values().all(|ips| !ips.contains(&first)));
    }

    #[test]
    fn a_moved_client_frees_its_old_address_for_others() {
        let s = subnet(10, 11);
        let mut t = Leases::default();
        let none = HashSet::new();
        let a = t.allocate(&s, b"c", None, None, &none, 0).unwrap();
        t.take(a, b"c", M, State::Bound, 100);
        let b = t.allocate(&s, b"d", None, None, &none, 0).unwrap();
        // "c" moves onto the other address (it asked for it after "d" left).
        t.take(b, b"d", M, State::Offered, 1);
        t.drop_offer(b"d");
        t.take(b, b"c", M, State::Bound, 100);
        assert_eq!(t.allocate(&s, b"e", None, None, &none, 10), Some(a));
        assert_eq!(t.of_client(b"c").map(|l| l.ip), Some(b));
    }
}
