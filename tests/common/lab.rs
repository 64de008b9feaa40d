//! The end-to-end test lab (BRIEF "The test lab"): a network namespace with a
//! bridge `br0` (10.97.0.1/16) and one tap per guest; the guest payload (a
//! Debian kernel and a busybox initramfs, built once per run and cached under
//! `target/`); the DHCP provider; and QEMU guests whose serial console the test
//! reads and types into. Every process is started here and stopped by its own
//! PID when its handle is dropped; every wait is bounded.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::screen::{Screen, Terminal};
use super::{have_tool, pxed_bin, repo, skip, Daemon, Netns};

/// pxed's address on the lab bridge.
pub const SERVER_IP: &str = "10.97.0.1";
/// pxed's address on the IPv6-only lab's bridge ([`Lab::ipv6_only`]).
pub const SERVER_IP6: &str = "fd97:e2e::1";
/// pxed's HTTP port in the lab.
pub const HTTP_PORT: u16 = 8080;
/// The line the payload's `/init` prints, followed by `cmdline=<…>`.
pub const MARKER: &str = "PXED-E2E-BOOTED";

pub const OVMF: &[&str] = &["/usr/share/ovmf/OVMF.fd", "/usr/share/qemu/OVMF.fd"];
pub const EFI_E1000_ROM: &[&str] = &[
    "/usr/lib/ipxe/qemu/efi-e1000.rom",
    "/usr/share/qemu/efi-e1000.rom",
];

pub fn http_base() -> String {
    format!("http://{SERVER_IP}:{HTTP_PORT}")
}

/// `target/` of this build (next to the `pxed` binary under test).
pub fn target_dir() -> PathBuf {
    let bin = pxed_bin();
    bin.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo().join("target"))
}

/// Whether the lab can run here: root and `ip netns` (via [`super::privileged`]),
/// `/dev/net/tun`, QEMU and dnsmasq. Prints `skipped: …` otherwise.
pub fn available(what: &str) -> bool {
    if !super::privileged(what) {
        return false;
    }
    if !Path::new("/dev/net/tun").exists() {
        return skip(what, "/dev/net/tun is missing (no tap devices)");
    }
    have_tool("qemu-system-x86_64", what) && have_tool("dnsmasq", what)
}

/// The first of `candidates` that exists, or a skip.
pub fn find_file(candidates: &[&str], what: &str) -> Option<PathBuf> {
    match candidates.iter().map(PathBuf::from).find(|p| p.exists()) {
        Some(p) => Some(p),
        None => {
            skip(what, &format!("none of {candidates:?} exists"));
            None
        }
    }
}

/// The guest payload: `vmlinuz` and `initrd.gz` in one cached directory.
#[derive(Debug, Clone)]
pub struct Payload {
    pub dir: PathBuf,
}

impl Payload {
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.gz")
    }
}

/// Builds the payload once per test run (`tests/lab/payload.sh`, shared with
/// `bench/boot.sh`; it also locks the cache against other processes). `None`
/// (after printing `skipped: …`) when it cannot be built, e.g. no Debian
/// package lists.
pub fn payload(what: &str) -> Option<Payload> {
    static PAYLOAD: OnceLock<Result<Payload, String>> = OnceLock::new();
    built(&PAYLOAD, "amd64", what)
}

/// The ARM64 payload: an arm64 kernel and initramfs, and Debian's signed
/// `shimaa64.efi` and `grubaa64.efi` beside them (`payload.sh … arm64`:
/// needs the arm64 package lists, `dpkg --add-architecture arm64`).
pub fn payload_arm64(what: &str) -> Option<Payload> {
    static PAYLOAD: OnceLock<Result<Payload, String>> = OnceLock::new();
    built(&PAYLOAD, "arm64", what)
}

fn built(cell: &OnceLock<Result<Payload, String>>, arch: &str, what: &str) -> Option<Payload> {
    let result = cell.get_or_init(|| {
        let started = Instant::now();
        let out = Command::new(repo().join("tests/lab/payload.sh"))
            .arg(target_dir().join("e2e-payload"))
            .arg(arch)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run tests/lab/payload.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "tests/lab/payload.sh {arch} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        eprintln!("e2e payload: {} ({:.1?})", dir.display(), started.elapsed());
        Ok(Payload { dir })
    });
    match result {
        Ok(p) => Some(p.clone()),
        Err(e) => {
            skip(what, e);
            None
        }
    }
}

