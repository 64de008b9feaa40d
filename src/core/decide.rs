//! What a booting client is handed in its DHCP reply, decided once, with no I/O:
//! a TFTP file name for a PXE ROM, the HTTP boot script for iPXE, or an `http://`
//! URL of an iPXE EFI binary for UEFI HTTP Boot. The DHCP adapter (full and
//! proxy mode) calls [`decide`] and only encodes the result; nothing else in pxed
//! maps firmware to a loader.
//!
//! The order of the questions is the order a machine boots in:
//! 1. Is this iPXE (user class `iPXE`)? Then it already runs our loader: hand
//!    it `<base>/boot.ipxe`, whatever its firmware.
//! 2. Is this UEFI HTTP Boot (option 93 = 15/16/18/19 or vendor class
//!    `HTTPClient…`)? Then hand it an `http://` URL of the iPXE EFI binary for
//!    its CPU and echo `HTTPClient` in option 60.
//! 3. Otherwise it is a PXE ROM: option 93 picks the TFTP file (BIOS →
//!    `undionly.kpxe`, EFI IA32/x64 → `snponly.efi` (or `ipxe.efi`), ARM → ARM
//!    builds). A rule's `loader` overrides the file for the machines it matches.

use super::identity::{Arch, Identity, Mac};
use super::lifecycle::BootOverride;
use super::render::Base;
use super::{Boot, BootKind, Policy, Reservation, Rule};

/// The file names handed to PXE ROMs, per firmware (`[dhcp]` in machines.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaders {
    pub bios: String,
    /// EFI IA32 and x64 (option 93 = 6, 7, 9): `snponly.efi` by default, or
    /// `ipxe.efi` (docs/decisions.md, "The EFI loader").
    pub efi: String,
    pub arm32: String,
    pub arm64: String,
}

impl Default for Loaders {
    fn default() -> Loaders {
        Loaders {
            bios: "undionly.kpxe".into(),
            efi: "snponly.efi".into(),
            arm32: "ipxe-arm32.efi".into(),
            arm64: "ipxe-arm64.efi".into(),
        }
    }
}

impl Loaders {
    /// The loader for a firmware type, `None` when pxed has no build for it.
    pub fn for_arch(&self, arch: Arch) -> Option<&str> {
        match arch {
            Arch::Bios => Some(&self.bios),
            Arch::EfiIa32 | Arch::EfiX64 | Arch::HttpIa32 | Arch::HttpX64 => Some(&self.efi),
            Arch::EfiArm32 | Arch::HttpArm32 => Some(&self.arm32),
            Arch::EfiArm64 | Arch::HttpArm64 => Some(&self.arm64),
            Arch::Other(_) => None,
        }
    }
}

/// What the client's DHCP packet says about its firmware, already parsed out of
/// the options by the DHCP adapter (`dhcp/options.rs`) and [`VendorClass::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub mac: Mac,
    /// Option 93 (first value), mapped; `None` when absent.
    pub arch: Option<Arch>,
    /// Option 77 names iPXE.
    pub ipxe: bool,
    pub vendor: VendorClass,
}

/// Option 60 as far as booting cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VendorClass {
    /// `PXEClient…`: a PXE ROM (or iPXE, which says so too).
    Pxe,
    /// `HTTPClient…`: UEFI HTTP Boot.
    Http,
    /// Absent or anything else (an OS's DHCP client).
    Other,
}

impl VendorClass {
    pub fn parse(option60: Option<&[u8]>) -> VendorClass {
        match option60 {
            Some(v) if v.starts_with(b"PXEClient") => VendorClass::Pxe,
            Some(v) if v.starts_with(b"HTTPClient") => VendorClass::Http,
            _ => VendorClass::Other,
        }
    }
}

/// What goes into the reply's boot fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handout {
    /// A file on pxed's TFTP server: `file` field (or option 67) + siaddr.
    Tftp(String),
    /// A URL in option 67 (the `file` field stays empty) + siaddr; with
    /// `http_client` the reply echoes `HTTPClient` in option 60.
    Http { url: String, http_client: bool },
}

