//! The one walk over DHCPv6 option data (RFC 8415 §21.1: a 2-byte code, a
//! 2-byte length, the value), used for the options of a message, of a relay
//! message, of an IA_NA, and for the length-prefixed items of the user and
//! vendor class options (§21.15, §21.16). Every reader of raw DHCPv6 bytes in
//! pxed goes through [`Opts`]; all bounds checks live in [`Opts::next`].
//!
//! Hand-written rather than dhcproto's v6 decoder, which underflows on short
//! vendor class, status code and authentication options (`len - 4`), stops
//! silently at the first option it cannot read, and sorts what it read (see
//! docs/decisions.md, "DHCPv6 parsing").

use std::fmt;

/// Option codes pxed reads or writes (IANA "DHCPv6 Option Codes").
pub mod code {
    pub const CLIENT_ID: u16 = 1;
    pub const SERVER_ID: u16 = 2;
    pub const IA_NA: u16 = 3;
    pub const IA_TA: u16 = 4;
    pub const IA_ADDR: u16 = 5;
    pub const ORO: u16 = 6;
    pub const PREFERENCE: u16 = 7;
    pub const ELAPSED_TIME: u16 = 8;
    pub const RELAY_MSG: u16 = 9;
    pub const STATUS_CODE: u16 = 13;
    pub const RAPID_COMMIT: u16 = 14;
    pub const USER_CLASS: u16 = 15;
    pub const VENDOR_CLASS: u16 = 16;
    pub const INTERFACE_ID: u16 = 18;
    pub const DNS_SERVERS: u16 = 23;
    pub const DOMAIN_LIST: u16 = 24;
    /// RFC 5970: boot file URL, boot file parameters, client architecture.
    pub const BOOTFILE_URL: u16 = 59;
    pub const CLIENT_ARCH: u16 = 61;
    pub const NII: u16 = 62;
    /// RFC 6939: the client's link-layer address, added by the first relay.
    pub const CLIENT_LINKLAYER_ADDR: u16 = 79;
}

/// How a run of data is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Options: code, length, value.
    Options,
    /// Class items (user and vendor class data): length, value; no code
    /// (items read as code 0).
    Items,
}

/// An item whose length does not fit in the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overrun {
    pub code: u16,
    /// The length it claims; `None` when the data ends inside the header.
    pub claimed: Option<u16>,
    /// Bytes left after the header.
    pub left: usize,
}

impl fmt::Display for Overrun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.claimed {
            None => write!(f, "option {} has a cut-off header", self.code),
            Some(len) => write!(
                f,
                "option {} claims {len} bytes, only {} left",
                self.code, self.left
            ),
        }
    }
}

/// Iterates `(code, value)` over DHCPv6 option data. After the first
/// [`Overrun`] it yields nothing more.
#[derive(Debug, Clone)]
pub struct Opts<'a> {
    rest: &'a [u8],
    layout: Layout,
}

impl<'a> Opts<'a> {
    pub fn new(data: &'a [u8]) -> Opts<'a> {
        Opts {
            rest: data,
            layout: Layout::Options,
        }
    }

    /// The items of a user or vendor class option's data.
    pub fn items(data: &'a [u8]) -> Opts<'a> {
        Opts {
            rest: data,
            layout: Layout::Items,
        }
    }

    /// The first well-formed option with `code` before anything malformed.
    pub fn get(self, code: u16) -> Option<&'a [u8]> {
        self.map_while(Result::ok)
            .find_map(|(c, v)| (c == code).then_some(v))
    }

    /// Every well-formed option with `code` before anything malformed.
    pub fn every(self, code: u16) -> impl Iterator<Item = &'a [u8]> {
        self.map_while(Result::ok)
            .filter_map(move |(c, v)| (c == code).then_some(v))
    }

    fn stop(&mut self, e: Overrun) -> Option<Result<(u16, &'a [u8]), Overrun>> {
        self.rest = &[];
        Some(Err(e))
    }
}

