//! Router Solicitation and Router Advertisement on the wire (RFC 4861 §4.1,
//! §4.2), no I/O. Hostile input stops here: [`parse_solicitation`] applies the
//! receiver checks of §6.1.1 that the kernel leaves to us (hop limit, code,
//! length, option lengths), and [`parse_advertisement`] those of §6.1.2 for the
//! `pxed check` probe. The ICMPv6 checksum is the kernel's job on a raw
//! ICMPv6 socket: it fills it in on send and drops bad ones on receive.
//!
//! The advertisement pxed sends: cur hop limit 0, router lifetime 0,
//! reachable time 0, retrans timer 0, the source link-layer address option,
//! and what [`Says`] adds. By default nothing: M = 0, O = 0, no prefix, no
//! RDNSS, no MTU, so a host that processes it learns nothing (RFC 4861
//! §6.3.4: zero fields are "unspecified", lifetime 0 is "not a default
//! router"), and iPXE ends its IPv6 autoconfiguration at once because M and
//! O are off. For IPv6 netboot (`[ipv6_ra] managed`/`other`) it sets M and/or
//! O, so iPXE runs DHCPv6, and names the boot network's prefix on-link (L = 1,
//! A = 0: no SLAAC address), so iPXE and the firmware know the server is on
//! the link; still never a default router.

use std::fmt;
use std::net::Ipv6Addr;

use crate::core::Mac;

pub const ROUTER_SOLICITATION: u8 = 133;
pub const ROUTER_ADVERTISEMENT: u8 = 134;
/// Every Neighbor Discovery packet must arrive with hop limit 255: proof it
/// was not forwarded by a router (RFC 4861 §6.1).
pub const ND_HOP_LIMIT: u8 = 255;
/// ff02::2, where hosts send their solicitations.
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
/// ff02::1, for advertisements to every host on the link.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

const SOLICITATION_LEN: usize = 8;
const ADVERTISEMENT_LEN: usize = 16;
const OPT_SOURCE_LL: u8 = 1;
const OPT_PREFIX_INFORMATION: u8 = 3;
/// Prefix information: on-link (RFC 4861 §4.6.2).
const PREFIX_ON_LINK: u8 = 0x80;
/// How long a host keeps an advertised prefix on-link (radvd's default
/// valid lifetime), and its preferred lifetime (unused without A = 1).
const PREFIX_VALID: u32 = 86_400;
const PREFIX_PREFERRED: u32 = 14_400;

/// What an advertisement says besides the fixed fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Says {
    /// M: addresses from DHCPv6.
    pub managed: bool,
    /// O: other configuration (the boot file URL) from DHCPv6.
    pub other: bool,
    /// Prefixes on this link (L = 1, A = 0).
    pub on_link: Vec<(Ipv6Addr, u8)>,
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("hop limit {0}, not 255 (forwarded, or not Neighbor Discovery)")]
    HopLimit(u8),
    #[error("ICMPv6 type {0}, expected {1}")]
    Type(u8, u8),
    #[error("code {0}, not 0")]
    Code(u8),
    #[error("{0} bytes, shorter than the fixed header")]
    Short(usize),
    #[error("longer than the {0}-byte receive buffer")]
    TooLong(usize),
    #[error("an option with length 0 or past the end of the packet")]
    OptionLength,
    #[error("a source link-layer address option from the unspecified address")]
    UnspecifiedWithLinkLayer,
    #[error("source {0} is not link-local")]
    NotLinkLocal(Ipv6Addr),
}

/// A valid Router Solicitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Solicitation {
    /// `None` from a host without an address yet (it must then get a
    /// multicast answer).
    pub source: Option<Ipv6Addr>,
    /// The solicitor's MAC, from its source link-layer address option.
    pub mac: Option<Mac>,
}

