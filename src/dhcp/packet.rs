//! From bytes off the wire to a [`Request`] the exchange can trust, or a
//! [`Rejected`] reason for the debug log. Every check a hostile or broken packet
//! could fail is here: length, op, hardware address length (dhcproto's
//! `chaddr()` would panic on `hlen > 16`), magic cookie, message type, option
//! encoding. Nothing here panics or unwraps client data.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::Decodable;

use super::options::{circuit_id, is_ipxe_user_class, Tlv, OPTIONS_START as MIN_LEN};
use crate::core::decide::{Client, VendorClass};
use crate::core::{Arch, Mac};
const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// Why a packet was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("too short ({0} bytes, a DHCP message has at least 240)")]
    TooShort(usize),
    #[error("larger than the receive buffer (truncated)")]
    Truncated,
    #[error("not a BOOTREQUEST (op {0})")]
    NotRequest(u8),
    #[error("not Ethernet (htype {0}, hlen {1})")]
    NotEthernet(u8, u8),
    #[error("no DHCP magic cookie (BOOTP is not served)")]
    NoMagic,
    #[error("undecodable options: {0}")]
    Options(String),
    #[error("no message type (option 53)")]
    NoMessageType,
    #[error("message type {0:?} is not one a client sends")]
    WrongMessageType(MessageType),
}

/// A decoded client message with the fields pxed uses pulled out.
#[derive(Debug, Clone)]
pub struct Request {
    pub msg: Message,
    pub kind: MessageType,
    pub mac: Mac,
    /// Option 61, else hardware type 1 + MAC (the same key RFC 2132 suggests).
    pub client_id: Vec<u8>,
    pub requested_ip: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    /// Option 82 exactly as the relay sent it, to echo back.
    pub relay_info: Option<Vec<u8>>,
    /// Option 97 (PXE client GUID), echoed in proxy replies.
    pub guid: Option<Vec<u8>>,
    pub boot: Client,
}

impl Request {
    pub fn ciaddr(&self) -> Ipv4Addr {
        self.msg.ciaddr()
    }

    pub fn giaddr(&self) -> Ipv4Addr {
        self.msg.giaddr()
    }

    /// The relay and the port behind it: giaddr and option 82's circuit id
    /// (sub-option 1), when a relay sent both.
    pub fn circuit(&self) -> Option<Circuit<'_>> {
        let giaddr = self.giaddr();
        if giaddr.is_unspecified() {
            return None;
        }
        let id = self.relay_info.as_deref().and_then(circuit_id)?;
        Some(Circuit { giaddr, id })
    }
}

/// A relay's port: one switch port, usually one machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Circuit<'a> {
    pub giaddr: Ipv4Addr,
    /// At most 255 bytes (one sub-option).
    pub id: &'a [u8],
}

impl Circuit<'_> {
    /// giaddr and circuit id as one byte string (a table key).
    pub fn key(&self) -> Box<[u8]> {
        let mut k = self.giaddr.octets().to_vec();
        k.extend_from_slice(self.id);
        k.into_boxed_slice()
    }
}

/// Parses and validates one datagram.
pub fn parse(buf: &[u8]) -> Result<Request, Rejected> {
    check_header(buf)?;
    // Every option's length must fit in the packet: dhcproto stops quietly at
    // an option that runs past the end, and a packet like that is broken or
    // hostile.
    if let Some(Err(overrun)) = Tlv::options(buf).find(Result::is_err) {
        return Err(Rejected::Options(overrun.to_string()));
    }
    // dhcproto sees only the options pxed reads through it, with the lengths
    // it expects (see `decoder_view`); catch_unwind keeps a future decoder
    // bug from taking the server down with it.
    let view = decoder_view(buf);
    let msg = std::panic::catch_unwind(|| Message::from_bytes(&view))
        .map_err(|_| Rejected::Options("decoder panicked".into()))?
        .map_err(|e| Rejected::Options(e.to_string()))?;
    if msg.opcode() != Opcode::BootRequest {
        return Err(Rejected::NotRequest(buf[0]));
    }
    if msg.htype() != HType::Eth || msg.hlen() != 6 {
        return Err(Rejected::NotEthernet(buf[1], buf[2]));
    }
    let kind = msg.opts().msg_type().ok_or(Rejected::NoMessageType)?;
    if !matches!(
        kind,
        MessageType::Discover
            | MessageType::Request
            | MessageType::Decline
            | MessageType::Release
            | MessageType::Inform
    ) {
        return Err(Rejected::WrongMessageType(kind));
    }
    Ok(request(buf, msg, kind))
}

