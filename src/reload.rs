//! Reloading the config while machines boot: on SIGHUP, and when
//! `machines.toml` or a template changes on disk (watching the directories,
//! because editors save by writing a new file and renaming it over the old).
//! A new snapshot replaces the old one only if it is entirely valid; requests
//! already running keep the snapshot they hold, so no boot sees half a reload.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::config::{self, Shared};
use crate::sync::lock;

/// Editors write a file in several steps; wait this long after the last change
/// before loading, so a save is read once and whole.
const SETTLE: Duration = Duration::from_millis(100);

/// Loads the config again and swaps it in if valid.
pub fn reload(path: &Path, shared: &Shared) -> Result<(), config::ConfigErrors> {
    let config = config::load(path)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    for section in config::restart_only_changes(&shared.load(), &config) {
        tracing::warn!("{section} changed: it is read at start only; the running server keeps the old value until pxed restarts");
    }
    shared.store(config);
    Ok(())
}

/// The last reload that was refused, for the admin status page.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub at: SystemTime,
    pub trigger: &'static str,
    pub errors: Vec<String>,
}

/// What the admin page shows about reloads.
#[derive(Debug, Default)]
pub struct Status {
    last_rejected: Mutex<Option<Rejected>>,
}

impl Status {
    pub fn last_rejected(&self) -> Option<Rejected> {
        lock(&self.last_rejected).clone()
    }

    fn set(&self, rejected: Option<Rejected>) {
        *lock(&self.last_rejected) = rejected;
    }
}

/// Reloads, logs and counts the outcome, and remembers a rejection for the
/// status page (SIGHUP, file changes, `POST /api/v1/reload`).
pub fn reload_and_log(
    path: &Path,
    shared: &Shared,
    status: &Status,
    trigger: &'static str,
) -> Result<(), config::ConfigErrors> {
    let result = reload(path, shared);
    crate::metrics::get().reload(result.is_ok());
    match &result {
        Ok(()) => {
            tracing::info!(config = %path.display(), trigger, "config reloaded");
        }
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!(
                    trigger,
                    "reload rejected, the previous config keeps serving: {e}"
                );
            }
            status.set(Some(Rejected {
                at: SystemTime::now(),
                trigger,
                errors: errors.0.iter().map(ToString::to_string).collect(),
            }));
        }
    }
    result
}

/// Which changes trigger a reload: the config file itself and anything in the
/// template directory of the config being served. Not the rest of the config
/// file's directory: the lease and event database usually live there, and
/// every commit to them would reload the config.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Watched {
    config_dir: PathBuf,
    config_name: Option<std::ffi::OsString>,
    templates_dir: PathBuf,
}

impl Watched {
    fn of(path: &Path, shared: &Shared) -> Watched {
        let config_dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Watched {
            config_dir: absolute(&config_dir),
            config_name: path.file_name().map(ToOwned::to_owned),
            templates_dir: absolute(&shared.load().server.templates_dir),
        }
    }

    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.config_dir.clone(), self.templates_dir.clone()];
        dirs.dedup();
        dirs
    }

    /// `changed` as the watcher reports it: a watched directory joined with
    /// a file name.
    fn matters(&self, changed: &Path) -> bool {
        let dir = changed.parent();
        // The template directory itself (deleted, or created again) counts.
        changed == self.templates_dir
            || dir == Some(self.templates_dir.as_path())
            || (dir == Some(self.config_dir.as_path())
                && changed.file_name() == self.config_name.as_deref())
    }
}

/// `path` made absolute the way the watcher makes the paths it reports
/// (joined to the working directory, no symlink resolved): `--config
/// machines.toml` yields `machines.toml` and `boot-templates`, which never
/// equal the `/etc/pxed/machines.toml` an event names. `Path` equality skips
/// `.` components, so `/etc/pxed/./machines.toml` still matches.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The reload machinery, installed before pxed announces that it listens so
/// that no signal or save in the first instants is missed.
pub struct Reloader {
    path: PathBuf,
    shared: Shared,
    status: Arc<Status>,
    hup: Option<tokio::signal::unix::Signal>,
    watcher: Option<notify::RecommendedWatcher>,
    changes: mpsc::Receiver<()>,
    /// Shared with the watcher's callback, which filters with it.
    watched: Arc<Mutex<Option<Watched>>>,
}

