//! Who gets the next transfer slot. A read request that finds every slot
//! taken waits here, oldest first, instead of being dropped: dropped, it would
//! be retried by its client at random, and in a storm larger than the slot
//! count some ROMs lost that lottery five times and gave up (bench/storm.sh at
//! 1,000 machines in flight: 227 of 10,000 failed TFTP). Waiting, each is
//! served in arrival order as slots free.
//!
//! Bounded on every side: at most `cap` waiting clients (beyond it requests
//! are dropped and counted as before), one entry per client address (a
//! retransmitted RRQ refreshes its entry and keeps its place), and an entry
//! not heard from for `silence` is dropped when its turn comes (its client has
//! given up; serving it would hold a slot for nothing). No I/O here.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What happened to a request offered to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// A new waiting client.
    New,
    /// A client already waiting asked again: its request is updated, its
    /// place kept.
    Repeat,
    /// The queue is full: drop the request.
    Full,
}

pub struct Waiting<T> {
    /// Arrival order.
    order: VecDeque<SocketAddr>,
    /// The latest request of each waiting client and when it was last heard.
    entries: HashMap<SocketAddr, (T, Instant)>,
    cap: usize,
    silence: Duration,
}

impl<T> Waiting<T> {
    pub fn new(cap: usize, silence: Duration) -> Waiting<T> {
        Waiting {
            order: VecDeque::new(),
            entries: HashMap::new(),
            cap,
            silence,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn push(&mut self, peer: SocketAddr, request: T, now: Instant) -> Queued {
        if let Some(e) = self.entries.get_mut(&peer) {
            *e = (request, now);
            return Queued::Repeat;
        }
        if self.entries.len() >= self.cap {
            return Queued::Full;
        }
        self.order.push_back(peer);
        self.entries.insert(peer, (request, now));
        Queued::New
    }

    /// The oldest waiting request still worth serving, and how many silent
    /// ones were dropped on the way to it.
    pub fn pop(&mut self, now: Instant) -> (Option<(SocketAddr, T)>, usize) {
        let mut stale = 0;
        while let Some(peer) = self.order.pop_front() {
            let Some((request, heard)) = self.entries.remove(&peer) else {
                continue;
            };
            if now.saturating_duration_since(heard) <= self.silence {
                return (Some((peer, request)), stale);
            }
            stale += 1;
        }
        (None, stale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], n))
    }

    #[test]
    fn first_come_first_served_with_repeats_keeping_their_place() {
        let t = Instant::now();
        let mut w = Waiting::new(10, Duration::from_secs(5));
        assert_eq!(w.push(peer(1), "a", t), Queued::New);
        assert_eq!(w.push(peer(2), "b", t), Queued::New);
        assert_eq!(w.push(peer(1), "a2", t), Queued::Repeat);
        assert_eq!(w.len(), 2);
        assert_eq!(w.pop(t), (Some((peer(1), "a2")), 0));
        assert_eq!(w.pop(t), (Some((peer(2), "b")), 0));
        assert_eq!(w.pop(t), (None, 0));
        assert!(w.is_empty());
    }

    #[test]
    fn bounded_and_silent_clients_are_skipped() {
        let t = Instant::now();
        let mut w = Waiting::new(3, Duration::from_secs(5));
        for n in 0..3 {
            assert_eq!(w.push(peer(n), n, t), Queued::New);
        }
        assert_eq!(w.push(peer(9), 9, t), Queued::Full);
        // Client 2 keeps asking; 0 and 1 went quiet.
        let later = t + Duration::from_secs(6);
        assert_eq!(w.push(peer(2), 2, later), Queued::Repeat);
        assert_eq!(w.pop(later), (Some((peer(2), 2)), 2));
        assert_eq!(w.pop(later), (None, 0));
        assert_eq!(w.push(peer(9), 9, later), Queued::New);
    }
}
