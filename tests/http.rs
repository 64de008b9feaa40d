//! The HTTP side over real sockets: boot.ipxe, the render endpoint, pxelinux
//! configs and assets, against the real `pxed` binary.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

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
fn raw(addr: SocketAddr, request: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end")
        + 4;
    (
        String::from_utf8_lossy(&buf[..split]).into_owned(),
        buf[split..].to_vec(),
    )
}

fn get(addr: SocketAddr, path_and_query: &str) -> (String, String) {
    let (head, body) = raw(
        addr,
        &format!("GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    (head, String::from_utf8(body).unwrap())
}

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
