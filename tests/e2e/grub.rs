//! `boot = "grub"` end to end: UEFI firmware's own PXE client (no iPXE ROM)
//! is handed the shim, which loads the distribution-signed network GRUB
//! beside it, which loads pxed's fixed `grub.cfg`, then the machine's own,
//! then the signed Debian kernel and the initrd, all over pxed's TFTP. With
//! Secure Boot on (OVMF and AAVMF with Microsoft's keys) and off.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::common::lab::{self, Firmware, Guest, Machine};
use super::common::screen::Screen;
use super::{
    booted, edit_kernel_line, fail, has, secs, setup, setup_full, Setup, UEFI_BOOT_TIMEOUT,
};

const SB_MAC: &str = "52:54:00:e2:e0:40";
const UNSIGNED_MAC: &str = "52:54:00:e2:e0:41";
const PLAIN_MAC: &str = "52:54:00:e2:e0:42";
const ARM_MAC: &str = "52:54:00:e2:e0:43";

/// OVMF's code and variable store: with Microsoft's keys (Secure Boot) or
/// without; `None` (skipped) if missing.
fn ovmf(what: &str, secure: bool) -> Option<(PathBuf, PathBuf)> {
    let (code, vars) = match secure {
        true => (lab::OVMF_CODE_4M_MS, lab::OVMF_VARS_4M_MS),
        false => (lab::OVMF_CODE_4M, lab::OVMF_VARS_4M),
    };
    Some((lab::find_file(code, what)?, lab::find_file(vars, what)?))
}

/// The Debian-signed shim and network GRUB where pxed's default
/// `[server.files]` finds them; `None` (skipped) if not installed.
fn signed_chain(what: &str) -> Option<()> {
    lab::find_file(&["/usr/lib/shim/shimx64.efi.signed"], what)?;
    lab::find_file(
        &["/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"],
        what,
    )?;
    Some(())
}

fn boot(s: &Setup, tap: usize, firmware: Firmware, mac: &str, name: &str) -> Option<Guest> {
    let files = ovmf(name, firmware == Firmware::UefiSecureBoot)?;
    let machine = Machine {
        firmware,
        ..Machine::bios(name, mac, Some("UEFI Box"))
    };
    Some(Guest::boot(
        &s.lab,
        tap,
        &machine,
        s.accel,
        Some((&files.0, &files.1)),
    ))
}

/// The steps `pxed events` recorded for `mac`, one detail per line.
fn events(s: &Setup, mac: &str) -> String {
    let out = std::process::Command::new(super::common::pxed_bin())
        .args(["events", "--json", "--mac", mac, "--config"])
        .arg(s.config.config())
        .output()
        .expect("pxed events");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that the boot events of `mac` show each step of the chain:
/// `shim` and `grub` handed and fetched, both GRUB configs (the machine's
/// for `cpu`), `kernel` and `initrd`.
fn assert_chain_events(
    s: &Setup,
    mac: &str,
    (shim, grub): (&str, &str),
    cpu: &str,
    kernel: &str,
    initrd: &str,
) {
    // The writer commits every ~100 ms.
    std::thread::sleep(Duration::from_millis(500));
    let events = events(s, mac);
    for step in [
        format!("boot {shim}"),
        format!("\"shim: {shim}"),
        format!("\"grub: {grub}"),
        "\"grub.cfg: /grub/grub.cfg".to_string(),
        format!("\"machine grub.cfg: /grub/pxed/{mac}/{cpu}.cfg"),
        format!("\"kernel: {kernel}"),
        format!("\"initrd: {initrd}"),
    ] {
        assert!(
            events.contains(&step),
            "no {step:?} in the events of {mac}:\n{events}"
        );
    }
}

const X64: (&str, &str) = ("shimx64.efi", "grubx64.efi");

/// Asserts the kernel's lockdown as the payload printed it: Debian's
/// kernel locks down to `[integrity]` when the firmware booted it with
/// Secure Boot on, and stays `[none]` otherwise.
fn assert_lockdown(guest: &Guest, secure: bool) {
    let text = guest.console.text();
    let line = text
        .lines()
        .find_map(|l| l.split_once("PXED-E2E-LOCKDOWN ").map(|(_, m)| m.trim()))
        .unwrap_or_else(|| {
            panic!(
                "no lockdown line on the console:\n{}",
                lab::printable_tail(&text, 2000)
            )
        });
    let want = if secure { "[integrity]" } else { "[none]" };
    assert!(
        line.contains(want),
        "{}: lockdown {line:?}, want {want}",
        guest.machine.name
    );
}

/// GRUB's menu is on the screen: both entries.
fn menu_ready(rule: &str) -> impl Fn(&Screen) -> bool + '_ {
    move |sc: &Screen| sc.count(&format!("Boot {rule}")) > 0 && sc.count("Boot from local disk") > 0
}

