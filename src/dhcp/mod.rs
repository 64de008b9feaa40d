//! The DHCP adapter: full DHCP (addresses, leases, reservations) or ProxyDHCP
//! (boot information only) beside another server, as `[dhcp] mode` says. The
//! boot decision itself is `core::decide`; this module only speaks the protocol.
//!
//! One datagram goes through, in order:
//! - [`server`]: sockets, `IP_PKTINFO`, sending, interface addresses;
//! - [`respond`](mod@respond): the pure entry point, which calls
//!   - [`packet`]: bytes → validated request (hostile input stops here), over
//!     [`options`], the one walk over length-prefixed option data;
//!   - [`guard`]: rate limits per MAC, relay circuit and relay (flood protection);
//!   - `core::decide`: the boot [`Decision`](crate::core::decide::Decision), once;
//!   - [`exchange`]: RFC 2131 per message, as small steps, no I/O;
//!
//!   and returns one [`outcome::Outcome`];
//! - [`report`]: counters, log, metrics and boot event from that outcome;
//! - [`commit`]: group commit to the [`leases`] store, and ACKs sent only
//!   after their commit.
//!
//! This file is the wiring: `start` binds everything and fails with one clear
//! line before the daemon reports itself ready; the receive loop never
//! returns on a bad packet.

pub mod batch;
pub mod commit;
pub mod exchange;
pub mod guard;
pub mod leases;
pub mod options;
pub mod outcome;
pub mod packet;
pub mod report;
pub mod respond;
pub mod server;
pub mod v6;

pub use outcome::Outcome;
pub use respond::{respond, Answer, Clock, Received};

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::io::Interest;

use crate::config::{DhcpConfig, DhcpMode, Shared};
use commit::{Committer, Job, Outputs};
use exchange::Port;
use guard::Guard;
use leases::{LeaseStore, Leases, Leases6, OpenStore};
use report::Stats;
use server::{Interfaces, Sender};

/// Binds the DHCP sockets for the configured mode and returns the task that
/// serves them, or `None` when DHCP is off.
pub fn start(
    shared: &Shared,
    open: OpenStore,
) -> anyhow::Result<Option<impl std::future::Future<Output = ()> + Send + 'static>> {
    let config = shared.load_full();
    let dhcp = &config.dhcp;
    if dhcp.mode == DhcpMode::Off {
        return Ok(None);
    }
    let interfaces = Interfaces::read();
    for name in &dhcp.interfaces {
        if !interfaces.all().any(|i| &i.name == name) {
            anyhow::bail!("[dhcp] interfaces: no interface {name:?} with an address");
        }
    }
    let main = bind(dhcp.listen)?;
    let sender = Arc::new(Sender::new(&main).context("DHCP socket")?);
    // Full mode: the lease table and its store, or the reason they wait.
    let mut store = None;
    if dhcp.mode == DhcpMode::Full {
        check_on_link(dhcp, &interfaces)?;
        // PostgreSQL blocks on the runtime for its first read.
        let opened = tokio::task::block_in_place(|| open_leases(dhcp, &open));
        store = Some(opened.map_err(|e| {
            let retry = dhcp.clone();
            // HTTP and TFTP need no lease database: they start; DHCP
            // waits for it (see `wait_for_leases`).
            tracing::error!(
                "{e:#}; DHCP answers nobody until it can record leases (pxed never hands out an address it could not keep); HTTP and TFTP are serving; retrying every {} s",
                LEASE_DB_RETRY.as_secs()
            );
            retry
        }));
    }
    let proxy = match dhcp.mode {
        DhcpMode::Proxy => Some(bind(dhcp.proxy_listen)?),
        _ => None,
    };
    let main = tokio::net::UdpSocket::from_std(main).context("DHCP socket")?;
    tracing::info!(addr = %main.local_addr().context("DHCP socket")?, mode = dhcp.mode.name(), "dhcp listening");
    let proxy = match proxy {
        Some(p) => {
            let sender = Arc::new(Sender::new(&p).context("proxy socket")?);
            let p = tokio::net::UdpSocket::from_std(p).context("proxy socket")?;
            tracing::info!(addr = %p.local_addr().context("proxy socket")?, "dhcp proxy listening");
            Some(Socket {
                socket: p,
                port: Port::Proxy,
                sender,
            })
        }
        None => None,
    };
    let main = Socket {
        socket: main,
        port: Port::Dhcp,
        sender,
    };
    let v6 = v6::bind(dhcp, &interfaces)?;
    let binl6 = match &v6 {
        Some(s) => v6::bind_binl(dhcp, s)?,
        None => None,
    };
    let shared = shared.clone();
    let sockets = Sockets {
        main,
        proxy,
        v6,
        binl6,
    };
    Ok(Some(run(sockets, store, shared, open)))
}

/// The lease store and the tables read from it (IPv4, DHCPv6).
type Store = (Box<dyn LeaseStore>, Leases, Leases6);

/// Every socket DHCP serves.
struct Sockets {
    main: Socket,
    proxy: Option<Socket>,
    v6: Option<v6::Socket6>,
    /// DHCPv6 proxy mode's port 4011 ([`v6::bind_binl`]).
    binl6: Option<v6::Socket6>,
}