impl Handout {
    /// The boot file name as it goes on the wire.
    pub fn filename(&self) -> &str {
        match self {
            Handout::Tftp(f) => f,
            Handout::Http { url, .. } => url,
        }
    }
}

/// The boot decision for one DHCP client: made once per packet by
/// [`decide`], then carried unchanged into the reply, the boot event, the log
/// and the metrics. Nothing downstream matches rules again or reads the
/// decision back out of the reply.
#[derive(Debug, Clone)]
pub struct Decision<'p> {
    /// The rule the client's MAC and arch match (DHCP knows no more of it:
    /// the SMBIOS identity comes later, with the iPXE script request).
    pub rule: Option<&'p Rule<Boot>>,
    /// `None`: not a network-boot client (or a firmware pxed has nothing for);
    /// full mode still leases it an address, proxy mode stays silent.
    pub handout: Option<Handout>,
    /// The loader file the handout names: the rule's `loader`, else the
    /// firmware's from `[dhcp]`; `None` for the iPXE script or no handout.
    pub loader: Option<&'p str>,
    /// The address and host name kept for this MAC (full mode).
    pub reservation: Option<&'p Reservation>,
    /// Why, in words, for the debug log and the boot event.
    pub reason: &'static str,
}

impl<'p> Decision<'p> {
    pub fn rule_name(&self) -> Option<&'p str> {
        self.rule.map(|r| r.name.as_str())
    }
}

/// Decides what `client` is handed. `base` is where the client reaches
/// pxed's HTTP server; `ovr` is the machine's boot override, if any (see
/// [`super::lifecycle`]): it beats the rule the MAC and arch match.
pub fn decide<'p>(
    policy: &'p Policy,
    loaders: &'p Loaders,
    client: &Client,
    base: &Base,
    ovr: Option<&BootOverride>,
) -> Decision<'p> {
    let id = Identity {
        mac: Some(client.mac),
        arch: client.arch,
        ..Identity::default()
    };
    let rule = policy.choose(&id, ovr).rule;
    let rule_loader = rule.and_then(|r| r.boot.loader.as_deref());
    let grub = rule.is_some_and(|r| r.boot.kind == BootKind::Grub);
    let (handout, loader, reason) = handout(loaders, rule_loader, grub, client, base);
    Decision {
        rule,
        handout,
        loader,
        reservation: policy.reservation(client.mac),
        reason,
    }
}

type Handed<'p> = (Option<Handout>, Option<&'p str>, &'static str);

