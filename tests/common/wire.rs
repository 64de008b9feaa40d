//! The one set of DHCP and TFTP packet builders and parsers the test clients
//! share: `tests/common` (sync clients of the integration tests) and the load
//! clients of `examples/storm` and `examples/tftp_load.rs` (which include
//! this file with `#[path]`, as cargo gives tests/ and examples/ no common
//! crate). Wire format only: no sockets, no timing.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode, UnknownOption};

// ---------------------------------------------------------------- DHCP ----

/// A client message of `kind` from `mac` (random xid) with `opts`.
pub fn message(kind: MessageType, mac: [u8; 6], opts: Vec<DhcpOption>) -> Message {
    let u = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new(u, u, u, u, &mac);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    for o in opts {
        m.opts_mut().insert(o);
    }
    m
}

/// An option pxed reads raw (93, 94, 82…), as bytes.
pub fn raw(code: u8, data: Vec<u8>) -> DhcpOption {
    DhcpOption::Unknown(UnknownOption::new(OptionCode::from(code), data))
}

/// Option 93, client system architecture.
pub fn arch(code: u16) -> DhcpOption {
    raw(93, code.to_be_bytes().to_vec())
}

/// Option 60 as a BIOS PXE ROM sends it.
pub fn pxe_class() -> DhcpOption {
    DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec())
}

/// The boot file of a reply as firmware reads it: option 67, else the `file`
/// field; both are C strings to firmware (dnsmasq sends option 67 with its NUL).
pub fn boot_file(m: &Message) -> String {
    let name = match m.opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(v)) => v.as_slice(),
        _ => m.fname().unwrap_or_default(),
    };
    String::from_utf8_lossy(name)
        .trim_end_matches('\0')
        .to_string()
}

// ---------------------------------------------------------------- TFTP ----

/// A read request for `name` in octet mode with `options`.
pub fn rrq(name: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut p = vec![0, 1];
    for s in [name, "octet"]
        .into_iter()
        .chain(options.iter().flat_map(|(k, v)| [*k, *v]))
    {
        p.extend_from_slice(s.as_bytes());
        p.push(0);
    }
    p
}

pub fn wrq(name: &str) -> Vec<u8> {
    let mut p = rrq(name, &[]);
    p[1] = 2;
    p
}

pub fn ack(block: u16) -> [u8; 4] {
    let b = block.to_be_bytes();
    [0, 4, b[0], b[1]]
}

pub fn opcode(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[0], p[1]])
}

/// ERROR code of a packet, or a panic with what it was instead.
pub fn error_code(p: &[u8]) -> u16 {
    assert_eq!(opcode(p), 5, "expected ERROR, got {p:?}");
    u16::from_be_bytes([p[2], p[3]])
}

/// An ERROR packet in words: `ERROR 1: file not found`.
pub fn error_text(p: &[u8]) -> String {
    let code = u16::from_be_bytes([p[2], p[3]]);
    let text = p[4..].split(|&b| b == 0).next().unwrap_or_default();
    format!("ERROR {code}: {}", String::from_utf8_lossy(text))
}

/// The value of option `name` in an OACK (names compare case-insensitively,
/// RFC 2347).
pub fn oack_value(p: &[u8], name: &str) -> Option<String> {
    assert_eq!(opcode(p), 6, "expected OACK, got {p:?}");
    let mut f = p[2..].split(|&b| b == 0);
    while let (Some(k), Some(v)) = (f.next(), f.next()) {
        if k.eq_ignore_ascii_case(name.as_bytes()) {
            return Some(String::from_utf8_lossy(v).into_owned());
        }
    }
    None
}
