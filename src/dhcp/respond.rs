//! The pure entry point of the DHCP wing: one datagram in, one [`Answer`]
//! out, no socket, no database, no clock read. The receive loop (`mod.rs`)
//! and the fuzz target (`src/fuzzing/`) both call [`respond`], so the
//! fuzzer exercises exactly what a hostile packet reaches.

use std::time::Instant;

use super::exchange::{self, Place, Port};
use super::guard::Guard;
use super::leases::Leases;
use super::outcome::{Limit, Outcome};
use super::packet::{self, Request};
use super::server::{Arrival, Iface};
use crate::config::Config;
use crate::core::decide::{self, Decision};

/// One datagram as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub datagram: &'a [u8],
    pub arrival: &'a Arrival,
    /// The interface it arrived on (`None` if unknown).
    pub iface: Option<&'a Iface>,
    pub port: Port,
}

/// The time: Unix seconds (leases) and an `Instant` (rates).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub unix: u64,
    pub instant: Instant,
}

/// What [`respond`] made of one datagram: the request (when it parsed), the
/// boot decision (made once, when the request got past the rate limits) and
/// the outcome. Reporting reads all three; nothing is derived twice.
#[derive(Debug)]
pub struct Answer<'c> {
    pub req: Option<Box<Request>>,
    pub decision: Option<Decision<'c>>,
    pub outcome: Outcome,
}

/// Everything pxed does with a received datagram short of touching a socket
/// or the database: parse and validate it, spend its rate budgets, find our
/// address and the client's subnet, decide what it boots ([`decide::decide`],
/// once), check the receiving interface, and run the RFC 2131 exchange
/// against the lease table, which encodes the reply.
pub fn respond<'c>(
    config: &'c Config,
    leases: &mut Leases,
    guard: &mut Guard,
    rx: Received,
    clock: Clock,
) -> Answer<'c> {
    let req = match packet::parse(rx.datagram) {
        Ok(r) => Box::new(r),
        Err(why) => {
            return Answer {
                req: None,
                decision: None,
                outcome: Outcome::Malformed(why),
            }
        }
    };
    let limits = &config.dhcp.limits;
    let admitted = guard.admit(limits, req.mac, req.giaddr(), req.circuit(), clock.instant);
    if let Err(over) = admitted {
        let why = format!("over the {} limit", over.label());
        return Answer {
            req: Some(req),
            decision: None,
            outcome: Outcome::Limited(Limit::Rate(over), why),
        };
    }
    let (server, subnet) = exchange::locate(config, rx.iface, rx.arrival.local, req.giaddr());
    let base = config.server.base_at(server.into());
    // The operator's override for this machine, if any (`crate::machines`:
    // a lock-free snapshot read, no I/O).
    let ovr = crate::machines::lookup(req.mac).map(|a| a.boot);
    let loaders = &config.dhcp.loaders;
    let decision = decide::decide(&config.policy, loaders, &req.boot, &base, ovr.as_ref());
    let outcome = match rx
        .iface
        .filter(|i| !config.dhcp.interfaces.is_empty() && !config.dhcp.interfaces.contains(&i.name))
    {
        Some(i) => Outcome::Ignored(format!("{} is not one of [dhcp] interfaces", i.name)),
        None => {
            let place = Place {
                server,
                subnet,
                ifindex: rx.arrival.ifindex,
                port: rx.port,
                src: rx.arrival.src,
            };
            exchange::handle(config, leases, &place, &req, &decision, clock.unix)
        }
    };
    Answer {
        req: Some(req),
        decision: Some(decision),
        outcome,
    }
}

#[cfg(test)]
#[path = "respond_tests.rs"]
mod tests;
