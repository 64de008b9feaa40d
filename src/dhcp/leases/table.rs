//! The in-memory lease table: the one allocator. One entry per address, one
//! address per client, so an address can never be handed to two clients.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;

use super::{Lease, LeaseOp, State, OFFER_HOLD, QUARANTINE};
use crate::config::Subnet;
use crate::core::Mac;

/// Live addresses of one pool, by state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    pub bound: u64,
    pub offered: u64,
    pub declined: u64,
}

/// Where a pool's never-used cursor is: the next address to look at, and
/// how many of the pool's addresses it has not looked at yet. It walks the
/// pool once, from where it started, round past the end.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    next: u32,
    left: u64,
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
    cursors: HashMap<(Ipv4Addr, Ipv4Addr), Cursor>,
    /// Where in each pool the never-used cursor starts (see
    /// [`Leases::starting_at`]); 0: at the pool's first address.
    seed: u64,
    /// Reserved addresses a cursor stepped over: if a reload frees one, it can
    /// still be handed out (the cursor does not come back for it).
    skipped_reserved: BTreeSet<Ipv4Addr>,
}

impl Leases {
    /// Makes each pool's never-used cursor start at a point of the pool
    /// chosen by `seed` instead of its first address. Servers that share a
    /// database each take a different seed (their name), so each hands out
    /// fresh addresses from its own part of the pool and two servers rarely
    /// offer the same free address (docs/decisions.md).
    pub fn starting_at(mut self, seed: u64) -> Leases {
        self.seed = seed;
        self.cursors.clear();
        self
    }

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

    /// How much of the pool `first..=last` is taken at `now` (the
    /// `pxed_dhcp_pool_addresses` gauges). O(entries): called every few seconds.
    pub fn pool_use(&self, first: Ipv4Addr, last: Ipv4Addr, now: u64) -> PoolUse {
        let range = u32::from(first)..=u32::from(last);
        let mut usage = PoolUse::default();
        for l in self.by_ip.values() {
            if !range.contains(&u32::from(l.ip)) || l.expires <= now {
                continue;
            }
            match l.state {
                State::Bound => usage.bound += 1,
                State::Offered => usage.offered += 1,
                State::Declined => usage.declined += 1,
                State::Released => {}
            }
        }
        usage
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
        if lo > hi {
            return None;
        }
        let size = u64::from(hi - lo) + 1;
        let seed = self.seed;
        let cursor = self.cursors.entry((first, last)).or_insert_with(|| Cursor {
            next: lo + u32::try_from(seed % size).unwrap_or(0),
            left: size,
        });
        while cursor.left > 0 {
            let ip = Ipv4Addr::from(cursor.next);
            if !self.by_ip.contains_key(&ip) {
                if !reserved.contains(&ip) {
                    // The cursor stays: the address has no entry until taken.
                    return Some(ip);
                }
                self.skipped_reserved.insert(ip);
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
                        ops.push(LeaseOp::Delete {
                            ip: prev,
                            client: client.to_vec(),
                        });
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

    /// Takes over what the shared database holds at `l.ip` (written by
    /// another server, or the holder behind a refused binding): the database
    /// wins over whatever this table believed. The client's entry moves to
    /// `l.ip` only if the row is live; an older address of the client keeps
    /// its entry (still held by it) until the database says otherwise.
    pub fn learn(&mut self, l: Lease, now: u64) {
        if self.by_ip.get(&l.ip) == Some(&l) {
            return;
        }
        if let Some(old) = self.by_ip.get(&l.ip) {
            if old.client != l.client && self.by_client.get(&old.client) == Some(&l.ip) {
                let old_client = old.client.clone();
                self.by_client.remove(&old_client);
            }
        }
        let live = l.expires > now && matches!(l.state, State::Bound);
        if !l.client.is_empty() && (live || !self.by_client.contains_key(&l.client)) {
            self.by_client.insert(l.client.clone(), l.ip);
        }
        self.insert(l);
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
#[path = "table_tests.rs"]
mod tests;