impl Reloader {
    /// Installs the SIGHUP handler and the directory watches. Needs a tokio
    /// runtime.
    pub fn install(path: PathBuf, shared: Shared, status: Arc<Status>) -> Reloader {
        let hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot install the SIGHUP handler");
                None
            }
        };
        let (tx, changes) = mpsc::channel::<()>(1);
        let watched: Arc<Mutex<Option<Watched>>> = Arc::default();
        let filter = watched.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            let matters = {
                let w = lock(&filter);
                w.as_ref()
                    .is_some_and(|w| event.paths.iter().any(|p| w.matters(p)))
            };
            if matters && !event.kind.is_access() {
                // A full channel already holds a pending reload: nothing is lost.
                let _ = tx.try_send(());
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config files; reload with SIGHUP");
                None
            }
        };
        let mut reloader = Reloader {
            path,
            shared,
            status,
            hup,
            watcher,
            changes,
            watched,
        };
        reloader.watch_current_dirs();
        reloader
    }

    /// Watches the directories of the serving config (its template directory
    /// may have moved in the last reload). Every wanted directory is watched
    /// again each time: one that was deleted and created again is a new
    /// inode, and the old watch went with the old one (edits in the new
    /// directory would go unnoticed). Watching a directory already watched
    /// keeps its watch, so no change slips through meanwhile.
    fn watch_current_dirs(&mut self) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        let want = Watched::of(&self.path, &self.shared);
        let wanted = want.dirs();
        // Never hold the filter's lock across watch calls: they wait for the
        // watcher's thread, which may be in the callback waiting for the lock.
        let before = {
            let current = lock(&self.watched);
            current.as_ref().map(Watched::dirs).unwrap_or_default()
        };
        for d in before.iter().filter(|d| !wanted.contains(d)) {
            let _ = w.unwatch(d.as_path());
        }
        for d in &wanted {
            match w.watch(d.as_path(), RecursiveMode::NonRecursive) {
                Ok(()) => {}
                // Deleted: the reload that follows says so; a SIGHUP, or the
                // directory created again, watches it again.
                Err(_) if !d.exists() => {}
                Err(e) => {
                    tracing::warn!(dir = %d.display(), error = %e, "cannot watch; reload with SIGHUP")
                }
            }
        }
        *lock(&self.watched) = Some(want);
    }

    /// Runs until the process ends: reloads on SIGHUP and on file changes.
    pub async fn run(mut self) {
        loop {
            let hup = async {
                match self.hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            let trigger = tokio::select! {
                Some(()) = hup => "SIGHUP",
                Some(()) = self.changes.recv() => {
                    // Let the save finish, then forget the events it caused.
                    tokio::time::sleep(SETTLE).await;
                    while self.changes.try_recv().is_ok() {}
                    "file change"
                }
                else => return,
            };
            let _ = reload_and_log(&self.path, &self.shared, &self.status, trigger);
            self.watch_current_dirs();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_config_file_and_templates_trigger_a_reload() {
        let w = Watched {
            config_dir: PathBuf::from("/etc/pxed"),
            config_name: Some("machines.toml".into()),
            templates_dir: PathBuf::from("/etc/pxed/boot-templates"),
        };
        assert!(w.matters(Path::new("/etc/pxed/machines.toml")));
        assert!(w.matters(Path::new("/etc/pxed/boot-templates/linux.ipxe")));
        assert!(w.matters(Path::new("/etc/pxed/boot-templates")));
        assert!(!w.matters(Path::new("/etc/pxed/pxed-leases.sqlite-wal")));
        assert!(!w.matters(Path::new("/etc/pxed/.machines.toml.swp")));
        assert!(!w.matters(Path::new("/etc/machines.toml")));
    }

    #[test]
    fn relative_paths_match_what_the_watcher_reports() {
        let cwd = std::env::current_dir().unwrap();
        let w = Watched {
            config_dir: absolute(Path::new(".")),
            config_name: Some("machines.toml".into()),
            templates_dir: absolute(Path::new("boot-templates")),
        };
        // inotify joins the working directory with the watched path as given.
        assert!(w.matters(&cwd.join(".").join("machines.toml")));
        assert!(w.matters(&cwd.join("machines.toml")));
        assert!(w.matters(&cwd.join("boot-templates/linux.ipxe")));
        assert!(!w.matters(&cwd.join("pxed-leases.sqlite")));
    }
}
