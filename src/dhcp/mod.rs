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

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::Path;
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
use leases::{LeaseOp, LeaseStore, Leases, SqliteStore};
use packet::Request;
use server::{Arrival, Iface, Interfaces, Outgoing, Sender};

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
    // Set when the lease database could not be opened yet.
    let mut lease_db = None;
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
        match open_leases(&dhcp.lease_db, dhcp.lease_fsync) {
            Ok((store, stored)) => {
                leases = stored;
                committer = Some(
                    Committer::start(Box::new(store), sender.clone()).context("lease thread")?,
                );
            }
            Err(e) => {
                // HTTP and TFTP need no lease database: they start; DHCP
                // waits for it (see `wait_for_leases`).
                tracing::error!(
                    "{e:#}; DHCP answers nobody until it can record leases (pxed never hands out an address it could not keep); HTTP and TFTP are serving; retrying every {} s",
                    LEASE_DB_RETRY.as_secs()
                );
                lease_db = Some((dhcp.lease_db.clone(), dhcp.lease_fsync));
            }
        }
    }
    let proxy = match dhcp.mode {
        DhcpMode::Proxy => Some(bind(dhcp.proxy_listen)?),
        _ => None,
    };
    let stats = Arc::new(Stats::default());
    let main = tokio::net::UdpSocket::from_std(main).context("DHCP socket")?;
    tracing::info!(addr = %main.local_addr().context("DHCP socket")?, mode = dhcp.mode.name(), "dhcp listening");
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
        if let Some((path, fsync)) = lease_db {
            let (store, stored) = wait_for_leases(&path, fsync).await;
            leases = stored;
            match Committer::start(Box::new(store), sender.clone()) {
                Ok(c) => committer = Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the lease thread; DHCP stops");
                    return;
                }
            }
            // What queued meanwhile is stale: its clients have retransmitted
            // (or given up) since. Answering it would bind leases for
            // requests nobody waits for any more.
            let mut buf = [0u8; 1500];
            let mut stale = 0u64;
            while main.try_recv(&mut buf).is_ok() {
                stale += 1;
            }
            tracing::info!(dropped = stale, "DHCP answering: requests queued while the lease database was unavailable are dropped");
        }
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

/// How often DHCP tries again to open a lease database it could not open.
const LEASE_DB_RETRY: Duration = Duration::from_secs(5);

/// Opens the lease database and reads every lease in it.
fn open_leases(path: &Path, fsync: bool) -> anyhow::Result<(SqliteStore, Leases)> {
    let mut store = SqliteStore::open(path, fsync)
        .with_context(|| format!("cannot open the lease database {}", path.display()))?;
    let stored = store
        .load()
        .with_context(|| format!("cannot read the lease database {}", path.display()))?;
    leases::spawn_checkpointer(path).context("lease checkpoint thread")?;
    let leases = Leases::from_stored(stored);
    tracing::info!(db = %path.display(), leases = leases.len(), fsync, "leases loaded");
    Ok((store, leases))
}

/// Retries [`open_leases`] until it works, saying so when the reason changes.
/// Meanwhile the DHCP sockets are bound but not read: requests queue or are
/// dropped by the kernel, and clients retransmit.
async fn wait_for_leases(path: &Path, fsync: bool) -> (SqliteStore, Leases) {
    let mut last = String::new();
    loop {
        tokio::time::sleep(LEASE_DB_RETRY).await;
        match open_leases(path, fsync) {
            Ok(opened) => return opened,
            Err(e) => {
                let why = format!("{e:#}");
                if why != last {
                    tracing::error!("{why}; DHCP still waits for the lease database");
                    last = why;
                }
            }
        }
    }
}

