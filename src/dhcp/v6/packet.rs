//! From bytes off the wire to a DHCPv6 [`Request`] the exchange can trust, or
//! a [`Rejected`] reason (counted and dropped). Every check a hostile or
//! broken packet could fail is here: length, message type (only what a client
//! or relay sends), option lengths (via [`Opts`]), relay nesting, the options
//! RFC 8415 §16 requires or forbids per message type. Nothing here panics or
//! unwraps client data.
//!
//! It also finds the client's MAC, which is its identity for pxed (BRIEF
//! "IPv6 netboot": the firmware's IAID is random on every boot, iPXE's
//! DUID-UUID may be all zeros, and the firmware and iPXE present different
//! DUIDs): the first relay's option 79, else the EUI-64 inside the client's
//! link-local address, else a DUID-LL/LLT's link-layer address. Never the DUID
//! alone.

use std::net::Ipv6Addr;

use dhcproto::v6::MessageType;

use super::options::{code, is_ipxe_user_class, vendor_class_item, Opts};
use crate::core::decide::{Client, VendorClass};
use crate::core::{Arch, Mac};

/// RFC 8415 §7.6 HOP_COUNT_LIMIT: relays nested deeper are dropped.
pub const HOP_COUNT_LIMIT: usize = 8;
/// Message type, transaction id.
const HEADER: usize = 4;
/// Message type, hop count, link address, peer address.
const RELAY_HEADER: usize = 34;

/// Why a datagram was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("too short ({0} bytes)")]
    TooShort(usize),
    #[error("larger than the receive buffer (truncated)")]
    Truncated,
    #[error("message type {0} is not one a client or relay sends to a server")]
    NotForServer(u8),
    #[error("undecodable options: {0}")]
    Options(String),
    #[error("relayed through more than {HOP_COUNT_LIMIT} relays")]
    TooManyRelays,
    #[error("a Relay-Forward without a Relay Message option")]
    EmptyRelay,
    #[error("{0:?} without a Client Identifier")]
    NoClientId(MessageType),
    #[error("{0:?} without a Server Identifier")]
    NoServerId(MessageType),
    #[error("{0:?} with a Server Identifier (RFC 8415 §16 forbids it)")]
    UnexpectedServerId(MessageType),
    #[error("an IA_NA shorter than 12 bytes")]
    ShortIa,
    #[error("an Information-request with an IA option")]
    IaInInformationRequest,
}

/// One relay agent the message came through (RFC 8415 §9.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    pub hop_count: u8,
    /// An address on the client's link, or unspecified.
    pub link: Ipv6Addr,
    /// Where the message came from (the client, or the next relay).
    pub peer: Ipv6Addr,
    /// Option 18, echoed in the reply.
    pub interface_id: Option<Vec<u8>>,
    /// Option 79 (RFC 6939), Ethernet only.
    pub linklayer: Option<Mac>,
}

/// One IA_NA the client asks for: its id and the addresses it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaNa {
    pub iaid: u32,
    pub addrs: Vec<Ipv6Addr>,
}

/// Where the client's MAC was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacFrom {
    RelayOption79,
    LinkLocal,
    Duid,
}

/// A decoded client message with the fields pxed uses pulled out.
#[derive(Debug, Clone)]
pub struct Request {
    pub kind: MessageType,
    pub xid: [u8; 3],
    /// The client's DUID (empty only in an Information-request without one).
    pub client_id: Vec<u8>,
    pub server_id: Option<Vec<u8>>,
    pub ia_na: Vec<IaNa>,
    pub rapid_commit: bool,
    /// The options it asks for (ORO).
    pub oro: Vec<u16>,
    /// Outermost (the one that sent us the datagram) first.
    pub relays: Vec<Relay>,
    /// The client's MAC and where it came from; `None` when nothing carries it.
    pub mac: Option<(Mac, MacFrom)>,
    /// Option 61 (first value), mapped.
    pub arch: Option<Arch>,
    /// Option 15 holds `iPXE`.
    pub ipxe: bool,
    /// Option 16's first item.
    pub vendor: VendorClass,
}

