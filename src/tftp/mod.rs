//! The TFTP adapter: a read-only TFTP server on tokio for legacy PXE ROMs and
//! classic pxelinux. The listening socket only reads requests; each accepted
//! read runs as its own task on its own socket ([`transfer`]). Files come from
//! the asset roots through [`crate::assets::resolve`] (the one place paths are
//! confined), `pxelinux.cfg/01-<mac>` is rendered by the core, and nothing here
//! decides what a machine boots.
//!
//! Filenames: leading `/` are stripped (PXE configs often say `/pxelinux.0`;
//! dnsmasq and tftpd-hpa with `--secure` do the same), so `/x` and `x` are the
//! same file under the root; `..`, backslashes, NUL and symlinks out of a root
//! are refused with "access violation". Write requests get "access violation".
//! `netascii` requests are served byte for byte, like `octet` (boot files are
//! binary; converting line ends would change `tsize`).

mod admission;
mod batch;
mod content;
mod grub;
pub mod packet;
mod transfer;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::assets::{self, AssetError};
use crate::config::{Config, Shared};
use crate::core::{Active, Identity, Mac};
use crate::events::{Event, Stage};
use content::{Cache, Content};
use packet::{Accepted, ErrorCode, Packet, Request};
use transfer::{Outcome, Params};

/// Largest block size offered unless a client asks for less: one Ethernet
/// frame (1500 MTU - 20 IP - 8 UDP - 4 TFTP), so blocks never fragment.
pub const MAX_BLKSIZE: u16 = 1468;
/// Largest window offered (RFC 7440): 64 blocks of 1468 bytes is ~94 KB in
/// flight, within default socket buffers.
pub const MAX_WINDOWSIZE: u16 = 64;
/// Concurrent transfers; each holds one socket. Requests beyond it wait for a
/// slot in arrival order ([`admission`]).
pub const MAX_TRANSFERS: usize = 512;
/// Clients waiting for a slot; requests beyond it are dropped (the client
/// retries its RRQ) and counted.
pub const MAX_WAITING: usize = 4 * MAX_TRANSFERS;
/// A waiting client not heard from for this long has given up (ROMs resend
/// their RRQ every few seconds): its turn is skipped.
pub const WAITING_SILENCE: Duration = Duration::from_secs(5);
/// Retransmission timeout when the client does not ask for one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Retransmissions of the same packet before a transfer is abandoned: a dead
/// client's transfer is freed after at most `(RETRIES + 1) × timeout`.
pub const RETRIES: u32 = 5;
/// Whatever `timeout` a client asks for (up to 255 s), a silent client holds
/// its transfer slot about this long at most: fewer retries for long timeouts.
pub const MAX_SILENCE: Duration = Duration::from_secs(30);

/// The ERROR message a write request gets.
const READ_ONLY: &str = "read-only server";

static MALFORMED: AtomicU64 = AtomicU64::new(0);
static BUSY: AtomicU64 = AtomicU64::new(0);

/// Datagrams dropped because they were not TFTP this server can act on.
pub fn malformed_packets() -> u64 {
    MALFORMED.load(Ordering::Relaxed)
}

/// Requests dropped because [`MAX_TRANSFERS`] transfers were running.
pub fn busy_drops() -> u64 {
    BUSY.load(Ordering::Relaxed)
}

fn count_malformed() {
    MALFORMED.fetch_add(1, Ordering::Relaxed);
    crate::metrics::get().request("tftp", "malformed", "dropped");
    crate::metrics::get().dropped("tftp", "malformed");
}

/// Binds the TFTP listener; a failure is one line naming the port and remedy.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    listener(addr).map_err(|e| crate::listen::bind_error("TFTP (tftp_listen)", addr, e))
}

