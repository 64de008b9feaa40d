//! What to answer, per RFC 2131, for one client message: no sockets, no
//! database, only the validated config, the in-memory lease table and where the
//! packet arrived. A message goes through small steps:
//!
//! 1. [`locate`]: which of our addresses is the server identifier, and which
//!    subnet the client is on (the relay's subnet when `giaddr` is set);
//! 2. per message type ([`discover`], [`request`], [`decline`], [`release`],
//!    [`inform`] in full mode; [`proxy`] in proxy mode): the address decision;
//! 3. [`boot_options`]: the boot [`Decision`] the caller made once for this
//!    packet, encoded (siaddr, `file` or option 67, option 60
//!    `HTTPClient`/`PXEClient`, 175.176);
//! 4. [`destination`]: RFC 2131 §4.1 reply addressing, then the encoding.
//!
//! The result is an [`Outcome`]: a reply (with the lease changes that must be
//! committed before it leaves), lease changes alone, or the reason for silence.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{
    DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode, UnknownOption,
};
use dhcproto::Encodable;

use super::leases::{LeaseOp, Leases, State};
use super::outcome::{Limit, Outcome, Reply};
use super::packet::Request;
use super::server::{Iface, Outgoing};
use crate::config::{Config, DhcpMode, Subnet};
use crate::core::decide::{Decision, Handout, VendorClass};
use crate::core::Reservation;

/// Which socket a packet came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// 67: DHCP (and ProxyDHCP offers).
    Dhcp,
    /// 4011: PXE boot-server requests after a ProxyDHCP offer.
    Proxy,
}

/// Where a packet arrived, resolved against the config.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// Our address on the receiving interface: option 54, siaddr, source.
    pub server: Ipv4Addr,
    /// The client's subnet (full mode); `None` if we serve no subnet there.
    pub subnet: Option<&'a Subnet>,
    pub ifindex: u32,
    pub port: Port,
    pub src: SocketAddrV4,
}

/// Step 1: our address and the client's subnet. `iface` is the receiving
/// interface; `local` the address the kernel says the packet was for.
pub fn locate<'a>(
    config: &'a Config,
    iface: Option<&Iface>,
    local: Ipv4Addr,
    giaddr: Ipv4Addr,
) -> (Ipv4Addr, Option<&'a Subnet>) {
    let addrs: &[(Ipv4Addr, u8)] = iface.map_or(&[], |i| i.addrs.as_slice());
    let in_subnet = addrs
        .iter()
        .find_map(|(a, _)| config.dhcp.subnet_for(*a).map(|s| (*a, s)));
    if !giaddr.is_unspecified() {
        // Relayed: the pool is the relay's subnet; we answer from the address
        // the relay sent to.
        let server = if local.is_unspecified() {
            addrs.first().map_or(local, |a| a.0)
        } else {
            local
        };
        return (server, config.dhcp.subnet_for(giaddr));
    }
    match in_subnet {
        Some((a, s)) => (a, Some(s)),
        None => {
            let server = if local.is_unspecified() || local.is_broadcast() {
                addrs.first().map_or(local, |a| a.0)
            } else {
                local
            };
            (server, None)
        }
    }
}

/// Steps 2–4 for one message, with the boot decision made for it.
pub fn handle(
    config: &Config,
    leases: &mut Leases,
    place: &Place,
    req: &Request,
    decision: &Decision,
    now: u64,
) -> Outcome {
    match config.dhcp.mode {
        DhcpMode::Off => Outcome::Ignored("DHCP is off".into()),
        DhcpMode::Proxy => proxy(place, req, decision),
        DhcpMode::Full => {
            let Some(subnet) = place.subnet else {
                return Outcome::Ignored(if req.giaddr().is_unspecified() {
                    format!("no [[dhcp.subnet]] contains an address of the receiving interface (server address {})", place.server)
                } else {
                    format!(
                        "no [[dhcp.subnet]] contains the relay address {}",
                        req.giaddr()
                    )
                });
            };
            let cx = Full {
                config,
                subnet,
                place,
                req,
                decision,
                now,
                reserved: config.policy.reserved_ips(),
                reservation: decision.reservation,
            };
            match req.kind {
                MessageType::Discover => discover(&cx, leases),
                MessageType::Request => request(&cx, leases),
                MessageType::Decline => decline(&cx, leases),
                MessageType::Release => release(&cx, leases),
                MessageType::Inform => inform(&cx),
                other => Outcome::Ignored(format!("{other:?} is not handled")),
            }
        }
    }
}

