//! The boot decision, with no I/O: who is this machine ([`identity`]), which rule
//! it gets ([`rules`]), and what it is handed ([`render`]). Every adapter (HTTP,
//! TFTP, DHCP) calls these functions over one immutable [`Policy`] snapshot.

mod base;
mod context;
pub mod decide;
pub mod grub;
pub mod identity;
pub mod installer;
pub mod lifecycle;
pub mod render;
pub mod rules;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

pub use identity::{Arch, ClientString, Identity, Mac, Uuid};
pub use lifecycle::{Active, BootOverride, Overrides};
pub use render::{Answer, Base, Rendered, Templates};
pub use rules::{Rule, RuleSet};

/// A place in an operator's file, for error messages: `machines.toml:12:3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<str>,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// What a matched rule boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootKind {
    /// Render an iPXE script (by default: kernel + initrd + boot).
    Ipxe,
    /// Chain `lpxelinux.0` and serve a per-machine `menu.c32` config, for menus
    /// that an operator can edit on a serial console.
    Pxelinux,
    /// Boot from the local disk (different for BIOS and UEFI).
    Local,
    /// UEFI PXE: the shim, the distribution-signed network GRUB and a
    /// per-machine `grub.cfg` (see [`grub`]): the Secure Boot chain, and a
    /// menu an operator can edit on a serial console. iPXE clients and BIOS
    /// machines matching the rule get its kernel through iPXE instead.
    Grub,
}

impl BootKind {
    pub fn name(&self) -> &'static str {
        match self {
            BootKind::Ipxe => "ipxe",
            BootKind::Pxelinux => "pxelinux",
            BootKind::Local => "local",
            BootKind::Grub => "grub",
        }
    }
}

/// The serial console a machine's menu and kernel messages go to (IPMI SOL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Console {
    /// 0 for ttyS0 / COM1, 1 for ttyS1 / COM2, …
    pub index: u8,
    pub baud: u32,
    /// The firmware already copies its text screen to this port (BIOS console
    /// redirection, QEMU `-nographic`): a boot menu must then draw on the
    /// screen only, or the operator reads every character twice. `false`: the
    /// port is a console of its own, and menus write to it themselves
    /// (pxelinux `SERIAL`, GRUB `terminal_output serial`).
    pub firmware_redirect: bool,
}

impl Console {
    pub fn tty(&self) -> String {
        format!("ttyS{}", self.index)
    }

    pub fn kernel_arg(&self) -> String {
        format!("console={},{}n8", self.tty(), self.baud)
    }
}

/// The validated boot part of a rule, with `[defaults]` already applied.
#[derive(Debug, Clone)]
pub struct Boot {
    pub kind: BootKind,
    /// The iPXE template this rule renders.
    pub template: String,
    /// The pxelinux menu template (used for `boot = "pxelinux"`, and for
    /// classic pxelinux clients asking over TFTP).
    pub menu_template: String,
    /// The GRUB `grub.cfg` template (what a machine that came up through
    /// the shim and GRUB gets, see [`grub`]).
    pub grub_template: String,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub args: String,
    pub console: Option<Console>,
    /// Seconds the pxelinux menu waits before booting the default entry.
    pub menu_timeout: u32,
    pub vars: serde_json::Map<String, serde_json::Value>,
    /// Installer configs this rule serves: kind → template (see [`installer`]).
    pub configs: std::collections::BTreeMap<installer::ConfigKind, String>,
    /// DHCP: the file a PXE ROM (or UEFI HTTP Boot) matching this rule gets
    /// instead of its firmware's default from `[dhcp] *_loader`.
    pub loader: Option<String>,
    /// DHCP (full mode): the address and host name kept for the one MAC
    /// this rule matches.
    pub reservation: Option<Reservation>,
}

/// An address and/or host name a rule reserves for the one MAC it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub mac: Mac,
    pub ip: Option<Ipv4Addr>,
    /// Handed out by DHCPv6 (`src/dhcp/v6/`).
    pub ip6: Option<Ipv6Addr>,
    pub hostname: Option<String>,
}

/// Everything the boot decision needs, validated and immutable. A reload builds
/// a new one; requests in flight keep the one they started with.
#[derive(Debug)]
pub struct Policy {
    pub rules: RuleSet<Boot>,
    pub templates: Templates,
    scripts: render::ScriptCache,
    /// The rule (its position in `rules`) holding each MAC's reservation: a
    /// reservation belongs to its MAC whichever rule that MAC's DHCP request
    /// matches (DHCP knows no product or serial to match more).
    reserved_by: HashMap<Mac, usize>,
    /// Every reserved address: never handed to another machine.
    reserved_ips: HashSet<Ipv4Addr>,
    reserved_ips6: HashSet<Ipv6Addr>,
    /// What a "local disk" override boots (see [`lifecycle`]).
    local: Rule<Boot>,
}

impl Policy {
    pub fn new(rules: RuleSet<Boot>, templates: Templates) -> Policy {
        let mut reserved_by = HashMap::new();
        let mut reserved_ips = HashSet::new();
        let mut reserved_ips6 = HashSet::new();
        for (i, rule) in rules.iter().enumerate() {
            if let Some(r) = &rule.boot.reservation {
                reserved_by.insert(r.mac, i);
                reserved_ips.extend(r.ip);
                reserved_ips6.extend(r.ip6);
            }
        }
        Policy {
            rules,
            templates,
            scripts: render::ScriptCache::default(),
            reserved_by,
            reserved_ips,
            reserved_ips6,
            local: lifecycle::local_rule(),
        }
    }

    /// The reservation kept for `mac`, if a rule has one.
    pub fn reservation(&self, mac: Mac) -> Option<&Reservation> {
        let i = *self.reserved_by.get(&mac)?;
        self.rules.get(i)?.boot.reservation.as_ref()
    }

    /// Every reserved address.
    pub fn reserved_ips(&self) -> &HashSet<Ipv4Addr> {
        &self.reserved_ips
    }

    /// Every reserved IPv6 address.
    pub fn reserved_ips6(&self) -> &HashSet<Ipv6Addr> {
        &self.reserved_ips6
    }

    /// The rule this machine gets, if any.
    pub fn select(&self, id: &Identity) -> Option<&Rule<Boot>> {
        self.rules.select(id)
    }
}
