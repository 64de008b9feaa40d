//! Where leases are made durable: the [`LeaseStore`] trait every backend
//! implements, the one that opens the backend `[dhcp]` names, and the memory
//! store the unit tests use.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::Context as _;

use super::{Lease, Lease6, LeaseOp, SqliteStore};
use crate::config::DhcpConfig;

/// Durable lease storage. The lease table (`table.rs`) stays in memory and is
/// the only allocator; a store only records it:
/// - [`LeaseStore::load`] once at start rebuilds the table;
/// - [`LeaseStore::apply`] makes one batch of changes durable, atomically,
///   and returns only once they are. The committer (`commit.rs`) sends a
///   batch's ACKs only after `apply` returned `Ok`: that is what "no ACK
///   before its lease is committed" rests on, whatever the backend.
///
/// Both are called on the lease thread (`pxed-leases`), never on the async
/// runtime: a networked backend (PostgreSQL) may block here for a round trip,
/// or drive an async client with `Handle::block_on`, without stalling the
/// DHCP receive loop. Batches are already grouped (one call per wake-up of the
/// lease thread, up to 2,048 jobs): one round trip per batch, not per ACK. A
/// backend that cannot reach its database returns `Err`: the batch's ACKs are
/// withheld (clients retry) and the committer reports the outage.
///
/// A store shared by several servers (PostgreSQL) may also refuse single
/// ops: another server holds the address. The database wins: the ACK that
/// depended on the op becomes a NAK, and the table learns the row.
pub trait LeaseStore: Send {
    /// What and where the store is, for logs (`sqlite /var/lib/pxed/leases.sqlite`).
    fn describe(&self) -> String;
    /// Every stored IPv4 lease (bound, declined, released; never offers).
    fn load(&mut self) -> anyhow::Result<Vec<Lease>>;
    /// Applies the ops; returns only once they are committed, with the ones
    /// refused.
    fn apply(&mut self, ops: &[LeaseOp]) -> anyhow::Result<Applied>;
    /// Every stored DHCPv6 lease ([`Lease6`], `src/dhcp/v6/`), kept apart
    /// from IPv4's. `apply` takes their ops (`Put6`, `Delete6`) in the
    /// same batches, under the same rules.
    fn load6(&mut self) -> anyhow::Result<Vec<Lease6>>;
    /// Starts sending what other servers write to `learned` (rows the
    /// table takes over its own belief). Nothing for a store of one server.
    fn follow(&self, learned: Learned) {
        let _ = learned;
    }
    /// Where this server's table starts handing out fresh addresses in each
    /// pool ([`super::Leases::starting_at`]): 0 for a store of one server;
    /// a shared store gives each server its own.
    fn spread(&self) -> u64 {
        0
    }
}

/// Where rows the table must learn go: the receive loop takes them.
pub type Learned = tokio::sync::mpsc::Sender<Vec<Lease>>;
/// The same for the DHCPv6 table.
pub type Learned6 = tokio::sync::mpsc::Sender<Vec<Lease6>>;

/// What a store did with one batch of ops.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Indexes into the batch of the `Put`s the database refused because
    /// another client holds the address there.
    pub refused: Vec<usize>,
    /// What the database holds at those addresses.
    pub holders: Vec<Lease>,
    /// The same for refused `Put6`s.
    pub holders6: Vec<Lease6>,
}

/// A store `[dhcp]` names, opened, with what it holds.
pub struct Opened {
    pub store: Box<dyn LeaseStore>,
    pub leases: Vec<Lease>,
    pub leases6: Vec<Lease6>,
}

/// How DHCP opens its store (`crate::storage` picks the backend): called
/// at start, and again while it fails. May block (off the runtime).
pub type OpenStore = std::sync::Arc<dyn Fn(&DhcpConfig) -> anyhow::Result<Opened> + Send + Sync>;

/// Opens the SQLite file `[dhcp]` names and reads every lease in it, with
/// its checkpoint thread started.
pub fn open_sqlite(dhcp: &DhcpConfig) -> anyhow::Result<Opened> {
    let path = &dhcp.lease_db;
    let mut store = SqliteStore::open(path, dhcp.lease_fsync)
        .with_context(|| format!("cannot open the lease database {}", path.display()))?;
    let read = || format!("cannot read the lease database {}", path.display());
    let leases = store.load().with_context(read)?;
    let leases6 = store.load6().with_context(read)?;
    super::sqlite::spawn_checkpointer(path).context("lease checkpoint thread")?;
    Ok(Opened {
        store: Box::new(store),
        leases,
        leases6,
    })
}

/// A store that forgets everything: for unit tests.
#[derive(Default)]
pub struct MemoryStore {
    pub rows: HashMap<Ipv4Addr, Lease>,
    pub rows6: HashMap<Ipv6Addr, Lease6>,
}

impl LeaseStore for MemoryStore {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn load(&mut self) -> anyhow::Result<Vec<Lease>> {
        Ok(self.rows.values().cloned().collect())
    }

    fn load6(&mut self) -> anyhow::Result<Vec<Lease6>> {
        Ok(self.rows6.values().cloned().collect())
    }

    fn apply(&mut self, ops: &[LeaseOp]) -> anyhow::Result<Applied> {
        for op in ops {
            match op {
                LeaseOp::Put(l) => {
                    self.rows.insert(l.ip, l.clone());
                }
                LeaseOp::Delete { ip, .. } => {
                    self.rows.remove(ip);
                }
                LeaseOp::Put6(l) => {
                    self.rows6.insert(l.ip, l.clone());
                }
                LeaseOp::Delete6 { ip, .. } => {
                    self.rows6.remove(ip);
                }
            }
        }
        Ok(Applied::default())
    }
}
