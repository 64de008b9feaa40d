//! The in-memory DHCPv6 lease table: the one IPv6 allocator. One entry per
//! address, one address per client key (a machine's MAC, see
//! `dhcp::v6::exchange::client_key`), so an address is never handed to two
//! clients and a machine keeps one address whatever IAIDs and DUIDs its
//! firmware and iPXE present.
//!
//! Kept apart from the IPv4 table (`table.rs`): IPv6 pools are too large to
//! track per address (a /64 pool holds 2^64), so besides the entries that
//! exist there is only a cursor per pool that only moves forward, and reuse
//! takes the longest-expired entry. Every operation a client can trigger is
//! O(log n), and the table holds at most one entry per address ever handed
//! out plus `max_offers` offers.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv6Addr;

use super::{Lease6, LeaseOp, State, OFFER_HOLD, QUARANTINE};
use crate::config::Subnet6;
use crate::core::Mac;

#[derive(Debug, Default)]
pub struct Leases6 {
    by_ip: HashMap<Ipv6Addr, Lease6>,
    by_client: HashMap<Vec<u8>, Ipv6Addr>,
    /// Every entry by (expires, ip): reuse takes the first free one.
    by_expiry: BTreeSet<(u64, Ipv6Addr)>,
    /// Offers by (expires, ip), oldest first.
    offers: BTreeSet<(u64, Ipv6Addr)>,
    /// Next never-used address per pool (first, last).
    cursors: HashMap<(Ipv6Addr, Ipv6Addr), Cursor>,
    /// Where cursors start in their pool ([`Leases6::starting_at`]).
    seed: u64,
}

/// A pool's never-used cursor: the next address to try, and how many are
/// left to try (it wraps from the last address to the first once).
#[derive(Debug, Clone, Copy)]
struct Cursor {
    next: u128,
    left: u128,
}

impl Leases6 {
    /// Starts each pool's never-used cursor at a point chosen by `seed`, as
    /// the IPv4 table does for servers that share a database.
    pub fn starting_at(mut self, seed: u64) -> Leases6 {
        self.seed = seed;
        self.cursors.clear();
        self
    }

