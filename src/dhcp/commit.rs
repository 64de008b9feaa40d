//! Group commit: the thread that owns the lease store. The exchange hands it a
//! job (lease changes + the reply that depends on them); it takes every job
//! waiting, applies all their changes in one transaction, and only after the
//! commit returns sends their replies. So no ACK ever leaves before its lease
//! is stored, and a burst of N ACKs costs one commit, not N.
//!
//! A store shared by several servers may refuse a job's lease (another server
//! gave the address away first): that job's ACK becomes a NAK, so the client
//! starts over at once, and the table learns who holds the address.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::leases::{Applied, Learned, Learned6, LeaseOp, LeaseStore};
use super::server::{Outgoing, Outgoing6, Sender};
use crate::events::{self, Event};

/// Most jobs folded into one transaction.
const MAX_BATCH: usize = 2048;
/// Batches (of up to 64 jobs) waiting beyond this are refused (the client retries): memory stays
/// bounded when the disk is slower than the network.
const QUEUE: usize = 1024;

pub struct Job {
    pub ops: Vec<LeaseOp>,
    pub reply: Option<Outgoing>,
    /// A DHCPv6 reply (`src/dhcp/v6/`), sent on the DHCPv6 socket.
    pub reply6: Option<Outgoing6>,
    /// Recorded once the commit's fate is known.
    pub event: Option<Event>,
}

#[derive(Default)]
pub struct CommitStats {
    pub commits: AtomicU64,
    pub failed: AtomicU64,
    pub refused: AtomicU64,
    /// Leases the shared database refused (another server holds the address).
    pub conflicts: AtomicU64,
    pub send_errors: AtomicU64,
}

/// The sending side, held by the exchange loop.
#[derive(Clone)]
pub struct Committer {
    tx: SyncSender<Vec<Job>>,
    pub stats: Arc<CommitStats>,
}

impl Committer {
    /// Starts the commit thread; it ends when every `Committer` is dropped.
    /// Replies go out through `to`'s sockets; rows the store says are held
    /// by others go to its tables.
    pub fn start(store: Box<dyn LeaseStore>, to: Outputs) -> std::io::Result<Committer> {
        let (tx, rx) = sync_channel(QUEUE);
        let stats = Arc::new(CommitStats::default());
        let out = Out {
            to,
            stats: stats.clone(),
        };
        std::thread::Builder::new()
            .name("pxed-leases".into())
            .spawn(move || run(store, rx, out))?;
        Ok(Committer { tx, stats })
    }

