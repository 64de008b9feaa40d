//! The HTTP side over real sockets: boot.ipxe, the render endpoint, pxelinux
//! configs and assets, against the real `pxed` binary.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::http::{get, raw};
use common::{ConfigDir, Pxed};

const RULES: &str = r#"
[defaults]
kernel = "debian/vmlinuz"
initrd = "debian/initrd.gz"
args = "ip=dhcp"

[[rule]]
name = "default"
args = "rule=default"

[[rule]]
name = "nec"
match = { product = "Express5800/*" }
args = "rule=nec"
console = { port = "ttyS1", baud = 57600 }

[[rule]]
name = "one-nec"
match = { mac = "52:54:00:12:34:56", product = "Express5800/*" }
args = "rule=one-nec"

[[rule]]
name = "by-mac"
match = { mac = ["52-54-00-AA-BB-CC", "525400aabbcd"] }
args = "rule=by-mac"

[[rule]]
name = "by-serial"
match = { serial = "SN-42*" }
args = "rule=by-serial"

[[rule]]
name = "by-uuid"
priority = 1
match = { uuid = "4C4C4544-0051-3910-8047-B4C04F564433" }
args = "rule=by-uuid"

[[rule]]
name = "by-vendor"
match = { manufacturer = "Dell*" }
args = "rule=by-vendor"

[[rule]]
name = "uefi"
match = { arch = ["efi-x64"] }
args = "rule=uefi"

[[rule]]
name = "pinned"
priority = 10
match = { product = "Pinned*" }
args = "rule=pinned"

[[rule]]
name = "menu"
match = { mac = "52:54:00:00:00:10" }
boot = "pxelinux"
args = "rule=menu"
console = { port = 1, baud = 115200, firmware_redirect = false }

# The usual SOL setup: the BIOS redirects its screen to the serial port.
[[rule]]
name = "menu-redirected"
match = { mac = "52:54:00:00:00:11" }
boot = "pxelinux"
args = "rule=menu-redirected"
console = { port = 1, baud = 115200 }
"#;

struct Server {
    _dir: ConfigDir,
    pxed: Pxed,
    addr: SocketAddr,
}

