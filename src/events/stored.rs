//! What the event record holds, as its readers see it: one step
//! ([`StoredEvent`]), one machine's summary ([`Machine`]), and which steps a
//! reader asks for ([`Query`]). The same for every backend.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::core::Mac;

/// A time as stored: unix milliseconds.
pub(crate) fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// One stored step, as `pxed events` and the timeline show it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Increases with every new row (`pxed events --follow` reads past it).
    pub id: i64,
    pub at: SystemTime,
    pub last_at: SystemTime,
    pub count: u32,
    pub mac: Option<String>,
    pub ip: Option<String>,
    pub stage: String,
    pub outcome: String,
    pub rule: Option<String>,
    pub arch: Option<String>,
    pub product: Option<String>,
    pub detail: String,
    /// The server that handled the step (`[server] name`); `None` in rows
    /// recorded before servers were named.
    pub server: Option<String>,
}

impl StoredEvent {
    /// One `pxed events --json` line: times in RFC 3339, absent values
    /// left out.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "id": self.id,
            "at": humantime::format_rfc3339_millis(self.at).to_string(),
            "stage": self.stage,
            "outcome": self.outcome,
            "detail": self.detail,
            "count": self.count,
        });
        if self.count > 1 {
            v["last_at"] = humantime::format_rfc3339_millis(self.last_at)
                .to_string()
                .into();
        }
        for (key, value) in [
            ("mac", &self.mac),
            ("ip", &self.ip),
            ("rule", &self.rule),
            ("arch", &self.arch),
            ("product", &self.product),
            ("server", &self.server),
        ] {
            if let Some(value) = value {
                v[key] = value.clone().into();
            }
        }
        v
    }
}

impl fmt::Display for StoredEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        write!(
            f,
            "{}  {:17}  {:15}  {:9}  {:9}  {}",
            humantime::format_rfc3339_millis(self.at),
            dash(&self.mac),
            dash(&self.ip),
            self.stage,
            self.outcome,
            self.detail
        )?;
        if let Some(rule) = &self.rule {
            write!(f, "  rule={rule}")?;
        }
        if let Some(arch) = &self.arch {
            write!(f, "  arch={arch}")?;
        }
        if let Some(product) = &self.product {
            write!(f, "  product={product:?}")?;
        }
        if let Some(server) = &self.server {
            write!(f, "  server={server}")?;
        }
        if self.count > 1 {
            write!(
                f,
                "  (x{}, last {})",
                self.count,
                humantime::format_rfc3339_millis(self.last_at)
            )?;
        }
        Ok(())
    }
}

/// One machine's summary, for the machines page.
#[derive(Debug, Clone)]
pub struct Machine {
    pub mac: String,
    pub first_at: SystemTime,
    pub last_at: SystemTime,
    pub stage: String,
    pub outcome: String,
    pub ip: Option<String>,
    pub rule: Option<String>,
    pub arch: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
    pub manufacturer: Option<String>,
    pub uuid: Option<String>,
}

/// Which events [`Reader::query`] returns.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only this machine's.
    pub mac: Option<Mac>,
    /// The newest this many.
    pub limit: usize,
    /// Only those last seen at or after this time.
    pub since: Option<SystemTime>,
    /// Only rows recorded after this one.
    pub after_id: Option<i64>,
}

impl Machine {
    pub(crate) const COLUMNS: &'static str =
        "mac, m.first_at, m.last_at, m.stage, m.outcome, m.ip, m.rule, m.arch, m.product, m.serial, m.manufacturer, m.uuid";

    /// From the columns of [`Machine::COLUMNS`], in that order, at the start
    /// of a row.
    pub(crate) fn from_row(r: &rusqlite::Row) -> rusqlite::Result<Machine> {
        Ok(Machine {
            mac: r.get(0)?,
            first_at: from_millis(r.get(1)?),
            last_at: from_millis(r.get(2)?),
            stage: r.get(3)?,
            outcome: r.get(4)?,
            ip: r.get(5)?,
            rule: r.get(6)?,
            arch: r.get(7)?,
            product: r.get(8)?,
            serial: r.get(9)?,
            manufacturer: r.get(10)?,
            uuid: r.get(11)?,
        })
    }
}
