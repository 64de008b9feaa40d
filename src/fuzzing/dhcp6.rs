//! Target `dhcp6`: [`crate::dhcp::v6::respond`] on one datagram, in full and
//! proxy mode, as it arrives on br0 from a link-local client.

use std::net::{Ipv6Addr, SocketAddrV6};

use super::{br0, full_config, proxy_config, NOW};
use crate::config::Config;
use crate::core::Mac;
use crate::dhcp::guard::Guard;
use crate::dhcp::leases::{Lease6, LeaseOp, Leases6, State};
use crate::dhcp::server::Iface;
use crate::dhcp::v6::options::{code, Opts};
use crate::dhcp::v6::outcome::Reply6;
use crate::dhcp::v6::server::Arrival6;
use crate::dhcp::v6::{respond, Answer6, Outcome6, Received6};
use crate::dhcp::Clock;

/// pxed's DUID in the harness: DUID-LL of 02:00:00:00:00:01.
pub const DUID6: &[u8] = &[0, 3, 0, 1, 2, 0, 0, 0, 0, 1];

/// The DHCPv6 lease table every input starts from: a bound lease (the MAC
/// QEMU guests use in the lab), an offer, a quarantined and a released
/// address, and an expired lease.
pub(crate) fn stored_leases6() -> Vec<Lease6> {
    let lease = |last: u16, mac: [u8; 6], expires: u64, state: State| Lease6 {
        ip: Ipv6Addr::new(0xfd97, 0xe2e, 0, 0, 0, 0, 0, last),
        client: if state == State::Declined {
            Vec::new()
        } else {
            [&[0xff, 0x01][..], &mac].concat()
        },
        mac: Some(Mac(mac)),
        expires,
        state,
    };
    vec![
        lease(
            0x100,
            [0x52, 0x54, 0, 0x12, 0x34, 0x58],
            NOW + 600,
            State::Bound,
        ),
        lease(0x101, [0x52, 0x54, 0, 0xaa, 0, 1], NOW + 20, State::Offered),
        lease(0x102, [0; 6], NOW + 300, State::Declined),
        lease(0x103, [0x52, 0x54, 0, 0xaa, 0, 2], NOW - 5, State::Released),
        lease(0x104, [0x52, 0x54, 0, 0xaa, 0, 3], NOW - 100, State::Bound),
    ]
}

/// A datagram from `src` (port 546) to ff02::1:2 on br0 (index 2).
pub fn arrival6(datagram: &[u8], src: Ipv6Addr) -> Arrival6 {
    Arrival6 {
        len: datagram.len(),
        src: SocketAddrV6::new(src, 546, 0, 2),
        ifindex: 2,
        dst: crate::dhcp::v6::server::ALL_SERVERS,
        truncated: false,
    }
}

/// [`respond`] at the fixed [`NOW`] with fresh rate budgets, on `iface`.
pub fn answer6<'c>(
    config: &'c Config,
    leases: &mut Leases6,
    datagram: &[u8],
    arrival: &Arrival6,
    iface: &Iface,
) -> Answer6<'c> {
    let rx = Received6 {
        datagram,
        arrival,
        iface: Some(iface),
        duid: DUID6,
    };
    let clock = Clock {
        unix: NOW,
        instant: std::time::Instant::now(),
    };
    respond(config, leases, &mut Guard::new(1024), rx, clock)
}

/// Target `dhcp6`: one datagram from a client's EUI-64 link-local address,
/// answered in full mode twice on one lease table (a retransmission), in
/// proxy mode, and on an interface pxed does not serve.
pub fn dhcp6(datagram: &[u8]) {
    let src: Ipv6Addr = "fe80::5054:ff:fe12:3460"
        .parse()
        .unwrap_or(Ipv6Addr::LOCALHOST);
    let arrival = arrival6(datagram, src);
    let br0 = br0();
    let full = full_config();
    let mut leases = Leases6::from_stored(stored_leases6());
    for _ in 0..2 {
        let a = answer6(&full, &mut leases, datagram, &arrival, &br0);
        check(&full, &a, datagram, true);
    }
    let proxy = proxy_config();
    let a = answer6(&proxy, &mut Leases6::default(), datagram, &arrival, &br0);
    check(&proxy, &a, datagram, false);
    let other = Iface {
        name: "eth9".into(),
        addrs: vec![],
        addrs6: vec![Ipv6Addr::new(0xfd98, 0, 0, 0, 0, 0, 0, 1)],
    };
    let a = answer6(&full, &mut leases, datagram, &arrival, &other);
    assert!(
        !matches!(a.outcome, Outcome6::Reply(_)),
        "answered on an interface outside [dhcp] interfaces: {a:?}"
    );
}

/// The client message inside a reply (under its Relay-Reply layers).
pub fn unwrap_relays(mut bytes: &[u8]) -> &[u8] {
    while bytes.first() == Some(&13) {
        bytes = bytes
            .get(34..)
            .and_then(|o| Opts::new(o).get(code::RELAY_MSG))
            .unwrap_or_default();
    }
    bytes
}

/// What must hold for any answer.
fn check(config: &Config, answer: &Answer6, datagram: &[u8], full: bool) {
    let (
        Some(req),
        Outcome6::Reply(Reply6 {
            addrs, out, commit, ..
        }),
    ) = (&answer.req, &answer.outcome)
    else {
        return;
    };
    // A reply is about as large as what it answers (relay layers included).
    assert!(
        out.bytes.len() <= datagram.len() + 600,
        "reply of {} bytes",
        out.bytes.len()
    );
    let msg = unwrap_relays(&out.bytes);
    assert_eq!(msg.get(1..4), Some(&req.xid[..]));
    assert!(Opts::new(&msg[4..]).all(|o| o.is_ok()), "a malformed reply");
    assert_eq!(Opts::new(&msg[4..]).get(code::SERVER_ID), Some(DUID6));
    if !req.client_id.is_empty() {
        assert_eq!(
            Opts::new(&msg[4..]).get(code::CLIENT_ID),
            Some(&req.client_id[..])
        );
    }
    if !full {
        assert!(
            addrs.is_empty() && commit.is_empty(),
            "proxy mode handed out {addrs:?}"
        );
        return;
    }
    let reply = msg.first() == Some(&7);
    for ip in addrs {
        let subnet = config
            .dhcp
            .subnet6_for(*ip)
            .expect("an address in a served subnet");
        let reserved = answer
            .decision
            .as_ref()
            .and_then(|d| d.reservation)
            .and_then(|r| r.ip6);
        assert!(
            reserved == Some(*ip)
                || (subnet.in_pool(*ip) && !config.policy.reserved_ips6().contains(ip)),
            "{ip}: neither this machine's reservation nor a free pool address"
        );
        if reply {
            // No Reply with an address before its lease is stored.
            assert!(
                commit.iter().any(|op| matches!(op,
                    LeaseOp::Put6(l) if l.ip == *ip && l.state == State::Bound)),
                "Reply with {ip} without committing it: {commit:?}"
            );
        }
    }
}
