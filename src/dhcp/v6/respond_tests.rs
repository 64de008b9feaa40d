//! The RFC 8415 exchange through [`respond`], without root or sockets: every
//! message type, relays, reservations, what each firmware is handed, proxy
//! mode, and the packets that never get that far. The config is the fuzz
//! fixture (`fuzz/fixture/machines.toml`: fd97:e2e::/64 on br0 with pool
//! ::100-::1ff, a reservation of fd97:e2e::21 for 52:54:00:12:34:56), the
//! lease table the fuzz target's (::100 bound to 52:54:00:12:34:58, ::101-::104
//! taken or used).

use std::net::{Ipv6Addr, SocketAddrV6};

use dhcproto::v6::MessageType;

use super::*;
use crate::dhcp::leases::{LeaseOp, Leases6, State};
use crate::dhcp::v6::options::{code, vendor_class_item, Opts};
use crate::dhcp::v6::outcome::Reply6;
use crate::dhcp::v6::testing::{ia_na, link_local, message, relay_forw, Sender, MAC};
use crate::fuzzing::{
    answer6, arrival6, br0, full_config, proxy_config, stored_leases6, unwrap_relays, DUID6,
};

const RESERVED: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
/// Holds fd97:e2e::100.
const HOLDER: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x58];
/// Its rule boots GRUB (the shim for UEFI PXE).
const GRUB: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x5a];

fn v6(last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd97, 0xe2e, 0, 0, 0, 0, 0, last)
}

/// The first never-used pool address (::100-::104 have entries).
fn first_free() -> Ipv6Addr {
    v6(0x105)
}

/// A reply, decoded the way a client reads it.
#[derive(Debug)]
struct Got {
    kind: u8,
    /// The first IA_NA's addresses with their valid lifetimes, and its status.
    ia: Vec<(Ipv6Addr, u32)>,
    ia_status: Option<u16>,
    status: Option<u16>,
    boot_url: Option<String>,
    http_client: bool,
    preference: Option<u8>,
    rapid_commit: bool,
    dest: SocketAddrV6,
    commit: Vec<LeaseOp>,
}

fn decode(r: &Reply6) -> Got {
    let msg = unwrap_relays(&r.out.bytes);
    let o = || Opts::new(&msg[4..]);
    let status = |v: &[u8]| v.first_chunk::<2>().map(|s| u16::from_be_bytes(*s));
    let ia_opts = o()
        .get(code::IA_NA)
        .map(|v| v[12..].to_vec())
        .unwrap_or_default();
    let ia = Opts::new(&ia_opts)
        .every(code::IA_ADDR)
        .map(|a| {
            let addr = Ipv6Addr::from(*a.first_chunk::<16>().unwrap());
            (addr, u32::from_be_bytes(a[20..24].try_into().unwrap()))
        })
        .collect();
    Got {
        kind: msg[0],
        ia,
        ia_status: Opts::new(&ia_opts).get(code::STATUS_CODE).and_then(status),
        status: o().get(code::STATUS_CODE).and_then(status),
        boot_url: o()
            .get(code::BOOTFILE_URL)
            .map(|u| String::from_utf8_lossy(u).into_owned()),
        http_client: o().get(code::VENDOR_CLASS).and_then(vendor_class_item) == Some(b"HTTPClient"),
        preference: o().get(code::PREFERENCE).and_then(|p| p.first().copied()),
        rapid_commit: o().get(code::RAPID_COMMIT).is_some(),
        dest: r.out.dest,
        commit: r.commit.clone(),
    }
}

/// Answers `datagram` from `mac`'s link-local address with the full config.
fn ask(leases: &mut Leases6, datagram: &[u8], mac: [u8; 6]) -> Result<Got, String> {
    ask_with(&full_config(), leases, datagram, link_local(mac))
}

fn ask_with(
    config: &crate::config::Config,
    leases: &mut Leases6,
    datagram: &[u8],
    src: Ipv6Addr,
) -> Result<Got, String> {
    let arrival = arrival6(datagram, src);
    let a = answer6(config, leases, datagram, &arrival, &br0());
    match &a.outcome {
        Outcome6::Reply(r) => Ok(decode(r)),
        other => Err(format!("{other:?}")),
    }
}

fn leases() -> Leases6 {
    Leases6::from_stored(stored_leases6())
}

fn solicit(sender: Sender, mac: [u8; 6]) -> Vec<u8> {
    message(
        MessageType::Solicit,
        sender,
        mac,
        &[(code::IA_NA, ia_na(0x1234, &[]))],
    )
}

