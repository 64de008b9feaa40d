//! DHCP sockets and packet I/O: bind UDP 67 (and 4011 in proxy mode) with
//! `SO_BROADCAST` and `IP_PKTINFO`; receive with the interface
//! index and local address each datagram arrived on; send out of that interface
//! with that address as source (`IP_PKTINFO` on `sendmsg`), which is what lets
//! a reply to 255.255.255.255 leave by the right port on a multi-homed host.
//! Also the table of interface addresses, read with `getifaddrs`.
//!
//! The `recvmsg`/`sendmsg` control-message calls go through `nix`, so there is
//! no `unsafe` here (see docs/decisions.md).

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::socket::{
    sendmsg, setsockopt, sockopt, ControlMessage, MsgFlags, SockaddrIn, SockaddrIn6,
};
use socket2::{Domain, Protocol, Socket, Type};

/// A bound, non-blocking UDP socket with `IP_PKTINFO` on. No `SO_REUSEADDR`:
/// another DHCP server on this host holding the port must make pxed fail with
/// "address in use", not share the port and split the clients with it.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_broadcast(true)?;
    s.set_nonblocking(true)?;
    // Bursts of DISCOVERs (a rack powering on, perfdhcp) must queue, not drop.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    setsockopt(&s, sockopt::Ipv4PacketInfo, &true).map_err(io::Error::from)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Where and how a datagram arrived.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub len: usize,
    pub src: SocketAddrV4,
    /// The interface it came in on (0 if the kernel did not say).
    pub ifindex: u32,
    /// The local address it was sent to or, for a broadcast, the address the
    /// kernel picked on the receiving interface.
    pub local: Ipv4Addr,
    pub truncated: bool,
}

/// A datagram to send, and how.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub bytes: Vec<u8>,
    pub dest: SocketAddrV4,
    /// Leave by this interface (0: let routing decide, e.g. towards a relay).
    pub ifindex: u32,
    /// Source address.
    pub src: Ipv4Addr,
}

/// Sends with `IP_PKTINFO`, retrying briefly if the send buffer is full.
pub fn send(fd: RawFd, out: &Outgoing) -> io::Result<()> {
    let info = libc::in_pktinfo {
        ipi_ifindex: i32::try_from(out.ifindex).unwrap_or(0),
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(out.src).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let dest = SockaddrIn::from(out.dest);
    let iov = [IoSlice::new(&out.bytes)];
    let cmsg = [ControlMessage::Ipv4PacketInfo(&info)];
    retrying(|| sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&dest)))
}

/// A DHCPv6 reply to send (`src/dhcp/v6/`): here, beside IPv4's, because
/// the lease thread sends both after their commit.
#[derive(Debug, Clone)]
pub struct Outgoing6 {
    pub bytes: Vec<u8>,
    pub dest: SocketAddrV6,
    /// Leave by this interface (0: let routing decide, e.g. to a relay).
    pub ifindex: u32,
    /// The reply to send instead when the shared database refuses its
    /// binding (another server took the address first): the DHCPv6 wing's
    /// own rewrite, so that the lease thread needs no DHCPv6 code.
    pub refused: fn(&Outgoing6, &str) -> Option<Outgoing6>,
}

/// Sends out of `out.ifindex` (the kernel picks the source address on it).
pub fn send6(fd: RawFd, out: &Outgoing6) -> io::Result<()> {
    let info = libc::in6_pktinfo {
        ipi6_addr: libc::in6_addr { s6_addr: [0; 16] },
        ipi6_ifindex: out.ifindex,
    };
    let ip = *out.dest.ip();
    let scoped = crate::ra::packet::is_link_local(ip) || ip.is_multicast();
    let scope = if scoped { out.ifindex } else { 0 };
    let dest = SockaddrIn6::from(SocketAddrV6::new(ip, out.dest.port(), 0, scope));
    let iov = [IoSlice::new(&out.bytes)];
    let cmsg = [ControlMessage::Ipv6PacketInfo(&info)];
    retrying(|| sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&dest)))
}