/// Guests that may run at once in one test process: `PXED_E2E_MAX_GUESTS`,
/// default 4. Under TCG every guest wants a whole core; with five at once on
/// this 2-core machine (`--test-threads=4`, as `.ci/run` does) one pxelinux
/// boot once stalled after the menu for 5 minutes (cause not pinned down:
/// lpxelinux's lwIP HTTP is the slow part, 7 s for the kernel unloaded); runs
/// with at most four did not.
pub fn max_guests() -> usize {
    std::env::var("PXED_E2E_MAX_GUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(4)
}

static GUEST_SLOTS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// A reservation of guest slots, returned when dropped.
pub struct GuestSlots {
    n: usize,
}

/// Waits until `n` guests (at most [`max_guests`]) may run, and reserves them.
pub fn reserve_guests(n: usize) -> GuestSlots {
    let cap = max_guests();
    let n = n.min(cap);
    let (lock, freed) = &GUEST_SLOTS;
    let mut used = lock.lock().unwrap_or_else(|e| e.into_inner());
    while *used + n > cap {
        used = freed.wait(used).unwrap_or_else(|e| e.into_inner());
    }
    *used += n;
    GuestSlots { n }
}

impl Drop for GuestSlots {
    fn drop(&mut self) {
        let (lock, freed) = &GUEST_SLOTS;
        let mut used = lock.lock().unwrap_or_else(|e| e.into_inner());
        *used -= self.n;
        freed.notify_all();
    }
}

/// The QEMU accelerator: `PXED_E2E_ACCEL` if set, else KVM when `/dev/kvm` is
/// there and a direct kernel boot of the payload reaches the marker under it
/// within 10 s (a working KVM needs 1–2 s; some nested or sandboxed KVMs start the firmware and
/// then hang in the kernel), else TCG.
pub fn accel(payload: &Payload) -> &'static str {
    static ACCEL: OnceLock<&'static str> = OnceLock::new();
    ACCEL.get_or_init(|| {
        if let Ok(a) = std::env::var("PXED_E2E_ACCEL") {
            return if a == "kvm" { "kvm" } else { "tcg" };
        }
        let usable = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        if !usable {
            eprintln!("e2e accel: tcg (no usable /dev/kvm)");
            return "tcg";
        }
        let started = Instant::now();
        let mut cmd = Command::new("qemu-system-x86_64");
        // No NIC at all: the probe never touches a network.
        cmd.args(["-accel", "kvm", "-nographic", "-m", "256", "-no-reboot"])
            .args(["-nic", "none"])
            .arg("-kernel")
            .arg(payload.kernel())
            .arg("-initrd")
            .arg(payload.initrd())
            .args(["-append", "console=ttyS0 quiet pxed.probe=kvm"]);
        let mut probe = Console::spawn(cmd, "kvm-probe");
        let ok = probe.wait_for(MARKER, Duration::from_secs(10)).is_ok();
        drop(probe);
        let a = if ok { "kvm" } else { "tcg" };
        eprintln!(
            "e2e accel: {a} (KVM probe {} in {:.1?})",
            if ok { "booted" } else { "did not boot" },
            started.elapsed()
        );
        a
    })
}

/// A namespace with the lab bridge and `taps` tap devices (`tap0`, `tap1`, …).
///
/// No IPv6 router: iPXE's `ifconf` waits ~15 s for IPv6 autoconfiguration on
/// such a segment unless pxed's own responder answers (`[ipv6_ra]`, which the
/// end-to-end setup turns on; see docs/deployment.md "Boot stalls at
/// Configuring").
pub struct Lab {
    pub ns: Netns,
    pub taps: usize,
    prefix: String,
    /// No IPv4 on the bridge: [`SERVER_IP6`] only ([`Lab::ipv6_only`]).
    pub v6_only: bool,
}

impl Lab {
    pub fn new(prefix: &str, taps: usize) -> Lab {
        Lab::build(
            prefix,
            taps,
            &format!("ip addr add {SERVER_IP}/16 dev br0"),
            false,
        )
    }

    /// The lab with no IPv4 on the boot network: br0 has [`SERVER_IP6`]/64
    /// and its link-local address only (IPv6 netboot, tests/e2e/ipv6.rs).
    pub fn ipv6_only(prefix: &str, taps: usize) -> Lab {
        Lab::build(
            prefix,
            taps,
            &format!("ip addr add {SERVER_IP6}/64 dev br0 nodad"),
            true,
        )
    }

