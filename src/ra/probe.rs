//! `pxed check`: does anything answer IPv6 Router Solicitations on the boot
//! interfaces? If nothing does and the responder is off, every iPXE boot
//! there waits ~15 s at `Configuring`, and the operator is told so.
//!
//! How: the probe does what iPXE does. It sends a Router Solicitation on each
//! boot interface (at 0 s and again at 1 s) and waits up to [`WAIT`] for a
//! valid advertisement on that interface. A routing table entry would not do:
//! a host with `accept_ra = 0` (most servers) has no RA-learned route even
//! where routers advertise, and a static default route says nothing about
//! advertisements. See docs/decisions.md.
//!
//! The boot interfaces are `[dhcp] interfaces`. When DHCP listens on every
//! interface pxed cannot tell the boot networks from the uplinks and does not
//! solicit on any: it says so instead.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::packet::{self, Advertisement, ALL_ROUTERS, ROUTER_ADVERTISEMENT};
use super::socket::{self, Link};
use crate::config::{Config, DhcpMode};

/// How long one interface is probed.
pub const WAIT: Duration = Duration::from_secs(2);
/// When the solicitation is repeated (a lost packet, a router still in its
/// random delay).
const RESEND_AFTER: Duration = Duration::from_secs(1);

/// What the probe found on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Router(Advertisement),
    /// Nothing answered within [`WAIT`].
    Silent,
    /// The probe could not run; why.
    Unavailable(String),
}

/// Something `pxed check` tells the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Warning(String),
    Note(String),
}

/// The IPv6-router findings for `config` (soliciting on its boot interfaces
/// when that is needed): the ~15 s iPXE stall without any advertisement, and
/// for IPv6 netboot (DHCPv6 on) an advertisement with M or O, without which
/// iPXE never asks DHCPv6 ("Nothing to boot", BRIEF "IPv6 netboot").
pub fn check(config: &Config) -> Vec<Finding> {
    let ra = &config.ipv6_ra;
    if ra.enabled {
        let mut out = vec![Finding::Note(format!(
            "[ipv6_ra] answers router solicitations on {} (M={} O={}; [ipv6_ra] is read at start: restart pxed to apply a change)",
            ra.interfaces.join(", "),
            u8::from(ra.managed),
            u8::from(ra.other),
        ))];
        let links = socket::links();
        for name in &ra.interfaces {
            if !links.iter().any(|l| &l.name == name) {
                out.push(Finding::Warning(format!(
                    "[ipv6_ra] interfaces: no interface {name:?} on this host: `pxed serve` will refuse to start"
                )));
            }
        }
        if config.dhcp.dhcpv6 && !ra.sets_m_or_o() {
            out.push(Finding::Warning(NO_M_OR_O.into()));
        }
        return out;
    }
    let v6_boot = config.dhcp.dhcpv6;
    // `enabled = false` written out is the operator's decision (about the
    // stall; IPv6 netboot still needs someone's M or O).
    if (ra.decided && !v6_boot) || config.dhcp.mode == DhcpMode::Off {
        return Vec::new();
    }
    if config.dhcp.interfaces.is_empty() {
        let mut out = vec![Finding::Note(
            "not checked for an IPv6 router: [dhcp] listens on every interface, so pxed cannot tell the boot networks; name them in [dhcp] interfaces, or decide with [ipv6_ra] enabled = true/false".into(),
        )];
        if v6_boot {
            out.push(Finding::Warning(format!(
                "{NO_M_OR_O} (or make sure a router on the boot networks advertises M or O)"
            )));
        }
        return out;
    }
    probe_all(&config.dhcp.interfaces)
        .into_iter()
        .filter_map(|(name, result)| finding(&name, result, v6_boot, ra.decided))
        .collect()
}

/// DHCPv6 is on and nothing will set M or O.
const NO_M_OR_O: &str = "IPv6 netboot: DHCPv6 is on but [ipv6_ra] sets neither `managed` nor `other`: iPXE asks DHCPv6 only after a router advertisement with M or O (\"Nothing to boot\" otherwise). Set [ipv6_ra] enabled = true and managed = true (docs/dhcp.md, IPv6)";

