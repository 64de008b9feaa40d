//! PostgreSQL, shared by several pxed (docs/ha.md): one connection pool per
//! process ([`Db`]), the schema's migrations (`migrations.rs`), and one file
//! per store: leases (`leases.rs`), boot events (`events.rs`), machine state
//! (`machines.rs`).
//!
//! The pool reconnects by itself: a connection the server closed (restart,
//! failover) is dropped when next taken and a new one is made. Every call
//! has a deadline ([`CALL_TIMEOUT`]), so an unreachable database fails a
//! commit in seconds instead of holding the lease thread forever.

mod events;
mod import;
mod leases;
mod leases6;
mod machines;
mod migrations;
mod names;
pub mod tls;

pub use events::{PgEventReader, PgEventWriter};
pub use import::{import_sqlite, Imported};
pub use leases::PgLeases;
pub use machines::PgMachines;
pub use names::hold as hold_name;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::runtime::Handle;

use crate::config::DatabaseConfig;

/// The longest one database call (taking a connection included) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections per process: the lease thread, the event writer, the
/// machine store, the lease follower and readers (admin pages, API).
const POOL_SIZE: usize = 8;

/// One process's way to the shared database.
pub struct Db {
    pool: Pool,
    /// The runtime the pool's connections live on; the lease and event
    /// threads block on it ([`Db::block_on`]).
    handle: Handle,
    /// What `describe` shows: the URL (it holds no password).
    url: String,
    /// This server's name (leases and events say who wrote them).
    pub server: String,
    migrated: AtomicBool,
}

impl Db {
    /// A pool for `config` on the current runtime. Connects lazily: an
    /// unreachable database is not an error here (see [`Db::ready`]).
    pub fn new(config: &DatabaseConfig, server: &str) -> anyhow::Result<Db> {
        let pg = config.connect_config()?;
        let manager = Manager::from_config(
            pg,
            tls::connector(&config.tls)?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CALL_TIMEOUT))
            .create_timeout(Some(CALL_TIMEOUT))
            .recycle_timeout(Some(CALL_TIMEOUT))
            .build()
            .context("PostgreSQL connection pool")?;
        Ok(Db {
            pool,
            handle: Handle::try_current().context("the database needs the tokio runtime")?,
            url: config.url.clone(),
            server: server.to_string(),
            migrated: AtomicBool::new(false),
        })
    }

    pub fn describe(&self) -> String {
        format!("postgres {}", self.url)
    }

    /// A connection whose schema is up to date: applies the migrations the
    /// first time it succeeds (every server does at start; they take turns
    /// under an advisory lock).
    pub async fn client(&self) -> anyhow::Result<Object> {
        let mut c = self.pool.get().await.map_err(|e| self.unreachable(e))?;
        if !self.migrated.load(Ordering::Acquire) {
            migrations::apply(&mut c, &self.server).await?;
            self.migrated.store(true, Ordering::Release);
        }
        Ok(c)
    }

    /// Connects and migrates now: `Ok` once the database is usable.
    pub async fn ready(&self) -> anyhow::Result<()> {
        self.call(async { self.client().await.map(drop) }).await
    }

    /// Connects without touching the schema (`pxed check`): whether the
    /// session is encrypted, in the server's own view (`pg_stat_ssl`).
    pub async fn probe(&self) -> anyhow::Result<bool> {
        self.call(async {
            let c = self.pool.get().await.map_err(|e| self.unreachable(e))?;
            let row = c
                .query_one(
                    "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
                    &[],
                )
                .await
                .map_err(explain)?;
            Ok(row.get(0))
        })
        .await
    }

    /// Why no connection could be had, in the database's or the TLS
    /// layer's own words (the pool's and the driver's Display stop at "db
    /// error" or "error performing TLS handshake").
    fn unreachable(&self, e: deadpool_postgres::PoolError) -> anyhow::Error {
        let why = match e {
            deadpool_postgres::PoolError::Backend(e) => explain(e),
            other => anyhow::Error::new(other),
        };
        anyhow::anyhow!("cannot reach {}: {why:#}", self.url)
    }

    /// Runs `f` with [`CALL_TIMEOUT`].
    pub async fn call<T>(&self, f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
        match tokio::time::timeout(CALL_TIMEOUT, f).await {
            Ok(r) => r,
            Err(_) => anyhow::bail!(
                "{}: no answer within {} s",
                self.url,
                CALL_TIMEOUT.as_secs()
            ),
        }
    }

    /// Runs `f` to completion from a thread outside the runtime (the lease
    /// and event threads), with [`CALL_TIMEOUT`].
    pub fn block_on<T>(&self, f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
        self.handle.block_on(self.call(f))
    }
}

/// An error with the database's own words (`tokio_postgres::Error`'s
/// Display hides them behind "db error").
pub fn explain(e: tokio_postgres::Error) -> anyhow::Error {
    match e.as_db_error() {
        Some(db) => anyhow::anyhow!("{}: {}", db.severity(), db.message()),
        None => anyhow::Error::new(e),
    }
}
