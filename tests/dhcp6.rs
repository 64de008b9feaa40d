//! DHCPv6 over real sockets: pxed in one network namespace (fd77::1/64), the
//! client (a thread in a second namespace, dhcproto-built messages from its
//! EUI-64 link-local address to ff02::1:2) in another, joined by a veth
//! pair. Every message type, relays, malformed input, proxy mode, and the
//! boot chain after DHCPv6: TFTP and HTTP over IPv6 with bracketed URLs.

mod common;

use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::Duration;

use common::dhcp6::*;
use common::{privileged, ConfigDir};
use dhcproto::v6::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Encodable};

fn config(dhcp: &str, rules: &str) -> ConfigDir {
    let dir = ConfigDir::new(
        "http_listen = \"[::]:8080\"\ntftp_listen = \"[::]:69\"",
        &format!(
            "{dhcp}\n\n[defaults]\nkernel = \"vmlinuz\"\n\n[[rule]]\nname = \"default\"\n\n{rules}"
        ),
    );
    dir.asset("snponly.efi", b"an EFI loader, 29 bytes long");
    dir
}

const FULL: &str = r#"
[dhcp]
mode = "full"
interfaces = ["vs"]
[[dhcp.subnet]]
network = "fd77::/64"
pool = "fd77::100-fd77::1ff"
dns = ["fd77::1"]
domain = "lab.test"
lease_time = 600
"#;

fn v6(last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, last)
}

/// OVMF's PXEv6 and then iPXE, as measured (BRIEF "IPv6 netboot"): the
/// firmware solicits (random IAID, DUID-LLT), gets an Advertise with its
/// address, option 59 and Preference 255, requests it (stored before the
/// Reply), fetches the loader by TFTP over IPv6, releases the address; iPXE
/// (another DUID, user class iPXE) gets the same address and the HTTP script
/// URL, whose script names pxed by its bracketed IPv6 literal.
#[test]
fn firmware_then_ipxe_boot_over_dhcpv6_tftp_and_http() {
    if !privileged("dhcp6 boot") {
        return;
    }
    let lab = new_lab("d6b");
    let dir = config(FULL, "");
    let pxed = start(&lab, &dir);
    let db = dir.path().join("pxed-leases.sqlite");
    let ip = lab.client(|| {
        let s = socket(546);
        let solicit = Client::Firmware.message(MessageType::Solicit, 0x5eed_0001, &[], vec![]);
        let adv = ask(&s, &solicit).expect("an Advertise");
        assert_eq!(adv.msg_type(), MessageType::Advertise);
        assert_eq!(
            boot_url(&adv).as_deref(),
            Some("tftp://[fd77::1]/snponly.efi")
        );
        assert!(matches!(
            adv.opts().get(dhcproto::v6::OptionCode::Preference),
            Some(DhcpOption::Preference(255))
        ));
        // No vendor class PXEClient in full mode: EDK2 would then ask for
        // the boot file on port 4011, which only proxy mode serves.
        assert!(adv.opts().get(OptionCode::VendorClass).is_none(), "{adv:?}");
        let [(ip, 600)] = addresses(&adv)[..] else {
            panic!("one address for 600 s: {adv:?}")
        };
        assert!((v6(0x100)..=v6(0x1ff)).contains(&ip), "{ip}");
        let sid = server_id(&adv);
        let request = Client::Firmware.message(
            MessageType::Request,
            0x5eed_0001,
            &[ip],
            vec![DhcpOption::ServerId(sid.clone())],
        );
        let reply = ask(&s, &request).expect("a Reply");
        assert_eq!(reply.msg_type(), MessageType::Reply);
        assert_eq!(addresses(&reply), vec![(ip, 600)]);
        // Stored before the Reply left.
        let rows = lease_rows6(&db);
        assert!(
            rows.contains(&(ip, Some("52:54:00:77:60:01".into()), 1)),
            "{rows:?}"
        );
        (ip, sid)
    });
    let (ip, sid) = ip;
    // The loader over TFTP on IPv6, from the URL's host.
    let file = dir.path().join("fetched.efi");
    // What the client does with its Reply (the on-link /64 comes from the
    // router advertisement, tests/ra.rs).
    lab.cli.sh(&format!("ip addr add {ip}/64 dev vc nodad"));
    lab.cli.sh(&format!(
        "tftp -6 fd77::1 -c get snponly.efi {}",
        file.display()
    ));
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"an EFI loader, 29 bytes long"
    );
    lab.client(|| {
        let s = socket(546);
        let release = Client::Firmware.message(
            MessageType::Release,
            0x5eed_0001,
            &[ip],
            vec![DhcpOption::ServerId(sid.clone())],
        );
        let r = ask(&s, &release).expect("a Reply to the Release");
        assert_eq!(status(&r), Some(0));
        // iPXE: other DUID and IAID, same machine, same address.
        let solicit = Client::Ipxe.message(MessageType::Solicit, 1, &[], vec![]);
        let adv = ask(&s, &solicit).expect("an Advertise to iPXE");
        assert_eq!(addresses(&adv), vec![(ip, 600)]);
        assert_eq!(
            boot_url(&adv).as_deref(),
            Some("http://[fd77::1]:8080/boot.ipxe")
        );
        let request = Client::Ipxe.message(
            MessageType::Request,
            1,
            &[ip],
            vec![DhcpOption::ServerId(sid)],
        );
        let reply = ask(&s, &request).expect("a Reply to iPXE");
        assert_eq!(addresses(&reply), vec![(ip, 600)]);
    });
    assert!(lease_rows6(&db).iter().any(|r| r.0 == ip && r.2 == 1));
    // The script iPXE fetches names pxed the way it reached it.
    let script = lab.cli.sh("curl -gsf 'http://[fd77::1]:8080/boot.ipxe'");
    assert!(
        script.contains("chain --autofree http://[fd77::1]:8080/ipxe?"),
        "{script}"
    );
    let log = pxed.wait_log("mac_from=\"link-local\"", Duration::from_secs(5));
    assert!(
        log.lines().any(|l| l.contains("dhcp6 reply")
            && l.contains("mac=52:54:00:77:60:01")
            && l.contains("mac_from=\"link-local\"")),
        "{log}"
    );
}

