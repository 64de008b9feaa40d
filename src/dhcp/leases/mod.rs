//! Who holds which address. Two halves:
//! - [`Leases`] (`table.rs`), the in-memory table the exchange consults and
//!   changes; it is the only allocator, so an address can never be handed to
//!   two clients (one entry per address, one address per client);
//! - a [`LeaseStore`] (`store.rs`: the trait; `sqlite.rs`: SQLite in
//!   production; memory in unit tests) that makes bound, declined and
//!   released leases durable. The table is rebuilt from the store at start.
//!   Offers are held in memory only: nothing was promised yet.
//!
//! The exchange never writes the store itself: it returns [`LeaseOp`]s, and the
//! committer (`commit.rs`) applies them in one transaction before it sends the
//! ACKs that depend on them.

mod sqlite;
mod store;
mod table;
mod table6;

pub use sqlite::{unwritable_reason, SqliteStore};
pub use store::{
    open_sqlite, Applied, Learned, Learned6, LeaseStore, MemoryStore, OpenStore, Opened,
};
pub use table::{Leases, PoolUse};
pub use table6::Leases6;

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::core::Mac;

/// Seconds an offered address stays held for the client it was offered to.
pub const OFFER_HOLD: u64 = 30;
/// Seconds a declined address (in use by someone else, says a client's ARP
/// probe) is kept out of the pool.
pub const QUARANTINE: u64 = 600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Offered, not yet requested; memory only.
    Offered,
    Bound,
    /// Declined by a client; quarantined until `expires`.
    Declined,
    /// Given back by the client; free, but the client gets it again first.
    Released,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    /// Option 61, or hardware type + chaddr when the client sends none.
    /// Empty for a declined address (it belongs to nobody).
    pub client: Vec<u8>,
    pub mac: Mac,
    /// Unix seconds.
    pub expires: u64,
    pub state: State,
}

/// A DHCPv6 lease (`src/dhcp/v6/`), in the same store as IPv4's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease6 {
    pub ip: Ipv6Addr,
    /// The client's key (`dhcp::v6::exchange::client_key`): its MAC when one is
    /// known, else DUID + IAID. Empty for a declined address.
    pub client: Vec<u8>,
    /// `None` for a client whose MAC nothing carried.
    pub mac: Option<Mac>,
    /// Unix seconds.
    pub expires: u64,
    pub state: State,
}

/// A change to make durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOp {
    Put(Lease),
    /// `client` moved away from `ip`. A shared store deletes the row only
    /// if `client` still holds it there: another server may have given the
    /// address to someone else since.
    Delete {
        ip: Ipv4Addr,
        client: Vec<u8>,
    },
    /// DHCPv6: a store keeps these apart from IPv4's (SQLite and
    /// PostgreSQL: table `leases6`), with the same rules.
    Put6(Lease6),
    Delete6 {
        ip: Ipv6Addr,
        client: Vec<u8>,
    },
}
