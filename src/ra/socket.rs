//! The raw ICMPv6 socket of the responder and of the `pxed check` probe:
//! kernel-side filtering to one ICMPv6 type, hop limit 255 on everything sent,
//! the receiving interface and hop limit of everything received
//! (`IPV6_PKTINFO`, `IPV6_HOPLIMIT`), and sending out of a given interface
//! from its link-local address. Also the interface facts both need: index,
//! link-local address, MAC.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

use nix::libc;
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrIn6,
};
use socket2::{Domain, Protocol, Socket, Type};

use super::packet::{is_link_local, ND_HOP_LIMIT};
use crate::core::Mac;

/// `ICMP6_FILTER` from `<netinet/icmp6.h>` (level `IPPROTO_ICMPV6`); the
/// `libc` crate does not define it.
const ICMP6_FILTER: libc::c_int = 1;

/// A raw ICMPv6 socket that receives only `icmp_type` and sends with hop
/// limit 255; `loop_multicast` lets this host's own sockets hear what it sends
/// to a multicast group. Needs `CAP_NET_RAW`.
pub fn open(icmp_type: u8, loop_multicast: bool) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    pass_only(s.as_raw_fd(), icmp_type)?;
    s.set_unicast_hops_v6(u32::from(ND_HOP_LIMIT))?;
    s.set_multicast_hops_v6(u32::from(ND_HOP_LIMIT))?;
    s.set_multicast_loop_v6(loop_multicast)?;
    setsockopt(&s, sockopt::Ipv6RecvPacketInfo, &true).map_err(io::Error::from)?;
    setsockopt(&s, sockopt::Ipv6RecvHopLimit, &true).map_err(io::Error::from)?;
    Ok(s)
}

/// Lets the kernel deliver only ICMPv6 type `icmp_type` to the socket, so the
/// responder never wakes up for the neighbour and multicast traffic that a
/// raw ICMPv6 socket otherwise sees.
fn pass_only(fd: RawFd, icmp_type: u8) -> io::Result<()> {
    // Linux's `struct icmp6_filter`: 256 bits, a set bit blocks that type.
    let mut filter = [u32::MAX; 8];
    filter[usize::from(icmp_type >> 5)] &= !(1u32 << (icmp_type & 31));
    let len = libc::socklen_t::try_from(std::mem::size_of_val(&filter))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `fd` is an open socket owned by the caller; the option value
    // points to `filter`, which lives until the call returns, and `len` is its
    // exact size, the `struct icmp6_filter` layout the kernel reads. Neither
    // nix nor socket2 offers this option.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_ICMPV6,
            ICMP6_FILTER,
            filter.as_ptr().cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One received ICMPv6 message: where from, on which interface, with which
/// hop limit.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub len: usize,
    pub source: Ipv6Addr,
    pub ifindex: u32,
    /// 0 when the kernel did not say (then the packet fails validation).
    pub hop_limit: u8,
    pub truncated: bool,
}

/// One `recvmsg` (non-blocking sockets: `WouldBlock` when empty).
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<Arrival> {
    let buf_len = buf.len();
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo, libc::c_int);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrIn6>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let mut arrival = Arrival {
        len: msg.bytes.min(buf_len),
        source: msg.address.map_or(Ipv6Addr::UNSPECIFIED, |a| a.ip()),
        ifindex: 0,
        hop_limit: 0,
        truncated: msg.flags.contains(MsgFlags::MSG_TRUNC) || msg.bytes > buf_len,
    };
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv6PacketInfo(info) => arrival.ifindex = info.ipi6_ifindex,
                ControlMessageOwned::Ipv6HopLimit(h) => {
                    arrival.hop_limit = u8::try_from(h).unwrap_or(0);
                }
                _ => {}
            }
        }
    }
    Ok(arrival)
}

/// Sends `icmp` out of `ifindex` from `source` to `dest` (link-local or
/// link-scope multicast, so scoped to that interface).
pub fn send(
    fd: RawFd,
    icmp: &[u8],
    ifindex: u32,
    source: Ipv6Addr,
    dest: Ipv6Addr,
) -> io::Result<()> {
    let info = libc::in6_pktinfo {
        ipi6_addr: libc::in6_addr {
            s6_addr: source.octets(),
        },
        ipi6_ifindex: ifindex,
    };
    let to = SockaddrIn6::from(SocketAddrV6::new(dest, 0, 0, ifindex));
    let iov = [IoSlice::new(icmp)];
    let cmsg = [ControlMessage::Ipv6PacketInfo(&info)];
    sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&to))
        .map(|_| ())
        .map_err(io::Error::from)
}

/// What the responder and the probe need to know about one interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    /// The address advertisements must come from (RFC 4861 §4.2). `None`
    /// until the kernel has one (an interface without carrier has none).
    pub link_local: Option<Ipv6Addr>,
    /// Its other IPv6 addresses (global, unique local).
    pub global: Vec<Ipv6Addr>,
    pub mac: Option<Mac>,
    /// Whether it has an IPv4 address (the probe's "boot interfaces" when
    /// DHCP listens everywhere).
    pub has_ipv4: bool,
    pub loopback: bool,
}

/// Every interface, read with `getifaddrs`.
pub fn links() -> Vec<Link> {
    let mut out: Vec<Link> = Vec::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for a in addrs {
        let Ok(index) = nix::net::if_::if_nametoindex(a.interface_name.as_str()) else {
            continue;
        };
        let at = match out.iter().position(|l| l.index == index) {
            Some(i) => i,
            None => {
                out.push(Link {
                    name: a.interface_name.clone(),
                    index,
                    loopback: a
                        .flags
                        .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK),
                    ..Link::default()
                });
                out.len() - 1
            }
        };
        let link = &mut out[at];
        let Some(addr) = a.address.as_ref() else {
            continue;
        };
        if let Some(v6) = addr.as_sockaddr_in6() {
            if is_link_local(v6.ip()) {
                link.link_local = link.link_local.or(Some(v6.ip()));
            } else if !v6.ip().is_loopback() {
                link.global.push(v6.ip());
            }
        } else if addr.as_sockaddr_in().is_some() {
            link.has_ipv4 = true;
        } else if let Some(mac) = addr.as_link_addr().and_then(|l| l.addr()) {
            if mac != [0; 6] {
                link.mac = Some(Mac(mac));
            }
        }
    }
    out
}

/// The interface named `name`.
pub fn link(name: &str) -> Option<Link> {
    links().into_iter().find(|l| l.name == name)
}

/// The interface with index `index`.
pub fn link_by_index(index: u32) -> Option<Link> {
    links().into_iter().find(|l| l.index == index)
}
