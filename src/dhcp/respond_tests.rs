//! The RFC 2131 exchange through [`respond`], table-driven, without root or
//! sockets: every message type in every client state, the NAK cases,
//! relays, reservations, loaders per firmware, ProxyDHCP, and the packets
//! that never get that far. The config is the fuzz fixture
//! (`fuzz/fixture/machines.toml`: full DHCP on br0 = 10.97.0.1/16, a
//! reservation for 52:54:00:12:34:56, a rule with its own loader), the lease
//! table the fuzz target's (`stored_leases`).

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode, UnknownOption};
use dhcproto::{Decodable, Encodable};

use super::*;
use crate::core::rules::SELECTIONS;
use crate::dhcp::leases::{LeaseOp, Leases};
use crate::dhcp::report;
use crate::dhcp::server::{Arrival, Iface};
use crate::fuzzing::{answer, br0, full_config, proxy_config, NOW};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 1);
const NEW: [u8; 6] = [0x52, 0x54, 0, 0x77, 0, 1];
/// Holds 10.97.1.10, bound until NOW + 600.
const HOLDER: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x58];
/// The fixture's reservation: 10.97.0.21, host name db1.
const RESERVED: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
/// Matches rule "snp", whose loader is snponly.efi.
const SNP: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x57];
/// Matches rule "secure-boot" (`boot = "grub"`).
const GRUB: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x5a];
const PXE: &[u8] = b"PXEClient:Arch:00000:UNDI:002001";
const HTTP: &[u8] = b"HTTPClient:Arch:00016:UNDI:003001";
const SCRIPT: &str = "http://10.97.0.1:8080/boot.ipxe";

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

/// The first never-used pool address: 10.97.1.10-14 have entries.
fn first_free() -> Ipv4Addr {
    ip(10, 97, 1, 15)
}

/// A client message.
#[derive(Clone, Copy)]
struct Pkt {
    kind: MessageType,
    mac: [u8; 6],
    ciaddr: Ipv4Addr,
    giaddr: Ipv4Addr,
    requested: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
    vendor: Option<&'static [u8]>,
    arch: Option<u16>,
    user_class: Option<&'static [u8]>,
    relay: Option<&'static [u8]>,
}

fn pkt(kind: MessageType, mac: [u8; 6]) -> Pkt {
    Pkt {
        kind,
        mac,
        ciaddr: Ipv4Addr::UNSPECIFIED,
        giaddr: Ipv4Addr::UNSPECIFIED,
        requested: None,
        server_id: None,
        vendor: Some(PXE),
        arch: Some(0),
        user_class: None,
        relay: None,
    }
}

impl Pkt {
    fn bytes(&self) -> Vec<u8> {
        let u = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new(self.ciaddr, u, u, self.giaddr, &self.mac);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(self.kind));
        if let Some(v) = self.vendor {
            o.insert(DhcpOption::ClassIdentifier(v.to_vec()));
        }
        if let Some(a) = self.arch {
            o.insert(DhcpOption::Unknown(UnknownOption::new(
                OptionCode::ClientSystemArchitecture,
                a.to_be_bytes().to_vec(),
            )));
        }
        if let Some(u) = self.user_class {
            o.insert(DhcpOption::UserClass(u.to_vec()));
        }
        if let Some(r) = self.requested {
            o.insert(DhcpOption::RequestedIpAddress(r));
        }
        if let Some(s) = self.server_id {
            o.insert(DhcpOption::ServerIdentifier(s));
        }
        if let Some(r) = self.relay {
            o.insert(DhcpOption::Unknown(UnknownOption::new(
                OptionCode::RelayAgentInformation,
                r.to_vec(),
            )));
        }
        m.to_vec().expect("a test packet encodes")
    }
}

