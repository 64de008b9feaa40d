//! Boot events: each step of a machine's boot (DHCP reply and the decision in
//! it, TFTP file sent or failed, boot.ipxe, script or menu rendered with the
//! rule that matched, asset fetched) with time, MAC, IP, identity and outcome,
//! kept in SQLite with a retention limit, for `pxed events` and the admin
//! machines page.
//!
//! Recording never slows or fails a boot: adapters hand an [`Event`] to a
//! bounded queue ([`record`]); one writer thread stores them in batches and
//! drops what does not fit (counted in `pxed_events_dropped_total`). Like
//! metrics, recording is process-wide and optional: nothing breaks when it is
//! off. The writer also fills in the MAC of steps that only know an address
//! (TFTP and asset fetches) from the steps that knew both, and folds a step
//! repeated within a minute (a boot loop, a benchmark) into one row with a
//! count, so a fast loop cannot flood the database.

mod batch;
mod log;
pub mod repeats;
pub mod store;
mod stored;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;

use crate::config::EventsConfig;
use crate::core::{Arch, Mac};
pub(crate) use batch::{write as batch_write, MachineUpdate, Sink};
pub use log::{EventLog, SqliteLog};
pub use store::{ReadError, Reader};
pub use stored::{Machine, Query, StoredEvent};

/// The steps of a network boot, in the order a machine goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Dhcp,
    Tftp,
    Bootstrap,
    Script,
    Menu,
    Asset,
    /// An installer fetched its config (`/config/…`).
    Config,
    /// An installer reported that it finished (one-shot override consumed).
    Callback,
    /// An operator changed the machine's state (API, CLI, admin page): not
    /// a step of the machine itself, so its inventory row does not change.
    Api,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Dhcp => "dhcp",
            Stage::Tftp => "tftp",
            Stage::Bootstrap => "boot.ipxe",
            Stage::Script => "script",
            Stage::Menu => "menu",
            Stage::Asset => "asset",
            Stage::Config => "config",
            Stage::Callback => "callback",
            Stage::Api => "api",
        }
    }

    /// Whether this step chose the machine's rule with its full identity
    /// (DHCP only knows MAC and arch).
    /// Whether the machine itself took this step (it was seen).
    pub(crate) fn by_machine(self) -> bool {
        self != Stage::Api
    }

    pub(crate) fn decides_rule(self) -> bool {
        matches!(self, Stage::Script | Stage::Menu)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One step of one machine's boot.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at: SystemTime,
    pub mac: Option<Mac>,
    /// The machine's address (for DHCP: the address it was given).
    pub ip: Option<IpAddr>,
    pub stage: Stage,
    /// `ok`, or what went wrong: `not_found`, `timed_out`, `ignored`, …
    pub outcome: &'static str,
    pub rule: Option<String>,
    pub arch: Option<Arch>,
    /// Sanitised (`ClientString::safe`): shown in HTML and terminals.
    pub product: Option<String>,
    /// What happened, in words: `request → ack 10.0.0.5, boot undionly.kpxe`.
    pub detail: String,
    /// The rest of the SMBIOS identity, when the step knew it (the script
    /// request): kept in the machine inventory, not in each event.
    pub smbios: Option<Box<Smbios>>,
}

/// SMBIOS fields beyond the product, sanitised like it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Smbios {
    pub serial: Option<String>,
    pub manufacturer: Option<String>,
    pub uuid: Option<String>,
}

impl Event {
    pub fn new(stage: Stage, outcome: &'static str, detail: impl Into<String>) -> Event {
        Event {
            at: SystemTime::now(),
            mac: None,
            ip: None,
            stage,
            outcome,
            rule: None,
            arch: None,
            product: None,
            detail: detail.into(),
            smbios: None,
        }
    }

    pub fn mac(mut self, mac: Option<Mac>) -> Event {
        self.mac = mac;
        self
    }

    pub fn ip(mut self, ip: impl Into<Option<IpAddr>>) -> Event {
        self.ip = ip
            .into()
            .map(|ip| ip.to_canonical())
            .filter(|ip| !ip.is_unspecified());
        self
    }

    pub fn rule(mut self, rule: Option<&str>) -> Event {
        self.rule = rule.map(str::to_string);
        self
    }