    /// Where guests reach pxed, as a URL host: `10.97.0.1` or `[fd97:e2e::1]`.
    pub fn server_host(&self) -> String {
        if self.v6_only {
            format!("[{SERVER_IP6}]")
        } else {
            SERVER_IP.to_string()
        }
    }

    fn build(prefix: &str, taps: usize, address: &str, v6_only: bool) -> Lab {
        let ns = Netns::new(prefix);
        // No duplicate address detection in this private namespace: br0's
        // link-local address is usable as soon as a port has carrier.
        ns.sh("echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad && \
             echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad");
        ns.sh(&format!(
            "ip link add br0 type bridge forward_delay 0 && {address} && ip link set br0 up"
        ));
        for i in 0..taps {
            ns.sh(&format!(
                "ip tuntap add tap{i} mode tap && ip link set tap{i} master br0 up"
            ));
        }
        Lab {
            ns,
            taps,
            prefix: prefix.to_string(),
            v6_only,
        }
    }

    pub fn name(&self) -> &str {
        &self.ns.name
    }

    /// The prefix the lab was created with, for naming related namespaces.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Another host on the bridge (see [`Host`]), named `<prefix>-<name>`.
    pub fn add_host(&self, name: &str) -> Host {
        let ns = Netns::new(&format!("{}-{name}", self.prefix));
        let port = format!("v{name}");
        self.ns.sh(&format!(
            "ip link add {port} type veth peer name eth0 netns {} && ip link set {port} master br0 up",
            ns.name
        ));
        ns.sh("echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad && \
             sysctl -qw net.ipv6.conf.eth0.accept_dad=0 net.ipv6.conf.eth0.forwarding=0 \
               net.ipv6.conf.eth0.accept_ra=1 net.ipv6.conf.eth0.autoconf=1 \
               net.ipv6.conf.eth0.router_solicitations=0 && \
             ip link set eth0 up");
        let host = Host { ns };
        host.wait_link_local();
        host
    }

    /// br0's link-local address (the source of pxed's advertisements), once
    /// the bridge has one (it needs a port with carrier).
    pub fn bridge_link_local(&self) -> String {
        wait_link_local(&self.ns, "br0")
    }
}

/// A second host on the lab bridge: its own namespace, `eth0` on a veth into
/// br0, IPv6 as any Linux host has it (`accept_ra = 1`, `forwarding = 0`,
/// SLAAC on): if an advertisement on the segment configured anything, this
/// host would show it. It sends no solicitations of its own (only
/// [`Host::solicit`] does), so a test knows what each answer answers.
pub struct Host {
    pub ns: Netns,
}

impl Host {
    fn wait_link_local(&self) -> String {
        wait_link_local(&self.ns, "eth0")
    }

