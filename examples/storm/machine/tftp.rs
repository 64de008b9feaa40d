//! A TFTP read client as boot firmware does it, for the load tools
//! (`examples/storm`, `examples/tftp_load.rs`): RRQ with `tsize` (and
//! `blksize`, `windowsize` when asked), the transfer locked to the server's
//! first answering port, an ACK per block or per window, retransmission of the
//! last packet on silence. With `probe_size_first`, it first does what PXE
//! ROMs do: RRQ with `tsize` only, ERROR 8 to the OACK, then the real RRQ from
//! the same port.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::wire;

#[derive(Debug, Clone)]
pub struct Rrq {
    pub file: String,
    pub blksize: Option<u16>,
    pub windowsize: Option<u16>,
    /// The PXE ROM dance: a `tsize`-only RRQ aborted with ERROR 8 first.
    pub probe_size_first: bool,
    /// Wait for each answer this long before sending the last packet again.
    pub timeout: Duration,
    /// Retransmissions of one packet before giving up.
    pub retries: u32,
}

/// In lockstep the server says nothing until it gets the ACK about to be
/// sent: without this the next wait would start with a `recv` that finds
/// nothing (pxed's transfers do the same, src/tftp/transfer.rs). A datagram
/// left queued (a duplicate) is read when the next one arrives.
fn forget_readiness(sock: &UdpSocket) {
    let _ = sock.try_io(tokio::io::Interest::READABLE, || {
        Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
    });
}

/// `last` becomes ACK `block`, in its existing allocation.
fn set_ack(last: &mut Vec<u8>, block: u16) {
    last.clear();
    last.extend_from_slice(&wire::ack(block));
}

/// Option values from an OACK.
fn oack_option(oack: &[u8], name: &str) -> Option<u64> {
    wire::oack_value(oack, name)?.parse().ok()
}

/// Reads `r.file` from `server` on a fresh socket bound to `local`.
pub async fn fetch(local: SocketAddr, server: SocketAddr, r: &Rrq) -> Result<Vec<u8>, String> {
    let sock = UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
    // The aborted transfer's port: a late packet from it is not this transfer.
    let aborted = match r.probe_size_first {
        true => Some(probe_size(&sock, server, r).await?),
        false => None,
    };
    let mut options = vec![("tsize", "0".to_string())];
    if let Some(b) = r.blksize {
        options.push(("blksize", b.to_string()));
    }
    if let Some(w) = r.windowsize {
        options.push(("windowsize", w.to_string()));
    }
    let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let request = wire::rrq(&r.file, &options);
    sock.send_to(&request, server)
        .await
        .map_err(|e| e.to_string())?;
    let mut tid: Option<SocketAddr> = None;
    let mut last: Vec<u8> = request;
    let (mut blksize, mut window) = (512usize, 1u32);
    let mut tsize = None;
    let mut expected: u16 = 1;
    let mut since_ack = 0u32;
    let mut gap_acked = false;
    let mut got_data = false;
    let mut data = Vec::new();
    let mut retries = 0;
    let mut buf = vec![0u8; 65536];
    // One timer for the whole transfer, moved on per packet: a fresh
    // `timeout` per block cost a timer-wheel insert and removal each, and in
    // bench/tftp.sh's storm this one-process client, not the server, was
    // the bottleneck (docs/decisions.md, "TFTP: the storm is bound by the
    // load client").
    let mut timer = Box::pin(tokio::time::sleep(r.timeout));
    loop {
        timer
            .as_mut()
            .reset(tokio::time::Instant::now() + r.timeout);
        let (n, from) = tokio::select! {
            biased;
            got = sock.recv_from(&mut buf) => got.map_err(|e| e.to_string())?,
            () = &mut timer => {
                retries += 1;
                if retries > r.retries {
                    return Err(format!("timed out after {} bytes", data.len()));
                }
                let _ = sock.send_to(&last, tid.unwrap_or(server)).await;
                continue;
            }
        };
        if Some(from) == aborted {
            continue;
        }
        match tid {
            None => {
                // Locked to the server's transfer port: the kernel drops
                // anything else, and sends skip the per-packet route lookup.
                sock.connect(from).await.map_err(|e| e.to_string())?;
                tid = Some(from);
            }
            Some(t) if t != from => continue,
            Some(_) => {}
        }
        let pkt = &buf[..n];
        if n < 4 {
            continue;
        }
        match u16::from_be_bytes([pkt[0], pkt[1]]) {
            6 if !got_data => {
                if let Some(b) = oack_option(pkt, "blksize") {
                    blksize = b as usize;
                }
                if let Some(w) = oack_option(pkt, "windowsize") {
                    window = w as u32;
                }
                tsize = oack_option(pkt, "tsize");
                // Grown block by block, the buffer's copies and page faults
                // were ~10% of the load client's time in a storm.
                data.reserve(tsize.map_or(0, |t| t.min(64 << 20) as usize));
                set_ack(&mut last, 0);
                let _ = sock.send(&last).await;
                retries = 0;
            }
            3 => {
                got_data = true;
                let block = u16::from_be_bytes([pkt[2], pkt[3]]);
                let payload = &pkt[4..];
                if block == expected {
                    data.extend_from_slice(payload);
                    expected = expected.wrapping_add(1);
                    since_ack += 1;
                    retries = 0;
                    gap_acked = false;
                    let end = payload.len() < blksize;
                    if window == 1 && !end {
                        forget_readiness(&sock);
                    }
                    if end || since_ack >= window {
                        set_ack(&mut last, block);
                        let _ = sock.send(&last).await;
                        since_ack = 0;
                    }
                    if end {
                        return match tsize {
                            Some(t) if t != data.len() as u64 => {
                                Err(format!("tsize {t}, got {} bytes", data.len()))
                            }
                            _ => Ok(data),
                        };
                    }
                } else if window == 1 || !gap_acked {
                    // Duplicate (lockstep) or a gap (window): ACK the last
                    // in-order block.
                    gap_acked = true;
                    set_ack(&mut last, expected.wrapping_sub(1));
                    let _ = sock.send(&last).await;
                    since_ack = 0;
                }
            }
            5 => return Err(wire::error_text(pkt)),
            _ => {}
        }
    }
}

/// RRQ with `tsize` only; the OACK tells the size, ERROR 8 ends that
/// transfer (what a PXE ROM does before its real request). Returns the port
/// of the transfer it ended.
async fn probe_size(sock: &UdpSocket, server: SocketAddr, r: &Rrq) -> Result<SocketAddr, String> {
    let request = wire::rrq(&r.file, &[("tsize", "0")]);
    let mut buf = vec![0u8; 2048];
    for _ in 0..=r.retries {
        sock.send_to(&request, server)
            .await
            .map_err(|e| e.to_string())?;
        let Ok(got) = tokio::time::timeout(r.timeout, sock.recv_from(&mut buf)).await else {
            continue;
        };
        let (n, from) = got.map_err(|e| e.to_string())?;
        let pkt = &buf[..n];
        return match pkt.get(..2) {
            Some([0, 6]) => {
                let abort = b"\0\x05\0\x08tsize only\0";
                let _ = sock.send_to(abort, from).await;
                Ok(from)
            }
            Some([0, 5]) => Err(wire::error_text(pkt)),
            _ => Err(format!("unexpected answer to the size probe: {pkt:?}")),
        };
    }
    Err("no answer to the size probe".into())
}
