//! DHCPv6 replies on the wire: an Advertise or Reply (RFC 8415 §8) with the
//! options pxed sends, and the Relay-Reply layers around it (§9.2). Written
//! with [`put`] rather than dhcproto's v6 encoder, which writes the user and
//! vendor class lengths as item counts (a vendor class `HTTPClient` came out
//! 6 bytes short) and cannot build a Relay-Reply (docs/decisions.md).

use std::net::Ipv6Addr;

use dhcproto::v6::MessageType;

use super::options::{code, put, Opts};
use super::packet::Relay;
use crate::dhcp::server::Outgoing6;

/// Enterprise number of the vendor class pxed echoes to HTTP Boot clients:
/// 343 (Intel), the one UEFI firmware sends.
const VENDOR_INTEL: u32 = 343;

/// RFC 8415 §21.13 status codes pxed sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success = 0,
    NoAddrsAvail = 2,
    NotOnLink = 4,
}

/// One address in an IA_NA: the address, preferred and valid lifetimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IaAddr {
    pub addr: Ipv6Addr,
    pub preferred: u32,
    pub valid: u32,
}

/// A message being written: type, transaction id, options.
#[derive(Debug, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new(kind: MessageType, xid: [u8; 3]) -> Writer {
        let mut buf = Vec::with_capacity(256);
        buf.push(u8::from(kind));
        buf.extend_from_slice(&xid);
        Writer { buf }
    }

    pub fn kind(&self) -> MessageType {
        MessageType::from(self.buf[0])
    }

    pub fn option(&mut self, code: u16, value: &[u8]) -> &mut Writer {
        put(&mut self.buf, code, value);
        self
    }

    pub fn status(&mut self, status: Status, message: &str) -> &mut Writer {
        let value = status_value(status, message);
        self.option(code::STATUS_CODE, &value)
    }

    /// An IA_NA with its addresses (T1 and T2 from the first one's preferred
    /// lifetime: 0.5 and 0.8 of it, RFC 8415 §21.4) or a status when it has
    /// none.
    pub fn ia_na(
        &mut self,
        iaid: u32,
        addrs: &[IaAddr],
        status: Option<(Status, &str)>,
    ) -> &mut Writer {
        let preferred = addrs.first().map_or(0, |a| a.preferred);
        let mut v = Vec::with_capacity(12 + addrs.len() * 28);
        v.extend_from_slice(&iaid.to_be_bytes());
        v.extend_from_slice(&(preferred / 2).to_be_bytes());
        v.extend_from_slice(
            &(u32::try_from(u64::from(preferred) * 4 / 5).unwrap_or(u32::MAX)).to_be_bytes(),
        );
        for a in addrs {
            let mut ia = Vec::with_capacity(24);
            ia.extend_from_slice(&a.addr.octets());
            ia.extend_from_slice(&a.preferred.to_be_bytes());
            ia.extend_from_slice(&a.valid.to_be_bytes());
            put(&mut v, code::IA_ADDR, &ia);
        }
        if let Some((s, message)) = status {
            put(&mut v, code::STATUS_CODE, &status_value(s, message));
        }
        self.option(code::IA_NA, &v)
    }

    /// Option 16 `HTTPClient`: UEFI HTTP Boot needs it in the Advertise
    /// ("Could not retrieve NBP file size" without it, BRIEF).
    pub fn http_client(&mut self) -> &mut Writer {
        let mut v = VENDOR_INTEL.to_be_bytes().to_vec();
        put_item(&mut v, b"HTTPClient");
        self.option(code::VENDOR_CLASS, &v)
    }

    /// Option 16 `PXEClient` in a proxy-mode reply: EDK2 counts an offer
    /// without an address as a proxy offer only with it, and then asks the
    /// proxy for the boot file on port 4011 (docs/decisions.md, "DHCPv6
    /// proxy mode"). Never in full mode: it would send the firmware there too.
    pub fn pxe_client(&mut self) -> &mut Writer {
        let mut v = VENDOR_INTEL.to_be_bytes().to_vec();
        put_item(&mut v, b"PXEClient");
        self.option(code::VENDOR_CLASS, &v)
    }

    pub fn dns(&mut self, servers: &[Ipv6Addr]) -> &mut Writer {
        let v: Vec<u8> = servers.iter().flat_map(|a| a.octets()).collect();
        self.option(code::DNS_SERVERS, &v)
    }

    /// Option 24 with one domain, in DNS wire format (validated in the
    /// config: letters, digits, '-' and '.', labels of at most 63).
    pub fn domain(&mut self, domain: &str) -> &mut Writer {
        let mut v = Vec::with_capacity(domain.len() + 2);
        for label in domain.split('.').filter(|l| !l.is_empty()) {
            let label = &label.as_bytes()[..label.len().min(63)];
            v.push(label.len() as u8);
            v.extend_from_slice(label);
        }
        v.push(0);
        self.option(code::DOMAIN_LIST, &v)
    }

    /// The message, wrapped in one Relay-Reply per relay it came through
    /// (`relays` outermost first, as parsed), each echoing its hop count,
    /// link and peer addresses and Interface-ID.
    pub fn finish(self, relays: &[Relay]) -> Vec<u8> {
        let mut msg = self.buf;
        for r in relays.iter().rev() {
            let mut out = Vec::with_capacity(msg.len() + 64);
            out.push(u8::from(MessageType::RelayRepl));
            out.push(r.hop_count);
            out.extend_from_slice(&r.link.octets());
            out.extend_from_slice(&r.peer.octets());
            if let Some(id) = &r.interface_id {
                put(&mut out, code::INTERFACE_ID, id);
            }
            put(&mut out, code::RELAY_MSG, &msg);
            msg = out;
        }
        msg
    }
}

