//! The IPv6 Router Solicitation responder (`[ipv6_ra]`) and `pxed check`'s
//! router probe, over real sockets in namespaces the tests create (the lab
//! bridge of `common::lab` without guests, and a second host on it). The
//! QEMU/iPXE side is in `tests/e2e.rs`.
//!
//! Needs root, `ip netns`, `rdisc6` (ndisc6), curl and dnsmasq (the control
//! router); otherwise each test prints `skipped: …` (a failure under
//! `PXED_REQUIRE_PRIVILEGED=1`).

mod common;

use std::io::Read;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::process::Command;
use std::time::{Duration, Instant};

use common::lab::{self, Host, Lab};
use common::{have_tool, privileged, ConfigDir, Pxed};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

fn available(what: &str) -> bool {
    privileged(what)
        && have_tool("rdisc6", what)
        && have_tool("curl", what)
        && have_tool("dnsmasq", what)
}

/// A config with `extra` sections (`[ipv6_ra]`, `[dhcp]`) on the lab bridge.
fn config(extra: &str) -> ConfigDir {
    let dir = ConfigDir::new(
        &format!(
            "http_listen = \"{}:8080\"\ntftp_listen = \"\"",
            lab::SERVER_IP
        ),
        &format!("{extra}\n[[rule]]\nname = \"default\"\nkernel = \"k\"\n"),
    );
    // `pxed check` fails on a rule's missing kernel.
    dir.asset("k", b"kernel");
    dir
}

const RESPONDER: &str = "[ipv6_ra]\nenabled = true\ninterfaces = [\"br0\"]\n";

