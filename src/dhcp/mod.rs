//! The DHCP adapter: full DHCP (addresses, leases, reservations) or ProxyDHCP
//! (boot information only) beside another server, as `[dhcp] mode` says. The
//! boot decision itself is `core::decide`; this module only speaks the protocol.
//!
//! - [`server`]: sockets, `IP_PKTINFO`, sending, interface addresses;
//! - [`packet`]: bytes → validated request (hostile input stops here);
//! - [`guard`]: rate limits per MAC, relay circuit and relay (flood protection);
//! - [`exchange`]: RFC 2131 per message, as small steps, no I/O;
//! - [`leases`]: the in-memory allocator and the SQLite store behind a trait;
//! - [`commit`]: group commit, and ACKs sent only after their commit.
//!
//! `start` binds everything and fails with one clear line before the daemon
//! reports itself ready; the receive loop never returns on a bad packet.

pub mod commit;
pub mod exchange;
pub mod guard;
pub mod leases;
pub mod packet;
pub mod server;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use dhcproto::Encodable;
use tokio::io::Interest;

use crate::config::{Config, DhcpMode, Shared};
use crate::core::decide;
use crate::events::{self, Event};
use commit::{Committer, Job};
use exchange::{Outcome, Place, Port};
use guard::Guard;
use leases::{LeaseStore, Leases, SqliteStore};
use server::{Interfaces, Outgoing, Sender};

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

/// Binds the DHCP sockets for the configured mode and returns the task that
/// serves them, or `None` when DHCP is off.
pub fn start(
    shared: &Shared,
) -> anyhow::Result<Option<impl std::future::Future<Output = ()> + Send + 'static>> {
    let config = shared.load_full();
    let dhcp = &config.dhcp;
    if dhcp.mode == DhcpMode::Off {
        return Ok(None);
    }
    let interfaces = Interfaces::read();
    let allowed =
        |name: &str| dhcp.interfaces.is_empty() || dhcp.interfaces.iter().any(|i| i == name);
    for name in &dhcp.interfaces {
        if !interfaces.all().any(|i| &i.name == name) {
            anyhow::bail!("[dhcp] interfaces: no interface {name:?} with an IPv4 address");
        }
    }
    let mut leases = Leases::default();
    let mut committer = None;
    let main = bind(dhcp.listen)?;
    let sender = Arc::new(Sender::new(&main).context("DHCP socket")?);
    if dhcp.mode == DhcpMode::Full {
        let on_link = dhcp.subnets.iter().any(|s| {
            interfaces
                .all()
                .filter(|i| allowed(&i.name))
                .any(|i| i.addrs.iter().any(|(a, _)| s.contains(*a)))
        });
        if !on_link {
            let nets: Vec<String> = dhcp
                .subnets
                .iter()
                .map(|s| format!("{}/{}", s.network, s.prefix))
                .collect();
            anyhow::bail!(
                "[dhcp] mode = \"full\": no interface{} has an address in {}; pxed hands out addresses only on a network it is on",
                if dhcp.interfaces.is_empty() { String::new() } else { format!(" of {:?}", dhcp.interfaces) },
                nets.join(", ")
            );
        }
        let mut store = SqliteStore::open(&dhcp.lease_db, dhcp.lease_fsync).with_context(|| {
            format!("cannot open the lease database {}", dhcp.lease_db.display())
        })?;
        let stored = store.load().context("cannot read the lease database")?;
        leases::spawn_checkpointer(&dhcp.lease_db).context("lease checkpoint thread")?;
        leases = Leases::from_stored(stored);
        tracing::info!(db = %dhcp.lease_db.display(), leases = leases.len(), fsync = dhcp.lease_fsync, "leases loaded");
        committer =
            Some(Committer::start(Box::new(store), sender.clone()).context("lease thread")?);
    }
    let proxy = match dhcp.mode {
        DhcpMode::Proxy => Some(bind(dhcp.proxy_listen)?),
        _ => None,
    };
    let stats = Arc::new(Stats::default());
    let main = tokio::net::UdpSocket::from_std(main).context("DHCP socket")?;
    tracing::info!(addr = %main.local_addr().context("DHCP socket")?, mode = ?dhcp.mode, "dhcp listening");
    let proxy = match proxy {
        Some(p) => {
            let sender = Arc::new(Sender::new(&p).context("proxy socket")?);
            let p = tokio::net::UdpSocket::from_std(p).context("proxy socket")?;
            tracing::info!(addr = %p.local_addr().context("proxy socket")?, "dhcp proxy listening");
            Some((p, sender))
        }
        None => None,
    };
    let shared = shared.clone();
    Ok(Some(async move {
        let mut tasks = tokio::task::JoinSet::new();
        if let Some((p, sender)) = proxy {
            tasks.spawn(serve(
                p,
                Port::Proxy,
                shared.clone(),
                Leases::default(),
                None,
                sender,
                stats.clone(),
            ));
        }
        tasks.spawn(serve(
            main,
            Port::Dhcp,
            shared,
            leases,
            committer,
            sender,
            stats.clone(),
        ));
        tasks.spawn(report(stats));
        while tasks.join_next().await.is_some() {}
    }))
}

