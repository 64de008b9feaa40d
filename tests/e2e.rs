//! End to end: real firmware (SeaBIOS and OVMF, with QEMU's iPXE option ROMs
//! or with OVMF's own PXE and HTTP Boot clients) boots a real Debian kernel
//! through pxed, inside a network namespace the test creates (see
//! `common::lab` and BRIEF "The test lab"). Each scenario asserts on what the
//! guest printed on its serial console (menus: on the 80x25 screen a VT100
//! emulator renders from it, `common::screen`) and on pxed's log.
//!
//! Needs root, `/dev/net/tun`, qemu-system-x86, ipxe-qemu, dnsmasq-base,
//! busybox-static, ovmf, pxelinux, syslinux-common, ndisc6, and for the GRUB
//! scenarios (`e2e/grub.rs`) shim-signed, grub-efi-amd64-signed,
//! sbsigntool, qemu-system-arm, qemu-efi-aarch64 and dpkg's arm64
//! architecture (`.ci/e2e-packages`, `.ci/run`) and
//! Debian package lists (the kernel is downloaded by `tests/lab/payload.sh`).
//! Otherwise each test prints `skipped: …` (a failure under
//! `PXED_REQUIRE_PRIVILEGED=1`).
//!
//! Run: `cargo test --test e2e -- --nocapture` as root (prints each boot's
//! duration). Each guest's console is kept in `target/e2e-logs/`.
//! `PXED_E2E_ACCEL=tcg|kvm` skips the KVM probe (10 s when KVM is present but
//! hangs, as in some sandboxes); `PXED_E2E_MAX_GUESTS` (default 4) caps the
//! guests running at once whatever `--test-threads` is; `PXED_TEST_ECHO=1`
//! echoes pxed's log.
//!
//! DHCP is pxed's own: full mode for every scenario (`lab::dhcp_full`), proxy
//! mode beside dnsmasq in the proxyDHCP one. IPv6 router advertisements come
//! from pxed's own responder (`[ipv6_ra]`); the lab has no other RA source. The packet-level legacy PXE
//! exchange (no user class, arch 0 → undionly.kpxe over TFTP) is in
//! `tests/dhcp.rs`, not here.

mod common;
#[path = "e2e/grub.rs"]
mod grub;
#[path = "e2e/ipv6.rs"]
mod ipv6;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::lab::{self, Dhcp, Firmware, Guest, Lab, Machine, Payload};
use common::screen::Screen;
use common::{ConfigDir, Pxed};

/// Power-on to the payload's marker, BIOS. Under TCG on a busy 2-core machine
/// one boot takes 20–60 s; several guests share the CPU.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// OVMF under TCG is several times slower than SeaBIOS to reach iPXE.
const UEFI_BOOT_TIMEOUT: Duration = Duration::from_secs(420);

const NEC: &str = "Express5800/i120Ra-e1 [N8100-1482Y]";
const NEC_MAC: &str = "52:54:00:e2:e0:01";
const PROLIANT: &str = "ProLiant DL360 Gen10";
const PROLIANT_MAC: &str = "52:54:00:e2:e0:02";
const UNKNOWN_MAC: &str = "52:54:00:e2:e0:03";
const MENU_MAC: &str = "52:54:00:e2:e0:10";
const SERIAL_MENU_MAC: &str = "52:54:00:e2:e0:12";
const UEFI_MAC: &str = "52:54:00:e2:e0:20";
const INSTALLED_MAC: &str = "52:54:00:e2:e0:30";
const UEFI_PXE_MAC: &str = "52:54:00:e2:e0:21";
const UEFI_HTTP_MAC: &str = "52:54:00:e2:e0:22";
const LONG_ID_MAC: &str = "52:54:00:e2:e0:11";

/// Kernel arguments for every guest of the lab. Under TCG on a loaded host
/// the kernel's IO-APIC timer check can fail ("IO-APIC + timer doesn't work",
/// seen here with three guests and two compilers on 2 cores): `no_timer_check`
/// skips it, and `panic=-1` turns any panic into a reboot, which `-no-reboot`
/// turns into a QEMU exit, so a failed boot fails the test at once instead of
/// at its timeout.
const LAB_ARGS: &str = "quiet no_timer_check panic=-1";

/// Every scenario's rules: each rule puts its own `pxed.rule=<name>` on the
/// kernel command line, which the payload prints back. `LAB_ARGS` stands for
/// [`LAB_ARGS`].
const RULES: &str = r#"
[defaults]
kernel = "vmlinuz"
initrd = "initrd.gz"
args = "LAB_ARGS"
console = { port = "ttyS0", baud = 115200 }
menu_timeout = 120

[[rule]]
name = "default"
args = "LAB_ARGS pxed.rule=default"

