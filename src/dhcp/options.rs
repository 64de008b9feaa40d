//! The one walk over length-prefixed DHCPv4 data: the options of a message
//! (RFC 2132 §2), the sub-options of option 82 (RFC 3046) and the items of a
//! user class (RFC 3004). Every reader of raw option bytes in pxed goes
//! through [`Tlv`]: validation, the view handed to dhcproto, option 93,
//! option 82's circuit id and the iPXE user class. All bounds checks live in
//! [`Tlv::next`]; nothing here indexes past the data it was given.

use std::fmt;

/// Where the options start: the BOOTP header (236 bytes) and the magic cookie.
pub const OPTIONS_START: usize = 240;

/// How a run of length-prefixed data is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Options: code, length, value; code 0 is one byte of padding and code
    /// 255 ends the list.
    Options,
    /// Sub-options (option 82): code, length, value; no padding, no end.
    SubOptions,
    /// User class items: length, value (no code; items read as code 0). An
    /// item of length 0 is malformed (RFC 3004 §4).
    Items,
}

/// An item whose length does not fit in the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overrun {
    pub code: u8,
    /// The length it claims; `None` when the data ends before the length byte.
    pub claimed: Option<u8>,
    /// Bytes left after the length byte.
    pub left: usize,
}

impl fmt::Display for Overrun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.claimed {
            None => write!(f, "option {} has no length byte", self.code),
            Some(0) => write!(f, "an item of length 0"),
            Some(len) => write!(
                f,
                "option {} claims {len} bytes, only {} left",
                self.code, self.left
            ),
        }
    }
}

/// Iterates `(code, value)` over length-prefixed data. After the first
/// [`Overrun`] it yields nothing more.
#[derive(Debug, Clone)]
pub struct Tlv<'a> {
    rest: &'a [u8],
    layout: Layout,
}

impl<'a> Tlv<'a> {
    pub fn new(data: &'a [u8], layout: Layout) -> Tlv<'a> {
        Tlv { rest: data, layout }
    }

    /// The options of a whole message (empty when it is shorter than the header).
    pub fn options(message: &'a [u8]) -> Tlv<'a> {
        Tlv::new(message.get(OPTIONS_START..).unwrap_or(&[]), Layout::Options)
    }

    /// The first well-formed item with `code` before anything malformed.
    pub fn get(self, code: u8) -> Option<&'a [u8]> {
        self.map_while(Result::ok)
            .find_map(|(c, v)| (c == code).then_some(v))
    }

    fn stop(&mut self, e: Overrun) -> Option<Result<(u8, &'a [u8]), Overrun>> {
        self.rest = &[];
        Some(Err(e))
    }
}

impl<'a> Iterator for Tlv<'a> {
    type Item = Result<(u8, &'a [u8]), Overrun>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.layout == Layout::Options {
            while let [0, tail @ ..] = self.rest {
                self.rest = tail;
            }
            if let [255, ..] = self.rest {
                self.rest = &[];
            }
        }
        let (code, after) = match (self.layout, self.rest) {
            (_, []) => return None,
            (Layout::Items, rest) => (0, rest),
            (_, [code, rest @ ..]) => (*code, rest),
        };
        let Some((&len, tail)) = after.split_first() else {
            return self.stop(Overrun {
                code,
                claimed: None,
                left: 0,
            });
        };
        let overrun = Overrun {
            code,
            claimed: Some(len),
            left: tail.len(),
        };
        if len == 0 && self.layout == Layout::Items {
            return self.stop(overrun);
        }
        let Some(value) = tail.get(..usize::from(len)) else {
            return self.stop(overrun);
        };
        self.rest = &tail[usize::from(len)..];
        Some(Ok((code, value)))
    }
}

/// Sub-option 1 (agent circuit id) of an option 82 payload, if well formed.
pub fn circuit_id(info: &[u8]) -> Option<&[u8]> {
    Tlv::new(info, Layout::SubOptions).get(1)
}

