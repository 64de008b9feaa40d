//! Group commit: the thread that owns the lease store. The exchange hands it a
//! job (lease changes + the reply that depends on them); it takes every job
//! waiting, applies all their changes in one transaction, and only after the
//! commit returns sends their replies. So no ACK ever leaves before its lease
//! is stored, and a burst of N ACKs costs one commit, not N.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use super::leases::{LeaseOp, LeaseStore};
use super::server::{Outgoing, Sender};
use crate::events::{self, Event};

/// Most jobs folded into one transaction.
const MAX_BATCH: usize = 2048;
/// Batches (of up to 64 jobs) waiting beyond this are refused (the client retries): memory stays
/// bounded when the disk is slower than the network.
const QUEUE: usize = 1024;

pub struct Job {
    pub ops: Vec<LeaseOp>,
    pub reply: Option<Outgoing>,
    /// Recorded once the commit's fate is known.
    pub event: Option<Event>,
}

#[derive(Default)]
pub struct CommitStats {
    pub commits: AtomicU64,
    pub failed: AtomicU64,
    pub refused: AtomicU64,
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
    pub fn start(store: Box<dyn LeaseStore>, sender: Arc<Sender>) -> std::io::Result<Committer> {
        let (tx, rx) = sync_channel(QUEUE);
        let stats = Arc::new(CommitStats::default());
        let s = stats.clone();
        std::thread::Builder::new()
            .name("pxed-leases".into())
            .spawn(move || run(store, rx, sender, s))?;
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

fn run(
    mut store: Box<dyn LeaseStore>,
    rx: Receiver<Vec<Job>>,
    sender: Arc<Sender>,
    stats: Arc<CommitStats>,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut ops: Vec<LeaseOp> = Vec::with_capacity(MAX_BATCH);
    while let Ok(mut first) = rx.recv() {
        batch.append(&mut first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(mut more) => batch.append(&mut more),
                Err(_) => break,
            }
        }
        ops.clear();
        for j in &mut batch {
            ops.append(&mut j.ops);
        }
        let result = if ops.is_empty() {
            Ok(())
        } else {
            store.apply(&ops)
        };
        if result.is_ok() {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            for j in batch.drain(..) {
                if let Some(e) = j.event {
                    events::record(e);
                }
                if let Some(out) = j.reply {
                    if let Err(e) = sender.send(&out) {
                        stats.send_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(dest = %out.dest, error = %e, "cannot send reply");
                    }
                }
            }
        } else {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                jobs = batch.len(),
                error = ?result.err(),
                "cannot store leases; their ACKs are not sent (clients will retry)"
            );
            for j in batch.drain(..) {
                if let Some(e) = j.event {
                    let detail = format!("{}: lease not stored, no reply sent", e.detail);
                    events::record(e.outcome("failed", detail));
                }
            }
        }
    }
}