/// What one interface's probe means for the operator.
fn finding(name: &str, result: Probe, v6_boot: bool, decided: bool) -> Option<Finding> {
    match result {
        Probe::Router(a) if v6_boot && !(a.managed || a.other) => Some(Finding::Warning(format!(
            "IPv6 netboot on {name}: {a} sets neither M nor O, so iPXE never asks DHCPv6 (\"Nothing to boot\"): set M (or O) on that router, or [ipv6_ra] enabled = true and managed = true"
        ))),
        Probe::Router(_) => None,
        Probe::Silent if v6_boot => Some(Finding::Warning(format!(
            "IPv6 netboot on {name}: no router answered a router solicitation within {} s: iPXE asks DHCPv6 only after an advertisement with M or O. Set [ipv6_ra] enabled = true and managed = true",
            WAIT.as_secs()
        ))),
        Probe::Silent if decided => None,
        Probe::Silent => Some(Finding::Warning(format!(
            "no IPv6 router answered a router solicitation on {name} within {} s and [ipv6_ra] is off: iPXE waits ~15 s at every \"Configuring (net0 …)\" for IPv6 autoconfiguration (twice when chainloading undionly.kpxe). Set [ipv6_ra] enabled = true (advertisements that configure nothing; docs/deployment.md, \"Boot stalls at Configuring\"), or enabled = false to keep it off and silence this",
            WAIT.as_secs()
        ))),
        Probe::Unavailable(why) => Some(Finding::Note(format!(
            "not checked for an IPv6 router on {name}: {why}"
        ))),
    }
}

/// Probes every interface named, at once.
fn probe_all(names: &[String]) -> Vec<(String, Probe)> {
    let links = socket::links();
    let targets: Vec<(String, Option<Link>)> = names
        .iter()
        .map(|name| {
            (
                name.clone(),
                links.iter().find(|l| &l.name == name).cloned(),
            )
        })
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .iter()
            .map(|(name, link)| {
                scope.spawn(move || {
                    let probe = match link {
                        Some(l) => probe(l, WAIT),
                        None => Probe::Unavailable("no such interface on this host".into()),
                    };
                    (name.clone(), probe)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| (String::new(), Probe::Unavailable("probe failed".into())))
            })
            .collect()
    })
}

/// Solicits on `link` and waits up to `wait` for a valid advertisement
/// arriving on it.
pub fn probe(link: &Link, wait: Duration) -> Probe {
    let Some(source) = link.link_local else {
        return Probe::Unavailable(
            "it has no usable link-local address (down, no carrier, or IPv6 off)".into(),
        );
    };
    // Loop multicast back: a pxed responder on this very host counts.
    let s = match socket::open(ROUTER_ADVERTISEMENT, true) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Probe::Unavailable(
                "soliciting needs CAP_NET_RAW (run pxed check as root)".into(),
            )
        }
        Err(e) => return Probe::Unavailable(format!("cannot open a raw ICMPv6 socket: {e}")),
    };
    let rs = packet::solicitation(link.mac);
    let started = Instant::now();
    let mut sent = 0u32;
    let mut buf = [0u8; 2048];
    loop {
        let elapsed = started.elapsed();
        if elapsed >= wait {
            return Probe::Silent;
        }
        if elapsed >= RESEND_AFTER * sent {
            if let Err(e) = socket::send(s.as_raw_fd(), &rs, link.index, source, ALL_ROUTERS) {
                return Probe::Unavailable(format!("cannot send a router solicitation: {e}"));
            }
            sent += 1;
        }
        let until_resend = (RESEND_AFTER * sent).saturating_sub(elapsed);
        let timeout = until_resend
            .min(wait.saturating_sub(elapsed))
            .max(Duration::from_millis(1));
        if s.set_read_timeout(Some(timeout)).is_err() {
            return Probe::Unavailable("cannot wait on the socket".into());
        }
        let Ok(arrival) = socket::recv(s.as_raw_fd(), &mut buf) else {
            continue;
        };
        if arrival.ifindex != link.index || arrival.truncated {
            continue;
        }
        if let Ok(ra) =
            packet::parse_advertisement(&buf[..arrival.len], arrival.source, arrival.hop_limit)
        {
            return Probe::Router(ra);
        }
    }
}