/// A Request (Renew, Rebind, Release, Decline, Confirm) naming `addrs`,
/// with our Server Identifier where RFC 8415 wants one.
fn follow_up(kind: MessageType, sender: Sender, mac: [u8; 6], addrs: &[Ipv6Addr]) -> Vec<u8> {
    let mut extra = vec![(code::IA_NA, ia_na(0x1234, addrs))];
    if !matches!(kind, MessageType::Rebind | MessageType::Confirm) {
        extra.push((code::SERVER_ID, DUID6.to_vec()));
    }
    message(kind, sender, mac, &extra)
}

#[test]
fn each_client_is_handed_its_boot_file_in_the_advertise() {
    let tftp = "tftp://[fd97:e2e::1]/snponly.efi";
    let cases: [(Sender, [u8; 6], Option<&str>, bool); 5] = [
        (Sender::Firmware, MAC, Some(tftp), false),
        (
            Sender::HttpBoot,
            MAC,
            Some("http://[fd97:e2e::1]:8080/assets/snponly.efi"),
            true,
        ),
        (
            Sender::Ipxe,
            MAC,
            Some("http://[fd97:e2e::1]:8080/boot.ipxe"),
            false,
        ),
        (Sender::Os, MAC, None, false),
        // A GRUB rule: the firmware gets the shim.
        (
            Sender::Firmware,
            GRUB,
            Some("tftp://[fd97:e2e::1]/shimx64.efi"),
            false,
        ),
    ];
    for (sender, mac, url, http_client) in cases {
        let g = ask(&mut leases(), &solicit(sender, mac), mac).unwrap();
        assert_eq!(g.kind, 2, "{sender:?}: an Advertise");
        assert_eq!(g.boot_url.as_deref(), url, "{sender:?}");
        assert_eq!(g.http_client, http_client, "{sender:?}");
        assert_eq!(g.preference, Some(255), "{sender:?}");
        assert_eq!(g.ia.len(), 1, "{sender:?}: {g:?}");
        assert!(g.commit.is_empty(), "an Advertise stores nothing");
        assert_eq!(*g.dest.ip(), link_local(mac));
        assert_eq!(g.dest.port(), 546);
    }
    // The holder gets its bound address back; a new machine the first free.
    let g = ask(&mut leases(), &solicit(Sender::Firmware, HOLDER), HOLDER).unwrap();
    assert_eq!(g.ia, vec![(v6(0x100), 3600)]);
    let g = ask(&mut leases(), &solicit(Sender::Firmware, MAC), MAC).unwrap();
    assert_eq!(g.ia, vec![(first_free(), 3600)]);
    let g = ask(&mut leases(), &solicit(Sender::Ipxe, RESERVED), RESERVED).unwrap();
    assert_eq!(g.ia, vec![(v6(0x21), 3600)], "the reservation");
}

#[test]
fn a_boot_walks_solicit_request_release_then_ipxe_gets_the_same_address() {
    let mut t = leases();
    let g = ask(&mut t, &solicit(Sender::Firmware, MAC), MAC).unwrap();
    let ip = g.ia[0].0;
    let request = follow_up(MessageType::Request, Sender::Firmware, MAC, &[ip]);
    let g = ask(&mut t, &request, MAC).unwrap();
    assert_eq!((g.kind, g.ia.clone()), (7, vec![(ip, 3600)]));
    assert_eq!(
        g.boot_url.as_deref(),
        Some("tftp://[fd97:e2e::1]/snponly.efi")
    );
    assert!(
        matches!(&g.commit[..], [LeaseOp::Put6(l)] if l.ip == ip && l.state == State::Bound),
        "{:?}",
        g.commit
    );
    // The firmware releases its address before it starts the loader.
    let release = follow_up(MessageType::Release, Sender::Firmware, MAC, &[ip]);
    let g = ask(&mut t, &release, MAC).unwrap();
    assert_eq!((g.kind, g.status), (7, Some(0)));
    assert!(matches!(&g.commit[..], [LeaseOp::Put6(l)] if l.state == State::Released));
    // iPXE: another DUID and IAID, the same machine, the same address.
    let g = ask(&mut t, &solicit(Sender::Ipxe, MAC), MAC).unwrap();
    assert_eq!(g.ia, vec![(ip, 3600)]);
    let request = follow_up(MessageType::Request, Sender::Ipxe, MAC, &[ip]);
    let g = ask(&mut t, &request, MAC).unwrap();
    assert_eq!(
        g.boot_url.as_deref(),
        Some("http://[fd97:e2e::1]:8080/boot.ipxe")
    );
    assert_eq!(g.ia, vec![(ip, 3600)]);
}

