//! What to answer, per RFC 8415, for one DHCPv6 client message: no sockets,
//! no database, only the validated config, the in-memory lease table and
//! where the packet arrived. A message goes through small steps:
//!
//! 1. [`locate`]: our address (the host in boot URLs) and the client's
//!    subnet (the first relay's link address when relayed);
//! 2. per message type: Solicit → Advertise (or Reply with Rapid Commit),
//!    Request/Renew/Rebind → Reply with the binding, Confirm, Release,
//!    Decline, Information-request (options only); proxy mode answers boot
//!    clients without addresses;
//! 3. the boot [`Decision`] the caller made once, encoded: option 59 (boot
//!    file URL, `tftp://[addr]/file` or `http://[addr]:port/…`), option 16
//!    `HTTPClient` for HTTP Boot, Preference 255 in every Advertise (the
//!    firmware waits ~3.9 s for other servers without it, BRIEF);
//! 4. the reply wrapped for its relays, addressed.

use std::collections::HashSet;
use std::net::{Ipv6Addr, SocketAddrV6};

use dhcproto::v6::MessageType;

use super::options::code;
use super::outcome::{Outcome6, Reply6};
use super::packet::Request;
use super::reply::{IaAddr, Status, Writer};
use super::server::{CLIENT_PORT, SERVER_PORT};
use crate::config::{Config, DhcpMode, Subnet6};
use crate::core::decide::{Decision, Handout};
use crate::core::Mac;
use crate::dhcp::leases::{LeaseOp, Leases6, State};
use crate::dhcp::outcome::Limit;
use crate::dhcp::server::{Iface, Outgoing6};

/// Where a message arrived, resolved against the config.
#[derive(Debug, Clone, Copy)]
pub struct Place6<'a> {
    /// Our address on the client's network: the host in boot URLs.
    pub server: Ipv6Addr,
    /// The client's subnet; `None` if pxed serves none there.
    pub subnet: Option<&'a Subnet6>,
    pub ifindex: u32,
    /// Where the datagram came from (the client, or the outermost relay).
    pub src: SocketAddrV6,
}

/// Step 1: our address and the client's subnet. Directly attached: the
/// receiving interface's address inside a served subnet. Relayed: the subnet
/// of the first relay's link address, and our first address on the
/// receiving interface. `None` for the address: the interface has no global
/// IPv6 address to put in a boot URL.
pub fn locate<'a>(
    config: &'a Config,
    iface: Option<&Iface>,
    req: &Request,
) -> (Option<Ipv6Addr>, Option<&'a Subnet6>) {
    let addrs: &[Ipv6Addr] = iface.map_or(&[], |i| i.addrs6.as_slice());
    let dhcp = &config.dhcp;
    let in_subnet = addrs
        .iter()
        .find_map(|a| dhcp.subnet6_for(*a).map(|s| (*a, s)));
    if let Some(relay) = req.first_relay() {
        let subnet = (!relay.link.is_unspecified())
            .then(|| dhcp.subnet6_for(relay.link))
            .flatten();
        let server = in_subnet.map(|(a, _)| a).or(addrs.first().copied());
        return (server, subnet);
    }
    match in_subnet {
        Some((a, s)) => (Some(a), Some(s)),
        None => (addrs.first().copied(), None),
    }
}

/// The key a client's lease is kept under: its MAC when one is known (one
/// address per machine, whatever DUID and IAID its firmware and iPXE
/// present), else its DUID and first IAID. The `0xff` prefix cannot start a
/// DUID (whose type is 1-4), so the two kinds never collide.
pub fn client_key(req: &Request) -> Vec<u8> {
    match req.mac {
        Some((Mac(m), _)) => [&[0xff, 0x01][..], &m].concat(),
        None => {
            let iaid = req.ia_na.first().map_or(0, |ia| ia.iaid);
            [&req.client_id[..], &iaid.to_be_bytes()].concat()
        }
    }
}

