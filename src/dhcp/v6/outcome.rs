//! What pxed does with one DHCPv6 datagram: the one outcome type of the
//! DHCPv6 wing, beside DHCPv4's (`dhcp/outcome.rs`). The exchange and
//! [`super::respond`] produce it; reporting reads its [`Outcome6::label`].

use std::net::Ipv6Addr;

use dhcproto::v6::MessageType;

use super::packet::Rejected;
use crate::dhcp::leases::LeaseOp;
use crate::dhcp::outcome::Limit;
use crate::dhcp::server::Outgoing6;

#[derive(Debug)]
pub enum Outcome6 {
    /// Not a DHCPv6 message pxed can read: dropped and counted.
    Malformed(Rejected),
    /// Silent because a limit says so.
    Limited(Limit, String),
    /// A valid message that gets no answer, and why.
    Ignored(String),
    /// A reply, sent once its lease changes are durable.
    Reply(Reply6),
}

/// An encoded Advertise or Reply and the lease changes to commit first.
#[derive(Debug)]
pub struct Reply6 {
    pub kind: MessageType,
    /// The addresses it hands out (lifetimes above 0).
    pub addrs: Vec<Ipv6Addr>,
    pub out: Outgoing6,
    pub commit: Vec<LeaseOp>,
}

impl Outcome6 {
    /// The outcome's one name (`pxed_requests_total{protocol="dhcp6",outcome=…}`,
    /// the log line, the boot event).
    pub fn label(&self) -> &'static str {
        match self {
            Outcome6::Malformed(_) => "dropped",
            Outcome6::Limited(..) | Outcome6::Ignored(_) => "ignored",
            Outcome6::Reply(r) => kind_label(r.kind),
        }
    }
}

/// A DHCPv6 message type as a label.
pub fn kind_label(kind: MessageType) -> &'static str {
    use MessageType as M;
    match kind {
        M::Solicit => "solicit",
        M::Advertise => "advertise",
        M::Request => "request",
        M::Confirm => "confirm",
        M::Renew => "renew",
        M::Rebind => "rebind",
        M::Reply => "reply",
        M::Release => "release",
        M::Decline => "decline",
        M::InformationRequest => "information-request",
        _ => "other",
    }
}