/// Checks a received Router Solicitation (`icmp` is the ICMPv6 message, from
/// the type byte on) as RFC 4861 §6.1.1 says.
pub fn parse_solicitation(
    icmp: &[u8],
    source: Ipv6Addr,
    hop_limit: u8,
) -> Result<Solicitation, Malformed> {
    header(icmp, ROUTER_SOLICITATION, SOLICITATION_LEN, hop_limit)?;
    let mut mac = None;
    for (kind, body) in options(&icmp[SOLICITATION_LEN..])? {
        if kind == OPT_SOURCE_LL {
            mac = ethernet(body);
        }
    }
    let source = (!source.is_unspecified()).then_some(source);
    if source.is_none() && mac.is_some() {
        return Err(Malformed::UnspecifiedWithLinkLayer);
    }
    Ok(Solicitation { source, mac })
}

/// The advertisement pxed sends (see the module doc), with the source
/// link-layer address option when the interface has a MAC (RFC 4861 §4.2:
/// "SHOULD be included"; iPXE and Linux then need no neighbour solicitation
/// to answer us).
pub fn advertisement(mac: Option<Mac>, says: &Says) -> Vec<u8> {
    let mut out = vec![0u8; ADVERTISEMENT_LEN];
    out[0] = ROUTER_ADVERTISEMENT;
    // Code, checksum (the kernel's), cur hop limit, router lifetime,
    // reachable time, retrans timer: all zero.
    out[5] = if says.managed { 0x80 } else { 0 } | if says.other { 0x40 } else { 0 };
    if let Some(Mac(bytes)) = mac {
        out.extend_from_slice(&[OPT_SOURCE_LL, 1]);
        out.extend_from_slice(&bytes);
    }
    for (prefix, len) in &says.on_link {
        out.extend_from_slice(&[OPT_PREFIX_INFORMATION, 4, *len, PREFIX_ON_LINK]);
        out.extend_from_slice(&PREFIX_VALID.to_be_bytes());
        out.extend_from_slice(&PREFIX_PREFERRED.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&prefix.octets());
    }
    out
}

/// A Router Solicitation (for the `pxed check` probe), with the source
/// link-layer address option when the sender has an address and a MAC.
pub fn solicitation(mac: Option<Mac>) -> Vec<u8> {
    let mut out = vec![0u8; SOLICITATION_LEN];
    out[0] = ROUTER_SOLICITATION;
    if let Some(Mac(bytes)) = mac {
        out.extend_from_slice(&[OPT_SOURCE_LL, 1]);
        out.extend_from_slice(&bytes);
    }
    out
}

/// What a received Router Advertisement says (the parts `pxed check` and the
/// tests look at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advertisement {
    pub router: Ipv6Addr,
    pub cur_hop_limit: u8,
    pub managed: bool,
    pub other: bool,
    /// Seconds; 0: not a default router.
    pub router_lifetime: u16,
    pub reachable_ms: u32,
    pub retrans_ms: u32,
    pub prefixes: usize,
    pub mac: Option<Mac>,
}

impl fmt::Display for Advertisement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "router {} (lifetime {} s, M={} O={}, {} prefix{})",
            self.router,
            self.router_lifetime,
            u8::from(self.managed),
            u8::from(self.other),
            self.prefixes,
            if self.prefixes == 1 { "" } else { "es" }
        )
    }
}

/// Checks a received Router Advertisement as RFC 4861 §6.1.2 says.
pub fn parse_advertisement(
    icmp: &[u8],
    source: Ipv6Addr,
    hop_limit: u8,
) -> Result<Advertisement, Malformed> {
    header(icmp, ROUTER_ADVERTISEMENT, ADVERTISEMENT_LEN, hop_limit)?;
    if !is_link_local(source) {
        return Err(Malformed::NotLinkLocal(source));
    }
    let mut ra = Advertisement {
        router: source,
        cur_hop_limit: icmp[4],
        managed: icmp[5] & 0x80 != 0,
        other: icmp[5] & 0x40 != 0,
        router_lifetime: u16::from_be_bytes([icmp[6], icmp[7]]),
        reachable_ms: u32::from_be_bytes([icmp[8], icmp[9], icmp[10], icmp[11]]),
        retrans_ms: u32::from_be_bytes([icmp[12], icmp[13], icmp[14], icmp[15]]),
        prefixes: 0,
        mac: None,
    };
    for (kind, body) in options(&icmp[ADVERTISEMENT_LEN..])? {
        match kind {
            OPT_SOURCE_LL => ra.mac = ethernet(body),
            OPT_PREFIX_INFORMATION => ra.prefixes += 1,
            _ => {}
        }
    }
    Ok(ra)
}