/// Runs one `sendmsg`, retrying briefly while the send buffer is full.
fn retrying(mut send: impl FnMut() -> nix::Result<usize>) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match send() {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EAGAIN) if tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_micros(50));
            }
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// A sending handle usable from any thread.
pub struct Sender {
    socket: std::net::UdpSocket,
}

impl Sender {
    pub fn new(socket: &std::net::UdpSocket) -> io::Result<Sender> {
        Ok(Sender {
            socket: socket.try_clone()?,
        })
    }

    pub fn send(&self, out: &Outgoing) -> io::Result<()> {
        send(self.socket.as_raw_fd(), out)
    }

    /// The socket, for [`super::batch::send_all`].
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// For a DHCPv6 socket.
    pub fn send6(&self, out: &Outgoing6) -> io::Result<()> {
        send6(self.socket.as_raw_fd(), out)
    }
}

/// One interface: name and addresses with prefix lengths.
#[derive(Debug, Clone, Default)]
pub struct Iface {
    pub name: String,
    pub addrs: Vec<(Ipv4Addr, u8)>,
    /// IPv6 addresses other than link-local ones (DHCPv6, `src/dhcp/v6/`).
    pub addrs6: Vec<Ipv6Addr>,
}

/// Interface index → addresses, re-read at most once a second when asked about
/// an interface it does not know, and every 10 s otherwise.
pub struct Interfaces {
    by_index: HashMap<u32, Iface>,
    read_at: Instant,
}

impl Interfaces {
    pub fn read() -> Interfaces {
        let mut by_index: HashMap<u32, Iface> = HashMap::new();
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for a in addrs {
                let Some(address) = a.address.as_ref() else {
                    continue;
                };
                if let Some(v6) = address.as_sockaddr_in6().map(|s| s.ip()) {
                    add_v6(&mut by_index, &a.interface_name, v6);
                    continue;
                }
                let Some(ip) = address.as_sockaddr_in().map(|s| s.ip()) else {
                    continue;
                };
                let prefix = a
                    .netmask
                    .as_ref()
                    .and_then(|s| s.as_sockaddr_in())
                    .map_or(32, |m| u32::from(m.ip()).count_ones() as u8);
                let Ok(index) = nix::net::if_::if_nametoindex(a.interface_name.as_str()) else {
                    continue;
                };
                let e = by_index.entry(index).or_default();
                e.name = a.interface_name.clone();
                e.addrs.push((ip, prefix));
            }
        }
        Interfaces {
            by_index,
            read_at: Instant::now(),
        }
    }

    /// Re-reads the table if it is old, or if `index` is unknown and the
    /// table is more than a second old (a new interface, or a new address).
    pub fn refresh(&mut self, index: u32) {
        let age = self.read_at.elapsed();
        if age > Duration::from_secs(10)
            || (!self.by_index.contains_key(&index) && age > Duration::from_secs(1))
        {
            *self = Interfaces::read();
        }
    }

    pub fn get(&self, index: u32) -> Option<&Iface> {
        self.by_index.get(&index)
    }

    pub fn all(&self) -> impl Iterator<Item = &Iface> {
        self.by_index.values()
    }
}

/// Records a global or unique-local IPv6 address of `name` (link-local ones
/// are useless in a boot URL and are not on any subnet).
fn add_v6(by_index: &mut HashMap<u32, Iface>, name: &str, ip: Ipv6Addr) {
    if crate::ra::packet::is_link_local(ip) || ip.is_loopback() || ip.is_unspecified() {
        return;
    }
    if let Ok(index) = nix::net::if_::if_nametoindex(name) {
        let e = by_index.entry(index).or_default();
        e.name = name.to_string();
        e.addrs6.push(ip);
    }
}