fn listener(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // A rack powering on sends its RRQs within a few milliseconds; with the
    // default buffer (~200 KB, a few hundred requests) the kernel dropped
    // part of a 2,000-request burst before pxed could count it. The kernel
    // caps this at net.core.rmem_max.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    crate::listen::dual_stack(socket2::SockRef::from(&s), addr)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// One of the [`MAX_TRANSFERS`] slots, held for the life of a transfer and
/// counted as `pxed_in_progress{protocol="tftp"}`.
struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit) -> Slot {
        crate::metrics::get().tftp_transfers(1);
        Slot { _permit: permit }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        crate::metrics::get().tftp_transfers(-1);
    }
}

struct State {
    config: Shared,
    cache: Cache,
    listener: UdpSocket,
    /// Transfer sockets bind here (port 0): the listener's address.
    local_ip: IpAddr,
    slots: Arc<Semaphore>,
    waiting: std::sync::Mutex<admission::Waiting<Request>>,
    /// Rung when a request starts waiting.
    queued: Notify,
}

impl State {
    fn waiting(&self) -> std::sync::MutexGuard<'_, admission::Waiting<Request>> {
        // A panic while holding it cannot leave the queue inconsistent
        // (push and pop are single map/deque operations): keep going.
        crate::sync::lock(&self.waiting)
    }
}

/// Serves TFTP on `socket` until the task is dropped.
/// Logs `tftp listening addr=<addr>` first (tests wait for it).
pub async fn serve(socket: UdpSocket, config: Shared) {
    let local = socket
        .local_addr()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    tracing::info!(addr = %local, "tftp listening");
    warn_if_no_undionly(&config);
    let local_ip = local.ip();
    let state = Arc::new(State {
        config,
        cache: Cache::default(),
        listener: socket,
        local_ip,
        slots: Arc::new(Semaphore::new(MAX_TRANSFERS)),
        waiting: std::sync::Mutex::new(admission::Waiting::new(MAX_WAITING, WAITING_SILENCE)),
        queued: Notify::new(),
    });
    tokio::spawn(admit_waiting(state.clone()));
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = match state.listener.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors from earlier replies surface here; never spin.
                tracing::debug!(error = %e, "tftp receive error");
                if e.kind() != std::io::ErrorKind::ConnectionRefused {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                continue;
            }
        };
        match packet::parse(&buf[..n]) {
            Ok(Packet::Rrq(request)) => {
                // Straight to a slot only when nobody is waiting (first come,
                // first served).
                let direct = match state.waiting().is_empty() {
                    true => state.slots.clone().try_acquire_owned().ok(),
                    false => None,
                };
                match direct {
                    Some(permit) => {
                        tokio::spawn(read(state.clone(), peer, request, Slot::new(permit)));
                    }
                    None => wait_for_slot(&state, peer, request),
                }
            }
            Ok(Packet::Wrq(request)) => {
                tracing::info!(%peer, file = %request.filename.escape_debug(), outcome = "refused", "tftp write request refused (read-only server)");
                crate::metrics::get().request("tftp", "write", "refused");
                let reply = packet::error(ErrorCode::AccessViolation, READ_ONLY);
                let _ = state.listener.send_to(&reply, peer).await;
            }
            Ok(other) => {
                count_malformed();
                tracing::debug!(%peer, packet = other.name(), "tftp: stray packet on the listening port dropped");
            }
            Err(e) => {
                count_malformed();
                tracing::debug!(%peer, error = %e, "tftp: malformed packet dropped");
            }
        }
    }
}

/// Queues a request that found no free slot, or drops it when the queue is full.
fn wait_for_slot(state: &State, peer: SocketAddr, request: Request) {
    let metrics = crate::metrics::get();
    let file = request.filename.clone();
    let (queued, waiting) = {
        let mut w = state.waiting();
        let q = w.push(peer, request, Instant::now());
        (q, w.len())
    };
    metrics.tftp_waiting(waiting);
    match queued {
        admission::Queued::New | admission::Queued::Repeat => state.queued.notify_one(),
        admission::Queued::Full => {
            let dropped = BUSY.fetch_add(1, Ordering::Relaxed) + 1;
            metrics.request("tftp", "rrq", "busy");
            metrics.dropped("tftp", "busy");
            // 1st, 2nd, 4th, 8th, … drop: visible without flooding the log.
            if dropped.is_power_of_two() {
                tracing::warn!(
                    %peer,
                    file = %file.escape_debug(),
                    transfers = MAX_TRANSFERS,
                    waiting = MAX_WAITING,
                    dropped,
                    "tftp transfer slots and waiting list full; request dropped (the client retries)"
                );
            }
        }
    }
}

