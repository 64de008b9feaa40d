//! Telling what happened to one datagram: packet counters, the log line, the
//! `pxed_requests_total` / `pxed_dropped_total` metrics and the boot event,
//! all read from the one [`Answer`] that `respond` made: its outcome's
//! [`Outcome::label`] and its [`Decision`]. Nothing here decides anything.

use std::net::{IpAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dhcproto::v4::MessageType;

use super::commit::Job;
use super::outcome::{kind_label, Outcome, Reply};
use super::packet::Request;
use super::respond::Answer;
use super::server::Outgoing;
use crate::core::decide::{Decision, Handout};
use crate::events::{self, Event, Stage};

/// Packet counters, logged every minute when something was dropped.
#[derive(Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub malformed: AtomicU64,
    /// Over a rate limit, or silenced by a lease limit (pool, per MAC).
    pub limited: AtomicU64,
    pub ignored: AtomicU64,
    pub replies: AtomicU64,
}

/// Counts, logs and records `answer` (to `src`, the datagram's sender) and
/// adds its reply to `replies` (sent with the rest of the read batch), or
/// returns the job to commit when the reply (or the lease change alone)
/// must wait for the lease store.
pub fn dispatch(
    answer: Answer,
    src: SocketAddrV4,
    stats: &Stats,
    replies: &mut Vec<Outgoing>,
) -> Option<Job> {
    stats.received.fetch_add(1, Ordering::Relaxed);
    count(&answer, src, stats);
    let Answer {
        req,
        decision,
        outcome,
    } = answer;
    let req = req?;
    let on_timeline = match &outcome {
        Outcome::Limited(limit, _) => limit.on_timeline(),
        Outcome::Malformed(_) | Outcome::Unencodable(_) => false,
        _ => true,
    };
    let reply = match &outcome {
        Outcome::Reply(r) => Some(r),
        _ => None,
    };
    let event = (on_timeline && events::enabled())
        .then(|| event(&req, src, decision.as_ref(), reply, &outcome));
    match outcome {
        Outcome::Store(ops) => Some(Job {
            ops,
            reply: None,
            reply6: None,
            event,
        }),
        Outcome::Reply(reply) if reply.commit.is_empty() => {
            if let Some(e) = event {
                events::record(e);
            }
            replies.push(reply.out);
            None
        }
        Outcome::Reply(reply) => Some(Job {
            ops: reply.commit,
            reply: Some(reply.out),
            reply6: None,
            event,
        }),
        _ => {
            if let Some(e) = event {
                events::record(e);
            }
            None
        }
    }
}

/// The counters, the metrics and the log line.
fn count(answer: &Answer, src: SocketAddrV4, stats: &Stats) {
    let metrics = crate::metrics::get();
    let outcome = &answer.outcome;
    let label = outcome.label();
    let Some(req) = &answer.req else {
        stats.malformed.fetch_add(1, Ordering::Relaxed);
        metrics.request("dhcp", "malformed", label);
        metrics.dropped("dhcp", "malformed");
        if let Outcome::Malformed(why) = outcome {
            tracing::debug!(%src, outcome = label, "dropped: {why}");
        }
        return;
    };
    let asked = kind_label(Some(req.kind));
    let rule = answer.decision.as_ref().and_then(Decision::rule_name);
    match outcome {
        Outcome::Limited(limit, why) => {
            stats.limited.fetch_add(1, Ordering::Relaxed);
            metrics.dropped("dhcp", limit.label());
            tracing::debug!(mac = %req.mac, kind = asked, giaddr = %req.giaddr(), outcome = label, "dropped: {why}");
        }
        Outcome::Ignored(why) => {
            stats.ignored.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(mac = %req.mac, kind = asked, rule, outcome = label, "no reply: {why}");
        }
        Outcome::Reply(r) => {
            stats.replies.fetch_add(1, Ordering::Relaxed);
            let d = answer.decision.as_ref();
            tracing::debug!(
                mac = %req.mac, kind = asked, outcome = label, yiaddr = %r.yiaddr, dest = %r.out.dest,
                rule, handout = d.and_then(|d| d.handout.as_ref()).map(Handout::filename),
                why = d.map(|d| d.reason),
                "reply"
            );
        }
        Outcome::Unencodable(error) => {
            tracing::error!(mac = %req.mac, error = %error, "cannot encode a reply");
            return;
        }
        Outcome::Store(_) | Outcome::Malformed(_) => {}
    }
    metrics.request("dhcp", asked, label);
}

/// The boot event for one message: who asked (MAC, firmware, the rule its
/// MAC and arch matched) and, with a reply, what it was given.
pub fn event(
    req: &Request,
    src: SocketAddrV4,
    decision: Option<&Decision>,
    reply: Option<&Reply>,
    outcome: &Outcome,
) -> Event {
    let asked = kind_label(Some(req.kind));
    let yiaddr = reply.map(|r| r.yiaddr).filter(|ip| !ip.is_unspecified());
    let ip = yiaddr
        .or(Some(req.ciaddr()).filter(|ip| !ip.is_unspecified()))
        .or(Some(*src.ip()).filter(|ip| !ip.is_unspecified()));
    let e = Event::new(Stage::Dhcp, "ok", asked)
        .mac(Some(req.mac))
        .ip(ip.map(IpAddr::V4))
        .rule(decision.and_then(Decision::rule_name))
        .arch(req.boot.arch);
    match (outcome, reply) {
        (_, Some(r)) => {
            let kind = kind_label(Some(r.kind));
            // A NAK carries no boot file, whatever was decided.
            let handout = decision
                .and_then(|d| d.handout.as_ref())
                .filter(|_| r.kind != MessageType::Nak);
            let boot = match handout {
                Some(h) => format!(", boot {}", h.filename()),
                None => ", no boot file".to_string(),
            };
            let to = yiaddr.map(|ip| format!(" {ip}")).unwrap_or_default();
            let client = if req.boot.ipxe { "iPXE" } else { "firmware" };
            let outcome = if r.kind == MessageType::Nak {
                "nak"
            } else {
                "ok"
            };
            e.outcome(outcome, format!("{asked} → {kind}{to}{boot} ({client})"))
        }
        (Outcome::Store(_), None) => e.outcome("ok", format!("{asked}: lease updated")),
        (Outcome::Limited(limit, why), None) => {
            e.outcome(limit.label(), format!("{asked}: no reply: {why}"))
        }
        (Outcome::Ignored(why), None) => e.outcome("ignored", format!("{asked}: no reply: {why}")),
        _ => e,
    }
}

/// Logs the packet counters (of `protocol`: `dhcp`, `dhcp6`) every minute
/// in which something was dropped.
pub async fn every_minute(stats: Arc<Stats>, protocol: &'static str) {
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let dropped =
            stats.malformed.load(Ordering::Relaxed) + stats.limited.load(Ordering::Relaxed);
        if dropped != last {
            tracing::info!(
                received = stats.received.load(Ordering::Relaxed),
                malformed = stats.malformed.load(Ordering::Relaxed),
                limited = stats.limited.load(Ordering::Relaxed),
                ignored = stats.ignored.load(Ordering::Relaxed),
                replies = stats.replies.load(Ordering::Relaxed),
                protocol,
                "dhcp packet counters"
            );
            last = dropped;
        }
    }
}
