//! The IPv6 Router Solicitation responder (`[ipv6_ra]`, off by default).
//!
//! Why it exists: iPXE's `ifconf` (every `Configuring (net0 …)`) waits for all
//! its configurators, and IPv6 autoconfiguration only gives up after ~15 s of
//! unanswered Router Solicitations. On an IPv4-only boot network every boot
//! pays that, twice when chainloading. An advertisement with router lifetime
//! 0, M = 0 and O = 0 and no options that configure anything ends iPXE's wait
//! at once and changes nothing for any other host (see [`packet`]).
//!
//! With `managed`/`other` (IPv6 netboot) the advertisements set M/O and name
//! the boot subnets on-link ([`packet::Says`]): iPXE runs DHCPv6 only after
//! such an advertisement.
//!
//! - [`packet`]: RS/RA on the wire, validation (no I/O);
//! - [`schedule`]: delays, folding repeats, rate limits (no I/O);
//! - [`socket`]: the raw ICMPv6 socket and interface facts;
//! - [`probe`]: `pxed check`'s "is there an IPv6 router here?".
//!
//! The section is read at start only (like `[dhcp] listen`): the socket joins
//! ff02::2 on the configured interfaces once.

pub mod packet;
pub mod probe;
pub mod schedule;
pub mod socket;

use std::future::Future;
use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::Interest;
use tokio::time::Instant;

use crate::config::{Config, RaConfig, Subnet6};
use packet::{Says, ALL_NODES, ALL_ROUTERS, ROUTER_SOLICITATION};
use schedule::{Dest, Planned, Schedule, MAX_RA_DELAY};

/// Datagrams read per wake-up before pending answers are looked at again.
const READ_BATCH: usize = 64;

/// An interface the responder answers on.
#[derive(Debug, Clone)]
struct Watched {
    index: u32,
    name: String,
}

/// Opens the responder's socket on the configured interfaces and returns the
/// task that serves it, or `None` when `[ipv6_ra]` is off. Fails with one
/// clear line (missing interface, no `CAP_NET_RAW`).
pub fn start(config: &Config) -> anyhow::Result<Option<impl Future<Output = ()> + Send + 'static>> {
    let ra: &RaConfig = &config.ipv6_ra;
    if !ra.enabled {
        return Ok(None);
    }
    let mut watched = Vec::new();
    for name in &ra.interfaces {
        let index = nix::net::if_::if_nametoindex(name.as_str())
            .map_err(|_| anyhow::anyhow!("[ipv6_ra] interfaces: no interface {name:?} here"))?;
        watched.push(Watched {
            index,
            name: name.clone(),
        });
    }
    let socket = socket::open(ROUTER_SOLICITATION, false).map_err(|e| {
        let remedy = if e.kind() == std::io::ErrorKind::PermissionDenied {
            "it needs CAP_NET_RAW (root, or the shipped systemd unit)"
        } else {
            "check the kernel's IPv6 support"
        };
        anyhow::anyhow!("[ipv6_ra]: cannot open a raw ICMPv6 socket: {e}; {remedy}, or set [ipv6_ra] enabled = false")
    })?;
    for w in &watched {
        socket
            .join_multicast_v6(&ALL_ROUTERS, w.index)
            .with_context(|| format!("[ipv6_ra]: cannot join ff02::2 on {}", w.name))?;
    }
    socket.set_nonblocking(true).context("[ipv6_ra] socket")?;
    // tokio's readiness API for any datagram fd without `unsafe`: the type
    // says UDP, but only `readable`/`try_io` and the raw fd are used.
    let fd = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket))
        .context("[ipv6_ra] socket")?;
    let boot = Boot {
        managed: ra.managed,
        other: ra.other,
        subnets: config.dhcp.subnets6.clone(),
    };
    tracing::info!(
        interfaces = %ra.interfaces.join(","),
        unsolicited_interval_s = ra.interval.map_or(0, |i| i.as_secs()),
        managed = ra.managed,
        other = ra.other,
        "ipv6 ra responder listening (router lifetime 0; on-link prefixes only with managed or other; [ipv6_ra] is read at start only)"
    );
    Ok(Some(serve(fd, watched, ra.interval, boot)))
}

/// What the advertisements say for IPv6 netboot (`[ipv6_ra] managed`,
/// `other`), and the subnets whose prefixes they may name on-link; read at
/// start, like the rest of `[ipv6_ra]`.
struct Boot {
    managed: bool,
    other: bool,
    subnets: Vec<Subnet6>,
}

impl Boot {
    /// What an advertisement on `link` says: the flags and, with M or O, the
    /// IPv6 subnets that hold one of its addresses.
    fn says(&self, link: &socket::Link) -> Says {
        let on_link = if self.managed || self.other {
            self.subnets
                .iter()
                .filter(|s| link.global.iter().any(|a| s.contains(*a)))
                .map(|s| (s.network, s.prefix))
                .collect()
        } else {
            Vec::new()
        };
        Says {
            managed: self.managed,
            other: self.other,
            on_link,
        }
    }
}