/// Everything a step reads.
struct Cx<'a> {
    config: &'a Config,
    place: &'a Place6<'a>,
    req: &'a Request,
    decision: Option<&'a Decision<'a>>,
    duid: &'a [u8],
    key: Vec<u8>,
    now: u64,
}

/// Steps 2–4 for one message, with the boot decision made for it (`None`:
/// the client's MAC is unknown) and our server DUID.
pub fn handle(
    config: &Config,
    leases: &mut Leases6,
    place: &Place6,
    req: &Request,
    decision: Option<&Decision>,
    duid: &[u8],
    now: u64,
) -> Outcome6 {
    use MessageType as M;
    if req.server_id.as_deref().is_some_and(|s| s != duid) {
        if req.kind == M::Request {
            leases.drop_offer(&client_key(req));
        }
        return Outcome6::Ignored("the message is for another server (Server Identifier)".into());
    }
    let cx = Cx {
        config,
        place,
        req,
        decision,
        duid,
        key: client_key(req),
        now,
    };
    match config.dhcp.mode {
        DhcpMode::Off => Outcome6::Ignored("DHCP is off".into()),
        DhcpMode::Proxy => proxy(&cx),
        DhcpMode::Full => match req.kind {
            M::Solicit => solicit(&cx, leases),
            M::Request | M::Renew | M::Rebind => bind(&cx, leases),
            M::Confirm => confirm(&cx),
            M::Release | M::Decline => give_back(&cx, leases),
            M::InformationRequest => cx.finish(cx.options(M::Reply), Vec::new(), Vec::new()),
            other => Outcome6::Ignored(format!("{other:?} is not handled")),
        },
    }
}

impl Cx<'_> {
    fn subnet(&self) -> Result<&Subnet6, Outcome6> {
        self.place.subnet.ok_or_else(|| {
            Outcome6::Ignored(match self.req.first_relay() {
                Some(r) => format!(
                    "no IPv6 [[dhcp.subnet]] contains the relay's link address {}",
                    r.link
                ),
                None => {
                    "no IPv6 [[dhcp.subnet]] contains an address of the receiving interface".into()
                }
            })
        })
    }

    fn mac(&self) -> Option<Mac> {
        self.req.mac.map(|(m, _)| m)
    }

    fn reserved_ip(&self) -> Option<Ipv6Addr> {
        self.decision
            .and_then(|d| d.reservation)
            .and_then(|r| r.ip6)
    }

    fn reserved(&self) -> &HashSet<Ipv6Addr> {
        self.config.policy.reserved_ips6()
    }

    /// A reply skeleton: type, transaction id, our DUID, the client's.
    fn reply(&self, kind: MessageType) -> Writer {
        let mut w = Writer::new(kind, self.req.xid);
        w.option(code::SERVER_ID, self.duid);
        if !self.req.client_id.is_empty() {
            w.option(code::CLIENT_ID, &self.req.client_id);
        }
        if kind == MessageType::Advertise {
            w.option(code::PREFERENCE, &[255]);
        }
        w
    }

    /// A reply with the boot decision and the subnet's options.
    fn options(&self, kind: MessageType) -> Writer {
        let mut w = self.reply(kind);
        self.boot(&mut w);
        if let Some(s) = self.place.subnet {
            if !s.dns.is_empty() {
                w.dns(&s.dns);
            }
            if let Some(d) = &s.domain {
                w.domain(d);
            }
        }
        w
    }

    /// Step 3: option 59, and option 16 `HTTPClient` for HTTP Boot.
    /// Returns false when the client gets no boot file.
    fn boot(&self, w: &mut Writer) -> bool {
        let Some(h) = self.decision.and_then(|d| d.handout.as_ref()) else {
            return false;
        };
        match h {
            Handout::Tftp(file) => {
                let url = format!("tftp://[{}]/{}", self.place.server, file);
                w.option(code::BOOTFILE_URL, url.as_bytes());
            }
            Handout::Http { url, http_client } => {
                w.option(code::BOOTFILE_URL, url.as_bytes());
                if *http_client {
                    w.http_client();
                }
            }
        }
        true
    }

    /// The IA_NAs of a reply: the first holds `ip` (when there is one) and,
    /// with lifetimes 0, any other address the client named (RFC 8415
    /// §18.3.4: no longer valid for it); the others get NoAddrsAvail.
    fn ias(&self, w: &mut Writer, ip: Option<Ipv6Addr>, lifetime: u32) {
        for (i, ia) in self.req.ia_na.iter().enumerate() {
            let mut addrs: Vec<IaAddr> = Vec::new();
            if i == 0 {
                addrs.extend(ip.map(|addr| IaAddr {
                    addr,
                    preferred: lifetime,
                    valid: lifetime,
                }));
                addrs.extend(
                    ia.addrs
                        .iter()
                        .filter(|a| Some(**a) != ip)
                        .map(|&addr| IaAddr {
                            addr,
                            preferred: 0,
                            valid: 0,
                        }),
                );
            }
            let none = (Status::NoAddrsAvail, "no address for this IA");
            let status = (i > 0 || ip.is_none()).then_some(none);
            w.ia_na(ia.iaid, &addrs, status);
        }
    }

    /// Step 4: the reply wrapped for its relays and addressed: to the
    /// outermost relay's server port, or to the client out of the interface
    /// it came in on.
    fn finish(&self, w: Writer, addrs: Vec<Ipv6Addr>, commit: Vec<LeaseOp>) -> Outcome6 {
        let kind = w.kind();
        let bytes = w.finish(&self.req.relays);
        let src = self.place.src;
        let port = if self.req.relays.is_empty() {
            match src.port() {
                0 => CLIENT_PORT,
                p => p,
            }
        } else {
            SERVER_PORT
        };
        Outcome6::Reply(Reply6 {
            kind,
            addrs,
            out: Outgoing6 {
                bytes,
                dest: SocketAddrV6::new(*src.ip(), port, 0, 0),
                ifindex: self.place.ifindex,
                refused: super::reply::unbound,
            },
            commit,
        })
    }
}