/// The fixed header: long enough, a BOOTREQUEST, Ethernet, the magic cookie.
fn check_header(buf: &[u8]) -> Result<(), Rejected> {
    if buf.len() < MIN_LEN {
        return Err(Rejected::TooShort(buf.len()));
    }
    if buf[0] != 1 {
        return Err(Rejected::NotRequest(buf[0]));
    }
    if buf[1] != 1 || buf[2] != 6 {
        return Err(Rejected::NotEthernet(buf[1], buf[2]));
    }
    if buf[236..240] != MAGIC {
        return Err(Rejected::NoMagic);
    }
    Ok(())
}

/// The fields pxed uses, out of a message that passed [`parse`]'s checks.
fn request(buf: &[u8], msg: Message, kind: MessageType) -> Request {
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&buf[28..34]);
    let mac = Mac(mac);
    let opts = msg.opts();
    let bytes = |code| match opts.get(code) {
        Some(DhcpOption::ClassIdentifier(v))
        | Some(DhcpOption::ClientIdentifier(v))
        | Some(DhcpOption::UserClass(v))
        | Some(DhcpOption::ClientMachineIdentifier(v)) => Some(v.as_slice()),
        _ => None,
    };
    let client_id = match bytes(OptionCode::ClientIdentifier) {
        Some(id) if !id.is_empty() => id.to_vec(),
        _ => {
            let mut id = vec![1];
            id.extend_from_slice(&mac.0);
            id
        }
    };
    let requested_ip = match opts.get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    };
    let server_id = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    // Read option 93 from the raw bytes: dhcproto keeps only the first value and
    // names 7 and 9 the pre-errata way; we map the number ourselves.
    let arch = raw_option(buf, 93)
        .and_then(|v| v.get(..2))
        .map(|v| Arch::from_option93(u16::from_be_bytes([v[0], v[1]])));
    let boot = Client {
        mac,
        arch,
        ipxe: bytes(OptionCode::UserClass).is_some_and(is_ipxe_user_class),
        vendor: VendorClass::parse(bytes(OptionCode::ClassIdentifier)),
    };
    Request {
        kind,
        mac,
        client_id,
        requested_ip,
        server_id,
        relay_info: raw_option(buf, 82).map(<[u8]>::to_vec),
        guid: bytes(OptionCode::ClientMachineIdentifier).map(<[u8]>::to_vec),
        boot,
        msg,
    }
}

/// The options [`parse`] reads through dhcproto, with the length dhcproto
/// needs (`None`: any). Everything else pxed reads raw (82, 93) or not at all.
const DECODED: &[(u8, Option<u8>)] = &[
    (53, Some(1)), // message type
    (50, Some(4)), // requested address
    (54, Some(4)), // server identifier
    (61, None),    // client identifier
    (60, None),    // vendor class
    (77, None),    // user class
    (97, None),    // client machine identifier (PXE GUID)
];

/// The packet as dhcproto gets it: the fixed header and only the [`DECODED`]
/// options whose length is right. dhcproto panics (debug assertions) on
/// option 80, 81, 94 and the bulk-leasequery options with unexpected lengths,
/// and stops reading at the first option it cannot decode, so a malformed
/// option pxed does not even use (a firmware's odd option 94) would hide the
/// vendor and user class after it. Found by the `dhcp` fuzz target
/// (fuzz/regressions/dhcp/). `buf` has passed the option check in [`parse`].
fn decoder_view(buf: &[u8]) -> Vec<u8> {
    let mut view = Vec::with_capacity(buf.len());
    view.extend_from_slice(&buf[..MIN_LEN]);
    for (code, value) in Tlv::options(buf).map_while(Result::ok) {
        let len = value.len() as u8; // a Tlv value is at most 255 bytes
        let wanted = DECODED
            .iter()
            .any(|&(c, l)| c == code && l.map_or(true, |l| l == len));
        if wanted {
            view.extend_from_slice(&[code, len]);
            view.extend_from_slice(value);
        }
    }
    view.push(255);
    view
}