/// HTTP Boot gets an `http://` URL and option 16 `HTTPClient`; the other
/// message types get what RFC 8415 says; Rapid Commit binds at once.
#[test]
fn every_message_type() {
    if !privileged("dhcp6 messages") {
        return;
    }
    let lab = new_lab("d6m");
    let dir = config(FULL, "");
    let _pxed = start(&lab, &dir);
    lab.client(|| {
        let s = socket(546);
        let adv = ask(
            &s,
            &Client::HttpBoot.message(MessageType::Solicit, 9, &[], vec![]),
        )
        .unwrap();
        assert_eq!(
            boot_url(&adv).as_deref(),
            Some("http://[fd77::1]:8080/assets/snponly.efi")
        );
        let Some(DhcpOption::VendorClass(vc)) = adv.opts().get(OptionCode::VendorClass) else {
            panic!("no option 16: {adv:?}")
        };
        assert_eq!((vc.num, &vc.data[..]), (343, &[b"HTTPClient".to_vec()][..]));
        // Rapid Commit: a Reply, bound.
        let rc =
            Client::Firmware.message(MessageType::Solicit, 2, &[], vec![DhcpOption::RapidCommit]);
        let reply = ask(&s, &rc).unwrap();
        assert_eq!(reply.msg_type(), MessageType::Reply);
        assert!(reply
            .opts()
            .get(dhcproto::v6::OptionCode::RapidCommit)
            .is_some());
        let [(ip, 600)] = addresses(&reply)[..] else {
            panic!("{reply:?}")
        };
        let sid = server_id(&reply);
        // Renew and Rebind extend it.
        let renew = Client::Firmware.message(
            MessageType::Renew,
            2,
            &[ip],
            vec![DhcpOption::ServerId(sid.clone())],
        );
        assert_eq!(addresses(&ask(&s, &renew).unwrap()), vec![(ip, 600)]);
        let rebind = Client::Firmware.message(MessageType::Rebind, 2, &[ip], vec![]);
        assert_eq!(addresses(&ask(&s, &rebind).unwrap()), vec![(ip, 600)]);
        // Confirm: on this link, or not.
        let on = Client::Firmware.message(MessageType::Confirm, 2, &[ip], vec![]);
        assert_eq!(status(&ask(&s, &on).unwrap()), Some(0));
        let off = Client::Firmware.message(
            MessageType::Confirm,
            2,
            &["fd00::5".parse().unwrap()],
            vec![],
        );
        assert_eq!(status(&ask(&s, &off).unwrap()), Some(4));
        // Information-request: options only.
        let info = ask(
            &s,
            &Client::Firmware.message(MessageType::InformationRequest, 0, &[], vec![]),
        )
        .unwrap();
        assert_eq!(info.msg_type(), MessageType::Reply);
        assert!(addresses(&info).is_empty());
        assert_eq!(
            boot_url(&info).as_deref(),
            Some("tftp://[fd77::1]/snponly.efi")
        );
        let Some(DhcpOption::DomainSearchList(names)) =
            info.opts().get(OptionCode::DomainSearchList)
        else {
            panic!("no option 24: {info:?}")
        };
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["lab.test."]);
        // Decline: quarantined; the next Solicit gets another address.
        let decline = Client::Firmware.message(
            MessageType::Decline,
            2,
            &[ip],
            vec![DhcpOption::ServerId(sid.clone())],
        );
        assert_eq!(status(&ask(&s, &decline).unwrap()), Some(0));
        let again = ask(
            &s,
            &Client::Firmware.message(MessageType::Solicit, 3, &[], vec![]),
        )
        .unwrap();
        assert_ne!(addresses(&again)[0].0, ip);
        // A Request for another server: silence.
        let theirs = Client::Firmware.message(
            MessageType::Request,
            3,
            &[],
            vec![DhcpOption::ServerId(vec![0, 3, 0, 1, 9, 9, 9, 9, 9, 9])],
        );
        assert!(ask(&s, &theirs).is_none());
    });
}

