//! How one batch of events becomes rows, whatever the backend: new steps are
//! inserted, repeats of a recent step only raise the count of its row
//! ([`Memory::repeat_of`]), once per row per batch, so a boot loop or a load
//! test costs a counter in memory per step, not a write; and each machine's
//! summary row is updated once per batch, with all its steps in it
//! ([`MachineUpdate`]): a DHCP exchange's two steps or a boot's several cost
//! one statement, not one each. A backend supplies the statements ([`Sink`]).

use std::collections::HashMap;

use super::stored::millis;
use super::{Event, Memory};

/// The writes of one batch, in one transaction of the backend.
pub(crate) trait Sink {
    /// Stores a new step (at `at`, unix ms); returns its row id.
    fn insert(&mut self, e: &Event, at: i64) -> anyhow::Result<i64>;
    /// Updates (or creates) the summary of the machine `mac`.
    fn machine(&mut self, mac: &str, m: &MachineUpdate) -> anyhow::Result<()>;
    /// Adds `n` repeats, the last at `at`, to row `id`.
    fn fold(&mut self, id: i64, n: u32, at: i64) -> anyhow::Result<()>;
    /// The machine `mac` was seen at `at` (a folded step).
    fn touch(&mut self, mac: &str, at: i64) -> anyhow::Result<()>;
}

/// A machine summary's change from a batch's steps of that machine, to be
/// applied to the stored row `r` as:
/// - `first_at`: only for a new row; `last_at`, `stage`, `outcome`: these;
/// - `rule`: `coalesce(rule, r.rule, rule_fallback)`;
/// - every other field: `coalesce(field, r.field)`.
///
/// Each step applied alone was `coalesce(a, r.x, b)` (a: what the step
/// knows for sure, b: a value kept only if the row has none: the rule DHCP
/// matched, before a script step chose one); two in a row,
/// `coalesce(a2, coalesce(a1, r.x, b1), b2)`, are `coalesce(a2, a1, r.x, b1,
/// b2)`: so newer `a` first, older `b` first, and one statement gives what
/// the steps one after the other gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineUpdate {
    pub first_at: i64,
    pub last_at: i64,
    pub stage: &'static str,
    pub outcome: &'static str,
    pub ip: Option<String>,
    /// The rule a script or menu step chose (it wins over the stored one).
    pub rule: Option<String>,
    /// The rule a DHCP step matched (MAC and arch only): kept only when the
    /// machine has none yet.
    pub rule_fallback: Option<String>,
    pub arch: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
    pub manufacturer: Option<String>,
    pub uuid: Option<String>,
}

impl MachineUpdate {
    fn new(at: i64) -> MachineUpdate {
        MachineUpdate {
            first_at: at,
            last_at: at,
            stage: "",
            outcome: "",
            ip: None,
            rule: None,
            rule_fallback: None,
            arch: None,
            product: None,
            serial: None,
            manufacturer: None,
            uuid: None,
        }
    }

    /// Adds the machine's next step (at `at`).
    fn apply(&mut self, e: &Event, at: i64) {
        fn newer<T>(x: &mut Option<T>, v: Option<T>) {
            if v.is_some() {
                *x = v;
            }
        }
        self.last_at = at;
        self.stage = e.stage.name();
        self.outcome = e.outcome;
        newer(&mut self.ip, e.ip.map(|ip| ip.to_string()));
        if e.stage.decides_rule() {
            newer(&mut self.rule, e.rule.clone());
        } else if self.rule_fallback.is_none() {
            self.rule_fallback = e.rule.clone();
        }
        newer(&mut self.arch, e.arch.map(|a| a.name()));
        newer(&mut self.product, e.product.clone());
        if let Some(s) = e.smbios.as_deref() {
            newer(&mut self.serial, s.serial.clone());
            newer(&mut self.manufacturer, s.manufacturer.clone());
            newer(&mut self.uuid, s.uuid.clone());
        }
    }
}

