//! Admission before the exchange: a token bucket per client MAC, per relay
//! circuit (giaddr + option 82 circuit id: one switch port) and per relay
//! (giaddr alone). A packet over any of its budgets is dropped unanswered and
//! counted; the client retries later, as DHCP clients do.
//!
//! The buckets live in two LRU tables (MACs; relays and circuits) with a hard
//! cap (`[dhcp] rate_table_size`): a flood of random MACs evicts the least
//! recently seen MACs and cannot grow memory. Forgetting a source only hands it
//! a full bucket again; a source that keeps sending stays recent and limited.
//! A random-MAC flood is not slowed by the per-MAC bucket (each MAC is new);
//! what bounds it is the per-circuit/per-relay bucket when relayed, and the
//! offer cap in `leases.rs` (a flood holds at most `max_offers` addresses).

use std::net::Ipv4Addr;
use std::time::Instant;

use hashlink::LruCache;

use super::packet::Circuit;
use crate::config::DhcpLimits;
use crate::core::Mac;

/// Why a packet was not admitted (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    Mac,
    Circuit,
    Relay,
}

impl Throttled {
    pub fn label(self) -> &'static str {
        match self {
            Throttled::Mac => "rate_mac",
            Throttled::Circuit => "rate_circuit",
            Throttled::Relay => "rate_relay",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Refills at `rate` per second up to `2 × rate`, then spends one token.
    fn spend(&mut self, rate: u32, now: Instant) -> bool {
        let rate = f64::from(rate);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(2.0 * rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Source {
    Relay(Ipv4Addr),
    /// Relay address and circuit id ([`Circuit::key`]).
    Circuit(Box<[u8]>),
}

/// The rate limiter of one receive loop (no locking: one loop, one guard).
pub struct Guard {
    macs: LruCache<Mac, Bucket>,
    relays: LruCache<Source, Bucket>,
}

impl Guard {
    pub fn new(table_size: usize) -> Guard {
        let size = table_size.max(1);
        Guard {
            macs: LruCache::new(size),
            relays: LruCache::new(size),
        }
    }

    /// Entries held, MACs and relay sources together (never above twice the
    /// table size).
    pub fn tracked(&self) -> usize {
        self.macs.len() + self.relays.len()
    }

    /// Spends one token of every budget this packet counts against: its relay,
    /// its circuit (when option 82 names one), its MAC. A packet refused by one
    /// budget does not spend the later ones.
    pub fn admit(
        &mut self,
        limits: &DhcpLimits,
        mac: Mac,
        giaddr: Ipv4Addr,
        circuit: Option<Circuit>,
        now: Instant,
    ) -> Result<(), Throttled> {
        if !giaddr.is_unspecified() {
            if limits.rate_per_relay > 0
                && !spend(
                    &mut self.relays,
                    Source::Relay(giaddr),
                    limits.rate_per_relay,
                    now,
                )
            {
                return Err(Throttled::Relay);
            }
            if let Some(circuit) = circuit {
                if limits.rate_per_circuit > 0
                    && !spend(
                        &mut self.relays,
                        Source::Circuit(circuit.key()),
                        limits.rate_per_circuit,
                        now,
                    )
                {
                    return Err(Throttled::Circuit);
                }
            }
        }
        if limits.rate_per_mac > 0 && !spend(&mut self.macs, mac, limits.rate_per_mac, now) {
            return Err(Throttled::Mac);
        }
        Ok(())
    }
}

fn spend<K: std::hash::Hash + Eq>(
    table: &mut LruCache<K, Bucket>,
    key: K,
    rate: u32,
    now: Instant,
) -> bool {
    if let Some(b) = table.get_mut(&key) {
        return b.spend(rate, now);
    }
    let mut b = Bucket {
        tokens: 2.0 * f64::from(rate),
        at: now,
    };
    let ok = b.spend(rate, now);
    // Inserting beyond the capacity evicts the least recently used entry.
    table.insert(key, b);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(mac: u32, circuit: u32, relay: u32) -> DhcpLimits {
        DhcpLimits {
            rate_per_mac: mac,
            rate_per_circuit: circuit,
            rate_per_relay: relay,
            ..DhcpLimits::default()
        }
    }

    const M: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const NONE: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

    #[test]
    fn a_mac_gets_a_burst_then_its_rate() {
        let l = limits(5, 0, 0);
        let mut g = Guard::new(16);
        let t0 = Instant::now();
        let admitted = (0..100)
            .filter(|_| g.admit(&l, M, NONE, None, t0).is_ok())
            .count();
        assert_eq!(admitted, 10, "burst of twice the rate");
        assert_eq!(g.admit(&l, M, NONE, None, t0), Err(Throttled::Mac));
        // One second later: five more.
        let t1 = t0 + Duration::from_secs(1);
        let admitted = (0..100)
            .filter(|_| g.admit(&l, M, NONE, None, t1).is_ok())
            .count();
        assert_eq!(admitted, 5);
        // Another MAC is not affected.
        assert!(g.admit(&l, Mac([2, 0, 0, 0, 0, 2]), NONE, None, t1).is_ok());
        // 0 turns the limit off.
        let off = limits(0, 0, 0);
        assert!((0..1000).all(|_| g.admit(&off, M, NONE, None, t1).is_ok()));
    }

    #[test]
    fn circuits_and_relays_have_their_own_budgets() {
        let l = limits(0, 2, 100);
        let mut g = Guard::new(16);
        let t = Instant::now();
        let relay = Ipv4Addr::new(10, 0, 0, 1);
        let port = |id: &'static [u8]| Some(Circuit { giaddr: relay, id });
        // Random MACs behind one port: the port's budget (burst 4) applies.
        let ok = (0..50u8)
            .filter(|i| {
                g.admit(&l, Mac([2, 0, 0, 0, 1, *i]), relay, port(b"port-7"), t)
                    .is_ok()
            })
            .count();
        assert_eq!(ok, 4);
        // Another port of the same relay still gets through.
        assert!(g.admit(&l, M, relay, port(b"port-8"), t).is_ok());
        // Without option 82 only the relay's budget counts: burst 200, of which
        // the 51 packets above spent 51.
        let ok = (0..500u16)
            .filter(|i| {
                let [a, b] = i.to_be_bytes();
                g.admit(&l, Mac([2, 0, 0, 2, a, b]), relay, None, t).is_ok()
            })
            .count();
        assert_eq!(ok, 149);
        assert_eq!(
            g.admit(&l, M, relay, None, t),
            Err(Throttled::Relay),
            "relay budget spent"
        );
    }

    #[test]
    fn the_tables_never_grow_past_their_cap() {
        let l = limits(1, 1, 1);
        let mut g = Guard::new(100);
        let t = Instant::now();
        for i in 0..10_000u32 {
            let b = i.to_be_bytes();
            let relay = Ipv4Addr::new(10, 0, 0, 1);
            let _ = g.admit(
                &l,
                Mac([2, 0, b[0], b[1], b[2], b[3]]),
                relay,
                Some(Circuit {
                    giaddr: relay,
                    id: &b,
                }),
                t,
            );
        }
        assert!(g.tracked() <= 200, "{}", g.tracked());
        // A source that keeps sending stays remembered (and limited).
        let mut g = Guard::new(3);
        let _ = g.admit(&l, M, NONE, None, t);
        let _ = g.admit(&l, M, NONE, None, t);
        for i in 0..10u8 {
            let _ = g.admit(&l, Mac([2, 0, 0, 0, 9, i]), NONE, None, t);
            assert_eq!(g.admit(&l, M, NONE, None, t), Err(Throttled::Mac));
        }
    }
}
