//! What `pxed check` looks at beyond parsing: whether the files and places
//! a config names are there to serve from. Loading (`config::load`) already
//! proved the config is well formed; these checks read the filesystem (and
//! the network, for the IPv6 router probe), so they run only in `pxed check`,
//! never on a reload, and may differ between the host that checks and the one
//! that serves.
//!
//! Each check is a function from the config to a list of [`Finding`]s; [`run`]
//! runs them all. Add a check by adding a function to [`CHECKS`].

use std::fmt;
use std::path::Path;

use crate::assets::{self, AssetError};
use crate::config::{Config, DhcpMode, LoaderSetting, PACKAGED_STATE_DIR};
use crate::core::decide::Loaders;
use crate::core::{grub, Arch, BootKind, Location};

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// `pxed serve` would fail, or nothing could boot: `pxed check` fails.
    Error,
    /// Some machines would not boot.
    Warning,
    /// Worth knowing; nothing is wrong.
    Note,
}

/// One thing `pxed check` tells the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// The place in the operator's files it is about, when there is one.
    pub at: Option<Location>,
    pub message: String,
}

impl Finding {
    pub fn new(severity: Severity, at: Option<Location>, message: impl Into<String>) -> Finding {
        Finding {
            severity,
            at,
            message: message.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        match &self.at {
            Some(at) => write!(f, "{severity}: {at}: {}", self.message),
            None => write!(f, "{severity}: {}", self.message),
        }
    }
}

/// Every check `pxed check` runs, in the order their findings are printed.
const CHECKS: &[fn(&Config) -> Vec<Finding>] = &[
    assets_dir,
    rule_files,
    databases,
    loaders,
    grub_chain,
    ipv6_router,
    ipv6_listeners,
    database,
];

/// Runs every check.
pub fn run(config: &Config) -> Vec<Finding> {
    CHECKS.iter().flat_map(|check| check(config)).collect()
}

/// The config file itself, for a problem with a default value (no key to
/// point at).
fn whole_file(config: &Config) -> Location {
    Location {
        file: config.path.display().to_string().into(),
        line: 1,
        column: 1,
    }
}

/// `assets_dir` must be a directory: every kernel, initrd and override is
/// looked up there first.
fn assets_dir(config: &Config) -> Vec<Finding> {
    let dir = &config.server.assets_dir;
    if dir.is_dir() {
        return Vec::new();
    }
    let default = if config.assets_dir_at.is_none() {
        " (the default)"
    } else {
        ""
    };
    let at = config
        .assets_dir_at
        .clone()
        .unwrap_or_else(|| whole_file(config));
    let why = if dir.exists() {
        "is not a directory"
    } else {
        "does not exist"
    };
    vec![Finding::new(
        Severity::Error,
        Some(at),
        format!(
            "assets_dir{default} {} {why}; create it or set [server] assets_dir",
            dir.display()
        ),
    )]
}

/// Every local kernel and initrd a rule boots must be there to serve: a
/// missing one fails that machine's boot at the `kernel` line, every time.
/// Said once per place in the file (a `[defaults]` kernel serves many rules).
fn rule_files(config: &Config) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    for r in &config.asset_refs {
        if out.iter().any(|f| f.at.as_ref() == Some(&r.at)) {
            continue;
        }
        let roots = config.server.asset_roots();
        let why = match assets::resolve(roots, r.path.trim_start_matches('/')) {
            Ok(_) => continue,
            Err(AssetError::NotFound) => {
                let searched: Vec<String> =
                    roots.paths().map(|p| p.display().to_string()).collect();
                format!("not found in {}", searched.join(", "))
            }
            Err(AssetError::Refused(why)) => format!("refused: {why}"),
        };
        let (severity, example) = if config.example {
            (
                Severity::Warning,
                " (a warning only because [server] example = true: remove that line once your kernels are in place)",
            )
        } else {
            (Severity::Error, "")
        };
        out.push(Finding::new(
            severity,
            Some(r.at.clone()),
            format!(
                "{} = {:?} (rule {:?}) cannot be served: {why}; machines booting it stop at `kernel`/`initrd`{example}",
                r.key, r.path, r.rule
            ),
        ));
    }
    out
}

