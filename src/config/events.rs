//! `[events]`: where the boot-event record lives and how much of it is kept.
//! Restart-only, like `[dhcp] lease_db`: the recorder opens its database once.
//!
//! ```toml
//! [events]
//! db = "pxed-leases.sqlite"   # default: the [dhcp] lease_db file; "" turns recording off
//! keep_days = 30              # events older than this are deleted
//! max_events = 1000000        # and never more than this many rows
//! ```

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::{wire, Loader};

const DEFAULT_KEEP_DAYS: u32 = 30;
const DEFAULT_MAX_EVENTS: u64 = 1_000_000;

/// The validated `[events]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// `None`: recording is off.
    pub db: Option<PathBuf>,
    pub keep_days: u32,
    pub max_events: u64,
}

impl Loader<'_> {
    /// `lease_db` is the `[dhcp]` database: events go into the same file
    /// unless `db` says otherwise.
    pub(super) fn events(
        &mut self,
        w: Option<&Spanned<wire::Events>>,
        lease_db: &Path,
        state_dir: &Path,
    ) -> EventsConfig {
        let empty = wire::Events::default();
        let w = w.map_or(&empty, Spanned::get_ref);
        let db = match &w.db {
            None => Some(lease_db.to_path_buf()),
            Some(p) if p.get_ref().is_empty() => None,
            Some(p) => Some(state_dir.join(p.get_ref())),
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
        }
    }
}
