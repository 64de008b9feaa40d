//! `pxed check` beyond what loading the config validates: whether the files
//! and directories the config names are there and usable on this host. A
//! config can be valid TOML with valid rules and still fail every boot (a
//! kernel that is not in `assets/`, a database directory pxed cannot write).
//! Each check adds [`Finding`]s; the command prints them all and fails on any
//! error. Checks that need the network (`ra::probe`) live with their module
//! and are converted here.

use std::fmt;

use crate::config::Config;
use crate::core::Location;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// A boot or the daemon would fail: `pxed check` exits 1.
    Error,
    /// Works, but probably not as meant.
    Warning,
    /// For the operator's information.
    Note,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        }
    }
}

/// One thing `pxed check` tells the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// Where in the operator's files, when one place is to blame.
    pub location: Option<Location>,
    pub message: String,
}

impl Finding {
    pub fn error(location: Option<Location>, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Error,
            location,
            message: message.into(),
        }
    }

    pub fn warning(location: Option<Location>, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Warning,
            location,
            message: message.into(),
        }
    }

    pub fn note(message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Note,
            location: None,
            message: message.into(),
        }
    }
}

/// `error: machines.toml:12:10: reason`, the location left out when unknown.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.severity.name())?;
        if let Some(at) = &self.location {
            write!(f, "{at}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every finding for a config that loaded: its load warnings, the files and
/// directories it names, and the IPv6 router probe. Errors first.
pub fn run(config: &Config) -> Vec<Finding> {
    let mut out: Vec<Finding> = config
        .warnings
        .iter()
        .map(|w| Finding::warning(None, w.clone()))
        .collect();
    out.extend(
        crate::ra::probe::check(config)
            .into_iter()
            .map(|f| match f {
                crate::ra::probe::Finding::Warning(w) => Finding::warning(None, w),
                crate::ra::probe::Finding::Note(n) => Finding::note(n),
            }),
    );
    out.sort_by_key(|f| f.severity);
    out
}
