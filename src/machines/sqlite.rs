//! [`MachineStore`] in SQLite: the `machine_state` table beside the event
//! record's `machines` inventory, in the same file. One connection on a
//! thread of its own runs every statement; callers await the answer, so
//! the tokio runtime never blocks on SQLite (the pattern of the lease
//! committer and the event writer).

use std::path::Path;
use std::sync::mpsc::{channel, Sender};
use std::time::SystemTime;

use rusqlite::{params, Connection, OptionalExtension, Row};
use subtle::ConstantTimeEq;

use super::{Callback, Labels, MachineRecord, MachineStore, OverrideRecord, TOKENS_KEPT};
use crate::core::{Active, BootOverride, Mac};
use crate::events::store::{create_tables, from_millis, millis, BUSY_TIMEOUT};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS machine_state (
    mac TEXT PRIMARY KEY,           -- 52:54:00:12:34:56
    labels TEXT NOT NULL DEFAULT '{}',  -- JSON object of strings
    override_kind TEXT CHECK (override_kind IN ('once', 'until_cleared', 'local')),
    override_rule TEXT,
    override_by TEXT,
    override_at INTEGER,            -- unix milliseconds
    boots INTEGER NOT NULL DEFAULT 0,
    tokens TEXT NOT NULL DEFAULT '' -- per-boot callback tokens, newest last, space-separated
);
";

