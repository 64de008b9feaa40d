//! Target `dhcp`: [`crate::dhcp::respond`] on one datagram, in every mode.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::Decodable;

use super::{full_config, proxy_config};
use crate::config::Config;
use crate::core::Mac;
use crate::dhcp::exchange::Port;
use crate::dhcp::guard::Guard;
use crate::dhcp::leases::{Lease, LeaseOp, Leases, State};
use crate::dhcp::outcome::Reply;
use crate::dhcp::server::{Arrival, Iface};
use crate::dhcp::{respond, Answer, Clock, Outcome, Received};

/// "Now" for the lease table: fixed, so every run is reproducible.
pub const NOW: u64 = 1_800_000_000;

/// The lease table every DHCP input starts from: a bound lease (the MAC QEMU
/// guests use in the lab), an offer, a quarantined and a released address, an
/// expired lease, and the reservation's holder.
pub(crate) fn stored_leases() -> Vec<Lease> {
    let lease = |ip: [u8; 4], mac: [u8; 6], expires: u64, state: State| {
        let mut client = vec![1];
        client.extend_from_slice(&mac);
        Lease {
            ip: Ipv4Addr::from(ip),
            client: if state == State::Declined {
                Vec::new()
            } else {
                client
            },
            mac: Mac(mac),
            expires,
            state,
        }
    };
    vec![
        lease(
            [10, 97, 1, 10],
            [0x52, 0x54, 0, 0x12, 0x34, 0x58],
            NOW + 600,
            State::Bound,
        ),
        lease(
            [10, 97, 1, 11],
            [0x52, 0x54, 0, 0xaa, 0, 1],
            NOW + 20,
            State::Offered,
        ),
        lease([10, 97, 1, 12], [0; 6], NOW + 300, State::Declined),
        lease(
            [10, 97, 1, 13],
            [0x52, 0x54, 0, 0xaa, 0, 2],
            NOW - 5,
            State::Released,
        ),
        lease(
            [10, 97, 1, 14],
            [0x52, 0x54, 0, 0xaa, 0, 3],
            NOW - 100,
            State::Bound,
        ),
        lease(
            [10, 97, 0, 21],
            [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            NOW + 3000,
            State::Bound,
        ),
    ]
}

/// Target `dhcp`: one datagram as it arrives on br0 (broadcast, from
/// 0.0.0.0:68), answered in full mode twice on one lease table (a
/// retransmission, or the same DISCOVER after its OFFER), in proxy mode on 67
/// and 4011, and on an interface pxed does not serve.
pub fn dhcp(datagram: &[u8]) {
    let br0 = br0();
    let arrival = broadcast_arrival(datagram);
    let full = full_config();
    let mut leases = Leases::from_stored(stored_leases());
    for _ in 0..2 {
        let a = answer(
            &full,
            &mut leases,
            received(datagram, &arrival, &br0, Port::Dhcp),
        );
        check_dhcp(&full, &a, true);
    }
    let proxy = proxy_config();
    for port in [Port::Dhcp, Port::Proxy] {
        let a = answer(
            &proxy,
            &mut Leases::default(),
            received(datagram, &arrival, &br0, port),
        );
        check_dhcp(&proxy, &a, false);
    }
    let other = Iface {
        name: "eth9".into(),
        addrs: vec![(Ipv4Addr::new(10, 98, 0, 1), 24)],
        addrs6: vec![Ipv6Addr::new(0xfd98, 0, 0, 0, 0, 0, 0, 1)],
    };
    let a = answer(
        &full,
        &mut leases,
        received(datagram, &arrival, &other, Port::Dhcp),
    );
    assert!(
        matches!(
            a.outcome,
            Outcome::Malformed(_) | Outcome::Ignored(_) | Outcome::Limited(..)
        ),
        "answered on an interface outside [dhcp] interfaces: {a:?}"
    );
}

/// The lab's boot network: pxed on br0 as 10.97.0.1/16.
pub fn br0() -> Iface {
    Iface {
        name: "br0".into(),
        addrs: vec![(Ipv4Addr::new(10, 97, 0, 1), 16)],
        addrs6: vec![Ipv6Addr::new(0xfd97, 0xe2e, 0, 0, 0, 0, 0, 1)],
    }
}

/// How a client without an address reaches pxed: broadcast from 0.0.0.0:68.
pub fn broadcast_arrival(datagram: &[u8]) -> Arrival {
    Arrival {
        len: datagram.len(),
        src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        ifindex: 2,
        local: Ipv4Addr::BROADCAST,
        truncated: false,
    }
}

pub fn received<'a>(
    datagram: &'a [u8],
    arrival: &'a Arrival,
    iface: &'a Iface,
    port: Port,
) -> Received<'a> {
    Received {
        datagram,
        arrival,
        iface: Some(iface),
        port,
    }
}

