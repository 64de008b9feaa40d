//! The fuzz harness: one function per `cargo fuzz` target (`fuzz/fuzz_targets/`),
//! each feeding arbitrary bytes to the same entry point the daemon uses on
//! what arrives from the network or the operator, over the fixed config in
//! `fuzz/fixture/`, and asserting what must hold for any input. Compiled only
//! for cargo-fuzz (`--cfg fuzzing`) and for unit tests, which replay the
//! committed corpora and regressions (`fuzz/corpus/`, `fuzz/regressions/`)
//! through the same functions on every `cargo test`.
//!
//! Harness code: a panic here *is* the finding, so fixtures that cannot load
//! panic with the reason.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::Decodable;

use crate::config::{self, Config, TemplateFile, TemplateFiles};
use crate::core::identity::MenuRequest;
use crate::core::{Base, Boot, ClientString, Identity, Mac, Rule};
use crate::dhcp::exchange::Port;
use crate::dhcp::guard::Guard;
use crate::dhcp::leases::{Lease, LeaseOp, Leases, State};
use crate::dhcp::outcome::Reply;
use crate::dhcp::server::{Arrival, Iface};
use crate::dhcp::{respond, Answer, Clock, Outcome, Received};

/// `fuzz/fixture/` in this source tree.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fixture")
}

fn fixture_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        std::fs::read_to_string(fixture_dir().join("machines.toml"))
            .expect("fuzz/fixture/machines.toml")
    })
}

/// The shipped `boot-templates/`, read once.
fn templates() -> &'static [TemplateFile] {
    static FILES: OnceLock<Vec<TemplateFile>> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("boot-templates");
        config::read_templates(&dir).unwrap_or_else(|e| panic!("boot-templates/: {e}"))
    })
}

fn load_fixture(text: &str) -> Arc<Config> {
    config::load_text(
        &fixture_dir().join("machines.toml"),
        text,
        TemplateFiles::Given(templates()),
    )
    .unwrap_or_else(|e| panic!("fuzz/fixture/machines.toml: {e}"))
}

/// The fixture config: full DHCP.
pub fn full_config() -> Arc<Config> {
    static CONFIG: OnceLock<Arc<Config>> = OnceLock::new();
    CONFIG.get_or_init(|| load_fixture(fixture_text())).clone()
}

/// The fixture config in ProxyDHCP mode.
fn proxy_config() -> Arc<Config> {
    static CONFIG: OnceLock<Arc<Config>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            load_fixture(&fixture_text().replace("mode = \"full\"", "mode = \"proxy\""))
        })
        .clone()
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// The first word of every line that is not blank or a comment: what a
/// script or menu does, whatever values sit in its arguments.
pub fn structure(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect()
}

// ---------------------------------------------------------------- DHCP ----

/// "Now" for the lease table: fixed, so every run is reproducible.
const NOW: u64 = 1_800_000_000;

