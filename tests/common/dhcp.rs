//! DHCP test helpers: a two-namespace lab (pxed in `srv` on 10.77.0.1/24,
//! the client in `cli`, joined by a veth pair), client sockets and
//! dhcproto-built packets, DORA, and a tshark capture of the ACKs on the wire.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Encodable};

use super::wire;
#[allow(unused_imports)] // not every test binary uses every helper
pub use super::wire::{arch, pxe_class};
use super::{ConfigDir, NetnsPair, Pxed};

pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// Two namespaces: `srv` (pxed, 10.77.0.1/24 on `vs`) and `cli` (`vc`).
pub type Lab = NetnsPair;

pub fn new_lab(tag: &str) -> Lab {
    NetnsPair::new(tag, "10.77.0.1/24")
}

/// A client socket on port 68 (or `port`), bound to `vc`, allowed to broadcast.
pub fn socket(port: u16) -> UdpSocket {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_broadcast(true).unwrap();
    s.bind_device(Some(b"vc")).unwrap();
    s.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())
        .unwrap();
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

pub fn mac(n: u8) -> [u8; 6] {
    [0x52, 0x54, 0x00, 0x77, 0x00, n]
}

pub fn packet(kind: MessageType, mac: [u8; 6], opts: Vec<DhcpOption>) -> Message {
    wire::message(kind, mac, opts)
}

/// Sends `m` to `dest` and waits up to `wait` for a reply with its xid.
pub fn ask(sock: &UdpSocket, m: &Message, dest: SocketAddrV4, wait: Duration) -> Option<Message> {
    sock.send_to(&m.to_vec().unwrap(), dest).unwrap();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            if let Ok(r) = Message::from_bytes(&buf[..n]) {
                if r.xid() == m.xid() {
                    return Some(r);
                }
            }
        }
    }
    None
}

pub fn bcast(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::BROADCAST, port)
}

pub const WAIT: Duration = Duration::from_secs(2);

pub fn msg_type(m: &Message) -> Option<MessageType> {
    m.opts().msg_type()
}

pub fn bytes_opt(m: &Message, code: OptionCode) -> Option<Vec<u8>> {
    match m.opts().get(code)? {
        DhcpOption::BootfileName(v) | DhcpOption::ClassIdentifier(v) => Some(v.clone()),
        DhcpOption::Unknown(u) => Some(u.data().to_vec()),
        _ => None,
    }
}

pub fn filename(m: &Message) -> String {
    String::from_utf8_lossy(&bytes_opt(m, OptionCode::BootfileName).unwrap_or_default())
        .into_owned()
}

/// The BOOTP `file` header field (what PXE ROMs and shim read).
pub fn file_field(m: &Message) -> String {
    String::from_utf8_lossy(m.fname().unwrap_or_default())
        .trim_end_matches('\0')
        .to_string()
}

/// DISCOVER → OFFER → REQUEST → ACK; returns (offer, ack).
pub fn dora(sock: &UdpSocket, mac: [u8; 6], extra: Vec<DhcpOption>) -> (Message, Message) {
    let d = packet(MessageType::Discover, mac, extra.clone());
    let offer = ask(sock, &d, bcast(67), WAIT).expect("an OFFER");
    assert_eq!(msg_type(&offer), Some(MessageType::Offer));
    let mut opts = extra;
    opts.push(DhcpOption::RequestedIpAddress(offer.yiaddr()));
    opts.push(DhcpOption::ServerIdentifier(SERVER));
    let r = packet(MessageType::Request, mac, opts);
    let ack = ask(sock, &r, bcast(67), WAIT).expect("an ACK");
    (offer, ack)
}

pub fn start(lab: &Lab, dir: &ConfigDir) -> Pxed {
    let p = Pxed::start(&dir.config(), Some(&lab.srv.name));
    p.wait_log("dhcp listening", Duration::from_secs(10));
    p
}

/// tshark writing every DHCP packet on `iface` in namespace `ns` to `pcap`;
/// stopped by its PID.
pub struct Capture {
    child: Child,
    pub pcap: PathBuf,
}

