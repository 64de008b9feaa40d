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

mod content;
pub mod packet;
mod transfer;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::assets::{self, AssetError};
use crate::config::{Config, Shared};
use crate::core::{Base, Identity, Mac};
use content::{Cache, Content};
use packet::{Accepted, ErrorCode, Packet, Request};
use transfer::{Outcome, Params};

/// Largest block size offered unless a client asks for less: one Ethernet
/// frame (1500 MTU - 20 IP - 8 UDP - 4 TFTP), so blocks never fragment.
pub const MAX_BLKSIZE: u16 = 1468;
/// Largest window offered (RFC 7440): 64 blocks of 1468 bytes is ~94 KB in
/// flight, within default socket buffers.
pub const MAX_WINDOWSIZE: u16 = 64;
/// Concurrent transfers; each holds one socket. Requests beyond it are dropped
/// (the client retries its RRQ) and counted.
pub const MAX_TRANSFERS: usize = 512;
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
}

/// Binds the TFTP listener; a failure is one line naming the port and remedy.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    UdpSocket::bind(addr)
        .await
        .map_err(|e| crate::server::bind_error("TFTP (tftp_listen)", addr, e))
}

struct State {
    config: Shared,
    cache: Cache,
    listener: UdpSocket,
    /// Transfer sockets bind here (port 0): the listener's address.
    local_ip: IpAddr,
    slots: Arc<Semaphore>,
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
    });
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
                let Ok(permit) = state.slots.clone().try_acquire_owned() else {
                    let dropped = BUSY.fetch_add(1, Ordering::Relaxed) + 1;
                    crate::metrics::get().request("tftp", "rrq", "busy");
                    // 1st, 2nd, 4th, 8th, … drop: visible without flooding the log.
                    if dropped.is_power_of_two() {
                        tracing::warn!(
                            %peer,
                            file = ?request.filename,
                            limit = MAX_TRANSFERS,
                            dropped,
                            "tftp transfer limit reached; request dropped (the client retries)"
                        );
                    }
                    continue;
                };
                tokio::spawn(read(state.clone(), peer, request, permit));
            }
            Ok(Packet::Wrq(request)) => {
                tracing::info!(%peer, file = ?request.filename, outcome = "refused", "tftp write request refused (read-only server)");
                crate::metrics::get().request("tftp", "write", "refused");
                let reply = packet::error(ErrorCode::AccessViolation, READ_ONLY);
                let _ = state.listener.send_to(&reply, peer).await;
            }
            Ok(other) => {
                count_malformed();
                tracing::debug!(%peer, packet = ?other, "tftp: stray packet on the listening port dropped");
            }
            Err(e) => {
                count_malformed();
                tracing::debug!(%peer, error = %e, "tftp: malformed packet dropped");
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
async fn open(config: &Config, cache: &Cache, name: &str) -> Result<Content, Refusal> {
    if let Some(cfg) = pxelinux_cfg_name(name) {
        let Some(mac) = Mac::from_pxelinux_name(cfg) else {
            return Err(Refusal::NotFound("not a per-machine pxelinux config name"));
        };
        return match config
            .policy
            .pxelinux_config(&Identity::with_mac(mac), &Base::Tftp, None)
        {
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
    let cache = Cache::default();
    let name = request.filename.trim_start_matches('/');
    let content = match open(config, &cache, name).await {
        Ok(c) => c,
        Err(refusal) => {
            let (code, message, _) = refusal.reply();
            return Some(packet::error(code, message));
        }
    };
    let params = negotiate(&request.options, content.len());
    if let Some(oack) = params.oack {
        return Some(oack.oack());
    }
    let mut data = Vec::new();
    packet::data_header(&mut data, 1);
    content
        .read(0, usize::from(params.blksize), &mut data)
        .ok()?;
    Some(data)
}

/// `pxelinux.cfg/<name>` (also under a directory, as pxelinux looks beside
/// itself): returns `<name>`.
fn pxelinux_cfg_name(path: &str) -> Option<&str> {
    let (dir, name) = path.rsplit_once('/')?;
    let dir = dir.rsplit('/').next().unwrap_or(dir);
    (dir == "pxelinux.cfg" && !name.is_empty()).then_some(name)
}

/// Serves one read request, from resolving the name to the last ACK.
async fn read(state: Arc<State>, peer: SocketAddr, request: Request, permit: OwnedSemaphorePermit) {
    let started = Instant::now();
    let name = request.filename.trim_start_matches('/');
    let file = request.filename.as_str();
    let endpoint = match pxelinux_cfg_name(name) {
        Some(_) => "pxelinux",
        None => "asset",
    };
    let content = match open(&state.config.load_full(), &state.cache, name).await {
        Ok(c) => c,
        Err(refusal) => {
            let (code, message, outcome) = refusal.reply();
            crate::metrics::get().request("tftp", endpoint, outcome);
            let _ = state
                .listener
                .send_to(&packet::error(code, message), peer)
                .await;
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
    let params = negotiate(&request.options, content.len());
    let socket = match transfer_socket(state.local_ip, peer).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%peer, file, error = %e, "tftp: cannot open a transfer socket");
            return;
        }
    };
    let (outcome, bytes) = transfer::run(&socket, &content, params).await;
    drop(socket);
    drop(permit);
    let metrics = crate::metrics::get();
    // Bytes first: whoever sees the transfer counted also sees its bytes.
    metrics.sent("tftp", bytes);
    metrics.request("tftp", endpoint, outcome.label());
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let (blksize, windowsize) = (params.blksize, params.windowsize);
    match &outcome {
        Outcome::Complete => {
            tracing::info!(%peer, file, bytes, ms, blksize, windowsize, outcome = outcome.name(), "tftp transfer")
        }
        Outcome::ClientError { code, message } => {
            tracing::info!(%peer, file, bytes, ms, code, message = ?message, outcome = outcome.name(), "tftp transfer")
        }
        Outcome::TimedOut | Outcome::ClientGone => {
            tracing::warn!(%peer, file, bytes, ms, outcome = outcome.name(), "tftp transfer")
        }
        Outcome::Failed(e) => {
            tracing::error!(%peer, file, bytes, ms, error = %e, outcome = outcome.name(), "tftp transfer")
        }
    }
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
