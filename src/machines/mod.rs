//! Per-machine state beyond `machines.toml`: the inventory of every machine
//! seen (from the boot-event record), operator labels, and the boot override
//! ([`BootOverride`]: a rule once, a rule until cleared, or the local disk).
//!
//! State lives behind [`MachineStore`] (SQLite, in the boot-event database
//! file, `pxed-events.sqlite` by default; or PostgreSQL) and is
//! changed only through [`Machines`], which records every write as a boot
//! event with who made it, and keeps an in-memory snapshot of every override
//! that the adapters read lock-free on each request ([`lookup`]): a boot never
//! waits for the database, except a one-shot override's boot, which waits for
//! its callback token to be stored ([`Machines::begin_boot`]).
//!
//! A one-shot override is consumed by the installer's callback: each boot of
//! it gets a fresh, unguessable token in its callback URL (see
//! `core::lifecycle`), and only a token of that override clears it. Process
//! wide, like events and metrics: started once by `pxed serve`.

mod sqlite;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::core::{Active, BootOverride, Mac, Overrides};
use crate::events::{self, Event, Machine as Seen, Stage};

pub(crate) use sqlite::{boot_override, create_state_table, override_kind, tokens_of};
pub use sqlite::{read_override, SqliteMachines};

/// Per-boot callback tokens kept per one-shot override; older ones stop
/// working (a machine that booted the installer five times only reports
/// from the newest boots).
pub const TOKENS_KEPT: usize = 4;

/// Operator labels: short keys, short values.
pub type Labels = BTreeMap<String, String>;

/// A machine's override with who set it and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideRecord {
    pub boot: BootOverride,
    /// The API token's name (or `web:<name>` from the admin page).
    pub set_by: String,
    pub set_at: SystemTime,
    /// Boots served under this override so far (tokens minted).
    pub boots: u32,
}

/// Everything pxed knows about one machine.
#[derive(Debug, Clone)]
pub struct MachineRecord {
    pub mac: Mac,
    /// From the boot-event record; `None` for a machine never seen (an
    /// override can be set before its first boot).
    pub seen: Option<Seen>,
    pub labels: Labels,
    pub boot_override: Option<OverrideRecord>,
}

/// What a callback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callback {
    /// The one-shot override was cleared.
    Consumed(BootOverride),
    /// No one-shot override has this token (already consumed, cleared,
    /// replaced, or never minted).
    Unknown,
}

/// Durable machine state. Implementations must not block the caller's
/// runtime (SQLite runs its statements on a thread of its own).
#[async_trait::async_trait]
pub trait MachineStore: Send + Sync {
    /// Every machine's override, with the newest token of one-shot ones.
    async fn overrides(&self) -> anyhow::Result<Vec<(Mac, Active)>>;
    /// Machines seen or with state, most recently seen first.
    async fn list(&self, limit: usize) -> anyhow::Result<Vec<MachineRecord>>;
    async fn get(&self, mac: Mac) -> anyhow::Result<Option<MachineRecord>>;
    /// Sets (`Some`, with who) or clears (`None`) the override; a new
    /// override starts without tokens.
    async fn set_override(
        &self,
        mac: Mac,
        boot: Option<(BootOverride, String)>,
    ) -> anyhow::Result<()>;
    async fn set_labels(&self, mac: Mac, labels: Labels) -> anyhow::Result<()>;
    /// Adds a per-boot token to the machine's one-shot override (keeping the
    /// newest [`TOKENS_KEPT`]); false if it has none any more.
    async fn add_token(&self, mac: Mac, token: &str) -> anyhow::Result<bool>;
    /// Clears the one-shot override if `token` is one of its tokens
    /// (compared in constant time).
    async fn consume(&self, mac: Mac, token: &str) -> anyhow::Result<Callback>;
    /// A number every write of any server raises, for a store several
    /// servers share: a change means the overrides must be read again.
    /// `None`: one server, whose snapshot is always current.
    async fn version(&self) -> anyhow::Result<Option<i64>> {
        Ok(None)
    }
}

