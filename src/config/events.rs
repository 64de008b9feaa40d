//! `[events]`: where the boot-event record lives and how much of it is kept.
//! Restart-only, like `[dhcp] lease_db`: the recorder opens its database once.
//!
//! ```toml
//! [events]
//! db = "pxed-events.sqlite"   # default: beside the [dhcp] lease_db file; "" turns recording off
//! keep_days = 30              # events older than this are deleted
//! max_events = 1000000        # and never more than this many rows
//! ```

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::{wire, Loader};

/// The default event database, beside the lease database: a file of its
/// own, so that recording a boot never holds the lease committer's write
/// lock (`storage/split.rs`).
pub const DEFAULT_EVENTS_DB: &str = "pxed-events.sqlite";
const DEFAULT_KEEP_DAYS: u32 = 30;
const DEFAULT_MAX_EVENTS: u64 = 1_000_000;

/// The validated `[events]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// `None`: recording is off.
    pub db: Option<PathBuf>,
    pub keep_days: u32,
    pub max_events: u64,
    /// The lease database, when `db` is the default: where versions before
    /// issue 21 recorded events and machine state, moved to `db` at start.
    pub legacy: Option<PathBuf>,
}

impl EventsConfig {
    /// The file to read events and machine state from beside the daemon
    /// (`pxed events`, `pxed explain`): `db`, or the lease database while
    /// the daemon has not moved them yet (an upgrade not restarted).
    pub fn read_path(&self) -> Option<PathBuf> {
        let db = self.db.as_ref()?;
        match &self.legacy {
            Some(legacy) if !db.exists() && legacy.exists() => Some(legacy.clone()),
            _ => Some(db.clone()),
        }
    }
}

impl Loader<'_> {
    /// `lease_db` is the `[dhcp]` database: events go into their own file
    /// beside it unless `db` says otherwise.
    pub(super) fn events(
        &mut self,
        w: Option<&Spanned<wire::Events>>,
        lease_db: &Path,
        state_dir: &Path,
    ) -> EventsConfig {
        let empty = wire::Events::default();
        let w = w.map_or(&empty, Spanned::get_ref);
        let (db, legacy) = match &w.db {
            None => {
                let db = lease_db.with_file_name(DEFAULT_EVENTS_DB);
                let legacy = (db != lease_db).then(|| lease_db.to_path_buf());
                (Some(db), legacy)
            }
            Some(p) if p.get_ref().is_empty() => (None, None),
            Some(p) => (Some(state_dir.join(p.get_ref())), None),
        };
        let keep_days = w.keep_days.as_ref().map_or(DEFAULT_KEEP_DAYS, |k| {
            if *k.get_ref() == 0 {
                self.error(
                    k,
                    "keep_days must be at least 1 (use db = \"\" to record nothing)",
                );
            }
            *k.get_ref()
        });
        let max_events = w.max_events.as_ref().map_or(DEFAULT_MAX_EVENTS, |m| {
            if *m.get_ref() < 1000 {
                self.error(
                    m,
                    "max_events must be at least 1000 (one boot is about ten events)",
                );
            }
            *m.get_ref()
        });
        EventsConfig {
            db,
            keep_days,
            max_events,
            legacy,
        }
    }
}