/// Every database pxed writes must be writable by the user that runs this
/// check (run it as the service's user: the unit runs it as `ExecStartPre`):
/// without its lease database DHCP in full mode answers nobody, and without
/// the event database no boot is recorded. SQLite also creates `-wal` and
/// `-journal` files beside it, so the directory must be writable too.
fn databases(config: &Config) -> Vec<Finding> {
    // A defaulted database beside one already reported shares its cause:
    // saying it twice would count one fault as two errors.
    let mut reported_dirs: Vec<&Path> = Vec::new();
    config
        .databases
        .iter()
        .filter_map(|db| {
            let why = unwritable(&db.path)?;
            let dir = db.path.parent().unwrap_or(Path::new(""));
            if db.at.is_none() && reported_dirs.contains(&dir) {
                return None;
            }
            reported_dirs.push(dir);
            // Checked by hand before the service ever started: the unit's
            // StateDirectory=pxed creates it, for the service's user.
            if db.at.is_none() && dir == Path::new(PACKAGED_STATE_DIR) && !dir.exists() {
                return Some(Finding::new(
                    Severity::Note,
                    None,
                    format!("{} {}: {PACKAGED_STATE_DIR} does not exist yet; the systemd unit creates it (StateDirectory=pxed)", db.key, db.path.display()),
                ));
            }
            let (at, hint) = match &db.at {
                Some(at) => (at.clone(), String::new()),
                None if db.key.starts_with("[events]") => (
                    whole_file(config),
                    " (the default: beside [dhcp] lease_db)".to_string(),
                ),
                None => (
                    whole_file(config),
                    " (the default: beside machines.toml, or in $STATE_DIRECTORY under systemd's StateDirectory=)"
                        .to_string(),
                ),
            };
            Some(Finding::new(
                Severity::Error,
                Some(at),
                format!("{} {}{hint}: {why}", db.key, db.path.display()),
            ))
        })
        .collect()
}

/// Why this process could not create or write the SQLite database `path`.
fn unwritable(path: &Path) -> Option<String> {
    use nix::unistd::{access, AccessFlags};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if dir.exists() && !dir.is_dir() {
        return Some(format!("{} is not a directory", dir.display()));
    }
    if !dir.is_dir() {
        return Some(format!("its directory {} does not exist", dir.display()));
    }
    if let Err(e) = access(dir, AccessFlags::W_OK | AccessFlags::X_OK) {
        return Some(format!("cannot write in {}: {}", dir.display(), e.desc()));
    }
    if path.exists() {
        if let Err(e) = access(path, AccessFlags::R_OK | AccessFlags::W_OK) {
            return Some(format!("cannot write it: {}", e.desc()));
        }
    }
    None
}

/// Loader files that cannot be served. A loader the config names is checked
/// always (an external DHCP server may hand it out too); pxed's defaults only
/// when pxed's DHCP hands them out, and the ARM defaults, which Debian does
/// not package, only as a note.
pub fn loaders(config: &Config) -> Vec<Finding> {
    let dhcp_on = config.dhcp.mode != DhcpMode::Off;
    let defaults = Loaders::default();
    let unpackaged = [defaults.arm32.as_str(), defaults.arm64.as_str()];
    config
        .dhcp
        .loader_settings
        .iter()
        .filter(|l| !l.file.contains("://"))
        .filter_map(|l| {
            let severity = match (&l.at, dhcp_on) {
                (Some(_), _) => Severity::Warning,
                (None, false) => return None,
                (None, true) if unpackaged.contains(&l.file.as_str()) => Severity::Note,
                (None, true) => Severity::Warning,
            };
            let why = unservable(config, l)?;
            Some(Finding::new(severity, l.at.clone(), why))
        })
        .collect()
}

/// Why the loader of `setting` cannot be served, if it cannot.
fn unservable(config: &Config, setting: &LoaderSetting) -> Option<String> {
    let reason = unservable_name(config, setting.file.trim_start_matches('/'))?;
    let default = if setting.at.is_none() {
        " (pxed's default)"
    } else {
        ""
    };
    Some(format!(
        "{}{default} = {:?} cannot be served: {reason}; machines given it will not boot",
        setting.key, setting.file
    ))
}

/// The shim and GRUB files a GRUB rule's UEFI machines fetch, per CPU
/// (`core::grub::chain`), served from `[server.files]` or the roots. x86-64
/// is checked as soon as a rule boots GRUB; ARM64 warns only when a GRUB
/// rule names an ARM64 arch (a note otherwise: most sites have no ARM64
/// machines, and Debian's arm64 packages do not install on amd64). A
/// `[server.files]` entry the config writes is checked always.
pub fn grub_chain(config: &Config) -> Vec<Finding> {
    let grub_rules: Vec<_> = config
        .policy
        .rules
        .iter()
        .filter(|r| r.boot.kind == BootKind::Grub)
        .collect();
    let names_arm64 = grub_rules.iter().any(|r| {
        r.selectors.arch.as_ref().is_some_and(|a| {
            a.iter()
                .any(|a| matches!(a, Arch::EfiArm64 | Arch::HttpArm64))
        })
    });
    let mut findings = Vec::new();
    let mut checked = Vec::new();
    for (arch, packages, severity) in [
        (
            Arch::EfiX64,
            "shim-signed, grub-efi-amd64-signed",
            Severity::Warning,
        ),
        (
            Arch::EfiArm64,
            "the arm64 shim-signed and grub-efi-arm64-signed, unpacked with dpkg-deb -x where [server.files] points",
            if names_arm64 { Severity::Warning } else { Severity::Note },
        ),
    ] {
        let Some((chain, rule)) = grub::chain(arch).zip(grub_rules.first()) else {
            continue;
        };
        for name in [chain.shim, chain.grub] {
            checked.push(name);
            if let Some(why) = unservable_name(config, name) {
                findings.push(Finding::new(severity, file_setting(config, name), format!(
                    "{name} cannot be served: {why}; rule {:?} boots GRUB, and its {} machines are handed {} (Debian packages: {packages})",
                    rule.name, arch.name(), chain.shim
                )));
            }
        }
    }
    for setting in &config.server.file_settings {
        let name = setting.name.as_str();
        if setting.at.is_none() || checked.contains(&name) {
            continue;
        }
        if let Some(why) = unservable_name(config, name) {
            let message = format!("[server.files] {name:?} = {:?}: {why}", setting.path);
            findings.push(Finding::new(Severity::Warning, setting.at.clone(), message));
        }
    }
    findings
}