/// The lease table every DHCP input starts from: a bound lease (the MAC QEMU
/// guests use in the lab), an offer, a quarantined and a released address, an
/// expired lease, and the reservation's holder.
fn stored_leases() -> Vec<Lease> {
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

// ---------------------------------------------------------------- TFTP ----

/// Target `tftp`: one datagram on the TFTP listener; the first packet pxed
/// would send back must be well-formed, within the negotiated limits, and
/// never come from outside the asset root.
pub fn tftp(datagram: &[u8]) {
    let config = full_config();
    let reply = runtime().block_on(crate::tftp::first_packet(&config, datagram));
    let request = match crate::tftp::packet::parse(datagram) {
        Ok(crate::tftp::packet::Packet::Rrq(r)) => r,
        _ => {
            if let Some(r) = &reply {
                assert_eq!(r.get(..2), Some(&[0, 5][..]), "only an ERROR for a non-RRQ");
            }
            return;
        }
    };
    let reply = reply.expect("an RRQ always gets an answer");
    let opcode = u16::from_be_bytes([reply[0], reply[1]]);
    let name = request.filename.trim_start_matches('/');
    match opcode {
        5 => return,
        3 | 6 => {}
        other => panic!("first packet with opcode {other}"),
    }
    if let Ok(path) = crate::assets::resolve(config.server.asset_roots(), name) {
        let root = config
            .server
            .assets_dir
            .canonicalize()
            .expect("the fixture asset root");
        assert!(path.starts_with(&root), "{name:?} served {path:?}");
    }
    if opcode == 6 {
        let text = &reply[2..];
        let fields: Vec<&[u8]> = text.split(|&b| b == 0).collect();
        for pair in fields
            .chunks(2)
            .filter(|p| p.len() == 2 && !p[0].is_empty())
        {
            let value: u64 = std::str::from_utf8(pair[1])
                .ok()
                .and_then(|v| v.parse().ok())
                .expect("OACK values are numbers");
            match pair[0] {
                b"blksize" => {
                    assert!((8..=u64::from(crate::tftp::MAX_BLKSIZE)).contains(&value))
                }
                b"windowsize" => {
                    assert!((1..=u64::from(crate::tftp::MAX_WINDOWSIZE)).contains(&value))
                }
                b"timeout" => assert!((1..=255).contains(&value)),
                b"tsize" => {}
                other => panic!("OACK names an option nobody asked for: {other:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------- HTTP ----

/// Target `http`: bytes as a client sends them on a connection to the HTTP
/// listener (request line, headers, pipelined requests), served by the real
/// router on hyper from memory. Then the query of the first request line
/// goes through identity → rule → render, and the script or menu must have
/// the structure of the same rule rendered for a harmless machine.
pub fn http(bytes: &[u8]) {
    let config = full_config();
    let response = runtime().block_on(serve_bytes(config.clone(), bytes));
    if !response.is_empty() {
        assert!(
            response.starts_with(b"HTTP/1."),
            "not an HTTP response: {:?}",
            String::from_utf8_lossy(&response[..response.len().min(64)])
        );
    }
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return;
    };
    let target = line.split(' ').nth(1).unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let base = Base::Http("http://10.97.0.1:8080".into());
    if path == "/ipxe" {
        script_keeps_its_structure(&config, query, &base);
    } else if let Some(name) = path.strip_prefix("/pxelinux/pxelinux.cfg/") {
        menu_keeps_its_structure(&config, name, query, &base);
    }
}

async fn serve_bytes(config: Arc<Config>, bytes: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let shared = Arc::new(arc_swap::ArcSwap::new(config));
    let app = crate::http::router(shared);
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let conn = crate::http::Conn {
        local: SocketAddr::from(([10, 97, 0, 1], 8080)),
        peer: SocketAddr::from(([10, 97, 1, 10], 40000)),
    };
    let talk = async move {
        let _ = client.write_all(bytes).await;
        let _ = client.shutdown().await;
        let mut out = Vec::new();
        let _ = client.read_to_end(&mut out).await;
        out
    };
    let ((), out) = tokio::join!(crate::http::connection(server, conn, app), talk);
    out
}

/// The identity with every client string replaced by a harmless one (same
/// presence, so templates take the same branches).
fn harmless(id: &Identity) -> Identity {
    let plain = |s: &Option<ClientString>| s.as_ref().and_then(|_| ClientString::new("plain"));
    Identity {
        product: plain(&id.product),
        serial: plain(&id.serial),
        manufacturer: plain(&id.manufacturer),
        ..id.clone()
    }
}

fn assert_same_shape(got: &str, want: &str, what: &str) {
    assert_eq!(
        structure(got),
        structure(want),
        "{what}: client values changed the structure:\n{got}"
    );
    assert_eq!(
        got.lines().count(),
        want.lines().count(),
        "{what}: client values added lines:\n{got}"
    );
}

fn script_keeps_its_structure(config: &Config, query: &str, base: &Base) {
    let Ok(id) = Identity::from_query(query) else {
        return;
    };
    let got = config.policy.ipxe_script(&id, base);
    let rule = config
        .policy
        .select(&id)
        .expect("the fixture has a catch-all rule");
    let want = expected(config, rule, rule.boot.ipxe_template(id.arch), &id, base);
    assert_same_shape(&got.text, &want, "iPXE script");
}

fn menu_keeps_its_structure(config: &Config, name: &str, query: &str, base: &Base) {
    let Some(MenuRequest { id, rule_hint, .. }) = MenuRequest::parse(name, query) else {
        return;
    };
    let Some(got) = config
        .policy
        .pxelinux_config(&id, base, rule_hint.as_deref())
    else {
        return;
    };
    let rule = config
        .policy
        .rules
        .iter()
        .find(|r| Some(&r.name) == got.rule.as_ref())
        .expect("a rendered menu names its rule");
    let want = expected(config, rule, &rule.boot.menu_template, &id, base);
    assert_same_shape(&got.text, &want, "pxelinux menu");
}

/// `template` of `rule` rendered for a harmless copy of `id`.
fn expected(
    config: &Config,
    rule: &Rule<Boot>,
    template: &str,
    id: &Identity,
    base: &Base,
) -> String {
    let none = Default::default();
    (config.policy)
        .render_rule_checked(rule, template, &harmless(id), base, &none)
        .expect("the fixture's templates render")
}

// -------------------------------------------------------------- config ----

/// Target `config`: bytes as `machines.toml` (the shipped templates fixed):
/// either a config in which every rule renders, or errors that each point at
/// a line of the file.
pub fn config(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let path = fixture_dir().join("machines.toml");
    match config::load_text(&path, text, TemplateFiles::Given(templates())) {
        Ok(c) => {
            // Whatever the rules' globs, matching a machine terminates and
            // renders.
            let base = Base::Http("http://10.97.0.1:8080".into());
            for query in [
                "mac=52:54:00:12:34:56&product=Express5800%2Fi120Ra-e1&serial=SN-42-1",
                "mac=52-54-00-00-00-aa&manufacturer=NEC&platform=efi&buildarch=x86_64",
            ] {
                let id = Identity::from_query(query).expect("a well-formed query");
                let _ = c.policy.ipxe_script(&id, &base);
                let _ = c.policy.pxelinux_config(&id, &base, None);
                let _ = c.policy.rules.explain(&id);
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "rejected without a reason");
            let lines = text.lines().count().max(1) + 1;
            for e in &errors.0 {
                if *e.location.file == *path.display().to_string() {
                    assert!(
                        e.location.line >= 1 && e.location.line <= lines,
                        "{e} points past the end ({lines} lines)"
                    );
                }
                assert!(!e.reason.is_empty());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed seed and regression input of `target`, replayed.
    fn replay(target: &str, run: fn(&[u8])) -> usize {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut n = 0;
        for dir in [
            root.join("corpus").join(target),
            root.join("regressions").join(target),
        ] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let bytes = std::fs::read(entry.path()).unwrap();
                let result = std::panic::catch_unwind(|| run(&bytes));
                assert!(result.is_ok(), "{} fails", entry.path().display());
                n += 1;
            }
        }
        n
    }

    fn seed(target: &str, name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target)
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The harness reaches the answers, not only the parsers: captured
    /// clients get what they get from the daemon.
    #[test]
    fn seeds_get_real_answers() {
        let full = full_config();
        let br0 = br0();
        let bootfile = |name: &str| {
            let datagram = seed("dhcp", name);
            let arrival = broadcast_arrival(&datagram);
            let mut leases = Leases::from_stored(stored_leases());
            let rx = received(&datagram, &arrival, &br0, Port::Dhcp);
            let a = answer(&full, &mut leases, rx);
            let Outcome::Reply(reply) = &a.outcome else {
                panic!("{name}: no reply: {a:?}")
            };
            let m = Message::from_bytes(&reply.out.bytes).unwrap();
            match m.opts().get(OptionCode::BootfileName) {
                Some(DhcpOption::BootfileName(f)) => String::from_utf8_lossy(f).into_owned(),
                other => panic!("{name}: {other:?}"),
            }
        };
        assert_eq!(
            bootfile("bios-rom-01-discover"),
            "http://10.97.0.1:8080/boot.ipxe"
        );
        assert_eq!(bootfile("pxe-rom-discover"), "undionly.kpxe");
        assert_eq!(bootfile("pxe-efi-discover"), "snponly.efi");

        let oack = runtime()
            .block_on(crate::tftp::first_packet(
                &full,
                &seed("tftp", "client-rrq-02-undionly.kpxe"),
            ))
            .unwrap();
        assert_eq!(&oack[..2], &[0, 6], "{oack:?}");
        assert!(oack.windows(10).any(|w| w == b"tsize\x003000"), "{oack:?}");

        let response = runtime().block_on(serve_bytes(full.clone(), &seed("http", "ipxe-bios-03")));
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("-> rule by-serial"), "{text}");
    }

    #[test]
    fn dhcp_corpus_replays() {
        assert!(replay("dhcp", dhcp) > 0, "no DHCP seeds");
    }

    #[test]
    fn tftp_corpus_replays() {
        assert!(replay("tftp", tftp) > 0, "no TFTP seeds");
    }

    #[test]
    fn http_corpus_replays() {
        assert!(replay("http", http) > 0, "no HTTP seeds");
    }

    #[test]
    fn config_corpus_replays() {
        assert!(replay("config", config) > 0, "no config seeds");
    }
}