    pub fn from_stored(leases: Vec<Lease6>) -> Leases6 {
        let mut t = Leases6::default();
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

    pub fn get(&self, ip: Ipv6Addr) -> Option<&Lease6> {
        self.by_ip.get(&ip)
    }

    /// The address this client holds or was offered, whatever its state.
    pub fn of_client(&self, client: &[u8]) -> Option<&Lease6> {
        self.by_client
            .get(client)
            .and_then(|ip| self.by_ip.get(ip))
            .filter(|l| l.client == client)
    }

    /// Whether `client` may have `ip`: nobody else holds it.
    pub fn is_free_for(&self, ip: Ipv6Addr, client: &[u8], now: u64) -> bool {
        self.by_ip
            .get(&ip)
            .map_or(true, |l| free_for(l, client, now))
    }

    /// Picks an address for `client` in `subnet`: its reservation, then the
    /// address it already has, then one it names, then a never-used one, then
    /// the longest-expired one. `reserved` holds every reserved address.
    /// `None`: the pool is exhausted (or the reservation is held).
    pub fn allocate(
        &mut self,
        subnet: &Subnet6,
        client: &[u8],
        reservation: Option<Ipv6Addr>,
        requested: &[Ipv6Addr],
        reserved: &HashSet<Ipv6Addr>,
        now: u64,
    ) -> Option<Ipv6Addr> {
        if let Some(ip) = reservation.filter(|ip| subnet.contains(*ip)) {
            return self.is_free_for(ip, client, now).then_some(ip);
        }
        let usable = |ip: Ipv6Addr| subnet.in_pool(ip) && !reserved.contains(&ip);
        let mine = self.of_client(client).map(|l| l.ip);
        if let Some(ip) = mine
            .into_iter()
            .chain(requested.iter().copied())
            .find(|ip| usable(*ip) && self.is_free_for(*ip, client, now))
        {
            return Some(ip);
        }
        let pool = subnet.pool?;
        if let Some(ip) = self.never_used(pool, reserved) {
            return Some(ip);
        }
        self.by_expiry
            .range(..=(now, Ipv6Addr::from(u128::MAX)))
            .map(|(_, ip)| *ip)
            .find(|ip| usable(*ip) && self.by_ip.get(ip).is_some_and(|l| free_for(l, client, now)))
    }

    /// The next address of `pool` nobody ever had, moving the pool's cursor
    /// past addresses that have an entry or are reserved.
    fn never_used(
        &mut self,
        (first, last): (Ipv6Addr, Ipv6Addr),
        reserved: &HashSet<Ipv6Addr>,
    ) -> Option<Ipv6Addr> {
        let (lo, hi) = (u128::from(first), u128::from(last));
        if lo > hi {
            return None;
        }
        let size = (hi - lo).saturating_add(1);
        let seed = u128::from(self.seed);
        let cursor = self.cursors.entry((first, last)).or_insert(Cursor {
            next: lo + seed % size,
            left: size,
        });
        while cursor.left > 0 {
            let ip = Ipv6Addr::from(cursor.next);
            if !self.by_ip.contains_key(&ip) && !reserved.contains(&ip) {
                // The cursor stays: the address has no entry until taken.
                return Some(ip);
            }
            cursor.next = if cursor.next == hi {
                lo
            } else {
                cursor.next + 1
            };
            cursor.left -= 1;
        }
        None
    }

    /// Takes `ip` for `client` in `state` until `expires`. Returns what must
    /// be made durable: the new lease, and the client's previous address if
    /// it moved (offers are memory-only and return nothing).
    pub fn take(
        &mut self,
        ip: Ipv6Addr,
        client: &[u8],
        mac: Option<Mac>,
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
                        ops.push(LeaseOp::Delete6 {
                            ip: prev,
                            client: client.to_vec(),
                        });
                    }
                }
            }
        }
        let lease = Lease6 {
            ip,
            client: client.to_vec(),
            mac,
            expires,
            state,
        };
        if state != State::Offered {
            ops.push(LeaseOp::Put6(lease.clone()));
        }
        self.insert(lease);
        ops
    }

    /// Holds `ip` for `client` until `now + OFFER_HOLD`; with `max_offers`
    /// held already the oldest offer is let go first.
    pub fn offer(
        &mut self,
        ip: Ipv6Addr,
        client: &[u8],
        mac: Option<Mac>,
        now: u64,
        max_offers: usize,
    ) {
        while let Some(&(expires, oldest)) = self.offers.first() {
            if expires > now && self.offers.len() < max_offers.max(1) {
                break;
            }
            self.offers.remove(&(expires, oldest));
            if expires > now && oldest != ip {
                self.set_expiry(oldest, now);
            }
        }
        self.take(ip, client, mac, State::Offered, now + OFFER_HOLD);
    }

    /// Forgets an offer the client turned down (it chose another server).
    pub fn drop_offer(&mut self, client: &[u8]) {
        if let Some(l) = self.of_client(client).filter(|l| l.state == State::Offered) {
            let ip = l.ip;
            self.retire(ip);
            self.by_client.remove(client);
        }
    }

    /// A client says `ip` is in use by someone else: quarantine it.
    pub fn decline(&mut self, ip: Ipv6Addr, client: &[u8], now: u64) -> Option<LeaseOp> {
        let mut l = self.by_ip.get(&ip).filter(|l| l.client == client)?.clone();
        l.client = Vec::new();
        l.state = State::Declined;
        l.expires = now + QUARANTINE;
        let op = LeaseOp::Put6(l.clone());
        self.insert(l);
        self.by_client.remove(client);
        Some(op)
    }

    /// A client gives `ip` back; it gets it again first.
    pub fn release(&mut self, ip: Ipv6Addr, client: &[u8], now: u64) -> Option<LeaseOp> {
        let mut l = self
            .by_ip
            .get(&ip)
            .filter(|l| l.client == client && l.state == State::Bound)?
            .clone();
        l.state = State::Released;
        l.expires = now;
        let op = LeaseOp::Put6(l.clone());
        self.insert(l);
        Some(op)
    }

    /// Takes over what the shared database holds at `l.ip` (the holder
    /// behind a refused binding): the database wins, as in the IPv4 table's
    /// `learn`.
    pub fn learn(&mut self, l: Lease6, now: u64) {
        if self.by_ip.get(&l.ip) == Some(&l) {
            return;
        }
        if let Some(old) = self.by_ip.get(&l.ip) {
            if old.client != l.client && self.by_client.get(&old.client) == Some(&l.ip) {
                let old_client = old.client.clone();
                self.by_client.remove(&old_client);
            }
        }
        let live = l.expires > now && l.state == State::Bound;
        if !l.client.is_empty() && (live || !self.by_client.contains_key(&l.client)) {
            self.by_client.insert(l.client.clone(), l.ip);
        }
        self.insert(l);
    }

    /// Frees `ip` but keeps its entry, expired since forever (the cursor
    /// never comes back for it). Returns the state it had.
    fn retire(&mut self, ip: Ipv6Addr) -> Option<State> {
        let state = self.by_ip.get(&ip)?.state;
        self.set_expiry(ip, 0);
        Some(state)
    }

    fn set_expiry(&mut self, ip: Ipv6Addr, expires: u64) {
        if let Some(mut l) = self.by_ip.get(&ip).cloned() {
            l.expires = expires;
            self.insert(l);
        }
    }

    /// Puts `lease` in the table and its indexes, replacing the entry for
    /// its address. `by_client` is the caller's business.
    fn insert(&mut self, lease: Lease6) {
        if let Some(old) = self.by_ip.get(&lease.ip) {
            self.by_expiry.remove(&(old.expires, old.ip));
            self.offers.remove(&(old.expires, old.ip));
        }
        self.by_expiry.insert((lease.expires, lease.ip));
        if lease.state == State::Offered {
            self.offers.insert((lease.expires, lease.ip));
        }
        self.by_ip.insert(lease.ip, lease);
    }
}