[[rule]]
name = "nec"
match = { product = "Express5800/*" }
args = "LAB_ARGS pxed.rule=nec"

# Product and MAC: outranks "nec" for this one machine.
[[rule]]
name = "nec-one"
match = { mac = "52-54-00-E2-E0-01", product = "Express5800/*" }
args = "LAB_ARGS pxed.rule=nec-one"

[[rule]]
name = "proliant"
match = { product = "ProLiant*" }
args = "LAB_ARGS pxed.rule=proliant"

[[rule]]
name = "menu"
match = { mac = "52:54:00:e2:e0:10" }
boot = "pxelinux"
args = "LAB_ARGS pxed.rule=menu"

# The same menu for a machine whose firmware does not redirect its screen to
# the serial port: pxelinux must write to the port itself (SERIAL).
[[rule]]
name = "sol-serial"
match = { mac = "52:54:00:e2:e0:12" }
boot = "pxelinux"
args = "LAB_ARGS pxed.rule=sol-serial"
console = { port = "ttyS0", baud = 115200, firmware_redirect = false }

[[rule]]
name = "menu-long-id"
match = { mac = "52:54:00:e2:e0:11" }
boot = "pxelinux"
args = "LAB_ARGS pxed.rule=menu-long-id"

[[rule]]
name = "uefi"
match = { mac = "52:54:00:e2:e0:20", arch = ["efi-x64"] }
args = "LAB_ARGS pxed.rule=uefi"

# OVMF's own PXE client and its HTTP Boot: no loader set anywhere, so they
# get pxed's defaults from Debian's ipxe package.
[[rule]]
name = "uefi-pxe"
match = { mac = "52:54:00:e2:e0:21" }
args = "LAB_ARGS pxed.rule=uefi-pxe"

[[rule]]
name = "uefi-http"
match = { mac = "52:54:00:e2:e0:22" }
args = "LAB_ARGS pxed.rule=uefi-http"

# An installed machine: its rule boots the local disk.
[[rule]]
name = "installed"
match = { mac = "52:54:00:e2:e0:30" }
boot = "local"

# GRUB machines (tests/e2e/grub.rs): UEFI firmware's own PXE gets the shim,
# the signed GRUB and a per-machine grub.cfg. The menu waits for the
# operator; the others boot at once.
[[rule]]
name = "grub-sb"
match = { mac = "52:54:00:e2:e0:40" }
boot = "grub"
args = "LAB_ARGS pxed.rule=grub-sb"

[[rule]]
name = "grub-unsigned"
match = { mac = "52:54:00:e2:e0:41" }
boot = "grub"
kernel = "vmlinuz-unsigned"
menu_timeout = 0
args = "LAB_ARGS pxed.rule=grub-unsigned"

[[rule]]
name = "grub-plain"
match = { mac = "52:54:00:e2:e0:42" }
boot = "grub"
menu_timeout = 0
args = "LAB_ARGS pxed.rule=grub-plain"

# ARM64 (AAVMF, arch 11): the arm64 payload and chain come through
# [server.files] (tests/e2e/grub.rs); the PL011 UART is ttyAMA0.
[[rule]]
name = "grub-arm64"
match = { mac = "52:54:00:e2:e0:43", arch = "efi-arm64" }
boot = "grub"
kernel = "arm64/vmlinuz"
initrd = "arm64/initrd.gz"
menu_timeout = 0
args = "LAB_ARGS console=ttyAMA0 pxed.rule=grub-arm64"

# IPv6-only boot network (tests/e2e/ipv6.rs): OVMF's PXEv6 and HTTPv6 Boot.
[[rule]]
name = "uefi-pxe6"
match = { mac = "52:54:00:e2:e0:60" }
args = "LAB_ARGS pxed.rule=uefi-pxe6"

[[rule]]
name = "uefi-http6"
match = { mac = "52:54:00:e2:e0:61" }
args = "LAB_ARGS pxed.rule=uefi-http6"

# What an operator reinstalls machines with, through an override only: no
# machine has this (locally administered) MAC.
[[rule]]
name = "install"
match = { mac = "02:00:00:00:00:00" }
args = "LAB_ARGS pxed.rule=install"
"#;

/// The responder, on `[dhcp] interfaces` (its default).
const IPV6_RA: &str = "[ipv6_ra]\nenabled = true\n";

/// One scenario's world. Fields drop in order: pxed and the DHCP server stop
/// before the namespace is removed, and the guest slots are returned last.
struct Setup {
    pxed: Pxed,
    _dhcp: Dhcp,
    config: ConfigDir,
    payload: Payload,
    accel: &'static str,
    lab: Lab,
    _slots: lab::GuestSlots,
}