impl Capture {
    /// Starts the capture and waits until tshark has written its file header.
    pub fn start(ns: &str, iface: &str, pcap: &Path) -> Capture {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "tshark", "-q", "-i", iface])
            .args(["-f", "udp port 67 or udp port 68", "-w"])
            .arg(pcap)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(pcap).map_or(true, |m| m.len() == 0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        Capture {
            child,
            pcap: pcap.to_path_buf(),
        }
    }

    /// Stops tshark (after a moment for the last packets) and returns every
    /// ACK on the wire, in order, as (chaddr, yiaddr).
    pub fn acks(self) -> Vec<(String, String)> {
        self.timed_acks()
            .into_iter()
            .map(|(_, m, ip)| (m, ip))
            .collect()
    }

    /// [`Capture::acks`] with each one's capture time (Unix seconds).
    pub fn timed_acks(mut self) -> Vec<(f64, String, String)> {
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let out = Command::new("tshark")
            .args(["-r"])
            .arg(&self.pcap)
            .args(["-Y", "dhcp.option.dhcp == 5", "-T", "fields"])
            .args(["-e", "frame.time_epoch"])
            .args(["-e", "dhcp.hw.mac_addr", "-e", "dhcp.ip.your"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                let at = f.next()?.parse().ok()?;
                Some((at, f.next()?.to_string(), f.next()?.to_string()))
            })
            .collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// perfdhcp in the client namespace: DORA exchanges at `rate` per second
/// towards 10.77.0.1 for at most `seconds`; stopped by its PID when dropped.
pub struct Perfdhcp(Child);

impl Perfdhcp {
    pub fn start(lab: &Lab, rate: u32, seconds: u32) -> Perfdhcp {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.cli.name,
                "timeout",
                &seconds.to_string(),
            ])
            .args(["perfdhcp", "-4", "-l", "vc", "-r", &rate.to_string()])
            .args(["-R", "100000", "-p", &seconds.to_string(), "10.77.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Perfdhcp(child)
    }

    pub fn wait(mut self) {
        let _ = self.0.wait();
    }
}

impl Drop for Perfdhcp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The leases table: (ip, mac, state) per row.
pub fn lease_rows(db: &Path) -> Vec<(Ipv4Addr, String, i64)> {
    let db = rusqlite::Connection::open(db).unwrap();
    let mut stmt = db.prepare("SELECT ip, mac, state FROM leases").unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((Ipv4Addr::from(r.get::<_, u32>(0)?), r.get(1)?, r.get(2)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows
}

/// SQLite's own check of the file: "ok", or what is broken.
pub fn integrity(db: &Path) -> String {
    rusqlite::Connection::open(db)
        .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get(0)))
        .unwrap_or_else(|e| format!("cannot open: {e}"))
}

/// Bound leases by MAC.
pub fn bound_by_mac(rows: &[(Ipv4Addr, String, i64)]) -> HashMap<&str, Ipv4Addr> {
    rows.iter()
        .filter(|r| r.2 == 1)
        .map(|r| (r.1.as_str(), r.0))
        .collect()
}

/// Where a test's pxed keeps its leases: the SQLite file of its config
/// directory, or a PostgreSQL of the test's own (`[database]`). The DHCP
/// tests that touch leases run once on each.
pub enum LeaseDb {
    Sqlite,
    Postgres(super::pg::Postgres),
}

impl LeaseDb {
    /// PostgreSQL, or `None` (skipped) where it cannot run.
    pub fn postgres(what: &str) -> Option<LeaseDb> {
        super::pg::available(what).then(|| LeaseDb::Postgres(super::pg::Postgres::start()))
    }

    /// Tells the namespaces of the two runs of one test apart.
    pub fn tag(&self) -> &'static str {
        match self {
            LeaseDb::Sqlite => "s",
            LeaseDb::Postgres(_) => "p",
        }
    }

    /// What the config needs for this store (nothing for SQLite).
    pub fn section(&self) -> String {
        match self {
            LeaseDb::Sqlite => String::new(),
            LeaseDb::Postgres(pg) => pg.section("pxed"),
        }
    }

    /// The leases table: (ip, mac, state) per row that has a client.
    pub fn rows(&self, dir: &ConfigDir) -> Vec<(Ipv4Addr, String, i64)> {
        match self {
            LeaseDb::Sqlite => lease_rows(&dir.path().join("pxed-leases.sqlite")),
            LeaseDb::Postgres(pg) => pg
                .psql(
                    "pxed",
                    "SELECT ip, mac, state FROM leases WHERE client <> ''::bytea",
                )
                .lines()
                .filter_map(|l| {
                    let mut f = l.split('|');
                    let ip = u32::try_from(f.next()?.parse::<i64>().ok()?).ok()?;
                    Some((
                        Ipv4Addr::from(ip),
                        f.next()?.to_string(),
                        f.next()?.parse().ok()?,
                    ))
                })
                .collect(),
        }
    }
}

/// Two `#[test]`s of one test body: `<name>::sqlite` and `<name>::postgres`.
#[macro_export]
macro_rules! on_both_stores {
    ($name:ident, $body:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$body(super::common::dhcp::LeaseDb::Sqlite);
            }
            #[test]
            fn postgres() {
                if let Some(db) = super::common::dhcp::LeaseDb::postgres(stringify!($name)) {
                    super::$body(db);
                }
            }
        }
    };
}