async fn serve(
    fd: tokio::net::UdpSocket,
    watched: Vec<Watched>,
    interval: Option<Duration>,
    boot: Boot,
) {
    let mut schedule = Schedule::default();
    let mut buf = vec![0u8; 2048];
    let mut tick = interval.map(tokio::time::interval);
    loop {
        let next = schedule.next_due();
        let due = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let unsolicited = async {
            match tick.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ready = fd.readable() => match ready {
                Ok(()) => {
                    let raw = fd.as_raw_fd();
                    for _ in 0..READ_BATCH {
                        match fd.try_io(Interest::READABLE, || socket::recv(raw, &mut buf)) {
                            Ok(arrival) => receive(&buf, arrival, &watched, &mut schedule),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                tracing::debug!(error = %e, "ipv6 ra: receive error");
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "ipv6 ra: socket error; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            () = due => send_due(fd.as_raw_fd(), &mut schedule, &watched, &boot),
            () = unsolicited => {
                let now = Instant::now().into_std();
                for w in &watched {
                    schedule.unsolicited(now, w.index);
                }
            }
        }
    }
}

/// Validates one datagram and plans its answer.
fn receive(buf: &[u8], arrival: socket::Arrival, watched: &[Watched], schedule: &mut Schedule) {
    let metrics = crate::metrics::get();
    let Some(iface) = watched.iter().find(|w| w.index == arrival.ifindex) else {
        metrics.request("ra", "solicitation", "ignored");
        tracing::debug!(src = %arrival.source, ifindex = arrival.ifindex, "ipv6 ra: solicitation on an interface not in [ipv6_ra] interfaces, ignored");
        return;
    };
    let parsed = if arrival.truncated {
        Err(packet::Malformed::TooLong(buf.len()))
    } else {
        packet::parse_solicitation(&buf[..arrival.len], arrival.source, arrival.hop_limit)
    };
    let rs = match parsed {
        Ok(rs) => rs,
        Err(why) => {
            metrics.request("ra", "malformed", "dropped");
            tracing::debug!(src = %arrival.source, iface = %iface.name, "ipv6 ra: dropped: {why}");
            return;
        }
    };
    let delay = MAX_RA_DELAY.mul_f64(fastrand::f64());
    let now = Instant::now().into_std();
    let planned = schedule.solicited(now, iface.index, rs.source, rs.mac, delay);
    let outcome = match planned {
        Planned::Unicast(_) => "unicast",
        Planned::Multicast(_) => "multicast",
        Planned::Pending => "pending",
    };
    metrics.request("ra", "solicitation", outcome);
    tracing::debug!(
        mac = %mac_field(rs.mac),
        src = %arrival.source,
        iface = %iface.name,
        answer = outcome,
        "ipv6 ra: router solicitation"
    );
}

/// Sends every advertisement that is due, from each interface's link-local
/// address (re-read now: it may have appeared since the start, e.g. when the
/// first port of a bridge came up).
fn send_due(fd: std::os::fd::RawFd, schedule: &mut Schedule, watched: &[Watched], boot: &Boot) {
    let due = schedule.take_due(Instant::now().into_std());
    if due.is_empty() {
        return;
    }
    let metrics = crate::metrics::get();
    let links = socket::links();
    for s in due {
        let name = watched
            .iter()
            .find(|w| w.index == s.ifindex)
            .map_or("?", |w| w.name.as_str());
        let link = links.iter().find(|l| l.index == s.ifindex);
        let Some((source, link)) = link.and_then(|l| Some((l.link_local?, l))) else {
            metrics.request("ra", "advertisement", "no_link_local");
            tracing::debug!(
                iface = name,
                "ipv6 ra: no link-local address on the interface yet, advertisement not sent"
            );
            continue;
        };
        let (dest, kind) = match s.dest {
            Dest::Unicast(a) => (a, "unicast"),
            Dest::AllNodes => (ALL_NODES, "multicast"),
        };
        let bytes = packet::advertisement(link.mac, &boot.says(link));
        match socket::send(fd, &bytes, s.ifindex, source, dest) {
            Ok(()) => {
                metrics.request("ra", "advertisement", kind);
                tracing::debug!(mac = %mac_field(s.mac), iface = name, src = %source, dest = %dest, "ipv6 ra: router advertisement sent");
            }
            Err(e) => {
                metrics.request("ra", "advertisement", "failed");
                tracing::debug!(iface = name, dest = %dest, error = %e, "ipv6 ra: cannot send");
            }
        }
    }
}

fn mac_field(mac: Option<crate::core::Mac>) -> String {
    mac.map_or_else(|| "-".to_string(), |m| m.to_string())
}