/// Everything a full-mode step reads.
struct Full<'a> {
    config: &'a Config,
    subnet: &'a Subnet,
    place: &'a Place<'a>,
    req: &'a Request,
    decision: &'a Decision<'a>,
    now: u64,
    reserved: &'a HashSet<Ipv4Addr>,
    reservation: Option<&'a Reservation>,
}

impl Full<'_> {
    fn reserved_ip(&self) -> Option<Ipv4Addr> {
        self.reservation.and_then(|r| r.ip)
    }

    /// Whether this client may hold `ip` here: on this subnet, its reservation
    /// or a pool address nobody else holds.
    fn allowed(&self, leases: &Leases, ip: Ipv4Addr) -> Result<(), String> {
        if !self.subnet.contains(ip) {
            return Err(format!(
                "{ip} is not on this network ({}/{})",
                self.subnet.network, self.subnet.prefix
            ));
        }
        match self.reserved_ip() {
            Some(r) if r != ip && self.subnet.contains(r) => {
                return Err(format!("this machine has the reserved address {r}"))
            }
            Some(r) if r == ip => {}
            _ if !self.subnet.in_pool(ip) => return Err(format!("{ip} is outside the pool")),
            _ if self.reserved.contains(&ip) => {
                return Err(format!("{ip} is reserved for another machine"))
            }
            _ => {}
        }
        if !leases.is_free_for(ip, &self.req.client_id, self.now) {
            return Err(format!("{ip} is held by another client"));
        }
        if leases.of_client(&self.req.client_id).map(|l| l.ip) != Some(ip) {
            self.has_room(leases).map_err(|(_, why)| why)?;
        }
        Ok(())
    }

    /// Whether this client may take one more address: its MAC, and the relay
    /// circuit it came through, are under their caps.
    fn has_room(&self, leases: &Leases) -> Result<(), (Limit, String)> {
        let limits = &self.config.dhcp.limits;
        let held = leases.held_by_mac(self.req.mac, &self.req.client_id, self.now);
        if held >= limits.max_leases_per_mac {
            return Err((
                Limit::MacLeases,
                format!(
                    "{} already holds {held} addresses under other client ids (max_leases_per_mac = {})",
                    self.req.mac, limits.max_leases_per_mac
                ),
            ));
        }
        if let (Some(c), cap @ 1..) = (self.req.circuit(), limits.max_leases_per_circuit) {
            let held = leases.held_by_circuit(&c.key(), &self.req.client_id, self.now);
            if held >= cap {
                return Err((
                    Limit::CircuitLeases,
                    format!(
                        "relay {} circuit {:?} already holds {held} addresses (max_leases_per_circuit = {cap})",
                        c.giaddr,
                        String::from_utf8_lossy(c.id)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// After a take: which circuit the address went out through.
    fn record_circuit(&self, leases: &mut Leases, ip: Ipv4Addr) {
        leases.set_circuit(ip, self.req.circuit().map(|c| c.key()));
    }

    fn reply(&self, kind: MessageType) -> Message {
        base_reply(self.req, kind, self.place.server)
    }

    /// Lease parameters and subnet options.
    fn lease_options(&self, m: &mut Message, with_time: bool) {
        let s = self.subnet;
        let o = m.opts_mut();
        if with_time {
            o.insert(DhcpOption::AddressLeaseTime(s.lease_time));
            o.insert(DhcpOption::Renewal(s.lease_time / 2));
            o.insert(DhcpOption::Rebinding(
                u32::try_from(u64::from(s.lease_time) * 7 / 8).unwrap_or(u32::MAX),
            ));
        }
        o.insert(DhcpOption::SubnetMask(s.mask()));
        if let Some(r) = s.router {
            o.insert(DhcpOption::Router(vec![r]));
        }
        if !s.dns.is_empty() {
            o.insert(DhcpOption::DomainNameServer(s.dns.clone()));
        }
        if let Some(d) = &s.domain {
            o.insert(DhcpOption::DomainName(d.clone()));
        }
        if let Some(h) = self.reservation.and_then(|r| r.hostname.as_ref()) {
            o.insert(DhcpOption::Hostname(h.clone()));
        }
    }

    fn finish(&self, mut m: Message, commit: Vec<LeaseOp>) -> Outcome {
        if !matches!(m.opts().msg_type(), Some(MessageType::Nak)) {
            boot_options(self.decision, self.place.server, &mut m, true);
        }
        let (dest, ifindex) = destination(self.req, &m, self.place);
        if dest.ip().is_broadcast() && !self.req.giaddr().is_unspecified() {
            m.set_flags(Flags::default().set_broadcast());
        }
        encode(&m, dest, ifindex, self.place.server, commit)
    }
}

fn discover(cx: &Full, leases: &mut Leases) -> Outcome {
    let client = &cx.req.client_id;
    if leases.of_client(client).is_none() {
        if let Err((limit, why)) = cx.has_room(leases) {
            return Outcome::Limited(limit, why);
        }
    }
    let Some(ip) = leases.allocate(
        cx.subnet,
        client,
        cx.reserved_ip(),
        cx.req.requested_ip,
        cx.reserved,
        cx.now,
    ) else {
        let why = match cx.reserved_ip() {
            Some(r) => format!("the reserved address {r} is held by another client"),
            None => format!(
                "pool of {}/{} exhausted: no free address to offer",
                cx.subnet.network, cx.subnet.prefix
            ),
        };
        return Outcome::Limited(Limit::PoolExhausted, why);
    };
    // A client that already holds this address keeps its binding; anyone else
    // gets a short hold so two DISCOVERs never get the same offer.
    let bound = leases
        .get(ip)
        .is_some_and(|l| l.client == *client && l.state == State::Bound && l.expires > cx.now);
    if !bound {
        let cap = cx.config.dhcp.limits.max_offers;
        leases.offer(ip, client, cx.req.mac, cx.now, cap);
        cx.record_circuit(leases, ip);
    }
    let mut m = cx.reply(MessageType::Offer);
    m.set_yiaddr(ip);
    cx.lease_options(&mut m, true);
    cx.finish(m, Vec::new())
}

fn request(cx: &Full, leases: &mut Leases) -> Outcome {
    let req = cx.req;
    let ip = match (req.server_id, req.requested_ip, req.ciaddr()) {
        // SELECTING: the client answers an OFFER.
        (Some(sid), _, _) if sid != cx.place.server => {
            leases.drop_offer(&req.client_id);
            // Another server (on this segment, or behind the same relay) is
            // about to bind this address: hold it for a moment so that it is
            // not offered to someone else here meanwhile (the shared database
            // would refuse that binding: a NAK, and a client starting over).
            if let Some(ip) = req.requested_ip.filter(|ip| cx.subnet.in_pool(*ip)) {
                if leases.is_free_for(ip, &req.client_id, cx.now) {
                    let cap = cx.config.dhcp.limits.max_offers;
                    leases.offer(ip, &req.client_id, req.mac, cx.now, cap);
                }
            }
            return Outcome::Ignored(format!("the client chose server {sid}"));
        }
        (Some(_), Some(ip), _) => ip,
        (Some(_), None, c) if !c.is_unspecified() => c,
        (Some(_), None, _) => return nak(cx, "REQUEST without a requested address".into()),
        // INIT-REBOOT: a client that remembers its address.
        (None, Some(ip), c) if c.is_unspecified() => ip,
        // RENEWING (unicast) or REBINDING (broadcast).
        (None, _, c) if !c.is_unspecified() => c,
        (None, _, _) => {
            return Outcome::Ignored(
                "REQUEST with no server identifier, requested address or ciaddr".into(),
            )
        }
    };
    if let Err(why) = cx.allowed(leases, ip) {
        return nak(cx, why);
    }
    let commit = leases.take(
        ip,
        &req.client_id,
        req.mac,
        State::Bound,
        cx.now + u64::from(cx.subnet.lease_time),
    );
    cx.record_circuit(leases, ip);
    let mut m = cx.reply(MessageType::Ack);
    m.set_yiaddr(ip);
    m.set_ciaddr(req.ciaddr());
    cx.lease_options(&mut m, true);
    cx.finish(m, commit)
}

fn nak(cx: &Full, why: String) -> Outcome {
    let mut m = cx.reply(MessageType::Nak);
    m.opts_mut().insert(DhcpOption::Message(why));
    cx.finish(m, Vec::new())
}

fn decline(cx: &Full, leases: &mut Leases) -> Outcome {
    if cx.req.server_id.is_some_and(|s| s != cx.place.server) {
        return Outcome::Ignored("DECLINE for another server".into());
    }
    let Some(ip) = cx.req.requested_ip else {
        return Outcome::Ignored("DECLINE without a requested address".into());
    };
    match leases.decline(ip, &cx.req.client_id, cx.now) {
        Some(op) => {
            tracing::warn!(ip = %ip, mac = %cx.req.mac, "address declined (in use by another host?): quarantined");
            Outcome::Store(vec![op])
        }
        None => Outcome::Ignored(format!("DECLINE of {ip}, which this client does not hold")),
    }
}

fn release(cx: &Full, leases: &mut Leases) -> Outcome {
    let ip = cx.req.ciaddr();
    match leases.release(ip, &cx.req.client_id, cx.now) {
        Some(op) => Outcome::Store(vec![op]),
        None => Outcome::Ignored(format!("RELEASE of {ip}, which this client does not hold")),
    }
}

fn inform(cx: &Full) -> Outcome {
    let mut m = cx.reply(MessageType::Ack);
    m.set_ciaddr(cx.req.ciaddr());
    cx.lease_options(&mut m, false);
    cx.finish(m, Vec::new())
}

/// ProxyDHCP: boot information only, to PXE and HTTP Boot clients. DISCOVERs on
/// 67 get an OFFER without an address; REQUESTs on 4011 an ACK.
pub fn proxy(place: &Place, req: &Request, decision: &Decision) -> Outcome {
    if req.boot.vendor == VendorClass::Other {
        return Outcome::Ignored(
            "proxy mode answers PXE clients only (no PXEClient/HTTPClient vendor class)".into(),
        );
    }
    if place.server.is_unspecified() || place.server.is_broadcast() {
        // An interface with no IPv4 address (an IPv6-only boot network):
        // there is no address to point the client at; an OFFER naming
        // 0.0.0.0 only costs it time.
        return Outcome::Ignored("no IPv4 address on this interface to name the server by".into());
    }
    let kind = match (place.port, req.kind) {
        (Port::Dhcp, MessageType::Discover) => MessageType::Offer,
        (Port::Proxy, MessageType::Request | MessageType::Inform) => MessageType::Ack,
        (port, kind) => {
            return Outcome::Ignored(format!(
                "proxy mode does not answer {kind:?} on port {}",
                match port {
                    Port::Dhcp => 67,
                    Port::Proxy => 4011,
                }
            ))
        }
    };
    let mut m = base_reply(req, kind, place.server);
    if !boot_options(decision, place.server, &mut m, false) {
        return Outcome::Ignored("no boot file for this client's firmware".into());
    }
    let o = m.opts_mut();
    if !o.contains(OptionCode::ClassIdentifier) {
        o.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
    }
    if req.boot.vendor == VendorClass::Pxe {
        // PXE discovery control = 8: boot the file given here, skip boot-server
        // discovery (as smee does; pixiecore omits 43, which ROMs also accept).
        o.insert(DhcpOption::VendorExtensions(vec![6, 1, 8, 255]));
    }
    if let Some(g) = &req.guid {
        o.insert(DhcpOption::ClientMachineIdentifier(g.clone()));
    }
    let (dest, ifindex) = destination(req, &m, place);
    encode(&m, dest, ifindex, place.server, Vec::new())
}

/// The reply as bytes, addressed; the end of every step that answers.
fn encode(
    m: &Message,
    dest: SocketAddrV4,
    ifindex: u32,
    server: Ipv4Addr,
    commit: Vec<LeaseOp>,
) -> Outcome {
    match m.to_vec() {
        Ok(bytes) => Outcome::Reply(Reply {
            kind: m.opts().msg_type().unwrap_or(MessageType::Unknown(0)),
            yiaddr: m.yiaddr(),
            out: Outgoing {
                bytes,
                dest,
                ifindex,
                src: server,
            },
            commit,
        }),
        Err(e) => Outcome::Unencodable(e.to_string()),
    }
}

/// A reply skeleton: op, xid, flags, giaddr, chaddr, message type, server id,
/// and option 82 echoed as the relay sent it.
fn base_reply(req: &Request, kind: MessageType, server: Ipv4Addr) -> Message {
    let mut m = Message::new_with_id(
        req.msg.xid(),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        req.giaddr(),
        &req.mac.0,
    );
    m.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_flags(req.msg.flags());
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ServerIdentifier(server));
    if let Some(r) = &req.relay_info {
        o.insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::RelayAgentInformation,
            r.clone(),
        )));
    }
    m
}

/// Step 3: the boot decision, encoded. Returns false when the client gets no
/// boot file (not a boot client, or an unsupported firmware).
fn boot_options(decision: &Decision, server: Ipv4Addr, m: &mut Message, full: bool) -> bool {
    if full {
        // iPXE: do not wait for ProxyDHCP offers (175.176 no-pxedhcp = 1).
        m.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::from(175),
            vec![176, 1, 1],
        )));
    }
    let Some(h) = &decision.handout else {
        return false;
    };
    // iPXE counts a reply as PXE-capable only with siaddr and a file name.
    m.set_siaddr(server);
    let name = h.filename().as_bytes().to_vec();
    match h {
        // Short TFTP names go in the `file` field (PXE ROMs read it) and in
        // option 67; URLs only in option 67 with `file` empty, because iPXE
        // prefers `file` when set and it holds only 128 bytes. Never overload.
        Handout::Tftp(f) if f.len() <= 127 => {
            m.set_fname(&name);
        }
        Handout::Http {
            http_client: true, ..
        } => {
            m.opts_mut()
                .insert(DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()));
        }
        _ => {}
    }
    m.opts_mut().insert(DhcpOption::BootfileName(name));
    true
}