    /// Sends a Router Solicitation with `rdisc6` and returns what it printed
    /// about the advertisements it got (empty when none came in 2 × 1.5 s).
    pub fn solicit(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns.name, "rdisc6"])
            .args(["-1", "-w", "1500", "-r", "2", "eth0"])
            .output()
            .expect("run rdisc6");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip -6 route show default`: empty when no router is in use.
    pub fn default_routes(&self) -> String {
        self.ns.sh("ip -6 route show default")
    }

    /// Global IPv6 addresses on eth0 (SLAAC would put them there).
    pub fn global_addrs(&self) -> String {
        self.ns.sh("ip -6 -o addr show dev eth0 scope global")
    }

    /// Router advertisements this host's kernel received
    /// (`Icmp6InRouterAdvertisements` of its namespace).
    pub fn advertisements_received(&self) -> u64 {
        self.ns
            .sh("cat /proc/net/snmp6")
            .lines()
            .find_map(|l| l.strip_prefix("Icmp6InRouterAdvertisements"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Waits (up to 10 s) for `dev` in `ns` to have a link-local address.
fn wait_link_local(ns: &Netns, dev: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = ns.sh(&format!("ip -6 -o addr show dev {dev} scope link"));
        if let Some(addr) = out
            .split_whitespace()
            .skip_while(|w| *w != "inet6")
            .nth(1)
            .and_then(|a| a.split('/').next())
        {
            return addr.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{dev} in {} has no link-local address",
            ns.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The prefix a real IPv6 router advertises in the tests' control case.
pub const ROUTER_PREFIX: &str = "fd97::";

/// A real IPv6 router on br0, for contrast with pxed's responder: dnsmasq
/// advertising fd97::/64 with a non-zero router lifetime (no DHCP, no DNS).
/// A host on the segment gets a default route and a SLAAC address from it.
pub fn ipv6_router(lab: &Lab) -> Daemon {
    lab.ns
        .sh(&format!("ip addr add {ROUTER_PREFIX}1/64 dev br0 nodad"));
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", lab.name(), "dnsmasq"]).args([
        "--keep-in-foreground",
        "--log-facility=-",
        "--conf-file=/dev/null",
        "--port=0",
        "--interface=br0",
        "--bind-interfaces",
        "--enable-ra",
        "--leasefile-ro",
        "--pid-file=",
    ]);
    cmd.arg(format!("--dhcp-range={ROUTER_PREFIX},ra-only,64"));
    let d = Daemon::spawn(cmd, "dnsmasq (IPv6 router)");
    d.wait_log("router advertisement enabled", Duration::from_secs(20));
    d
}

/// How the lab's guests get an address and the boot URL.
pub struct Dhcp {
    /// Appended to `machines.toml` before pxed starts (pxed's own `[dhcp]`).
    pub machines_toml: String,
    /// pxed's `[ipv6_ra]` section; `None`: the responder with nothing set
    /// (what an IPv4 boot network needs).
    pub ra: Option<String>,
    /// A DHCP server other than pxed, when one is used.
    pub server: Option<Daemon>,
    /// The namespace that server runs in when it is not pxed's (dropped after it).
    pub peer: Option<Netns>,
}

/// The lab's full DHCP service: pxed's own (`[dhcp] mode = "full"`), an
/// address from 10.97.1.0/24 and, for iPXE (user class `iPXE`, which QEMU's
/// iPXE ROMs send from the first request), the URL of pxed's `boot.ipxe`, with
/// option 175.176 so iPXE does not wait for ProxyDHCP offers. The lease
/// database defaults to the config directory, a temp dir here.
pub fn dhcp_full(_lab: &Lab) -> Dhcp {
    Dhcp {
        machines_toml: "[dhcp]\nmode = \"full\"\ninterfaces = [\"br0\"]\n\
                        [[dhcp.subnet]]\nnetwork = \"10.97.0.0/16\"\n\
                        pool = \"10.97.1.10-10.97.1.250\"\nrouter = \"10.97.0.1\"\n"
            .to_string(),
        ra: None,
        server: None,
        peer: None,
    }
}

/// IPv6 netboot on the IPv6-only lab: pxed's DHCPv6 (full mode) on
/// fd97:e2e::/64, and advertisements with M and O and the prefix on-link,
/// which iPXE needs before it asks DHCPv6 (BRIEF "IPv6 netboot").
pub fn dhcp_full6(_lab: &Lab) -> Dhcp {
    Dhcp {
        machines_toml: "[dhcp]\nmode = \"full\"\ninterfaces = [\"br0\"]\n\
                        [[dhcp.subnet]]\nnetwork = \"fd97:e2e::/64\"\n\
                        pool = \"fd97:e2e::100-fd97:e2e::1ff\"\n"
            .to_string(),
        ra: Some("[ipv6_ra]\nenabled = true\nmanaged = true\nother = true\n".to_string()),
        server: None,
        peer: None,
    }
}

/// Another host on the lab bridge: a namespace of its own whose `eth0` (a
/// veth into br0) has `address` (`ip addr add` arguments).
fn other_host(lab: &Lab, address: &str) -> Netns {
    let peer = Netns::new(&format!("{}-dhcp", lab.prefix()));
    lab.ns.sh(&format!(
        "ip link add vdhcp type veth peer name eth0 netns {} && ip link set vdhcp master br0 up",
        peer.name
    ));
    peer.sh(&format!("ip addr add {address} && ip link set eth0 up"));
    peer
}

/// IPv6 proxy mode on the IPv6-only lab: dnsmasq, as another host
/// (fd97:e2e::2 on a veth into br0), hands out IA_NA addresses and sends the
/// router advertisements (M and O, the prefix on-link); pxed in proxy mode
/// with `dhcpv6 = true` adds the boot file URL, its own advertisements off.
pub fn dhcp_proxy6(lab: &Lab) -> Dhcp {
    let peer = other_host(lab, "fd97:e2e::2/64 dev eth0 nodad");
    let range = [
        "--dhcp-range=fd97:e2e::1000,fd97:e2e::1fff,64,10m".to_string(),
        "--enable-ra".to_string(),
    ];
    let server = dnsmasq(&peer.name, "eth0", &range);
    Dhcp {
        machines_toml: "[dhcp]\nmode = \"proxy\"\ndhcpv6 = true\ninterfaces = [\"br0\"]\n"
            .to_string(),
        ra: Some("[ipv6_ra]\nenabled = false\n".to_string()),
        server: Some(server),
        peer: Some(peer),
    }
}

/// ProxyDHCP: dnsmasq hands out addresses only (no boot file, no next
/// server), pxed in proxy mode (`[dhcp] mode = "proxy"`, keys of branch `dhcp`)
/// answers with the boot information. Both need UDP port 67, so dnsmasq runs
/// as another host: its own namespace, 10.97.0.2 on a veth into the lab bridge.
/// Needs pxed's DHCP server.
pub fn dhcp_proxy(lab: &Lab) -> Dhcp {
    let peer = other_host(lab, "10.97.0.2/16 dev eth0");
    let server = dnsmasq(&peer.name, "eth0", &[]);
    Dhcp {
        machines_toml: "[dhcp]\nmode = \"proxy\"\ninterfaces = [\"br0\"]\n".to_string(),
        ra: None,
        server: Some(server),
        peer: Some(peer),
    }
}

/// dnsmasq as a DHCP server only (no DNS, no TFTP) in namespace `ns` on
/// `interface`, with `extra` options. Waits until it reports its DHCP socket.
pub fn dnsmasq(ns: &str, interface: &str, extra: &[String]) -> Daemon {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "dnsmasq"])
        .args([
            "--keep-in-foreground",
            "--log-facility=-",
            "--log-dhcp",
            "--conf-file=/dev/null",
            "--port=0",
            "--bind-interfaces",
            "--dhcp-range=10.97.1.1,10.97.1.254,255.255.0.0,10m",
            "--dhcp-authoritative",
            // dnsmasq pings an address before offering it (up to 3 s): the
            // lab has no other hosts.
            "--no-ping",
            "--pid-file=",
            // Leases in memory only.
            "--leasefile-ro",
        ])
        .arg(format!("--interface={interface}"))
        .args(extra);
    let d = Daemon::spawn(cmd, "dnsmasq");
    d.wait_log("DHCP, sockets bound", Duration::from_secs(20));
    d
}

/// A process whose stdout is a serial console: kept whole (raw bytes), copied
/// to a log file under `target/e2e-logs/` for post-mortems, rendered on an
/// 80x25 terminal as an operator's SOL client would (stdout only: QEMU's own
/// warnings on stderr are not on the serial line), readable and typeable
/// while it runs. Killed by its own PID when dropped.
pub struct Console {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<Vec<u8>>>,
    terminal: Arc<Mutex<Terminal>>,
    pub name: String,
    pub started: Instant,
}

impl Console {
    pub fn spawn(mut cmd: Command, name: &str) -> Console {
        let logs = target_dir().join("e2e-logs");
        let _ = std::fs::create_dir_all(&logs);
        let mut file = std::fs::File::create(logs.join(format!("{name}.log"))).ok();
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let out = Arc::new(Mutex::new(Vec::new()));
        let terminal = Arc::new(Mutex::new(Terminal::new()));
        for (stream, is_serial) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
                true,
            ),
            (Box::new(child.stderr.take().unwrap()), false),
        ] {
            let sink = out.clone();
            let terminal = is_serial.then(|| terminal.clone());
            let mut file = file.as_mut().and_then(|f| f.try_clone().ok());
            let mut stream = stream;
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                    if let Some(t) = &terminal {
                        t.lock().unwrap().process(&buf[..n]);
                    }
                    if let Some(f) = file.as_mut() {
                        let _ = f.write_all(&buf[..n]);
                    }
                }
            });
        }
        Console {
            stdin: child.stdin.take(),
            child,
            out,
            terminal,
            name: name.to_string(),
            started,
        }
    }

    /// Everything printed so far, with invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// Waits until the console shows `needle`; returns the whole text, or an
    /// error with the console's tail when the process exits or time runs out.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        self.wait_for_any(&[needle], timeout).map(|(_, text)| text)
    }

    /// Waits until the console shows one of `needles` (escape sequences
    /// ignored); returns which one (the first in `needles` order when several
    /// are there) and the whole text.
    pub fn wait_for_any(
        &mut self,
        needles: &[&str],
        timeout: Duration,
    ) -> Result<(usize, String), String> {
        let deadline = Instant::now() + timeout;
        // Firmware redraws with cursor moves inside words ("ldlinux.c" ESC[25;25H
        // "32"): look in the text without escape sequences too.
        let found = |text: &str| {
            let plain = strip_ansi(text);
            needles
                .iter()
                .position(|n| text.contains(n) || plain.contains(n))
        };
        loop {
            let text = self.text();
            if let Some(i) = found(&text) {
                return Ok((i, text));
            }
            let exited = self.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                // The reader threads may still hold the last bytes.
                std::thread::sleep(Duration::from_millis(200));
                let text = self.text();
                if let Some(i) = found(&text) {
                    return Ok((i, text));
                }
                let why = match exited {
                    Some(status) => format!("exited ({status})"),
                    None => format!("timed out after {timeout:?}"),
                };
                return Err(format!(
                    "{}: none of {needles:?} on the console, {why}; console tail:\n{}",
                    self.name,
                    printable_tail(&text, 3000)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The 80x25 screen as the operator sees it now.
    pub fn screen(&self) -> Screen {
        self.terminal.lock().unwrap().screen()
    }

    /// Waits until the screen satisfies `ready`; returns that screen, or an
    /// error with the last screen when the process exits or time runs out.
    pub fn wait_for_screen(
        &mut self,
        what: &str,
        ready: impl Fn(&Screen) -> bool,
        timeout: Duration,
    ) -> Result<Screen, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return Ok(screen);
            }
            let exited = self.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                let why = match exited {
                    Some(status) => format!("exited ({status})"),
                    None => format!("timed out after {timeout:?}"),
                };
                return Err(format!(
                    "{}: the screen never showed {what}, {why}; last screen:\n{}",
                    self.name,
                    screen.capture()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types `keys` on the console (the guest's serial input).
    pub fn type_keys(&mut self, keys: &[u8]) {
        let stdin = self.stdin.as_mut().expect("console stdin");
        stdin.write_all(keys).expect("type on the console");
        stdin.flush().expect("flush console input");
    }

    /// Waits up to `timeout` for the process to exit; kills it if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `n` characters of console text with escape sequences and other
/// control characters removed, for failure messages.
pub fn printable_tail(text: &str, n: usize) -> String {
    let clean = strip_ansi(text);
    let chars: Vec<char> = clean.chars().collect();
    chars[chars.len().saturating_sub(n)..].iter().collect()
}

/// Removes ANSI escape sequences and control characters except newlines.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // CSI: parameters, then one final byte in @..~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    // Two-byte (ESC c) or charset (ESC ( B) sequences.
                    if let Some(&n) = chars.peek() {
                        chars.next();
                        if "()%".contains(n) {
                            chars.next();
                        }
                    }
                }
            }
            '\n' => out.push('\n'),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The guest's firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS with QEMU's iPXE option ROM (the default e1000 ROM), with
    /// `-nographic`: SeaBIOS copies its text screen to the serial port, as a
    /// server's BIOS console redirection does for SOL.
    Bios,
    /// SeaBIOS as [`Firmware::Bios`], but the serial port is only a serial
    /// port (`-display none -serial stdio`): no redirection, so only what a
    /// program writes to the port itself reaches the console.
    BiosSerialOnly,
    /// [`Firmware::Bios`] with a virtio NIC (QEMU's iPXE `pxe-virtio.rom`):
    /// the payload's kernel has a driver for it (not for the e1000), so its
    /// `/init` can reach the network (the installer callback).
    BiosVirtio,
    /// OVMF with QEMU's iPXE EFI ROM (`efi-e1000.rom`).
    Uefi,
    /// OVMF's own PXE client, no iPXE ROM: q35, pflash `OVMF_CODE_4M.fd` and
    /// a copy of `OVMF_VARS_4M.fd`, `virtio-net-pci` with `romfile=`.
    UefiPxe,
    /// [`Firmware::UefiPxe`] with PXEv4 and PXEv6 turned off (fw_cfg), so
    /// OVMF goes straight to UEFI HTTP Boot over IPv4.
    UefiHttp,
    /// [`Firmware::UefiPxe`] with PXEv4 off (it costs ~60 s on an IPv6-only
    /// network): OVMF's PXEv6 (BRIEF "IPv6 netboot").
    UefiPxe6,
    /// OVMF's HTTP Boot over IPv6: PXEv4 and PXEv6 off. HTTPv4 is still
    /// tried first and waits for DHCPv4 (~50 s, TCG): with it off too
    /// (`IPv4Support=no`) pxed saw only a Solicit without vendor class or
    /// architecture and the firmware failed at once with "Could not
    /// retrieve NBP file size" (measured once, OVMF 2022.11).
    UefiHttp6,
    /// [`Firmware::UefiPxe`] with Secure Boot on and the Microsoft keys
    /// enrolled: `OVMF_CODE_4M.ms.fd` and a copy of `OVMF_VARS_4M.ms.fd`,
    /// q35 with SMM and the secure pflash (BRIEF "Secure Boot netboot").
    UefiSecureBoot,
    /// ARM64 UEFI with Secure Boot: `qemu-system-aarch64 -M virt -cpu
    /// cortex-a57`, `AAVMF_CODE.ms.fd` and a copy of `AAVMF_VARS.ms.fd`,
    /// the firmware's own PXE on `virtio-net-pci` (arch 11). Always TCG.
    Arm64SecureBoot,
}