/// Hands free slots to waiting requests, oldest first, for the life of the
/// server.
async fn admit_waiting(state: Arc<State>) {
    let metrics = crate::metrics::get();
    loop {
        state.queued.notified().await;
        while !state.waiting().is_empty() {
            let Ok(permit) = state.slots.clone().acquire_owned().await else {
                return;
            };
            let (next, stale, left) = {
                let mut w = state.waiting();
                let (next, stale) = w.pop(Instant::now());
                (next, stale, w.len())
            };
            metrics.tftp_waiting(left);
            if stale > 0 {
                metrics.dropped_n("tftp", "gave_up_waiting", stale as u64);
            }
            if let Some((peer, request)) = next {
                tokio::spawn(read(state.clone(), peer, request, Slot::new(permit)));
            }
        }
    }
}

/// One warning at start when legacy PXE ROMs would find nothing to chainload.
fn warn_if_no_undionly(config: &Shared) {
    let config = config.load();
    if assets::resolve(config.server.asset_roots(), "undionly.kpxe").is_err() {
        let roots: Vec<String> = config
            .server
            .asset_roots()
            .paths()
            .map(|p| p.display().to_string())
            .collect();
        tracing::warn!(
            "no undionly.kpxe in any asset root ({}): BIOS PXE ROMs cannot chainload iPXE over TFTP; \
             run `apt-get install ipxe` (installs /usr/lib/ipxe/undionly.kpxe) or copy undionly.kpxe into {}",
            roots.join(", "),
            config.server.assets_dir.display()
        );
    }
}

