//! Boot events in PostgreSQL: every server writes its steps (tagged with its
//! name) into one `events` table, and every reader sees them all. The batch
//! logic (folding repeats, machine summaries) is the backends' common one
//! (`events/batch.rs`); this file only supplies the statements.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::future::try_join_all;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{explain, Db};
use crate::core::Mac;
use crate::events::store::{from_millis, millis};
use crate::events::{
    Event, EventLog, EventStore, Machine, MachineUpdate, Memory, Query, Retention, Sink,
    StoredEvent,
};

/// See the SQLite writer's `UPSERT_MACHINE` (src/events/store.rs).
const UPSERT_MACHINE: &str = "
INSERT INTO machines AS m (mac, first_at, last_at, stage, outcome, ip, rule, arch, product,
                           serial, manufacturer, uuid, server)
VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, $8), $9, $10, $11, $12, $13, $14)
ON CONFLICT (mac) DO UPDATE SET
    last_at = excluded.last_at, stage = excluded.stage, outcome = excluded.outcome,
    ip = coalesce(excluded.ip, m.ip),
    rule = coalesce($7, m.rule, $8),
    arch = coalesce(excluded.arch, m.arch),
    product = coalesce(excluded.product, m.product),
    serial = coalesce(excluded.serial, m.serial),
    manufacturer = coalesce(excluded.manufacturer, m.manufacturer),
    uuid = coalesce(excluded.uuid, m.uuid),
    server = excluded.server";

const INSERT: &str = "
INSERT INTO events (id, at, last_at, mac, ip, stage, outcome, rule, arch, product, detail, server)
SELECT u.id, u.at, u.at, u.mac, u.ip, u.stage, u.outcome, u.rule, u.arch, u.product, u.detail, $11
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::text[])
     AS u(id, at, mac, ip, stage, outcome, rule, arch, product, detail)";

const FOLD: &str = "
UPDATE events e SET count = e.count + f.n, last_at = greatest(e.last_at, f.at)
FROM unnest($1::bigint[], $2::int[], $3::bigint[]) AS f(id, n, at) WHERE e.id = f.id";

const TOUCH: &str = "
UPDATE machines m SET last_at = greatest(m.last_at, t.at)
FROM unnest($1::text[], $2::bigint[]) AS t(mac, at) WHERE m.mac = t.mac";

/// The event writer on the shared database.
pub struct PgEventWriter {
    db: Arc<Db>,
}

impl PgEventWriter {
    pub fn new(db: Arc<Db>) -> PgEventWriter {
        PgEventWriter { db }
    }
}

/// The batch's rows, gathered for a few statements.
#[derive(Default)]
struct PgSink {
    /// Row ids reserved for this batch, handed out in order.
    ids: std::vec::IntoIter<i64>,
    new: [Vec<Option<String>>; 8],
    new_ids: Vec<i64>,
    new_at: Vec<i64>,
    machines: Vec<(String, MachineUpdate)>,
    folds: (Vec<i64>, Vec<i32>, Vec<i64>),
    touches: (Vec<String>, Vec<i64>),
}

impl Sink for PgSink {
    fn insert(&mut self, e: &Event, at: i64) -> anyhow::Result<i64> {
        let id = self
            .ids
            .next()
            .ok_or_else(|| anyhow::anyhow!("more events than row ids reserved"))?;
        self.new_ids.push(id);
        self.new_at.push(at);
        let cols = [
            e.mac.map(|m| m.to_string()),
            e.ip.map(|ip| ip.to_string()),
            Some(e.stage.name().to_string()),
            Some(e.outcome.to_string()),
            e.rule.clone(),
            e.arch.map(|a| a.name().to_string()),
            e.product.clone(),
            Some(e.detail.clone()),
        ];
        for (col, v) in self.new.iter_mut().zip(cols) {
            col.push(v);
        }
        Ok(id)
    }

    fn machine(&mut self, mac: &str, m: &MachineUpdate) -> anyhow::Result<()> {
        self.machines.push((mac.to_string(), m.clone()));
        Ok(())
    }

