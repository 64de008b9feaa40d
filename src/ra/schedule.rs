//! When to send which advertisement, no I/O (RFC 4861 §6.2.6). A valid
//! solicitation from a host with an address gets a unicast answer after a
//! random delay of at most [`MAX_RA_DELAY`] (the caller draws it: the RFC's
//! MUST, so that routers and hosts do not answer in lockstep); repeats from a
//! host whose answer is still pending are folded into it (iPXE solicits again
//! after 1/8 s, 1/4 s, …). A solicitation from the unspecified address, or
//! beyond the unicast budget of an interface (a flood), is answered by one
//! multicast advertisement to all nodes, at most one every
//! [`MIN_DELAY_BETWEEN_RAS`] per interface. Unsolicited advertisements take
//! the multicast path too.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use crate::core::Mac;

/// RFC 4861 §10, MAX_RA_DELAY_TIME.
pub const MAX_RA_DELAY: Duration = Duration::from_millis(500);
/// RFC 4861 §10, MIN_DELAY_BETWEEN_RAS: multicast advertisements per interface.
pub const MIN_DELAY_BETWEEN_RAS: Duration = Duration::from_secs(3);
/// Unicast answers an interface may send in a burst (a rack powering on)...
const UNICAST_BURST: f64 = 256.0;
/// ...and per second after that. Beyond, solicitors share multicast answers.
const UNICAST_PER_SECOND: f64 = 64.0;
/// Answers waiting at once, over all interfaces: memory stays bounded
/// whatever arrives.
const MAX_PENDING: usize = 1024;

/// Where an advertisement goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dest {
    /// The solicitor's (link-local) address.
    Unicast(Ipv6Addr),
    /// ff02::1.
    AllNodes,
}

/// One advertisement to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    pub ifindex: u32,
    pub dest: Dest,
    /// The solicitor's MAC, for the log.
    pub mac: Option<Mac>,
    pub due: Instant,
}

/// What became of one solicitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planned {
    /// An answer is scheduled for then.
    Unicast(Instant),
    /// A multicast answer (new or already planned) covers it.
    Multicast(Instant),
    /// An answer to this host was already pending.
    Pending,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The advertisements waiting to be sent.
#[derive(Default)]
pub struct Schedule {
    pending: Vec<Send>,
    buckets: HashMap<u32, Bucket>,
    last_multicast: HashMap<u32, Instant>,
}

impl Schedule {
    /// Plans the answer to a valid solicitation from `source` (`None`: the
    /// unspecified address) on `ifindex`. `delay` is at most [`MAX_RA_DELAY`].
    pub fn solicited(
        &mut self,
        now: Instant,
        ifindex: u32,
        source: Option<Ipv6Addr>,
        mac: Option<Mac>,
        delay: Duration,
    ) -> Planned {
        let delay = delay.min(MAX_RA_DELAY);
        if let Some(source) = source {
            let dest = Dest::Unicast(source);
            if self
                .pending
                .iter()
                .any(|s| s.ifindex == ifindex && s.dest == dest)
            {
                return Planned::Pending;
            }
            if self.pending.len() < MAX_PENDING && self.take_token(now, ifindex) {
                let due = now + delay;
                self.pending.push(Send {
                    ifindex,
                    dest,
                    mac,
                    due,
                });
                return Planned::Unicast(due);
            }
        }
        Planned::Multicast(self.multicast(now + delay, ifindex, mac))
    }

    /// Plans an unsolicited advertisement to all nodes on `ifindex`.
    pub fn unsolicited(&mut self, now: Instant, ifindex: u32) -> Instant {
        self.multicast(now, ifindex, None)
    }

