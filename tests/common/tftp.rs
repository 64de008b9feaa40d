//! TFTP test helpers: raw packets and a client socket on 127.0.0.1.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

pub fn rrq(name: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut p = vec![0, 1];
    for s in [name, "octet"]
        .into_iter()
        .chain(options.iter().flat_map(|(k, v)| [*k, *v]))
    {
        p.extend_from_slice(s.as_bytes());
        p.push(0);
    }
    p
}

pub fn wrq(name: &str) -> Vec<u8> {
    let mut p = rrq(name, &[]);
    p[1] = 2;
    p
}

pub fn ack(block: u16) -> [u8; 4] {
    let b = block.to_be_bytes();
    [0, 4, b[0], b[1]]
}

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

pub fn opcode(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[0], p[1]])
}

/// ERROR code of a packet, or a panic with what it was instead.
pub fn error_code(p: &[u8]) -> u16 {
    assert_eq!(opcode(p), 5, "expected ERROR, got {p:?}");
    u16::from_be_bytes([p[2], p[3]])
}

pub fn oack_value(p: &[u8], name: &str) -> Option<String> {
    assert_eq!(opcode(p), 6, "expected OACK, got {p:?}");
    let mut f = p[2..].split(|&b| b == 0);
    while let (Some(k), Some(v)) = (f.next(), f.next()) {
        if k == name.as_bytes() {
            return Some(String::from_utf8_lossy(v).into_owned());
        }
    }
    None
}