fn handout<'p>(
    loaders: &'p Loaders,
    rule_loader: Option<&'p str>,
    grub: bool,
    client: &Client,
    base: &Base,
) -> Handed<'p> {
    if client.ipxe {
        let url = format!("{}/boot.ipxe", base.url());
        return (
            Some(Handout::Http {
                url,
                http_client: false,
            }),
            None,
            "user class iPXE: HTTP boot script",
        );
    }
    let http_boot =
        client.arch.is_some_and(|a| a.is_http_boot()) || client.vendor == VendorClass::Http;
    if http_boot {
        // A vendor class HTTPClient without option 93 is taken to be x64.
        let arch = client.arch.unwrap_or(Arch::HttpX64);
        let Some(file) = rule_loader.or_else(|| loaders.for_arch(arch)) else {
            return (
                None,
                None,
                "UEFI HTTP Boot on an architecture pxed has no loader for",
            );
        };
        return (
            Some(Handout::Http {
                url: base.asset(file),
                http_client: true,
            }),
            Some(file),
            "UEFI HTTP Boot: iPXE EFI binary over HTTP",
        );
    }
    let arch = match (client.arch, client.vendor) {
        (Some(a), _) => a,
        // Old PXE ROMs omit option 93; they are BIOS.
        (None, VendorClass::Pxe) => Arch::Bios,
        (None, _) => {
            return (
                None,
                None,
                "not a network-boot client (no PXE vendor class or arch)",
            )
        }
    };
    // A GRUB rule's UEFI machines get the shim for their CPU (which loads
    // GRUB beside it); firmware Debian signs no shim for gets iPXE.
    let shim = grub.then(|| super::grub::chain(arch)).flatten();
    let shim = shim.map(|c| c.shim);
    match rule_loader.or(shim).or_else(|| loaders.for_arch(arch)) {
        Some(file) => (
            Some(Handout::Tftp(file.to_string())),
            Some(file),
            if rule_loader.is_some() {
                "PXE ROM: the rule's loader over TFTP"
            } else if shim.is_some() {
                "PXE ROM: the shim of a GRUB rule over TFTP"
            } else {
                "PXE ROM: iPXE for this firmware over TFTP"
            },
        ),
        None => (
            None,
            None,
            "PXE ROM with an architecture pxed has no loader for",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rules::{RuleSet, Selectors};
    use crate::core::{Boot, BootKind, Location, Rule, Templates};

    fn policy() -> Policy {
        // The built-in local-disk rule's boot, made an iPXE kernel boot.
        let boot = Boot {
            kind: BootKind::Ipxe,
            template: "linux.ipxe".into(),
            kernel: Some("vmlinuz".into()),
            ..crate::core::lifecycle::local_rule().boot
        };
        let rule = |name: &str, order, mac: Option<Mac>| Rule {
            name: name.into(),
            priority: 0,
            selectors: Selectors {
                mac: mac.map(|m| vec![m]),
                ..Selectors::default()
            },
            boot: Boot {
                loader: (name == "special").then(|| "special.kpxe".into()),
                kind: match name {
                    "grubby" => BootKind::Grub,
                    _ => BootKind::Ipxe,
                },
                ..boot.clone()
            },
            order,
            location: Location {
                file: "t".into(),
                line: order + 1,
                column: 1,
            },
        };
        Policy::new(
            RuleSet::new(vec![
                rule("default", 0, None),
                rule("special", 1, Some(SPECIAL)),
                rule("grubby", 2, Some(GRUBBY)),
            ])
            .unwrap(),
            Templates::compile(std::iter::empty()).unwrap(),
        )
    }

    const PLAIN: Mac = Mac([0x52, 0x54, 0, 0, 0, 1]);
    const SPECIAL: Mac = Mac([0x52, 0x54, 0, 0, 0, 2]);
    const GRUBBY: Mac = Mac([0x52, 0x54, 0, 0, 0, 3]);

    fn base() -> Base {
        Base::Http("http://10.0.0.1:8080".into())
    }

    fn tftp(f: &str) -> Option<Handout> {
        Some(Handout::Tftp(f.into()))
    }

    fn http(u: &str, http_client: bool) -> Option<Handout> {
        Some(Handout::Http {
            url: u.into(),
            http_client,
        })
    }

    #[test]
    fn table() {
        use VendorClass::*;
        let full = Loaders {
            efi: "ipxe.efi".into(),
            ..Loaders::default()
        };
        let def = Loaders::default();
        let script = "http://10.0.0.1:8080/boot.ipxe";
        // (loaders, mac, option 93, iPXE, vendor class, expected)
        type Case<'a> = (
            &'a Loaders,
            Mac,
            Option<u16>,
            bool,
            VendorClass,
            Option<Handout>,
        );
        let cases: Vec<Case> = vec![
            (&def, PLAIN, Some(0), false, Pxe, tftp("undionly.kpxe")),
            (&def, PLAIN, None, false, Pxe, tftp("undionly.kpxe")),
            (&def, PLAIN, Some(6), false, Pxe, tftp("snponly.efi")),
            (&def, PLAIN, Some(7), false, Pxe, tftp("snponly.efi")),
            (&def, PLAIN, Some(9), false, Pxe, tftp("snponly.efi")),
            (&full, PLAIN, Some(7), false, Pxe, tftp("ipxe.efi")),
            (&full, PLAIN, Some(9), false, Pxe, tftp("ipxe.efi")),
            (&full, PLAIN, Some(0), false, Pxe, tftp("undionly.kpxe")),
            (&def, PLAIN, Some(10), false, Pxe, tftp("ipxe-arm32.efi")),
            (&def, PLAIN, Some(11), false, Pxe, tftp("ipxe-arm64.efi")),
            (&def, PLAIN, Some(2), false, Pxe, None),
            (&def, PLAIN, None, false, Other, None),
            (&def, PLAIN, Some(0), true, Pxe, http(script, false)),
            (&def, PLAIN, Some(7), true, Pxe, http(script, false)),
            (&def, PLAIN, Some(11), true, Pxe, http(script, false)),
            (&def, PLAIN, None, true, Other, http(script, false)),
            (&def, PLAIN, Some(16), true, Http, http(script, false)),
            (
                &def,
                PLAIN,
                Some(15),
                false,
                Http,
                http("http://10.0.0.1:8080/assets/snponly.efi", true),
            ),
            (
                &def,
                PLAIN,
                Some(16),
                false,
                Http,
                http("http://10.0.0.1:8080/assets/snponly.efi", true),
            ),
            (
                &full,
                PLAIN,
                Some(16),
                false,
                Http,
                http("http://10.0.0.1:8080/assets/ipxe.efi", true),
            ),
            (
                &def,
                PLAIN,
                Some(18),
                false,
                Http,
                http("http://10.0.0.1:8080/assets/ipxe-arm32.efi", true),
            ),
            (
                &def,
                PLAIN,
                Some(19),
                false,
                Http,
                http("http://10.0.0.1:8080/assets/ipxe-arm64.efi", true),
            ),
            // Option 93 says HTTP Boot even without the vendor class.
            (
                &def,
                PLAIN,
                Some(16),
                false,
                Other,
                http("http://10.0.0.1:8080/assets/snponly.efi", true),
            ),
            // Vendor class HTTPClient without option 93: x64.
            (
                &def,
                PLAIN,
                None,
                false,
                Http,
                http("http://10.0.0.1:8080/assets/snponly.efi", true),
            ),
            // A rule's loader wins for PXE ROMs and HTTP Boot, not for iPXE.
            (&def, SPECIAL, Some(0), false, Pxe, tftp("special.kpxe")),
            (&def, SPECIAL, Some(7), false, Pxe, tftp("special.kpxe")),
            (
                &def,
                SPECIAL,
                Some(16),
                false,
                Http,
                http("http://10.0.0.1:8080/assets/special.kpxe", true),
            ),
            (&def, SPECIAL, Some(0), true, Pxe, http(script, false)),
            // A GRUB rule: UEFI PXE gets the shim for its CPU; firmware
            // without a signed shim, HTTP Boot (the signed GRUB has no HTTP)
            // and iPXE get what they always get.
            (&def, GRUBBY, Some(7), false, Pxe, tftp("shimx64.efi")),
            (&def, GRUBBY, Some(9), false, Pxe, tftp("shimx64.efi")),
            (&def, GRUBBY, Some(11), false, Pxe, tftp("shimaa64.efi")),
            (&def, GRUBBY, Some(0), false, Pxe, tftp("undionly.kpxe")),
            (&def, GRUBBY, Some(6), false, Pxe, tftp("snponly.efi")),
            (
                &def,
                GRUBBY,
                Some(16),
                false,
                Http,
                http("http://10.0.0.1:8080/assets/snponly.efi", true),
            ),
            (&def, GRUBBY, Some(7), true, Pxe, http(script, false)),
        ];
        let policy = policy();
        for (loaders, mac, arch, ipxe, vendor, want) in cases {
            let client = Client {
                mac,
                arch: arch.map(Arch::from_option93),
                ipxe,
                vendor,
            };
            let got = decide(&policy, loaders, &client, &base(), None);
            assert_eq!(
                got.handout, want,
                "{client:?} with {loaders:?}: {}",
                got.reason
            );
        }
    }

    #[test]
    fn reports_the_matched_rule() {
        let client = Client {
            mac: SPECIAL,
            arch: Some(Arch::Bios),
            ipxe: false,
            vendor: VendorClass::Pxe,
        };
        let (policy, loaders) = (policy(), Loaders::default());
        let d = decide(&policy, &loaders, &client, &base(), None);
        assert_eq!(d.rule_name(), Some("special"));
        assert_eq!(d.loader, Some("special.kpxe"));
        let plain = Client {
            mac: PLAIN,
            ..client
        };
        let d = decide(&policy, &loaders, &plain, &base(), None);
        assert_eq!(d.rule_name(), Some("default"));
        assert_eq!(d.loader, Some("undionly.kpxe"));
    }

    /// Every IANA option 93 code (RFC 4578 §2.1 and the registry up to 20,
    /// plus one far outside it), from a PXE ROM and from iPXE: the loader, the
    /// URL, or nothing for a firmware pxed has no build for.
    #[test]
    fn every_arch_code() {
        let policy = policy();
        let loaders = Loaders::default();
        let asset = |f: &str| format!("http://10.0.0.1:8080/assets/{f}");
        for code in (0u16..=20).chain([0xfffe]) {
            let want: Option<Handout> = match code {
                0 => tftp("undionly.kpxe"),
                6 | 7 | 9 => tftp("snponly.efi"),
                10 => tftp("ipxe-arm32.efi"),
                11 => tftp("ipxe-arm64.efi"),
                15 | 16 => http(&asset("snponly.efi"), true),
                18 => http(&asset("ipxe-arm32.efi"), true),
                19 => http(&asset("ipxe-arm64.efi"), true),
                _ => None,
            };
            let rom = Client {
                mac: PLAIN,
                arch: Some(Arch::from_option93(code)),
                ipxe: false,
                vendor: VendorClass::Pxe,
            };
            let d = decide(&policy, &loaders, &rom, &base(), None);
            assert_eq!(d.handout, want, "option 93 = {code}: {}", d.reason);
            assert_eq!(
                d.loader.is_some(),
                d.handout.is_some(),
                "option 93 = {code}"
            );
            // iPXE already runs: the script, whatever the firmware.
            let ipxe = Client { ipxe: true, ..rom };
            let d = decide(&policy, &loaders, &ipxe, &base(), None);
            let script = http("http://10.0.0.1:8080/boot.ipxe", false);
            assert_eq!(d.handout, script, "iPXE on option 93 = {code}");
            assert_eq!(d.loader, None);
        }
    }

    /// A decision names the reservation of its MAC, whichever rule matched.
    #[test]
    fn the_reservation_follows_the_mac() {
        let mut p = policy();
        let reserved = Reservation {
            mac: SPECIAL,
            ip: Some("10.0.0.9".parse().unwrap()),
            ip6: None,
            hostname: Some("special".into()),
        };
        let rules: Vec<Rule<Boot>> = p
            .rules
            .iter()
            .cloned()
            .map(|mut r| {
                if r.name == "special" {
                    r.boot.reservation = Some(reserved.clone());
                }
                r
            })
            .collect();
        p = Policy::new(
            RuleSet::new(rules).unwrap(),
            Templates::compile(std::iter::empty()).unwrap(),
        );
        let client = Client {
            mac: SPECIAL,
            arch: Some(Arch::EfiX64),
            ipxe: true,
            vendor: VendorClass::Pxe,
        };
        let loaders = Loaders::default();
        let d = decide(&p, &loaders, &client, &base(), None);
        assert_eq!(d.reservation, Some(&reserved));
        let other = Client {
            mac: PLAIN,
            ..client
        };
        assert_eq!(
            decide(&p, &loaders, &other, &base(), None).reservation,
            None
        );
    }

    #[test]
    fn vendor_classes() {
        assert_eq!(
            VendorClass::parse(Some(b"PXEClient:Arch:00000:UNDI:002001")),
            VendorClass::Pxe
        );
        assert_eq!(
            VendorClass::parse(Some(b"HTTPClient:Arch:00016:UNDI:003001")),
            VendorClass::Http
        );
        assert_eq!(VendorClass::parse(Some(b"MSFT 5.0")), VendorClass::Other);
        assert_eq!(VendorClass::parse(None), VendorClass::Other);
    }
}