/// Creates the lab with `taps` taps, starts full DHCP and pxed on it. `None`
/// when the test must be skipped (already reported).
fn setup(name: &str, taps: usize) -> Option<Setup> {
    setup_with(name, taps, lab::dhcp_full)
}

/// [`setup`] with another DHCP arrangement.
fn setup_with(name: &str, taps: usize, dhcp: fn(&Lab) -> Dhcp) -> Option<Setup> {
    setup_full(name, taps, dhcp, "")
}

/// [`setup_with`] and more `[server]` lines.
fn setup_full(name: &str, taps: usize, dhcp: fn(&Lab) -> Dhcp, server: &str) -> Option<Setup> {
    setup_lab(name, taps, Lab::new, dhcp, server)
}

/// [`setup_full`] on the lab `new` builds (IPv4, or IPv6-only).
fn setup_lab(
    name: &str,
    taps: usize,
    new: fn(&str, usize) -> Lab,
    dhcp: fn(&Lab) -> Dhcp,
    server: &str,
) -> Option<Setup> {
    if !lab::available(name) {
        return None;
    }
    let payload: Payload = lab::payload(name)?;
    let accel = lab::accel(&payload);
    // Every tap is a guest: wait for CPU room before building anything.
    let slots = lab::reserve_guests(taps);
    let lab = new(name, taps);
    let dhcp = dhcp(&lab);
    let host = lab.server_host();
    let server = format!(
        "http_listen = \"{host}:{}\"\ntftp_listen = \"{host}:69\"\n\
         search_paths = [{:?}, \"/usr/lib/ipxe\", \"/usr/lib/PXELINUX\", \"/usr/lib/syslinux/modules/bios\"]\n{server}",
        lab::HTTP_PORT,
        payload.dir.display().to_string(),
    );
    let rules = RULES.replace("LAB_ARGS", LAB_ARGS);
    // pxed's IPv6 RA responder on the DHCP interface (br0): without an
    // advertisement iPXE waits ~15 s at every "Configuring" (docs/decisions.md).
    let ra = dhcp.ra.as_deref().unwrap_or(IPV6_RA);
    let rest = format!("{}\n{ra}\n{rules}", dhcp.machines_toml);
    let config = ConfigDir::new(&server, &rest);
    // The machine API (tokens written into the config directory first).
    config.write_config(
        &format!("{server}\n{}", common::api::tokens_file(&config)),
        &rest,
    );
    let pxed = Pxed::start(&config.config(), Some(lab.name()));
    Some(Setup {
        pxed,
        _dhcp: dhcp,
        config,
        payload,
        accel,
        lab,
        _slots: slots,
    })
}

fn fail(s: &Setup, e: String) -> ! {
    panic!("{e}\npxed log:\n{}", s.pxed.log())
}