    fn fold(&mut self, id: i64, n: u32, at: i64) -> anyhow::Result<()> {
        self.folds.0.push(id);
        self.folds.1.push(i32::try_from(n).unwrap_or(i32::MAX));
        self.folds.2.push(at);
        Ok(())
    }

    fn touch(&mut self, mac: &str, at: i64) -> anyhow::Result<()> {
        self.touches.0.push(mac.to_string());
        self.touches.1.push(at);
        Ok(())
    }
}

impl PgSink {
    /// Runs the gathered statements in one transaction.
    async fn store(self, db: &Db) -> anyhow::Result<()> {
        let mut c = db.client().await?;
        let tx = c.transaction().await.map_err(explain)?;
        if !self.new_ids.is_empty() {
            let n = &self.new;
            let insert = tx.prepare_cached(INSERT).await.map_err(explain)?;
            let params: [&(dyn ToSql + Sync); 11] = [
                &self.new_ids,
                &self.new_at,
                &n[0],
                &n[1],
                &n[2],
                &n[3],
                &n[4],
                &n[5],
                &n[6],
                &n[7],
                &db.server,
            ];
            tx.execute(&insert, &params).await.map_err(explain)?;
        }
        // One statement per machine, pipelined: sent together, answered together.
        let upsert = tx.prepare_cached(UPSERT_MACHINE).await.map_err(explain)?;
        try_join_all(self.machines.iter().map(|(mac, m)| {
            let params: [&(dyn ToSql + Sync); 14] = [
                mac,
                &m.first_at,
                &m.last_at,
                &m.stage,
                &m.outcome,
                &m.ip,
                &m.rule,
                &m.rule_fallback,
                &m.arch,
                &m.product,
                &m.serial,
                &m.manufacturer,
                &m.uuid,
                &db.server,
            ];
            let (tx, upsert) = (&tx, &upsert);
            async move { tx.execute(upsert, &params).await }
        }))
        .await
        .map_err(explain)?;
        if !self.folds.0.is_empty() {
            let (ids, n, at) = &self.folds;
            tx.execute(FOLD, &[ids, n, at]).await.map_err(explain)?;
        }
        if !self.touches.0.is_empty() {
            let (macs, at) = &self.touches;
            tx.execute(TOUCH, &[macs, at]).await.map_err(explain)?;
        }
        tx.commit().await.map_err(explain)
    }
}

impl EventStore for PgEventWriter {
    fn known_addresses(&self) -> anyhow::Result<Vec<(IpAddr, Mac)>> {
        let db = &self.db;
        let rows = db.block_on(async {
            let c = db.client().await?;
            c.query("SELECT ip, mac FROM machines WHERE ip IS NOT NULL", &[])
                .await
                .map_err(explain)
        })?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let (ip, mac): (String, String) = (r.get(0), r.get(1));
                Some((ip.parse().ok()?, mac.parse().ok()?))
            })
            .collect())
    }

    fn write(&mut self, batch: &mut Vec<Event>, memory: &mut Memory) -> anyhow::Result<()> {
        let db = &self.db;
        let want = i64::try_from(batch.len()).unwrap_or(i64::MAX);
        let ids: Vec<i64> = db.block_on(async {
            let c = db.client().await?;
            let rows = c
                .query(
                    "SELECT nextval('events_id_seq') FROM generate_series(1, $1::bigint)",
                    &[&want],
                )
                .await
                .map_err(explain)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })?;
        let mut sink = PgSink {
            ids: ids.into_iter(),
            ..PgSink::default()
        };
        crate::events::batch_write(batch, memory, &mut sink)?;
        db.block_on(sink.store(db))
    }

    fn prune(&mut self, r: Retention, now: SystemTime) -> anyhow::Result<usize> {
        let cutoff = millis(now.checked_sub(r.keep).unwrap_or(SystemTime::UNIX_EPOCH));
        let max = i64::try_from(r.max_events).unwrap_or(i64::MAX);
        let db = &self.db;
        db.block_on(async {
            let mut c = db.client().await?;
            let tx = c.transaction().await.map_err(explain)?;
            let mut deleted = tx
                .execute("DELETE FROM events WHERE last_at < $1", &[&cutoff])
                .await
                .map_err(explain)?;
            deleted += tx
                .execute(
                    "DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - $1",
                    &[&max],
                )
                .await
                .map_err(explain)?;
            tx.execute("DELETE FROM machines WHERE last_at < $1", &[&cutoff])
                .await
                .map_err(explain)?;
            tx.execute(
                "DELETE FROM machines WHERE mac IN
                   (SELECT mac FROM machines ORDER BY last_at DESC OFFSET $1)",
                &[&max],
            )
            .await
            .map_err(explain)?;
            tx.commit().await.map_err(explain)?;
            Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
        })
    }
}