    /// Queues jobs; false if the queue is full (their replies are dropped).
    pub fn submit(&self, jobs: Vec<Job>) -> bool {
        match self.tx.try_send(jobs) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// How often a store that keeps failing is reported again.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// A run of failed commits: reported when it starts, every
/// [`REPORT_EVERY`] while it lasts, and when it ends, never once per batch (a
/// full disk under a boot storm would otherwise log thousands of lines a
/// second).
#[derive(Default)]
struct Outage {
    since: Option<Instant>,
    reported: Option<Instant>,
    batches: u64,
    acks: u64,
}

impl Outage {
    fn failed(&mut self, acks: usize, error: &anyhow::Error) {
        self.batches += 1;
        self.acks += acks as u64;
        let now = Instant::now();
        if self.since.is_none() {
            self.since = Some(now);
            self.reported = Some(now);
            tracing::error!(
                error = format!("{error:#}"),
                "cannot store leases; their ACKs are not sent (a lease that is not recorded is not given; clients retry)"
            );
        } else if self.reported.is_some_and(|r| now - r >= REPORT_EVERY) {
            self.reported = Some(now);
            tracing::error!(
                error = format!("{error:#}"),
                failed_commits = self.batches,
                withheld_acks = self.acks,
                "still cannot store leases"
            );
        }
    }

    fn succeeded(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::warn!(
                failed_commits = self.batches,
                withheld_acks = self.acks,
                seconds = since.elapsed().as_secs(),
                "lease database writable again; ACKs flow"
            );
            *self = Outage::default();
        }
    }
}

/// Where the lease thread sends replies and what it learnt.
pub struct Outputs {
    /// The DHCP socket.
    pub sender: Arc<Sender>,
    pub learned: Learned,
    /// The DHCPv6 socket and table, when DHCPv6 runs.
    pub v6: Option<(Arc<Sender>, Learned6)>,
}

struct Out {
    to: Outputs,
    stats: Arc<CommitStats>,
}

/// How long the lease thread gathers jobs after a commit before the next
/// one, while jobs keep coming. It sleeps rather than waits on the queue: a
/// sender wakes a waiting receiver (a futex wake and a context switch per
/// read batch, and a commit of a few ACKs each), a sleeping one it does
/// not. At 4,000 DORA/s that was a commit per ACK and a third of pxed's CPU
/// (docs/decisions.md, "Lease commits gathered"); now at most ~1,000
/// commits a second, each ACK waiting at most this long more. When idle,
/// the thread waits on the queue, so the first ACK after a pause leaves at
/// once. The receive loop keeps reading meanwhile: it only queues.
const GATHER: Duration = Duration::from_millis(1);

fn run(mut store: Box<dyn LeaseStore>, rx: Receiver<Vec<Job>>, out: Out) {
    let mut c = Commits {
        batch: Vec::with_capacity(MAX_BATCH),
        ops: Vec::with_capacity(MAX_BATCH),
        ends: Vec::with_capacity(MAX_BATCH),
        outage: Outage::default(),
    };
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(mut jobs) = next.take() {
            c.batch.append(&mut jobs);
            while c.batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(mut more) => c.batch.append(&mut more),
                    Err(_) => break,
                }
            }
            let full = c.batch.len() >= MAX_BATCH;
            c.commit(&mut *store, &out);
            if !full {
                std::thread::sleep(GATHER);
            }
            next = rx.try_recv().ok();
        }
    }
}

/// The lease thread's buffers, kept across batches.
struct Commits {
    batch: Vec<Job>,
    ops: Vec<LeaseOp>,
    /// Where each job's ops end in `ops`.
    ends: Vec<usize>,
    outage: Outage,
}

impl Commits {
    /// Applies the batch's ops in one transaction, then sends its replies
    /// (or, if the commit failed, none: the clients retry).
    fn commit(&mut self, store: &mut dyn LeaseStore, out: &Out) {
        self.ops.clear();
        self.ends.clear();
        for j in &mut self.batch {
            self.ops.append(&mut j.ops);
            self.ends.push(self.ops.len());
        }
        let result = if self.ops.is_empty() {
            Ok(Applied::default())
        } else {
            store.apply(&self.ops)
        };
        match result {
            Ok(applied) => {
                if !self.ops.is_empty() {
                    self.outage.succeeded();
                }
                out.stats.commits.fetch_add(1, Ordering::Relaxed);
                out.committed(&mut self.batch, &self.ends, applied);
            }
            Err(e) => {
                out.stats.failed.fetch_add(1, Ordering::Relaxed);
                let acks = self.batch.iter().filter(|j| j.reply.is_some()).count();
                self.outage.failed(acks, &e);
                for j in self.batch.drain(..) {
                    if let Some(e) = j.event {
                        let detail = format!("{}: lease not stored, no reply sent", e.detail);
                        events::record(e.outcome("failed", detail));
                    }
                }
            }
        }
    }
}