    /// The earliest pending send.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.iter().map(|s| s.due).min()
    }

    /// Removes and returns every send due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<Send> {
        let (due, later): (Vec<Send>, Vec<Send>) = self.pending.iter().partition(|s| s.due <= now);
        self.pending = later;
        for s in &due {
            if s.dest == Dest::AllNodes {
                self.last_multicast.insert(s.ifindex, s.due);
            }
        }
        due
    }

    /// A multicast advertisement on `ifindex` no earlier than `earliest`, no
    /// closer than [`MIN_DELAY_BETWEEN_RAS`] to the previous one; one that is
    /// already planned serves.
    fn multicast(&mut self, earliest: Instant, ifindex: u32, mac: Option<Mac>) -> Instant {
        if let Some(s) = self
            .pending
            .iter()
            .find(|s| s.ifindex == ifindex && s.dest == Dest::AllNodes)
        {
            return s.due;
        }
        let due = match self.last_multicast.get(&ifindex) {
            Some(last) => earliest.max(*last + MIN_DELAY_BETWEEN_RAS),
            None => earliest,
        };
        self.pending.push(Send {
            ifindex,
            dest: Dest::AllNodes,
            mac,
            due,
        });
        due
    }

    fn take_token(&mut self, now: Instant, ifindex: u32) -> bool {
        let b = self.buckets.entry(ifindex).or_insert(Bucket {
            tokens: UNICAST_BURST,
            at: now,
        });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * UNICAST_PER_SECOND;
        b.tokens = (b.tokens + refill).min(UNICAST_BURST);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(i: u16) -> Option<Ipv6Addr> {
        Some(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, i))
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_solicitation_gets_one_unicast_answer_within_the_delay() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        assert_eq!(
            s.solicited(t0, 3, host(1), None, 200 * MS),
            Planned::Unicast(t0 + 200 * MS)
        );
        // iPXE solicits again before the answer left: no second answer.
        assert_eq!(
            s.solicited(t0 + 125 * MS, 3, host(1), None, Duration::ZERO),
            Planned::Pending
        );
        // Another host, or the same host on another interface, is separate.
        assert!(matches!(
            s.solicited(t0, 4, host(1), None, Duration::ZERO),
            Planned::Unicast(_)
        ));
        assert_eq!(s.next_due(), Some(t0));
        assert_eq!(s.take_due(t0).len(), 1);
        assert!(s.take_due(t0 + 199 * MS).is_empty());
        let due = s.take_due(t0 + 200 * MS);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].dest, Dest::Unicast(host(1).unwrap()));
        assert_eq!(s.next_due(), None);
        // Answered: the next solicitation gets a new answer.
        assert!(matches!(
            s.solicited(t0 + 300 * MS, 3, host(1), None, Duration::ZERO),
            Planned::Unicast(_)
        ));
    }

    #[test]
    fn the_delay_never_exceeds_max_ra_delay() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        assert_eq!(
            s.solicited(t0, 1, host(1), None, Duration::from_secs(9)),
            Planned::Unicast(t0 + MAX_RA_DELAY)
        );
    }

    #[test]
    fn unspecified_sources_share_rate_limited_multicasts() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        assert_eq!(
            s.solicited(t0, 1, None, None, 100 * MS),
            Planned::Multicast(t0 + 100 * MS)
        );
        assert_eq!(
            s.solicited(t0 + 50 * MS, 1, None, None, Duration::ZERO),
            Planned::Multicast(t0 + 100 * MS)
        );
        assert_eq!(s.take_due(t0 + 100 * MS).len(), 1);
        // The next multicast waits MIN_DELAY_BETWEEN_RAS after the last one.
        assert_eq!(
            s.solicited(t0 + 200 * MS, 1, None, None, Duration::ZERO),
            Planned::Multicast(t0 + 100 * MS + MIN_DELAY_BETWEEN_RAS)
        );
        assert_eq!(
            s.unsolicited(t0 + 300 * MS, 1),
            t0 + 100 * MS + MIN_DELAY_BETWEEN_RAS
        );
    }

    #[test]
    fn a_flood_is_bounded_and_folded_into_multicasts() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        let mut unicast = 0;
        for i in 0..10_000u16 {
            match s.solicited(t0, 1, host(i), None, Duration::ZERO) {
                Planned::Unicast(_) => unicast += 1,
                Planned::Multicast(_) => {}
                Planned::Pending => panic!("distinct hosts"),
            }
        }
        assert_eq!(unicast, UNICAST_BURST as usize);
        let due = s.take_due(t0);
        assert_eq!(due.len(), unicast + 1);
        assert_eq!(due.iter().filter(|d| d.dest == Dest::AllNodes).count(), 1);
        // Tokens come back with time.
        assert!(matches!(
            s.solicited(
                t0 + Duration::from_secs(1),
                1,
                host(1),
                None,
                Duration::ZERO
            ),
            Planned::Unicast(_)
        ));
        // Pending answers never exceed MAX_PENDING.
        let mut s = Schedule::default();
        for ifindex in 0..100 {
            for i in 0..100u16 {
                s.solicited(t0, ifindex, host(i), None, 100 * MS);
            }
        }
        assert!(s.pending.len() <= MAX_PENDING + 100);
    }
}