/// Writes `batch` (emptied) through `sink`.
pub(crate) fn write(
    batch: &mut Vec<Event>,
    memory: &mut Memory,
    sink: &mut dyn Sink,
) -> anyhow::Result<()> {
    let mut folds: HashMap<i64, (u32, i64)> = HashMap::new();
    // Machines with a new step in this batch, in the order first seen.
    let mut machines: Vec<(String, MachineUpdate)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    // Machines with only repeats in this batch (so far).
    let mut seen: HashMap<String, i64> = HashMap::new();
    for e in batch.drain(..) {
        let at = millis(e.at);
        let mac = e
            .mac
            .filter(|_| e.stage.by_machine())
            .map(|m| m.to_string());
        if let Some(id) = memory.repeat_of(&e) {
            let fold = folds.entry(id).or_insert((0, at));
            fold.0 += 1;
            fold.1 = at;
            if let Some(mac) = mac {
                match index.get(&mac) {
                    Some(&i) => machines[i].1.last_at = machines[i].1.last_at.max(at),
                    None => {
                        seen.insert(mac, at);
                    }
                }
            }
            continue;
        }
        let id = sink.insert(&e, at)?;
        if let Some(mac) = mac {
            seen.remove(&mac);
            let i = *index.entry(mac.clone()).or_insert_with(|| {
                machines.push((mac, MachineUpdate::new(at)));
                machines.len() - 1
            });
            machines[i].1.apply(&e, at);
        }
        memory.remember(id, &e);
    }
    for (mac, m) in &machines {
        sink.machine(mac, m)?;
    }
    for (id, (n, at)) in folds {
        sink.fold(id, n, at)?;
    }
    for (mac, at) in seen {
        sink.touch(&mac, at)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Stage;

    fn step(stage: Stage, rule: Option<&str>, ip: Option<&str>) -> Event {
        let mut e = Event::new(stage, "ok", "x").rule(rule);
        e.ip = ip.map(|i| i.parse().unwrap());
        e
    }

    /// The stored row after applying updates the way the backends'
    /// statements do.
    fn stored(
        row: Option<(Option<&str>, Option<&str>)>,
        m: &MachineUpdate,
    ) -> (Option<String>, Option<String>) {
        let (rule, ip) = row.map_or((None, None), |(r, i)| {
            (r.map(String::from), i.map(String::from))
        });
        let rule = m.rule.clone().or(rule).or(m.rule_fallback.clone());
        (rule, m.ip.clone().or(ip))
    }

    #[test]
    fn one_update_per_machine_gives_what_its_steps_one_by_one_gave() {
        // (steps of one machine in one batch, the row before) → (rule, ip) after.
        let cases = [
            // DHCP matched "dhcp-rule", then the script chose "script-rule".
            (
                vec![
                    step(Stage::Dhcp, Some("dhcp-rule"), Some("10.0.0.5")),
                    step(Stage::Script, Some("script-rule"), None),
                ],
                None,
                (Some("script-rule"), Some("10.0.0.5")),
            ),
            // DHCP only: its rule stands in while the machine has none...
            (
                vec![
                    step(Stage::Dhcp, Some("a"), Some("10.0.0.5")),
                    step(Stage::Dhcp, Some("b"), None),
                ],
                None,
                (Some("a"), Some("10.0.0.5")),
            ),
            // ... and never replaces one a script chose before.
            (
                vec![step(Stage::Dhcp, Some("a"), Some("10.0.0.6"))],
                Some((Some("chosen"), Some("10.0.0.5"))),
                (Some("chosen"), Some("10.0.0.6")),
            ),
            // A script step with no rule (retry script) keeps the stored one.
            (
                vec![
                    step(Stage::Script, None, None),
                    step(Stage::Dhcp, Some("d"), None),
                ],
                Some((Some("chosen"), None)),
                (Some("chosen"), None),
            ),
        ];
        for (steps, row, (rule, ip)) in cases {
            let mut m = MachineUpdate::new(0);
            for (i, e) in steps.iter().enumerate() {
                m.apply(e, i as i64);
            }
            assert_eq!(
                stored(row, &m),
                (rule.map(String::from), ip.map(String::from)),
                "{steps:?}"
            );
        }
    }
}
