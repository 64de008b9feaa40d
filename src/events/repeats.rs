//! Which boot steps are worth a log line: the first of a machine's identical
//! steps within a minute, not every one. A machine in a boot loop, or a load
//! test hammering one URL, would otherwise write the same line thousands of
//! times a second; formatting it cost ~30% of a cached render
//! (bench/http.sh). Repeats are still counted in the event record and
//! logged at debug.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::core::Mac;

/// How long an identical step stays quiet.
pub const QUIET: Duration = Duration::from_secs(60);
const SHARDS: usize = 16;
/// Machines remembered per shard; past this the shard starts over, so a
/// random-MAC flood costs bounded memory (and gets its lines logged).
const SHARD_LIMIT: usize = 4096;

type Shard = Mutex<HashMap<Mac, (u64, Instant)>>;

pub struct Repeats {
    shards: Vec<Shard>,
}

impl Default for Repeats {
    fn default() -> Repeats {
        Repeats {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

fn fingerprint(step: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    step.hash(&mut h);
    h.finish()
}

impl Repeats {
    /// True when `mac` did not take this same `step` within [`QUIET`] (and
    /// remembers that it just did).
    pub fn fresh(&self, mac: Mac, step: &impl Hash, now: Instant) -> bool {
        let print = fingerprint(step);
        let shard = &self.shards[usize::from(mac.0[5]) % SHARDS];
        let Ok(mut seen) = shard.lock() else {
            return true;
        };
        if let Some((last, at)) = seen.get(&mac) {
            if *last == print && now.duration_since(*at) < QUIET {
                return false;
            }
        }
        if seen.len() >= SHARD_LIMIT {
            seen.clear();
        }
        seen.insert(mac, (print, now));
        true
    }
}

/// The process-wide table the HTTP adapter consults for rendered scripts.
pub fn renders() -> &'static Repeats {
    static RENDERS: OnceLock<Repeats> = OnceLock::new();
    RENDERS.get_or_init(Repeats::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_step_is_quiet_for_a_minute_and_a_different_one_is_not() {
        let r = Repeats::default();
        let mac: Mac = "52:54:00:00:00:01".parse().unwrap();
        let t = Instant::now();
        assert!(r.fresh(mac, &"rule-a", t));
        assert!(!r.fresh(mac, &"rule-a", t + Duration::from_secs(5)));
        assert!(
            r.fresh(mac, &"rule-b", t + Duration::from_secs(6)),
            "a different rule"
        );
        assert!(
            r.fresh(mac, &"rule-b", t + Duration::from_secs(6) + QUIET),
            "a minute later"
        );
        let other: Mac = "52:54:00:00:00:02".parse().unwrap();
        assert!(
            r.fresh(other, &"rule-b", t + Duration::from_secs(7)),
            "another machine"
        );
    }
}
