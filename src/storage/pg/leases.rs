//! Leases in PostgreSQL, shared by every server (docs/ha.md, docs/decisions.md
//! "Several servers: the database decides").
//!
//! Each server still allocates from its own in-memory table (`dhcp/leases/
//! table.rs`), but a binding counts only once the database accepted it: one
//! conditional statement per batch writes every `Put` whose address is free
//! *in the database* (no row, expired, held by the same client, or a
//! quarantine by the same machine), and returns the addresses it wrote. The
//! primary key on `ip` makes two holders of one address impossible; the
//! condition makes taking a live one from its holder impossible. What it
//! refused goes back to the committer, which sends a NAK instead of the ACK,
//! and to the table, which learns the holder (the database wins).
//!
//! A moved client's old address is not deleted but freed in place (state
//! released, no client, expired), and only if that client still holds it:
//! the other servers' [`follow`] then sees it free.

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::Row;

use super::leases6::{holders6, load6, write6, Plan6};
use super::{explain, Db};
use crate::core::Mac;
use crate::dhcp::leases::{Applied, Learned, Lease, Lease6, LeaseOp, LeaseStore, State};

/// How often a server reads what the others wrote.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// Sequence numbers re-read on every follow: a transaction that took its
/// number before a later one committed becomes visible after it (numbers
/// are handed out at write time, not at commit). Reading is idempotent.
const FOLLOW_OVERLAP: i64 = 1000;
/// Rows per follow query.
const FOLLOW_PAGE: i64 = 20_000;

/// The conditional write of a batch into `table` (`leases`, or `leases6`
/// for DHCPv6), whose `ip` column has type `ip` (`bigint`, `bytea`).
pub(super) fn put_sql(table: &str, ip: &str) -> String {
    format!(
        "
INSERT INTO {table} AS l (ip, client, mac, expires, state, server)
SELECT u.*, $6 FROM unnest($1::{ip}[], $2::bytea[], $3::text[], $4::bigint[], $5::smallint[]) AS u
ON CONFLICT (ip) DO UPDATE SET client = excluded.client, mac = excluded.mac,
    expires = excluded.expires, state = excluded.state, server = excluded.server,
    seq = nextval('lease_seq')
WHERE l.client = excluded.client OR l.expires <= $7
   OR (excluded.state = 2 AND l.mac = excluded.mac)
RETURNING ip"
    )
}

/// Frees a batch's moved-from addresses in `table`, if their client still
/// holds them.
pub(super) fn free_sql(table: &str, ip: &str) -> String {
    format!(
        "
UPDATE {table} l SET client = ''::bytea, state = 3, expires = 0, server = $3,
    seq = nextval('lease_seq')
FROM unnest($1::{ip}[], $2::bytea[]) AS d(ip, client)
WHERE l.ip = d.ip AND l.client = d.client"
    )
}

const COLUMNS: &str = "ip, client, mac, expires, state, seq";

/// The lease store on the shared database.
pub struct PgLeases {
    db: Arc<Db>,
    /// The newest sequence number `load` saw: where [`follow`] starts.
    loaded_seq: i64,
}