    pub fn arch(mut self, arch: Option<Arch>) -> Event {
        self.arch = arch;
        self
    }

    /// Replaces the outcome and the words (for an event built before the
    /// outcome was known).
    pub fn outcome(mut self, outcome: &'static str, detail: impl Into<String>) -> Event {
        self.outcome = outcome;
        self.detail = detail.into();
        self
    }

    /// The machine's whole identity as it reported it: product, serial,
    /// manufacturer, UUID and arch.
    pub fn identity(mut self, id: &crate::core::Identity) -> Event {
        self.product = id.product.as_ref().map(|p| p.safe());
        self.arch = id.arch;
        let smbios = Smbios {
            serial: id.serial.as_ref().map(|s| s.safe()),
            manufacturer: id.manufacturer.as_ref().map(|s| s.safe()),
            uuid: id.uuid.as_ref().map(|u| u.to_string()),
        };
        if smbios != Smbios::default() {
            self.smbios = Some(Box::new(smbios));
        }
        self
    }

    pub fn product(mut self, product: Option<String>) -> Event {
        self.product = product;
        self
    }
}

/// Events waiting for the writer; past this they are dropped and counted.
const QUEUE: usize = 16_384;
/// How long the writer gathers events before storing them: a few commits a
/// second however busy it is (a commit per event cost more than the render
/// it recorded), and still on screen well within a second.
const GATHER: Duration = Duration::from_millis(100);
/// Most events stored in one transaction.
const BATCH: usize = 1024;
/// A step that repeats the previous one of the same machine within this
/// window is counted on the earlier row instead of stored again.
const FOLD_WINDOW: Duration = Duration::from_secs(60);
/// Machines remembered for folding and for address → MAC; past this the
/// tables start over (a random-MAC flood must not grow memory).
const MEMORY_LIMIT: usize = 65_536;
/// How often old events are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

static QUEUE_TX: OnceLock<SyncSender<Event>> = OnceLock::new();
static LOG: OnceLock<Box<dyn EventLog>> = OnceLock::new();

/// The record events are being written to, once [`start`] succeeded.
pub fn log() -> Option<&'static dyn EventLog> {
    LOG.get().map(|l| &**l)
}

/// Whether events are being recorded (adapters skip building them if not).
pub fn enabled() -> bool {
    QUEUE_TX.get().is_some()
}

/// Queues an event for the writer; never blocks.
pub fn record(event: Event) {
    if let Some(tx) = QUEUE_TX.get() {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(event) {
            crate::metrics::get().events_dropped("queue_full", 1);
        }
    }
}

/// Builds and queues an event only when recording is on.
pub fn record_with(event: impl FnOnce() -> Event) {
    if enabled() {
        record(event());
    }
}

/// Where the writer thread keeps boot events: SQLite ([`store::Writer`])
/// today, and the seam a networked backend (PostgreSQL) implements. Called
/// on the writer thread only (`pxed-events`), never on the async runtime, so
/// a backend may block for a round trip. Batches are already grouped (up to
/// [`BATCH`] events, gathered for 100 ms). A failed write drops that batch
/// and counts it (`pxed_events_dropped_total{reason="store_failed"}`):
/// events are a record, not a promise, unlike leases.
pub trait EventStore: Send {
    /// The last address each machine was seen at, so that a TFTP or asset
    /// step that knows only an address is attributed after a restart.
    fn known_addresses(&self) -> anyhow::Result<Vec<(IpAddr, Mac)>>;
    /// Stores a batch; repeats of a recent step (see [`Memory::repeat_of`])
    /// only raise the count of their earlier row.
    fn write(&mut self, batch: &mut Vec<Event>, memory: &mut Memory) -> anyhow::Result<()>;
    /// Deletes what retention no longer keeps; returns how many rows.
    fn prune(&mut self, retention: Retention, now: SystemTime) -> anyhow::Result<usize>;
}

/// The SQLite writer of `path`, tagging steps with `server`.
pub fn sqlite_store(path: &std::path::Path, server: &str) -> anyhow::Result<Box<dyn EventStore>> {
    let writer = store::Writer::open(path)
        .with_context(|| format!("cannot open the event database {}", path.display()))?;
    Ok(Box::new(SqliteEvents {
        writer,
        server: server.to_string(),
    }))
}