/// What a row expects.
#[derive(Debug)]
enum Want {
    /// A reply of this type, to `yiaddr`, sent to `dest`, naming `boot`,
    /// after committing `commits` lease changes.
    Reply {
        kind: MessageType,
        yiaddr: Ipv4Addr,
        dest: SocketAddrV4,
        boot: Option<&'static str>,
        commits: usize,
    },
    /// Silence, the reason containing this.
    Ignored(&'static str),
    /// Lease changes, no reply.
    Store(usize),
    Malformed,
}

fn reply(kind: MessageType, yiaddr: Ipv4Addr, boot: Option<&'static str>) -> Want {
    Want::Reply {
        kind,
        yiaddr,
        dest: SocketAddrV4::new(Ipv4Addr::BROADCAST, 68),
        boot,
        commits: usize::from(kind == MessageType::Ack && !yiaddr.is_unspecified()),
    }
}

fn to(want: Want, dest: SocketAddrV4) -> Want {
    match want {
        Want::Reply {
            kind,
            yiaddr,
            boot,
            commits,
            ..
        } => Want::Reply {
            kind,
            yiaddr,
            dest,
            boot,
            commits,
        },
        other => other,
    }
}

/// Where a packet came from and which socket took it.
#[derive(Clone, Copy)]
enum From {
    /// Broadcast from 0.0.0.0:68 on br0.
    Broadcast,
    /// Unicast from a client that has `ciaddr`, to our address.
    Unicast(Ipv4Addr),
    /// Through a relay, unicast to our address on 67.
    Relay(Ipv4Addr),
    /// Broadcast on an interface pxed does not serve.
    OtherInterface,
    /// Port 4011 (ProxyDHCP boot-server requests), unicast from `ciaddr`.
    Proxy(Ipv4Addr),
}

/// Runs one packet through `respond` on a fresh copy of the fixture's lease
/// table, and also builds its boot event: returns the answer's parts and how
/// many times rules were matched for it.
fn run(full: bool, from: From, p: Pkt) -> (Outcome, Option<Message>, u64) {
    let config = if full { full_config() } else { proxy_config() };
    let mut leases = Leases::from_stored(crate::fuzzing::stored_leases());
    let datagram = p.bytes();
    let (src, local, iface, port) = match from {
        From::Broadcast => (
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
            Ipv4Addr::BROADCAST,
            br0(),
            Port::Dhcp,
        ),
        From::Unicast(c) => (SocketAddrV4::new(c, 68), SERVER, br0(), Port::Dhcp),
        From::Relay(g) => (SocketAddrV4::new(g, 67), SERVER, br0(), Port::Dhcp),
        From::OtherInterface => (
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
            Ipv4Addr::BROADCAST,
            Iface {
                name: "eth9".into(),
                addrs: vec![(ip(10, 99, 0, 1), 24)],
                addrs6: vec![],
            },
            Port::Dhcp,
        ),
        From::Proxy(c) => (SocketAddrV4::new(c, 68), SERVER, br0(), Port::Proxy),
    };
    let arrival = Arrival {
        len: datagram.len(),
        src,
        ifindex: 2,
        local,
        truncated: false,
    };
    let before = SELECTIONS.with(|n| n.get());
    let rx = Received {
        datagram: &datagram,
        arrival: &arrival,
        iface: Some(&iface),
        port,
    };
    let a = answer(&config, &mut leases, rx);
    if let Some(req) = &a.req {
        let reply = match &a.outcome {
            Outcome::Reply(r) => Some(r),
            _ => None,
        };
        let _ = report::event(req, src, a.decision.as_ref(), reply, &a.outcome);
    }
    let selections = SELECTIONS.with(|n| n.get()) - before;
    let msg = match &a.outcome {
        Outcome::Reply(r) => Some(Message::from_bytes(&r.out.bytes).expect("a reply decodes")),
        _ => None,
    };
    (a.outcome, msg, selections)
}

fn boot_file(m: &Message) -> Option<String> {
    match m.opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(f)) => Some(String::from_utf8_lossy(f).into_owned()),
        _ => None,
    }
}

fn check(name: &str, got: &Outcome, msg: Option<&Message>, want: &Want) {
    match (want, got, msg) {
        (
            Want::Reply {
                kind,
                yiaddr,
                dest,
                boot,
                commits,
            },
            Outcome::Reply(r),
            Some(m),
        ) => {
            assert_eq!(r.kind, *kind, "{name}: message type");
            assert_eq!(m.opts().msg_type(), Some(*kind), "{name}: option 53");
            assert_eq!(r.yiaddr, *yiaddr, "{name}: yiaddr");
            assert_eq!(r.out.dest, *dest, "{name}: destination");
            assert_eq!(boot_file(m).as_deref(), *boot, "{name}: boot file");
            assert_eq!(
                r.commit.len(),
                *commits,
                "{name}: lease changes {:?}",
                r.commit
            );
            assert_eq!(
                m.opts().get(OptionCode::ServerIdentifier),
                Some(&DhcpOption::ServerIdentifier(SERVER)),
                "{name}: option 54"
            );
            if boot.is_some() {
                assert_eq!(m.siaddr(), SERVER, "{name}: siaddr with a boot file");
            }
        }
        (Want::Ignored(why), Outcome::Ignored(got), _) => {
            assert!(
                got.contains(why),
                "{name}: ignored because {got:?}, not {why:?}"
            )
        }
        (Want::Store(n), Outcome::Store(ops), _) => assert_eq!(ops.len(), *n, "{name}: {ops:?}"),
        (Want::Malformed, Outcome::Malformed(_), _) => {}
        _ => panic!("{name}: got {got:?}, want {want:?}"),
    }
}