/// A relay agent between: Relay-Forward with the client's link-layer
/// address (option 79) and an Interface-ID; pxed answers the relay on 547
/// with a Relay-Reply that echoes both addresses and the Interface-ID, and
/// identifies the machine by option 79.
#[test]
fn relayed_messages_go_back_through_the_relay() {
    if !privileged("dhcp6 relay") {
        return;
    }
    let lab = new_lab("d6r");
    let dir = config(
        FULL,
        r#"
[[rule]]
name = "relayed-box"
match = { mac = "52:54:00:aa:bb:cc" }
ip = "fd77::42"
"#,
    );
    let pxed = start(&lab, &dir);
    lab.client(|| {
        let s = socket(547);
        let inner = Client::Ipxe.message(MessageType::Solicit, 4, &[], vec![]);
        let peer: Ipv6Addr = "fe80::1c2d:3e4f:5a6b:7c8d".parse().unwrap();
        let mut fwd = vec![12, 0];
        fwd.extend_from_slice(&v6(1).octets());
        fwd.extend_from_slice(&peer.octets());
        for (code, value) in [
            (79u16, vec![0, 1, 0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]),
            (18, b"ge-0/0/7".to_vec()),
            (9, inner.to_vec().unwrap()),
        ] {
            fwd.extend_from_slice(&code.to_be_bytes());
            fwd.extend_from_slice(&(value.len() as u16).to_be_bytes());
            fwd.extend_from_slice(&value);
        }
        let back = exchange(&s, &fwd, all_servers(), WAIT).expect("a Relay-Reply");
        // dhcproto reads a relayed message as another relay message: by hand.
        assert_eq!(back[0], 13, "a Relay-Reply");
        assert_eq!(&back[2..18], &v6(1).octets());
        assert_eq!(&back[18..34], &peer.octets());
        let opts = options(&back[34..]);
        assert_eq!(opts.get(&18).map(Vec::as_slice), Some(&b"ge-0/0/7"[..]));
        let adv = Message::from_bytes(&opts[&9]).unwrap();
        assert_eq!(adv.msg_type(), MessageType::Advertise);
        // The reservation of the MAC in option 79.
        assert_eq!(addresses(&adv), vec![(v6(0x42), 600)]);
    });
    // Logged just after the reply left.
    pxed.wait_log("mac_from=\"relay-option-79\"", Duration::from_secs(5));
}

/// Options by code (the last of each), from raw DHCPv6 option data.
fn options(mut data: &[u8]) -> std::collections::HashMap<u16, Vec<u8>> {
    let mut out = std::collections::HashMap::new();
    while data.len() >= 4 {
        let code = u16::from_be_bytes([data[0], data[1]]);
        let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
        let value = data[4..].get(..len).expect("a well-formed option");
        out.insert(code, value.to_vec());
        data = &data[4 + len..];
    }
    out
}