/// The SQLite writer, with the name it tags steps with.
struct SqliteEvents {
    writer: store::Writer,
    server: String,
}

impl EventStore for SqliteEvents {
    fn known_addresses(&self) -> anyhow::Result<Vec<(IpAddr, Mac)>> {
        Ok(self.writer.known_addresses()?)
    }

    fn write(&mut self, batch: &mut Vec<Event>, memory: &mut Memory) -> anyhow::Result<()> {
        self.writer.write(batch, memory, &self.server)
    }

    fn prune(&mut self, retention: Retention, now: SystemTime) -> anyhow::Result<usize> {
        Ok(self.writer.prune(retention, now)?)
    }
}

/// The writing side of the record: a store and what the writer remembers
/// between batches. The writer thread owns one; so can a test.
pub struct Recorder {
    store: Box<dyn EventStore>,
    memory: Memory,
}

impl Recorder {
    pub fn new(store: Box<dyn EventStore>) -> Recorder {
        Recorder {
            store,
            memory: Memory::default(),
        }
    }

    /// Learns each machine's last address from the record (so that steps
    /// that only know an address are attributed after a restart). Blocks.
    pub fn recall_addresses(&mut self) {
        if let Ok(known) = self.store.known_addresses() {
            self.memory.macs.extend(known);
        }
    }

    /// Stores one batch (emptied): MACs filled in from addresses, repeats
    /// folded. Blocks.
    pub fn write(&mut self, batch: &mut Vec<Event>) -> anyhow::Result<()> {
        for e in batch.iter_mut() {
            self.memory.attribute(e);
        }
        self.store.write(batch, &mut self.memory)
    }

    /// Deletes what `retention` no longer keeps. Blocks.
    pub fn prune(&mut self, retention: Retention, now: SystemTime) -> anyhow::Result<usize> {
        self.store.prune(retention, now)
    }
}

/// Starts the writer thread on `store`, and readers on `log`. Once per
/// process (`crate::storage` opens both).
pub fn start(
    events: &EventsConfig,
    store: Box<dyn EventStore>,
    log: Box<dyn EventLog>,
) -> anyhow::Result<()> {
    let recorder = Recorder::new(store);
    let retention = Retention {
        keep: Duration::from_secs(u64::from(events.keep_days) * 86_400),
        max_events: events.max_events,
    };
    let (tx, rx) = sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("pxed-events".into())
        .spawn(move || {
            let mut recorder = recorder;
            recorder.recall_addresses();
            run(recorder, rx, retention)
        })
        .context("event writer thread")?;
    if QUEUE_TX.set(tx).is_err() {
        anyhow::bail!("the event recorder is already running");
    }
    tracing::info!(db = %log.describe(), keep_days = events.keep_days, max_events = events.max_events, "recording boot events");
    let _ = LOG.set(log);
    Ok(())
}

#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub keep: Duration,
    pub max_events: u64,
}

/// What the writer remembers between batches.
#[derive(Default)]
pub struct Memory {
    /// Which machine has which address, learnt from steps that know both.
    macs: HashMap<IpAddr, Mac>,
    /// Each machine's last stored step, for folding repeats: its row, its
    /// time and a hash of what a repeat must match (not the event itself:
    /// at the 65,536-machine cap whole events were ~20 MB).
    last: HashMap<Key, LastStep>,
}

#[derive(Debug, Clone, Copy)]
struct LastStep {
    id: i64,
    at: SystemTime,
    print: u64,
}

/// What two steps must share for the second to fold into the first. A
/// 64-bit hash: two different steps of one machine within a minute collide
/// with odds of 2^-64.
fn fold_print(e: &Event) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (e.stage.name(), e.outcome, e.ip, &e.rule, &e.detail).hash(&mut h);
    h.finish()
}

/// A machine as far as one step knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Mac(Mac),
    Ip(IpAddr),
}

impl Memory {
    fn attribute(&mut self, e: &mut Event) {
        match (e.mac, e.ip) {
            (Some(mac), Some(ip)) => {
                if self.macs.len() >= MEMORY_LIMIT {
                    self.macs.clear();
                }
                self.macs.insert(ip, mac);
            }
            (None, Some(ip)) => e.mac = self.macs.get(&ip).copied(),
            _ => {}
        }
    }