impl Request {
    /// What the boot decision reads, when the MAC is known.
    pub fn client(&self) -> Option<Client> {
        let (mac, _) = self.mac?;
        Some(Client {
            mac,
            arch: self.arch,
            ipxe: self.ipxe,
            vendor: self.vendor,
        })
    }

    /// The relay nearest the client, if relayed.
    pub fn first_relay(&self) -> Option<&Relay> {
        self.relays.last()
    }

    /// Whether the client asked for option `code` (ORO).
    pub fn wants(&self, code: u16) -> bool {
        self.oro.contains(&code)
    }
}

/// Parses and validates one datagram that came from `src`.
pub fn parse(buf: &[u8], src: Ipv6Addr) -> Result<Request, Rejected> {
    let mut relays = Vec::new();
    let mut msg = buf;
    while msg.first() == Some(&12) {
        if relays.len() == HOP_COUNT_LIMIT {
            return Err(Rejected::TooManyRelays);
        }
        let (relay, inner) = relay(msg)?;
        relays.push(relay);
        msg = inner;
    }
    if msg.len() < HEADER {
        return Err(Rejected::TooShort(msg.len()));
    }
    let kind = MessageType::from(msg[0]);
    if !matches!(
        kind,
        MessageType::Solicit
            | MessageType::Request
            | MessageType::Confirm
            | MessageType::Renew
            | MessageType::Rebind
            | MessageType::Release
            | MessageType::Decline
            | MessageType::InformationRequest
    ) {
        return Err(Rejected::NotForServer(msg[0]));
    }
    let options = &msg[HEADER..];
    if let Some(Err(e)) = Opts::new(options).find(Result::is_err) {
        return Err(Rejected::Options(e.to_string()));
    }
    let mut req = fields(kind, msg, options)?;
    let peer = relays.last().map_or(src, |r| r.peer);
    req.mac = mac(relays.last(), peer, &req.client_id);
    req.relays = relays;
    check(&req, options)?;
    Ok(req)
}

/// One Relay-Forward: its header and options, and the message it carries.
fn relay(msg: &[u8]) -> Result<(Relay, &[u8]), Rejected> {
    let Some(header) = msg.get(..RELAY_HEADER) else {
        return Err(Rejected::TooShort(msg.len()));
    };
    let options = &msg[RELAY_HEADER..];
    if let Some(Err(e)) = Opts::new(options).find(Result::is_err) {
        return Err(Rejected::Options(e.to_string()));
    }
    let addr = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&header[at..at + 16]);
        Ipv6Addr::from(a)
    };
    let linklayer = Opts::new(options)
        .get(code::CLIENT_LINKLAYER_ADDR)
        .and_then(|v| match v {
            [0, 1, a, b, c, d, e, f] => Some(Mac([*a, *b, *c, *d, *e, *f])),
            _ => None,
        });
    let relay = Relay {
        hop_count: header[1],
        link: addr(2),
        peer: addr(18),
        interface_id: Opts::new(options)
            .get(code::INTERFACE_ID)
            .map(<[u8]>::to_vec),
        linklayer,
    };
    let inner = Opts::new(options)
        .get(code::RELAY_MSG)
        .ok_or(Rejected::EmptyRelay)?;
    Ok((relay, inner))
}