/// Solicit: an address held for the client (an offer) in an Advertise, or
/// bound at once in a Reply when the client asks for Rapid Commit.
fn solicit(cx: &Cx, leases: &mut Leases6) -> Outcome6 {
    let subnet = match cx.subnet() {
        Ok(s) => s,
        Err(o) => return o,
    };
    let Some(first) = cx.req.ia_na.first() else {
        let mut w = cx.reply(MessageType::Advertise);
        w.status(Status::NoAddrsAvail, "pxed assigns addresses (IA_NA) only");
        return cx.finish(w, Vec::new(), Vec::new());
    };
    let reserved = cx.reserved();
    let found = leases.allocate(
        subnet,
        &cx.key,
        cx.reserved_ip(),
        &first.addrs,
        reserved,
        cx.now,
    );
    let Some(ip) = found else {
        let why = match cx.reserved_ip() {
            Some(r) => format!("the reserved address {r} is held by another client"),
            None => format!(
                "pool of {}/{} exhausted: no free address to offer",
                subnet.network, subnet.prefix
            ),
        };
        return Outcome6::Limited(Limit::PoolExhausted, why);
    };
    let life = subnet.lease_time;
    if cx.req.rapid_commit {
        let commit = leases.take(
            ip,
            &cx.key,
            cx.mac(),
            State::Bound,
            cx.now + u64::from(life),
        );
        let mut w = cx.options(MessageType::Reply);
        w.option(code::RAPID_COMMIT, &[]);
        cx.ias(&mut w, Some(ip), life);
        return cx.finish(w, vec![ip], commit);
    }
    let bound = leases
        .get(ip)
        .is_some_and(|l| l.client == cx.key && l.state == State::Bound && l.expires > cx.now);
    if !bound {
        let cap = cx.config.dhcp.limits.max_offers;
        leases.offer(ip, &cx.key, cx.mac(), cx.now, cap);
    }
    let mut w = cx.options(MessageType::Advertise);
    cx.ias(&mut w, Some(ip), life);
    cx.finish(w, vec![ip], Vec::new())
}

