//! The DHCPv6 parser: what it reads from the firmware, iPXE and relays, and
//! what it refuses.

use super::*;
use crate::dhcp::v6::testing::{duid_llt, ia_na, link_local, message, relay_forw, Sender, MAC};

const OTHER: [u8; 6] = [0x52, 0x54, 0, 0xaa, 0xbb, 0xcc];

fn solicit(sender: Sender) -> Vec<u8> {
    message(
        MessageType::Solicit,
        sender,
        MAC,
        &[(code::IA_NA, ia_na(7, &[]))],
    )
}

#[test]
fn reads_what_boot_needs_from_each_client() {
    let fw = parse(&solicit(Sender::Firmware), link_local(MAC)).unwrap();
    assert_eq!(fw.kind, MessageType::Solicit);
    assert_eq!(fw.xid, [0x0a, 0x0b, 0x0c]);
    assert_eq!(fw.arch, Some(Arch::EfiX64));
    assert_eq!(fw.vendor, VendorClass::Pxe);
    assert!(!fw.ipxe);
    assert_eq!(
        fw.ia_na,
        vec![IaNa {
            iaid: 7,
            addrs: vec![]
        }]
    );
    assert!(fw.wants(code::BOOTFILE_URL));
    assert_eq!(fw.mac, Some((Mac(MAC), MacFrom::LinkLocal)));

    let http = parse(&solicit(Sender::HttpBoot), link_local(MAC)).unwrap();
    assert_eq!(http.arch, Some(Arch::HttpX64));
    assert_eq!(http.vendor, VendorClass::Http);

    // iPXE: user class, and a DUID that says nothing about the machine.
    let ipxe = parse(&solicit(Sender::Ipxe), link_local(MAC)).unwrap();
    assert!(ipxe.ipxe);
    assert_eq!(ipxe.mac, Some((Mac(MAC), MacFrom::LinkLocal)));
    let client = ipxe.client().unwrap();
    assert_eq!(client.mac, Mac(MAC));
    assert!(client.ipxe);
}

#[test]
fn the_mac_comes_from_option_79_then_the_link_local_then_the_duid() {
    let fw = solicit(Sender::Firmware);
    // A link-local address that is not EUI-64 (stable privacy): the DUID-LLT.
    let privacy: Ipv6Addr = "fe80::1c2d:3e4f:5a6b:7c8d".parse().unwrap();
    let r = parse(&fw, privacy).unwrap();
    assert_eq!(r.mac, Some((Mac(MAC), MacFrom::Duid)));
    // iPXE from a non-EUI-64 address: nothing carries its MAC.
    let r = parse(&solicit(Sender::Ipxe), privacy).unwrap();
    assert_eq!(r.mac, None);
    assert!(r.client().is_none());
    // The link-local address beats a DUID naming another NIC.
    let r = parse(&fw, link_local(OTHER)).unwrap();
    assert_eq!(r.mac, Some((Mac(OTHER), MacFrom::LinkLocal)));
    // Relayed: the relay's peer address, and option 79 above all.
    let link: Ipv6Addr = "fd00:1::1".parse().unwrap();
    let relayed = relay_forw(&fw, link, link_local(OTHER), &[]);
    let r = parse(&relayed, "fd00::2".parse().unwrap()).unwrap();
    assert_eq!(r.mac, Some((Mac(OTHER), MacFrom::LinkLocal)));
    let opt79 = [&[0, 1][..], &OTHER].concat();
    let relayed = relay_forw(&fw, link, privacy, &[(code::CLIENT_LINKLAYER_ADDR, opt79)]);
    let r = parse(&relayed, "fd00::2".parse().unwrap()).unwrap();
    assert_eq!(r.mac, Some((Mac(OTHER), MacFrom::RelayOption79)));
    assert_eq!(r.relays.len(), 1);
    assert_eq!(r.first_relay().unwrap().link, link);
    // Not Ethernet in option 79, DUID-LL of another hardware type, odd lengths.
    assert_eq!(duid_mac(&[0, 3, 0, 6, 1, 2, 3, 4, 5, 6]), None);
    assert_eq!(duid_mac(&[0, 3, 0, 1, 1, 2, 3, 4, 5]), None);
    assert_eq!(
        duid_mac(&[0, 3, 0, 1, 1, 2, 3, 4, 5, 6]),
        Some(Mac([1, 2, 3, 4, 5, 6]))
    );
    assert_eq!(duid_mac(&duid_llt(MAC)), Some(Mac(MAC)));
    assert_eq!(
        eui64_mac("fe80::5054:ff:fe12:3460".parse().unwrap()),
        Some(Mac(MAC))
    );
    assert_eq!(eui64_mac("fd00::5054:ff:fe12:3460".parse().unwrap()), None);
}