/// Where `[server.files]` sets `name`, if the config does.
fn file_setting(config: &Config, name: &str) -> Option<Location> {
    let settings = &config.server.file_settings;
    settings.iter().find(|s| s.name == name)?.at.clone()
}

/// Why the file named `name` cannot be served, if it cannot.
fn unservable_name(config: &Config, name: &str) -> Option<String> {
    let roots = config.server.asset_roots();
    match assets::resolve(roots, name) {
        Ok(_) => None,
        Err(AssetError::NotFound) => {
            let mut searched: Vec<String> = roots
                .files
                .get(name)
                .map(|p| p.display().to_string())
                .into_iter()
                .collect();
            searched.extend(roots.paths().map(|p| p.display().to_string()));
            Some(format!("not found in {}", searched.join(", ")))
        }
        Err(AssetError::Refused(why)) => Some(format!("refused: {why}")),
    }
}

/// Whether iPXE would wait for an IPv6 router on the boot networks
/// (`ra::probe`).
fn ipv6_router(config: &Config) -> Vec<Finding> {
    crate::ra::probe::check(config)
        .into_iter()
        .map(|f| match f {
            crate::ra::probe::Finding::Warning(w) => Finding::new(Severity::Warning, None, w),
            crate::ra::probe::Finding::Note(n) => Finding::new(Severity::Note, None, n),
        })
        .collect()
}

/// With DHCPv6 on, the URLs it hands out name pxed's IPv6 address: the HTTP
/// and TFTP listeners must take IPv6 (`[::]` serves both families).
fn ipv6_listeners(config: &Config) -> Vec<Finding> {
    if !config.dhcp.dhcpv6 {
        return Vec::new();
    }
    let server = &config.server;
    let listeners = [
        ("http_listen", Some(server.http_listen)),
        ("tftp_listen", server.tftp_listen),
    ];
    listeners
        .into_iter()
        .filter_map(|(key, addr)| {
            let addr = addr.filter(std::net::SocketAddr::is_ipv4)?;
            Some(Finding::new(
                Severity::Warning,
                Some(whole_file(config)),
                format!(
                    "DHCPv6 is on but [server] {key} = \"{addr}\" takes IPv4 only: machines on an IPv6-only network cannot fetch what DHCPv6 hands them; use \"[::]:{}\" (both families)",
                    addr.port()
                ),
            ))
        })
        .collect()
}

/// Whether the shared database answers, and how the link is secured. An
/// unreachable database is a warning, not an error: pxed starts without it
/// and reconnects by itself (docs/ha.md), and the unit runs this check
/// before every start. Certificate files that cannot be used are an error:
/// no connection could ever be made.
fn database(config: &Config) -> Vec<Finding> {
    use crate::config::TlsMode;
    let Some(db) = &config.database else {
        return Vec::new();
    };
    let url = &db.url;
    if let Err(e) = crate::storage::pg::tls::connector(&db.tls) {
        return vec![Finding::new(
            Severity::Error,
            None,
            format!("[database] url {url}: {e:#}"),
        )];
    }
    let probe = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async {
                let server = crate::storage::pg::Db::new(db, &config.server.name)?;
                server.probe().await
            })
        });
    let (severity, what) = match probe {
        Ok(false) => (Severity::Note, "reachable, not encrypted".to_string()),
        Ok(true) => (
            Severity::Note,
            match db.tls.mode {
                TlsMode::VerifyFull => "reachable over TLS, certificate and host name verified",
                TlsMode::VerifyCa => "reachable over TLS, certificate chain verified",
                _ => "reachable over TLS, server not authenticated (sslmode=verify-full authenticates it)",
            }
            .to_string(),
        ),
        Err(e) => {
            return vec![Finding::new(
                Severity::Warning,
                None,
                format!("[database] {e:#}; pxed starts anyway and retries"),
            )]
        }
    };
    vec![Finding::new(
        severity,
        None,
        format!("[database] url {url}: {what}"),
    )]
}