/// Full mode: every message type and client state (RFC 2131 §4.3, §4.4).
#[test]
fn full_mode_table() {
    use MessageType::*;
    let d = |kind, mac| pkt(kind, mac);
    let nak = || reply(Nak, Ipv4Addr::UNSPECIFIED, None);
    #[rustfmt::skip]
    let rows: Vec<(&str, From, Pkt, Want)> = vec![
        // DISCOVER: the address and, by firmware, the boot file.
        ("BIOS PXE ROM", From::Broadcast, d(Discover, NEW), reply(Offer, first_free(), Some("undionly.kpxe"))),
        ("PXE ROM without option 93 is BIOS", From::Broadcast, Pkt { arch: None, ..d(Discover, NEW) }, reply(Offer, first_free(), Some("undionly.kpxe"))),
        ("EFI IA32", From::Broadcast, Pkt { arch: Some(6), ..d(Discover, NEW) }, reply(Offer, first_free(), Some("snponly.efi"))),
        ("EFI x64 (7)", From::Broadcast, Pkt { arch: Some(7), ..d(Discover, NEW) }, reply(Offer, first_free(), Some("snponly.efi"))),
        ("EFI x64 (9, VMware)", From::Broadcast, Pkt { arch: Some(9), ..d(Discover, NEW) }, reply(Offer, first_free(), Some("snponly.efi"))),
        ("EFI ARM32", From::Broadcast, Pkt { arch: Some(10), ..d(Discover, NEW) }, reply(Offer, first_free(), Some("ipxe-arm32.efi"))),
        ("EFI ARM64", From::Broadcast, Pkt { arch: Some(11), ..d(Discover, NEW) }, reply(Offer, first_free(), Some("ipxe-arm64.efi"))),
        ("Itanium: an address, no boot file", From::Broadcast, Pkt { arch: Some(2), ..d(Discover, NEW) }, reply(Offer, first_free(), None)),
        ("an OS client: an address, no boot file", From::Broadcast, Pkt { vendor: None, arch: None, ..d(Discover, NEW) }, reply(Offer, first_free(), None)),
        ("iPXE, raw user class", From::Broadcast, Pkt { user_class: Some(b"iPXE"), ..d(Discover, NEW) }, reply(Offer, first_free(), Some(SCRIPT))),
        ("iPXE, RFC 3004 user class", From::Broadcast, Pkt { user_class: Some(b"\x04iPXE"), arch: Some(7), ..d(Discover, NEW) }, reply(Offer, first_free(), Some(SCRIPT))),
        ("gPXE is not iPXE", From::Broadcast, Pkt { user_class: Some(b"gPXE"), ..d(Discover, NEW) }, reply(Offer, first_free(), Some("undionly.kpxe"))),
        ("UEFI HTTP Boot x64", From::Broadcast, Pkt { vendor: Some(HTTP), arch: Some(16), ..d(Discover, NEW) }, reply(Offer, first_free(), Some("http://10.97.0.1:8080/assets/snponly.efi"))),
        ("UEFI HTTP Boot ARM64", From::Broadcast, Pkt { vendor: Some(HTTP), arch: Some(19), ..d(Discover, NEW) }, reply(Offer, first_free(), Some("http://10.97.0.1:8080/assets/ipxe-arm64.efi"))),
        ("a rule's loader", From::Broadcast, d(Discover, SNP), reply(Offer, first_free(), Some("snponly.efi"))),
        ("a GRUB rule, EFI x64: the shim", From::Broadcast, Pkt { arch: Some(7), ..d(Discover, GRUB) }, reply(Offer, first_free(), Some("shimx64.efi"))),
        ("a GRUB rule, EFI ARM64: its shim", From::Broadcast, Pkt { arch: Some(11), ..d(Discover, GRUB) }, reply(Offer, first_free(), Some("shimaa64.efi"))),
        ("the reservation", From::Broadcast, d(Discover, RESERVED), reply(Offer, ip(10, 97, 0, 21), Some("undionly.kpxe"))),
        ("a bound client gets its address", From::Broadcast, d(Discover, HOLDER), reply(Offer, ip(10, 97, 1, 10), Some("undionly.kpxe"))),
        ("a requested free address", From::Broadcast, Pkt { requested: Some(ip(10, 97, 1, 99)), ..d(Discover, NEW) }, reply(Offer, ip(10, 97, 1, 99), Some("undionly.kpxe"))),
        ("a requested address held by another", From::Broadcast, Pkt { requested: Some(ip(10, 97, 1, 10)), ..d(Discover, NEW) }, reply(Offer, first_free(), Some("undionly.kpxe"))),
        ("a requested address outside the pool", From::Broadcast, Pkt { requested: Some(ip(10, 97, 9, 9)), ..d(Discover, NEW) }, reply(Offer, first_free(), Some("undionly.kpxe"))),
        // REQUEST, SELECTING (server identifier set).
        ("selecting: ACK and commit", From::Broadcast, Pkt { server_id: Some(SERVER), requested: Some(ip(10, 97, 1, 99)), ..d(Request, NEW) }, reply(Ack, ip(10, 97, 1, 99), Some("undionly.kpxe"))),
        ("selecting another server", From::Broadcast, Pkt { server_id: Some(ip(10, 97, 0, 2)), requested: Some(ip(10, 97, 1, 99)), ..d(Request, NEW) }, Want::Ignored("chose server 10.97.0.2")),
        ("selecting without an address", From::Broadcast, Pkt { server_id: Some(SERVER), ..d(Request, NEW) }, nak()),
        ("selecting a held address", From::Broadcast, Pkt { server_id: Some(SERVER), requested: Some(ip(10, 97, 1, 10)), ..d(Request, NEW) }, nak()),
        // REQUEST, INIT-REBOOT (requested address, no server identifier).
        ("init-reboot: its own address", From::Broadcast, Pkt { requested: Some(ip(10, 97, 1, 10)), ..d(Request, HOLDER) }, reply(Ack, ip(10, 97, 1, 10), Some("undionly.kpxe"))),
        ("init-reboot: another's address", From::Broadcast, Pkt { requested: Some(ip(10, 97, 1, 10)), ..d(Request, NEW) }, nak()),
        ("init-reboot: another network", From::Broadcast, Pkt { requested: Some(ip(10, 98, 0, 100)), ..d(Request, NEW) }, nak()),
        ("init-reboot: outside the pool", From::Broadcast, Pkt { requested: Some(ip(10, 97, 2, 1)), ..d(Request, NEW) }, nak()),
        ("init-reboot: someone's reserved address", From::Broadcast, Pkt { requested: Some(ip(10, 97, 0, 21)), ..d(Request, NEW) }, nak()),
        ("init-reboot: its reservation", From::Broadcast, Pkt { requested: Some(ip(10, 97, 0, 21)), ..d(Request, RESERVED) }, reply(Ack, ip(10, 97, 0, 21), Some("undionly.kpxe"))),
        ("init-reboot: a reserved machine asks for a pool address", From::Broadcast, Pkt { requested: Some(ip(10, 97, 1, 99)), ..d(Request, RESERVED) }, nak()),
        ("init-reboot: the quarantined address", From::Broadcast, Pkt { requested: Some(ip(10, 97, 1, 12)), ..d(Request, NEW) }, nak()),
        ("init-reboot: a released address", From::Broadcast, Pkt { requested: Some(ip(10, 97, 1, 13)), ..d(Request, NEW) }, reply(Ack, ip(10, 97, 1, 13), Some("undionly.kpxe"))),
        ("init-reboot: an expired address", From::Broadcast, Pkt { requested: Some(ip(10, 97, 1, 14)), ..d(Request, NEW) }, reply(Ack, ip(10, 97, 1, 14), Some("undionly.kpxe"))),
        // REQUEST, RENEWING (unicast) and REBINDING (broadcast): ciaddr.
        ("renewing", From::Unicast(ip(10, 97, 1, 10)), Pkt { ciaddr: ip(10, 97, 1, 10), ..d(Request, HOLDER) }, to(reply(Ack, ip(10, 97, 1, 10), Some("undionly.kpxe")), SocketAddrV4::new(ip(10, 97, 1, 10), 68))),
        ("rebinding", From::Broadcast, Pkt { ciaddr: ip(10, 97, 1, 10), ..d(Request, HOLDER) }, to(reply(Ack, ip(10, 97, 1, 10), Some("undionly.kpxe")), SocketAddrV4::new(ip(10, 97, 1, 10), 68))),
        ("renewing another's address: NAK, broadcast", From::Unicast(ip(10, 97, 1, 10)), Pkt { ciaddr: ip(10, 97, 1, 10), ..d(Request, NEW) }, nak()),
        ("a REQUEST naming nothing", From::Broadcast, d(Request, NEW), Want::Ignored("no server identifier")),
        // DECLINE and RELEASE: lease changes, no reply.
        ("decline", From::Broadcast, Pkt { requested: Some(ip(10, 97, 1, 10)), server_id: Some(SERVER), ..d(Decline, HOLDER) }, Want::Store(1)),
        ("decline of an address not held", From::Broadcast, Pkt { requested: Some(ip(10, 97, 1, 10)), ..d(Decline, NEW) }, Want::Ignored("does not hold")),
        ("decline for another server", From::Broadcast, Pkt { requested: Some(ip(10, 97, 1, 10)), server_id: Some(ip(10, 97, 0, 2)), ..d(Decline, HOLDER) }, Want::Ignored("another server")),
        ("decline without an address", From::Broadcast, d(Decline, HOLDER), Want::Ignored("without a requested address")),
        ("release", From::Unicast(ip(10, 97, 1, 10)), Pkt { ciaddr: ip(10, 97, 1, 10), ..d(Release, HOLDER) }, Want::Store(1)),
        ("release of an address not held", From::Unicast(ip(10, 97, 1, 10)), Pkt { ciaddr: ip(10, 97, 1, 10), ..d(Release, NEW) }, Want::Ignored("does not hold")),
        // INFORM: options, no address (§3.4).
        ("inform", From::Unicast(ip(10, 97, 5, 5)), Pkt { ciaddr: ip(10, 97, 5, 5), ..d(Inform, NEW) }, to(reply(Ack, Ipv4Addr::UNSPECIFIED, Some("undionly.kpxe")), SocketAddrV4::new(ip(10, 97, 5, 5), 68))),
        // Relays: the relay's subnet, replies to the relay on 67.
        ("relayed from 10.97/16", From::Relay(ip(10, 97, 0, 254)), Pkt { giaddr: ip(10, 97, 0, 254), relay: Some(&[1, 3, b'p', b'-', b'7']), ..d(Discover, NEW) }, to(reply(Offer, first_free(), Some("undionly.kpxe")), SocketAddrV4::new(ip(10, 97, 0, 254), 67))),
        ("relayed from 10.98.0/24", From::Relay(ip(10, 98, 0, 1)), Pkt { giaddr: ip(10, 98, 0, 1), ..d(Discover, NEW) }, to(reply(Offer, ip(10, 98, 0, 100), Some("undionly.kpxe")), SocketAddrV4::new(ip(10, 98, 0, 1), 67))),
        ("relayed REQUEST", From::Relay(ip(10, 98, 0, 1)), Pkt { giaddr: ip(10, 98, 0, 1), server_id: Some(SERVER), requested: Some(ip(10, 98, 0, 105)), ..d(Request, NEW) }, to(reply(Ack, ip(10, 98, 0, 105), Some("undionly.kpxe")), SocketAddrV4::new(ip(10, 98, 0, 1), 67))),
        ("relayed NAK goes to the relay", From::Relay(ip(10, 98, 0, 1)), Pkt { giaddr: ip(10, 98, 0, 1), requested: Some(ip(10, 97, 1, 99)), ..d(Request, NEW) }, to(nak(), SocketAddrV4::new(ip(10, 98, 0, 1), 67))),
        ("relayed from a network pxed does not serve", From::Relay(ip(10, 99, 0, 1)), Pkt { giaddr: ip(10, 99, 0, 1), ..d(Discover, NEW) }, Want::Ignored("relay address 10.99.0.1")),
        // Never answered.
        ("an interface outside [dhcp] interfaces", From::OtherInterface, d(Discover, NEW), Want::Ignored("not one of [dhcp] interfaces")),
        ("a client sending OFFER", From::Broadcast, d(Offer, NEW), Want::Malformed),
        ("a client sending ACK", From::Broadcast, d(Ack, NEW), Want::Malformed),
    ];
    assert!(rows.len() >= 50);
    for (name, from, p, want) in rows {
        let (got, msg, selections) = run(true, from, p);
        check(name, &got, msg.as_ref(), &want);
        // One boot decision per packet, reply and boot event included.
        let decided = usize::from(!matches!(got, Outcome::Malformed(_)));
        assert_eq!(
            selections, decided as u64,
            "{name}: rules matched {selections} times"
        );
        if let (
            Want::Reply {
                kind: MessageType::Nak,
                ..
            },
            Some(m),
        ) = (&want, &msg)
        {
            assert!(
                m.opts().get(OptionCode::Message).is_some(),
                "{name}: a NAK says why"
            );
            assert!(
                m.fname().unwrap_or_default().iter().all(|&b| b == 0),
                "{name}: no boot file in a NAK"
            );
        }
    }
}