fn free_for(l: &Lease6, client: &[u8], now: u64) -> bool {
    match l.state {
        State::Declined => l.expires <= now,
        _ => l.client == client || l.expires <= now || l.state == State::Released,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(first: u16, last: u16) -> Subnet6 {
        Subnet6 {
            network: "fd00::".parse().unwrap(),
            prefix: 64,
            pool: Some((ip(first), ip(last))),
            dns: vec![],
            domain: None,
            lease_time: 60,
        }
    }

    fn ip(n: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, n)
    }

    const M: Option<Mac> = Some(Mac([2, 0, 0, 0, 0, 1]));

    #[test]
    fn never_two_clients_on_one_address_and_exhaustion() {
        let s = subnet(0x10, 0x12);
        let mut t = Leases6::default();
        let none = HashSet::new();
        let mut got = HashSet::new();
        for c in 0u8..3 {
            let a = t.allocate(&s, &[c], None, &[], &none, 100).unwrap();
            assert!(got.insert(a), "{a} handed out twice");
            assert!(t.take(a, &[c], M, State::Bound, 200).len() == 1);
        }
        assert_eq!(t.allocate(&s, &[9], None, &[], &none, 100), None);
        let mine = t.of_client(&[1]).unwrap().ip;
        assert_eq!(t.allocate(&s, &[1], None, &[], &none, 100), Some(mine));
        // A named address held by another client is not given.
        assert_eq!(t.allocate(&s, &[9], None, &[mine], &none, 100), None);
        // After expiry a new client reuses the longest-expired address.
        let a = t.allocate(&s, &[9], None, &[], &none, 300).unwrap();
        assert!(got.contains(&a));
        // Moving a client deletes its old row.
        let ops = t.take(ip(0x11), &[0], M, State::Bound, 400);
        let moved = LeaseOp::Delete6 {
            ip: ip(0x10),
            client: vec![0],
        };
        assert!(ops.contains(&moved), "{ops:?}");
    }

    #[test]
    fn a_seeded_cursor_starts_inside_the_pool_and_wraps() {
        let s = subnet(0x10, 0x13);
        let mut t = Leases6::default().starting_at(6);
        let none = HashSet::new();
        let mut got = Vec::new();
        for c in 0u8..4 {
            let a = t.allocate(&s, &[c], None, &[], &none, 0).unwrap();
            t.take(a, &[c], M, State::Bound, 100);
            got.push(a);
        }
        assert_eq!(got, [ip(0x12), ip(0x13), ip(0x10), ip(0x11)]);
        assert_eq!(t.allocate(&s, &[9], None, &[], &none, 0), None);
    }

    #[test]
    fn reservations_offers_declines_and_releases() {
        let s = subnet(0x10, 0x11);
        let mut t = Leases6::default();
        let reserved: HashSet<_> = [ip(0x10)].into();
        let a = t.allocate(&s, b"a", None, &[], &reserved, 0).unwrap();
        assert_eq!(a, ip(0x11));
        assert_eq!(
            t.allocate(&s, b"r", Some(ip(0x10)), &[], &reserved, 0),
            Some(ip(0x10))
        );
        // An offer holds its address; the cap lets the oldest go.
        t.offer(a, b"a", M, 0, 1);
        assert!(!t.is_free_for(a, b"b", 1));
        assert!(t.is_free_for(a, b"b", OFFER_HOLD + 1));
        t.offer(ip(0x10), b"r", M, 2, 1);
        assert!(t.is_free_for(a, b"b", 3), "the oldest offer was let go");
        t.drop_offer(b"r");
        assert!(t.of_client(b"r").is_none());
        // Bound, released (its client gets it first), declined (quarantined).
        t.take(a, b"a", M, State::Bound, 100);
        assert!(t.release(a, b"b", 10).is_none());
        assert!(t.release(a, b"a", 10).is_some());
        assert_eq!(t.allocate(&s, b"a", None, &[], &reserved, 11), Some(a));
        t.take(a, b"a", M, State::Bound, 100);
        assert!(t.decline(a, b"a", 20).is_some());
        assert!(!t.is_free_for(a, b"a", 21));
        assert!(t.is_free_for(a, b"a", 20 + QUARANTINE));
        let stored: Vec<Lease6> = t.by_ip.values().cloned().collect();
        let again = Leases6::from_stored(stored);
        assert_eq!(again.len(), t.len());
    }
}