    /// The row `e` repeats, if it does.
    fn repeat_of(&self, e: &Event) -> Option<i64> {
        let last = self.last.get(&key(e)?)?;
        let same = last.print == fold_print(e);
        let recent = e.at.duration_since(last.at).is_ok_and(|d| d < FOLD_WINDOW);
        (same && recent).then_some(last.id)
    }

    fn remember(&mut self, id: i64, e: &Event) {
        if let Some(k) = key(e) {
            if self.last.len() >= MEMORY_LIMIT {
                self.last.clear();
            }
            let step = LastStep {
                id,
                at: e.at,
                print: fold_print(e),
            };
            self.last.insert(k, step);
        }
    }
}

fn key(e: &Event) -> Option<Key> {
    e.mac.map(Key::Mac).or(e.ip.map(Key::Ip))
}

fn run(mut recorder: Recorder, rx: Receiver<Event>, retention: Retention) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut pruned = Instant::now();
    let mut outage = Outage::default();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        // Sleep rather than wait on the queue: a sender wakes a waiting
        // receiver (a futex wake and a context switch per event, which under
        // load cost more than the event itself); a sleeping one it does not.
        std::thread::sleep(GATHER);
        loop {
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            let drained = batch.len() < BATCH;
            let n = batch.len();
            match recorder.write(&mut batch) {
                Ok(()) => outage.ended(),
                Err(e) => {
                    crate::metrics::get().events_dropped("store_failed", n);
                    outage.failed(n, &e);
                }
            }
            batch.clear();
            if drained {
                break;
            }
        }
        if pruned.elapsed() >= PRUNE_EVERY {
            pruned = Instant::now();
            if let Err(e) = recorder.prune(retention, SystemTime::now()) {
                tracing::warn!(error = %e, "cannot delete old boot events");
            }
        }
    }
}

/// A run of failed writes: one line when it starts, one when it ends
/// (an unreachable database would otherwise log ten lines a second).
#[derive(Default)]
struct Outage {
    dropped: Option<usize>,
}

impl Outage {
    fn failed(&mut self, n: usize, e: &anyhow::Error) {
        match &mut self.dropped {
            Some(d) => *d += n,
            None => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "cannot store boot events; dropping them until the database takes writes again"
                );
                self.dropped = Some(n);
            }
        }
    }

    fn ended(&mut self) {
        if let Some(dropped) = self.dropped.take() {
            tracing::warn!(dropped, "boot events are stored again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> Mac {
        format!("52:54:00:00:00:{n:02x}").parse().unwrap()
    }

    #[test]
    fn steps_that_know_only_an_address_get_the_machine_that_had_it() {
        let mut m = Memory::default();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let mut ack = Event::new(Stage::Dhcp, "ok", "ack")
            .mac(Some(mac(1)))
            .ip(ip);
        m.attribute(&mut ack);
        let mut tftp = Event::new(Stage::Tftp, "ok", "undionly.kpxe").ip(ip);
        m.attribute(&mut tftp);
        assert_eq!(tftp.mac, Some(mac(1)));
        let mut other =
            Event::new(Stage::Tftp, "ok", "x").ip("10.0.0.6".parse::<IpAddr>().unwrap());
        m.attribute(&mut other);
        assert_eq!(other.mac, None);
    }

    #[test]
    fn a_repeat_within_the_window_folds_and_a_change_does_not() {
        let mut m = Memory::default();
        let first = Event::new(Stage::Script, "ok", "script")
            .mac(Some(mac(1)))
            .rule(Some("r"));
        m.remember(7, &first);
        let mut again = first.clone();
        again.at += Duration::from_secs(5);
        assert_eq!(m.repeat_of(&again), Some(7));
        let mut later = first.clone();
        later.at += FOLD_WINDOW + Duration::from_secs(1);
        assert_eq!(m.repeat_of(&later), None);
        let changed = first.clone().rule(Some("other"));
        assert_eq!(m.repeat_of(&changed), None);
        let other_machine = first.mac(Some(mac(2)));
        assert_eq!(m.repeat_of(&other_machine), None);
    }
}
