//! TFTP test helpers: a client socket; packets from `wire.rs`.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

#[allow(unused_imports)] // not every test binary uses every helper
pub use super::wire::{ack, error_code, oack_value, opcode, rrq, wrq};

pub fn client() -> UdpSocket {
    // Any address: the same client reaches pxed on loopback and in a namespace.
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s
}

pub fn recv(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 65536];
    let (n, from) = s.recv_from(&mut buf).expect("a reply within 3 s");
    buf.truncate(n);
    (buf, from)
}