fn bind(addr: SocketAddr) -> anyhow::Result<std::net::UdpSocket> {
    server::bind(addr).map_err(|e| crate::server::bind_error("DHCP ([dhcp] listen)", addr, e))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Datagrams read per wake-up before their ACKs go to the committer together.
const READ_BATCH: usize = 64;

/// The receive loop of one socket: read what is waiting (up to
/// [`READ_BATCH`]), answer each, and hand the ACKs that need a commit to the
/// committer in one go (one wake-up of the commit thread per batch).
async fn serve(
    socket: tokio::net::UdpSocket,
    port: Port,
    shared: Shared,
    mut leases: Leases,
    committer: Option<Committer>,
    sender: Arc<Sender>,
    stats: Arc<Stats>,
) {
    let fd = socket.as_raw_fd();
    let mut interfaces = Interfaces::read();
    // The table size is read at start; the rates follow reloads.
    let mut guard = Guard::new(shared.load().dhcp.limits.rate_table_size);
    let mut buf = vec![0u8; 4096];
    let mut jobs = Vec::new();
    loop {
        if let Err(e) = socket.readable().await {
            tracing::debug!(error = %e, "receive error");
            continue;
        }
        for _ in 0..READ_BATCH {
            let arrival = match socket.try_io(Interest::READABLE, || server::recv(fd, &mut buf)) {
                Ok(a) => a,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "receive error");
                    break;
                }
            };
            let cx = Receive {
                port,
                shared: &shared,
                sender: &sender,
                stats: &stats,
            };
            let state = State {
                leases: &mut leases,
                interfaces: &mut interfaces,
                guard: &mut guard,
            };
            if let Some(job) = cx.process(&buf, arrival, state) {
                jobs.push(job);
            }
        }
        if !jobs.is_empty() {
            match &committer {
                Some(c) => {
                    let n = jobs.len() as u64;
                    if !c.submit(std::mem::take(&mut jobs)) {
                        // The disk is slower than the network: these clients retry.
                        crate::metrics::get().dropped_n("dhcp", "commit_queue_full", n);
                    }
                }
                None => jobs.clear(),
            }
        }
    }
}

/// What the receive loop owns and each datagram may change.
struct State<'a> {
    leases: &'a mut Leases,
    interfaces: &'a mut Interfaces,
    guard: &'a mut Guard,
}

/// What the receive loop needs to answer one datagram.
struct Receive<'a> {
    port: Port,
    shared: &'a Shared,
    sender: &'a Sender,
    stats: &'a Stats,
}

