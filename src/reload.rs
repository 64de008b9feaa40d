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

/// Editors write a file in several steps; wait this long after the last change
/// before loading, so a save is read once and whole.
const SETTLE: Duration = Duration::from_millis(100);

/// Loads the config again and swaps it in if valid.
pub fn reload(path: &Path, shared: &Shared) -> Result<(), config::ConfigErrors> {
    let config = config::load(path)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
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
        self.last_rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, rejected: Option<Rejected>) {
        *self.last_rejected.lock().unwrap_or_else(|p| p.into_inner()) = rejected;
    }
}

fn reload_and_log(path: &Path, shared: &Shared, status: &Status, trigger: &'static str) {
    let result = reload(path, shared);
    crate::metrics::get().reload(result.is_ok());
    match result {
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
}

/// The directories whose changes trigger a reload: the config file's and the
/// template directory of the config being served.
fn watched_dirs(path: &Path, shared: &Shared) -> Vec<PathBuf> {
    let config_dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut dirs = vec![config_dir, shared.load().server.templates_dir.clone()];
    dirs.dedup();
    dirs
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
    dirs: Vec<PathBuf>,
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
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
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
            dirs: Vec::new(),
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
        let want = watched_dirs(&self.path, &self.shared);
        for d in self.dirs.iter().filter(|d| !want.contains(d)) {
            let _ = w.unwatch(d.as_path());
        }
        for d in &want {
            match w.watch(d.as_path(), RecursiveMode::NonRecursive) {
                Ok(()) => {}
                // Deleted: the reload that follows says so; a SIGHUP or a
                // change in the config directory watches it again.
                Err(_) if !d.exists() => {}
                Err(e) => {
                    tracing::warn!(dir = %d.display(), error = %e, "cannot watch; reload with SIGHUP")
                }
            }
        }
        self.dirs = want;
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
            reload_and_log(&self.path, &self.shared, &self.status, trigger);
            self.watch_current_dirs();
        }
    }
}
