//! The allocator's rules, table-driven where they are lists of cases.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use super::*;
use crate::config::Subnet;
use crate::core::Mac;
use crate::dhcp::leases::{OFFER_HOLD, QUARANTINE};

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

#[test]
fn a_seeded_cursor_starts_inside_the_pool_and_still_walks_all_of_it() {
    let subnet = subnet(10, 19);
    let reserved = HashSet::new();
    let mut t = Leases::default().starting_at(13);
    let mut got = Vec::new();
    for n in 0..10u8 {
        let client = [n];
        let a = t
            .allocate(&subnet, &client, None, None, &reserved, 100)
            .unwrap();
        t.take(a, &client, mac(u32::from(n)), State::Bound, 1000);
        got.push(a.octets()[3]);
    }
    // 13 % 10 = 3: from the pool's fourth address, round past its end.
    assert_eq!(got, [13, 14, 15, 16, 17, 18, 19, 10, 11, 12]);
    assert_eq!(t.allocate(&subnet, b"z", None, None, &reserved, 100), None);
}
