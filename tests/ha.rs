//! Several pxed on one PostgreSQL (issue 18, docs/ha.md), with real
//! processes, a real database and the packets on the wire:
//! - failover: two pxed in their own namespaces on one bridge share a
//!   database; a boot storm of 2,000 simulated machines runs across both;
//!   one pxed is killed with SIGKILL in the middle. Afterwards every machine
//!   boots (DHCP, TFTP, its script), no address went to two machines on the
//!   wire, and every ACK on the wire is a lease in the database;
//! - outage: the database stops for 10 s under load and comes back: no ACK
//!   left without its row, HTTP kept serving, and DHCP resumed by itself.

mod common;
use common::wire;
#[path = "../examples/storm/machine/mod.rs"]
#[allow(dead_code)]
mod machine;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::dhcp::Capture;
use common::pg::{self, Postgres};
use common::{privileged, sh, ConfigDir, Netns, Pxed};

const MACHINES: usize = 2000;

/// A bridge in a namespace of its own and hosts on it, each a namespace
/// with `eth0` (a veth into the bridge) and an address in 10.97.0.0/16.
struct Segment {
    bridge: Netns,
    hosts: Vec<Netns>,
}

impl Segment {
    fn new(tag: &str, hosts: &[(&str, &str)]) -> Segment {
        let bridge = Netns::new(&format!("{tag}br"));
        bridge.sh("ip link add br0 type bridge forward_delay 0 && ip link set br0 up");
        let mut out = Vec::new();
        for (i, (name, addr)) in hosts.iter().enumerate() {
            let ns = Netns::new(&format!("{tag}{name}"));
            sh(&format!(
                "ip -n {b} link add v{i} type veth peer name eth0 netns {h} && \
                 ip -n {b} link set v{i} master br0 up && \
                 ip -n {h} addr add {addr}/16 dev eth0 && ip -n {h} link set eth0 up",
                b = bridge.name,
                h = ns.name
            ));
            out.push(ns);
        }
        Segment { bridge, hosts: out }
    }
}

/// The boot-storm rules (`bench/storm.toml`) on 10.97.0.0/16, with the
/// shared database and this server's name.
fn server_config(name: &str, pg: &Postgres) -> ConfigDir {
    let storm = std::fs::read_to_string(common::repo().join("bench/storm.toml")).unwrap();
    let rules = &storm[storm.find("[defaults]").unwrap()..];
    ConfigDir::new(
        &format!("name = \"{name}\"\nhttp_listen = \"0.0.0.0:8080\"\ntftp_listen = \"0.0.0.0:69\"\nsearch_paths = [\"/usr/lib/ipxe\"]"),
        &format!(
            "{}\n[dhcp]\nmode = \"full\"\ninterfaces = [\"eth0\"]\n\
             [[dhcp.subnet]]\nnetwork = \"10.97.0.0/16\"\npool = \"10.97.1.0-10.97.200.255\"\n\
             router = \"10.97.0.1\"\nlease_time = 3600\n\n{rules}",
            pg.section("pxed")
        ),
    )
}

fn storm_options(undionly: &[u8]) -> machine::Options {
    machine::Options {
        interface: "eth0".into(),
        machines: MACHINES,
        expect: Some(Arc::new(undionly.to_vec())),
        mac_base: 0x18_0000,
        ..machine::Options::default()
    }
}

fn bound_rows(pg: &Postgres) -> HashMap<String, String> {
    pg.psql(
        "pxed",
        "SELECT ip, mac FROM leases WHERE state = 1 AND client <> ''::bytea",
    )
    .lines()
    .filter_map(|l| {
        let (ip, mac) = l.split_once('|')?;
        let ip = std::net::Ipv4Addr::from(u32::try_from(ip.parse::<i64>().ok()?).ok()?);
        Some((ip.to_string(), mac.to_string()))
    })
    .collect()
}

/// Every ACK on the wire went to one machine per address, and is a bound
/// lease of that machine in the database.
fn check_acks(acks: &[(String, String)], pg: &Postgres) {
    let mut holders: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (mac, ip) in acks {
        holders.entry(ip.as_str()).or_default().insert(mac.as_str());
    }
    let doubled: Vec<_> = holders.iter().filter(|(_, m)| m.len() > 1).collect();
    assert!(
        doubled.is_empty(),
        "addresses ACKed to two machines: {doubled:?}"
    );
    let rows = bound_rows(pg);
    let missing: Vec<_> = acks
        .iter()
        .filter(|(mac, ip)| rows.get(ip) != Some(mac))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "ACKs on the wire with no such lease in the database: {missing:?}"
    );
}