/// The machine state of a running pxed: the store and the override snapshot.
pub struct Machines {
    store: Box<dyn MachineStore>,
    snapshot: ArcSwap<Overrides>,
    /// One write at a time, so a snapshot is never rebuilt from a stale one.
    writes: tokio::sync::Mutex<()>,
}

static MACHINES: OnceLock<Machines> = OnceLock::new();

/// The running machine state, once [`start`] succeeded.
pub fn get() -> Option<&'static Machines> {
    MACHINES.get()
}

/// The override of `mac`, if it has one (lock-free; nothing when machine
/// state is not running).
pub fn lookup(mac: Mac) -> Option<Active> {
    let m = MACHINES.get()?;
    let snapshot = m.snapshot.load();
    if snapshot.is_empty() {
        return None;
    }
    snapshot.get(&mac).cloned()
}

/// The override `mac` boots under now, if any: for a one-shot override,
/// with this boot's callback token, minted and stored first (`Ok(None)` if
/// it was consumed meanwhile; `Err`, a sentence for the console, when the
/// token could not be stored: the machine then waits and retries rather than
/// install with no way to report back). The HTTP script and menu endpoints
/// and GRUB's config over TFTP call this.
pub async fn for_boot(mac: Mac) -> Result<Option<Active>, String> {
    let Some(active) = lookup(mac) else {
        return Ok(None);
    };
    let Some(m) = get().filter(|_| active.boot.is_once()) else {
        return Ok(Some(active));
    };
    m.begin_boot(mac).await.map_err(|e| {
        tracing::error!(%mac, error = %format!("{e:#}"), "cannot store the callback token of a one-shot override");
        "cannot store this boot's install callback token; see the pxed log".to_string()
    })
}

/// Whether any machine has an override (adapters skip looking otherwise).
pub fn any() -> bool {
    MACHINES
        .get()
        .is_some_and(|m| !m.snapshot.load().is_empty())
}

/// Where machine state is stored: the boot-event database (by default the
/// lease database), or the lease database when events are off.
pub fn db_path(config: &Config) -> PathBuf {
    config
        .events
        .db
        .clone()
        .unwrap_or_else(|| config.dhcp.lease_db.clone())
}

/// Loads every override from `store` (at `db`, for the log). Once per
/// process. A store several servers share (`shared`) is followed for the
/// other servers' changes, and may be unreachable at start: the snapshot
/// starts empty and is filled once it answers.
pub async fn start(store: Box<dyn MachineStore>, db: String, shared: bool) -> anyhow::Result<()> {
    let machines = match Machines::new(store).await {
        Ok(m) => m,
        Err((store, e)) if shared => {
            tracing::error!("{e:#}; overrides are read once the database answers");
            Machines::with(store, Overrides::default())
        }
        Err((_, e)) => return Err(e),
    };
    let count = machines.snapshot.load().len();
    if MACHINES.set(machines).is_err() {
        anyhow::bail!("machine state is already running");
    }
    tracing::info!(db, overrides = count, "machine state");
    if shared {
        tokio::spawn(follow());
    }
    Ok(())
}

/// How often a server looks for the other servers' changes of state.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Reloads the override snapshot whenever the store's version moves (an
/// override set, cleared or consumed through another server).
async fn follow() {
    let Some(m) = MACHINES.get() else { return };
    // `None` until read: the first version read reloads (the snapshot may
    // have started empty, with the database unreachable).
    let mut seen = None;
    let mut tick = tokio::time::interval(FOLLOW_EVERY);
    loop {
        tick.tick().await;
        let Ok(Some(now)) = m.store.version().await else {
            continue;
        };
        let now = Some(now);
        if now == seen {
            continue;
        }
        let _one = m.writes.lock().await;
        match m.store.overrides().await {
            Ok(all) => {
                m.snapshot.store(Arc::new(all.into_iter().collect()));
                seen = now;
            }
            Err(e) => tracing::debug!(error = format!("{e:#}"), "cannot reload the overrides"),
        }
    }
}

