//! Where pxed keeps its state: leases, boot events and machine state, behind
//! one choice of [`Backend`]. SQLite files on the one host (the default,
//! nothing to set up), or one PostgreSQL database that several servers share
//! (`[database] url`, docs/ha.md). Each kind of state has its traits in its
//! own module (`dhcp::leases::LeaseStore`, `events::EventStore` and
//! `events::EventLog`, `machines::MachineStore`), with the SQLite
//! implementation beside them and the PostgreSQL one in [`pg`]; this module
//! picks, so that the adapters never name a backend.

pub mod pg;
pub mod split;

use std::sync::Arc;

use anyhow::Context as _;

use crate::config::Config;
use crate::core::{BootOverride, Mac};
use crate::dhcp::leases::{self, LeaseStore, OpenStore, Opened};
use crate::events::{EventLog, EventStore, SqliteLog};
use crate::machines::{MachineStore, SqliteMachines};

/// The event record's writer (for the writer thread) and reader.
pub type EventRecord = (Box<dyn EventStore>, Box<dyn EventLog>);

/// The state backend of this process.
#[derive(Clone)]
pub enum Backend {
    /// Files named by `[dhcp] lease_db` and `[events] db`.
    Sqlite,
    Postgres(Arc<pg::Db>),
}

impl Backend {
    /// The backend `config` names. PostgreSQL: a pool on the current
    /// runtime, not connected yet ([`Backend::ready`] connects).
    pub fn open(config: &Config) -> anyhow::Result<Backend> {
        match &config.database {
            None => Ok(Backend::Sqlite),
            Some(d) => Ok(Backend::Postgres(Arc::new(pg::Db::new(
                d,
                &config.server.name,
            )?))),
        }
    }

    /// Connects and brings the schema up to date (PostgreSQL); `Ok` at once
    /// for SQLite, whose files are opened by each store.
    pub async fn ready(&self) -> anyhow::Result<()> {
        match self {
            Backend::Sqlite => Ok(()),
            Backend::Postgres(db) => db.ready().await,
        }
    }

    /// Whether several servers share this state.
    pub fn is_shared(&self) -> bool {
        matches!(self, Backend::Postgres(_))
    }

    pub fn describe(&self, config: &Config) -> String {
        match self {
            Backend::Sqlite => crate::machines::db_path(config).display().to_string(),
            Backend::Postgres(db) => db.describe(),
        }
    }

    /// How DHCP opens its lease store (blocks: call off the runtime).
    pub fn lease_opener(&self) -> OpenStore {
        match self {
            Backend::Sqlite => Arc::new(leases::open_sqlite),
            Backend::Postgres(db) => {
                let db = db.clone();
                Arc::new(move |_| {
                    let mut store = pg::PgLeases::new(db.clone());
                    let leases = store.load().context("cannot read the leases")?;
                    let leases6 = store.load6().context("cannot read the IPv6 leases")?;
                    Ok(Opened {
                        store: Box::new(store),
                        leases,
                        leases6,
                    })
                })
            }
        }
    }

    /// Moves what an older version kept in the lease file into the event
    /// database (SQLite, default `[events] db` only; see [`split`]).
    /// Before the event writer and the machine store open it. A failure is
    /// reported and start-up goes on: events then start a new file, and the
    /// rows stay in the lease file for the next start.
    pub fn move_legacy_state(&self, config: &Config) {
        let (Backend::Sqlite, Some(legacy), Some(db)) =
            (self, &config.events.legacy, &config.events.db)
        else {
            return;
        };
        match split::move_from_leases(legacy, db) {
            Ok(None) => {}
            Ok(Some(moved)) => tracing::info!(
                from = %legacy.display(),
                to = %db.display(),
                events = moved.events,
                machines = moved.machines,
                "boot events and machine state moved out of the lease database into their own file"
            ),
            Err(e) => tracing::error!(
                from = %legacy.display(),
                to = %db.display(),
                "cannot move boot events and machine state out of the lease database: {e:#}"
            ),
        }
    }

    /// The event record's writer and reader; `None` when `[events] db = ""`
    /// turns recording off (with a shared database too).
    pub fn events(&self, config: &Config) -> anyhow::Result<Option<EventRecord>> {
        if config.events.db.is_none() {
            return Ok(None);
        }
        match self {
            Backend::Postgres(db) => Ok(Some((
                Box::new(pg::PgEventWriter::new(db.clone())),
                Box::new(pg::PgEventReader(db.clone())),
            ))),
            Backend::Sqlite => {
                let Some(path) = &config.events.db else {
                    return Ok(None);
                };
                let store = crate::events::sqlite_store(path, &config.server.name)?;
                Ok(Some((store, Box::new(SqliteLog(path.clone())))))
            }
        }
    }

    /// The event record's reader alone (`pxed events`).
    pub fn event_log(&self, config: &Config) -> Option<Box<dyn EventLog>> {
        config.events.db.as_ref()?;
        match self {
            Backend::Postgres(db) => Some(Box::new(pg::PgEventReader(db.clone()))),
            Backend::Sqlite => config
                .events
                .read_path()
                .map(|p| Box::new(SqliteLog(p)) as Box<dyn EventLog>),
        }
    }

    /// The machine state store.
    pub fn machines(&self, config: &Config) -> anyhow::Result<Box<dyn MachineStore>> {
        Ok(match self {
            Backend::Postgres(db) => Box::new(pg::PgMachines::new(db.clone())),
            Backend::Sqlite => Box::new(SqliteMachines::open(&crate::machines::db_path(config))?),
        })
    }

    /// A machine's override as stored now, for commands that run beside
    /// the daemon (`pxed explain`, `pxed render`).
    pub async fn read_override(
        &self,
        config: &Config,
        mac: Mac,
    ) -> anyhow::Result<Option<BootOverride>> {
        match self {
            Backend::Sqlite => {
                let path = config
                    .events
                    .read_path()
                    .unwrap_or_else(|| crate::machines::db_path(config));
                crate::machines::read_override(&path, mac)
            }
            Backend::Postgres(db) => Ok(pg::PgMachines::new(db.clone())
                .overrides()
                .await?
                .into_iter()
                .find(|(m, _)| *m == mac)
                .map(|(_, a)| a.boot)),
        }
    }
}
