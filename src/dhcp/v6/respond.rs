//! The pure entry point of the DHCPv6 wing: one datagram in, one [`Answer6`]
//! out, no socket, no database, no clock read. The receive loop (`mod.rs`)
//! and the fuzz target (`src/fuzzing/dhcp6.rs`) both call [`respond`].

use super::exchange::{self, Place6};
use super::outcome::Outcome6;
use super::packet::{self, Request};
use super::server::Arrival6;
use crate::config::Config;
use crate::core::decide::{self, Decision};
use crate::dhcp::guard::Guard;
use crate::dhcp::leases::Leases6;
use crate::dhcp::outcome::Limit;
use crate::dhcp::server::Iface;
use crate::dhcp::Clock;

/// One datagram as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Received6<'a> {
    pub datagram: &'a [u8],
    pub arrival: &'a Arrival6,
    /// The interface it arrived on (`None` if unknown).
    pub iface: Option<&'a Iface>,
    /// Our DUID (option 2).
    pub duid: &'a [u8],
}

/// What [`respond`] made of one datagram: the request (when it parsed), the
/// boot decision (made once, when the client's MAC is known and it got past
/// the rate limit) and the outcome.
#[derive(Debug)]
pub struct Answer6<'c> {
    pub req: Option<Box<Request>>,
    pub decision: Option<Decision<'c>>,
    pub outcome: Outcome6,
}

/// Parse and validate the datagram, spend the client's rate budget (per
/// MAC), find our address and the client's subnet, decide what it boots
/// ([`decide::decide`], once, as DHCPv4 does), check the receiving
/// interface, and run the RFC 8415 exchange against the lease table.
pub fn respond<'c>(
    config: &'c Config,
    leases: &mut Leases6,
    guard: &mut Guard,
    rx: Received6,
    clock: Clock,
) -> Answer6<'c> {
    let src = *rx.arrival.src.ip();
    let req = match packet::parse(rx.datagram, src) {
        Ok(r) => Box::new(r),
        Err(why) => {
            return Answer6 {
                req: None,
                decision: None,
                outcome: Outcome6::Malformed(why),
            }
        }
    };
    let limits = &config.dhcp.limits;
    if let Some((mac, _)) = req.mac {
        let unspecified = std::net::Ipv4Addr::UNSPECIFIED;
        if let Err(over) = guard.admit(limits, mac, unspecified, None, clock.instant) {
            let why = format!("over the {} limit", over.label());
            return Answer6 {
                req: Some(req),
                decision: None,
                outcome: Outcome6::Limited(Limit::Rate(over), why),
            };
        }
    }
    let (server, subnet) = exchange::locate(config, rx.iface, &req);
    let Some(server) = server else {
        let why = "the receiving interface has no global IPv6 address to name in boot URLs";
        return Answer6 {
            req: Some(req),
            decision: None,
            outcome: Outcome6::Ignored(why.into()),
        };
    };
    let decision = req.client().map(|client| {
        let base = config.server.base_at(server.into());
        let ovr = crate::machines::lookup(client.mac).map(|a| a.boot);
        let loaders = &config.dhcp.loaders;
        decide::decide(&config.policy, loaders, &client, &base, ovr.as_ref())
    });
    let outcome = match rx
        .iface
        .filter(|i| !config.dhcp.interfaces.is_empty() && !config.dhcp.interfaces.contains(&i.name))
    {
        Some(i) => Outcome6::Ignored(format!("{} is not one of [dhcp] interfaces", i.name)),
        None => {
            let place = Place6 {
                server,
                subnet,
                ifindex: rx.arrival.ifindex,
                src: rx.arrival.src,
            };
            let d = decision.as_ref();
            exchange::handle(config, leases, &place, &req, d, rx.duid, clock.unix)
        }
    };
    Answer6 {
        req: Some(req),
        decision,
        outcome,
    }
}

#[cfg(test)]
#[path = "respond_tests.rs"]
mod tests;
