//! How one batch of events becomes rows, whatever the backend: new steps are
//! inserted (and update their machine's summary), repeats of a recent step
//! only raise the count of its row ([`Memory::repeat_of`]), once per row per
//! batch, so a boot loop or a load test costs a counter in memory per step,
//! not a write. A backend supplies the statements ([`Sink`]).

use std::collections::HashMap;

use super::stored::millis;
use super::{Event, Memory};

/// The writes of one batch, in one transaction of the backend.
pub(crate) trait Sink {
    /// Stores a new step (at `at`, unix ms); returns its row id.
    fn insert(&mut self, e: &Event, at: i64) -> anyhow::Result<i64>;
    /// Updates the summary of the machine `mac` with its step `e`.
    fn machine(&mut self, mac: &str, at: i64, e: &Event) -> anyhow::Result<()>;
    /// Adds `n` repeats, the last at `at`, to row `id`.
    fn fold(&mut self, id: i64, n: u32, at: i64) -> anyhow::Result<()>;
    /// The machine `mac` was seen at `at` (a folded step).
    fn touch(&mut self, mac: &str, at: i64) -> anyhow::Result<()>;
}

/// Writes `batch` (emptied) through `sink`.
pub(crate) fn write(
    batch: &mut Vec<Event>,
    memory: &mut Memory,
    sink: &mut dyn Sink,
) -> anyhow::Result<()> {
    let mut folds: HashMap<i64, (u32, i64)> = HashMap::new();
    let mut seen: HashMap<String, i64> = HashMap::new();
    for e in batch.drain(..) {
        let at = millis(e.at);
        let mac = e.mac.map(|m| m.to_string());
        if let Some(id) = memory.repeat_of(&e) {
            let fold = folds.entry(id).or_insert((0, at));
            fold.0 += 1;
            fold.1 = at;
            if let Some(mac) = mac.filter(|_| e.stage.by_machine()) {
                seen.insert(mac, at);
            }
            continue;
        }
        let id = sink.insert(&e, at)?;
        if let Some(mac) = mac.as_ref().filter(|_| e.stage.by_machine()) {
            sink.machine(mac, at, &e)?;
            seen.remove(mac);
        }
        memory.remember(id, &e);
    }
    for (id, (n, at)) in folds {
        sink.fold(id, n, at)?;
    }
    for (mac, at) in seen {
        sink.touch(&mac, at)?;
    }
    Ok(())
}
