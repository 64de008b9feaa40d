//! Machine state in PostgreSQL: the SQLite store's statements
//! (`machines/sqlite.rs`) in PostgreSQL's dialect, plus a version that
//! every write raises, so that each server notices another's change of an
//! override and reloads its snapshot (`machines::refresh`).

use std::sync::Arc;
use std::time::SystemTime;

use subtle::ConstantTimeEq;
use tokio_postgres::Row;

use super::{explain, Db};
use crate::core::{Active, BootOverride, Mac};
use crate::events::store::{from_millis, millis};
use crate::machines::{
    boot_override, override_kind, tokens_of, Callback, Labels, MachineRecord, MachineStore,
    OverrideRecord, TOKENS_KEPT,
};

/// The machine store on the shared database.
pub struct PgMachines {
    db: Arc<Db>,
}

impl PgMachines {
    pub fn new(db: Arc<Db>) -> PgMachines {
        PgMachines { db }
    }
}

/// Inventory columns (NULL for a machine never seen; its MAC first), then
/// the state (NULL for a machine without any).
const COLUMNS: &str = "k.mac, m.first_at, m.last_at, m.stage, m.outcome, m.ip, m.rule, m.arch,
    m.product, m.serial, m.manufacturer, m.uuid,
    s.labels, s.override_kind, s.override_rule, s.override_by, s.override_at, s.boots";

const CLEAR_OVERRIDE: &str = "UPDATE machine_state SET override_kind = NULL, override_rule = NULL,
    override_by = NULL, override_at = NULL, boots = 0, tokens = '' WHERE mac = $1";
const TIDY: &str = "DELETE FROM machine_state
    WHERE mac = $1 AND override_kind IS NULL AND labels = '{}'";
const BUMP: &str = "SELECT nextval('machine_state_version')";

fn record(r: &Row) -> Option<MachineRecord> {
    let mac = r.get::<_, String>(0).parse::<Mac>().ok()?;
    let seen = r
        .get::<_, Option<i64>>(1)
        .map(|_| super::events::machine(r));
    let labels: Labels = r
        .get::<_, Option<String>>(12)
        .and_then(|l| serde_json::from_str(&l).ok())
        .unwrap_or_default();
    let boot_override = boot_override(r.get(13), r.get(14)).map(|boot| OverrideRecord {
        boot,
        set_by: r.get::<_, Option<String>>(15).unwrap_or_default(),
        set_at: from_millis(r.get::<_, Option<i64>>(16).unwrap_or(0)),
        boots: u32::try_from(r.get::<_, Option<i32>>(17).unwrap_or(0)).unwrap_or(0),
    });
    Some(MachineRecord {
        mac,
        seen,
        labels,
        boot_override,
    })
}