/// [`respond`] at the fixed [`NOW`], with rate budgets that start full.
pub fn answer<'c>(config: &'c Config, leases: &mut Leases, rx: Received) -> Answer<'c> {
    let clock = Clock {
        unix: NOW,
        instant: std::time::Instant::now(),
    };
    respond(config, leases, &mut fresh_guard(), rx, clock)
}

/// Rate budgets that start full: the fuzz target drives the exchange, and
/// the rate limiter has its own unit tests.
fn fresh_guard() -> Guard {
    Guard::new(1024)
}

/// What must hold for any answer.
fn check_dhcp(config: &Config, answer: &Answer, full: bool) {
    let (
        Some(req),
        Outcome::Reply(Reply {
            kind,
            yiaddr,
            out,
            commit,
        }),
    ) = (&answer.req, &answer.outcome)
    else {
        return;
    };
    let kind = &Some(*kind);
    // One Ethernet frame: a reply must never need IP fragmentation.
    assert!(
        out.bytes.len() <= 1472,
        "reply of {} bytes",
        out.bytes.len()
    );
    let m = Message::from_bytes(&out.bytes).expect("a reply pxed encoded decodes");
    assert_eq!(m.opcode(), Opcode::BootReply);
    assert_eq!(m.xid(), req.msg.xid());
    assert_eq!(m.chaddr().get(..6), Some(&req.mac.0[..]));
    assert_eq!(m.opts().msg_type(), *kind);
    assert!(matches!(
        kind,
        Some(MessageType::Offer | MessageType::Ack | MessageType::Nak)
    ));
    assert_eq!(m.opts().get(OptionCode::OptionOverload), None);
    if let Some(DhcpOption::BootfileName(f)) = m.opts().get(OptionCode::BootfileName) {
        // iPXE needs siaddr with a boot file; URLs never in `file`.
        assert!(!m.siaddr().is_unspecified(), "a boot file without siaddr");
        if f.windows(3).any(|w| w == b"://") {
            assert!(m.fname().unwrap_or_default().iter().all(|&b| b == 0));
        }
    }
    if !full {
        assert!(yiaddr.is_unspecified(), "ProxyDHCP handed out {yiaddr}");
        assert!(commit.is_empty());
        return;
    }
    if *kind == Some(MessageType::Ack) && !yiaddr.is_unspecified() {
        // No ACK without its lease stored first, and only addresses pxed owns.
        assert!(
            commit.iter().any(|op| matches!(op,
                LeaseOp::Put(l) if l.ip == *yiaddr && l.state == State::Bound && l.mac == req.mac)),
            "ACK of {yiaddr} without committing it: {commit:?}"
        );
        let subnet = config
            .dhcp
            .subnet_for(*yiaddr)
            .expect("an ACKed address is in a served subnet");
        let reserved_here = config.policy.reservation(req.mac).and_then(|r| r.ip) == Some(*yiaddr);
        assert!(
            reserved_here
                || (subnet.in_pool(*yiaddr) && !config.policy.reserved_ips().contains(yiaddr)),
            "ACKed {yiaddr}: neither this machine's reservation nor a free pool address"
        );
    }
}