/// What full-mode replies carry besides the address and the boot file.
#[test]
fn full_mode_reply_options() {
    use MessageType::*;
    let (_, m, _) = run(true, From::Broadcast, pkt(Discover, RESERVED));
    let m = m.expect("an offer");
    assert_eq!(
        m.opts().get(OptionCode::Hostname),
        Some(&DhcpOption::Hostname("db1".into()))
    );
    assert_eq!(
        m.opts().get(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(3600))
    );
    assert_eq!(
        m.opts().get(OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(ip(255, 255, 0, 0)))
    );
    assert_eq!(
        m.opts().get(OptionCode::Router),
        Some(&DhcpOption::Router(vec![SERVER]))
    );
    assert_eq!(
        m.fname().map(|f| f.starts_with(b"undionly.kpxe")),
        Some(true),
        "PXE ROMs read `file`"
    );
    // The shim reads only `file` and siaddr, not option 67.
    let grub = Pkt {
        arch: Some(7),
        ..pkt(Discover, GRUB)
    };
    let m = run(true, From::Broadcast, grub).1.expect("an offer");
    assert_eq!(
        m.fname().map(|f| f.starts_with(b"shimx64.efi\0")),
        Some(true)
    );
    assert_eq!(m.siaddr(), SERVER);
    // iPXE in full mode: no wait for ProxyDHCP offers (175.176).
    assert!(m.opts().get(OptionCode::from(175)).is_some());
    // UEFI HTTP Boot: HTTPClient echoed; URLs only in option 67.
    let (_, m, _) = run(
        true,
        From::Broadcast,
        Pkt {
            vendor: Some(HTTP),
            arch: Some(16),
            ..pkt(Discover, NEW)
        },
    );
    let m = m.expect("an offer");
    assert_eq!(
        m.opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
    );
    assert!(m.fname().unwrap_or_default().iter().all(|&b| b == 0));
    // A relay: option 82 and giaddr echoed.
    let relayed = Pkt {
        giaddr: ip(10, 97, 0, 254),
        relay: Some(&[1, 3, b'p', b'-', b'7']),
        ..pkt(Discover, NEW)
    };
    let (_, m, _) = run(true, From::Relay(ip(10, 97, 0, 254)), relayed);
    let m = m.expect("an offer");
    assert!(matches!(
        m.opts().get(OptionCode::RelayAgentInformation),
        Some(DhcpOption::RelayAgentInformation(_)) | Some(DhcpOption::Unknown(_))
    ));
    assert_eq!(m.giaddr(), ip(10, 97, 0, 254), "giaddr echoed");
    // An ACK commits exactly its lease, bound, for the right MAC.
    let (got, _, _) = run(
        true,
        From::Broadcast,
        Pkt {
            requested: Some(ip(10, 97, 1, 99)),
            server_id: Some(SERVER),
            ..pkt(Request, NEW)
        },
    );
    let Outcome::Reply(r) = got else {
        panic!("{got:?}")
    };
    assert!(
        matches!(&r.commit[..], [LeaseOp::Put(l)] if l.ip == ip(10, 97, 1, 99) && l.mac.0 == NEW)
    );
    // INFORM: no lease time (the client keeps its own address).
    let (_, m, _) = run(
        true,
        From::Unicast(ip(10, 97, 5, 5)),
        Pkt {
            ciaddr: ip(10, 97, 5, 5),
            ..pkt(Inform, NEW)
        },
    );
    assert_eq!(
        m.expect("an ACK").opts().get(OptionCode::AddressLeaseTime),
        None
    );
}