fn server() -> Server {
    let dir = ConfigDir::new("http_listen = \"127.0.0.1:0\"\ntftp_listen = \"\"", RULES);
    dir.asset(
        "debian/vmlinuz",
        &(0..100_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
    );
    dir.asset("debian/initrd.gz", b"initrd");
    let pxed = Pxed::start(&dir.config(), None);
    let addr = pxed.http();
    Server {
        _dir: dir,
        pxed,
        addr,
    }
}

/// A raw HTTP exchange, so that the exact bytes on the wire are checked.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn rule_of(addr: SocketAddr, query: &str) -> String {
    let (head, body) = get(addr, &format!("/ipxe?{query}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.lines()
        .find_map(|l| l.split("-> rule ").nth(1))
        .map(|r| r.split_whitespace().next().unwrap().to_string())
        .unwrap_or_else(|| format!("<no rule>\n{body}"))
}

#[test]
fn render_over_http_is_byte_identical_to_the_cli() {
    let s = server();
    let query =
        "product=Express5800%2Fi120Ra-e1%20%5BN8100-1482Y%5D&mac=52%3A54%3A00%3A12%3A34%3A56";
    let (head, body) = get(s.addr, &format!("/ipxe?{query}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        header(&head, "content-length"),
        Some(body.len().to_string().as_str())
    );
    let cli = std::process::Command::new(common::pxed_bin())
        .args(["render", "--config"])
        .arg(s._dir.config())
        .args([
            "--product",
            "Express5800/i120Ra-e1 [N8100-1482Y]",
            "--mac",
            "52:54:00:12:34:56",
        ])
        .args(["--base-url", &format!("http://{}", s.addr)])
        .output()
        .unwrap();
    assert!(cli.status.success());
    assert_eq!(String::from_utf8(cli.stdout).unwrap(), body);
    assert!(body.contains("rule=one-nec"), "{body}");
    assert!(
        body.contains(&format!(
            "kernel http://{}/assets/debian/vmlinuz initrd=initrd.gz rule=one-nec",
            s.addr
        )),
        "{body}"
    );
}

#[test]
fn every_selector_kind_and_the_precedence_order() {
    let s = server();
    let cases = [
        // product glob, case-insensitive
        ("product=Express5800%2FR120h&mac=52:54:00:99:99:99", "nec"),
        ("product=express5800%2Fx&mac=52:54:00:99:99:99", "nec"),
        // mac + product beats product alone (specificity 20 > 4)
        (
            "product=Express5800%2Fi120&mac=52:54:00:12:34:56",
            "one-nec",
        ),
        // mac alone
        ("mac=52:54:00:aa:bb:cc", "by-mac"),
        ("mac=52:54:00:aa:bb:cd", "by-mac"),
        // serial glob
        ("serial=SN-4242&mac=52:54:00:99:99:99", "by-serial"),
        // uuid in any case
        (
            "uuid=4c4c4544-0051-3910-8047-b4c04f564433&mac=52:54:00:99:99:99",
            "by-uuid",
        ),
        // manufacturer
        (
            "manufacturer=Dell%20Inc.&mac=52:54:00:99:99:99",
            "by-vendor",
        ),
        // arch from iPXE's platform/buildarch, and explicit arch=
        (
            "platform=efi&buildarch=x86_64&mac=52:54:00:99:99:99",
            "uefi",
        ),
        ("arch=7&mac=52:54:00:99:99:99", "uefi"),
        (
            "platform=pcbios&buildarch=i386&mac=52:54:00:99:99:99",
            "default",
        ),
        // priority beats specificity: a Pinned product with a listed MAC
        ("product=Pinned-1&mac=52:54:00:aa:bb:cc", "pinned"),
        // uuid rule (priority 1) beats the mac rule (priority 0)
        (
            "uuid=4c4c4544-0051-3910-8047-b4c04f564433&mac=52:54:00:aa:bb:cc",
            "by-uuid",
        ),
        // nothing known: the catch-all
        ("mac=52:54:00:99:99:99", "default"),
        ("", "default"),
    ];
    for (query, want) in cases {
        assert_eq!(rule_of(s.addr, query), want, "query {query:?}");
    }
}

#[test]
fn mac_notations_and_the_seed_query() {
    let s = server();
    for mac in [
        "52:54:00:aa:bb:cc",
        "52%3A54%3A00%3AAA%3ABB%3ACC",
        "52-54-00-AA-BB-CC",
        "525400aabbcc",
        "01-52-54-00-aa-bb-cc",
    ] {
        assert_eq!(rule_of(s.addr, &format!("mac={mac}")), "by-mac", "{mac}");
    }
    // The original CGI's query: `type=` for the product.
    assert_eq!(
        rule_of(
            s.addr,
            "type=Express5800%2Fi120Ra-e1%20%5BN8100-1482Y%5D&mac=52%3A54%3A00%3A12%3A34%3A56"
        ),
        "one-nec"
    );
}

#[test]
fn client_strings_cannot_inject_into_scripts_or_menus() {
    let s = server();
    let evil = [
        "Express5800/x%0Achain%20http://evil/x",
        "Express5800/%24%7Bnet0/mac%7D",
        "Express5800/a;shell",
        "Express5800/%22%27%5C%60x%0D%0Aboot",
        "Express5800/%FF%FE%00x",
        "Express5800/%26%26%20shell%20%7C%7C%20exit%20%23",
    ];
    for product in evil {
        let (_, body) = get(
            s.addr,
            &format!("/ipxe?product={product}&mac=52:54:00:99:99:98"),
        );
        let commands: Vec<&str> = body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(
            commands,
            ["echo", "kernel", "initrd", "boot", ":failed", "echo", "sleep", "chain"],
            "{product}: {body}"
        );
        let echo = body.lines().find(|l| l.starts_with("echo pxed:")).unwrap();
        assert!(
            !echo.contains(['$', '{', '}', ';', '&', '|', '#', '"', '\'', '\\', '`']),
            "{echo}"
        );
        assert!(echo.contains("-> rule nec"), "{echo}");

        let (_, menu) = get(
            s.addr,
            &format!("/pxelinux/pxelinux.cfg/01-52-54-00-00-00-10?product={product}"),
        );
        let directives: Vec<&str> = menu
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(
            directives,
            [
                "SERIAL",
                "UI",
                "PROMPT",
                "TIMEOUT",
                "MENU",
                "LABEL",
                "MENU",
                "MENU",
                "KERNEL",
                "APPEND",
                "LABEL",
                "MENU",
                "LOCALBOOT"
            ],
            "{product}: {menu}"
        );
    }
    // A 4 KiB product string is cut, not echoed whole.
    let long = "A".repeat(4096);
    let (head, body) = get(
        s.addr,
        &format!("/ipxe?product={long}&mac=52:54:00:99:99:98"),
    );
    assert!(head.starts_with("HTTP/1.1 200"));
    assert!(body.len() < 2048, "{}", body.len());
}

#[test]
fn unknown_and_malformed_requests_get_a_retry_script() {
    // No catch-all rule: an unknown machine is told why and retries.
    let dir = ConfigDir::new(
        "http_listen = \"127.0.0.1:0\"\ntftp_listen = \"\"",
        "[[rule]]\nname = \"only\"\nmatch = { mac = \"52:54:00:00:00:01\" }\nkernel = \"k\"\n",
    );
    let pxed = Pxed::start(&dir.config(), None);
    let addr = pxed.http();
    for query in [
        "mac=52:54:00:00:00:02&product=Nobody",
        "mac=zz:zz",
        "mac=52:54:00:00:00:01%0Aecho",
    ] {
        let (head, body) = get(addr, &format!("/ipxe?{query}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body.starts_with("#!ipxe\n"), "{body}");
        assert!(body.contains("echo pxed: "), "{body}");
        assert!(
            body.contains(&format!("chain http://{addr}/boot.ipxe")),
            "{body}"
        );
        assert!(body.contains("sleep "), "{body}");
        assert_eq!(
            body.lines().filter(|l| l.starts_with("echo pxed:")).count(),
            2,
            "{body}"
        );
    }
    // pxed's own sentences reach the console whole and as written; only the
    // client's value inside them is sanitised.
    let echo = |body: &str| {
        body.lines()
            .find(|l| l.starts_with("echo pxed:"))
            .unwrap_or_default()
            .to_string()
    };
    let (_, body) = get(addr, "/ipxe?mac=52:54:00:00:00:02");
    assert_eq!(
        echo(&body),
        "echo pxed: no rule matches this machine; add one to machines.toml",
        "{body}"
    );
    let (_, body) = get(addr, "/ipxe?mac=zz%24%7Bevil%7D%3Bx");
    assert_eq!(
        echo(&body),
        "echo pxed: bad request from this machine: not a MAC address: \"zz__evil__x\" \
         (expected e.g. 52:54:00:12:34:56, 52-54-00-12-34-56, 525400123456 or 01-52-54-00-12-34-56)",
        "{body}"
    );
}

#[test]
fn bootstrap_chains_to_the_render_endpoint_with_ipxe_settings() {
    let s = server();
    let (head, body) = get(s.addr, "/boot.ipxe");
    assert!(head.starts_with("HTTP/1.1 200"));
    assert_eq!(
        header(&head, "content-length"),
        Some(body.len().to_string().as_str())
    );
    assert!(body.starts_with("#!ipxe\n"));
    let chain = body.lines().find(|l| l.starts_with("chain ")).unwrap();
    for part in [
        &format!("http://{}/ipxe?", s.addr)[..],
        "product=${product:uristring}",
        "serial=${serial:uristring}",
        "uuid=${uuid}",
        "mac=${mac}",
        "buildarch=${buildarch}",
        "platform=${platform}",
    ] {
        assert!(chain.contains(part), "{part} missing in {chain}");
    }
    // A Host header with script syntax is not trusted as the base URL.
    let (_, body) = raw(
        s.addr,
        "GET /boot.ipxe HTTP/1.1\r\nHost: x\necho${evil}\r\nConnection: close\r\n\r\n",
    );
    assert!(!String::from_utf8_lossy(&body).contains("evil"));
}

#[test]
fn pxelinux_config_is_made_for_a_serial_console() {
    let s = server();
    // The iPXE script for a pxelinux rule hands over to lpxelinux.
    let (_, script) = get(s.addr, "/ipxe?mac=52:54:00:00:00:10&product=Box");
    // Option 209 stays short whatever the machine reports: MAC and rule only.
    assert!(
        script.contains("set 209:string pxelinux.cfg/01-52-54-00-00-00-10?rule=menu&product=Box\n"),
        "{script}"
    );
    let long = format!(
        "/ipxe?mac=52:54:00:00:00:10&product={}&serial={}",
        "P".repeat(100),
        "S".repeat(100)
    );
    let (_, script) = get(s.addr, &long);
    let option209 = script
        .lines()
        .find(|l| l.starts_with("set 209:string"))
        .unwrap();
    assert!(option209.len() < 120, "{option209}");
    assert!(
        script.contains(&format!("set 210:string http://{}/pxelinux/", s.addr)),
        "{script}"
    );
    assert!(
        script.contains(&format!("chain http://{}/pxelinux/lpxelinux.0", s.addr)),
        "{script}"
    );

    let (head, menu) = get(
        s.addr,
        "/pxelinux/pxelinux.cfg/01-52-54-00-00-00-10?product=Box&mac=52%3A54%3A00%3A00%3A00%3A10",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // No firmware redirection: pxelinux writes to the port itself, SERIAL first.
    assert_eq!(menu.lines().next(), Some("SERIAL 1 115200"), "{menu}");
    assert!(menu.contains("\nUI menu.c32\n"), "{menu}");
    // Redirection (the default): no SERIAL, or every character shows twice;
    // the kernel still gets the serial console.
    let (_, redirected) = get(s.addr, "/pxelinux/pxelinux.cfg/01-52-54-00-00-00-11");
    assert_eq!(
        redirected.lines().next(),
        Some("UI menu.c32"),
        "{redirected}"
    );
    assert!(!redirected.contains("SERIAL"), "{redirected}");
    assert!(
        redirected.contains("rule=menu-redirected console=ttyS1,115200n8"),
        "{redirected}"
    );
    assert!(!menu.contains("vesamenu"));
    assert!(menu.contains("APPEND initrd="), "{menu}");
    assert!(menu.contains("rule=menu console=ttyS1,115200n8"), "{menu}");
    assert!(
        !menu.contains("NOEDIT") && !menu.contains("ALLOWOPTIONS 0"),
        "the kernel line must stay editable"
    );
    // menu.c32 shows 56 columns of a title or label (80 minus margins and frame).
    for line in menu.lines().map(str::trim_start) {
        if let Some(shown) = line
            .strip_prefix("MENU TITLE ")
            .or_else(|| line.strip_prefix("MENU LABEL "))
        {
            assert!(
                shown.chars().count() <= 56,
                "wider than menu.c32 shows: {line}"
            );
        }
    }
    // The long product is cut to fit the title line.
    let (_, menu) = get(
        s.addr,
        &format!(
            "/pxelinux/pxelinux.cfg/01-52-54-00-00-00-10?product={}",
            "W".repeat(200)
        ),
    );
    let title = menu.lines().find(|l| l.starts_with("MENU TITLE")).unwrap();
    assert!(title.chars().count() <= "MENU TITLE ".len() + 56, "{title}");
    assert!(
        title.contains("52:54:00:00:00:10"),
        "the MAC comes first, never cut: {title}"
    );
    // The rule named in option 209 is the one served, even for a MAC that
    // alone would get another rule; an unknown name falls back to matching.
    let (_, menu) = get(
        s.addr,
        "/pxelinux/pxelinux.cfg/01-52-54-00-99-99-99?rule=menu",
    );
    assert!(menu.contains("rule=menu"), "{menu}");
    let (_, menu) = get(
        s.addr,
        "/pxelinux/pxelinux.cfg/01-52-54-00-99-99-99?rule=gone",
    );
    assert!(menu.contains("rule=default"), "{menu}");
    // Names pxelinux tries that are not per-MAC get 404 at once.
    for name in [
        "default",
        "C0A80001",
        "4c4c4544-0051-3910-8047-b4c04f564433",
    ] {
        let (head, _) = get(s.addr, &format!("/pxelinux/pxelinux.cfg/{name}"));
        assert!(head.starts_with("HTTP/1.1 404"), "{name}: {head}");
    }
}

#[test]
fn assets_have_length_range_and_http10() {
    let s = server();
    let file: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let (head, body) = raw(
        s.addr,
        "GET /assets/debian/vmlinuz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header(&head, "content-length"), Some("100000"));
    assert_eq!(body, file);
    // Slashes merged, as the shim asks for GRUB over UEFI HTTP Boot
    // (`<its own URL's directory>/grubx64.efi`).
    let (head, body) = raw(
        s.addr,
        "GET /assets//debian/vmlinuz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, file);

    let (head, body) = raw(s.addr, "GET /assets/debian/vmlinuz HTTP/1.1\r\nHost: x\r\nRange: bytes=1000-1999\r\nConnection: close\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert_eq!(
        header(&head, "content-range"),
        Some("bytes 1000-1999/100000")
    );
    assert_eq!(body, &file[1000..2000]);

    // lpxelinux speaks HTTP/1.0 without a Host header.
    let (head, body) = raw(s.addr, "GET /pxelinux/debian/initrd.gz HTTP/1.0\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert_eq!(header(&head, "content-length"), Some("6"));
    assert_eq!(body, b"initrd");
    let (head, body) = raw(s.addr, "GET /ipxe?mac=52:54:00:aa:bb:cc HTTP/1.0\r\n\r\n");
    assert!(head.contains(" 200 "), "{head}");
    assert_eq!(
        header(&head, "content-length"),
        Some(body.len().to_string().as_str())
    );
    assert!(
        String::from_utf8_lossy(&body).contains(&format!("http://{}/assets/", s.addr)),
        "falls back to the local address"
    );

    // HEAD: length without a body.
    let (head, body) = raw(
        s.addr,
        "HEAD /assets/debian/vmlinuz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200"));
    assert_eq!(header(&head, "content-length"), Some("100000"));
    assert!(body.is_empty());

    // Keep-alive: two requests on one connection (iPXE fetches kernel and initrd so).
    let mut conn = TcpStream::connect(s.addr).unwrap();
    conn.write_all(b"GET /assets/debian/initrd.gz HTTP/1.1\r\nHost: x\r\n\r\nGET /assets/debian/initrd.gz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut all = String::new();
    conn.read_to_string(&mut all).unwrap();
    assert_eq!(all.matches("HTTP/1.1 200").count(), 2, "{all}");
}

#[test]
fn asset_paths_never_leave_their_root() {
    let s = server();
    std::os::unix::fs::symlink("/etc/passwd", s._dir.path().join("assets/passwd")).unwrap();
    std::os::unix::fs::symlink("/etc", s._dir.path().join("assets/etc")).unwrap();
    for path in [
        "/assets/../machines.toml",
        "/assets/%2e%2e/machines.toml",
        "/assets/debian/%2E%2E/%2E%2E/machines.toml",
        "/assets/..%2fmachines.toml",
        "/assets//etc/passwd",
        "/assets/%2fetc%2fpasswd",
        "/assets/passwd",
        "/assets/etc/hostname",
        "/assets/debian%5c..%5c..%5cmachines.toml",
        "/assets/a%00b",
        "/pxelinux/../machines.toml",
    ] {
        let (head, body) = raw(
            s.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(matches!(status, 400 | 403 | 404), "{path}: {head}");
        let body = String::from_utf8_lossy(&body);
        assert!(
            !body.contains("root:") && !body.contains("[server]"),
            "{path} leaked: {body}"
        );
        assert!(
            header(&head, "location").is_none(),
            "never redirect: {head}"
        );
    }
    // A directory is not a file, and is never redirected to a slash.
    let (head, _) = raw(
        s.addr,
        "GET /assets/debian HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    drop(s.pxed);
}

/// `pxed_http_connections{listener="http"}`: open connections on the HTTP listener
/// (read from the admin listener, which has its own count).
fn open_connections(s: &Server) -> f64 {
    let admin = s.pxed.addr("admin");
    let (_, body) = raw(
        admin,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    common::metric(
        &String::from_utf8_lossy(&body),
        "pxed_http_connections",
        &[("listener", "http")],
    )
}

/// Whether the server has closed `c` (EOF or reset), without blocking.
fn closed_by_server(c: &mut TcpStream) -> bool {
    c.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match c.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    c.set_nonblocking(false).unwrap();
    closed
}

/// Issue 7, slowloris: 400 connections send their request head one byte a
/// second, 50 more sit idle after a keep-alive request. A normal request is
/// served meanwhile; every slow and idle connection is closed by the server
/// after the header timeout (10 s; the bound here is generous, the point is
/// that they end), and the open-connection gauge returns to 0.
#[test]
fn slowloris_and_idle_keepalive_connections_are_closed() {
    let s = server();
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..400)
        .map(|_| {
            let mut c = TcpStream::connect(s.addr).unwrap();
            c.write_all(b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            c
        })
        .collect();
    let mut idle: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut c = TcpStream::connect(s.addr).unwrap();
            c.write_all(b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 4096];
            let n = c.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            c
        })
        .collect();
    assert!(open_connections(&s) >= 450.0);
    // A machine booting during the attack is served.
    let (head, body) = get(s.addr, "/ipxe?mac=52:54:00:12:34:56");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.starts_with("#!ipxe"), "{body}");
    let served_during = started.elapsed();
    // Keep dripping bytes until the server has closed every connection.
    let deadline = started + Duration::from_secs(30);
    let mut slow_open = slow.len();
    let mut idle_open = idle.len();
    while (slow_open > 0 || idle_open > 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        slow.retain_mut(|c| c.write_all(b"x").is_ok() && !closed_by_server(c));
        idle.retain_mut(|c| !closed_by_server(c));
        slow_open = slow.len();
        idle_open = idle.len();
    }
    let all_closed = started.elapsed();
    println!(
        "slowloris: normal request served after {served_during:?}; 400 slow + 50 idle connections \
         closed by the server within {all_closed:?}"
    );
    assert_eq!(slow_open, 0, "slowloris connections still open after 30 s");
    assert_eq!(
        idle_open, 0,
        "idle keep-alive connections still open after 30 s"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_connections(&s) > 0.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(open_connections(&s), 0.0);
}

/// The status line of the answer to `request`, written from another thread
/// (the server may answer before it has read everything). `None`: closed
/// without an answer.
fn status_of(addr: SocketAddr, request: Vec<u8>) -> Option<u16> {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut writer = c.try_clone().unwrap();
    let w = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    drop(c);
    let _ = w.join();
    let line = String::from_utf8_lossy(&head).into_owned();
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Issue 7, oversized requests: a clear status each, never a hang, and the
/// server goes on serving.
#[test]
fn oversized_heads_and_queries_get_a_clear_status() {
    let s = server();
    let request = |target: &str, headers: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").into_bytes()
    };
    let long_line = format!("X-Long: {}\r\n", "a".repeat(40 * 1024));
    let many: String = (0..200).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let query = format!(
        "/ipxe?mac=52:54:00:12:34:56&product={}",
        "A".repeat(20 * 1024)
    );
    let huge = format!("/ipxe?product={}", "A".repeat(200 * 1024));
    for (what, req, want) in [
        (
            "a 40 KiB header line",
            request("/boot.ipxe", &long_line),
            431,
        ),
        ("200 headers", request("/boot.ipxe", &many), 431),
        ("a 20 KiB query", request(&query, ""), 414),
        ("a 200 KiB request target", request(&huge, ""), 431),
        (
            "a request line that is not HTTP",
            b"\x16\x03\x01 hello\r\n\r\n".to_vec(),
            400,
        ),
    ] {
        assert_eq!(status_of(s.addr, req), Some(want), "{what}");
    }
    // Long but reasonable identities (4 KiB product) are still served.
    let (head, body) = get(
        s.addr,
        &format!("/ipxe?mac=52:54:00:12:34:56&product={}", "B".repeat(4096)),
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.starts_with("#!ipxe"));
}

/// Issue 7, the connection cap: 4,096 open connections (`MAX_CONNECTIONS`)
/// hold every slot; more connections wait in the kernel's accept queue and are
/// not served while the slots are taken, the gauge never passes the cap, and
/// the waiting request is served once the header timeout frees slots.
#[test]
fn the_connection_cap_holds_and_the_server_recovers() {
    const CAP: usize = 4096; // MAX_CONNECTIONS in src/http/mod.rs
    common::raise_open_files_limit(CAP as u64 + 1024);
    let s = server();
    let held: Vec<TcpStream> = (0..CAP + 100)
        .map(|_| TcpStream::connect(s.addr).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut open = 0.0;
    while open < CAP as f64 && Instant::now() < deadline {
        open = open_connections(&s);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(open, CAP as f64, "connections accepted");
    // One more machine: its connection waits for a slot.
    let started = Instant::now();
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.write_all(b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 4096];
    assert!(
        c.read(&mut buf).is_err(),
        "served although every slot was taken"
    );
    assert!(open_connections(&s) <= CAP as f64);
    // The idle connections time out (header timeout) and it is served.
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let n = c.read(&mut buf).unwrap();
    println!(
        "connection cap: {} open, a new request waited {:?}",
        CAP,
        started.elapsed()
    );
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    drop(held);
}

/// A client that shuts down its sending side once the request is out (`nc -N`,
/// shell scripts) still gets its answer (hyper used to close the connection
/// at that EOF without one; the fuzz harness found it).
#[test]
fn a_client_that_half_closes_gets_its_answer() {
    let s = server();
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    c.write_all(b"GET /ipxe?mac=52:54:00:00:00:01 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
    assert!(out.contains("#!ipxe"), "{out}");
}