impl Receive<'_> {
    /// Parses, decides and sends one datagram; returns the job to commit when
    /// the answer depends on a lease change.
    fn process(&self, buf: &[u8], arrival: server::Arrival, state: State) -> Option<Job> {
        let State {
            leases,
            interfaces,
            guard,
        } = state;
        let stats = self.stats;
        stats.received.fetch_add(1, Ordering::Relaxed);
        let metrics = crate::metrics::get();
        let malformed = |why: &dyn std::fmt::Display| {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            metrics.request("dhcp", "malformed", "dropped");
            metrics.dropped("dhcp", "malformed");
            tracing::debug!(src = %arrival.src, len = arrival.len, "dropped: {why}");
        };
        if arrival.truncated {
            malformed(&packet::Rejected::Truncated);
            return None;
        }
        let req = match packet::parse(&buf[..arrival.len]) {
            Ok(r) => r,
            Err(why) => {
                malformed(&why);
                return None;
            }
        };
        let config = self.shared.load();
        if let Err(over) = guard.admit(
            &config.dhcp.limits,
            req.mac,
            req.giaddr(),
            req.circuit(),
            Instant::now(),
        ) {
            stats.limited.fetch_add(1, Ordering::Relaxed);
            metrics.dropped("dhcp", over.label());
            tracing::debug!(mac = %req.mac, kind = ?req.kind, giaddr = %req.giaddr(), "dropped: over the {} limit", over.label());
            return None;
        }
        interfaces.refresh(arrival.ifindex);
        let iface = interfaces.get(arrival.ifindex);
        if let Some(i) = iface {
            if !config.dhcp.interfaces.is_empty() && !config.dhcp.interfaces.contains(&i.name) {
                stats.ignored.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(mac = %req.mac, iface = %i.name, "ignored: not one of [dhcp] interfaces");
                return None;
            }
        }
        let (server_ip, subnet) = exchange::locate(&config, iface, arrival.local, req.giaddr());
        let place = Place {
            server: server_ip,
            subnet,
            ifindex: arrival.ifindex,
            port: self.port,
            src: arrival.src,
        };
        match exchange::handle(&config, leases, &place, &req, now()) {
            Outcome::Ignore(why) => {
                stats.ignored.fetch_add(1, Ordering::Relaxed);
                metrics.request("dhcp", kind_name(Some(req.kind)), "ignored");
                tracing::debug!(mac = %req.mac, kind = ?req.kind, "no reply: {why}");
                events::record_with(|| {
                    event(&config, &req, None, &place).outcome(
                        "ignored",
                        format!("{}: no reply: {why}", kind_name(Some(req.kind))),
                    )
                });
                None
            }
            Outcome::Limited(limit, why) => {
                stats.limited.fetch_add(1, Ordering::Relaxed);
                metrics.request("dhcp", kind_name(Some(req.kind)), "ignored");
                metrics.dropped("dhcp", limit.label());
                tracing::debug!(mac = %req.mac, kind = ?req.kind, "no reply: {why}");
                // On the machine's timeline (a full pool is what an operator
                // looks for); packets over a rate limit are not recorded, a
                // flood would only fill the event queue.
                events::record_with(|| {
                    event(&config, &req, None, &place).outcome(
                        limit.label(),
                        format!("{}: no reply: {why}", kind_name(Some(req.kind))),
                    )
                });
                None
            }
            Outcome::Commit(ops) => {
                metrics.request("dhcp", kind_name(Some(req.kind)), "stored");
                let event = events::enabled().then(|| {
                    event(&config, &req, None, &place).outcome(
                        "ok",
                        format!("{}: lease updated", kind_name(Some(req.kind))),
                    )
                });
                Some(Job {
                    ops,
                    reply: None,
                    event,
                })
            }
            Outcome::Reply {
                msg,
                dest,
                ifindex,
                commit,
            } => {
                let bytes = match msg.to_vec() {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot encode a reply");
                        return None;
                    }
                };
                tracing::debug!(mac = %req.mac, kind = ?msg.opts().msg_type(), yiaddr = %msg.yiaddr(), dest = %dest, "reply");
                stats.replies.fetch_add(1, Ordering::Relaxed);
                metrics.request(
                    "dhcp",
                    kind_name(Some(req.kind)),
                    kind_name(msg.opts().msg_type()),
                );
                let out = Outgoing {
                    bytes,
                    dest,
                    ifindex,
                    src: server_ip,
                };
                let event = events::enabled().then(|| event(&config, &req, Some(&msg), &place));
                if commit.is_empty() {
                    if let Some(e) = event {
                        events::record(e);
                    }
                    if let Err(e) = self.sender.send(&out) {
                        tracing::debug!(dest = %dest, error = %e, "cannot send reply");
                    }
                    None
                } else {
                    Some(Job {
                        ops: commit,
                        reply: Some(out),
                        event,
                    })
                }
            }
        }
    }
}

/// The boot event for one message: who asked (MAC, firmware, the rule its MAC
/// and arch match) and, with a reply, what it was given.
fn event(
    config: &Config,
    req: &packet::Request,
    reply: Option<&dhcproto::v4::Message>,
    place: &Place,
) -> Event {
    let rule = decide::rule_for(&config.policy, &req.boot).map(|r| r.name.as_str());
    let asked = kind_name(Some(req.kind));
    let given = reply.map(|m| m.yiaddr()).filter(|ip| !ip.is_unspecified());
    let ip = given
        .or(Some(req.ciaddr()).filter(|ip| !ip.is_unspecified()))
        .or(Some(*place.src.ip()).filter(|ip| !ip.is_unspecified()));
    let mut e = Event::new(events::Stage::Dhcp, "ok", asked)
        .mac(Some(req.mac))
        .ip(ip.map(std::net::IpAddr::V4))
        .rule(rule)
        .arch(req.boot.arch);
    if let Some(m) = reply {
        let kind = kind_name(m.opts().msg_type());
        let boot = match m.opts().get(dhcproto::v4::OptionCode::BootfileName) {
            Some(dhcproto::v4::DhcpOption::BootfileName(f)) => {
                format!(", boot {}", String::from_utf8_lossy(f))
            }
            _ => ", no boot file".to_string(),
        };
        let to = given.map(|ip| format!(" {ip}")).unwrap_or_default();
        let client = if req.boot.ipxe { "iPXE" } else { "firmware" };
        e.detail = format!("{asked} → {kind}{to}{boot} ({client})");
        if kind == "nak" {
            e.outcome = "nak";
        }
    }
    e
}

/// A message type as a metrics label (`pxed_requests{protocol="dhcp",
/// endpoint="discover",outcome="offer"}`).
fn kind_name(kind: Option<dhcproto::v4::MessageType>) -> &'static str {
    use dhcproto::v4::MessageType as M;
    match kind {
        Some(M::Discover) => "discover",
        Some(M::Offer) => "offer",
        Some(M::Request) => "request",
        Some(M::Decline) => "decline",
        Some(M::Ack) => "ack",
        Some(M::Nak) => "nak",
        Some(M::Release) => "release",
        Some(M::Inform) => "inform",
        _ => "other",
    }
}

async fn report(stats: Arc<Stats>) {
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
                "dhcp packet counters"
            );
            last = dropped;
        }
    }
}
