//! What pxed does with one DHCP datagram: the one outcome type of the DHCP
//! wing. The exchange (`exchange.rs`) and [`super::respond`] produce it;
//! reporting (`report.rs`) reads its [`Outcome::label`] for the log, the boot
//! event and the metrics, so a name never changes on the way out.

use std::net::Ipv4Addr;

use dhcproto::v4::MessageType;

use super::guard::Throttled;
use super::leases::LeaseOp;
use super::packet::Rejected;
use super::server::Outgoing;

/// The answer to one datagram.
#[derive(Debug)]
pub enum Outcome {
    /// Not a DHCP request pxed can read: dropped and counted.
    Malformed(Rejected),
    /// Silent because a limit says so: counted by [`Limit::label`].
    Limited(Limit, String),
    /// A valid request that gets no answer, and why (logged at debug).
    Ignored(String),
    /// No answer, but lease changes to store (DECLINE, RELEASE).
    Store(Vec<LeaseOp>),
    /// A reply, sent once its lease changes are durable.
    Reply(Reply),
    /// The reply could not be encoded (a bug in pxed, not the client's fault).
    Unencodable(String),
}

/// An encoded reply and the lease changes that must be committed before it
/// leaves (none: it is sent at once).
#[derive(Debug)]
pub struct Reply {
    pub kind: MessageType,
    pub yiaddr: Ipv4Addr,
    pub out: Outgoing,
    pub commit: Vec<LeaseOp>,
}

/// The limits that silence a client (`pxed_dropped_total{reason=…}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Over a message rate (per MAC, relay circuit or relay).
    Rate(Throttled),
    /// No free address in the pool (or the reservation is held).
    PoolExhausted,
    /// The MAC already holds `max_leases_per_mac` addresses.
    MacLeases,
    /// The relay circuit already holds `max_leases_per_circuit` addresses.
    CircuitLeases,
}

impl Limit {
    pub fn label(self) -> &'static str {
        match self {
            Limit::Rate(t) => t.label(),
            Limit::PoolExhausted => "pool_exhausted",
            Limit::MacLeases => "mac_leases",
            Limit::CircuitLeases => "circuit_leases",
        }
    }

    /// Whether a client silenced by this limit gets a boot event: a full pool
    /// or a per-machine cap is what an operator looks for on a machine's
    /// timeline; packets over a rate limit are not, a flood would only fill
    /// the event queue.
    pub fn on_timeline(self) -> bool {
        !matches!(self, Limit::Rate(_))
    }
}

impl Outcome {
    /// The outcome's one name: the `outcome` label of `pxed_requests_total`,
    /// the `outcome` field of the log line and the boot event's outcome.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Malformed(_) => "dropped",
            Outcome::Limited(..) | Outcome::Ignored(_) => "ignored",
            Outcome::Store(_) => "stored",
            Outcome::Reply(r) => kind_label(Some(r.kind)),
            Outcome::Unencodable(_) => "unencodable",
        }
    }
}

/// A message type as a label (`pxed_requests_total{protocol="dhcp",
/// endpoint="discover",outcome="offer"}`).
pub fn kind_label(kind: Option<MessageType>) -> &'static str {
    use MessageType as M;
    match kind {
        Some(M::Discover) => "discover",
        Some(M::Offer) => "offer",
        Some(M::Request) => "request",
        Some(M::Decline) => "decline",
        Some(M::Ack) => "ack",
        Some(M::Nak) => "nak",
        Some(M::Release) => "release",
        Some(M::Inform) => "inform",
        _ => "other",
    }
}