/// The first instance of option `code` in a packet that already decoded, read
/// from the raw bytes (bounds-checked; `None` if absent or malformed).
pub fn raw_option(buf: &[u8], code: u8) -> Option<&[u8]> {
    Tlv::options(buf).get(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::{Encodable, Encoder};

    pub fn discover() -> Vec<u8> {
        let mut m = Message::new(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[0x52, 0x54, 0, 1, 2, 3],
        );
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        m.opts_mut().insert(DhcpOption::ClassIdentifier(
            b"PXEClient:Arch:00007".to_vec(),
        ));
        m.opts_mut()
            .insert(DhcpOption::Unknown(dhcproto::v4::UnknownOption::new(
                OptionCode::ClientSystemArchitecture,
                vec![0, 9],
            )));
        m.opts_mut()
            .insert(DhcpOption::UserClass(b"\x04iPXE".to_vec()));
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        buf
    }

    #[test]
    fn reads_what_boot_needs() {
        let r = parse(&discover()).unwrap();
        assert_eq!(r.kind, MessageType::Discover);
        assert_eq!(r.boot.arch, Some(Arch::EfiX64));
        assert!(r.boot.ipxe);
        assert_eq!(r.boot.vendor, VendorClass::Pxe);
        assert_eq!(r.client_id, vec![1, 0x52, 0x54, 0, 1, 2, 3]);
    }

    #[test]
    fn hostile_packets_are_rejected_not_panicked_on() {
        let good = discover();
        assert_eq!(parse(&good[..100]).unwrap_err(), Rejected::TooShort(100));
        let mut reply = good.clone();
        reply[0] = 2;
        assert_eq!(parse(&reply).unwrap_err(), Rejected::NotRequest(2));
        let mut big_hlen = good.clone();
        big_hlen[2] = 200;
        assert!(matches!(
            parse(&big_hlen),
            Err(Rejected::NotEthernet(1, 200))
        ));
        let mut no_magic = good.clone();
        no_magic[236] = 0;
        assert_eq!(parse(&no_magic).unwrap_err(), Rejected::NoMagic);
        // An option whose length runs past the end of the packet.
        let mut huge = good[..240].to_vec();
        huge.extend_from_slice(&[53, 1, 1, 60, 255, b'P']);
        assert!(matches!(parse(&huge), Err(Rejected::Options(_))));
        // No message type.
        let mut bootp = good[..240].to_vec();
        bootp.push(255);
        assert_eq!(parse(&bootp).unwrap_err(), Rejected::NoMessageType);
        // Every truncation and a byte-flip at every position: never a panic.
        for n in 0..good.len() {
            let _ = parse(&good[..n]);
            let mut flipped = good.clone();
            flipped[n] ^= 0xff;
            let _ = parse(&flipped);
            let _ = raw_option(&flipped, 93);
        }
        // Options dhcproto asserts on or stops at (found by fuzzing): the
        // packet still parses, and what follows them is still read.
        for odd in [[94u8, 2, 1, 0], [80, 1, 0, 0], [81, 1, 0, 0], [91, 2, 0, 0]] {
            let mut p = good[..240].to_vec();
            p.extend_from_slice(&[53, 1, 1]);
            p.extend_from_slice(&odd);
            p.extend_from_slice(&[60, 9]);
            p.extend_from_slice(b"PXEClient");
            p.extend_from_slice(&[77, 4]);
            p.extend_from_slice(b"iPXE");
            p.push(255);
            let r = parse(&p).unwrap_or_else(|e| panic!("{odd:?}: {e}"));
            assert_eq!(r.boot.vendor, VendorClass::Pxe, "{odd:?}");
            assert!(r.boot.ipxe, "{odd:?}");
        }
        let regression =
            include_bytes!("../../fuzz/regressions/dhcp/option-94-length-2-debug-assert");
        assert!(parse(regression).is_ok());
        // A wrong-length message type is no message type.
        let mut p = good[..240].to_vec();
        p.extend_from_slice(&[53, 2, 1, 1, 255]);
        assert_eq!(parse(&p).unwrap_err(), Rejected::NoMessageType);
        // A cheap deterministic fuzz over the option area.
        let mut seed: u32 = 12345;
        for _ in 0..20_000 {
            let mut p = good[..240].to_vec();
            let len = (seed % 80) as usize;
            for _ in 0..len {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                p.push((seed >> 16) as u8);
            }
            let _ = parse(&p);
        }
    }
}