#[test]
fn renew_rebind_confirm_decline_and_information_request() {
    let mut t = leases();
    let held = v6(0x100);
    // Renew and Rebind extend the binding; a foreign address comes back at 0.
    for kind in [MessageType::Renew, MessageType::Rebind] {
        let m = follow_up(kind, Sender::Os, HOLDER, &[held, v6(0x150)]);
        let g = ask(&mut t, &m, HOLDER).unwrap();
        assert_eq!(g.ia, vec![(held, 3600), (v6(0x150), 0)], "{kind:?}");
        assert_eq!(g.commit.len(), 1, "{kind:?}");
    }
    // Another machine naming the held address gets another one.
    let m = follow_up(MessageType::Renew, Sender::Os, MAC, &[held]);
    let g = ask(&mut t, &m, MAC).unwrap();
    assert_eq!(g.ia[0].0, first_free());
    assert_eq!(g.ia[1], (held, 0));
    // Confirm: on this link or not.
    let on = follow_up(MessageType::Confirm, Sender::Os, HOLDER, &[held]);
    assert_eq!(ask(&mut t, &on, HOLDER).unwrap().status, Some(0));
    let off = follow_up(
        MessageType::Confirm,
        Sender::Os,
        HOLDER,
        &["fd00::1".parse().unwrap()],
    );
    assert_eq!(ask(&mut t, &off, HOLDER).unwrap().status, Some(4));
    let none = follow_up(MessageType::Confirm, Sender::Os, HOLDER, &[]);
    assert!(ask(&mut t, &none, HOLDER)
        .unwrap_err()
        .contains("without addresses"));
    // Decline: quarantined, and the next Solicit gets another address.
    let d = follow_up(MessageType::Decline, Sender::Os, HOLDER, &[held]);
    let g = ask(&mut t, &d, HOLDER).unwrap();
    assert!(matches!(&g.commit[..], [LeaseOp::Put6(l)] if l.state == State::Declined));
    let g = ask(&mut t, &solicit(Sender::Os, HOLDER), HOLDER).unwrap();
    assert_ne!(g.ia[0].0, held);
    // Information-request: options only.
    let info = message(MessageType::InformationRequest, Sender::Firmware, MAC, &[]);
    let g = ask(&mut t, &info, MAC).unwrap();
    assert_eq!((g.kind, g.ia.len()), (7, 0));
    assert_eq!(
        g.boot_url.as_deref(),
        Some("tftp://[fd97:e2e::1]/snponly.efi")
    );
    assert!(g.commit.is_empty());
}

#[test]
fn rapid_commit_binds_at_once_and_other_servers_requests_are_ignored() {
    let mut t = leases();
    let m = message(
        MessageType::Solicit,
        Sender::Ipxe,
        MAC,
        &[(code::IA_NA, ia_na(1, &[])), (code::RAPID_COMMIT, vec![])],
    );
    let g = ask(&mut t, &m, MAC).unwrap();
    assert_eq!((g.kind, g.rapid_commit), (7, true));
    assert!(matches!(&g.commit[..], [LeaseOp::Put6(l)] if l.state == State::Bound));
    let theirs = message(
        MessageType::Request,
        Sender::Ipxe,
        MAC,
        &[
            (code::IA_NA, ia_na(1, &[])),
            (code::SERVER_ID, vec![0, 3, 0, 1, 9, 9, 9, 9, 9, 9]),
        ],
    );
    assert!(ask(&mut t, &theirs, MAC)
        .unwrap_err()
        .contains("another server"));
    // A Solicit without IA_NA: NoAddrsAvail, nothing else.
    let bare = message(MessageType::Solicit, Sender::Firmware, MAC, &[]);
    let g = ask(&mut t, &bare, MAC).unwrap();
    assert_eq!((g.kind, g.status, g.boot_url), (2, Some(2), None));
    // A second IA_NA gets NoAddrsAvail in its own IA.
    let two = message(
        MessageType::Solicit,
        Sender::Firmware,
        MAC,
        &[(code::IA_NA, ia_na(1, &[])), (code::IA_NA, ia_na(2, &[]))],
    );
    let g = ask(&mut t, &two, MAC).unwrap();
    assert_eq!((g.ia.len(), g.ia_status), (1, None));
}

