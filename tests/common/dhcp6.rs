//! DHCPv6 test helpers: a two-namespace lab on IPv6 (pxed in `srv` with
//! fd77::1/64 on `vs`, the client in `cli` on `vc` with a known MAC and its
//! EUI-64 link-local address), a client socket on UDP 546, and
//! dhcproto-built messages as the firmware, iPXE and relays send them.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::time::{Duration, Instant};

use dhcproto::v6::{DhcpOption, Message, MessageType, OptionCode, UnknownOption, IANA};
use dhcproto::{Decodable, Encodable};

use super::{ConfigDir, NetnsPair, Pxed};
#[allow(unused_imports)] // not every test binary uses every helper
pub use pxed::dhcp::v6::testing::{class, link_local};

pub const SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
/// The client's MAC (vc in the client namespace).
pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x77, 0x60, 0x01];
pub const WAIT: Duration = Duration::from_secs(2);
/// All_DHCP_Relay_Agents_and_Servers.
pub const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// The lab: fd77::1/64 on `vs`, `vc` with [`MAC`], no duplicate address
/// detection (addresses usable at once).
pub fn new_lab(tag: &str) -> NetnsPair {
    let lab = NetnsPair::new(tag, "10.77.0.1/24");
    lab.srv
        .sh(&format!("ip addr add {SERVER6}/64 dev vs nodad"));
    let mac: Vec<String> = MAC.iter().map(|b| format!("{b:02x}")).collect();
    lab.cli.sh(&format!(
        "ip link set vc down && sysctl -qw net.ipv6.conf.vc.accept_dad=0 && \
         ip link set vc address {} && ip link set vc up",
        mac.join(":")
    ));
    wait_link_local(&lab);
    lab
}

fn wait_link_local(lab: &NetnsPair) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab
        .cli
        .sh("ip -6 -o addr show dev vc scope link")
        .contains("inet6 fe80")
    {
        assert!(Instant::now() < deadline, "vc has no link-local address");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client socket on `port` (546, or 547 for a relay) bound to `vc`.
pub fn socket(port: u16) -> UdpSocket {
    let s = socket2::Socket::new(
        socket2::Domain::IPV6,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    s.set_only_v6(true).unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind_device(Some(b"vc")).unwrap();
    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())
        .unwrap();
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

/// ff02::1:2 on `vc`.
pub fn all_servers() -> SocketAddrV6 {
    let index = nix::net::if_::if_nametoindex("vc").expect("vc in this namespace");
    SocketAddrV6::new(ALL_SERVERS, 547, 0, index)
}

/// Who sends a message, as BRIEF "IPv6 netboot" measured them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// OVMF PXEv6: arch 7, `PXEClient`, DUID-LLT, a random IAID.
    Firmware,
    /// OVMF HTTP Boot: arch 16, `HTTPClient`.
    HttpBoot,
    /// iPXE: user class `iPXE`, DUID-UUID of zeros, a fixed IAID.
    Ipxe,
}

/// dhcproto writes the class options' lengths as item counts: raw bytes.
fn raw(code: u16, data: Vec<u8>) -> DhcpOption {
    DhcpOption::Unknown(UnknownOption::new(OptionCode::from(code), data))
}

impl Client {
    pub fn duid(self) -> Vec<u8> {
        match self {
            Client::Ipxe => [&[0, 4][..], &[0; 16]].concat(),
            _ => [&[0, 1, 0, 1, 0x2e, 0x5b, 0x1c, 0][..], &MAC].concat(),
        }
    }

    fn options(self) -> Vec<DhcpOption> {
        let (arch, vendor) = match self {
            Client::HttpBoot => (16u16, &b"HTTPClient:Arch:00016:UNDI:003000"[..]),
            _ => (7, &b"PXEClient:Arch:00007:UNDI:003000"[..]),
        };
        let mut o = vec![
            DhcpOption::ClientId(self.duid()),
            DhcpOption::ElapsedTime(0),
            raw(6, vec![0, 59, 0, 60, 0, 23, 0, 16]),
            raw(61, arch.to_be_bytes().to_vec()),
            raw(16, class(Some(343), vendor)),
        ];
        if self == Client::Ipxe {
            o.push(raw(15, class(None, b"iPXE")));
        }
        o
    }

    /// A message of `kind` with an IA_NA (`iaid`, naming `addrs`) and `extra`.
    pub fn message(
        self,
        kind: MessageType,
        iaid: u32,
        addrs: &[Ipv6Addr],
        extra: Vec<DhcpOption>,
    ) -> Message {
        let mut m = Message::new(kind);
        let o = m.opts_mut();
        for opt in self.options().into_iter().chain(extra) {
            o.insert(opt);
        }
        if kind != MessageType::InformationRequest {
            let mut ia = IANA {
                id: iaid,
                t1: 0,
                t2: 0,
                opts: Default::default(),
            };
            for a in addrs {
                ia.opts.insert(DhcpOption::IAAddr(dhcproto::v6::IAAddr {
                    addr: *a,
                    preferred_life: 0,
                    valid_life: 0,
                    opts: Default::default(),
                }));
            }
            o.insert(DhcpOption::IANA(ia));
        }
        m
    }
}

/// Sends `bytes` to `dest` and waits up to `wait` for a datagram back.
pub fn exchange(
    sock: &UdpSocket,
    bytes: &[u8],
    dest: SocketAddrV6,
    wait: Duration,
) -> Option<Vec<u8>> {
    sock.send_to(bytes, dest).unwrap();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return Some(buf[..n].to_vec());
        }
    }
    None
}