/// Reads the shared event record.
pub struct PgEventReader(pub Arc<Db>);

const EVENT_COLUMNS: &str =
    "id, at, last_at, count, mac, ip, stage, outcome, rule, arch, product, detail, server";
const MACHINE_COLUMNS: &str =
    "mac, first_at, last_at, stage, outcome, ip, rule, arch, product, serial, manufacturer, uuid";

fn stored(r: &Row) -> StoredEvent {
    StoredEvent {
        id: r.get(0),
        at: from_millis(r.get(1)),
        last_at: from_millis(r.get(2)),
        count: u32::try_from(r.get::<_, i32>(3)).unwrap_or(0),
        mac: r.get(4),
        ip: r.get(5),
        stage: r.get(6),
        outcome: r.get(7),
        rule: r.get(8),
        arch: r.get(9),
        product: r.get(10),
        detail: r.get(11),
        server: r.get(12),
    }
}

/// A machine summary from [`MACHINE_COLUMNS`] at the start of a row.
pub(super) fn machine(r: &Row) -> Machine {
    Machine {
        mac: r.get(0),
        first_at: from_millis(r.get(1)),
        last_at: from_millis(r.get(2)),
        stage: r.get(3),
        outcome: r.get(4),
        ip: r.get(5),
        rule: r.get(6),
        arch: r.get(7),
        product: r.get(8),
        serial: r.get(9),
        manufacturer: r.get(10),
        uuid: r.get(11),
    }
}

#[async_trait::async_trait]
impl EventLog for PgEventReader {
    fn describe(&self) -> String {
        self.0.describe()
    }

    async fn query(&self, q: Query) -> anyhow::Result<Vec<StoredEvent>> {
        let db = &self.0;
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let mac = q.mac.map(|m| m.to_string());
        let since = q.since.map(millis);
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM (SELECT * FROM events
               WHERE ($1::text IS NULL OR mac = $1) AND ($3::bigint IS NULL OR last_at >= $3)
                 AND ($4::bigint IS NULL OR id > $4)
               ORDER BY id DESC LIMIT $2) e
             ORDER BY at, id"
        );
        db.call(async {
            let c = db.client().await?;
            let rows = c
                .query(&sql, &[&mac, &limit, &since, &q.after_id])
                .await
                .map_err(explain)?;
            Ok(rows.iter().map(stored).collect())
        })
        .await
    }

    async fn last_id(&self) -> anyhow::Result<i64> {
        let db = &self.0;
        db.call(async {
            let c = db.client().await?;
            let row = c
                .query_one("SELECT coalesce(max(id), 0)::bigint FROM events", &[])
                .await
                .map_err(explain)?;
            Ok(row.get(0))
        })
        .await
    }

    async fn machines(&self, limit: usize) -> anyhow::Result<Vec<Machine>> {
        let db = &self.0;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!("SELECT {MACHINE_COLUMNS} FROM machines ORDER BY last_at DESC LIMIT $1");
        db.call(async {
            let c = db.client().await?;
            let rows = c.query(&sql, &[&limit]).await.map_err(explain)?;
            Ok(rows.iter().map(machine).collect())
        })
        .await
    }
}