#[async_trait::async_trait]
impl MachineStore for PgMachines {
    async fn overrides(&self) -> anyhow::Result<Vec<(Mac, Active)>> {
        let db = &self.db;
        let rows = db
            .call(async {
                let c = db.client().await?;
                c.query(
                    "SELECT mac, override_kind, override_rule, tokens FROM machine_state
                     WHERE override_kind IS NOT NULL",
                    &[],
                )
                .await
                .map_err(explain)
            })
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let mac = r.get::<_, String>(0).parse::<Mac>().ok()?;
                let tokens: String = r.get(3);
                let boot = boot_override(r.get(1), r.get(2))?;
                let token = tokens_of(&tokens).last().map(|t| t.to_string());
                Some((mac, Active { boot, token }))
            })
            .collect())
    }

    async fn list(&self, limit: usize) -> anyhow::Result<Vec<MachineRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {COLUMNS} FROM machines k LEFT JOIN machines m USING (mac)
               LEFT JOIN machine_state s ON s.mac = k.mac
             UNION ALL
             SELECT {COLUMNS} FROM machine_state k LEFT JOIN machines m USING (mac)
               LEFT JOIN machine_state s ON s.mac = k.mac
             WHERE m.first_at IS NULL
             ORDER BY 3 DESC NULLS LAST, 1 LIMIT $1"
        );
        let db = &self.db;
        let rows = db
            .call(async {
                let c = db.client().await?;
                c.query(&sql, &[&limit]).await.map_err(explain)
            })
            .await?;
        Ok(rows.iter().filter_map(record).collect())
    }

    async fn get(&self, mac: Mac) -> anyhow::Result<Option<MachineRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM (SELECT $1::text AS mac) k
               LEFT JOIN machines m USING (mac) LEFT JOIN machine_state s ON s.mac = k.mac
             WHERE m.first_at IS NOT NULL OR s.labels IS NOT NULL"
        );
        let key = mac.to_string();
        let db = &self.db;
        let row = db
            .call(async {
                let c = db.client().await?;
                c.query_opt(&sql, &[&key]).await.map_err(explain)
            })
            .await?;
        Ok(row.as_ref().and_then(record))
    }

    async fn set_override(
        &self,
        mac: Mac,
        boot: Option<(BootOverride, String)>,
    ) -> anyhow::Result<()> {
        let key = mac.to_string();
        let db = &self.db;
        db.call(async {
            let mut c = db.client().await?;
            let tx = c.transaction().await.map_err(explain)?;
            match &boot {
                Some((b, by)) => {
                    let (kind, rule) = override_kind(b);
                    tx.execute(
                        "INSERT INTO machine_state (mac, override_kind, override_rule, override_by, override_at, boots, tokens)
                         VALUES ($1, $2, $3, $4, $5, 0, '')
                         ON CONFLICT (mac) DO UPDATE SET override_kind = $2, override_rule = $3,
                           override_by = $4, override_at = $5, boots = 0, tokens = ''",
                        &[&key, &kind, &rule, by, &millis(SystemTime::now())],
                    )
                    .await
                    .map_err(explain)?;
                }
                None => {
                    tx.execute(CLEAR_OVERRIDE, &[&key]).await.map_err(explain)?;
                    tx.execute(TIDY, &[&key]).await.map_err(explain)?;
                }
            }
            tx.query_one(BUMP, &[]).await.map_err(explain)?;
            tx.commit().await.map_err(explain)
        })
        .await
    }

    async fn set_labels(&self, mac: Mac, labels: Labels) -> anyhow::Result<()> {
        let json = serde_json::to_string(&labels)?;
        let key = mac.to_string();
        let db = &self.db;
        db.call(async {
            let mut c = db.client().await?;
            let tx = c.transaction().await.map_err(explain)?;
            tx.execute(
                "INSERT INTO machine_state (mac, labels) VALUES ($1, $2)
                 ON CONFLICT (mac) DO UPDATE SET labels = $2",
                &[&key, &json],
            )
            .await
            .map_err(explain)?;
            tx.execute(TIDY, &[&key]).await.map_err(explain)?;
            tx.commit().await.map_err(explain)
        })
        .await
    }

    async fn add_token(&self, mac: Mac, token: &str) -> anyhow::Result<bool> {
        let key = mac.to_string();
        let db = &self.db;
        db.call(async {
            let mut c = db.client().await?;
            let tx = c.transaction().await.map_err(explain)?;
            let row = tx
                .query_opt(
                    "SELECT tokens FROM machine_state WHERE mac = $1 AND override_kind = 'once' FOR UPDATE",
                    &[&key],
                )
                .await
                .map_err(explain)?;
            let Some(row) = row else {
                return Ok(false);
            };
            let tokens: String = row.get(0);
            let mut kept = tokens_of(&tokens);
            kept.push(token);
            let kept = kept[kept.len().saturating_sub(TOKENS_KEPT)..].join(" ");
            tx.execute(
                "UPDATE machine_state SET tokens = $2, boots = boots + 1 WHERE mac = $1",
                &[&key, &kept],
            )
            .await
            .map_err(explain)?;
            tx.query_one(BUMP, &[]).await.map_err(explain)?;
            tx.commit().await.map_err(explain)?;
            Ok(true)
        })
        .await
    }

    async fn consume(&self, mac: Mac, token: &str) -> anyhow::Result<Callback> {
        let key = mac.to_string();
        let db = &self.db;
        db.call(async {
            let mut c = db.client().await?;
            let tx = c.transaction().await.map_err(explain)?;
            let row = tx
                .query_opt(
                    "SELECT tokens, override_rule FROM machine_state
                     WHERE mac = $1 AND override_kind = 'once' FOR UPDATE",
                    &[&key],
                )
                .await
                .map_err(explain)?;
            let Some((tokens, Some(rule))) =
                row.map(|r| (r.get::<_, String>(0), r.get::<_, Option<String>>(1)))
            else {
                return Ok(Callback::Unknown);
            };
            // Every stored token is compared, in constant time each.
            let matched = tokens_of(&tokens)
                .iter()
                .fold(subtle::Choice::from(0), |acc, t| {
                    acc | t.as_bytes().ct_eq(token.as_bytes())
                });
            if !bool::from(matched) {
                return Ok(Callback::Unknown);
            }
            tx.execute(CLEAR_OVERRIDE, &[&key]).await.map_err(explain)?;
            tx.execute(TIDY, &[&key]).await.map_err(explain)?;
            tx.query_one(BUMP, &[]).await.map_err(explain)?;
            tx.commit().await.map_err(explain)?;
            Ok(Callback::Consumed(BootOverride::Rule { rule, once: true }))
        })
        .await
    }

    async fn version(&self) -> anyhow::Result<Option<i64>> {
        let db = &self.db;
        db.call(async {
            let c = db.client().await?;
            let row = c
                .query_one("SELECT last_value FROM machine_state_version", &[])
                .await
                .map_err(explain)?;
            Ok(Some(row.get(0)))
        })
        .await
    }
}