/// Hostile datagrams are dropped and counted; pxed keeps answering.
#[test]
fn malformed_input_is_counted_and_dropped() {
    if !privileged("dhcp6 malformed") {
        return;
    }
    let lab = new_lab("d6x");
    let dir = config(FULL, "");
    let pxed = start(&lab, &dir);
    lab.client(|| {
        let s = socket(546);
        let good = Client::Firmware
            .message(MessageType::Solicit, 1, &[], vec![])
            .to_vec()
            .unwrap();
        let mut hostile: Vec<Vec<u8>> = vec![
            vec![1, 2],
            vec![2, 0, 0, 1],
            vec![7, 0, 0, 1, 0, 1, 0, 2, 0, 0],
        ];
        let mut overrun = good.clone();
        overrun.extend_from_slice(&[0, 15, 0xff, 0xff, 1]);
        hostile.push(overrun);
        // A Solicit with a Server Identifier.
        hostile.push([&[1u8, 0, 0, 2][..], &[0, 1, 0, 2, 9, 9, 0, 2, 0, 2, 1, 1]].concat());
        let mut deep = good.clone();
        for _ in 0..9 {
            let mut fwd = vec![12, 0];
            fwd.extend_from_slice(&[0; 32]);
            fwd.extend_from_slice(&9u16.to_be_bytes());
            fwd.extend_from_slice(&(deep.len() as u16).to_be_bytes());
            fwd.extend_from_slice(&deep);
            deep = fwd;
        }
        hostile.push(deep);
        for p in &hostile {
            s.send_to(p, all_servers()).unwrap();
        }
        let adv = ask(
            &s,
            &Client::Firmware.message(MessageType::Solicit, 5, &[], vec![]),
        )
        .expect("still answering");
        assert_eq!(adv.msg_type(), MessageType::Advertise);
    });
    for why in [
        "too short",
        "not one a client or relay sends",
        "claims 65535 bytes",
        "with a Server Identifier",
        "more than 8 relays",
    ] {
        pxed.wait_log(why, Duration::from_secs(5));
    }
    let admin = pxed.addr("admin");
    let metrics = lab.srv.sh(&format!("curl -sf http://{admin}/metrics"));
    for series in [
        r#"protocol="dhcp6",endpoint="malformed",outcome="dropped"} 6"#,
        r#"protocol="dhcp6",endpoint="solicit",outcome="advertise"} 1"#,
    ] {
        assert!(metrics.contains(series), "no {series} in\n{metrics}");
    }
}

/// Proxy mode (`dhcpv6 = true`): boot clients get an Advertise with the
/// boot file and Preference 255 but no address; others get nothing.
/// EDK2's next step after a proxy offer, from the address the other server
/// gave it (fd77::77 here): its Request, IA removed and the proxy's Server
/// Identifier put in, unicast to port 4011 of the address in option 59, from
/// port 4011. The Reply must come back from that address and port with the
/// boot file URL, or the firmware does not read it.
fn binl_request(adv: &Message) {
    let server_id = adv
        .opts()
        .get(OptionCode::ServerId)
        .cloned()
        .expect("a Server Identifier");
    let mut req = Client::Firmware.message(MessageType::Request, 7, &[], vec![server_id]);
    req.opts_mut().remove(OptionCode::IANA);
    let s = socket(4011);
    s.send_to(
        &req.to_vec().unwrap(),
        SocketAddrV6::new(SERVER6, 4011, 0, 0),
    )
    .unwrap();
    let mut buf = [0u8; 2048];
    let deadline = std::time::Instant::now() + WAIT;
    let (n, from) = loop {
        match s.recv_from(&mut buf) {
            Ok(got) => break got,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "no Reply on port 4011: {e}"
            ),
        }
    };
    assert_eq!(from, SocketAddrV6::new(SERVER6, 4011, 0, 0).into());
    let reply = Message::from_bytes(&buf[..n]).unwrap();
    assert_eq!(reply.msg_type(), MessageType::Reply);
    assert_eq!(reply.xid(), req.xid());
    assert_eq!(
        boot_url(&reply).as_deref(),
        Some("tftp://[fd77::1]/snponly.efi")
    );
    assert!(addresses(&reply).is_empty());
}

#[test]
fn proxy_mode_answers_boot_clients_without_addresses() {
    if !privileged("dhcp6 proxy") {
        return;
    }
    let lab = new_lab("d6p");
    let dir = config(
        "[dhcp]\nmode = \"proxy\"\ndhcpv6 = true\ninterfaces = [\"vs\"]\n",
        "",
    );
    let _pxed = start(&lab, &dir);
    // The address another server would have given the firmware.
    lab.cli.sh("ip addr add fd77::77/64 dev vc nodad");
    lab.client(|| {
        let s = socket(546);
        let adv = ask(
            &s,
            &Client::Firmware.message(MessageType::Solicit, 1, &[], vec![]),
        )
        .expect("an Advertise");
        assert_eq!(
            boot_url(&adv).as_deref(),
            Some("tftp://[fd77::1]/snponly.efi")
        );
        assert!(addresses(&adv).is_empty());
        // Vendor class PXEClient (enterprise 343): what makes EDK2 take an
        // offer without an address as a proxy offer.
        match adv.opts().get(OptionCode::VendorClass) {
            Some(DhcpOption::VendorClass(v)) => {
                assert_eq!((v.num, &v.data[..]), (343, &[b"PXEClient".to_vec()][..]));
            }
            other => panic!("no vendor class in the proxy Advertise: {other:?}"),
        }
        binl_request(&adv);
        let mut os = Message::new(MessageType::Solicit);
        os.opts_mut()
            .insert(DhcpOption::ClientId(vec![0, 3, 0, 1, 1, 2, 3, 4, 5, 6]));
        assert!(
            ask(&s, &os).is_none(),
            "an OS client got an answer in proxy mode"
        );
    });
}