/// Request, Renew, Rebind: bind an address (the one held or named, else a
/// new one) and reply once it is stored.
fn bind(cx: &Cx, leases: &mut Leases6) -> Outcome6 {
    let subnet = match cx.subnet() {
        Ok(s) => s,
        Err(o) => return o,
    };
    let named: &[Ipv6Addr] = cx.req.ia_na.first().map_or(&[], |ia| &ia.addrs);
    let reserved = cx.reserved();
    let found = if cx.req.ia_na.is_empty() {
        None
    } else {
        leases.allocate(subnet, &cx.key, cx.reserved_ip(), named, reserved, cx.now)
    };
    let life = subnet.lease_time;
    let commit = match found {
        Some(ip) => leases.take(
            ip,
            &cx.key,
            cx.mac(),
            State::Bound,
            cx.now + u64::from(life),
        ),
        None => Vec::new(),
    };
    let mut w = cx.options(MessageType::Reply);
    if cx.req.ia_na.is_empty() {
        w.status(Status::NoAddrsAvail, "pxed assigns addresses (IA_NA) only");
    }
    cx.ias(&mut w, found, life);
    cx.finish(w, found.into_iter().collect(), commit)
}

/// Confirm (RFC 8415 §18.3.3): are the client's addresses on this link?
fn confirm(cx: &Cx) -> Outcome6 {
    let subnet = match cx.subnet() {
        Ok(s) => s,
        Err(o) => return o,
    };
    let addrs: Vec<Ipv6Addr> = cx
        .req
        .ia_na
        .iter()
        .flat_map(|ia| ia.addrs.clone())
        .collect();
    if addrs.is_empty() {
        return Outcome6::Ignored("a Confirm without addresses".into());
    }
    let mut w = cx.reply(MessageType::Reply);
    if addrs.iter().all(|a| subnet.contains(*a)) {
        w.status(Status::Success, "all addresses are on this link");
    } else {
        w.status(Status::NotOnLink, "an address is not on this link");
    }
    cx.finish(w, Vec::new(), Vec::new())
}

/// Release and Decline: the client gives its addresses back (the firmware
/// releases just before it starts the boot file) or says they are in use
/// elsewhere (quarantined). The Reply waits for the change to be stored.
fn give_back(cx: &Cx, leases: &mut Leases6) -> Outcome6 {
    let decline = cx.req.kind == MessageType::Decline;
    let mut commit = Vec::new();
    for ip in cx.req.ia_na.iter().flat_map(|ia| ia.addrs.iter()) {
        let op = if decline {
            leases.decline(*ip, &cx.key, cx.now)
        } else {
            leases.release(*ip, &cx.key, cx.now)
        };
        if decline && op.is_some() {
            tracing::warn!(ip = %ip, mac = ?cx.mac(), "IPv6 address declined (in use by another host?): quarantined");
        }
        commit.extend(op);
    }
    let mut w = cx.reply(MessageType::Reply);
    w.status(
        Status::Success,
        if decline { "declined" } else { "released" },
    );
    cx.finish(w, Vec::new(), commit)
}

/// Proxy mode: boot information only, no addresses, to boot clients; another
/// DHCPv6 server on the link hands out the addresses (docs/decisions.md,
/// "DHCPv6 proxy mode").
fn proxy(cx: &Cx) -> Outcome6 {
    use MessageType as M;
    let kind = match cx.req.kind {
        M::Solicit => M::Advertise,
        M::Request | M::InformationRequest => M::Reply,
        other => return Outcome6::Ignored(format!("proxy mode does not answer {other:?}")),
    };
    let mut w = cx.reply(kind);
    if !cx.boot(&mut w) {
        return Outcome6::Ignored(
            "proxy mode answers boot clients only (no boot file for this client)".into(),
        );
    }
    if let Some(Handout::Tftp(_)) = cx.decision.and_then(|d| d.handout.as_ref()) {
        w.pxe_client();
    }
    cx.finish(w, Vec::new(), Vec::new())
}