/// fe80::/10.
pub fn is_link_local(addr: Ipv6Addr) -> bool {
    addr.segments()[0] & 0xffc0 == 0xfe80
}

fn header(icmp: &[u8], kind: u8, min_len: usize, hop_limit: u8) -> Result<(), Malformed> {
    if hop_limit != ND_HOP_LIMIT {
        return Err(Malformed::HopLimit(hop_limit));
    }
    if icmp.len() < min_len {
        return Err(Malformed::Short(icmp.len()));
    }
    if icmp[0] != kind {
        return Err(Malformed::Type(icmp[0], kind));
    }
    if icmp[1] != 0 {
        return Err(Malformed::Code(icmp[1]));
    }
    Ok(())
}

/// The options of an ND message as (type, body after the 2-byte header);
/// every length must be non-zero and inside the packet (RFC 4861 §4.6).
fn options(mut rest: &[u8]) -> Result<Vec<(u8, &[u8])>, Malformed> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = match rest {
            [_, units, ..] if *units > 0 => usize::from(*units) * 8,
            _ => return Err(Malformed::OptionLength),
        };
        if len > rest.len() {
            return Err(Malformed::OptionLength);
        }
        out.push((rest[0], &rest[2..len]));
        rest = &rest[len..];
    }
    Ok(out)
}