impl<'a> Iterator for Opts<'a> {
    type Item = Result<(u16, &'a [u8]), Overrun>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let header = match self.layout {
            Layout::Options => 4,
            Layout::Items => 2,
        };
        let Some(head) = self.rest.get(..header) else {
            let code = match self.rest {
                [a, b, ..] if self.layout == Layout::Options => u16::from_be_bytes([*a, *b]),
                _ => 0,
            };
            return self.stop(Overrun {
                code,
                claimed: None,
                left: 0,
            });
        };
        let (code, len) = match *head {
            [c0, c1, l0, l1] => (u16::from_be_bytes([c0, c1]), u16::from_be_bytes([l0, l1])),
            [l0, l1] => (0, u16::from_be_bytes([l0, l1])),
            _ => (0, 0),
        };
        let tail = &self.rest[header..];
        let Some(value) = tail.get(..usize::from(len)) else {
            return self.stop(Overrun {
                code,
                claimed: Some(len),
                left: tail.len(),
            });
        };
        self.rest = &tail[usize::from(len)..];
        Some(Ok((code, value)))
    }
}

/// Whether user class data (option 15) holds the item `iPXE` (iPXE sends
/// `0004 69505845`).
pub fn is_ipxe_user_class(data: &[u8]) -> bool {
    Opts::items(data)
        .map_while(Result::ok)
        .any(|(_, item)| item == b"iPXE")
}

/// The first item of vendor class data (option 16: a 4-byte enterprise
/// number, then items), e.g. `PXEClient:Arch:00007:UNDI:003000`.
pub fn vendor_class_item(data: &[u8]) -> Option<&[u8]> {
    Opts::items(data.get(4..)?)
        .map_while(Result::ok)
        .next()
        .map(|(_, v)| v)
}

/// Appends one option to `out` (values longer than 65,535 bytes are cut:
/// pxed never builds one).
pub fn put(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&value[..usize::from(len)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(data: &[u8]) -> Vec<Result<(u16, Vec<u8>), Overrun>> {
        Opts::new(data)
            .map(|r| r.map(|(c, v)| (c, v.to_vec())))
            .collect()
    }

    #[test]
    fn options_and_overruns() {
        assert_eq!(walk(&[]), vec![]);
        assert_eq!(
            walk(&[0, 1, 0, 2, 9, 9, 0, 14, 0, 0]),
            vec![Ok((1, vec![9, 9])), Ok((14, vec![]))]
        );
        assert_eq!(
            walk(&[0, 1, 0, 5, 9]),
            vec![Err(Overrun {
                code: 1,
                claimed: Some(5),
                left: 1
            })]
        );
        assert_eq!(
            walk(&[0, 8, 0, 2, 0, 0, 0, 3]),
            vec![
                Ok((8, vec![0, 0])),
                Err(Overrun {
                    code: 3,
                    claimed: None,
                    left: 0
                })
            ]
        );
        assert_eq!(Opts::new(&[0, 1, 0, 1, 7, 0, 2, 0]).get(2), None);
        let two = [0, 6, 0, 0, 0, 6, 0, 2, 0, 59];
        assert_eq!(Opts::new(&two).every(6).count(), 2);
    }

    #[test]
    fn classes() {
        assert!(is_ipxe_user_class(b"\x00\x04iPXE"));
        assert!(is_ipxe_user_class(b"\x00\x01x\x00\x04iPXE"));
        assert!(!is_ipxe_user_class(b"iPXE"));
        assert!(!is_ipxe_user_class(b"\x00\x05iPXE"));
        assert!(!is_ipxe_user_class(b""));
        let vc = b"\x00\x00\x01\x57\x00\x20PXEClient:Arch:00007:UNDI:003000";
        assert_eq!(
            vendor_class_item(vc),
            Some(&b"PXEClient:Arch:00007:UNDI:003000"[..])
        );
        assert_eq!(vendor_class_item(b"\x00\x00"), None);
        assert_eq!(vendor_class_item(b"\x00\x00\x01\x57\x00\x09HTTP"), None);
    }
}
