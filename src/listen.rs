//! What every listener shares, below the adapters that bind them (HTTP, TFTP,
//! DHCP) and the server that starts them: the one-line error an operator
//! sees when a port cannot be bound.

use std::net::SocketAddr;

/// Turns a bind failure into an error that names the port and the remedy.
pub fn bind_error(what: &str, addr: SocketAddr, err: std::io::Error) -> anyhow::Error {
    let remedy = match err.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "ports below 1024 need root or `setcap cap_net_bind_service=+ep $(command -v pxed)`, or set another port for {what} in machines.toml"
        ),
        std::io::ErrorKind::AddrInUse => {
            format!("another process is using it (`ss -lnptu | grep :{}`), or set another port for {what} in machines.toml", addr.port())
        }
        _ => format!("check the {what} address in machines.toml"),
    };
    anyhow::anyhow!("cannot listen on {addr} for {what}: {err}; {remedy}")
}

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a
/// dual-stack `[::]` listener sees from IPv4 clients) written as IPv4: for
/// logs, boot events and the URLs machines are told.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// On a socket bound to `[::]`, serve IPv4 clients too (IPv4-mapped),
/// whatever `net.ipv6.bindv6only` says: one listener for both families.
pub fn dual_stack(socket: socket2::SockRef<'_>, addr: SocketAddr) -> std::io::Result<()> {
    match addr {
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => socket.set_only_v6(false),
        _ => Ok(()),
    }
}