/// Asserts GRUB's menu as the operator sees it: the rule's entry and the
/// local disk, each exactly once, in that order, nothing doubled.
fn assert_grub_menu(who: &str, screen: &Screen, rule: &str) {
    let capture = screen.capture();
    let doubled = screen.doubled_rows();
    assert!(
        doubled.is_empty(),
        "{who}: doubled characters in {doubled:?}:\n{capture}"
    );
    let mut row = 0;
    for text in ["GNU GRUB", &format!("Boot {rule}"), "Boot from local disk"] {
        let rows = screen.rows_with(text);
        assert!(
            rows.len() == 1 && screen.count(text) == 1 && rows[0] >= row,
            "{who}: {text:?} is not on the screen once, below the previous line:\n{capture}"
        );
        row = rows[0];
    }
}

/// Secure Boot on (OVMF with Microsoft's keys): PXE → shim → GRUB →
/// grub.cfg → the machine's grub.cfg → its menu on the serial console. The
/// 80x25 screen shows the rule's entry and the local disk once each; the
/// operator presses `e`, goes to the end of the kernel line (Ctrl-E), types
/// an argument and boots (Ctrl-X): the signed kernel runs and its
/// `/proc/cmdline` has the argument. Beside it, a machine whose rule's
/// kernel had its signature removed (`sbattach --remove`) is refused: Secure
/// Boot is really on.
#[test]
fn grub_secure_boot_menu_is_editable_and_unsigned_kernels_are_refused() {
    let started = Instant::now();
    let what = "e2e-grub-sb";
    let Some(s) = setup(what, 2) else {
        return;
    };
    if signed_chain(what).is_none() || !super::common::have_tool("sbattach", what) {
        return;
    }
    let unsigned = s.config.path().join("assets/vmlinuz-unsigned");
    std::fs::copy(s.payload.kernel(), &unsigned).expect("copy the kernel");
    let out = std::process::Command::new("sbattach")
        .arg("--remove")
        .arg(&unsigned)
        .output()
        .expect("sbattach");
    assert!(out.status.success(), "sbattach --remove: {out:?}");

    let Some(mut guest) = boot(&s, 0, Firmware::UefiSecureBoot, SB_MAC, "grub-sb") else {
        return;
    };
    let Some(mut refused) = boot(
        &s,
        1,
        Firmware::UefiSecureBoot,
        UNSIGNED_MAC,
        "grub-unsigned",
    ) else {
        return;
    };
    let screen = guest
        .console
        .wait_for_screen("GRUB's menu", menu_ready("grub-sb"), UEFI_BOOT_TIMEOUT)
        .unwrap_or_else(|e| fail(&s, e));
    println!(
        "grub-sb: menu at {}:\n{}",
        secs(guest.console.started.elapsed()),
        screen.capture()
    );
    assert_grub_menu("grub-sb", &screen, "grub-sb");
    // GRUB's editor starts on its own `setparams` line, then the entry's
    // lines: the rest of the `{` line (empty) and the kernel line. Ctrl-N
    // twice goes down to it, Ctrl-E to its end. GRUB redraws the line at
    // every key: under TCG, keys 20 ms apart were lost ("pxd.ty=y").
    let editor =
        |sc: &Screen| sc.count_wrapped("pxed.rule=grub-sb") > 0 && sc.count("Boot from local") == 0;
    let keys = b"\x0e\x0e\x05 pxed.typed=yes";
    let typed = edit_kernel_line(&s, &mut guest, b"e", editor, keys, 150);
    println!("grub-sb: edited:\n{}", typed.capture());
    // Ctrl-X boots the edited entry.
    guest.console.type_keys(b"\x18");
    let args = booted(&s, &mut guest, UEFI_BOOT_TIMEOUT, "grub-sb");
    has(&args, "pxed.typed=yes");
    has(&args, "console=ttyS0,115200n8");
    assert_lockdown(&guest, true);
    assert!(guest.console.wait_exit(Duration::from_secs(60)));

    let text = refused
        .console
        .wait_for("bad shim signature", UEFI_BOOT_TIMEOUT)
        .unwrap_or_else(|e| fail(&s, e));
    assert!(
        !text.contains(lab::MARKER),
        "the unsigned kernel booted under Secure Boot"
    );
    println!(
        "grub-unsigned: refused at {}",
        secs(refused.console.started.elapsed())
    );
    assert_chain_events(&s, SB_MAC, X64, "x86_64", "/vmlinuz", "/initrd.gz");
    println!("scenario grub-sb: {}", secs(started.elapsed()));
}