/// Why a request gets an ERROR instead of data.
enum Refusal {
    NotFound(&'static str),
    NoRule,
    Refused(&'static str),
    Io(std::io::Error),
}

impl Refusal {
    /// The ERROR packet the client gets.
    fn packet(&self) -> Vec<u8> {
        let (code, message, _) = self.reply();
        packet::error(code, message)
    }

    /// The ERROR code and message the client gets, and the metrics outcome.
    fn reply(&self) -> (ErrorCode, &'static str, &'static str) {
        match self {
            Refusal::NotFound(m) => (ErrorCode::FileNotFound, m, "not_found"),
            Refusal::NoRule => (
                ErrorCode::FileNotFound,
                "no rule matches this machine",
                "no_rule",
            ),
            Refusal::Refused(m) => (ErrorCode::AccessViolation, m, "refused"),
            Refusal::Io(_) => (ErrorCode::Undefined, "cannot read the file", "failed"),
        }
    }
}

/// Finds what a request names (leading `/` already stripped): a rendered
/// pxelinux config or a file under the asset roots.
async fn open(
    config: &Config,
    cache: &Cache,
    name: &str,
    asker: Option<grub::Asker>,
) -> Result<Content, Refusal> {
    if let Some(request) = crate::core::grub::Request::parse(name) {
        return grub::open(config, request, asker).await;
    }
    if let Some(cfg) = pxelinux_cfg_name(name) {
        let Some(mac) = Mac::from_pxelinux_name(cfg) else {
            return Err(Refusal::NotFound("not a per-machine pxelinux config name"));
        };
        // The machine's override chooses the rule; a one-shot override gets
        // this boot's callback URL when pxed knows the machine's way to its
        // HTTP server (the installer calls it, docs/api.md).
        let http = asker.and_then(|a| grub::http_base(config, a));
        let active = match &http {
            Some(_) => crate::machines::for_boot(mac).await.unwrap_or_else(|why| {
                tracing::warn!(%mac, "pxelinux config without a callback URL: {why}");
                crate::machines::lookup(mac).map(|a| Active { token: None, ..a })
            }),
            None => crate::machines::lookup(mac).map(|a| Active { token: None, ..a }),
        };
        return match config.policy.menu_over_tftp(
            &Identity::with_mac(mac),
            http.as_ref(),
            active.as_ref(),
        ) {
            Some(rendered) => Ok(Content::Memory(Arc::from(rendered.text.into_bytes()))),
            None => Err(Refusal::NoRule),
        };
    }
    match assets::resolve(config.server.asset_roots(), name) {
        Ok(path) => cache.get(&path).await.map_err(Refusal::Io),
        Err(AssetError::NotFound) => Err(Refusal::NotFound("file not found")),
        Err(AssetError::Refused(why)) => Err(Refusal::Refused(why)),
    }
}

/// The transfer a request gets for a file of `len` bytes: the options it
/// asked for, clamped to what this server allows, and the OACK if any.
fn negotiate(o: &packet::Options, len: u64) -> Params {
    let accepted = Accepted {
        blksize: o.blksize.map(|b| b.min(MAX_BLKSIZE)),
        tsize: o.tsize.then_some(len),
        timeout: o.timeout,
        windowsize: o.windowsize.map(|w| w.min(MAX_WINDOWSIZE)),
    };
    let timeout = accepted
        .timeout
        .map_or(DEFAULT_TIMEOUT, |t| Duration::from_secs(t.into()));
    Params {
        blksize: accepted.blksize.unwrap_or(512),
        windowsize: accepted.windowsize.unwrap_or(1),
        timeout,
        retries: RETRIES.min((MAX_SILENCE.as_secs() / timeout.as_secs().max(1)).max(1) as u32),
        oack: (!accepted.is_empty()).then_some(accepted),
    }
}

/// The first packet the server sends in answer to `datagram` (an ERROR, the
/// OACK, or DATA block 1), or `None` when it drops it: the listener's
/// decisions (parse, name → file or rendered config, path confinement, option
/// negotiation) without sockets. For the fuzz target and tests.
#[cfg(any(test, fuzzing))]
pub async fn first_packet(config: &Config, datagram: &[u8]) -> Option<Vec<u8>> {
    let request = match packet::parse(datagram) {
        Ok(Packet::Rrq(request)) => request,
        Ok(Packet::Wrq(_)) => return Some(packet::error(ErrorCode::AccessViolation, READ_ONLY)),
        Ok(_) | Err(_) => return None,
    };
    match prepare(config, &Cache::default(), &request, None).await {
        Ok((content, params)) => transfer::first_packet(&content, &params).ok(),
        Err(refusal) => Some(refusal.packet()),
    }
}

/// What a read request gets: the content and the negotiated transfer, or
/// why it is refused. The daemon ([`read`]) and [`first_packet`] start here.
async fn prepare(
    config: &Config,
    cache: &Cache,
    request: &Request,
    asker: Option<grub::Asker>,
) -> Result<(Content, Params), Refusal> {
    let name = request.filename.trim_start_matches('/');
    let content = open(config, cache, name, asker).await?;
    let params = negotiate(&request.options, content.len());
    Ok((content, params))
}

/// `pxelinux.cfg/<name>` (also under a directory, as pxelinux looks beside
/// itself): returns `<name>`.
fn pxelinux_cfg_name(path: &str) -> Option<&str> {
    let (dir, name) = path.rsplit_once('/')?;
    let dir = dir.rsplit('/').next().unwrap_or(dir);
    (dir == "pxelinux.cfg" && !name.is_empty()).then_some(name)
}

/// Serves one read request, from resolving the name to the last ACK.
async fn read(state: Arc<State>, peer: SocketAddr, request: Request, slot: Slot) {
    let started = Instant::now();
    let name = request.filename.trim_start_matches('/');
    let file = request.filename.as_str();
    let config = state.config.load_full();
    let step = crate::core::grub::step(&config.policy, name);
    let endpoint = match (pxelinux_cfg_name(name), step) {
        (Some(_), _) => "pxelinux",
        (None, Some("grub.cfg" | "machine grub.cfg")) => "grub",
        (None, _) => "asset",
    };
    let asker = grub::Asker {
        local_ip: state.local_ip,
        peer,
    };
    let (content, params) = match prepare(&config, &state.cache, &request, Some(asker)).await {
        Ok(prepared) => prepared,
        Err(refusal) => {
            let (_, message, outcome) = refusal.reply();
            crate::metrics::get().request("tftp", endpoint, outcome);
            record(peer, name, outcome, step, format!("{file}: {message}"));
            let _ = state.listener.send_to(&refusal.packet(), peer).await;
            match refusal {
                Refusal::NotFound(_) | Refusal::NoRule => {
                    tracing::info!(%peer, file, outcome, reason = message, "tftp transfer")
                }
                Refusal::Refused(_) => {
                    tracing::warn!(%peer, file, outcome, reason = message, "tftp transfer")
                }
                Refusal::Io(e) => {
                    tracing::error!(%peer, file, outcome, error = %e, "tftp transfer")
                }
            }
            return;
        }
    };
    let socket = match transfer_socket(state.local_ip, peer).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%peer, file, error = %e, "tftp: cannot open a transfer socket");
            return;
        }
    };
    let (outcome, bytes) = transfer::run(&socket, &content, params).await;
    drop(socket);
    drop(slot);
    let metrics = crate::metrics::get();
    // Bytes first: whoever sees the transfer counted also sees its bytes.
    metrics.sent("tftp", bytes);
    metrics.request("tftp", endpoint, outcome.label());
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let (blksize, windowsize) = (params.blksize, params.windowsize);
    record(
        peer,
        name,
        outcome.label(),
        step,
        format!("{file}: {bytes} of {} bytes in {ms:.0} ms", content.len()),
    );
    match &outcome {
        Outcome::Complete => {
            tracing::info!(%peer, file = %file.escape_debug(), bytes, ms, blksize, windowsize, outcome = outcome.label(), "tftp transfer")
        }
        Outcome::ClientError { code, message } => {
            tracing::info!(%peer, file = %file.escape_debug(), bytes, ms, code, message = %message.escape_debug(), outcome = outcome.label(), "tftp transfer")
        }
        Outcome::TimedOut | Outcome::ClientGone => {
            tracing::warn!(%peer, file = %file.escape_debug(), bytes, ms, outcome = outcome.label(), "tftp transfer")
        }
        Outcome::Failed(e) => {
            tracing::error!(%peer, file, bytes, ms, error = %e, outcome = outcome.label(), "tftp transfer")
        }
    }
}