/// An Ethernet address in a link-layer address option body.
fn ethernet(body: &[u8]) -> Option<Mac> {
    let bytes: [u8; 6] = body.get(..6)?.try_into().ok()?;
    Some(Mac(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe12, 0x3456);
    const MAC: Mac = Mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

    /// What iPXE sends: type 133, four reserved bytes, its MAC.
    fn ipxe_rs() -> Vec<u8> {
        vec![
            133, 0, 0x12, 0x34, 0, 0, 0, 0, 1, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56,
        ]
    }

    #[test]
    fn accepts_a_solicitation_and_reads_the_mac() {
        let rs = parse_solicitation(&ipxe_rs(), LL, 255).unwrap();
        assert_eq!(rs.source, Some(LL));
        assert_eq!(rs.mac, Some(MAC));
        let bare = parse_solicitation(&ipxe_rs()[..8], Ipv6Addr::UNSPECIFIED, 255).unwrap();
        assert_eq!(
            bare,
            Solicitation {
                source: None,
                mac: None
            }
        );
    }

    #[test]
    fn rejects_what_rfc_4861_says_to_drop() {
        let rs = ipxe_rs();
        assert_eq!(
            parse_solicitation(&rs, LL, 64),
            Err(Malformed::HopLimit(64))
        );
        let mut coded = rs.clone();
        coded[1] = 1;
        assert_eq!(parse_solicitation(&coded, LL, 255), Err(Malformed::Code(1)));
        assert_eq!(
            parse_solicitation(&rs[..7], LL, 255),
            Err(Malformed::Short(7))
        );
        let mut zero_len = rs.clone();
        zero_len[9] = 0;
        assert_eq!(
            parse_solicitation(&zero_len, LL, 255),
            Err(Malformed::OptionLength)
        );
        let mut too_long = rs.clone();
        too_long[9] = 2;
        assert_eq!(
            parse_solicitation(&too_long, LL, 255),
            Err(Malformed::OptionLength)
        );
        assert_eq!(
            parse_solicitation(&rs[..9], LL, 255),
            Err(Malformed::OptionLength)
        );
        assert_eq!(
            parse_solicitation(&rs, Ipv6Addr::UNSPECIFIED, 255),
            Err(Malformed::UnspecifiedWithLinkLayer)
        );
        assert_eq!(
            parse_solicitation(&advertisement(None, &Says::default()), LL, 255),
            Err(Malformed::Type(134, 133))
        );
    }

    #[test]
    fn the_advertisement_changes_nothing_for_any_host() {
        let bytes = advertisement(Some(MAC), &Says::default());
        assert_eq!(bytes.len(), 24);
        let ra = parse_advertisement(&bytes, LL, 255).unwrap();
        assert_eq!(
            ra,
            Advertisement {
                router: LL,
                cur_hop_limit: 0,
                managed: false,
                other: false,
                router_lifetime: 0,
                reachable_ms: 0,
                retrans_ms: 0,
                prefixes: 0,
                mac: Some(MAC),
            }
        );
        assert_eq!(advertisement(None, &Says::default()).len(), 16);
        assert_eq!(
            parse_advertisement(&bytes, "2001:db8::1".parse().unwrap(), 255),
            Err(Malformed::NotLinkLocal("2001:db8::1".parse().unwrap()))
        );
    }

    #[test]
    fn reads_a_real_router_advertisement() {
        // lifetime 1800, M=1, one prefix option (32 bytes), MTU option.
        let mut ra = vec![134, 0, 0, 0, 64, 0x80, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
        ra.extend_from_slice(&[3, 4, 64, 0xc0]);
        ra.extend_from_slice(&[0; 28]);
        ra.extend_from_slice(&[5, 1, 0, 0, 0, 0, 0x05, 0xdc]);
        let parsed = parse_advertisement(&ra, LL, 255).unwrap();
        assert!(parsed.managed && !parsed.other);
        assert_eq!(parsed.router_lifetime, 1800);
        assert_eq!(parsed.prefixes, 1);
        assert_eq!(
            parsed.to_string(),
            format!("router {LL} (lifetime 1800 s, M=1 O=0, 1 prefix)")
        );
    }

    /// IPv6 netboot: M and O set, the boot prefix on-link (not autonomous),
    /// still not a default router.
    #[test]
    fn a_boot_network_advertisement() {
        let says = Says {
            managed: true,
            other: true,
            on_link: vec![("fd97:e2e::".parse().unwrap(), 64)],
        };
        let ra = advertisement(Some(MAC), &says);
        let parsed = parse_advertisement(&ra, LL, 255).unwrap();
        assert!(parsed.managed && parsed.other);
        assert_eq!((parsed.router_lifetime, parsed.prefixes), (0, 1));
        let prefix = &ra[24..56];
        assert_eq!(&prefix[..4], &[3, 4, 64, 0x80], "on-link, not autonomous");
        assert_eq!(
            &prefix[16..],
            &"fd97:e2e::".parse::<Ipv6Addr>().unwrap().octets()
        );
    }

    #[test]
    fn the_probe_solicitation_is_well_formed() {
        let rs = solicitation(Some(MAC));
        assert_eq!(parse_solicitation(&rs, LL, 255).unwrap().mac, Some(MAC));
        assert_eq!(solicitation(None).len(), 8);
    }

    #[test]
    fn never_panics_on_any_prefix_or_byte_flip() {
        let rs = ipxe_rs();
        let ra = advertisement(Some(MAC), &Says::default());
        for base in [&rs, &ra] {
            for len in 0..=base.len() {
                let _ = parse_solicitation(&base[..len], LL, 255);
                let _ = parse_advertisement(&base[..len], LL, 255);
            }
            for i in 0..base.len() {
                for v in [0u8, 1, 0x7f, 0xff] {
                    let mut b = base.clone();
                    b[i] = v;
                    let _ = parse_solicitation(&b, LL, 255);
                    let _ = parse_advertisement(&b, LL, 255);
                }
            }
        }
    }
}