impl Firmware {
    /// OVMF or AAVMF booting from pflash with a variable store of its own.
    fn pflash(self) -> bool {
        matches!(
            self,
            Firmware::UefiPxe
                | Firmware::UefiHttp
                | Firmware::UefiPxe6
                | Firmware::UefiHttp6
                | Firmware::UefiSecureBoot
                | Firmware::Arm64SecureBoot
        )
    }
}

/// OVMF's code and variable store for [`Firmware::UefiPxe`] and
/// [`Firmware::UefiHttp`] (Debian's `ovmf`).
pub const OVMF_CODE_4M: &[&str] = &["/usr/share/OVMF/OVMF_CODE_4M.fd"];
pub const OVMF_VARS_4M: &[&str] = &["/usr/share/OVMF/OVMF_VARS_4M.fd"];
/// The same with Secure Boot and Microsoft's keys ([`Firmware::UefiSecureBoot`]).
pub const OVMF_CODE_4M_MS: &[&str] = &["/usr/share/OVMF/OVMF_CODE_4M.ms.fd"];
pub const OVMF_VARS_4M_MS: &[&str] = &["/usr/share/OVMF/OVMF_VARS_4M.ms.fd"];
/// Debian's `qemu-efi-aarch64` with Secure Boot ([`Firmware::Arm64SecureBoot`]).
pub const AAVMF_CODE_MS: &[&str] = &["/usr/share/AAVMF/AAVMF_CODE.ms.fd"];
pub const AAVMF_VARS_MS: &[&str] = &["/usr/share/AAVMF/AAVMF_VARS.ms.fd"];