/// The boot event of one request, with the step of the boot it is when
/// known (`shim: shimx64.efi: …`, see `core::grub::step`). A pxelinux config
/// name says whose it is; otherwise the event writer finds the machine by
/// its address.
fn record(peer: SocketAddr, name: &str, outcome: &'static str, step: Option<&str>, detail: String) {
    crate::events::record_with(|| {
        let mac = pxelinux_cfg_name(name).and_then(Mac::from_pxelinux_name);
        let detail = match step {
            Some(step) => format!("{step}: {detail}"),
            None => detail,
        };
        Event::new(Stage::Tftp, outcome, detail)
            .mac(mac)
            .ip(peer.ip())
    });
}

async fn transfer_socket(local_ip: IpAddr, peer: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
    socket.connect(peer).await?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pxelinux_cfg_names() {
        assert_eq!(
            pxelinux_cfg_name("pxelinux.cfg/01-52-54-00-12-34-56"),
            Some("01-52-54-00-12-34-56")
        );
        assert_eq!(
            pxelinux_cfg_name("bios/pxelinux.cfg/default"),
            Some("default")
        );
        assert_eq!(pxelinux_cfg_name("pxelinux.cfg/"), None);
        assert_eq!(pxelinux_cfg_name("pxelinux.0"), None);
        assert_eq!(pxelinux_cfg_name("xpxelinux.cfg/a"), None);
    }
}