/// The reply to send instead of `out` when the shared database refused its
/// binding (another server took the address first): the same message, relay
/// layers and destination, every IA_NA emptied with NoAddrsAvail and why.
/// The client starts over. `None` if `out` is not a reply pxed encoded.
pub fn unbound(out: &Outgoing6, why: &str) -> Option<Outgoing6> {
    Some(Outgoing6 {
        bytes: without_addresses(&out.bytes, why)?,
        ..out.clone()
    })
}

fn without_addresses(msg: &[u8], why: &str) -> Option<Vec<u8>> {
    let relay = msg.first() == Some(&u8::from(MessageType::RelayRepl));
    let header = if relay { 34 } else { 4 };
    let mut out = msg.get(..header)?.to_vec();
    for item in Opts::new(&msg[header..]) {
        let (c, v) = item.ok()?;
        match c {
            code::RELAY_MSG if relay => put(&mut out, c, &without_addresses(v, why)?),
            code::IA_NA if !relay => {
                let mut ia = v.get(..4)?.to_vec();
                ia.extend_from_slice(&[0; 8]);
                put(
                    &mut ia,
                    code::STATUS_CODE,
                    &status_value(Status::NoAddrsAvail, why),
                );
                put(&mut out, c, &ia);
            }
            _ => put(&mut out, c, v),
        }
    }
    Some(out)
}

fn status_value(status: Status, message: &str) -> Vec<u8> {
    let mut v = (status as u16).to_be_bytes().to_vec();
    v.extend_from_slice(message.as_bytes());
    v
}

/// A class data item: 2-byte length, value.
fn put_item(out: &mut Vec<u8>, item: &[u8]) {
    let len = u16::try_from(item.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&item[..usize::from(len)]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::v6::options::vendor_class_item;

    #[test]
    fn a_reply_reads_back_with_the_parser_and_dhcproto() {
        let mut w = Writer::new(MessageType::Reply, [1, 2, 3]);
        let addr = IaAddr {
            addr: "fd00::10".parse().unwrap(),
            preferred: 3600,
            valid: 3600,
        };
        w.option(code::CLIENT_ID, &[0, 3, 0, 1, 1, 2, 3, 4, 5, 6])
            .ia_na(7, &[addr], None)
            .http_client()
            .domain("lab.example")
            .status(Status::Success, "ok");
        let relay = Relay {
            hop_count: 0,
            link: "fd00::1".parse().unwrap(),
            peer: "fe80::1".parse().unwrap(),
            interface_id: Some(b"eth0".to_vec()),
            linklayer: None,
        };
        let bytes = w.finish(&[relay]);
        assert_eq!(bytes[0], 13);
        let inner = Opts::new(&bytes[34..]).get(code::RELAY_MSG).unwrap();
        assert_eq!(
            Opts::new(&bytes[34..]).get(code::INTERFACE_ID),
            Some(&b"eth0"[..])
        );
        assert_eq!(&inner[..4], &[7, 1, 2, 3]);
        let opts = || Opts::new(&inner[4..]);
        assert!(opts().every(0).next().is_none());
        assert_eq!(
            vendor_class_item(opts().get(code::VENDOR_CLASS).unwrap()),
            Some(&b"HTTPClient"[..])
        );
        assert_eq!(
            opts().get(code::DOMAIN_LIST),
            Some(&b"\x03lab\x07example\x00"[..])
        );
        let m = <dhcproto::v6::Message as dhcproto::Decodable>::from_bytes(inner).unwrap();
        let Some(dhcproto::v6::DhcpOption::IANA(ia)) = m.opts().get(dhcproto::v6::OptionCode::IANA)
        else {
            panic!("{m:?}")
        };
        assert_eq!((ia.id, ia.t1, ia.t2), (7, 1800, 2880));
        // Refused by the shared database: the same reply, no address.
        let out = Outgoing6 {
            bytes,
            dest: "[fe80::1]:547".parse().unwrap(),
            ifindex: 3,
            refused: unbound,
        };
        let lost = unbound(&out, "taken").unwrap();
        assert_eq!((lost.dest, lost.ifindex), (out.dest, 3));
        let inner = Opts::new(&lost.bytes[34..]).get(code::RELAY_MSG).unwrap();
        let ia = Opts::new(&inner[4..]).get(code::IA_NA).unwrap();
        assert_eq!(&ia[..4], &[0, 0, 0, 7]);
        assert_eq!(Opts::new(&ia[12..]).get(code::IA_ADDR), None);
        assert_eq!(
            Opts::new(&ia[12..]).get(code::STATUS_CODE),
            Some(&b"\x00\x02taken"[..])
        );
        assert!(Opts::new(&inner[4..]).get(code::VENDOR_CLASS).is_some());
        assert_eq!(
            unbound(
                &Outgoing6 {
                    bytes: vec![13, 0],
                    ..out
                },
                "x"
            )
            .map(|o| o.bytes),
            None
        );
    }
}