fn bind(addr: SocketAddr) -> anyhow::Result<std::net::UdpSocket> {
    server::bind(addr).map_err(|e| crate::listen::bind_error("DHCP ([dhcp] listen)", addr, e))
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
    let mut publish = tokio::time::interval(POOL_GAUGES_EVERY);
    let owns_pool = committer.is_some();
    loop {
        tokio::select! {
            readable = socket.readable() => {
                if let Err(e) = readable {
                    tracing::debug!(error = %e, "receive error");
                    continue;
                }
            }
            _ = publish.tick(), if owns_pool => {
                publish_pool_use(&shared, &leases);
                continue;
            }
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

/// How often the pool-use gauges are brought up to date.
const POOL_GAUGES_EVERY: Duration = Duration::from_secs(5);

fn publish_pool_use(shared: &Shared, leases: &Leases) {
    let config = shared.load();
    let metrics = crate::metrics::get();
    for subnet in &config.dhcp.subnets {
        let Some((first, last)) = subnet.pool else {
            continue;
        };
        let name = format!("{}/{}", subnet.network, subnet.prefix);
        let usage = leases.pool_use(first, last, now());
        let size = u64::from(u32::from(last).saturating_sub(u32::from(first))) + 1;
        metrics.pool_size(&name, size);
        for (state, n) in [
            ("bound", usage.bound),
            ("offered", usage.offered),
            ("declined", usage.declined),
        ] {
            metrics.pool(&name, state, n);
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
    /// Answers one datagram ([`respond`]), counts, logs and records what
    /// happened and sends the reply; returns the job to commit when the reply
    /// depends on a lease change.
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
        let config = self.shared.load();
        interfaces.refresh(arrival.ifindex);
        let iface = interfaces.get(arrival.ifindex);
        let datagram = &buf[..arrival.len.min(buf.len())];
        let clock = (now(), Instant::now());
        match respond(
            &config, leases, guard, iface, &arrival, self.port, datagram, clock,
        ) {
            Response::Malformed(why) => {
                malformed(&why);
                None
            }
            Response::Limited {
                req,
                limit,
                why,
                on_timeline,
            } => {
                stats.limited.fetch_add(1, Ordering::Relaxed);
                metrics.request("dhcp", kind_name(Some(req.kind)), "ignored");
                metrics.dropped("dhcp", limit);
                tracing::debug!(mac = %req.mac, kind = kind_name(Some(req.kind)), giaddr = %req.giaddr(), "dropped: {why}");
                if on_timeline {
                    events::record_with(|| {
                        event(&config, &req, arrival.src, None).outcome(
                            limit,
                            format!("{}: no reply: {why}", kind_name(Some(req.kind))),
                        )
                    });
                }
                None
            }
            Response::Silent { req, why } => {
                stats.ignored.fetch_add(1, Ordering::Relaxed);
                metrics.request("dhcp", kind_name(Some(req.kind)), "ignored");
                tracing::debug!(mac = %req.mac, kind = kind_name(Some(req.kind)), "no reply: {why}");
                events::record_with(|| {
                    event(&config, &req, arrival.src, None).outcome(
                        "ignored",
                        format!("{}: no reply: {why}", kind_name(Some(req.kind))),
                    )
                });
                None
            }
            Response::Unencodable { req, error } => {
                tracing::error!(mac = %req.mac, error = %error, "cannot encode a reply");
                None
            }
            Response::Store { req, ops } => {
                metrics.request("dhcp", kind_name(Some(req.kind)), "stored");
                let event = events::enabled().then(|| {
                    event(&config, &req, arrival.src, None).outcome(
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
            Response::Reply {
                req,
                given,
                out,
                commit,
            } => {
                tracing::debug!(mac = %req.mac, kind = kind_name(given.kind), yiaddr = %given.yiaddr, dest = %out.dest, "reply");
                stats.replies.fetch_add(1, Ordering::Relaxed);
                metrics.request("dhcp", kind_name(Some(req.kind)), kind_name(given.kind));
                let event =
                    events::enabled().then(|| event(&config, &req, arrival.src, Some(&given)));
                if commit.is_empty() {
                    if let Some(e) = event {
                        events::record(e);
                    }
                    if let Err(e) = self.sender.send(&out) {
                        tracing::debug!(dest = %out.dest, error = %e, "cannot send reply");
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
fn event(config: &Config, req: &Request, src: SocketAddrV4, given: Option<&Given>) -> Event {
    let ovr = crate::machines::lookup(req.mac).map(|a| a.boot);
    let rule = decide::rule_for(&config.policy, &req.boot, ovr.as_ref()).map(|r| r.name.as_str());
    let asked = kind_name(Some(req.kind));
    let yiaddr = given.map(|g| g.yiaddr).filter(|ip| !ip.is_unspecified());
    let ip = yiaddr
        .or(Some(req.ciaddr()).filter(|ip| !ip.is_unspecified()))
        .or(Some(*src.ip()).filter(|ip| !ip.is_unspecified()));
    let mut e = Event::new(events::Stage::Dhcp, "ok", asked)
        .mac(Some(req.mac))
        .ip(ip.map(std::net::IpAddr::V4))
        .rule(rule)
        .arch(req.boot.arch);
    if let Some(g) = given {
        let kind = kind_name(g.kind);
        let boot = match &g.boot {
            Some(file) => format!(", boot {file}"),
            None => ", no boot file".to_string(),
        };
        let to = yiaddr.map(|ip| format!(" {ip}")).unwrap_or_default();
        let client = if req.boot.ipxe { "iPXE" } else { "firmware" };
        e.detail = format!("{asked} → {kind}{to}{boot} ({client})");
        if kind == "nak" {
            e.outcome = "nak";
        }
    }
    e
}

/// What a reply gives the client, for logs and boot events.
#[derive(Debug)]
pub struct Given {
    pub kind: Option<dhcproto::v4::MessageType>,
    pub yiaddr: Ipv4Addr,
    /// Option 67, the boot file or URL.
    pub boot: Option<String>,
}

/// The answer to one datagram, decided without I/O.
#[derive(Debug)]
pub enum Response {
    /// Not a DHCP request pxed can read: dropped and counted.
    Malformed(packet::Rejected),
    /// Over a flood-protection limit (a rate, or the addresses a MAC or a
    /// relay circuit may hold): dropped, counted by `limit`.
    Limited {
        req: Box<Request>,
        limit: &'static str,
        why: String,
        /// Recorded as a boot event: a full pool or a per-machine cap is what
        /// an operator looks for on a machine's timeline; packets over a rate
        /// limit are not, a flood would only fill the event queue.
        on_timeline: bool,
    },
    /// A valid request that gets no answer, and why (logged at debug).
    Silent { req: Box<Request>, why: String },
    /// No answer, but lease changes to store (DECLINE, RELEASE).
    Store {
        req: Box<Request>,
        ops: Vec<LeaseOp>,
    },
    /// The reply could not be encoded (a bug in pxed, not the client's fault).
    Unencodable { req: Box<Request>, error: String },
    /// A reply to send once `commit` is durable (at once when it is empty).
    Reply {
        req: Box<Request>,
        given: Given,
        out: Outgoing,
        commit: Vec<LeaseOp>,
    },
}

/// Everything pxed does with a received datagram short of touching a socket
/// or the database: parse and validate it, spend its rate budgets, check the
/// receiving interface, find the subnet, run the RFC 2131 exchange against
/// the lease table and the boot decision, and encode the reply. `iface` is
/// the interface it arrived on (`None` if unknown); `clock` is the time in
/// Unix seconds (leases) and as an `Instant` (rates). The receive loop and the
/// fuzz target both call this, so the fuzzer exercises exactly what a hostile
/// packet reaches.
#[allow(clippy::too_many_arguments)]
pub fn respond(
    config: &Config,
    leases: &mut Leases,
    guard: &mut Guard,
    iface: Option<&Iface>,
    arrival: &Arrival,
    port: Port,
    datagram: &[u8],
    clock: (u64, Instant),
) -> Response {
    let req = match packet::parse(datagram) {
        Ok(r) => Box::new(r),
        Err(why) => return Response::Malformed(why),
    };
    if let Err(over) = guard.admit(
        &config.dhcp.limits,
        req.mac,
        req.giaddr(),
        req.circuit(),
        clock.1,
    ) {
        let limit = over.label();
        let why = format!("over the {limit} limit");
        return Response::Limited {
            req,
            limit,
            why,
            on_timeline: false,
        };
    }
    if let Some(i) = iface {
        if !config.dhcp.interfaces.is_empty() && !config.dhcp.interfaces.contains(&i.name) {
            let why = format!("{} is not one of [dhcp] interfaces", i.name);
            return Response::Silent { req, why };
        }
    }
    let (server_ip, subnet) = exchange::locate(config, iface, arrival.local, req.giaddr());
    let place = Place {
        server: server_ip,
        subnet,
        ifindex: arrival.ifindex,
        port,
        src: arrival.src,
    };
    match exchange::handle(config, leases, &place, &req, clock.0) {
        Outcome::Ignore(why) => Response::Silent { req, why },
        Outcome::Limited(limit, why) => Response::Limited {
            req,
            limit: limit.label(),
            why,
            on_timeline: true,
        },
        Outcome::Commit(ops) => Response::Store { req, ops },
        Outcome::Reply {
            msg,
            dest,
            ifindex,
            commit,
        } => match msg.to_vec() {
            Ok(bytes) => Response::Reply {
                given: Given {
                    kind: msg.opts().msg_type(),
                    yiaddr: msg.yiaddr(),
                    boot: match msg.opts().get(dhcproto::v4::OptionCode::BootfileName) {
                        Some(dhcproto::v4::DhcpOption::BootfileName(f)) => {
                            Some(String::from_utf8_lossy(f).into_owned())
                        }
                        _ => None,
                    },
                },
                req,
                out: Outgoing {
                    bytes,
                    dest,
                    ifindex,
                    src: server_ip,
                },
                commit,
            },
            Err(e) => Response::Unencodable {
                req,
                error: e.to_string(),
            },
        },
    }
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
