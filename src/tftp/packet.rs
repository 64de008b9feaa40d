//! The TFTP wire format (RFC 1350, with the option extension of RFC 2347 and
//! the options of RFC 2348 blksize, 2349 timeout/tsize and 7440 windowsize):
//! parsing what clients send and building what the server sends. Pure: no I/O,
//! no panics on any input.

use std::fmt::Write as _;

pub const RRQ: u16 = 1;
pub const WRQ: u16 = 2;
pub const DATA: u16 = 3;
pub const ACK: u16 = 4;
pub const ERROR: u16 = 5;
pub const OACK: u16 = 6;

/// TFTP error codes (RFC 1350 §5, RFC 2347).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    Undefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
}

/// The transfer mode of a request. Only octet and netascii exist in practice
/// (`mail` is obsolete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Octet,
    Netascii,
}

/// Options a client asked for that this server understands. Values outside the
/// ranges the RFCs allow are dropped (the option is then simply not
/// acknowledged), never an error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// RFC 2348: 8..=65464.
    pub blksize: Option<u16>,
    /// RFC 2349: the client sends 0 in an RRQ and gets the size back.
    pub tsize: bool,
    /// RFC 2349: retransmission timeout in seconds, 1..=255.
    pub timeout: Option<u8>,
    /// RFC 7440: 1..=65535 blocks per window.
    pub windowsize: Option<u16>,
}

/// A read or write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub filename: String,
    pub mode: Mode,
    pub options: Options,
}

/// A packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Rrq(Request),
    Wrq(Request),
    Ack(u16),
    Error {
        code: u16,
        message: String,
    },
    /// DATA or OACK: valid TFTP, but never sent to a read-only server.
    Unexpected(u16),
}

impl Packet {
    /// The packet type in words, for the log.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Rrq(_) => "RRQ",
            Packet::Wrq(_) => "WRQ",
            Packet::Ack(_) => "ACK",
            Packet::Error { .. } => "ERROR",
            Packet::Unexpected(3) => "DATA",
            Packet::Unexpected(6) => "OACK",
            Packet::Unexpected(_) => "unexpected",
        }
    }
}

/// Why a datagram is not a TFTP packet this server can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("shorter than an opcode")]
    Short,
    #[error("unknown opcode {0}")]
    Opcode(u16),
    #[error("request without a NUL-terminated filename and mode")]
    Request,
    #[error("filename is not UTF-8")]
    Utf8,
    #[error("unknown transfer mode")]
    Mode,
    #[error("ACK of the wrong length")]
    Ack,
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// Parses one datagram from a client.
pub fn parse(bytes: &[u8]) -> Result<Packet, Malformed> {
    let opcode = u16_at(bytes, 0).ok_or(Malformed::Short)?;
    let body = &bytes[2..];
    match opcode {
        RRQ => Ok(Packet::Rrq(request(body)?)),
        WRQ => Ok(Packet::Wrq(request(body)?)),
        ACK => match body.len() {
            // Some clients pad small packets; the block number is what counts.
            2.. => u16_at(body, 0).map(Packet::Ack).ok_or(Malformed::Ack),
            _ => Err(Malformed::Ack),
        },
        ERROR => {
            let code = u16_at(body, 0).ok_or(Malformed::Short)?;
            let text = &body[2..];
            let text = text.split(|&b| b == 0).next().unwrap_or_default();
            Ok(Packet::Error {
                code,
                message: String::from_utf8_lossy(text).into_owned(),
            })
        }
        DATA | OACK => Ok(Packet::Unexpected(opcode)),
        other => Err(Malformed::Opcode(other)),
    }
}

fn request(body: &[u8]) -> Result<Request, Malformed> {
    // filename NUL mode NUL [option NUL value NUL]*; a trailing unterminated
    // fragment (some clients pad) is ignored.
    let mut fields = body.split(|&b| b == 0);
    let filename = fields.next().ok_or(Malformed::Request)?;
    let mode = fields.next().ok_or(Malformed::Request)?;
    if !body.contains(&0) || body.iter().filter(|&&b| b == 0).count() < 2 {
        return Err(Malformed::Request);
    }
    let filename = std::str::from_utf8(filename).map_err(|_| Malformed::Utf8)?;
    let mode = if mode.eq_ignore_ascii_case(b"octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case(b"netascii") {
        Mode::Netascii
    } else {
        return Err(Malformed::Mode);
    };
    let mut options = Options::default();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        let value = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok());
        let Some(value) = value else { continue };
        if name.eq_ignore_ascii_case(b"blksize") {
            options.blksize = (8..=65464).contains(&value).then_some(value as u16);
        } else if name.eq_ignore_ascii_case(b"tsize") {
            options.tsize = true;
        } else if name.eq_ignore_ascii_case(b"timeout") {
            options.timeout = (1..=255).contains(&value).then_some(value as u8);
        } else if name.eq_ignore_ascii_case(b"windowsize") {
            options.windowsize = (1..=65535).contains(&value).then_some(value as u16);
        }
    }
    Ok(Request {
        filename: filename.to_string(),
        mode,
        options,
    })
}