/// Secure Boot off (plain OVMF): the same chain, the same rule keys; the
/// menu's timeout of 0 boots the kernel at once.
#[test]
fn grub_chain_boots_without_secure_boot() {
    let started = Instant::now();
    let what = "e2e-grub-plain";
    let Some(s) = setup(what, 1) else {
        return;
    };
    if signed_chain(what).is_none() {
        return;
    }
    let Some(mut guest) = boot(&s, 0, Firmware::UefiPxe, PLAIN_MAC, "grub-plain") else {
        return;
    };
    let args = booted(&s, &mut guest, UEFI_BOOT_TIMEOUT, "grub-plain");
    has(&args, "console=ttyS0,115200n8");
    assert_lockdown(&guest, false);
    assert!(guest.console.wait_exit(Duration::from_secs(60)));
    assert_chain_events(&s, PLAIN_MAC, X64, "x86_64", "/vmlinuz", "/initrd.gz");
    println!("scenario grub-plain: {}", secs(started.elapsed()));
}

/// ARM64 with Secure Boot (AAVMF with Microsoft's keys, `-M virt -cpu
/// cortex-a57`, TCG): arch 11 gets `shimaa64.efi`, which loads
/// `grubaa64.efi` (Debian's signed `grubnetaa64.efi.signed`), which loads
/// the machine's `arm64.cfg` and Debian's signed arm64 kernel. The arm64
/// files are unpacked from Debian's arm64 packages into the test cache and
/// served through `[server.files]`, as an amd64 host serving ARM64 machines
/// would serve them.
#[test]
fn grub_secure_boot_on_arm64() {
    let started = Instant::now();
    let what = "e2e-grub-arm64";
    if !super::common::have_tool("qemu-system-aarch64", what) {
        return;
    }
    let Some(arm) = lab::payload_arm64(what) else {
        return;
    };
    let file = |name: &str| format!("{:?}", arm.dir.join(name).display().to_string());
    let files = format!(
        "files = {{ \"shimaa64.efi\" = {}, \"grubaa64.efi\" = {}, \"arm64/vmlinuz\" = {}, \"arm64/initrd.gz\" = {} }}",
        file("shimaa64.efi"),
        file("grubaa64.efi"),
        file("vmlinuz"),
        file("initrd.gz"),
    );
    let Some(s) = setup_full(what, 1, lab::dhcp_full, &files) else {
        return;
    };
    let (Some(code), Some(vars)) = (
        lab::find_file(lab::AAVMF_CODE_MS, what),
        lab::find_file(lab::AAVMF_VARS_MS, what),
    ) else {
        return;
    };
    let machine = Machine {
        firmware: Firmware::Arm64SecureBoot,
        ..Machine::bios("grub-arm64", ARM_MAC, Some("ARM Box"))
    };
    let mut guest = Guest::boot(&s.lab, 0, &machine, "tcg", Some((&code, &vars)));
    let args = booted(&s, &mut guest, UEFI_BOOT_TIMEOUT, "grub-arm64");
    has(&args, "console=ttyAMA0");
    assert_lockdown(&guest, true);
    assert!(guest.console.wait_exit(Duration::from_secs(60)));
    let chain = ("shimaa64.efi", "grubaa64.efi");
    assert_chain_events(
        &s,
        ARM_MAC,
        chain,
        "arm64",
        "/arm64/vmlinuz",
        "/arm64/initrd.gz",
    );
    println!("scenario grub-arm64: {}", secs(started.elapsed()));
}
