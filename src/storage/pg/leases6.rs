//! DHCPv6 leases in PostgreSQL (`src/dhcp/v6/`): table `leases6`, written in
//! the same transaction as the IPv4 leases of a batch and under the same
//! rule (`leases.rs`): a binding counts only if the address is free in the
//! database (no row, expired, held by the same client, or a quarantine by
//! the same machine); what is refused goes back as holders the table learns.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv6Addr;

use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::leases::{free_sql, put_sql};
use super::{explain, Db};
use crate::core::Mac;
use crate::dhcp::leases::{Lease6, LeaseOp, State};

pub const COLUMNS6: &str = "ip, client, mac, expires, state";

/// A `leases6` row as a lease; `None` if unreadable.
pub fn lease6(r: &Row) -> Option<Lease6> {
    let ip: Vec<u8> = r.get(0);
    let state = match r.get::<_, i16>(4) {
        1 => State::Bound,
        2 => State::Declined,
        3 => State::Released,
        _ => return None,
    };
    let mac = match r.get::<_, Option<String>>(2) {
        Some(m) => Some(m.parse::<Mac>().ok()?),
        None => None,
    };
    Some(Lease6 {
        ip: Ipv6Addr::from(<[u8; 16]>::try_from(ip.as_slice()).ok()?),
        client: r.get(1),
        mac,
        expires: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
        state,
    })
}

/// A batch's IPv6 writes, one per address (the last op wins), and frees,
/// in address order like the IPv4 ones (`leases.rs`: no deadlock between
/// servers).
#[derive(Default)]
pub struct Plan6 {
    pub puts: BTreeMap<Ipv6Addr, usize>,
    frees: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Plan6 {
    pub fn new(ops: &[LeaseOp]) -> Plan6 {
        let mut plan = Plan6::default();
        for (i, op) in ops.iter().enumerate() {
            match op {
                LeaseOp::Put6(l) => {
                    plan.puts.insert(l.ip, i);
                }
                LeaseOp::Delete6 { ip, client } => {
                    plan.frees.push((ip.octets().to_vec(), client.clone()));
                }
                _ => {}
            }
        }
        plan.frees.sort();
        plan
    }

    /// The indexes of the `Put6`s the database did not write (`written`).
    pub fn refused(&self, ops: &[LeaseOp], written: &HashSet<Ipv6Addr>) -> Vec<(usize, Ipv6Addr)> {
        let mut out = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let LeaseOp::Put6(l) = op else { continue };
            let kept = self.puts.get(&l.ip).map(|k| &ops[*k]);
            let same = matches!(kept, Some(LeaseOp::Put6(k)) if k.client == l.client);
            if !(same && written.contains(&l.ip)) {
                out.push((i, l.ip));
            }
        }
        out
    }
}

/// Frees, then conditional writes, inside the batch's transaction; the
/// addresses written.
pub async fn write6(
    tx: &Transaction<'_>,
    ops: &[LeaseOp],
    plan: &Plan6,
    server: &str,
    now: i64,
) -> anyhow::Result<HashSet<Ipv6Addr>> {
    if !plan.frees.is_empty() {
        let (ips, clients): (Vec<Vec<u8>>, Vec<Vec<u8>>) = plan.frees.iter().cloned().unzip();
        let free = tx
            .prepare_cached(&free_sql("leases6", "bytea"))
            .await
            .map_err(explain)?;
        tx.execute(&free, &[&ips, &clients, &server])
            .await
            .map_err(explain)?;
    }
    let mut written = HashSet::with_capacity(plan.puts.len());
    if plan.puts.is_empty() {
        return Ok(written);
    }
    let n = plan.puts.len();
    let mut cols = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::<Option<String>>::with_capacity(n),
        Vec::with_capacity(n),
        Vec::<i16>::with_capacity(n),
    );
    for i in plan.puts.values() {
        if let LeaseOp::Put6(l) = &ops[*i] {
            cols.0.push(l.ip.octets().to_vec());
            cols.1.push(l.client.clone());
            cols.2.push(l.mac.map(|m| m.to_string()));
            cols.3.push(i64::try_from(l.expires).unwrap_or(i64::MAX));
            cols.4.push(super::leases::state_code(l.state));
        }
    }
    let put = tx
        .prepare_cached(&put_sql("leases6", "bytea"))
        .await
        .map_err(explain)?;
    let rows = tx
        .query(
            &put,
            &[&cols.0, &cols.1, &cols.2, &cols.3, &cols.4, &server, &now],
        )
        .await
        .map_err(explain)?;
    for r in rows {
        let ip: Vec<u8> = r.get(0);
        if let Ok(a) = <[u8; 16]>::try_from(ip.as_slice()) {
            written.insert(Ipv6Addr::from(a));
        }
    }
    Ok(written)
}

/// Every stored DHCPv6 lease.
pub async fn load6(db: &Db) -> anyhow::Result<Vec<Lease6>> {
    let c = db.client().await?;
    let sql = format!("SELECT {COLUMNS6} FROM leases6");
    let rows = c.query(&sql, &[]).await.map_err(explain)?;
    let out: Vec<Lease6> = rows.iter().filter_map(lease6).collect();
    if out.len() < rows.len() {
        tracing::warn!(
            skipped = rows.len() - out.len(),
            "unreadable rows in the leases6 table"
        );
    }
    Ok(out)
}

/// What the database holds at `ips`.
pub async fn holders6(db: &Db, ips: Vec<Ipv6Addr>) -> anyhow::Result<Vec<Lease6>> {
    let c = db.client().await?;
    let ips: Vec<Vec<u8>> = ips.iter().map(|a| a.octets().to_vec()).collect();
    let sql = format!("SELECT {COLUMNS6} FROM leases6 WHERE ip = ANY($1)");
    let rows = c.query(&sql, &[&ips]).await.map_err(explain)?;
    Ok(rows.iter().filter_map(lease6).collect())
}