/// ProxyDHCP: boot information only, on 67 and 4011.
#[test]
fn proxy_mode_table() {
    use MessageType::*;
    let none = Ipv4Addr::UNSPECIFIED;
    let d = |kind| pkt(kind, NEW);
    let back = SocketAddrV4::new(ip(10, 97, 1, 50), 68);
    #[rustfmt::skip]
    let rows: Vec<(&str, From, Pkt, Want)> = vec![
        ("PXE DISCOVER on 67", From::Broadcast, d(Discover), reply(Offer, none, Some("undionly.kpxe"))),
        ("EFI DISCOVER on 67", From::Broadcast, Pkt { arch: Some(7), ..d(Discover) }, reply(Offer, none, Some("snponly.efi"))),
        ("a GRUB rule's EFI DISCOVER on 67", From::Broadcast, Pkt { arch: Some(7), ..pkt(Discover, GRUB) }, reply(Offer, none, Some("shimx64.efi"))),
        ("iPXE on 67", From::Broadcast, Pkt { user_class: Some(b"iPXE"), ..d(Discover) }, reply(Offer, none, Some(SCRIPT))),
        ("HTTP Boot on 67", From::Broadcast, Pkt { vendor: Some(HTTP), arch: Some(16), ..d(Discover) }, reply(Offer, none, Some("http://10.97.0.1:8080/assets/snponly.efi"))),
        ("REQUEST on 4011", From::Proxy(ip(10, 97, 1, 50)), Pkt { ciaddr: ip(10, 97, 1, 50), ..d(Request) }, to(reply(Ack, none, Some("undionly.kpxe")), back)),
        ("INFORM on 4011", From::Proxy(ip(10, 97, 1, 50)), Pkt { ciaddr: ip(10, 97, 1, 50), ..d(Inform) }, to(reply(Ack, none, Some("undionly.kpxe")), back)),
        ("an OS client", From::Broadcast, Pkt { vendor: None, arch: None, ..d(Discover) }, Want::Ignored("PXE clients only")),
        ("a firmware without a loader", From::Broadcast, Pkt { arch: Some(2), ..d(Discover) }, Want::Ignored("no boot file")),
        ("REQUEST on 67", From::Broadcast, Pkt { server_id: Some(SERVER), ..d(Request) }, Want::Ignored("port 67")),
        ("DISCOVER on 4011", From::Proxy(ip(10, 97, 1, 50)), d(Discover), Want::Ignored("port 4011")),
        ("RELEASE", From::Broadcast, d(Release), Want::Ignored("does not answer")),
    ];
    for (name, from, p, want) in rows {
        let (got, msg, selections) = run(false, from, p);
        check(name, &got, msg.as_ref(), &want);
        assert_eq!(selections, 1, "{name}: rules matched {selections} times");
        if let Some(m) = msg {
            let vendor = m.opts().get(OptionCode::ClassIdentifier);
            assert!(
                vendor.is_some(),
                "{name}: option 60 (PXEClient or HTTPClient)"
            );
            assert_eq!(m.yiaddr(), none, "{name}: ProxyDHCP hands out no address");
        }
    }
}

/// Proxy mode on an interface without IPv4 (an IPv6-only boot network,
/// tests/e2e/ipv6.rs): iPXE's DHCPv4 Discover gets no OFFER naming 0.0.0.0.
#[test]
fn proxy_mode_without_an_ipv4_address_stays_quiet() {
    let config = proxy_config();
    let v6_only = crate::dhcp::server::Iface {
        addrs: Vec::new(),
        ..br0()
    };
    let bytes = Pkt {
        user_class: Some(b"iPXE"),
        ..pkt(MessageType::Discover, NEW)
    }
    .bytes();
    let arrival = crate::fuzzing::broadcast_arrival(&bytes);
    let rx = crate::fuzzing::received(&bytes, &arrival, &v6_only, Port::Dhcp);
    let got = answer(&config, &mut Leases::default(), rx).outcome;
    assert!(
        matches!(&got, Outcome::Ignored(why) if why.contains("no IPv4 address")),
        "{got:?}"
    );
}

// The limits and malformed-input rows, in a file of their own (size).
#[path = "respond_limits_tests.rs"]
mod limits;
