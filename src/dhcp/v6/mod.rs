//! The DHCPv6 adapter (RFC 8415): IPv6 netboot for UEFI firmware and iPXE
//! on IPv6-only networks, in full mode (IA_NA addresses from the IPv6
//! `[[dhcp.subnet]]`s, leases in the same store as DHCPv4's) or proxy mode
//! (boot information only). The boot decision is `core::decide`, the same
//! as DHCPv4's; this module only speaks the protocol.
//!
//! One datagram goes through, in order:
//! - [`server`]: the socket, `IPV6_PKTINFO`, sending;
//! - [`respond`](mod@respond): the pure entry point, which calls
//!   - [`packet`]: bytes → validated request and the client's MAC (hostile
//!     input stops here), over [`options`];
//!   - the DHCPv4 wing's rate limiter (per MAC);
//!   - `core::decide`: the boot decision, once;
//!   - [`exchange`]: RFC 8415 per message, encoded by [`reply`];
//!
//!   and returns one [`outcome::Outcome6`];
//! - [`report`]: counters, log, metrics and boot event; replies with lease
//!   changes go to the DHCPv4 wing's committer (`dhcp/commit.rs`), which
//!   stores them with IPv4's and sends them after the commit.
//!
//! This file is the wiring: [`bind`] joins the served links, [`serve`] is
//! the receive loop.

pub mod exchange;
pub mod options;
pub mod outcome;
pub mod packet;
pub mod reply;
pub mod report;
pub mod respond;
pub mod server;
pub mod testing;

pub use outcome::Outcome6;
pub use respond::{respond, Answer6, Received6};

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use tokio::io::Interest;
use tokio::sync::mpsc::Receiver;

use super::commit::Committer;
use super::guard::Guard;
use super::leases::{Lease6, Leases6};
use super::report::Stats;
use super::server::{Interfaces, Sender};
use super::{next_learned, now, submit, Clock, READ_BATCH};
use crate::config::{DhcpConfig, DhcpMode, Shared};
use crate::core::Mac;
use server::BINL_PORT;

/// The bound DHCPv6 socket, its sending handle and our DUID.
pub struct Socket6 {
    socket: tokio::net::UdpSocket,
    pub sender: Arc<Sender>,
    duid: Vec<u8>,
}

/// Binds `[dhcp] listen6` and joins ff02::1:2 on the served interfaces
/// (`[dhcp] interfaces`, else every interface with a global IPv6 address),
/// when DHCPv6 runs; `None` when it does not. Fails with one clear line.
pub fn bind(dhcp: &DhcpConfig, interfaces: &Interfaces) -> anyhow::Result<Option<Socket6>> {
    if !dhcp.dhcpv6 {
        return Ok(None);
    }
    let addr = dhcp.listen6;
    let socket = server::bind(addr)
        .map_err(|e| crate::listen::bind_error("DHCPv6 ([dhcp] listen6)", addr, e))?;
    let mut joined = Vec::new();
    for name in &dhcp.interfaces {
        let index = nix::net::if_::if_nametoindex(name.as_str())
            .map_err(|_| anyhow::anyhow!("[dhcp] interfaces: no interface {name:?} here"))?;
        server::join(&socket, index)
            .with_context(|| format!("DHCPv6: cannot join ff02::1:2 on {name}"))?;
        joined.push(index);
    }
    if dhcp.interfaces.is_empty() {
        for i in interfaces.all().filter(|i| !i.addrs6.is_empty()) {
            if let Ok(index) = nix::net::if_::if_nametoindex(i.name.as_str()) {
                if server::join(&socket, index).is_ok() {
                    joined.push(index);
                }
            }
        }
    }
    joined.sort_unstable();
    let duid = server_duid(&joined);
    let sender = Arc::new(Sender::new(&socket).context("DHCPv6 socket")?);
    let socket = tokio::net::UdpSocket::from_std(socket).context("DHCPv6 socket")?;
    tracing::info!(addr = %addr, interfaces = joined.len(), duid = %hex(&duid), mode = dhcp.mode.name(), "dhcp6 listening");
    Ok(Some(Socket6 {
        socket,
        sender,
        duid,
    }))
}

