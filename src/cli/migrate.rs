//! `pxed migrate`: copy one host's SQLite state (the files `[dhcp] lease_db`
//! and `[events] db` name) into the PostgreSQL database `[database]` names,
//! before the servers start on it (docs/ha.md).

use pxed::storage::Backend;

use super::{load, ConfigArg, Outcome};

pub fn run(config: &ConfigArg) -> anyhow::Result<Outcome> {
    let c = load(&config.config)?;
    let lease_db = c.dhcp.lease_db.clone();
    // The lease file itself on a host whose daemon has not yet moved its
    // events into their own file (`EventsConfig::read_path`).
    let events_db = c.events.read_path().unwrap_or_else(|| lease_db.clone());
    for db in [&lease_db, &events_db] {
        if !db.exists() {
            anyhow::bail!("{}: no such database to copy from", db.display());
        }
    }
    super::runtime()?.block_on(async {
        let Backend::Postgres(db) = Backend::open(&c)? else {
            anyhow::bail!(
                "{}: no [database] url: nothing to migrate to (see docs/ha.md)",
                config.config.display()
            );
        };
        db.ready().await?;
        let done = pxed::storage::pg::import_sqlite(&db, &lease_db, &events_db).await?;
        println!(
            "copied into {}: {} leases, {} boot events, {} machines, {} machine states",
            db.describe(),
            done.leases,
            done.events,
            done.machines,
            done.machine_state
        );
        Ok(Outcome::Ok)
    })
}
