//! Telling what happened to one DHCPv6 datagram: the packet counters, the
//! log line, `pxed_requests_total{protocol="dhcp6"}` and the boot event, all
//! read from the one [`Answer6`] `respond` made. Nothing here decides.

use std::net::{IpAddr, SocketAddrV6};
use std::sync::atomic::Ordering;

use super::outcome::{kind_label, Outcome6, Reply6};
use super::packet::{MacFrom, Request};
use super::respond::Answer6;
use crate::core::decide::{Decision, Handout};
use crate::dhcp::commit::Job;
use crate::dhcp::report::Stats;
use crate::dhcp::server::Sender;
use crate::events::{self, Event, Stage};

/// Counts, logs and records `answer` and sends its reply at once, or
/// returns the job to commit when the reply must wait for the lease store.
pub fn dispatch(answer: Answer6, src: SocketAddrV6, stats: &Stats, sender: &Sender) -> Option<Job> {
    stats.received.fetch_add(1, Ordering::Relaxed);
    count(&answer, src, stats);
    let Answer6 {
        req,
        decision,
        outcome,
    } = answer;
    let req = req?;
    let on_timeline = match &outcome {
        Outcome6::Limited(limit, _) => limit.on_timeline(),
        Outcome6::Malformed(_) => false,
        _ => req.mac.is_some(),
    };
    let event =
        (on_timeline && events::enabled()).then(|| event(&req, decision.as_ref(), &outcome));
    match outcome {
        Outcome6::Reply(reply) if reply.commit.is_empty() => {
            if let Some(e) = event {
                events::record(e);
            }
            if let Err(e) = sender.send6(&reply.out) {
                tracing::debug!(dest = %reply.out.dest, error = %e, "cannot send DHCPv6 reply");
            }
            None
        }
        Outcome6::Reply(reply) => Some(Job {
            ops: reply.commit,
            reply: None,
            reply6: Some(reply.out),
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
fn count(answer: &Answer6, src: SocketAddrV6, stats: &Stats) {
    let metrics = crate::metrics::get();
    let outcome = &answer.outcome;
    let label = outcome.label();
    let Some(req) = &answer.req else {
        stats.malformed.fetch_add(1, Ordering::Relaxed);
        metrics.request("dhcp6", "malformed", label);
        metrics.dropped("dhcp6", "malformed");
        if let Outcome6::Malformed(why) = outcome {
            tracing::debug!(%src, outcome = label, "dhcp6 dropped: {why}");
        }
        return;
    };
    let asked = kind_label(req.kind);
    let mac = req.mac.map(|(m, _)| tracing::field::display(m));
    let rule = answer.decision.as_ref().and_then(Decision::rule_name);
    match outcome {
        Outcome6::Limited(limit, why) => {
            stats.limited.fetch_add(1, Ordering::Relaxed);
            metrics.dropped("dhcp6", limit.label());
            tracing::debug!(mac, kind = asked, outcome = label, "dhcp6 dropped: {why}");
        }
        Outcome6::Ignored(why) => {
            stats.ignored.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                mac,
                kind = asked,
                rule,
                outcome = label,
                "dhcp6 no reply: {why}"
            );
        }
        Outcome6::Reply(r) => {
            stats.replies.fetch_add(1, Ordering::Relaxed);
            let d = answer.decision.as_ref();
            tracing::debug!(
                mac, mac_from = req.mac.map(|(_, f)| mac_from(f)), kind = asked, outcome = label,
                addrs = ?r.addrs, dest = %r.out.dest, relays = req.relays.len(), rule,
                handout = d.and_then(|d| d.handout.as_ref()).map(Handout::filename),
                why = d.map(|d| d.reason),
                "dhcp6 reply"
            );
        }
        Outcome6::Malformed(_) => {}
    }
    metrics.request("dhcp6", asked, label);
}

fn mac_from(f: MacFrom) -> &'static str {
    match f {
        MacFrom::RelayOption79 => "relay-option-79",
        MacFrom::LinkLocal => "link-local",
        MacFrom::Duid => "duid",
    }
}

/// The boot event for one message: who asked (MAC, firmware, the rule) and,
/// with a reply, what it was given.
fn event(req: &Request, decision: Option<&Decision>, outcome: &Outcome6) -> Event {
    let asked = kind_label(req.kind);
    let reply: Option<&Reply6> = match outcome {
        Outcome6::Reply(r) => Some(r),
        _ => None,
    };
    let addr = reply.and_then(|r| r.addrs.first().copied());
    let e = Event::new(Stage::Dhcp, "ok", asked)
        .mac(req.mac.map(|(m, _)| m))
        .ip(addr.map(IpAddr::V6))
        .rule(decision.and_then(Decision::rule_name))
        .arch(req.arch);
    match (outcome, reply) {
        (_, Some(r)) => {
            let boot = match decision.and_then(|d| d.handout.as_ref()) {
                Some(h) => format!(", boot {}", h.filename()),
                None => ", no boot file".to_string(),
            };
            let to = addr.map(|a| format!(" {a}")).unwrap_or_default();
            let client = if req.ipxe { "iPXE" } else { "firmware" };
            let detail = format!(
                "DHCPv6 {asked} → {}{to}{boot} ({client})",
                kind_label(r.kind)
            );
            e.outcome("ok", detail)
        }
        (Outcome6::Limited(limit, why), None) => {
            e.outcome(limit.label(), format!("DHCPv6 {asked}: no reply: {why}"))
        }
        (Outcome6::Ignored(why), None) => {
            e.outcome("ignored", format!("DHCPv6 {asked}: no reply: {why}"))
        }
        _ => e,
    }
}
