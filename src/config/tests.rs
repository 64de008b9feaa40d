//! The loader's errors, table-driven: each row is a `machines.toml` that must
//! be refused, the line the error must point at, and words of its reason.
//! The shipped templates are given (`TemplateFiles::Given`): no disk, no root.

use std::path::Path;

use super::*;

/// Rules and defaults every row starts from; rows add or replace lines.
const BASE: &str = "[defaults]\nkernel = \"vmlinuz\"\n\n[[rule]]\nname = \"default\"\n";

fn load(text: &str) -> Result<Arc<Config>, ConfigErrors> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fixture/machines.toml");
    load_text(
        &path,
        text,
        TemplateFiles::Given(crate::fuzzing::templates()),
    )
}

const FULL: &str = "[dhcp]\nmode = \"full\"\n[[dhcp.subnet]]\nnetwork = \"10.0.0.0/24\"\npool = \"10.0.0.10-10.0.0.20\"\n";

#[test]
fn every_error_names_its_line() {
    // (config text, line of the first error, words of its reason)
    let rows: Vec<(String, usize, &str)> = vec![
        // TOML and unknown keys.
        ("[server\n".into(), 1, "unclosed table"),
        (format!("{BASE}colour = \"red\"\n"), 6, "unknown field `colour`"),
        ("[[rule]]\nname = \"a\"\nkernel = \"k\"\nmatch = { shoe = \"x\" }\n".into(), 4, "unknown field `shoe`"),
        // [server]
        (format!("[server]\nhttp_listen = \"nowhere\"\n{BASE}"), 2, "is not an address:port"),
        (format!("[server]\ntftp_listen = \"1.2.3.4\"\n{BASE}"), 2, "is not an address:port"),
        (format!("[server]\npublic_url = \"ftp://x\"\n{BASE}"), 2, "public_url"),
        // [defaults] and [[rule]]
        ("[defaults]\nname = \"x\"\n[[rule]]\nname = \"a\"\nkernel = \"k\"\n".into(), 1, "[defaults] cannot have `name`"),
        ("[defaults]\nip = \"10.0.0.5\"\n[[rule]]\nname = \"a\"\nkernel = \"k\"\n".into(), 2, "[defaults] cannot have `ip`"),
        ("[defaults]\nloader = \"x.efi\"\n[[rule]]\nname = \"a\"\nkernel = \"k\"\n".into(), 2, "[defaults] cannot have `loader`"),
        (format!("{BASE}\n[[rule]]\nkernel = \"k\"\n"), 7, "needs a `name`"),
        (format!("{BASE}\n[[rule]]\nname = \"default\"\nmatch = {{ mac = \"52:54:00:00:00:01\" }}\n"), 7, "already exists"),
        (format!("{BASE}boot = \"floppy\"\n"), 6, "use \"ipxe\", \"pxelinux\", \"grub\" or \"local\""),
        (format!("{BASE}boot = \"grub\"\nkernel = \"http://x/k\"\n"), 7, "fetches the kernel and initrd over TFTP"),
        (format!("[server]\nfiles = {{ \"../x\" = \"y\" }}\n{BASE}"), 2, "[server.files] \"../x\""),
        ("[[rule]]\nname = \"a\"\n".into(), 2, "needs a `kernel`"),
        ("[[rule]]\nname = \"a\"\nboot = \"pxelinux\"\n".into(), 2, "needs a `kernel`"),
        (format!("{BASE}template = \"nope.ipxe\"\n"), 6, "no template \"nope.ipxe\""),
        (format!("{BASE}menu_template = \"nope.menu\"\n"), 6, "no template \"nope.menu\""),
        (format!("{BASE}console = {{ port = 7 }}\n"), 6, "console port must be 0-3"),
        (format!("{BASE}console = {{ port = \"ttyUSB0\" }}\n"), 6, "console port must be 0-3"),
        (format!("{BASE}console = {{ port = 1, baud = 1200 }}\n"), 6, "baud 1200"),
        // Selectors.
        (format!("{BASE}\n[[rule]]\nname = \"m\"\nmatch = {{ mac = \"52:54\" }}\n"), 9, "52:54"),
        (format!("{BASE}\n[[rule]]\nname = \"u\"\nmatch = {{ uuid = \"not-a-uuid\" }}\n"), 9, "not-a-uuid"),
        (format!("{BASE}\n[[rule]]\nname = \"a\"\nmatch = {{ arch = \"vax\" }}\n"), 9, "unknown arch \"vax\""),
        (format!("{BASE}\n[[rule]]\nname = \"e\"\nmatch = {{ product = [] }}\n"), 9, "an empty list matches nothing"),
        (format!("{BASE}\n[[rule]]\nname = \"p1\"\nmatch = {{ product = \"X*\" }}\n[[rule]]\nname = \"p2\"\nmatch = {{ product = \"*Y\" }}\n"), 11, "can match the same machine"),
        // [dhcp]
        (format!("{BASE}[dhcp]\nmode = \"relay\"\n"), 7, "use \"off\", \"proxy\" or \"full\""),
        (format!("{BASE}[dhcp]\nmode = \"full\"\n"), 7, "needs at least one [[dhcp.subnet]] with a `pool`"),
        (format!("{BASE}[dhcp]\nlisten = \"67\"\n"), 7, "is not an address:port"),
        (format!("{BASE}[dhcp]\nefi_loader = \"../x.efi\"\n"), 7, "loader \"../x.efi\""),
        (format!("{BASE}loader = \"has space.efi\"\n"), 6, "loader \"has space.efi\""),
        (format!("{BASE}[dhcp]\nrate_table_size = 1\n"), 7, "rate_table_size = 1"),
        (format!("{BASE}[dhcp]\nmax_leases_per_mac = 0\n"), 7, "max_leases_per_mac = 0"),
        (format!("{BASE}[dhcp]\n[[dhcp.subnet]]\nnetwork = \"10.0.0.0\"\n"), 8, "write it as address/prefix"),
        (format!("{BASE}[dhcp]\n[[dhcp.subnet]]\nnetwork = \"10.0.0.0/31\"\n"), 8, "prefix 8-30"),
        (format!("{BASE}[dhcp]\n[[dhcp.subnet]]\nnetwork = \"10.0.0.1/24\"\n"), 8, "has host bits set"),
        (format!("{BASE}[dhcp]\n[[dhcp.subnet]]\nnetwork = \"10.0.0.0/24\"\npool = \"10.0.0.20-10.0.0.10\"\n"), 9, "pool \"10.0.0.20-10.0.0.10\""),
        (format!("{BASE}[dhcp]\n[[dhcp.subnet]]\nnetwork = \"10.0.0.0/24\"\npool = \"10.0.0.0-10.0.0.10\"\n"), 9, "excluding the network"),
        (format!("{BASE}[dhcp]\n[[dhcp.subnet]]\nnetwork = \"10.0.0.0/24\"\nrouter = \"10.0.1.1\"\n"), 9, "router 10.0.1.1 is not inside"),
        (format!("{BASE}[dhcp]\n[[dhcp.subnet]]\nnetwork = \"10.0.0.0/24\"\nrouter = \"gateway\"\n"), 9, "is not an IPv4 address"),
        (format!("{BASE}[dhcp]\n[[dhcp.subnet]]\nnetwork = \"10.0.0.0/24\"\ndns = [\"8.8.8.8\", \"dns\"]\n"), 9, "dns \"dns\""),
        (format!("{BASE}[dhcp]\n[[dhcp.subnet]]\nnetwork = \"10.0.0.0/24\"\ndomain = \"a b\"\n"), 9, "domain \"a b\""),
        (format!("{BASE}[dhcp]\n[[dhcp.subnet]]\nnetwork = \"10.0.0.0/24\"\nlease_time = 30\n"), 9, "at least 60 seconds"),
        (format!("{BASE}[dhcp]\n[[dhcp.subnet]]\nnetwork = \"10.0.0.0/16\"\n[[dhcp.subnet]]\nnetwork = \"10.0.1.0/24\"\n"), 10, "overlaps"),
        // Reservations.
        (format!("{BASE}ip = \"10.0.0.5\"\n{FULL}"), 6, "exactly one MAC"),
        (format!("{BASE}\n[[rule]]\nname = \"r\"\nmatch = {{ mac = \"52:54:00:00:00:01\" }}\nip = \"10.9.0.5\"\n{FULL}"), 10, "not inside any [[dhcp.subnet]]"),
        (format!("{BASE}\n[[rule]]\nname = \"r\"\nmatch = {{ mac = \"52:54:00:00:00:01\" }}\nip = \"10.0.0.255\"\n{FULL}"), 10, "network or broadcast"),
        (format!("{BASE}\n[[rule]]\nname = \"r\"\nmatch = {{ mac = \"52:54:00:00:00:01\" }}\nip = \"ten\"\n{FULL}"), 10, "is not an IPv4 or IPv6 address"),
        (format!("{BASE}\n[[rule]]\nname = \"r\"\nmatch = {{ mac = \"52:54:00:00:00:01\" }}\nhostname = \"-bad\"\n{FULL}"), 10, "hostname \"-bad\""),
        (format!("{BASE}\n[[rule]]\nname = \"r\"\nmatch = {{ mac = \"52:54:00:00:00:01\" }}\nip = \"10.0.0.5\"\n[[rule]]\nname = \"s\"\nmatch = {{ mac = \"52:54:00:00:00:02\" }}\nip = \"10.0.0.5\"\npriority = 1\n{FULL}"), 14, "reserved by another rule too"),
        (format!("{BASE}\n[[rule]]\nname = \"r\"\nmatch = {{ mac = \"52:54:00:00:00:01\" }}\nhostname = \"a\"\n[[rule]]\nname = \"s\"\nmatch = {{ mac = \"52:54:00:00:00:01\", arch = \"bios\" }}\nhostname = \"b\"\n{FULL}"), 14, "already has a reservation"),
        // IPv6 subnets and reservations (config/dhcp6.rs, config/reserve.rs).
        (format!("{BASE}[dhcp]\n[[dhcp.subnet]]\nnetwork = \"fd00::/130\"\n"), 8, "prefix 16-126"),
        (format!("{BASE}[dhcp]\n[[dhcp.subnet]]\nnetwork = \"fd00::1/64\"\n"), 8, "did you mean fd00::/64"),
        (format!("{BASE}[dhcp]\n[[dhcp.subnet]]\nnetwork = \"fd00::/64\"\nrouter = \"fd00::1\"\n"), 9, "has no `router`"),
        (format!("{BASE}[dhcp]\n[[dhcp.subnet]]\nnetwork = \"fd00::/64\"\npool = \"fd00::-fd00::9\"\n"), 9, "all-zero address"),
        (format!("{BASE}[dhcp]\n[[dhcp.subnet]]\nnetwork = \"fd00::/64\"\npool = \"fd01::1-fd01::9\"\n"), 9, "both inside fd00::/64"),
        (format!("{BASE}[dhcp]\n[[dhcp.subnet]]\nnetwork = \"fd00::/64\"\ndns = [\"10.0.0.1\"]\n"), 9, "is not an IPv6 address"),
        (format!("{BASE}[dhcp]\n[[dhcp.subnet]]\nnetwork = \"fd00::/48\"\n[[dhcp.subnet]]\nnetwork = \"fd00::/64\"\n"), 10, "overlaps"),
        (format!("{FULL}dhcpv6 = true\n{BASE}"), 6, "unknown field `dhcpv6`"),
        (format!("{BASE}[dhcp]\nmode = \"full\"\ndhcpv6 = true\n[[dhcp.subnet]]\nnetwork = \"10.0.0.0/24\"\npool = \"10.0.0.10-10.0.0.20\"\n"), 8, "needs an IPv6 [[dhcp.subnet]]"),
        (format!("{BASE}\n[[rule]]\nname = \"r\"\nmatch = {{ mac = \"52:54:00:00:00:01\" }}\nip = \"fd09::5\"\n{FULL}"), 10, "not inside any IPv6 [[dhcp.subnet]]"),
        (format!("{BASE}\n[[rule]]\nname = \"r\"\nmatch = {{ mac = \"52:54:00:00:00:01\" }}\nip = [\"10.0.0.5\", \"10.0.0.6\"]\n{FULL}"), 10, "at most one IPv4 and one IPv6"),
        // [events] and [ipv6_ra]
        (format!("{BASE}[events]\nkeep_days = 0\n"), 7, "keep_days must be at least 1"),
        (format!("{BASE}[events]\nmax_events = 10\n"), 7, "max_events must be at least 1000"),
        (format!("{BASE}[ipv6_ra]\nenabled = true\n"), 7, "needs `interfaces`"),
        (format!("{BASE}[ipv6_ra]\ninterfaces = [\"a/b\"]\n"), 7, "interface \"a/b\""),
        (format!("{BASE}[ipv6_ra]\ninterval = 2\n"), 7, "interval = 2"),
    ];
    assert!(rows.len() >= 50);
    let mut wrong = Vec::new();
    for (text, line, words) in &rows {
        let errors = match load(text) {
            Ok(_) => {
                wrong.push(format!("accepted:\n{text}"));
                continue;
            }
            Err(e) => e.0,
        };
        let first = &errors[0];
        if !first.reason.contains(words) || first.location.line != *line {
            wrong.push(format!("want line {line} {words:?}, got {first}\n{text}"));
        }
        assert!(first.location.column >= 1);
        assert!(first.location.file.ends_with("machines.toml"), "{first}");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n---\n"));
}

/// Every problem in one go: an operator fixes them all, not one per reload.
#[test]
fn all_errors_at_once() {
    let text = format!(
        "[server]\nhttp_listen = \"x\"\n{BASE}boot = \"floppy\"\n[dhcp]\nmode = \"relay\"\n[events]\nkeep_days = 0\n"
    );
    let errors = load(&text).expect_err("refused").0;
    let lines: Vec<usize> = errors.iter().map(|e| e.location.line).collect();
    for line in [2, 8, 10, 12] {
        assert!(lines.contains(&line), "line {line} missing from {errors:?}");
    }
}

/// The rules carry their own loader and reservation; the policy indexes
/// reservations by MAC.
#[test]
fn rules_carry_their_dhcp_keys() {
    let text = format!(
        "{BASE}\n[[rule]]\nname = \"db\"\nmatch = {{ mac = \"52:54:00:00:00:01\" }}\nip = \"10.0.0.5\"\nhostname = \"db\"\nloader = \"snponly.efi\"\n{FULL}"
    );
    let config = load(&text).unwrap_or_else(|e| panic!("{e}"));
    let rule = config
        .policy
        .rules
        .iter()
        .find(|r| r.name == "db")
        .expect("rule db");
    assert_eq!(rule.boot.loader.as_deref(), Some("snponly.efi"));
    let mac = "52:54:00:00:00:01".parse().unwrap();
    let r = config.policy.reservation(mac).expect("a reservation");
    assert_eq!(
        (r.ip, r.hostname.as_deref()),
        (Some("10.0.0.5".parse().unwrap()), Some("db"))
    );
    assert!(config
        .policy
        .reserved_ips()
        .contains(&"10.0.0.5".parse().unwrap()));
    assert!(config
        .dhcp
        .loader_settings
        .iter()
        .any(|s| s.key == "rule \"db\" loader"));
}

/// One IPv4 and one IPv6 address reserved by one rule; DHCPv6 on by
/// default in full mode with an IPv6 subnet.
#[test]
fn a_rule_reserves_one_address_of_each_family() {
    let v6 = "[[dhcp.subnet]]\nnetwork = \"fd00::/64\"\npool = \"fd00::100-fd00::1ff\"\n";
    let text = format!(
        "{BASE}\n[[rule]]\nname = \"db\"\nmatch = {{ mac = \"52:54:00:00:00:01\" }}\nip = [\"10.0.0.5\", \"fd00::5\"]\n{FULL}{v6}"
    );
    let config = load(&text).unwrap_or_else(|e| panic!("{e}"));
    let r = config
        .policy
        .reservation("52:54:00:00:00:01".parse().unwrap())
        .expect("a reservation");
    assert_eq!(
        (r.ip, r.ip6),
        (
            Some("10.0.0.5".parse().unwrap()),
            Some("fd00::5".parse().unwrap())
        )
    );
    assert!(config
        .policy
        .reserved_ips6()
        .contains(&"fd00::5".parse().unwrap()));
    assert!(config.dhcp.dhcpv6);
    assert_eq!(config.dhcp.subnets6.len(), 1);
    assert_eq!(config.dhcp.subnets.len(), 1);
}

#[test]
fn events_default_to_their_own_file_beside_the_leases() {
    let config = load(&format!("{BASE}[dhcp]\nlease_db = \"state/l.sqlite\"\n")).unwrap();
    let leases = &config.dhcp.lease_db;
    let events = config.events.db.as_ref().unwrap();
    assert_eq!(events, &leases.with_file_name("pxed-events.sqlite"));
    assert_eq!(config.events.legacy.as_ref(), Some(leases));
    // Set apart, or off: nothing to move from the lease file.
    let set = load(&format!("{BASE}[events]\ndb = \"e.sqlite\"\n")).unwrap();
    assert!(set.events.db.as_ref().unwrap().ends_with("e.sqlite"));
    assert_eq!(set.events.legacy, None);
    let off = load(&format!("{BASE}[events]\ndb = \"\"\n")).unwrap();
    assert_eq!(
        (off.events.db.clone(), off.events.legacy.clone()),
        (None, None)
    );
}
