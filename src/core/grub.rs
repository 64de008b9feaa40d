//! `boot = "grub"`, with no I/O: the UEFI chain the distributions sign
//! (shim → network GRUB → `grub.cfg` → kernel), which boots with Secure Boot
//! on and gives an operator a menu on the serial console.
//!
//! The signed network GRUB only ever asks for `/grub/grub.cfg` (its prefix
//! is `(tftp,<siaddr>)/grub`), the same name for every machine. pxed serves
//! there a fixed [`BOOTSTRAP`] that hands over to a per-machine file named
//! by GRUB's own `$net_default_mac` and `$grub_cpu`:
//! `/grub/pxed/<mac>/<cpu>.cfg` ([`Request`]), rendered from the machine's
//! rule (`Policy::grub_for`, with the other choices of rule in
//! `lifecycle.rs`). So pxed needs no lease to tell machines
//! apart: it works as well in proxy mode or behind another DHCP server
//! (docs/decisions.md, "GRUB: one fixed grub.cfg, then one per machine").
//! GRUB tells pxed the MAC and the CPU only (the signed GRUB has no
//! `smbios` command): a GRUB machine's rule is chosen as DHCP chooses it.

use serde_json::{json, Value};

use super::identity::{Arch, Identity, Mac};
use super::{Console, Policy};

/// The default `grub_template`.
pub const TEMPLATE: &str = "menu.grub";

/// What every machine's GRUB fetches first (`/grub/grub.cfg`): hand over to
/// the machine's own config. `$net_default_mac` is the MAC GRUB booted
/// from, `52:54:00:12:34:56`; `$grub_cpu` is `x86_64` or `arm64`.
pub const BOOTSTRAP: &str = "\
# pxed: the same grub.cfg for every machine. It loads this machine's own
# config, which pxed renders from the machine's rule in machines.toml.
if [ -z \"$net_default_mac\" ]; then
  echo 'pxed: GRUB did not say which network card it booted from ($net_default_mac is empty)'
else
  configfile \"$prefix/pxed/$net_default_mac/$grub_cpu.cfg\"
fi
echo \"pxed: no boot menu for $net_default_mac from $prefix; restarting in 10 seconds\"
sleep 10
reboot
";

/// The shim a UEFI PXE client of a GRUB rule is handed, and the name the
/// shim asks for beside it (its `DEFAULT_LOADER`), per firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    pub shim: &'static str,
    pub grub: &'static str,
}

/// The chain for a firmware type; `None` where Debian signs none (BIOS,
/// 32-bit UEFI).
pub fn chain(arch: Arch) -> Option<Chain> {
    match arch {
        Arch::EfiX64 | Arch::HttpX64 => Some(Chain {
            shim: "shimx64.efi",
            grub: "grubx64.efi",
        }),
        Arch::EfiArm64 | Arch::HttpArm64 => Some(Chain {
            shim: "shimaa64.efi",
            grub: "grubaa64.efi",
        }),
        _ => None,
    }
}

/// The firmware type of GRUB's `$grub_cpu` (GRUB here is always UEFI).
pub fn arch_of_cpu(cpu: &str) -> Option<Arch> {
    match cpu {
        "x86_64" => Some(Arch::EfiX64),
        "i386" => Some(Arch::EfiIa32),
        "arm64" => Some(Arch::EfiArm64),
        "arm" => Some(Arch::EfiArm32),
        _ => None,
    }
}

/// A TFTP name GRUB asks pxed for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `grub/grub.cfg`: [`BOOTSTRAP`].
    Bootstrap,
    /// `grub/pxed/<mac>/<cpu>.cfg`.
    Machine(Identity),
    /// Under `grub/pxed/` but not a MAC and a known CPU.
    Invalid,
}

impl Request {
    /// `None` for names that are not GRUB configs (files, GRUB's module
    /// lists, …), served from the asset roots as usual.
    pub fn parse(name: &str) -> Option<Request> {
        if name == "grub/grub.cfg" {
            return Some(Request::Bootstrap);
        }
        let rest = name.strip_prefix("grub/pxed/")?;
        let machine = || {
            let (mac, file) = rest.split_once('/')?;
            let cpu = file.strip_suffix(".cfg")?;
            let mac: Mac = mac.parse().ok()?;
            Some(Identity {
                arch: Some(arch_of_cpu(cpu)?),
                ..Identity::with_mac(mac)
            })
        };
        Some(machine().map_or(Request::Invalid, Request::Machine))
    }
}