/// rdisc6's output with runs of spaces collapsed ("Router lifetime : 0 …").
fn squeeze(text: &str) -> String {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn metrics(lab: &Lab, pxed: &Pxed) -> String {
    lab.ns
        .sh(&format!("curl -sf http://{}/metrics", pxed.addr("admin")))
}

/// Waits up to `timeout` for `cond`.
fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

/// The responder answers a Linux host's solicitation with an advertisement
/// that configures nothing there: no default route, no address. The control
/// at the end (a real router on the same segment) shows the same host does
/// pick those up, so the two empty results are not the test's blind spot.
#[test]
fn responder_answers_and_configures_nothing_on_another_host() {
    let what = "ra-answer";
    if !available(what) {
        return;
    }
    let lab = Lab::new(what, 0);
    let host: Host = lab.add_host("h2");
    let bridge = lab.bridge_link_local();
    let dir = config(RESPONDER);
    let pxed = Pxed::start(&dir.config(), Some(lab.name()));
    pxed.wait_log("ipv6 ra responder listening", Duration::from_secs(10));

    let before = host.advertisements_received();
    let answer = squeeze(&host.solicit());
    assert!(
        answer.contains(&format!("from {bridge}")),
        "no advertisement from br0 ({bridge}):\n{answer}\npxed log:\n{}",
        pxed.log()
    );
    for line in [
        "Router lifetime : 0 (0x00000000) seconds",
        "Stateful address conf. : No",
        "Stateful other conf. : No",
        "Hop limit : undefined",
        "Reachable time : unspecified (0x00000000)",
        "Retransmit time : unspecified (0x00000000)",
        "Source link-layer address:",
    ] {
        assert!(answer.contains(line), "{line:?} not in:\n{answer}");
    }
    for option in [
        "Prefix :",
        "Recursive DNS",
        "DNS search",
        "MTU :",
        "Route :",
    ] {
        assert!(!answer.contains(option), "{option:?} in:\n{answer}");
    }
    // The host's kernel got it too (accept_ra = 1) and changed nothing.
    assert!(host.advertisements_received() > before);
    assert_eq!(host.default_routes().trim(), "", "a default route appeared");
    assert_eq!(host.global_addrs().trim(), "", "an address appeared");

    let log = pxed.wait_log("router advertisement sent", Duration::from_secs(5));
    assert!(
        log.lines().any(
            |l| l.contains("router advertisement sent") && l.contains(&format!("src={bridge}"))
        ),
        "{log}"
    );
    let m = metrics(&lab, &pxed);
    for series in [
        "pxed_requests_total{protocol=\"ra\",endpoint=\"solicitation\",outcome=\"unicast\"}",
        "pxed_requests_total{protocol=\"ra\",endpoint=\"advertisement\",outcome=\"unicast\"}",
    ] {
        assert!(m.contains(series), "no {series} in\n{m}");
    }

    // Control: a real router's advertisements do configure this host.
    let _router = lab::ipv6_router(&lab);
    let configured = eventually(Duration::from_secs(20), || {
        !host.default_routes().trim().is_empty() && host.global_addrs().contains(lab::ROUTER_PREFIX)
    });
    assert!(
        configured,
        "the control router did not configure the host: route {:?}, addr {:?}",
        host.default_routes(),
        host.global_addrs()
    );
}

/// Solicitations the kernel delivers but RFC 4861 §6.1.1 rejects (hop limit
/// not 255, code not 0, an option of length 0) get no answer and are counted;
/// a valid one right after is answered.
#[test]
fn malformed_solicitations_are_dropped_and_counted() {
    let what = "ra-malformed";
    if !available(what) {
        return;
    }
    let lab = Lab::new(what, 0);
    let host = lab.add_host("h2");
    let dir = config(RESPONDER);
    let pxed = Pxed::start(&dir.config(), Some(lab.name()));
    pxed.wait_log("ipv6 ra responder listening", Duration::from_secs(10));

    let rs = [133u8, 0, 0, 0, 0, 0, 0, 0];
    let mut bad_code = rs;
    bad_code[1] = 1;
    let zero_option = [133u8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
    let (after_bad, after_good) = host.ns.run(|| {
        let ifindex = nix::net::if_::if_nametoindex("eth0").expect("eth0");
        let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).expect("raw socket");
        let to = SockAddr::from(SocketAddrV6::new(
            "ff02::2".parse::<Ipv6Addr>().unwrap(),
            0,
            0,
            ifindex,
        ));
        s.set_multicast_if_v6(ifindex).unwrap();
        s.set_multicast_hops_v6(64).unwrap();
        s.send_to(&rs, &to).expect("send");
        s.set_multicast_hops_v6(255).unwrap();
        s.send_to(&bad_code, &to).expect("send");
        s.send_to(&zero_option, &to).expect("send");
        // Longer than the responder's largest delay (0.5 s).
        let after_bad = advertisements(&s, Duration::from_millis(1500));
        s.send_to(&rs, &to).expect("send");
        let after_good = advertisements(&s, Duration::from_millis(1500));
        (after_bad, after_good)
    });
    assert_eq!(after_bad, 0, "answered a malformed solicitation");
    assert_eq!(
        after_good, 1,
        "the valid solicitation got {after_good} answers"
    );
    let m = metrics(&lab, &pxed);
    assert!(
        m.contains(
            "pxed_requests_total{protocol=\"ra\",endpoint=\"malformed\",outcome=\"dropped\"} 3"
        ),
        "{m}"
    );
    let log = pxed.log();
    assert!(log.contains("hop limit 64, not 255"), "{log}");
    assert!(log.contains("code 1, not 0"), "{log}");
    assert!(log.contains("an option with length 0"), "{log}");
}

/// Router advertisements read from raw socket `s` within `wait`.
fn advertisements(s: &Socket, wait: Duration) -> usize {
    let deadline = Instant::now() + wait;
    let mut n = 0;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return n;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match (&*s).read(&mut buf) {
            Ok(len) if len > 0 && buf[0] == 134 => n += 1,
            Ok(_) => {}
            Err(_) => return n,
        }
    }
}

/// Runs `pxed check` inside the lab namespace: (success, stdout + stderr).
fn check(lab: &Lab, dir: &ConfigDir) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", lab.name()])
        .arg(common::pxed_bin())
        .args(["check", "--config"])
        .arg(dir.config())
        .output()
        .expect("run pxed check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `pxed check` warns when nothing answers router solicitations on a boot
/// interface and the responder is off; the warning goes away with an IPv6
/// router on the segment, with pxed's own responder there, and when the
/// operator writes `enabled = false`.
#[test]
fn check_warns_when_no_router_answers_on_a_boot_interface() {
    let what = "ra-check";
    if !available(what) {
        return;
    }
    let lab = Lab::new(what, 0);
    // A port with carrier, so br0 has a link-local address to solicit from.
    let _host = lab.add_host("h2");
    lab.bridge_link_local();
    let dhcp = "[dhcp]\nmode = \"proxy\"\ninterfaces = [\"br0\"]\n";
    let warning = "no IPv6 router answered a router solicitation on br0";

    let dir = config(dhcp);
    let (ok, out) = check(&lab, &dir);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("warning: {warning}")), "{out}");
    assert!(out.contains("[ipv6_ra] enabled = true"), "{out}");

    // The operator decided: no probe, no warning.
    let decided = config(&format!("{dhcp}[ipv6_ra]\nenabled = false\n"));
    let (ok, out) = check(&lab, &decided);
    assert!(ok && !out.contains("IPv6 router"), "{out}");

    // The responder turned on: a note that it is restart-only, no warning.
    let on = config(&format!("{dhcp}[ipv6_ra]\nenabled = true\n"));
    let (ok, out) = check(&lab, &on);
    assert!(ok && !out.contains(warning), "{out}");
    assert!(
        out.contains("[ipv6_ra] answers router solicitations on br0")
            && out.contains("restart pxed"),
        "{out}"
    );

    // A pxed responder already serving the segment answers the probe.
    let responder_dir = config(RESPONDER);
    let responder = Pxed::start(&responder_dir.config(), Some(lab.name()));
    responder.wait_log("ipv6 ra responder listening", Duration::from_secs(10));
    let (ok, out) = check(&lab, &dir);
    assert!(
        ok && !out.contains(warning),
        "{out}\npxed log:\n{}",
        responder.log()
    );
    drop(responder);

    // So does a real router.
    let _router = lab::ipv6_router(&lab);
    let (ok, out) = check(&lab, &dir);
    assert!(ok && !out.contains(warning), "{out}");
}