/// Proxy mode's second socket: UDP 4011 on `[dhcp] listen6`'s address, where
/// UEFI PXE sends its Request for the boot file after a proxy offer (EDK2's
/// IPv6 form of PXE's BINL exchange), and answered from, as it expects.
/// Same DUID as `main`. `None` outside proxy mode.
pub fn bind_binl(dhcp: &DhcpConfig, main: &Socket6) -> anyhow::Result<Option<Socket6>> {
    if dhcp.mode != DhcpMode::Proxy {
        return Ok(None);
    }
    let mut addr = dhcp.listen6;
    addr.set_port(BINL_PORT);
    let socket = server::bind(addr)
        .map_err(|e| crate::listen::bind_error("DHCPv6 proxy (port 4011)", addr, e))?;
    let sender = Arc::new(Sender::new(&socket).context("DHCPv6 socket")?);
    let socket = tokio::net::UdpSocket::from_std(socket).context("DHCPv6 socket")?;
    tracing::info!(addr = %addr, "dhcp6 proxy listening");
    Ok(Some(Socket6 {
        socket,
        sender,
        duid: main.duid.clone(),
    }))
}

/// Our DUID (option 2): DUID-LL (RFC 8415 §11.4) of the first served
/// interface with a MAC, stable across restarts while the hardware stays;
/// without one, DUID-UUID (§11.5) from `/etc/machine-id`.
fn server_duid(indices: &[u32]) -> Vec<u8> {
    let links = crate::ra::socket::links();
    let mac = indices
        .iter()
        .find_map(|i| links.iter().find(|l| l.index == *i).and_then(|l| l.mac))
        .or_else(|| links.iter().filter(|l| !l.loopback).find_map(|l| l.mac));
    if let Some(Mac(m)) = mac {
        return [&[0, 3, 0, 1][..], &m].concat();
    }
    let id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let bytes: Vec<u8> = (0..id.trim().len() / 2)
        .filter_map(|i| u8::from_str_radix(id.trim().get(2 * i..2 * i + 2)?, 16).ok())
        .take(16)
        .collect();
    let mut uuid = [0u8; 16];
    uuid[..bytes.len()].copy_from_slice(&bytes);
    [&[0, 4][..], &uuid].concat()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The DHCPv6 receive loop: read what is waiting (up to [`READ_BATCH`]),
/// answer each ([`respond`], then [`report::dispatch`]), and hand the
/// replies that need a commit to the committer in one go. `learn` brings
/// the rows a shared database says others hold.
pub async fn serve(
    s: Socket6,
    shared: Shared,
    mut leases: Leases6,
    committer: Option<Committer>,
    mut learn: Option<Receiver<Vec<Lease6>>>,
) {
    let fd = s.socket.as_raw_fd();
    let stats = Arc::new(Stats::default());
    tokio::spawn(super::report::every_minute(stats.clone(), "dhcp6"));
    let mut interfaces = Interfaces::read();
    let mut guard = Guard::new(shared.load().dhcp.limits.rate_table_size);
    let mut buf = vec![0u8; 4096];
    let mut jobs = Vec::new();
    loop {
        tokio::select! {
            readable = s.socket.readable() => {
                if let Err(e) = readable {
                    tracing::debug!(error = %e, "dhcp6 receive error");
                    continue;
                }
            }
            Some(rows) = next_learned(&mut learn) => {
                let now = now();
                for row in rows {
                    leases.learn(row, now);
                }
                continue;
            }
        }
        for _ in 0..READ_BATCH {
            let arrival = match s
                .socket
                .try_io(Interest::READABLE, || server::recv(fd, &mut buf))
            {
                Ok(a) => a,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "dhcp6 receive error");
                    break;
                }
            };
            let config = shared.load();
            let answer = if arrival.truncated {
                Answer6 {
                    req: None,
                    decision: None,
                    outcome: Outcome6::Malformed(packet::Rejected::Truncated),
                }
            } else {
                interfaces.refresh(arrival.ifindex);
                let rx = Received6 {
                    datagram: &buf[..arrival.len],
                    arrival: &arrival,
                    iface: interfaces.get(arrival.ifindex),
                    duid: &s.duid,
                };
                let clock = Clock {
                    unix: now(),
                    instant: Instant::now(),
                };
                respond(&config, &mut leases, &mut guard, rx, clock)
            };
            if let Some(job) = report::dispatch(answer, arrival.src, &stats, &s.sender) {
                jobs.push(job);
            }
        }
        submit(&committer, &mut jobs);
    }
}