#[test]
fn relayed_messages_come_back_through_the_relay() {
    let relay_src: Ipv6Addr = "fd97:e2e::2".parse().unwrap();
    let inner = solicit(Sender::Firmware, MAC);
    let fwd = relay_forw(
        &inner,
        v6(1),
        link_local(MAC),
        &[(code::INTERFACE_ID, b"port7".to_vec())],
    );
    let arrival = arrival6(&fwd, relay_src);
    let full = full_config();
    let a = answer6(&full, &mut leases(), &fwd, &arrival, &br0());
    let Outcome6::Reply(r) = &a.outcome else {
        panic!("{a:?}")
    };
    assert_eq!(r.out.dest, SocketAddrV6::new(relay_src, 547, 0, 0));
    assert_eq!(r.out.bytes[0], 13, "a Relay-Reply");
    assert_eq!(
        &r.out.bytes[18..34],
        &link_local(MAC).octets(),
        "the peer address echoed"
    );
    assert_eq!(
        Opts::new(&r.out.bytes[34..]).get(code::INTERFACE_ID),
        Some(&b"port7"[..])
    );
    let g = decode(r);
    assert_eq!(g.ia, vec![(first_free(), 3600)]);
    // A relay on a link pxed serves no subnet for: silence.
    let elsewhere = relay_forw(&inner, "fd00:77::1".parse().unwrap(), link_local(MAC), &[]);
    let e = ask_with(&full_config(), &mut leases(), &elsewhere, relay_src).unwrap_err();
    assert!(e.contains("relay's link address fd00:77::1"), "{e}");
}

#[test]
fn proxy_mode_hands_out_boot_files_only() {
    let proxy = proxy_config();
    let mut t = Leases6::default();
    let g = ask_with(
        &proxy,
        &mut t,
        &solicit(Sender::Firmware, MAC),
        link_local(MAC),
    )
    .unwrap();
    assert_eq!((g.kind, g.ia.len(), g.preference), (2, 0, Some(255)));
    assert_eq!(
        g.boot_url.as_deref(),
        Some("tftp://[fd97:e2e::1]/snponly.efi")
    );
    let os = ask_with(&proxy, &mut t, &solicit(Sender::Os, MAC), link_local(MAC));
    assert!(os.unwrap_err().contains("boot clients only"));
    let renew = follow_up(MessageType::Renew, Sender::Firmware, MAC, &[v6(0x100)]);
    assert!(ask_with(&proxy, &mut t, &renew, link_local(MAC)).is_err());
}

#[test]
fn the_pool_runs_out_and_malformed_input_is_dropped() {
    let mut t = leases();
    let mut bound = 0;
    for n in 0..300u16 {
        let mac = [0x52, 0x54, 1, 0, (n >> 8) as u8, n as u8];
        let m = message(
            MessageType::Solicit,
            Sender::Os,
            mac,
            &[(code::IA_NA, ia_na(1, &[])), (code::RAPID_COMMIT, vec![])],
        );
        match ask(&mut t, &m, mac) {
            Ok(g) => bound += g.ia.len(),
            Err(e) => assert!(e.contains("exhausted"), "{e}"),
        }
    }
    // 256 pool addresses; ::100 (bound), ::101 (offered) and ::102
    // (quarantined) stay taken, the released ::103 and expired ::104 are reused.
    assert_eq!(bound, 256 - 3);
    let arrival = arrival6(&[1, 2], link_local(MAC));
    let full = full_config();
    let a = answer6(&full, &mut t, &[1, 2], &arrival, &br0());
    assert!(matches!(a.outcome, Outcome6::Malformed(_)), "{a:?}");
    assert_eq!(a.outcome.label(), "dropped");
}

/// Writes the fuzz target's seeds (`cargo test --lib write_dhcp6_seeds --
/// --ignored`): every message type from each client, relayed and not.
#[test]
#[ignore]
fn write_dhcp6_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/dhcp6");
    std::fs::create_dir_all(&dir).unwrap();
    let mut n = 0;
    let mut write = |name: String, bytes: Vec<u8>| {
        std::fs::write(dir.join(name), bytes).unwrap();
        n += 1;
    };
    for (sender, who) in [
        (Sender::Firmware, "firmware"),
        (Sender::HttpBoot, "httpboot"),
        (Sender::Ipxe, "ipxe"),
        (Sender::Os, "os"),
    ] {
        write(format!("{who}-solicit"), solicit(sender, MAC));
        for kind in [
            MessageType::Request,
            MessageType::Renew,
            MessageType::Rebind,
            MessageType::Release,
            MessageType::Decline,
            MessageType::Confirm,
        ] {
            let name = format!("{who}-{}", crate::dhcp::v6::outcome::kind_label(kind));
            write(name, follow_up(kind, sender, MAC, &[first_free()]));
        }
        write(
            format!("{who}-information-request"),
            message(MessageType::InformationRequest, sender, MAC, &[]),
        );
        let opt79 = (code::CLIENT_LINKLAYER_ADDR, [&[0, 1][..], &MAC].concat());
        let fwd = relay_forw(&solicit(sender, MAC), v6(1), link_local(MAC), &[opt79]);
        write(format!("{who}-relayed-solicit"), fwd);
    }
    eprintln!("{n} seeds in {}", dir.display());
}