/// One machine to boot.
#[derive(Debug, Clone)]
pub struct Machine {
    pub name: String,
    pub mac: String,
    /// SMBIOS type 1 product; QEMU's own ("Standard PC (i440FX + PIIX, 1996)") if unset.
    pub product: Option<String>,
    /// More SMBIOS type 1 fields, as QEMU spells them: `serial=…,manufacturer=…`.
    pub smbios_extra: Option<String>,
    pub firmware: Firmware,
}

impl Machine {
    pub fn bios(name: &str, mac: &str, product: Option<&str>) -> Machine {
        Machine {
            name: name.to_string(),
            mac: mac.to_string(),
            product: product.map(str::to_string),
            smbios_extra: None,
            firmware: Firmware::Bios,
        }
    }
}

/// A QEMU guest network-booting in the lab; its serial console (ttyS0, the
/// "SOL" console) is the process's stdio.
pub struct Guest {
    pub console: Console,
    pub machine: Machine,
    /// The guest's own copy of OVMF's variable store, removed with it.
    _vars: Option<tempfile::NamedTempFile>,
}

impl Guest {
    /// Boots `machine` on the lab's tap `tap`. `uefi` holds the firmware
    /// files: for [`Firmware::Uefi`] the OVMF image and the EFI ROM; for
    /// [`Firmware::UefiPxe`] and [`Firmware::UefiHttp`] `OVMF_CODE_4M.fd` and
    /// `OVMF_VARS_4M.fd` (copied for the guest).
    pub fn boot(
        lab: &Lab,
        tap: usize,
        machine: &Machine,
        accel: &str,
        uefi: Option<(&Path, &Path)>,
    ) -> Guest {
        assert!(tap < lab.taps, "the lab has {} taps", lab.taps);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", lab.name()]);
        if machine.firmware == Firmware::Arm64SecureBoot {
            // No KVM for another CPU architecture.
            cmd.args(["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57"])
                .args(["-accel", "tcg"]);
        } else {
            cmd.args(["qemu-system-x86_64", "-accel", accel]);
        }
        cmd.args(["-m", "512", "-no-reboot"]);
        if machine.firmware == Firmware::BiosSerialOnly {
            cmd.args(["-display", "none", "-serial", "stdio", "-monitor", "none"]);
        } else {
            cmd.arg("-nographic");
        }
        let mut smbios: Vec<String> = Vec::new();
        if let Some(product) = &machine.product {
            // QEMU option values escape ',' by doubling it.
            smbios.push(format!("product={}", product.replace(',', ",,")));
        }
        smbios.extend(machine.smbios_extra.clone());
        if !smbios.is_empty() {
            cmd.arg("-smbios")
                .arg(format!("type=1,{}", smbios.join(",")));
        }
        cmd.arg("-netdev")
            .arg(format!("tap,id=n0,ifname=tap{tap},script=no,downscript=no"));
        let (nic, vars) = firmware_args(&mut cmd, machine, uefi);
        cmd.arg("-device")
            .arg(format!("{nic},netdev=n0,mac={}", machine.mac));
        let console = Console::spawn(cmd, &format!("{}-{}", lab.name(), machine.name));
        Guest {
            console,
            machine: machine.clone(),
            _vars: vars,
        }
    }