/// Appends a DATA packet header to `out`; the caller appends the payload.
pub fn data_header(out: &mut Vec<u8>, block: u16) {
    out.extend_from_slice(&DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
}

pub fn error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len());
    out.extend_from_slice(&ERROR.to_be_bytes());
    out.extend_from_slice(&(code as u16).to_be_bytes());
    out.extend_from_slice(message.as_bytes());
    out.push(0);
    out
}

/// What the server accepted, acknowledged in an OACK.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accepted {
    pub blksize: Option<u16>,
    pub tsize: Option<u64>,
    pub timeout: Option<u8>,
    pub windowsize: Option<u16>,
}

impl Accepted {
    pub fn is_empty(&self) -> bool {
        *self == Accepted::default()
    }

    pub fn oack(&self) -> Vec<u8> {
        let mut text = String::new();
        let mut put = |name: &str, value: Option<u64>| {
            if let Some(v) = value {
                let _ = write!(text, "{name}\0{v}\0");
            }
        };
        put("blksize", self.blksize.map(u64::from));
        put("tsize", self.tsize);
        put("timeout", self.timeout.map(u64::from));
        put("windowsize", self.windowsize.map(u64::from));
        let mut out = OACK.to_be_bytes().to_vec();
        out.extend_from_slice(text.as_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(parts: &[&str]) -> Vec<u8> {
        let mut p = RRQ.to_be_bytes().to_vec();
        for part in parts {
            p.extend_from_slice(part.as_bytes());
            p.push(0);
        }
        p
    }

    #[test]
    fn requests_with_options() {
        let p = parse(&rrq(&[
            "undionly.kpxe",
            "OCTET",
            "tsize",
            "0",
            "BlkSize",
            "1468",
            "windowsize",
            "16",
            "timeout",
            "3",
            "unknown",
            "x",
        ]))
        .unwrap();
        assert_eq!(
            p,
            Packet::Rrq(Request {
                filename: "undionly.kpxe".into(),
                mode: Mode::Octet,
                options: Options {
                    blksize: Some(1468),
                    tsize: true,
                    timeout: Some(3),
                    windowsize: Some(16)
                }
            })
        );
    }

    #[test]
    fn out_of_range_options_are_dropped() {
        let Packet::Rrq(r) = parse(&rrq(&[
            "f",
            "netascii",
            "blksize",
            "7",
            "timeout",
            "0",
            "windowsize",
            "0",
        ]))
        .unwrap() else {
            panic!()
        };
        assert_eq!(r.mode, Mode::Netascii);
        assert_eq!(r.options, Options::default());
    }

    #[test]
    fn garbage_never_panics() {
        for bad in [
            &[][..],
            &[0],
            &[0, 1],
            &[0, 1, b'a'],
            &[0, 1, b'a', 0],
            &[0, 1, b'a', 0, b'x', 0],
            &[0, 4, 1],
            &[0, 9, 0, 0],
            &[0, 1, 0xff, 0, b'o', b'c', b't', b'e', b't', 0],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse(&[0, 5, 0, 8]).unwrap(),
            Packet::Error {
                code: 8,
                message: String::new()
            }
        );
        assert_eq!(parse(&[0, 4, 0, 7, 0]).unwrap(), Packet::Ack(7));
        // Every prefix and byte flip of a valid request parses or fails cleanly.
        let good = rrq(&["a/b", "octet", "blksize", "1468", "tsize", "0"]);
        for n in 0..good.len() {
            let _ = parse(&good[..n]);
            for bit in 0..8 {
                let mut flipped = good.clone();
                flipped[n] ^= 1 << bit;
                let _ = parse(&flipped);
            }
        }
    }

    #[test]
    fn oack_and_error_bytes() {
        let a = Accepted {
            blksize: Some(1468),
            tsize: Some(74213),
            ..Accepted::default()
        };
        assert_eq!(
            a.oack(),
            b"\0\x06blksize\x001468\0tsize\x0074213\0".to_vec()
        );
        assert_eq!(
            error(ErrorCode::FileNotFound, "file not found"),
            b"\0\x05\0\x01file not found\0".to_vec()
        );
    }
}