impl PgLeases {
    pub fn new(db: Arc<Db>) -> PgLeases {
        PgLeases { db, loaded_seq: 0 }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub(super) fn state_code(s: State) -> i16 {
    match s {
        State::Offered => 0,
        State::Bound => 1,
        State::Declined => 2,
        State::Released => 3,
    }
}

/// A row as a lease, and its sequence number; `None` if unreadable.
fn lease(r: &Row) -> Option<(Lease, i64)> {
    let ip = u32::try_from(r.get::<_, i64>(0)).ok()?;
    let state = match r.get::<_, i16>(4) {
        1 => State::Bound,
        2 => State::Declined,
        3 => State::Released,
        _ => return None,
    };
    let lease = Lease {
        ip: Ipv4Addr::from(ip),
        client: r.get(1),
        mac: r.get::<_, String>(2).parse::<Mac>().ok()?,
        expires: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
        state,
    };
    Some((lease, r.get(5)))
}

/// The batch's writes, one per address (the last op for it wins, as it
/// would in sequence), and frees. Both in address order: two servers whose
/// batches touch the same rows lock them in the same order, so they wait
/// for each other instead of deadlocking.
#[derive(Default)]
struct Plan {
    /// Address → index of the op that writes it.
    puts: BTreeMap<Ipv4Addr, usize>,
    frees: Vec<(i64, Vec<u8>)>,
}

impl Plan {
    fn new(ops: &[LeaseOp]) -> Plan {
        let mut plan = Plan::default();
        for (i, op) in ops.iter().enumerate() {
            match op {
                LeaseOp::Put(l) => {
                    plan.puts.insert(l.ip, i);
                }
                LeaseOp::Delete { ip, client } => {
                    plan.frees.push((i64::from(u32::from(*ip)), client.clone()))
                }
                // IPv6 ops: `leases6.rs`.
                LeaseOp::Put6(_) | LeaseOp::Delete6 { .. } => {}
            }
        }
        plan.frees.sort();
        plan
    }
}

impl LeaseStore for PgLeases {
    fn describe(&self) -> String {
        self.db.describe()
    }

    fn load(&mut self) -> anyhow::Result<Vec<Lease>> {
        let db = self.db.clone();
        let rows = db.block_on(async {
            let c = db.client().await?;
            let sql = format!("SELECT {COLUMNS} FROM leases");
            c.query(&sql, &[]).await.map_err(explain)
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            match lease(r) {
                Some((l, seq)) => {
                    self.loaded_seq = self.loaded_seq.max(seq);
                    out.push(l);
                }
                None => tracing::warn!("skipping an unreadable row in the leases table"),
            }
        }
        Ok(out)
    }

    fn load6(&mut self) -> anyhow::Result<Vec<Lease6>> {
        let db = self.db.clone();
        db.block_on(load6(&db))
    }

    fn apply(&mut self, ops: &[LeaseOp]) -> anyhow::Result<Applied> {
        let plan = Plan::new(ops);
        let plan6 = Plan6::new(ops);
        let db = self.db.clone();
        let (written, written6) = db.block_on(write(&db, ops, &plan, &plan6))?;
        let mut applied = Applied::default();
        let lost6 = plan6.refused(ops, &written6);
        if !lost6.is_empty() {
            applied.refused.extend(lost6.iter().map(|(i, _)| *i));
            let ips = lost6.into_iter().map(|(_, ip)| ip).collect();
            applied.holders6 = db.block_on(holders6(&db, ips))?;
        }
        let mut lost = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let LeaseOp::Put(l) = op else { continue };
            let kept = plan.puts.get(&l.ip).map(|k| &ops[*k]);
            let same = matches!(kept, Some(LeaseOp::Put(k)) if k.client == l.client);
            if !(same && written.contains(&l.ip)) {
                applied.refused.push(i);
                lost.push(i64::from(u32::from(l.ip)));
            }
        }
        if !lost.is_empty() {
            applied.holders = db.block_on(holders(&db, lost))?;
        }
        applied.refused.sort_unstable();
        Ok(applied)
    }

    /// A number of this server's name: each server starts its fresh
    /// addresses elsewhere in the pool.
    fn spread(&self) -> u64 {
        // FNV-1a: stable across builds and platforms (std's hasher is not
        // promised to be), so a server keeps its part of the pool.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.db.server.as_bytes() {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    fn follow(&self, learned: Learned) {
        let db = self.db.clone();
        let from = self.loaded_seq;
        self.db.handle.spawn(follow(db, from, learned));
    }
}

/// Frees, then conditional writes, IPv4 and IPv6 (`leases6.rs`), in one
/// transaction; the addresses written.
async fn write(
    db: &Db,
    ops: &[LeaseOp],
    plan: &Plan,
    plan6: &Plan6,
) -> anyhow::Result<(HashSet<Ipv4Addr>, HashSet<Ipv6Addr>)> {
    let mut c = db.client().await?;
    let n = plan.puts.len();
    let (mut ips, mut clients, mut macs, mut expires, mut states) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for i in plan.puts.values() {
        if let LeaseOp::Put(l) = &ops[*i] {
            ips.push(i64::from(u32::from(l.ip)));
            clients.push(l.client.clone());
            macs.push(l.mac.to_string());
            expires.push(i64::try_from(l.expires).unwrap_or(i64::MAX));
            states.push(state_code(l.state));
        }
    }
    let tx = c.transaction().await.map_err(explain)?;
    if !plan.frees.is_empty() {
        let (ips, clients): (Vec<i64>, Vec<Vec<u8>>) = plan.frees.iter().cloned().unzip();
        let free = tx
            .prepare_cached(&free_sql("leases", "bigint"))
            .await
            .map_err(explain)?;
        tx.execute(&free, &[&ips, &clients, &db.server])
            .await
            .map_err(explain)?;
    }
    let mut written = HashSet::with_capacity(n);
    if n > 0 {
        let put = tx
            .prepare_cached(&put_sql("leases", "bigint"))
            .await
            .map_err(explain)?;
        let rows = tx
            .query(
                &put,
                &[&ips, &clients, &macs, &expires, &states, &db.server, &now()],
            )
            .await
            .map_err(explain)?;
        for r in rows {
            if let Ok(ip) = u32::try_from(r.get::<_, i64>(0)) {
                written.insert(Ipv4Addr::from(ip));
            }
        }
    }
    let written6 = write6(&tx, ops, plan6, &db.server, now()).await?;
    tx.commit().await.map_err(explain)?;
    Ok((written, written6))
}

/// What the database holds at `ips`.
async fn holders(db: &Db, ips: Vec<i64>) -> anyhow::Result<Vec<Lease>> {
    let c = db.client().await?;
    let sql = format!("SELECT {COLUMNS} FROM leases WHERE ip = ANY($1)");
    let rows = c.query(&sql, &[&ips]).await.map_err(explain)?;
    Ok(rows.iter().filter_map(lease).map(|(l, _)| l).collect())
}

/// Sends the rows other servers wrote since `seq` to `learned`, every
/// [`FOLLOW_EVERY`], until the receive loop is gone. Errors wait for the
/// next round: the committer reports an unreachable database.
async fn follow(db: Arc<Db>, mut seq: i64, learned: Learned) {
    let sql = format!(
        "SELECT {COLUMNS} FROM leases WHERE seq > $1 AND server <> $2 ORDER BY seq LIMIT {FOLLOW_PAGE}"
    );
    let mut tick = tokio::time::interval(FOLLOW_EVERY);
    loop {
        tick.tick().await;
        let from = seq.saturating_sub(FOLLOW_OVERLAP);
        let rows = db
            .call(async {
                let c = db.client().await?;
                c.query(&sql, &[&from, &db.server]).await.map_err(explain)
            })
            .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                tracing::debug!(
                    error = format!("{e:#}"),
                    "cannot follow the other servers' leases"
                );
                continue;
            }
        };
        let mut batch = Vec::with_capacity(rows.len());
        for (l, s) in rows.iter().filter_map(lease) {
            seq = seq.max(s);
            batch.push(l);
        }
        if batch.is_empty() {
            continue;
        }
        if learned.send(batch).await.is_err() {
            return;
        }
    }
}