/// Which step of a network boot the TFTP file `name` is (its boot event
/// says so, so that `pxed events` shows where a Secure Boot machine
/// stopped): `shim`, `grub` (GRUB and what it probes under `grub/`),
/// `grub.cfg` (the fixed one), `machine grub.cfg`, or the `kernel` or
/// `initrd` of a rule.
pub fn step(policy: &Policy, name: &str) -> Option<&'static str> {
    let name = name.trim_start_matches('/');
    let chains = [Arch::EfiX64, Arch::EfiArm64].map(chain);
    if chains.iter().flatten().any(|c| c.shim == name) {
        return Some("shim");
    }
    if chains.iter().flatten().any(|c| c.grub == name) {
        return Some("grub");
    }
    match Request::parse(name) {
        Some(Request::Bootstrap) => return Some("grub.cfg"),
        Some(_) => return Some("machine grub.cfg"),
        None if name.starts_with("grub/") => return Some("grub"),
        None => {}
    }
    let is = |path: &Option<String>| {
        path.as_deref()
            .is_some_and(|p| p.trim_start_matches('/') == name)
    };
    let rules = || policy.rules.iter();
    if rules().any(|r| is(&r.boot.kernel)) {
        Some("kernel")
    } else if rules().any(|r| is(&r.boot.initrd)) {
        Some("initrd")
    } else {
        None
    }
}

/// `word` as one GRUB script word: as it is when it holds only characters
/// GRUB reads literally, else single-quoted (`'` written as `'\''`, as in
/// sh). A rule's name or argument can then never end a command or expand a
/// variable in `grub.cfg`.
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,:=/+@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// A command line as GRUB words, each quoted on its own ([`quote`]): GRUB
/// joins a command's words with spaces for the kernel, and puts double
/// quotes around any one word holding a space.
pub fn words(line: &str) -> String {
    line.split_whitespace()
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The template's `grub` object: the GRUB commands for the rule's serial
/// console on this firmware (docs/consoles.md, "GRUB").
/// - x86: GRUB's own 16550 driver, `serial --unit=N`, terminal `serial`;
///   ARM64: the firmware's UART through EFI, terminal `serial_efi0`.
/// - The menu goes to the serial terminal alone: OVMF and AAVMF copy their
///   text console to the UART, so adding `console` wrote every line twice
///   (BRIEF "GRUB serial console").
/// - Keys are read from both (`input`): the firmware's own console driver
///   polls the same UART and takes some of the bytes. Reading the serial
///   terminal alone lost 4 of 15 typed characters under OVMF.
pub(super) fn context(arch: Option<Arch>, console: Option<Console>) -> Value {
    let Some(c) = console else {
        return json!({ "serial": null, "terminal": "console", "input": "console" });
    };
    let arm = matches!(arch, Some(Arch::EfiArm64 | Arch::EfiArm32));
    let (serial, terminal) = if arm {
        (format!("serial --speed={} efi0", c.baud), "serial_efi0")
    } else {
        (
            format!("serial --unit={} --speed={}", c.index, c.baud),
            "serial",
        )
    };
    json!({ "serial": serial, "terminal": terminal, "input": format!("{terminal} console") })
}

/// Last resort (no rule, or the template failed): say why on the console
/// and start over from the firmware, since GRUB cannot load a second kernel.
pub fn retry(message: &str, seconds: u32) -> String {
    let message = message.replace(|c: char| c.is_control(), " ");
    format!(
        "echo {}\necho 'pxed: restarting in {seconds} seconds'\nsleep {seconds}\nreboot\n",
        quote(&format!("pxed: {message}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        assert_eq!(Request::parse("grub/grub.cfg"), Some(Request::Bootstrap));
        let mac: Mac = "52:54:00:12:34:56".parse().unwrap();
        assert_eq!(
            Request::parse("grub/pxed/52:54:00:12:34:56/arm64.cfg"),
            Some(Request::Machine(Identity {
                arch: Some(Arch::EfiArm64),
                ..Identity::with_mac(mac)
            }))
        );
        for bad in [
            "grub/pxed/52:54:00:12:34:56/sparc.cfg",
            "grub/pxed/nomac/x86_64.cfg",
            "grub/pxed/52:54:00:12:34:56/x86_64",
            "grub/pxed//x86_64.cfg",
            "grub/pxed/",
        ] {
            assert_eq!(Request::parse(bad), Some(Request::Invalid), "{bad}");
        }
        for other in ["grub/x86_64-efi/command.lst", "grubx64.efi", "grub.cfg"] {
            assert_eq!(Request::parse(other), None, "{other}");
        }
    }

    #[test]
    fn quoting_keeps_every_word_a_word() {
        assert_eq!(quote("console=ttyS0,115200n8"), "console=ttyS0,115200n8");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("$x;reboot"), "'$x;reboot'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(
            words(" ip=dhcp  pxed.x=$y\tquiet "),
            "ip=dhcp 'pxed.x=$y' quiet"
        );
    }

    #[test]
    fn consoles_per_firmware() {
        let c = Console {
            index: 1,
            baud: 57600,
            firmware_redirect: true,
        };
        let x86 = context(Some(Arch::EfiX64), Some(c));
        assert_eq!(x86["serial"], "serial --unit=1 --speed=57600");
        assert_eq!(x86["terminal"], "serial");
        assert_eq!(x86["input"], "serial console");
        let arm = context(Some(Arch::EfiArm64), Some(c));
        assert_eq!(arm["serial"], "serial --speed=57600 efi0");
        assert_eq!(arm["terminal"], "serial_efi0");
        assert_eq!(context(Some(Arch::EfiX64), None)["terminal"], "console");
    }
}