#[test]
fn nested_relays_are_unwrapped_outermost_first() {
    let inner = solicit(Sender::Ipxe);
    let mut msg = relay_forw(
        &inner,
        "fd00:1::1".parse().unwrap(),
        link_local(MAC),
        &[(code::INTERFACE_ID, b"port7".to_vec())],
    );
    msg = relay_forw(
        &msg,
        Ipv6Addr::UNSPECIFIED,
        "fd00:9::1".parse().unwrap(),
        &[],
    );
    let r = parse(&msg, "fd00:9::1".parse().unwrap()).unwrap();
    assert_eq!(r.relays.len(), 2);
    assert_eq!(r.relays[1].interface_id.as_deref(), Some(&b"port7"[..]));
    assert_eq!(r.mac, Some((Mac(MAC), MacFrom::LinkLocal)));
    // Nine levels: over the hop count limit.
    let mut deep = inner.clone();
    for _ in 0..=HOP_COUNT_LIMIT {
        deep = relay_forw(&deep, Ipv6Addr::UNSPECIFIED, link_local(MAC), &[]);
    }
    assert_eq!(
        parse(&deep, link_local(MAC)).unwrap_err(),
        Rejected::TooManyRelays
    );
}

#[test]
fn hostile_and_wrong_messages_are_rejected_not_panicked_on() {
    let src = link_local(MAC);
    let good = solicit(Sender::Firmware);
    assert_eq!(parse(&good[..3], src).unwrap_err(), Rejected::TooShort(3));
    for kind in [2u8, 7, 10, 13, 0, 200] {
        let mut m = good.clone();
        m[0] = kind;
        assert_eq!(
            parse(&m, src).unwrap_err(),
            Rejected::NotForServer(kind),
            "type {kind}"
        );
    }
    let mut cut = good.clone();
    cut.truncate(good.len() - 3);
    assert!(matches!(parse(&cut, src), Err(Rejected::Options(_))));
    // RFC 8415 §16 identifiers.
    let no_client = [1u8, 0, 0, 1];
    assert_eq!(
        parse(&no_client, src).unwrap_err(),
        Rejected::NoClientId(MessageType::Solicit)
    );
    let request = message(MessageType::Request, Sender::Firmware, MAC, &[]);
    assert_eq!(
        parse(&request, src).unwrap_err(),
        Rejected::NoServerId(MessageType::Request)
    );
    let solicit_sid = message(
        MessageType::Solicit,
        Sender::Firmware,
        MAC,
        &[(code::SERVER_ID, vec![0, 3, 0, 1, 1, 2, 3, 4, 5, 6])],
    );
    assert_eq!(
        parse(&solicit_sid, src).unwrap_err(),
        Rejected::UnexpectedServerId(MessageType::Solicit)
    );
    let info_ia = message(
        MessageType::InformationRequest,
        Sender::Firmware,
        MAC,
        &[(code::IA_NA, ia_na(1, &[]))],
    );
    assert_eq!(
        parse(&info_ia, src).unwrap_err(),
        Rejected::IaInInformationRequest
    );
    let short_ia = message(
        MessageType::Solicit,
        Sender::Firmware,
        MAC,
        &[(code::IA_NA, vec![0; 5])],
    );
    assert_eq!(parse(&short_ia, src).unwrap_err(), Rejected::ShortIa);
    let bad_inside = message(
        MessageType::Solicit,
        Sender::Firmware,
        MAC,
        &[(code::IA_NA, [&[0u8; 12][..], &[0, 5, 0, 40]].concat())],
    );
    assert!(matches!(parse(&bad_inside, src), Err(Rejected::Options(_))));
    let empty_relay = relay_forw(&[], Ipv6Addr::UNSPECIFIED, src, &[])[..34].to_vec();
    assert_eq!(parse(&empty_relay, src).unwrap_err(), Rejected::EmptyRelay);
    // Short classes and arch: read as absent, never a panic.
    let odd = message(
        MessageType::Solicit,
        Sender::Os,
        MAC,
        &[
            (code::VENDOR_CLASS, vec![0, 0]),
            (code::CLIENT_ARCH, vec![7]),
            (code::USER_CLASS, vec![0, 9]),
        ],
    );
    let r = parse(&odd, src).unwrap();
    assert_eq!(
        (r.vendor, r.arch, r.ipxe),
        (VendorClass::Other, None, false)
    );
    // Every truncation and a byte flip at every position, relayed or not.
    let relayed = relay_forw(
        &good,
        "fd00::1".parse().unwrap(),
        src,
        &[(code::CLIENT_LINKLAYER_ADDR, vec![0, 1, 1, 2, 3, 4, 5, 6])],
    );
    for packet in [&good, &relayed] {
        for n in 0..packet.len() {
            let _ = parse(&packet[..n], src);
            let mut flipped = packet.clone();
            flipped[n] ^= 0xff;
            let _ = parse(&flipped, src);
        }
    }
}