    /// Waits for the payload's marker line (all of it: the console may
    /// deliver it in pieces) and returns the guest's `/proc/cmdline`.
    pub fn booted_cmdline(&mut self, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        self.console.wait_for(MARKER, timeout)?;
        let line = loop {
            let text = self.console.text();
            let at = text.find(MARKER).unwrap();
            if let Some(end) = text[at..].find('\n') {
                break text[at..at + end].to_string();
            }
            if Instant::now() > deadline || self.console.child.try_wait().ok().flatten().is_some() {
                // Whatever arrived: the guest is gone or out of time.
                std::thread::sleep(Duration::from_millis(200));
                let text = self.console.text();
                break text[at..].lines().next().unwrap_or_default().to_string();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(line
            .trim_end_matches('\r')
            .split_once("cmdline=")
            .map(|(_, c)| c.to_string())
            .unwrap_or_default())
    }
}

/// The firmware's QEMU arguments; returns the NIC model (with its option ROM)
/// and the guest's copy of OVMF's variable store, if it has one.
fn firmware_args(
    cmd: &mut Command,
    machine: &Machine,
    uefi: Option<(&Path, &Path)>,
) -> (String, Option<tempfile::NamedTempFile>) {
    let files = || uefi.expect("UEFI guests need their firmware files");
    match machine.firmware {
        Firmware::Bios | Firmware::BiosSerialOnly => {
            cmd.args(["-boot", "n"]);
            ("e1000".to_string(), None)
        }
        Firmware::BiosVirtio => {
            cmd.args(["-boot", "n"]);
            ("virtio-net-pci".to_string(), None)
        }
        Firmware::Uefi => {
            let (ovmf, rom) = files();
            cmd.args(["-boot", "n"]).arg("-bios").arg(ovmf);
            (format!("e1000,romfile={}", rom.display()), None)
        }
        firmware => {
            assert!(firmware.pflash());
            let (code, vars) = files();
            let copy = tempfile::NamedTempFile::new().expect("temp file");
            std::fs::copy(vars, copy.path()).expect("copy the variable store");
            match firmware {
                Firmware::UefiSecureBoot => {
                    cmd.args(["-machine", "q35,smm=on"])
                        .args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
                }
                // `-M virt` is set with the binary.
                Firmware::Arm64SecureBoot => {}
                _ => {
                    cmd.args(["-machine", "q35"]);
                }
            }
            cmd.arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    code.display()
                ))
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    copy.path().display()
                ));
            let off: &[&str] = match machine.firmware {
                Firmware::UefiHttp => &["IPv4PXESupport", "IPv6PXESupport"],
                Firmware::UefiPxe6 => &["IPv4PXESupport"],
                Firmware::UefiHttp6 => &["IPv4PXESupport", "IPv6PXESupport"],
                _ => &[],
            };
            for v in off {
                cmd.arg("-fw_cfg")
                    .arg(format!("name=opt/org.tianocore/{v},string=no"));
            }
            // `romfile=` empty: no iPXE ROM, the firmware's own network stack.
            ("virtio-net-pci,romfile=".to_string(), Some(copy))
        }
    }
}
