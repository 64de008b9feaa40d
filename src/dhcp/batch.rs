//! DHCP datagrams a batch at a time: every datagram waiting read with one
//! `recvmmsg`, and every reply of a batch sent with one `sendmmsg` per
//! interface and source. At 4,000 exchanges/s the receive loop made 1.3
//! `recvmsg` per datagram (the last of each wake-up returning EAGAIN) and a
//! `sendmsg` per reply: a system call costs about as much as answering a
//! DISCOVER on this VM (docs/decisions.md, "Datagrams in batches"). Through
//! nix, like the single calls in `server.rs`: no `unsafe` here.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;
use std::time::Duration;

use nix::libc;
use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrIn,
};

use super::server::{Arrival, Outgoing};

/// Datagrams read per call (and answered before the loop looks at its other
/// duties again).
pub const BATCH: usize = 64;
/// Bytes kept of one datagram: more than a DHCP message over Ethernet can
/// hold, so a longer one is seen as truncated and dropped.
const DATAGRAM: usize = 4096;

/// The receive side: [`BATCH`] buffers, filled by [`Inbox::read`].
pub struct Inbox {
    bufs: Vec<Box<[u8; DATAGRAM]>>,
    arrivals: Vec<Arrival>,
}

impl Default for Inbox {
    fn default() -> Inbox {
        Inbox {
            bufs: (0..BATCH).map(|_| Box::new([0u8; DATAGRAM])).collect(),
            arrivals: Vec::with_capacity(BATCH),
        }
    }
}

impl Inbox {
    /// Reads what is waiting (non-blocking), up to [`BATCH`] datagrams;
    /// `WouldBlock` when nothing is. Fewer than [`BATCH`] means the socket
    /// was empty when the call returned.
    pub fn read(&mut self, fd: RawFd) -> io::Result<usize> {
        self.arrivals.clear();
        let cmsg = nix::cmsg_space!(libc::in_pktinfo);
        let mut headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, Some(cmsg));
        let mut iovs: Vec<[IoSliceMut; 1]> = self
            .bufs
            .iter_mut()
            .map(|b| [IoSliceMut::new(&mut b[..])])
            .collect();
        let got = recvmmsg(
            fd,
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        for msg in got {
            let mut arrival = Arrival {
                len: msg.bytes,
                src: msg
                    .address
                    .map_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), |a| {
                        SocketAddrV4::new(a.ip(), a.port())
                    }),
                ifindex: 0,
                local: Ipv4Addr::UNSPECIFIED,
                truncated: msg.flags.contains(MsgFlags::MSG_TRUNC) || msg.bytes > DATAGRAM,
            };
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::Ipv4PacketInfo(info) = c {
                        arrival.ifindex = u32::try_from(info.ipi_ifindex).unwrap_or(0);
                        arrival.local = Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
                    }
                }
            }
            self.arrivals.push(arrival);
        }
        Ok(self.arrivals.len())
    }

    /// The `i`th datagram of the last read and how it arrived.
    pub fn get(&self, i: usize) -> (&Arrival, &[u8]) {
        let a = &self.arrivals[i];
        (a, &self.bufs[i][..a.len.min(DATAGRAM)])
    }
}

/// Sends `out` with as few `sendmmsg` calls as there are runs of replies
/// leaving by the same interface with the same source (one, usually); a
/// full send buffer is retried briefly, as a single send is. Returns how
/// many could not be sent.
pub fn send_all(fd: RawFd, out: &[Outgoing]) -> usize {
    let mut failed = 0;
    let mut rest = out;
    while let Some(first) = rest.first() {
        let run = rest
            .iter()
            .take_while(|o| o.ifindex == first.ifindex && o.src == first.src)
            .count();
        let (group, after) = rest.split_at(run);
        failed += send_run(fd, group);
        rest = after;
    }
    failed
}

/// One run of replies sharing interface and source: `sendmmsg` until all
/// are sent, retrying for up to ~5 ms while the send buffer is full.
fn send_run(fd: RawFd, group: &[Outgoing]) -> usize {
    let first = &group[0];
    let info = libc::in_pktinfo {
        ipi_ifindex: i32::try_from(first.ifindex).unwrap_or(0),
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(first.src).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let (mut sent, mut failed, mut tries) = (0, 0, 0);
    while sent < group.len() {
        let left = &group[sent..];
        let iovs: Vec<[IoSlice; 1]> = left.iter().map(|o| [IoSlice::new(&o.bytes)]).collect();
        let addrs: Vec<Option<SockaddrIn>> = left
            .iter()
            .map(|o| Some(SockaddrIn::from(o.dest)))
            .collect();
        let cmsg = [ControlMessage::Ipv4PacketInfo(&info)];
        let space = nix::cmsg_space!(libc::in_pktinfo);
        let mut headers = MultiHeaders::<SockaddrIn>::preallocate(left.len(), Some(space));
        match sendmmsg(fd, &mut headers, &iovs, &addrs, cmsg, MsgFlags::empty()) {
            Ok(done) => sent += done.count().max(1),
            Err(nix::errno::Errno::EAGAIN) if tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_micros(50));
            }
            // The kernel reports the first message that failed (after
            // sending the ones before it): that one is lost, the rest may go.
            Err(e) => {
                tracing::debug!(dest = %left[0].dest, error = %e, "cannot send reply");
                sent += 1;
                failed += 1;
            }
        }
    }
    failed
}
