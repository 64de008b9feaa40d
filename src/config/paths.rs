//! The files and directories a config names outside itself, kept with the
//! place in `machines.toml` that names them, for `pxed check` (which looks
//! whether they exist and are usable: `src/check.rs`). Also where relative
//! database paths are anchored: the service's state directory.
//!
//! The shipped `machines.toml` says `[server] example = true`: its rules boot
//! `debian/vmlinuz`, which no checkout or package ships (a kernel is the
//! operator's choice). With that key a missing kernel or initrd is a warning
//! that names the key, so the shipped config passes `pxed check` and the
//! packaged service starts; without it (any real config) it is an error.
//! Nothing else changes: the example serves like any config.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::{wire, Loader};
use crate::core::Location;

/// A local file a rule boots (`kernel`, `initrd`), relative to the asset
/// roots. URLs (`http://…`) are not kept: pxed does not serve them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetRef {
    pub key: &'static str,
    pub path: String,
    pub rule: String,
    /// Where the value is written (the rule's key, or `[defaults]`'s).
    pub at: Location,
}

/// A database file pxed writes (`[dhcp] lease_db`, `[events] db`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseRef {
    pub key: &'static str,
    pub path: PathBuf,
    /// Where it is set; `None` for the default.
    pub at: Option<Location>,
}

/// Where relative database paths are anchored: `$STATE_DIRECTORY` when
/// systemd provides one (`StateDirectory=pxed` gives `/var/lib/pxed`; the
/// first entry if it lists several); else `/var/lib/pxed` for a config under
/// `/etc` (the packaged layout: `pxed events` or `pxed check` run by hand
/// find the databases the service writes, and `/etc` holds no state); else
/// the config file's directory (a checkout run by hand). The config
/// directory is read-only under the unit's `ProtectSystem=strict`.
pub fn state_dir(config_dir: &Path) -> PathBuf {
    state_dir_from(config_dir, std::env::var_os("STATE_DIRECTORY"))
}

/// The packaged state directory, as the unit's `StateDirectory=pxed` makes it.
pub const PACKAGED_STATE_DIR: &str = "/var/lib/pxed";

fn state_dir_from(config_dir: &Path, env: Option<std::ffi::OsString>) -> PathBuf {
    if let Some(dirs) = env.filter(|d| !d.is_empty()) {
        let dirs = dirs.to_string_lossy().into_owned();
        return PathBuf::from(dirs.split(':').next().unwrap_or(&dirs));
    }
    let absolute = std::path::absolute(config_dir).unwrap_or_else(|_| config_dir.to_path_buf());
    if absolute.starts_with("/etc") {
        PathBuf::from(PACKAGED_STATE_DIR)
    } else {
        config_dir.to_path_buf()
    }
}

impl Loader<'_> {
    /// Keeps `value` (a rule's `kernel` or `initrd`) for `pxed check`, and
    /// refuses one that could never be served: a path leaving the asset
    /// roots (`../../etc/passwd`) is refused at every request.
    pub(super) fn asset_ref(
        &mut self,
        key: &'static str,
        value: Option<&Spanned<String>>,
        rule: &str,
    ) {
        let Some(v) = value else { return };
        let path = v.get_ref();
        if path.contains("://") {
            return;
        }
        if let Err(e) = crate::assets::check_relative(path.trim_start_matches('/')) {
            self.error(
                v,
                format!("{key} = {path:?}: {e}; it must be a path under assets_dir or the search paths, or an http:// URL"),
            );
            return;
        }
        let at = self.location(v.span().start);
        self.asset_refs.push(AssetRef {
            key,
            path: path.clone(),
            rule: rule.to_string(),
            at,
        });
    }

    /// Where a key is written, if it is.
    pub(super) fn key_at(&self, v: Option<&Spanned<String>>) -> Option<Location> {
        v.map(|v| self.location(v.span().start))
    }

    /// The databases `lease_db` and `events_db` resolve to, with where each
    /// is set.
    pub(super) fn databases(
        &self,
        w: &wire::File,
        lease_db: &Path,
        events_db: Option<&Path>,
    ) -> Vec<DatabaseRef> {
        let at = |v| self.key_at(v);
        let dhcp = w.dhcp.as_ref().map(Spanned::get_ref);
        let events = w.events.as_ref().map(Spanned::get_ref);
        let mut out = vec![DatabaseRef {
            key: "[dhcp] lease_db",
            path: lease_db.to_path_buf(),
            at: at(dhcp.and_then(|d| d.lease_db.as_ref())),
        }];
        if let Some(db) = events_db.filter(|db| *db != lease_db) {
            out.push(DatabaseRef {
                key: "[events] db",
                path: db.to_path_buf(),
                at: at(events.and_then(|e| e.db.as_ref())),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_directory_follows_systemd_then_the_fhs() {
        let env = |s: &str| Some(std::ffi::OsString::from(s));
        assert_eq!(
            state_dir_from(Path::new("/etc/pxed"), env("/var/lib/pxed:/var/lib/other")),
            Path::new("/var/lib/pxed")
        );
        assert_eq!(
            state_dir_from(Path::new("/etc/pxed"), None),
            Path::new("/var/lib/pxed")
        );
        assert_eq!(
            state_dir_from(Path::new("/srv/pxed"), env("")),
            Path::new("/srv/pxed")
        );
        assert_eq!(state_dir_from(Path::new(""), None), Path::new(""));
    }
}