/// A fresh callback token: 128 bits from the OS, as 32 hex digits.
pub fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Machines {
    /// The store with its overrides loaded (or the store back, and why not).
    pub async fn new(
        store: Box<dyn MachineStore>,
    ) -> Result<Machines, (Box<dyn MachineStore>, anyhow::Error)> {
        match store.overrides().await {
            Ok(all) => Ok(Machines::with(store, all.into_iter().collect())),
            Err(e) => Err((store, e)),
        }
    }

    fn with(store: Box<dyn MachineStore>, overrides: Overrides) -> Machines {
        Machines {
            store,
            snapshot: ArcSwap::from_pointee(overrides),
            writes: tokio::sync::Mutex::new(()),
        }
    }

    pub async fn list(&self, limit: usize) -> anyhow::Result<Vec<MachineRecord>> {
        self.store.list(limit).await
    }

    pub async fn get(&self, mac: Mac) -> anyhow::Result<Option<MachineRecord>> {
        self.store.get(mac).await
    }

    /// Replaces one machine's entry in the snapshot.
    fn publish(&self, mac: Mac, active: Option<Active>) {
        let mut next = Overrides::clone(&self.snapshot.load());
        match active {
            Some(a) => next.insert(mac, a),
            None => next.remove(&mac),
        };
        self.snapshot.store(Arc::new(next));
    }

    /// Sets or clears (`None`) a machine's override on behalf of `actor`.
    pub async fn set_override(
        &self,
        mac: Mac,
        boot: Option<BootOverride>,
        actor: &str,
    ) -> anyhow::Result<()> {
        let _one = self.writes.lock().await;
        self.store
            .set_override(mac, boot.clone().map(|b| (b, actor.to_string())))
            .await?;
        let detail = match &boot {
            Some(b) => format!("override set: {b} (by {actor})"),
            None => format!("override cleared (by {actor})"),
        };
        self.publish(mac, boot.map(|boot| Active { boot, token: None }));
        tracing::info!(%mac, actor, "{detail}");
        events::record_with(|| Event::new(Stage::Api, "ok", detail).mac(Some(mac)));
        Ok(())
    }

    pub async fn set_labels(&self, mac: Mac, labels: Labels, actor: &str) -> anyhow::Result<()> {
        let _one = self.writes.lock().await;
        let shown: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.store.set_labels(mac, labels).await?;
        let detail = format!("labels set: [{}] (by {actor})", shown.join(", "));
        tracing::info!(%mac, actor, "{detail}");
        events::record_with(|| Event::new(Stage::Api, "ok", detail).mac(Some(mac)));
        Ok(())
    }

    /// Called before a one-shot override's script is rendered: mints this
    /// boot's callback token and stores it, so the installer can report
    /// back even if pxed restarts meanwhile. Returns the override to render
    /// with (its token set), or `None` when it is gone.
    pub async fn begin_boot(&self, mac: Mac) -> anyhow::Result<Option<Active>> {
        let _one = self.writes.lock().await;
        let Some(current) = self.snapshot.load().get(&mac).cloned() else {
            return Ok(None);
        };
        if !current.boot.is_once() {
            return Ok(Some(current));
        }
        let token = new_token()?;
        if !self.store.add_token(mac, &token).await? {
            return Ok(None);
        }
        let active = Active {
            boot: current.boot,
            token: Some(token),
        };
        self.publish(mac, Some(active.clone()));
        Ok(Some(active))
    }

    /// The installer's callback: consumes the one-shot override that minted
    /// `token`.
    pub async fn callback(&self, mac: Mac, token: &str) -> anyhow::Result<Callback> {
        let _one = self.writes.lock().await;
        let result = self.store.consume(mac, token).await?;
        if let Callback::Consumed(boot) = &result {
            self.publish(mac, None);
            let detail = format!("installer called back: override {boot} consumed");
            tracing::info!(%mac, "{detail}");
            events::record_with(|| Event::new(Stage::Callback, "ok", detail).mac(Some(mac)));
        }
        Ok(result)
    }
}