/// Whether option 77 holds `iPXE`: iPXE sends the raw bytes; RFC 3004 clients
/// send length-prefixed items. Both forms are accepted.
pub fn is_ipxe_user_class(option77: &[u8]) -> bool {
    option77 == b"iPXE"
        || Tlv::new(option77, Layout::Items)
            .map_while(Result::ok)
            .any(|(_, item)| item == b"iPXE")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(data: &[u8], layout: Layout) -> Vec<Result<(u8, Vec<u8>), Overrun>> {
        Tlv::new(data, layout)
            .map(|r| r.map(|(c, v)| (c, v.to_vec())))
            .collect()
    }

    #[test]
    fn options_skip_pads_stop_at_end_and_report_overruns() {
        type Case = (&'static [u8], Layout, Vec<Result<(u8, Vec<u8>), Overrun>>);
        let over = |code, claimed, left| {
            Err(Overrun {
                code,
                claimed,
                left,
            })
        };
        let cases: Vec<Case> = vec![
            (&[], Layout::Options, vec![]),
            (&[0, 0, 255, 53, 1, 1], Layout::Options, vec![]),
            (
                &[53, 1, 1, 0, 60, 0, 255],
                Layout::Options,
                vec![Ok((53, vec![1])), Ok((60, vec![]))],
            ),
            (&[53, 1, 1], Layout::Options, vec![Ok((53, vec![1]))]),
            (&[53], Layout::Options, vec![over(53, None, 0)]),
            (&[60, 9, b'P'], Layout::Options, vec![over(60, Some(9), 1)]),
            (
                &[53, 1, 1, 60, 200, 1, 53, 1, 1],
                Layout::Options,
                vec![Ok((53, vec![1])), over(60, Some(200), 4)],
            ),
            // In option 82, 0 and 255 are codes like any other.
            (
                &[0, 1, 7, 255, 0, 1, 1, 9],
                Layout::SubOptions,
                vec![Ok((0, vec![7])), Ok((255, vec![])), Ok((1, vec![9]))],
            ),
            (
                &[1, 200, 7],
                Layout::SubOptions,
                vec![over(1, Some(200), 1)],
            ),
            (
                &[4, b'i', b'P', b'X', b'E', 1, b'x'],
                Layout::Items,
                vec![Ok((0, b"iPXE".to_vec())), Ok((0, b"x".to_vec()))],
            ),
            (&[0, 4, b'i'], Layout::Items, vec![over(0, Some(0), 2)]),
        ];
        for (data, layout, want) in cases {
            assert_eq!(walk(data, layout), want, "{data:?} as {layout:?}");
        }
    }

    #[test]
    fn get_stops_at_the_first_malformed_item() {
        let mut msg = vec![0u8; OPTIONS_START];
        msg.extend_from_slice(&[53, 1, 1, 93, 2, 0, 7, 255, 93, 2, 0, 9]);
        assert_eq!(Tlv::options(&msg).get(93), Some(&[0u8, 7][..]));
        assert_eq!(Tlv::options(&msg).get(60), None);
        assert_eq!(Tlv::options(&msg[..100]).get(53), None);
        let mut bad = vec![0u8; OPTIONS_START];
        bad.extend_from_slice(&[60, 50, 93, 2, 0, 7]);
        assert_eq!(Tlv::options(&bad).get(93), None);
    }

    #[test]
    fn option_82_walk_is_bounds_checked() {
        assert_eq!(circuit_id(&[1, 2, 7, 8]), Some(&[7u8, 8][..]));
        assert_eq!(circuit_id(&[2, 1, 0, 1, 1, 9]), Some(&[9u8][..]));
        assert_eq!(circuit_id(&[1, 200, 7]), None);
        assert_eq!(circuit_id(&[2, 5, 1]), None);
        assert_eq!(circuit_id(&[1]), None);
        assert_eq!(circuit_id(&[]), None);
    }

    #[test]
    fn user_class_forms() {
        for (bytes, want) in [
            (&b"iPXE"[..], true),
            (b"\x04iPXE", true),
            (b"\x03abc\x04iPXE", true),
            (b"\x04iPXE\x03abc", true),
            (b"\x04gPXE", false),
            (b"ipxe", false),
            (b"iPXE\x00", false),
            (b"", false),
            (b"\x09iPXE", false),
            (b"\x00\x04iPXE", false),
            (b"\x03abc\x00\x04iPXE", false),
            (b"\xff", false),
            (b"\x05iPXE2", false),
        ] {
            assert_eq!(is_ipxe_user_class(bytes), want, "{bytes:?}");
        }
    }
}
