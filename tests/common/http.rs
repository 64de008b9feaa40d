//! HTTP test helpers: one request on a fresh connection, read to the end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// Sends `request` as is and reads the whole response: (head, body).
pub fn raw(addr: SocketAddr, request: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end")
        + 4;
    (
        String::from_utf8_lossy(&buf[..split]).into_owned(),
        buf[split..].to_vec(),
    )
}

/// GET with `Connection: close`: (head, body as text).
pub fn get(addr: SocketAddr, path_and_query: &str) -> (String, String) {
    let (head, body) = raw(
        addr,
        &format!("GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    (head, String::from_utf8(body).unwrap())
}
