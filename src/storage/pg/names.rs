//! One name per server. Leases and events say which server wrote them, and
//! each server follows only the lease rows the others wrote (`leases.rs`):
//! two servers running under one `[server] name` would not see each other's
//! bindings, offer the same addresses and refuse each other's requests
//! (never a double binding: the table's key forbids it, but NAKs and
//! retries). So each server holds a session advisory lock keyed by its
//! name, on a connection of its own, for as long as it runs; a second
//! server with that name cannot take it and says so until the name is free.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Object;

use super::{explain, Db};

/// The first key of the two-key advisory locks ("pxed" in ASCII); the
/// second is the name's hash. PostgreSQL keeps two-key locks apart from the
/// one-key lock of the migrations.
const NAMES: i32 = 0x7078_6564;

/// How often a server that could not take its name tries again, and how
/// often a holder checks its connection is still up.
const RETRY: Duration = Duration::from_secs(30);

/// Holds this server's name from now on (a task on the current runtime).
pub fn hold(db: Arc<Db>) {
    tokio::spawn(async move {
        let mut said_taken = false;
        loop {
            match take(&db).await {
                Ok(Some(held)) => {
                    if said_taken {
                        tracing::info!(server = %db.server, "[server] name is this server's alone again");
                        said_taken = false;
                    }
                    // The lock lasts as long as the session: wait until the
                    // connection is gone (database restart), then take it again.
                    while !held.is_closed() {
                        tokio::time::sleep(RETRY).await;
                    }
                    continue;
                }
                Ok(None) if !said_taken => {
                    tracing::error!(
                        server = %db.server,
                        "another pxed on this database is running as [server] name {:?} (or its connection \
                         has not closed yet): servers sharing a name do not follow each other's leases and \
                         refuse each other's clients; give each server its own name",
                        db.server
                    );
                    said_taken = true;
                }
                Ok(None) => {}
                Err(e) => tracing::debug!("cannot hold the server name yet: {e:#}"),
            }
            tokio::time::sleep(RETRY).await;
        }
    });
}

/// The connection holding the name's lock, taken out of the pool; `None`
/// when another session holds it.
async fn take(db: &Db) -> anyhow::Result<Option<deadpool_postgres::ClientWrapper>> {
    let c = db.client().await?;
    let got: bool = db
        .call(async {
            let row = c
                .query_one(
                    "SELECT pg_try_advisory_lock($1, hashtext($2))",
                    &[&NAMES, &db.server],
                )
                .await
                .map_err(explain)?;
            Ok(row.get(0))
        })
        .await?;
    Ok(got.then(|| Object::take(c)))
}