fn storm_prerequisites(what: &str) -> Option<Vec<u8>> {
    if !privileged(what) || !pg::available(what) || !common::have_tool("tshark", what) {
        return None;
    }
    match std::fs::read("/usr/lib/ipxe/undionly.kpxe") {
        Ok(b) => Some(b),
        Err(_) => {
            common::skip(
                what,
                "no /usr/lib/ipxe/undionly.kpxe (apt-get install ipxe)",
            );
            None
        }
    }
}

#[test]
fn two_servers_one_killed_mid_storm_every_machine_boots_no_address_twice() {
    let Some(undionly) = storm_prerequisites("failover storm") else {
        return;
    };
    common::raise_open_files_limit(8192);
    let pg = Postgres::start();
    let seg = Segment::new(
        "ha",
        &[("a", "10.97.0.2"), ("b", "10.97.0.3"), ("c", "10.97.0.9")],
    );
    let (dir_a, dir_b) = (server_config("a", &pg), server_config("b", &pg));
    let a = Pxed::start(&dir_a.config(), Some(&seg.hosts[0].name));
    let b = Pxed::start(&dir_b.config(), Some(&seg.hosts[1].name));
    for p in [&a, &b] {
        p.wait_log("leases loaded", Duration::from_secs(20));
        p.wait_log("tftp listening", Duration::from_secs(10));
    }
    let capture = Capture::start(&seg.bridge.name, "br0", &dir_a.path().join("storm.pcap"));
    let started = Instant::now();
    let first = std::thread::scope(|s| {
        let storm = s.spawn(|| {
            seg.hosts[2].run(|| {
                let rt = tokio::runtime::Runtime::new().unwrap();
                rt.block_on(machine::run(storm_options(&undionly))).unwrap()
            })
        });
        // Kill a once a fifth of the machines hold a lease.
        while bound_rows(&pg).len() < MACHINES / 5 && started.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(50));
        }
        a.signal("KILL");
        storm.join().unwrap()
    });
    println!("first pass, a killed mid-storm:\n{}", first.summary());
    // The machines that failed do what firmware does: boot again. All boot,
    // on the server that is left.
    let second = seg.hosts[2].run(|| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(machine::run(storm_options(&undionly))).unwrap()
    });
    println!("second pass, b alone:\n{}", second.summary());
    let acks = capture.acks();
    assert_eq!(second.failed(), 0, "{}", second.summary());
    assert_eq!(second.completed, MACHINES);
    assert!(
        first.completed > 0 && acks.len() >= 2 * MACHINES,
        "ACKs on the wire: {}",
        acks.len()
    );
    check_acks(&acks, &pg);
    let rows = bound_rows(&pg);
    let macs: HashSet<&String> = rows.values().collect();
    assert!(
        macs.len() >= MACHINES,
        "every machine holds a lease: {}",
        macs.len()
    );
    // Both servers' steps are in the one event record, each tagged.
    let servers = pg.psql("pxed", "SELECT DISTINCT server FROM events ORDER BY 1");
    assert_eq!(servers.lines().collect::<Vec<_>>(), ["a", "b"]);
    // `pxed events` on either server's config shows both servers' steps.
    let config = dir_b.config();
    let args = ["events", "--json", "--limit", "100000", "--config"].map(std::ffi::OsStr::new);
    let out = common::pxed_ok(&[&args[..], &[config.as_os_str()]].concat());
    let shown: HashSet<String> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["server"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        shown,
        HashSet::from(["a".to_string(), "b".to_string()]),
        "pxed events"
    );
    // Bindings the database refused (an ACK turned into a NAK), as the
    // event record counts them.
    let conflicts = pg.psql(
        "pxed",
        "SELECT coalesce(sum(count), 0) FROM events WHERE outcome = 'conflict'",
    );
    println!(
        "failover: {} ACKs on the wire, {} leases, {} machines; refused bindings (NAKs): {}",
        acks.len(),
        rows.len(),
        macs.len(),
        conflicts.trim()
    );
}