/// A bound DHCP socket and what answers on it.
struct Socket {
    socket: tokio::net::UdpSocket,
    port: Port,
    sender: Arc<Sender>,
}

/// Serves the sockets; in full mode first waits for the lease store when it
/// could not be opened at start (`store` is `Some(Err(the config naming it))`).
async fn run(
    sockets: Sockets,
    store: Option<Result<Store, DhcpConfig>>,
    shared: Shared,
    open: OpenStore,
) {
    let Sockets {
        main,
        proxy,
        v6,
        binl6,
    } = sockets;
    let stats = Arc::new(Stats::default());
    let (mut leases, mut leases6) = (Leases::default(), Leases6::default());
    let mut committer = None;
    // Rows of the shared database the tables learn (other servers' writes,
    // holders of refused bindings).
    let (learned, learn) = tokio::sync::mpsc::channel(LEARNED_QUEUE);
    let (learned6, learn6) = tokio::sync::mpsc::channel(LEARNED_QUEUE);
    if let Some(opened) = store {
        let (store, table, table6) = match opened {
            Ok(opened) => opened,
            Err(dhcp) => {
                let opened = wait_for_leases(&dhcp, &open).await;
                drop_stale(&main.socket);
                opened
            }
        };
        (leases, leases6) = (table, table6);
        store.follow(learned.clone());
        let to = Outputs {
            sender: main.sender.clone(),
            learned,
            v6: v6.as_ref().map(|s| (s.sender.clone(), learned6)),
        };
        match Committer::start(store, to) {
            Ok(c) => committer = Some(c),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the lease thread; DHCP stops");
                return;
            }
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(p) = proxy {
        tasks.spawn(serve(
            p,
            shared.clone(),
            Leases::default(),
            None,
            stats.clone(),
            None,
        ));
    }
    if let Some(s) = binl6 {
        // Proxy mode: no leases, no commits.
        tasks.spawn(v6::serve(s, shared.clone(), Leases6::default(), None, None));
    }
    if let Some(s) = v6 {
        let learn6 = committer.is_some().then_some(learn6);
        let c = committer.clone();
        tasks.spawn(v6::serve(s, shared.clone(), leases6, c, learn6));
    }
    tasks.spawn(serve(
        main,
        shared,
        leases,
        committer,
        stats.clone(),
        Some(learn),
    ));
    tasks.spawn(report::every_minute(stats, "dhcp"));
    while tasks.join_next().await.is_some() {}
}

/// Full mode hands out addresses only on a network pxed is on.
fn check_on_link(dhcp: &DhcpConfig, interfaces: &Interfaces) -> anyhow::Result<()> {
    let allowed =
        |name: &str| dhcp.interfaces.is_empty() || dhcp.interfaces.iter().any(|i| i == name);
    let mut served = interfaces.all().filter(|i| allowed(&i.name));
    let on_link = served.any(|i| {
        let v4 = i.addrs.iter().any(|(a, _)| dhcp.subnet_for(*a).is_some());
        v4 || i.addrs6.iter().any(|a| dhcp.subnet6_for(*a).is_some())
    });
    if on_link {
        return Ok(());
    }
    let v4 = dhcp
        .subnets
        .iter()
        .map(|s| format!("{}/{}", s.network, s.prefix));
    let v6 = dhcp
        .subnets6
        .iter()
        .map(|s| format!("{}/{}", s.network, s.prefix));
    let nets: Vec<String> = v4.chain(v6).collect();
    anyhow::bail!(
        "[dhcp] mode = \"full\": no interface{} has an address in {}; pxed hands out addresses only on a network it is on",
        if dhcp.interfaces.is_empty() { String::new() } else { format!(" of {:?}", dhcp.interfaces) },
        nets.join(", ")
    )
}

/// What queued while the lease store was unavailable is stale: its clients
/// have retransmitted (or given up) since. Answering it would bind leases for
/// requests nobody waits for any more.
fn drop_stale(socket: &tokio::net::UdpSocket) {
    let mut buf = [0u8; 1500];
    let mut stale = 0u64;
    while socket.try_recv(&mut buf).is_ok() {
        stale += 1;
    }
    tracing::info!(
        dropped = stale,
        "DHCP answering: requests queued while the lease database was unavailable are dropped"
    );
}

/// How often DHCP tries again to open a lease database it could not open.
const LEASE_DB_RETRY: Duration = Duration::from_secs(5);

/// Batches of learned rows waiting for the receive loop.
const LEARNED_QUEUE: usize = 64;

/// Opens the lease store and reads every lease in it.
fn open_leases(dhcp: &DhcpConfig, open: &OpenStore) -> anyhow::Result<Store> {
    let opened = open(dhcp)?;
    let spread = opened.store.spread();
    let table = Leases::from_stored(opened.leases).starting_at(spread);
    let table6 = Leases6::from_stored(opened.leases6).starting_at(spread);
    tracing::info!(db = %opened.store.describe(), leases = table.len(), leases6 = table6.len(), fsync = dhcp.lease_fsync, "leases loaded");
    Ok((opened.store, table, table6))
}

/// Retries [`open_leases`] until it works, saying so when the reason changes.
/// Meanwhile the DHCP sockets are bound but not read: requests queue or are
/// dropped by the kernel, and clients retransmit. The store is restart-only:
/// the config it was named in at start is the one retried.
async fn wait_for_leases(dhcp: &DhcpConfig, open: &OpenStore) -> Store {
    let mut last = String::new();
    loop {
        tokio::time::sleep(LEASE_DB_RETRY).await;
        // A PostgreSQL store blocks on the runtime: not from one of its threads.
        let (d, o) = (dhcp.clone(), open.clone());
        let opened = tokio::task::spawn_blocking(move || open_leases(&d, &o)).await;
        match opened.unwrap_or_else(|e| Err(anyhow::anyhow!("{e}"))) {
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

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Datagrams read per wake-up before their ACKs go to the committer together.
pub(crate) const READ_BATCH: usize = batch::BATCH;

/// The receive loop of one socket: read what is waiting (up to
/// [`READ_BATCH`], one `recvmmsg`), answer each ([`respond`](respond::respond),
/// then [`report::dispatch`]), send the replies that need no commit together
/// (`sendmmsg`), and hand the ACKs that need a commit to the committer in
/// one go.
async fn serve(
    s: Socket,
    shared: Shared,
    mut leases: Leases,
    committer: Option<Committer>,
    stats: Arc<Stats>,
    mut learn: Option<tokio::sync::mpsc::Receiver<Vec<leases::Lease>>>,
) {
    let fd = s.socket.as_raw_fd();
    let mut interfaces = Interfaces::read();
    // The table size is read at start; the rates follow reloads.
    let mut guard = Guard::new(shared.load().dhcp.limits.rate_table_size);
    let mut inbox = batch::Inbox::default();
    let mut replies = Vec::with_capacity(READ_BATCH);
    let mut jobs = Vec::new();
    let mut publish = tokio::time::interval(POOL_GAUGES_EVERY);
    let owns_pool = committer.is_some();
    loop {
        tokio::select! {
            readable = s.socket.readable() => {
                if let Err(e) = readable {
                    tracing::debug!(error = %e, "receive error");
                    continue;
                }
            }
            _ = publish.tick(), if owns_pool => {
                publish_pool_use(&shared, &leases);
                continue;
            }
            Some(rows) = next_learned(&mut learn) => {
                let now = now();
                for row in rows {
                    leases.learn(row, now);
                }
                continue;
            }
        }
        let Some(n) = read_batch(&s, &mut inbox) else {
            continue;
        };
        for i in 0..n {
            let (arrival, datagram) = inbox.get(i);
            let config = shared.load();
            let answer = if arrival.truncated {
                Answer {
                    req: None,
                    decision: None,
                    outcome: Outcome::Malformed(packet::Rejected::Truncated),
                }
            } else {
                interfaces.refresh(arrival.ifindex);
                let rx = Received {
                    datagram,
                    arrival,
                    iface: interfaces.get(arrival.ifindex),
                    port: s.port,
                };
                let clock = Clock {
                    unix: now(),
                    instant: Instant::now(),
                };
                respond(&config, &mut leases, &mut guard, rx, clock)
            };
            if let Some(job) = report::dispatch(answer, arrival.src, &stats, &mut replies) {
                jobs.push(job);
            }
        }
        batch::send_all(fd, &replies);
        replies.clear();
        submit(&committer, &mut jobs);
    }
}

/// Reads what is waiting into `inbox` (one `recvmmsg`); `None` after a
/// receive error. A short read emptied the socket: tokio is told so (by
/// `WouldBlock`), which saves the call that would only return EAGAIN; the
/// next datagram wakes the loop again (edge-triggered, and tokio's readiness
/// tick keeps an arrival meanwhile from being lost).
fn read_batch(s: &Socket, inbox: &mut batch::Inbox) -> Option<usize> {
    let mut n = 0;
    let read = s.socket.try_io(Interest::READABLE, || {
        n = inbox.read(s.socket.as_raw_fd())?;
        if n < READ_BATCH {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    });
    match read {
        Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => {
            tracing::debug!(error = %e, "receive error");
            None
        }
        _ => Some(n),
    }
}

/// Hands a read batch's jobs to the committer (without one, in proxy mode,
/// there are none).
pub(crate) fn submit(committer: &Option<Committer>, jobs: &mut Vec<Job>) {
    if jobs.is_empty() {
        return;
    }
    match committer {
        Some(c) => {
            let n = jobs.len() as u64;
            if !c.submit(std::mem::take(jobs)) {
                // The disk is slower than the network: these clients retry.
                crate::metrics::get().dropped_n("dhcp", "commit_queue_full", n);
            }
        }
        None => jobs.clear(),
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

/// The next batch of rows to learn; never, without a shared store.
pub(crate) async fn next_learned<T>(
    learn: &mut Option<tokio::sync::mpsc::Receiver<Vec<T>>>,
) -> Option<Vec<T>> {
    match learn {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
