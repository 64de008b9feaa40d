//! Sending a window of DATA packets with as few syscalls as the kernel allows:
//! UDP generic segmentation offload (Linux `UDP_SEGMENT`, one `sendmsg` whose
//! buffer the kernel cuts into datagrams of `segment` bytes, the last one
//! possibly shorter). Per-packet `send` is the fallback when the kernel or the
//! route refuses GSO (old kernels, devices without checksum offload: EIO,
//! EINVAL, ENOPROTOOPT, EOPNOTSUPP). With windowsize 16 this is one syscall
//! per window instead of 16 (docs/decisions.md, "TFTP: windows sent with GSO").

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrStorage};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// The kernel's cap on segments in one GSO send (`UDP_MAX_SEGMENTS`).
const MAX_SEGMENTS: usize = 64;
/// Largest UDP payload of one send: 65535 - 20 (IPv4) - 8 (UDP).
const MAX_PAYLOAD: usize = 65507;

/// Set once the kernel refused GSO; later windows go packet by packet.
static GSO_REFUSED: AtomicBool = AtomicBool::new(false);

/// Packets laid back to back in `buf`, each `segment` bytes except the last.
pub struct Packets<'a> {
    pub buf: &'a [u8],
    pub segment: usize,
}

impl Packets<'_> {
    fn count(&self) -> usize {
        self.buf.len().div_ceil(self.segment.max(1))
    }
}

/// Sends `packets` in order on the connected `socket`. Returns how many went
/// out, and the error that stopped the rest (the caller treats the unsent ones
/// as lost, or the client as gone on ECONNREFUSED).
pub async fn send(socket: &UdpSocket, packets: Packets<'_>) -> (usize, Option<io::Error>) {
    send_with(socket, packets, &GSO_REFUSED).await
}

/// [`send`] with the "kernel refused GSO" flag passed in (tests force the
/// fallback with their own).
async fn send_with(
    socket: &UdpSocket,
    packets: Packets<'_>,
    gso_refused: &AtomicBool,
) -> (usize, Option<io::Error>) {
    let Packets { buf, segment } = packets;
    if segment == 0 {
        return (0, None);
    }
    let per_send = MAX_SEGMENTS.min(MAX_PAYLOAD / segment).max(1);
    let mut sent = 0;
    for chunk in buf.chunks(per_send * segment) {
        let in_chunk = Packets {
            buf: chunk,
            segment,
        }
        .count();
        if in_chunk > 1 && !gso_refused.load(Ordering::Relaxed) {
            match send_segmented(socket, chunk, segment).await {
                Ok(()) => {
                    sent += in_chunk;
                    continue;
                }
                Err(e) if refused(&e) => {
                    gso_refused.store(true, Ordering::Relaxed);
                    tracing::info!(error = %e, "tftp: the kernel refused UDP GSO; windows are sent packet by packet");
                }
                Err(e) => return (sent, Some(e)),
            }
        }
        for packet in chunk.chunks(segment) {
            if let Err(e) = socket.send(packet).await {
                return (sent, Some(e));
            }
            sent += 1;
        }
    }
    (sent, None)
}

fn refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP)
    )
}

async fn send_segmented(socket: &UdpSocket, chunk: &[u8], segment: usize) -> io::Result<()> {
    let gso_size =
        u16::try_from(segment).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let fd = socket.as_raw_fd();
    let n = socket
        .async_io(Interest::WRITABLE, || {
            sendmsg::<SockaddrStorage>(
                fd,
                &[IoSlice::new(chunk)],
                &[ControlMessage::UdpGsoSegments(&gso_size)],
                MsgFlags::empty(),
                None,
            )
            .map_err(io::Error::from)
        })
        .await?;
    if n != chunk.len() {
        // UDP sends are all or nothing; a short count would be a kernel change.
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short GSO send"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every datagram arrives as its own packet, in order, with the short last
    /// one intact, with GSO (where the kernel takes it) and with the
    /// packet-by-packet fallback.
    #[tokio::test]
    async fn a_window_arrives_as_separate_datagrams() {
        for refused in [false, true] {
            let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            tx.connect(rx.local_addr().unwrap()).await.unwrap();
            let segment = 100;
            let mut buf = Vec::new();
            for i in 0..70u8 {
                buf.extend(std::iter::repeat_n(i, segment));
            }
            buf.extend([70u8; 33]);
            let flag = AtomicBool::new(refused);
            let (sent, err) = send_with(&tx, Packets { buf: &buf, segment }, &flag).await;
            assert!(err.is_none(), "{err:?}");
            assert_eq!(sent, 71);
            let mut got = [0u8; 2048];
            for i in 0..71u8 {
                let n = rx.recv(&mut got).await.unwrap();
                let want = if i == 70 { 33 } else { segment };
                assert_eq!(n, want, "datagram {i}, GSO refused: {refused}");
                assert!(got[..n].iter().all(|&b| b == i), "datagram {i}");
            }
        }
    }
}