#[test]
fn the_database_stops_for_10_s_under_load_no_ack_without_its_row_and_dhcp_resumes() {
    let what = "database outage";
    if !privileged(what)
        || !pg::available(what)
        || !common::have_tool("perfdhcp", what)
        || !common::have_tool("tshark", what)
    {
        return;
    }
    let pg = Postgres::start();
    let lab = common::dhcp::new_lab("out");
    lab.cli.sh("ip addr add 10.77.0.2/24 dev vc");
    let dir = ConfigDir::new(
        "http_listen = \"0.0.0.0:8080\"\ntftp_listen = \"\"",
        &format!(
            "{}\n[dhcp]\nmode = \"full\"\n[[dhcp.subnet]]\nnetwork = \"10.77.0.0/16\"\n\
             pool = \"10.77.1.0-10.77.250.255\"\nlease_time = 3600\n\n\
             [defaults]\nkernel = \"vmlinuz\"\n[[rule]]\nname = \"default\"\n",
            pg.section("pxed")
        ),
    );
    let pxed = common::dhcp::start(&lab, &dir);
    let capture = Capture::start(&lab.cli.name, "vc", &dir.path().join("outage.pcap"));
    let perf = common::dhcp::Perfdhcp::start(&lab, 300, 30);
    std::thread::sleep(Duration::from_secs(5));
    pg.stop_server();
    // From here the database is down (`pg_ctl stop -w` returned).
    let stopped_at = now();
    std::thread::sleep(Duration::from_secs(2));
    // HTTP keeps serving without the database.
    let http = lab
        .cli
        .sh("curl -s -o /dev/null -w %{http_code} http://10.77.0.1:8080/boot.ipxe");
    assert_eq!(http, "200", "HTTP during the outage");
    std::thread::sleep(Duration::from_secs(8));
    // Up to here it was down (it answers before `pg_ctl start -w` returns).
    let restarted_at = now();
    pg.start_server();
    perf.wait();
    let acks = capture.timed_acks();
    let log = pxed.log();
    drop(pxed);
    let (before, during, after) = acks.iter().fold((0, 0, 0), |(b, d, a), (t, ..)| {
        if *t < stopped_at {
            (b + 1, d, a)
        } else if *t < restarted_at {
            (b, d + 1, a)
        } else {
            (b, d, a + 1)
        }
    });
    println!("ACKs on the wire: {before} before the outage, {during} during it, {after} after");
    assert!(before > 100, "load before the outage: {before}");
    assert!(
        after > 100,
        "DHCP resumed without a restart: {after} ACKs after"
    );
    // During the outage no ACK leaves (half a second for one already sent
    // and still crossing the veth as the stop returned).
    let late: Vec<_> = acks
        .iter()
        .filter(|(t, ..)| *t > stopped_at + 0.5 && *t < restarted_at)
        .map(|(t, m, ip)| (t - stopped_at, m, ip))
        .collect();
    assert!(
        late.is_empty(),
        "ACKs while the database was down: {late:?}\n{}",
        log.lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let pairs: Vec<(String, String)> = acks.into_iter().map(|(_, m, ip)| (m, ip)).collect();
    check_acks(&pairs, &pg);
    let outage_lines = log.matches("cannot store leases").count();
    assert_eq!(outage_lines, 1, "one clear line while it lasts:\n{log}");
    assert!(
        log.contains("lease database writable again"),
        "and one when it ends"
    );
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Two servers under one `[server] name` would not follow each other's
/// leases: the second says so, in one line naming the name; a third with a
/// name of its own says nothing of the kind.
#[test]
fn a_second_server_with_the_same_name_is_named_in_the_log() {
    let what = "two servers, one name";
    if !pg::available(what) {
        return;
    }
    let pg = Postgres::start();
    let config = |name: &str| {
        ConfigDir::new(
            &format!("name = \"{name}\"\nhttp_listen = \"127.0.0.1:0\"\ntftp_listen = \"\""),
            &format!(
                "{}\n[[rule]]\nname = \"default\"\nkernel = \"k\"\n",
                pg.section("pxed")
            ),
        )
    };
    let (first_dir, twin_dir, other_dir) = (config("pxe-a"), config("pxe-a"), config("pxe-b"));
    let first = Pxed::start(&first_dir.config(), None);
    first.wait_log("pxed started", Duration::from_secs(10));
    let twin = Pxed::start(&twin_dir.config(), None);
    let said = twin.wait_log(
        "another pxed on this database is running as [server] name \"pxe-a\"",
        Duration::from_secs(10),
    );
    assert!(said.contains("give each server its own name"), "{said}");
    let other = Pxed::start(&other_dir.config(), None);
    other.wait_log("pxed started", Duration::from_secs(10));
    // It has tried to take its name by the time it logged its start plus a
    // moment; the holder never complains about itself.
    std::thread::sleep(Duration::from_secs(1));
    for (who, log) in [("first", first.log()), ("other", other.log())] {
        assert!(
            !log.contains("another pxed on this database"),
            "{who}:\n{log}"
        );
    }
}