/// The line of pxed's log that shows it rendered `rule` for `mac`.
fn assert_rendered(log: &str, what: &str, mac: &str, rule: &str) {
    let found = log
        .lines()
        .any(|l| l.contains(&format!("mac={mac}")) && l.contains(what) && l.contains(rule));
    assert!(
        found,
        "pxed did not log {what:?} with mac={mac} and {rule}; log:\n{log}"
    );
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Waits for `guest` to boot the payload and returns the kernel's arguments
/// (`/proc/cmdline`, as the payload printed it), having checked that they
/// hold `pxed.rule=<rule>` and no other rule's. Prints how long it took.
fn booted(s: &Setup, guest: &mut Guest, timeout: Duration, rule: &str) -> Vec<String> {
    let cmdline = guest.booted_cmdline(timeout).unwrap_or_else(|e| fail(s, e));
    println!(
        "{}: booted in {} (accel {}): {cmdline}",
        guest.machine.name,
        secs(guest.console.started.elapsed()),
        s.accel
    );
    let args: Vec<String> = cmdline.split_whitespace().map(str::to_string).collect();
    let rules: Vec<&String> = args
        .iter()
        .filter(|a| a.starts_with("pxed.rule="))
        .collect();
    assert_eq!(
        rules,
        [&format!("pxed.rule={rule}")],
        "{}: {cmdline:?}",
        guest.machine.name
    );
    args
}

/// Asserts that `args` holds `arg`.
fn has(args: &[String], arg: &str) {
    assert!(args.iter().any(|a| a == arg), "no {arg} in {args:?}");
}

/// Scenario 1: BIOS iPXE → DHCP (and pxed's IPv6 router advertisement) →
/// boot.ipxe → per-machine script by product and MAC → kernel and initrd over
/// HTTP; three machines at once, each with the argument only its rule sets.
/// A second host on the same bridge gets no default route and no address from
/// the advertisements.
#[test]
fn bios_ipxe_boots_each_machine_by_its_rule() {
    let started = Instant::now();
    let Some(s) = setup("e2e-bios", 3) else {
        return;
    };
    if !common::have_tool("rdisc6", "e2e-bios") {
        return;
    }
    // Another host on the boot network, there while the guests boot.
    let host = s.lab.add_host("h2");
    let machines = [
        (Machine::bios("nec", NEC_MAC, Some(NEC)), "nec-one"),
        (
            Machine::bios("proliant", PROLIANT_MAC, Some(PROLIANT)),
            "proliant",
        ),
        (Machine::bios("unknown", UNKNOWN_MAC, None), "default"),
    ];
    let mut guests: Vec<Guest> = machines
        .iter()
        .enumerate()
        .map(|(tap, (m, _))| Guest::boot(&s.lab, tap, m, s.accel, None))
        .collect();
    for (guest, (machine, rule)) in guests.iter_mut().zip(&machines) {
        let args = booted(&s, guest, BOOT_TIMEOUT, rule);
        // The iPXE script names the initrd on the kernel line (UEFI needs it).
        has(&args, "initrd=initrd.gz");
        has(&args, "console=ttyS0,115200n8");
        // The script's own echo, as the operator sees it on the console.
        let console = lab::strip_ansi(&guest.console.text());
        assert!(
            console.contains(&format!("{} -> rule {rule}", machine.mac)),
            "{}: no `-> rule {rule}` line on the console:\n{}",
            machine.name,
            lab::printable_tail(&console, 2000)
        );
        assert!(guest.console.wait_exit(Duration::from_secs(60)));
    }
    let log = s.pxed.log();
    for (machine, rule) in &machines {
        assert_rendered(
            &log,
            "ipxe script rendered",
            &machine.mac,
            &format!("rule={rule} "),
        );
    }
    assert!(
        log.matches("boot.ipxe peer=").count() >= 3,
        "boot.ipxe not fetched 3 times:\n{log}"
    );
    assert!(
        log.contains("/vmlinuz") && log.contains("/initrd.gz"),
        "{log}"
    );
    // Each guest's iPXE solicited (its MAC is in the solicitation) and got
    // pxed's advertisement, which ended its IPv6 autoconfiguration.
    for (machine, _) in &machines {
        assert!(
            log.lines().any(|l| l.contains("router advertisement sent")
                && l.contains(&format!("mac={}", machine.mac))),
            "no router advertisement to {}:\n{log}",
            machine.mac
        );
    }
    // The other host hears the same advertisement and is left as it was: no
    // default route, no address (tests/ra.rs shows that a real router's
    // advertisement does configure such a host).
    let bridge = s.lab.bridge_link_local();
    let answer = host.solicit();
    assert!(answer.contains(&format!("from {bridge}")), "{answer}");
    assert!(
        answer
            .lines()
            .any(|l| l.starts_with("Router lifetime") && l.contains(" 0 (0x00000000)")),
        "{answer}"
    );
    assert!(!answer.contains("Prefix"), "{answer}");
    assert_eq!(host.default_routes().trim(), "", "a default route appeared");
    assert_eq!(host.global_addrs().trim(), "", "an address appeared");
    println!("scenario bios: {}", secs(started.elapsed()));
}

/// menu.c32's help line (its default `MENU TABMSG`).
const HELP_LINE: &str = "Press [Tab] to edit options";

/// Asserts the menu screen an operator sees: the title row, each label
/// once, in order below it, the help line below them, and no character
/// doubled anywhere.
fn assert_menu_screen(who: &str, screen: &Screen, title: &str, labels: &[&str]) {
    let capture = screen.capture();
    let doubled = screen.doubled_rows();
    assert!(
        doubled.is_empty(),
        "{who}: doubled characters in {doubled:?}:\n{capture}"
    );
    let once = |text: &str| {
        let rows = screen.rows_with(text);
        assert!(
            rows.len() == 1 && screen.count(text) == 1,
            "{who}: {text:?} is on the screen {} times, not once:\n{capture}",
            screen.count(text)
        );
        rows[0]
    };
    let mut row = once(title);
    for label in labels {
        let at = once(label);
        assert!(
            at > row,
            "{who}: {label:?} is not below the title/previous label:\n{capture}"
        );
        row = at;
    }
    assert!(
        once(HELP_LINE) > row,
        "{who}: the help line is not below the menu:\n{capture}"
    );
}

/// Edits a menu entry's kernel line on the serial console: `open` (Tab in
/// pxelinux, `e` in GRUB) until the screen is `ready`, then `keys` typed one
/// at a time `gap_ms` apart (they end with ` pxed.typed=yes`). Returns the
/// screen showing the typed argument once, nothing doubled.
fn edit_kernel_line(
    s: &Setup,
    guest: &mut Guest,
    open: &[u8],
    ready: impl Fn(&Screen) -> bool,
    keys: &[u8],
    gap_ms: u64,
) -> Screen {
    let who = guest.machine.name.clone();
    guest.console.type_keys(open);
    guest
        .console
        .wait_for_screen("the entry editor", ready, Duration::from_secs(60))
        .unwrap_or_else(|e| fail(s, e));
    for key in keys {
        guest.console.type_keys(&[*key]);
        std::thread::sleep(Duration::from_millis(gap_ms));
    }
    let typed = guest
        .console
        .wait_for_screen(
            "the typed argument",
            |sc| sc.count_wrapped("pxed.typed=yes") == 1,
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| fail(s, e));
    assert!(
        typed.doubled_rows().is_empty(),
        "{who}: doubled while editing:\n{}",
        typed.capture()
    );
    typed
}

/// Scenario 2: the rule hands the machine to lpxelinux + menu.c32 on ttyS0,
/// in both console setups an IPMI SOL console comes in:
/// - SeaBIOS redirecting its screen to the serial port (`-nographic`, the
///   usual SOL setup; `firmware_redirect` at its default, true): pxelinux
///   draws on the screen only and the firmware carries it to the port;
/// - SeaBIOS without redirection (`-display none -serial stdio`; the rule
///   says `firmware_redirect = false`): pxelinux writes to the port itself
///   (`SERIAL`).
///
/// In each, the 80x25 screen a VT100 terminal renders from the serial bytes
/// shows the menu once, readable; the operator presses Tab, appends an
/// argument and boots: the kernel gets it.
#[test]
fn pxelinux_menu_is_editable_on_the_serial_console() {
    let started = Instant::now();
    let Some(s) = setup("e2e-menu", 2) else {
        return;
    };
    let machines = [
        (Machine::bios("menu", MENU_MAC, Some(NEC)), "menu"),
        (
            Machine {
                firmware: Firmware::BiosSerialOnly,
                ..Machine::bios("menu-serial", SERIAL_MENU_MAC, Some(NEC))
            },
            "sol-serial",
        ),
    ];
    let mut guests: Vec<Guest> = machines
        .iter()
        .enumerate()
        .map(|(tap, (m, _))| Guest::boot(&s.lab, tap, m, s.accel, None))
        .collect();
    for (guest, (machine, rule)) in guests.iter_mut().zip(&machines) {
        let who = &machine.name;
        // The product in the title came from the `?…` query of the option
        // 209 config name: lpxelinux passed it through to pxed. menu.c32
        // shows 56 characters of a title (80 columns, margins of 10, the
        // frame), so the MAC comes first and the product is cut to 32.
        let product: String = NEC.chars().take(32).collect();
        let title = format!("pxed: {} {product}", machine.mac);
        assert_eq!(title.chars().count(), 56);
        let screen = guest
            .console
            .wait_for_screen(
                "the menu's help line",
                |sc| sc.count(HELP_LINE) > 0,
                BOOT_TIMEOUT,
            )
            .unwrap_or_else(|e| fail(&s, e));
        let menu_at = guest.console.started.elapsed();
        let labels = [format!("Boot {rule}"), "Boot from local disk".to_string()];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        assert_menu_screen(who, &screen, &title, &labels);
        println!(
            "{who}: menu at {} ({:?}):\n{}",
            secs(menu_at),
            machine.firmware,
            screen.capture()
        );

        // Tab opens the entry's command line for editing, on the screen.
        let edit = format!("pxed.rule={rule}");
        let editor = |sc: &Screen| sc.count_wrapped(&edit) > 0;
        let typed = edit_kernel_line(&s, guest, b"\t", editor, b" pxed.typed=yes", 20);
        println!("{who}: edited:\n{}", typed.capture());
        guest.console.type_keys(b"\r");
    }
    for (guest, (machine, rule)) in guests.iter_mut().zip(&machines) {
        let args = booted(&s, guest, BOOT_TIMEOUT, rule);
        has(&args, "pxed.typed=yes");
        // Both modes still send kernel messages to the serial console.
        has(&args, "console=ttyS0,115200n8");
        assert!(guest.console.wait_exit(Duration::from_secs(60)));
        let log = s.pxed.log();
        assert_rendered(
            &log,
            "ipxe script rendered",
            &machine.mac,
            &format!("rule={rule} "),
        );
        assert_rendered(
            &log,
            "pxelinux config rendered",
            &machine.mac,
            &format!("\"{rule}\""),
        );
    }
    let log = s.pxed.log();
    for file in ["lpxelinux.0", "ldlinux.c32", "menu.c32"] {
        assert!(log.contains(file), "{file} not served:\n{log}");
    }
    println!("scenario menu: {}", secs(started.elapsed()));
}

/// Scenario 2b: the pxelinux path with a long SMBIOS identity. The iPXE script
/// puts the identity in option 209 (`pxelinux.cfg/01-<mac>?<query>`); with this
/// machine's product, serial, manufacturer and UUID the value is 308 bytes.
/// Measured here (iPXE 1.0.0+git-20190125, lpxelinux 6.04): 223 and 236 bytes
/// boot, 254 and 308 bytes do not: lpxelinux prints "Failed to load
/// ldlinux.c32" without fetching anything (option 210, the HTTP prefix, is
/// lost), and iPXE retries forever. pxed therefore puts only the MAC, the rule
/// and 32 characters of the product in option 209.
#[test]
fn pxelinux_menu_survives_a_long_smbios_identity() {
    let started = Instant::now();
    let Some(s) = setup("e2e-longid", 1) else {
        return;
    };
    let product = "X/Y [Z] ".repeat(8);
    let machine = Machine {
        smbios_extra: Some(
            "serial=JPN1234567AB,manufacturer=NEC Corporation,\
             uuid=4c4c4544-0051-3910-8047-b4c04f564433"
                .to_string(),
        ),
        ..Machine::bios("longid", LONG_ID_MAC, Some(product.trim_end()))
    };
    let mut guest = Guest::boot(&s.lab, 0, &machine, s.accel, None);
    let (which, text) = guest
        .console
        .wait_for_any(
            &["Press [Tab] to edit", "Failed to load ldlinux.c32"],
            BOOT_TIMEOUT,
        )
        .unwrap_or_else(|e| fail(&s, e));
    assert_eq!(
        which,
        0,
        "lpxelinux could not start from the long option 209:\n{}",
        lab::printable_tail(&text, 2000)
    );
    guest.console.type_keys(b"\r");
    booted(&s, &mut guest, BOOT_TIMEOUT, "menu-long-id");
    println!("scenario long-id: {}", secs(started.elapsed()));
}

/// Scenario 3: UEFI x64 (OVMF + QEMU's iPXE EFI ROM) boots through the same
/// boot.ipxe/HTTP path; the rule matches on the EFI architecture iPXE reports,
/// and the initrd reaches the kernel's EFI stub because the kernel line names it.
#[test]
fn uefi_ipxe_boots_over_http() {
    let started = Instant::now();
    let what = "e2e-uefi";
    let Some(s) = setup(what, 1) else {
        return;
    };
    let Some(ovmf) = lab::find_file(lab::OVMF, what) else {
        return;
    };
    let Some(rom) = lab::find_file(lab::EFI_E1000_ROM, what) else {
        return;
    };
    let machine = Machine {
        firmware: Firmware::Uefi,
        ..Machine::bios("uefi", UEFI_MAC, Some("UEFI Test Box"))
    };
    let firmware: (PathBuf, PathBuf) = (ovmf, rom);
    let mut guest = Guest::boot(
        &s.lab,
        0,
        &machine,
        s.accel,
        Some((&firmware.0, &firmware.1)),
    );
    let args = booted(&s, &mut guest, UEFI_BOOT_TIMEOUT, "uefi");
    has(&args, "initrd=initrd.gz");
    assert!(guest.console.wait_exit(Duration::from_secs(60)));
    let log = s.pxed.log();
    assert_rendered(&log, "ipxe script rendered", UEFI_MAC, "rule=uefi ");
    println!("scenario uefi: {}", secs(started.elapsed()));
}

/// OVMF's firmware files for its own network stack, and Debian's
/// `snponly.efi` (pxed's default EFI loader); `None` (skipped) if missing.
fn ovmf_4m(what: &str) -> Option<(PathBuf, PathBuf)> {
    lab::find_file(&["/usr/lib/ipxe/snponly.efi"], what)?;
    Some((
        lab::find_file(lab::OVMF_CODE_4M, what)?,
        lab::find_file(lab::OVMF_VARS_4M, what)?,
    ))
}

/// Sets up the lab and boots one OVMF guest without iPXE ROM (`firmware`,
/// MAC `mac`) to the payload; checks that it got its rule's kernel line
/// through pxed's script. Returns pxed's log; `None` when skipped.
fn boot_ovmf(what: &str, firmware: Firmware, mac: &str, rule: &str) -> Option<String> {
    let started = Instant::now();
    boot_ovmf_on(setup(what, 1)?, started, what, firmware, mac, rule)
}

/// [`boot_ovmf`] in a lab already set up (`s`, started at `started`).
fn boot_ovmf_on(
    s: Setup,
    started: Instant,
    what: &str,
    firmware: Firmware,
    mac: &str,
    rule: &str,
) -> Option<String> {
    let files = ovmf_4m(what)?;
    let machine = Machine {
        firmware,
        ..Machine::bios(what, mac, Some("UEFI Box"))
    };
    let mut guest = Guest::boot(&s.lab, 0, &machine, s.accel, Some((&files.0, &files.1)));
    let args = booted(&s, &mut guest, UEFI_BOOT_TIMEOUT, rule);
    // Under UEFI the kernel's EFI stub finds the initrd by this argument.
    has(&args, "initrd=initrd.gz");
    assert!(guest.console.wait_exit(Duration::from_secs(60)));
    let log = s.pxed.log();
    assert_rendered(&log, "ipxe script rendered", mac, &format!("rule={rule} "));
    println!("scenario {what}: {}", secs(started.elapsed()));
    Some(log)
}

/// Scenario 3b: a UEFI machine whose own firmware does PXE, as on real UEFI
/// servers: OVMF with no iPXE ROM (`virtio-net-pci,romfile=`). With the
/// shipped loader defaults and Debian's `ipxe` package, DHCP hands it
/// `snponly.efi`, OVMF fetches it over TFTP (tsize probe, abort, then
/// blksize 1468 and windowsize 4), iPXE starts on the same NIC and boots the
/// machine's rule.
#[test]
fn uefi_firmware_pxe_boots_with_the_shipped_loaders() {
    let Some(log) = boot_ovmf("e2e-ovmf-pxe", Firmware::UefiPxe, UEFI_PXE_MAC, "uefi-pxe") else {
        return;
    };
    assert!(
        log.lines().any(|l| l.contains("handout=")
            && l.contains(&format!("mac={UEFI_PXE_MAC}"))
            && l.contains("snponly.efi")
            && l.contains("PXE ROM")),
        "the firmware was not handed snponly.efi:\n{log}"
    );
    // The whole file, after the firmware's tsize probe (aborted, ERROR 8).
    let size = std::fs::metadata("/usr/lib/ipxe/snponly.efi").map_or(0, |m| m.len());
    assert!(
        log.lines().any(|l| l.contains("tftp transfer")
            && l.contains("snponly.efi")
            && l.contains(&format!("bytes={size} "))
            && l.contains("outcome=\"ok\"")),
        "snponly.efi was not sent over TFTP:\n{log}"
    );
}

/// Scenario 3c: UEFI HTTP Boot, OVMF's own HTTP client (PXE turned off with
/// fw_cfg, so it asks DHCP as `HTTPClient:Arch:00016`). pxed hands it the
/// URL of its default EFI loader; the firmware fetches and starts it, and the
/// machine boots its rule. Shown by a boot rather than by fetching the URL
/// with curl: only a boot shows that the firmware accepts the reply (option
/// 60 `HTTPClient` echoed) and that the binary behind the URL runs.
#[test]
fn uefi_http_boot_gets_a_working_loader() {
    let Some(log) = boot_ovmf(
        "e2e-ovmf-http",
        Firmware::UefiHttp,
        UEFI_HTTP_MAC,
        "uefi-http",
    ) else {
        return;
    };
    let url = format!("{}/assets/snponly.efi", lab::http_base());
    assert!(
        log.lines().any(|l| l.contains("handout=")
            && l.contains(&format!("mac={UEFI_HTTP_MAC}"))
            && l.contains(&url)
            && l.contains("UEFI HTTP Boot")),
        "the firmware was not handed {url}:\n{log}"
    );
    assert!(
        log.contains("file=/usr/lib/ipxe/snponly.efi"),
        "snponly.efi was not served over HTTP:\n{log}"
    );
}

/// Scenario: reinstall once, no file edited. The machine's rule boots its
/// local disk; an operator gives it a one-shot override to the install rule
/// through the API; it boots the installer (the payload), whose `/init`
/// calls the callback URL on its kernel line; the override is gone, and
/// the next boot gets the local-boot script again.
#[test]
fn reinstall_once_through_the_api_then_local_disk_again() {
    let started = Instant::now();
    let Some(s) = setup("e2e-reinstall", 1) else {
        return;
    };
    let admin = s.pxed.addr("admin");
    // The admin listener is on loopback inside the lab's namespace.
    let api = |method: &'static str, path: String, body: Option<&'static str>| {
        s.lab.ns.run(move || {
            common::api::Api::new(admin, Some(common::api::TOKEN)).call(method, &path, body)
        })
    };
    let path = format!("/api/v1/machines/{INSTALLED_MAC}");
    let set = api(
        "PUT",
        format!("{path}/override"),
        Some(r#"{"rule":"install","once":true}"#),
    );
    assert_eq!(set.status, 200, "{set:?}");
    let machine = Machine {
        firmware: Firmware::BiosVirtio,
        ..Machine::bios("reinstall", INSTALLED_MAC, Some("Installed Box"))
    };

    let mut guest = Guest::boot(&s.lab, 0, &machine, s.accel, None);
    let cmdline = guest
        .booted_cmdline(BOOT_TIMEOUT)
        .unwrap_or_else(|e| fail(&s, e));
    let args: Vec<&str> = cmdline.split_whitespace().collect();
    assert!(args.contains(&"pxed.rule=install"), "{cmdline:?}");
    assert!(
        args.iter()
            .any(|a| a
                .starts_with("pxed.callback=http://10.97.0.1:8080/callback/52-54-00-e2-e0-30/")),
        "{cmdline:?}"
    );
    let console = guest.console.text();
    assert!(
        console.contains(
            "PXED-E2E-CALLBACK pxed: 52:54:00:e2:e0:30: override rule \"install\" once done"
        ),
        "the installer's callback was not answered:\n{}\npxed log:\n{}",
        lab::printable_tail(&console, 3000),
        s.pxed.log()
    );
    assert!(guest.console.wait_exit(Duration::from_secs(60)));
    println!(
        "reinstall: installer booted and called back in {}",
        secs(guest.console.started.elapsed())
    );
    let after = api("GET", path.clone(), None);
    assert!(after.json["override"].is_null(), "consumed: {after:?}");
    drop(guest);

    // The next boot: the rules again, so the local disk.
    let mut again = Guest::boot(&s.lab, 0, &machine, s.accel, None);
    again
        .console
        .wait_for("booting from the local disk", BOOT_TIMEOUT)
        .unwrap_or_else(|e| fail(&s, e));
    println!(
        "reinstall: local-boot script {} after power-on",
        secs(again.console.started.elapsed())
    );
    let log = s.pxed.log();
    assert_rendered(
        &log,
        "ipxe script rendered",
        INSTALLED_MAC,
        "rule=installed",
    );
    assert!(log.contains("installer called back"), "{log}");
    println!("scenario reinstall: {}", secs(started.elapsed()));
}

/// Scenario 4: proxyDHCP. dnsmasq gives the address and nothing else; pxed in
/// proxy mode gives the boot (iPXE merges the ProxyDHCP offer, option 60
/// `PXEClient`, into its settings); the guest boots by its rule as in scenario 1.
#[test]
fn proxy_dhcp_boots_beside_another_dhcp_server() {
    let started = Instant::now();
    let Some(s) = setup_with("e2e-proxy", 1, lab::dhcp_proxy) else {
        return;
    };
    let machine = Machine::bios("proxy", NEC_MAC, Some(NEC));
    let mut guest = Guest::boot(&s.lab, 0, &machine, s.accel, None);
    booted(&s, &mut guest, BOOT_TIMEOUT, "nec-one");
    // The address came from dnsmasq, the boot file from pxed.
    let console = lab::strip_ansi(&guest.console.text());
    assert!(console.contains("net0: 10.97.1."), "{console}");
    assert!(
        console.contains(&format!("{}/boot.ipxe", lab::http_base())),
        "{console}"
    );
    let log = s.pxed.log();
    assert_rendered(&log, "ipxe script rendered", NEC_MAC, "rule=nec-one ");
    println!("scenario proxy: {}", secs(started.elapsed()));
}

/// The screen harness itself (no privileges needed): what it counts as
/// doubled, and how it renders escapes and menu.c32's line drawing.
#[test]
fn the_screen_harness_renders_like_a_sol_client() {
    use common::screen::{has_doubled_run, Terminal};
    assert!(has_doubled_run("  BBoooott  mmeennuu"));
    assert!(has_doubled_run("PPrreessss  [[TTaabb]]"));
    for fine in [
        "Boot from local disk",
        "Press [Tab] to edit options",
        "pxed: 52:54:00:e2:e0:10 Express5800/i120Ra-e1 [N8100-1",
        "────────────────────────────────",
        "Automatic boot in 118 seconds...",
        "address 10.97.1.11 aabb",
    ] {
        assert!(!has_doubled_run(fine), "{fine}");
    }
    let mut t = Terminal::new();
    // menu.c32 over a serial line: G1 = DEC graphics, SO draws the frame,
    // an SGR (final byte `m`, a drawing character) inside it stays an SGR.
    t.process(b"\x1b)0\x1b(B\x1b[2J\x1b[1;11H\x0elqqk\x1b[2;11H\x1b[0;30;44mx\x0f title\x0ex\x0f");
    t.process(b"\x1b[25;1Hbottom q");
    let s = t.screen();
    assert_eq!(s.rows.len(), 25);
    assert_eq!(s.rows[0], format!("{}┌──┐", " ".repeat(10)));
    assert_eq!(s.rows[1], format!("{}│ title│", " ".repeat(10)));
    assert_eq!(s.rows_with("bottom q"), vec![24]);
    assert_eq!(s.count("─"), 2);
}
