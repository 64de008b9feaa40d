//! The HTTP side of a simulated iPXE: GET over one keep-alive connection
//! (HTTP/1.1, `Content-Length` bodies, as iPXE reads them), and the expansion
//! of iPXE settings (`${mac}`, `${product:uristring}`, …) in a `chain` URL.

use std::net::SocketAddr;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `http://host:port/path?query` split into where to connect and what to ask.
pub fn split_url(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http:// URL: {url:?}"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = addr
        .parse()
        .map_err(|e| format!("{authority:?} is not ip:port ({e})"))?;
    let path = if path.is_empty() { "/" } else { path };
    Ok((addr, path.to_string()))
}

/// One client connection, reused while the server keeps it open.
#[derive(Default)]
pub struct Client {
    conn: Option<(SocketAddr, TcpStream)>,
}

impl Client {
    /// GET `url`; the body of a 200, or why not.
    pub async fn get(&mut self, url: &str) -> Result<String, String> {
        let (addr, target) = split_url(url)?;
        match self.conn.take() {
            Some((a, stream)) if a == addr => self.conn = Some((a, stream)),
            _ => {
                let stream = TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("connect {addr}: {e}"))?;
                let _ = stream.set_nodelay(true);
                self.conn = Some((addr, stream));
            }
        }
        let Some((_, stream)) = self.conn.as_mut() else {
            return Err("no connection".into());
        };
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: iPXE/1.21.1 (storm)\r\nConnection: keep-alive\r\n\r\n"
        );
        let result = exchange(stream, request.as_bytes()).await;
        match &result {
            Ok((_, keep)) if *keep => {}
            _ => self.conn = None,
        }
        result.map(|(body, _)| body)
    }
}

/// Writes `request`, reads one response; returns the body of a 200 and
/// whether the connection stays open.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Result<(String, bool), String> {
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err("response head over 64 KiB".into());
        }
        let mut chunk = [0u8; 4096];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before a response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap_or("?").to_string();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    // iPXE pre-sizes its buffer with Content-Length; a response without one
    // is a failure here too.
    let length: usize = header("content-length")
        .ok_or("no Content-Length")?
        .parse()
        .map_err(|_| "bad Content-Length")?;
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read body: {e}"))?;
        if n == 0 {
            return Err(format!("body cut at {} of {length} bytes", body.len()));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    if status != "200" {
        return Err(format!("status {status}"));
    }
    let keep = !header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
    Ok((String::from_utf8_lossy(&body).into_owned(), keep))
}

/// What iPXE's `:uristring` leaves unescaped: letters, digits, `-_.~`.
const URISTRING: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Expands `${name}` and `${name:uristring}` in `text` as iPXE would, from
/// `setting(name)`; an unknown setting expands to nothing (as in iPXE).
pub fn expand(text: &str, setting: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &rest[start + 2..start + len];
        let (name, kind) = inner.split_once(':').unwrap_or((inner, ""));
        let value = setting(name).unwrap_or_default();
        match kind {
            "uristring" => out.extend(utf8_percent_encode(&value, URISTRING)),
            _ => out.push_str(&value),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

/// The URL of the first `chain` command in an iPXE script.
pub fn chain_url(script: &str) -> Option<&str> {
    script.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next()? == "chain").then_some(())?;
        words.find(|w| !w.starts_with("--"))
    })
}