impl Out {
    /// Sends the replies of a committed batch: each job's own, or a NAK for
    /// a job whose lease the store refused (`applied.refused` is ascending).
    fn committed(&self, batch: &mut Vec<Job>, ends: &[usize], applied: Applied) {
        let mut refused = applied.refused.iter().peekable();
        let mut acks = Vec::with_capacity(batch.len());
        for (j, end) in batch.drain(..).zip(ends) {
            let mut lost = false;
            while refused.next_if(|i| **i < *end).is_some() {
                lost = true;
            }
            let (reply, reply6, event) = if lost {
                self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                // pxed_dropped_total{protocol="dhcp",reason="lease_conflict"}:
                // the ACK that did not leave.
                crate::metrics::get().dropped_n("dhcp", "lease_conflict", 1);
                let why = "the address was taken by another server first";
                let nak = j
                    .reply
                    .as_ref()
                    .and_then(|r| super::exchange::nak_for(r, why));
                let instead = j.reply6.as_ref().and_then(|r| (r.refused)(r, why));
                let said = if j.reply6.is_some() {
                    "NoAddrsAvail"
                } else {
                    "NAK"
                };
                let event = j.event.map(|e| {
                    let detail = format!("{}: {why}, {said} sent", e.detail);
                    e.outcome("conflict", detail)
                });
                (nak, instead, event)
            } else {
                (j.reply, j.reply6, j.event)
            };
            if let Some(e) = event {
                events::record(e);
            }
            acks.extend(reply);
            self.send6(reply6);
        }
        // The batch's DHCPv4 replies with one `sendmmsg` (`batch.rs`).
        let failed = super::batch::send_all(self.to.sender.fd(), &acks);
        self.stats
            .send_errors
            .fetch_add(failed as u64, Ordering::Relaxed);
        if !applied.holders.is_empty() {
            let _ = self.to.learned.try_send(applied.holders);
        }
        if let (false, Some((_, learned6))) = (applied.holders6.is_empty(), &self.to.v6) {
            let _ = learned6.try_send(applied.holders6);
        }
    }

    fn send6(&self, reply6: Option<Outgoing6>) {
        if let (Some(r), Some((sender, _))) = (reply6, &self.to.v6) {
            if let Err(e) = sender.send6(&r) {
                self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(dest = %r.dest, error = %e, "cannot send reply");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
    use dhcproto::{Decodable, Encodable};

    use super::super::exchange::nak_for;
    use super::super::server::Outgoing;

    /// The NAK that replaces a refused ACK: same transaction and client, no
    /// address, the server identifier and relay information kept, the
    /// reason given, broadcast (or to the relay, flagged broadcast).
    #[test]
    fn a_refused_ack_becomes_a_nak_to_the_same_client() {
        let server = Ipv4Addr::new(10, 0, 0, 1);
        for giaddr in [Ipv4Addr::UNSPECIFIED, Ipv4Addr::new(10, 9, 0, 1)] {
            let chaddr = [0x52, 0x54, 0, 0, 0, 7];
            let mut ack = Message::new_with_id(
                0x1234_5678,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::new(10, 0, 0, 50),
                server,
                giaddr,
                &chaddr,
            );
            ack.set_opcode(Opcode::BootReply);
            let o = ack.opts_mut();
            o.insert(DhcpOption::MessageType(MessageType::Ack));
            o.insert(DhcpOption::ServerIdentifier(server));
            o.insert(DhcpOption::AddressLeaseTime(600));
            o.insert(DhcpOption::BootfileName(b"undionly.kpxe".to_vec()));
            let dest = if giaddr.is_unspecified() {
                SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
            } else {
                SocketAddrV4::new(giaddr, 67)
            };
            let out = Outgoing {
                bytes: ack.to_vec().unwrap(),
                dest,
                ifindex: 3,
                src: server,
            };
            let nak = nak_for(&out, "taken").unwrap();
            let m = Message::from_bytes(&nak.bytes).unwrap();
            assert_eq!(m.opts().msg_type(), Some(MessageType::Nak));
            assert_eq!(
                (m.xid(), m.chaddr(), m.giaddr()),
                (0x1234_5678, &chaddr[..], giaddr)
            );
            assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
            assert_eq!(m.siaddr(), Ipv4Addr::UNSPECIFIED);
            assert_eq!(
                m.opts().get(OptionCode::ServerIdentifier),
                Some(&DhcpOption::ServerIdentifier(server))
            );
            assert_eq!(
                m.opts().get(OptionCode::Message),
                Some(&DhcpOption::Message("taken".into()))
            );
            assert!(m.opts().get(OptionCode::AddressLeaseTime).is_none());
            assert!(m.opts().get(OptionCode::BootfileName).is_none());
            assert_eq!((nak.dest, nak.ifindex, nak.src), (dest, 3, server));
            assert_eq!(m.flags().broadcast(), !giaddr.is_unspecified());
        }
    }
}
