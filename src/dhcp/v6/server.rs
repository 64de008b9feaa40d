//! DHCPv6 sockets: bind UDP 547 with `IPV6_RECVPKTINFO`, join
//! All_DHCP_Relay_Agents_and_Servers (ff02::1:2) on the served interfaces,
//! and receive with the interface each datagram arrived on. Sending (out of
//! that interface: a client's link-local address is only meaningful on its
//! own link) is `dhcp::server::send6`, which the lease thread shares.
//! Through `nix`, no `unsafe`.

use std::io::{self, IoSliceMut};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::RawFd;

use nix::libc;
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrIn6};
use socket2::{Domain, Protocol, Socket, Type};

/// ff02::1:2, where clients and relays send (RFC 8415 §7.1).
pub const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
/// Where replies to clients go (§7.2); relays listen on the server port.
pub const CLIENT_PORT: u16 = 546;
pub const SERVER_PORT: u16 = 547;
/// Where UEFI PXE asks a proxy for its boot file (and expects the answer from).
pub const BINL_PORT: u16 = 4011;

/// A bound, non-blocking UDP socket for DHCPv6. No `SO_REUSEADDR`: another
/// DHCPv6 server holding the port must make pxed fail, not split clients.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(true)?;
    s.set_nonblocking(true)?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    // Replies to link-local clients cross no router: 255 is what clients
    // and relays get from every other server too.
    s.set_multicast_hops_v6(255)?;
    setsockopt(&s, sockopt::Ipv6RecvPacketInfo, &true).map_err(io::Error::from)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Joins ff02::1:2 on interface `index`.
pub fn join(socket: &std::net::UdpSocket, index: u32) -> io::Result<()> {
    socket.join_multicast_v6(&ALL_SERVERS, index)
}

/// Where and how a datagram arrived.
#[derive(Debug, Clone, Copy)]
pub struct Arrival6 {
    pub len: usize,
    pub src: SocketAddrV6,
    pub ifindex: u32,
    /// The address it was sent to (ff02::1:2, or ours for a relay).
    pub dst: Ipv6Addr,
    pub truncated: bool,
}

/// One `recvmsg` with `IPV6_PKTINFO` (non-blocking: `WouldBlock` when empty).
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<Arrival6> {
    let buf_len = buf.len();
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrIn6>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let mut arrival = Arrival6 {
        len: msg.bytes.min(buf_len),
        src: msg.address.map_or(
            SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0),
            SocketAddrV6::from,
        ),
        ifindex: 0,
        dst: Ipv6Addr::UNSPECIFIED,
        truncated: msg.flags.contains(MsgFlags::MSG_TRUNC) || msg.bytes > buf_len,
    };
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::Ipv6PacketInfo(info) = c {
                arrival.ifindex = info.ipi6_ifindex;
                arrival.dst = Ipv6Addr::from(info.ipi6_addr.s6_addr);
            }
        }
    }
    Ok(arrival)
}