/// Step 4, RFC 2131 §4.1: to the relay if relayed; NAKs broadcast; to ciaddr
/// when the client has an address (renew, INFORM); otherwise broadcast.
/// (Unicasting to yiaddr before the client has it would need an ARP entry
/// written by hand; broadcasting is what §4.1 permits instead.) Proxy replies on
/// 4011 go back to the sender.
fn destination(req: &Request, m: &Message, place: &Place) -> (SocketAddrV4, u32) {
    let giaddr = req.giaddr();
    if !giaddr.is_unspecified() {
        return (SocketAddrV4::new(giaddr, 67), 0);
    }
    if place.port == Port::Proxy && !place.src.ip().is_unspecified() {
        return (place.src, place.ifindex);
    }
    let nak = m.opts().msg_type() == Some(MessageType::Nak);
    let ciaddr = req.ciaddr();
    if !nak && !ciaddr.is_unspecified() {
        return (SocketAddrV4::new(ciaddr, 68), place.ifindex);
    }
    (SocketAddrV4::new(Ipv4Addr::BROADCAST, 68), place.ifindex)
}

/// The NAK that replaces `ack` when the shared database refused its lease
/// (another server took the address first): same transaction, same client,
/// same way out, no address, and why (RFC 2131 table 3: a NAK carries only
/// the message type, server identifier, message and relay information).
/// `None` if `ack` is not a reply pxed encoded.
pub fn nak_for(ack: &Outgoing, why: &str) -> Option<Outgoing> {
    use dhcproto::Decodable;
    let m = Message::from_bytes(&ack.bytes).ok()?;
    let mut nak = Message::new_with_id(
        m.xid(),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        m.giaddr(),
        m.chaddr(),
    );
    nak.set_opcode(Opcode::BootReply)
        .set_htype(m.htype())
        .set_flags(m.flags());
    let o = nak.opts_mut();
    o.insert(DhcpOption::MessageType(MessageType::Nak));
    for code in [
        OptionCode::ServerIdentifier,
        OptionCode::RelayAgentInformation,
    ] {
        if let Some(v) = m.opts().get(code) {
            o.insert(v.clone());
        }
    }
    o.insert(DhcpOption::Message(why.into()));
    // NAKs are broadcast (RFC 2131 4.1), or go to the relay.
    let dest = if m.giaddr().is_unspecified() {
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
    } else {
        nak.set_flags(Flags::default().set_broadcast());
        ack.dest
    };
    Some(Outgoing {
        bytes: nak.to_vec().ok()?,
        dest,
        ifindex: ack.ifindex,
        src: ack.src,
    })
}
