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

use crate::assets::{self, AssetError};
use crate::config::{Config, DhcpMode, LoaderSetting};
use crate::core::decide::Loaders;
use crate::core::Location;

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
const CHECKS: &[fn(&Config) -> Vec<Finding>] = &[loaders, ipv6_router];

/// Runs every check.
pub fn run(config: &Config) -> Vec<Finding> {
    CHECKS.iter().flat_map(|check| check(config)).collect()
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
    let roots = config.server.asset_roots();
    let name = setting.file.trim_start_matches('/');
    let reason = match assets::resolve(roots, name) {
        Ok(_) => return None,
        Err(AssetError::NotFound) => {
            let searched: Vec<String> = roots.paths().map(|p| p.display().to_string()).collect();
            format!("not found in {}", searched.join(", "))
        }
        Err(AssetError::Refused(why)) => format!("refused: {why}"),
    };
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