/// Creates the machine state table if the file lacks it.
pub(crate) fn create_state_table(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The SQLite machine store; cheap to share (it is a channel to its thread).
pub struct SqliteMachines {
    jobs: std::sync::Mutex<Sender<Job>>,
}

impl SqliteMachines {
    /// Opens (creating if needed) the tables in `path` and starts the thread.
    pub fn open(path: &Path) -> anyhow::Result<SqliteMachines> {
        let conn = Connection::open(path)?;
        if conn.is_readonly(rusqlite::MAIN_DB)? {
            anyhow::bail!(
                "{}: the database can only be opened read-only",
                path.display()
            );
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // The inventory table is the event writer's; created here too so
        // that machine state works with `[events] db = ""`.
        create_tables(&conn)?;
        create_state_table(&conn)?;
        let (tx, rx) = channel::<Job>();
        std::thread::Builder::new()
            .name("pxed-machines".into())
            .spawn(move || {
                let mut conn = conn;
                while let Ok(job) = rx.recv() {
                    job(&mut conn);
                }
            })?;
        Ok(SqliteMachines {
            jobs: std::sync::Mutex::new(tx),
        })
    }

    /// Runs `f` on the store's thread and awaits its result.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        crate::sync::lock(&self.jobs)
            .send(job)
            .map_err(|_| anyhow::anyhow!("the machine store's thread is gone"))?;
        Ok(rx
            .await
            .map_err(|_| anyhow::anyhow!("the machine store's thread is gone"))??)
    }
}

/// A machine's override read straight from the file, for commands that run
/// beside the daemon (`pxed explain`); `None` when the file or the table does
/// not exist yet.
pub fn read_override(path: &Path, mac: Mac) -> anyhow::Result<Option<BootOverride>> {
    if !path.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let row = conn.query_row(
        "SELECT override_kind, override_rule FROM machine_state WHERE mac = ?1",
        params![mac.to_string()],
        |r| Ok(boot_override(r.get(0)?, r.get(1)?)),
    );
    match row {
        Ok(o) => Ok(o),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table") => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn override_kind(boot: &BootOverride) -> (&'static str, Option<&str>) {
    match boot {
        BootOverride::Rule { rule, once: true } => ("once", Some(rule)),
        BootOverride::Rule { rule, once: false } => ("until_cleared", Some(rule)),
        BootOverride::Local => ("local", None),
    }
}

pub(crate) fn boot_override(kind: Option<String>, rule: Option<String>) -> Option<BootOverride> {
    match (kind.as_deref()?, rule) {
        ("once", Some(rule)) => Some(BootOverride::Rule { rule, once: true }),
        ("until_cleared", Some(rule)) => Some(BootOverride::Rule { rule, once: false }),
        ("local", _) => Some(BootOverride::Local),
        _ => None,
    }
}

/// The columns every machine query selects: the inventory (NULL for a
/// machine never seen; its MAC first), then the state (NULL for a machine
/// without any).
fn columns() -> String {
    format!(
        "{}, s.labels, s.override_kind, s.override_rule, s.override_by, s.override_at, s.boots",
        crate::events::Machine::COLUMNS
    )
}

/// Clears a machine's override and its tokens.
const CLEAR_OVERRIDE: &str = "UPDATE machine_state SET override_kind = NULL, override_rule = NULL,
    override_by = NULL, override_at = NULL, boots = 0, tokens = '' WHERE mac = ?1";

fn record(r: &Row) -> rusqlite::Result<MachineRecord> {
    let mac = parse_mac(&r.get::<_, String>(0)?)?;
    // Inventory columns are NULL for a machine never seen.
    let seen = match r.get::<_, Option<i64>>(1)? {
        None => None,
        Some(_) => Some(crate::events::Machine::from_row(r)?),
    };
    let labels: Option<String> = r.get(12)?;
    let labels: Labels = labels
        .and_then(|l| serde_json::from_str(&l).ok())
        .unwrap_or_default();
    let boot_override = match boot_override(r.get(13)?, r.get(14)?) {
        None => None,
        Some(boot) => Some(OverrideRecord {
            boot,
            set_by: r.get::<_, Option<String>>(15)?.unwrap_or_default(),
            set_at: from_millis(r.get::<_, Option<i64>>(16)?.unwrap_or(0)),
            boots: r.get::<_, Option<u32>>(17)?.unwrap_or(0),
        }),
    };
    Ok(MachineRecord {
        mac,
        seen,
        labels,
        boot_override,
    })
}

fn parse_mac(s: &str) -> rusqlite::Result<Mac> {
    s.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Deletes a state row that holds nothing any more.
fn tidy(conn: &Connection, mac: &str) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM machine_state WHERE mac = ?1 AND override_kind IS NULL AND labels = '{}'",
        params![mac],
    )?;
    Ok(())
}

pub(crate) fn tokens_of(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

#[async_trait::async_trait]
impl MachineStore for SqliteMachines {
    async fn overrides(&self) -> anyhow::Result<Vec<(Mac, Active)>> {
        self.call(|conn| {
            let mut stmt = conn.prepare(
                "SELECT mac, override_kind, override_rule, tokens FROM machine_state
                 WHERE override_kind IS NOT NULL",
            )?;
            let rows = stmt.query_map([], |r| {
                let mac = parse_mac(&r.get::<_, String>(0)?)?;
                let tokens: String = r.get(3)?;
                let boot = boot_override(r.get(1)?, r.get(2)?);
                let token = tokens_of(&tokens).last().map(|t| t.to_string());
                Ok(boot.map(|boot| (mac, Active { boot, token })))
            })?;
            Ok(rows.filter_map(|r| r.ok().flatten()).collect())
        })
        .await
    }

    async fn list(&self, limit: usize) -> anyhow::Result<Vec<MachineRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |conn| {
            // Machines seen (with their state, if any), then machines with
            // state that were never seen.
            let sql = format!(
                "SELECT {c} FROM machines m LEFT JOIN machine_state s USING (mac)
                 UNION ALL
                 SELECT {c} FROM machine_state s LEFT JOIN machines m USING (mac)
                 WHERE m.first_at IS NULL
                 ORDER BY 3 DESC NULLS LAST, 1 LIMIT ?1",
                c = columns()
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![limit], record)?;
            rows.collect()
        })
        .await
    }

    async fn get(&self, mac: Mac) -> anyhow::Result<Option<MachineRecord>> {
        self.call(move |conn| {
            let sql = format!(
                "SELECT {} FROM (SELECT ?1 AS mac) k
                 LEFT JOIN machines m USING (mac) LEFT JOIN machine_state s USING (mac)
                 WHERE m.first_at IS NOT NULL OR s.labels IS NOT NULL",
                columns()
            );
            conn.query_row(&sql, params![mac.to_string()], record)
                .optional()
        })
        .await
    }

    async fn set_override(
        &self,
        mac: Mac,
        boot: Option<(BootOverride, String)>,
    ) -> anyhow::Result<()> {
        self.call(move |conn| {
            let key = mac.to_string();
            match &boot {
                Some((b, by)) => {
                    let (kind, rule) = override_kind(b);
                    conn.execute(
                        "INSERT INTO machine_state (mac, override_kind, override_rule, override_by, override_at, boots, tokens)
                         VALUES (?1, ?2, ?3, ?4, ?5, 0, '')
                         ON CONFLICT (mac) DO UPDATE SET override_kind = ?2, override_rule = ?3,
                           override_by = ?4, override_at = ?5, boots = 0, tokens = ''",
                        params![key, kind, rule, by, millis(SystemTime::now())],
                    )?;
                }
                None => {
                    conn.execute(CLEAR_OVERRIDE, params![key])?;
                    tidy(conn, &key)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn set_labels(&self, mac: Mac, labels: Labels) -> anyhow::Result<()> {
        let json = serde_json::to_string(&labels)?;
        self.call(move |conn| {
            let key = mac.to_string();
            conn.execute(
                "INSERT INTO machine_state (mac, labels) VALUES (?1, ?2)
                 ON CONFLICT (mac) DO UPDATE SET labels = ?2",
                params![key, json],
            )?;
            tidy(conn, &key)
        })
        .await
    }

    async fn add_token(&self, mac: Mac, token: &str) -> anyhow::Result<bool> {
        let token = token.to_string();
        self.call(move |conn| {
            let key = mac.to_string();
            let tx = conn.transaction()?;
            let tokens: Option<String> = tx
                .query_row(
                    "SELECT tokens FROM machine_state WHERE mac = ?1 AND override_kind = 'once'",
                    params![key],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(tokens) = tokens else {
                return Ok(false);
            };
            let mut kept = tokens_of(&tokens);
            kept.push(&token);
            let kept = kept[kept.len().saturating_sub(TOKENS_KEPT)..].join(" ");
            tx.execute(
                "UPDATE machine_state SET tokens = ?2, boots = boots + 1 WHERE mac = ?1",
                params![key, kept],
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn consume(&self, mac: Mac, token: &str) -> anyhow::Result<Callback> {
        let token = token.to_string();
        self.call(move |conn| {
            let key = mac.to_string();
            let tx = conn.transaction()?;
            let row: Option<(String, Option<String>)> = tx
                .query_row(
                    "SELECT tokens, override_rule FROM machine_state WHERE mac = ?1 AND override_kind = 'once'",
                    params![key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((tokens, Some(rule))) = row else {
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
            tx.execute(CLEAR_OVERRIDE, params![key])?;
            tidy(&tx, &key)?;
            tx.commit()?;
            Ok(Callback::Consumed(BootOverride::Rule { rule, once: true }))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> Mac {
        Mac([0x52, 0x54, 0, 0, 0, n])
    }

    fn once(rule: &str) -> BootOverride {
        BootOverride::Rule {
            rule: rule.into(),
            once: true,
        }
    }

    #[tokio::test]
    async fn overrides_labels_tokens_and_callbacks_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let s = SqliteMachines::open(&path).unwrap();
        assert!(s.list(10).await.unwrap().is_empty());
        assert!(s.get(mac(1)).await.unwrap().is_none());

        s.set_override(mac(1), Some((once("install"), "alice".into())))
            .await
            .unwrap();
        assert!(s.add_token(mac(1), "t1").await.unwrap());
        assert!(s.add_token(mac(1), "t2").await.unwrap());
        let got = s.get(mac(1)).await.unwrap().unwrap();
        let o = got.boot_override.unwrap();
        assert_eq!(
            (o.boot, o.set_by.as_str(), o.boots),
            (once("install"), "alice", 2)
        );
        assert!(got.seen.is_none(), "never booted");
        assert_eq!(
            s.overrides().await.unwrap(),
            vec![(
                mac(1),
                Active {
                    boot: once("install"),
                    token: Some("t2".into())
                }
            )]
        );
        assert_eq!(read_override(&path, mac(1)).unwrap(), Some(once("install")));

        // Only a token of this override consumes it; an older one still does.
        assert_eq!(s.consume(mac(1), "nope").await.unwrap(), Callback::Unknown);
        assert_eq!(s.consume(mac(2), "t1").await.unwrap(), Callback::Unknown);
        assert_eq!(
            s.consume(mac(1), "t1").await.unwrap(),
            Callback::Consumed(once("install"))
        );
        assert_eq!(s.consume(mac(1), "t2").await.unwrap(), Callback::Unknown);
        assert!(
            s.get(mac(1)).await.unwrap().is_none(),
            "nothing left: row tidied"
        );
        assert!(!s.add_token(mac(1), "t3").await.unwrap());

        // Tokens beyond TOKENS_KEPT fall off; "until cleared" takes none.
        s.set_override(mac(3), Some((once("install"), "bob".into())))
            .await
            .unwrap();
        for i in 0..TOKENS_KEPT + 1 {
            s.add_token(mac(3), &format!("k{i}")).await.unwrap();
        }
        assert_eq!(s.consume(mac(3), "k0").await.unwrap(), Callback::Unknown);
        let kept = BootOverride::Rule {
            rule: "x".into(),
            once: false,
        };
        s.set_override(mac(3), Some((kept.clone(), "bob".into())))
            .await
            .unwrap();
        assert!(!s.add_token(mac(3), "k9").await.unwrap());
        assert_eq!(
            s.consume(mac(3), "k4").await.unwrap(),
            Callback::Unknown,
            "tokens reset"
        );

        let labels: Labels = [("rack".to_string(), "r12".to_string())].into();
        s.set_labels(mac(4), labels.clone()).await.unwrap();
        s.set_override(mac(4), Some((BootOverride::Local, "carol".into())))
            .await
            .unwrap();
        s.set_override(mac(4), None).await.unwrap();
        let m4 = s.get(mac(4)).await.unwrap().unwrap();
        assert_eq!((m4.labels, m4.boot_override), (labels, None));
        let all: Vec<Mac> = s
            .list(10)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.mac)
            .collect();
        assert_eq!(all, vec![mac(3), mac(4)]);
    }
}