/// The fields of a client message whose options are well formed.
fn fields(kind: MessageType, msg: &[u8], options: &[u8]) -> Result<Request, Rejected> {
    let o = || Opts::new(options);
    let mut ia_na = Vec::new();
    for ia in o().every(code::IA_NA) {
        let Some((head, rest)) = ia.split_first_chunk::<12>() else {
            return Err(Rejected::ShortIa);
        };
        let iaid = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if let Some(Err(e)) = Opts::new(rest).find(Result::is_err) {
            return Err(Rejected::Options(format!("inside an IA_NA: {e}")));
        }
        let addrs = Opts::new(rest)
            .every(code::IA_ADDR)
            .filter_map(|a| a.first_chunk::<16>().map(|b| Ipv6Addr::from(*b)))
            .collect();
        ia_na.push(IaNa { iaid, addrs });
    }
    let oro = o()
        .every(code::ORO)
        .flat_map(|v| v.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])))
        .collect();
    let arch = o()
        .get(code::CLIENT_ARCH)
        .and_then(|v| v.first_chunk::<2>())
        .map(|v| Arch::from_option93(u16::from_be_bytes(*v)));
    Ok(Request {
        kind,
        xid: [msg[1], msg[2], msg[3]],
        client_id: o().get(code::CLIENT_ID).unwrap_or_default().to_vec(),
        server_id: o().get(code::SERVER_ID).map(<[u8]>::to_vec),
        ia_na,
        rapid_commit: o().get(code::RAPID_COMMIT).is_some(),
        oro,
        relays: Vec::new(),
        mac: None,
        arch,
        ipxe: o().get(code::USER_CLASS).is_some_and(is_ipxe_user_class),
        vendor: VendorClass::parse(o().get(code::VENDOR_CLASS).and_then(vendor_class_item)),
    })
}

/// RFC 8415 §16: which identifiers each message type must or must not carry.
fn check(req: &Request, options: &[u8]) -> Result<(), Rejected> {
    use MessageType as M;
    let kind = req.kind;
    let needs_server = matches!(kind, M::Request | M::Renew | M::Decline | M::Release);
    let no_server = matches!(kind, M::Solicit | M::Confirm | M::Rebind);
    if kind != M::InformationRequest && req.client_id.is_empty() {
        return Err(Rejected::NoClientId(kind));
    }
    if needs_server && req.server_id.is_none() {
        return Err(Rejected::NoServerId(kind));
    }
    if no_server && req.server_id.is_some() {
        return Err(Rejected::UnexpectedServerId(kind));
    }
    if kind == M::InformationRequest
        && Opts::new(options)
            .map_while(Result::ok)
            .any(|(c, _)| matches!(c, code::IA_NA | code::IA_TA | 25))
    {
        return Err(Rejected::IaInInformationRequest);
    }
    Ok(())
}

/// The client's MAC: option 79 of the relay nearest it, else the EUI-64 in
/// its link-local address `peer`, else a DUID-LLT/LL with hardware type 1.
fn mac(first_relay: Option<&Relay>, peer: Ipv6Addr, duid: &[u8]) -> Option<(Mac, MacFrom)> {
    if let Some(m) = first_relay.and_then(|r| r.linklayer) {
        return Some((m, MacFrom::RelayOption79));
    }
    if let Some(m) = eui64_mac(peer) {
        return Some((m, MacFrom::LinkLocal));
    }
    duid_mac(duid).map(|m| (m, MacFrom::Duid))
}

/// The MAC an EUI-64 link-local address was formed from (RFC 4291
/// appendix A: `ff:fe` in the middle, the universal/local bit flipped).
pub fn eui64_mac(addr: Ipv6Addr) -> Option<Mac> {
    let o = addr.octets();
    let link_local = o[0] == 0xfe && o[1] & 0xc0 == 0x80;
    (link_local && o[11] == 0xff && o[12] == 0xfe)
        .then(|| Mac([o[8] ^ 0x02, o[9], o[10], o[13], o[14], o[15]]))
}

/// The Ethernet address of a DUID-LLT (type 1) or DUID-LL (type 3).
pub fn duid_mac(duid: &[u8]) -> Option<Mac> {
    let addr = match duid {
        [0, 1, 0, 1, _, _, _, _, addr @ ..] | [0, 3, 0, 1, addr @ ..] => addr,
        _ => return None,
    };
    let a: [u8; 6] = addr.try_into().ok()?;
    Some(Mac(a))
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;