/// Sends `m` to ff02::1:2 and returns the reply with its transaction id.
pub fn ask(sock: &UdpSocket, m: &Message) -> Option<Message> {
    let deadline = Instant::now() + WAIT;
    let bytes = exchange(sock, &m.to_vec().unwrap(), all_servers(), WAIT)?;
    let mut reply = Message::from_bytes(&bytes).ok();
    while reply.as_ref().is_some_and(|r| r.xid() != m.xid()) && Instant::now() < deadline {
        let mut buf = [0u8; 2048];
        reply = sock
            .recv_from(&mut buf)
            .ok()
            .and_then(|(n, _)| Message::from_bytes(&buf[..n]).ok());
    }
    reply.filter(|r| r.xid() == m.xid())
}

/// The raw value of option `code`.
pub fn opt(m: &Message, code: u16) -> Option<Vec<u8>> {
    m.opts().iter().find_map(|o| match o {
        DhcpOption::Unknown(u) if u16::from(u.code()) == code => Some(u.data().to_vec()),
        _ => None,
    })
}

/// Option 59, the boot file URL.
pub fn boot_url(m: &Message) -> Option<String> {
    opt(m, 59).map(|u| String::from_utf8_lossy(&u).into_owned())
}

/// The addresses of the first IA_NA with their valid lifetimes.
pub fn addresses(m: &Message) -> Vec<(Ipv6Addr, u32)> {
    let Some(DhcpOption::IANA(ia)) = m.opts().get(OptionCode::IANA) else {
        return Vec::new();
    };
    ia.opts
        .iter()
        .filter_map(|o| match o {
            DhcpOption::IAAddr(a) => Some((a.addr, a.valid_life)),
            _ => None,
        })
        .collect()
}

/// The message-level status code, if any.
pub fn status(m: &Message) -> Option<u16> {
    match m.opts().get(OptionCode::StatusCode) {
        Some(DhcpOption::StatusCode(s)) => Some(s.status.into()),
        _ => None,
    }
}

/// The server's DUID (option 2).
pub fn server_id(m: &Message) -> Vec<u8> {
    match m.opts().get(OptionCode::ServerId) {
        Some(DhcpOption::ServerId(d)) => d.clone(),
        _ => panic!("no Server Identifier in {m:?}"),
    }
}

pub fn start(lab: &NetnsPair, dir: &ConfigDir) -> Pxed {
    let p = Pxed::start(&dir.config(), Some(&lab.srv.name));
    p.wait_log("dhcp6 listening", Duration::from_secs(10));
    p
}

/// The `leases6` table: (ip, mac, state) per row.
pub fn lease_rows6(db: &std::path::Path) -> Vec<(Ipv6Addr, Option<String>, i64)> {
    let db = rusqlite::Connection::open(db).unwrap();
    let mut stmt = db.prepare("SELECT ip, mac, state FROM leases6").unwrap();
    let rows = stmt
        .query_map([], |r| {
            let ip: Vec<u8> = r.get(0)?;
            let ip =
                <[u8; 16]>::try_from(ip.as_slice()).map_or(Ipv6Addr::UNSPECIFIED, Ipv6Addr::from);
            Ok((ip, r.get(1)?, r.get(2)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows
}