/// The section is restart-only: a reload that changes it says so and keeps
/// the responder as it started.
#[test]
fn reload_keeps_the_responder_and_says_a_restart_is_needed() {
    let what = "ra-reload";
    if !available(what) {
        return;
    }
    let lab = Lab::new(what, 0);
    let host = lab.add_host("h2");
    let dir = config(RESPONDER);
    let pxed = Pxed::start(&dir.config(), Some(lab.name()));
    pxed.wait_log("ipv6 ra responder listening", Duration::from_secs(10));
    dir.write_config(
        &format!(
            "http_listen = \"{}:8080\"\ntftp_listen = \"\"",
            lab::SERVER_IP
        ),
        "[ipv6_ra]\nenabled = false\n[[rule]]\nname = \"default\"\nkernel = \"k\"\n",
    );
    pxed.wait_log(
        "[ipv6_ra] changed: it is read at start only",
        Duration::from_secs(10),
    );
    let answer = squeeze(&host.solicit());
    assert!(answer.contains("Router lifetime : 0"), "{answer}");
}

/// IPv6 netboot (`managed`, `other`): the advertisement sets M and O and
/// names the boot subnet on-link, not autonomous; a Linux host on the
/// segment still gets no address and no default route from it. `pxed check`
/// warns when DHCPv6 is on without an advertisement that sets M or O, and
/// when the HTTP or TFTP listener takes IPv4 only.
#[test]
fn boot_mode_sets_m_and_o_and_names_the_boot_prefix_on_link() {
    let what = "ra-boot";
    if !available(what) {
        return;
    }
    let lab = Lab::new(what, 0);
    lab.ns.sh("ip addr add fd97:e2e::1/64 dev br0 nodad");
    let host: Host = lab.add_host("h2");
    let bridge = lab.bridge_link_local();
    let dhcp6 = "[dhcp]\nmode = \"full\"\ninterfaces = [\"br0\"]\nlease_db = \"l.sqlite\"\n\
                 [[dhcp.subnet]]\nnetwork = \"fd97:e2e::/64\"\npool = \"fd97:e2e::100-fd97:e2e::1ff\"\n";
    let boot = format!("{dhcp6}{RESPONDER}managed = true\nother = true\n");
    let dir = config(&boot);
    let pxed = Pxed::start(&dir.config(), Some(lab.name()));
    pxed.wait_log("ipv6 ra responder listening", Duration::from_secs(10));
    let answer = squeeze(&host.solicit());
    assert!(answer.contains(&format!("from {bridge}")), "{answer}");
    for line in [
        "Stateful address conf. : Yes",
        "Stateful other conf. : Yes",
        "Router lifetime : 0 (0x00000000) seconds",
        "Prefix : fd97:e2e::/64",
        "On-link : Yes",
        "Autonomous address conf.: No",
    ] {
        assert!(answer.contains(line), "{line:?} not in:\n{answer}");
    }
    assert_eq!(host.default_routes().trim(), "", "a default route appeared");
    assert_eq!(host.global_addrs().trim(), "", "an address appeared");
    drop(pxed);

    // pxed check: DHCPv6 on, the responder without M or O.
    let plain = config(&format!("{dhcp6}{RESPONDER}"));
    let (_, out) = check(&lab, &plain);
    assert!(out.contains("sets neither `managed` nor `other`"), "{out}");
    assert!(
        out.contains("http_listen = \"10.97.0.1:8080\" takes IPv4 only"),
        "{out}"
    );
    let (_, out) = check(&lab, &dir);
    assert!(!out.contains("neither"), "{out}");
}
