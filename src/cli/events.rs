//! `pxed events`: the recorded boot steps, as text or JSON lines, optionally
//! following the database as the daemon writes it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use pxed::core::Mac;
use pxed::events::{EventLog, Query, StoredEvent};
use pxed::storage::Backend;

use super::{load, ConfigArg, Outcome};

/// How often `--follow` looks for new rows: the daemon's writer commits in
/// batches about every 100 ms, so a person sees each step about as it happens.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

#[derive(clap::Args)]
pub struct EventsArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Only this machine's events (any MAC notation).
    #[arg(long)]
    mac: Option<String>,
    /// The newest this many events.
    #[arg(long, default_value_t = 200)]
    limit: usize,
    /// Only events since then: a duration ago (`10m`, `2h`, `1day`) or a
    /// time (`2026-11-30T12:00:00Z`).
    #[arg(long, value_parser = parse_since)]
    since: Option<SystemTime>,
    /// Keep printing new events as they are recorded (Ctrl-C stops).
    #[arg(long, short)]
    follow: bool,
    /// One JSON object per line instead of columns.
    #[arg(long)]
    json: bool,
}

fn parse_since(s: &str) -> Result<SystemTime, String> {
    if let Ok(ago) = humantime::parse_duration(s) {
        return Ok(SystemTime::now()
            .checked_sub(ago)
            .unwrap_or(SystemTime::UNIX_EPOCH));
    }
    humantime::parse_rfc3339_weak(s).map_err(|_| {
        format!("{s:?} is neither a duration (10m, 2h) nor a time (2026-11-30T12:00:00Z)")
    })
}

pub fn run(args: &EventsArgs) -> anyhow::Result<Outcome> {
    let path = &args.config.config;
    let c = load(path)?;
    let mac = args.mac.as_deref().map(str::parse::<Mac>).transpose()?;
    super::runtime()?.block_on(async {
        let backend = Backend::open(&c)?;
        let log = backend.event_log(&c).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: [events] db = \"\": nothing is recorded",
                path.display()
            )
        })?;
        let query = Query {
            mac,
            limit: args.limit,
            since: args.since,
            after_id: None,
        };
        show(&*log, query, args).await
    })
}

/// Prints what `query` selects, then (`--follow`) what is recorded next.
async fn show(log: &dyn EventLog, mut query: Query, args: &EventsArgs) -> anyhow::Result<Outcome> {
    let events = log.query(query.clone()).await?;
    for event in &events {
        print(event, args.json)?;
    }
    if !args.follow {
        return Ok(Outcome::Ok);
    }
    let last = match events.iter().map(|e| e.id).max() {
        Some(last) => last,
        None => log.last_id().await?,
    };
    let mut cursor = Cursor::new(last);
    query.limit = usize::MAX;
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        query.after_id = Some(cursor.read_after());
        let rows = log.query(query.clone()).await?;
        for event in cursor.take(rows, Instant::now()) {
            print(&event, args.json)?;
        }
    }
}

/// How long `--follow` waits for a row whose id it passed over: longer
/// than any write may take (`storage::pg::CALL_TIMEOUT`); after that the
/// insert was rolled back, or the id belongs to a row the query filters out.
const GAP_PATIENCE: Duration = Duration::from_secs(10);
/// A jump in ids larger than this is not waited for id by id.
const MAX_GAP: i64 = 100_000;

/// Where `--follow` is. A row's id is drawn when it is inserted, but the row
/// is visible only once its transaction commits: with several servers
/// writing one PostgreSQL, row 102 can appear after 103 was printed. So an
/// id passed over is a gap, read again until its row shows up or
/// [`GAP_PATIENCE`] has passed.
struct Cursor {
    last: i64,
    gaps: BTreeMap<i64, Instant>,
}

impl Cursor {
    fn new(last: i64) -> Cursor {
        Cursor {
            last,
            gaps: BTreeMap::new(),
        }
    }

    /// The id to read after: before the oldest gap still awaited.
    fn read_after(&self) -> i64 {
        self.gaps.keys().next().map_or(self.last, |gap| gap - 1)
    }

    /// Of `rows` (in any order), those not printed yet.
    fn take(&mut self, rows: Vec<StoredEvent>, now: Instant) -> Vec<StoredEvent> {
        self.gaps
            .retain(|_, since| now.duration_since(*since) < GAP_PATIENCE);
        let mut fresh = Vec::new();
        for row in rows {
            if row.id > self.last {
                if row.id - self.last <= MAX_GAP {
                    self.gaps
                        .extend((self.last + 1..row.id).map(|id| (id, now)));
                }
                self.last = row.id;
                fresh.push(row);
            } else if self.gaps.remove(&row.id).is_some() {
                fresh.push(row);
            }
        }
        fresh
    }
}

fn print(event: &StoredEvent, json: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, &event.to_json())?;
        writeln!(out)?;
    } else {
        writeln!(out, "{event}")?;
    }
    // Followed output is often piped (`| grep`): every line as it comes.
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(ids: &[i64]) -> Vec<StoredEvent> {
        ids.iter()
            .map(|&id| StoredEvent {
                id,
                at: SystemTime::UNIX_EPOCH,
                last_at: SystemTime::UNIX_EPOCH,
                count: 1,
                mac: None,
                ip: None,
                stage: "dhcp".into(),
                outcome: "ok".into(),
                rule: None,
                arch: None,
                product: None,
                detail: String::new(),
                server: None,
            })
            .collect()
    }

    fn ids(events: &[StoredEvent]) -> Vec<i64> {
        events.iter().map(|e| e.id).collect()
    }

    /// Each poll: (rows the query returns, rows printed, the next read_after).
    #[test]
    fn rows_committed_out_of_id_order_are_printed_once() {
        let t0 = Instant::now();
        let polls: &[(&[i64], &[i64], i64)] = &[
            // 11 and 12 are drawn but not committed yet: 13 is seen first.
            (&[13], &[13], 10),
            // 12 commits; read again from before 11, 13 is not printed twice.
            (&[12, 13], &[12], 10),
            (&[11, 12, 13, 14], &[11, 14], 14),
            (&[], &[], 14),
            // Read in (at, id) order, not id order: still each row once.
            (&[17, 15, 16], &[17, 15, 16], 17),
        ];
        let mut cursor = Cursor::new(10);
        for (i, (read, printed, after)) in polls.iter().enumerate() {
            let got = cursor.take(rows(read), t0);
            assert_eq!(ids(&got), *printed, "poll {i}");
            assert_eq!(cursor.read_after(), *after, "poll {i}");
        }
    }

    #[test]
    fn a_gap_is_given_up_after_its_patience() {
        let t0 = Instant::now();
        let mut cursor = Cursor::new(0);
        assert_eq!(ids(&cursor.take(rows(&[2]), t0)), [2]);
        assert_eq!(cursor.read_after(), 0, "waits for 1");
        cursor.take(Vec::new(), t0 + GAP_PATIENCE);
        assert_eq!(cursor.read_after(), 2, "1 was rolled back");
        // A huge jump (a sequence restarted higher) is not waited for id by id.
        cursor.take(rows(&[2 + MAX_GAP + 5]), t0 + GAP_PATIENCE);
        assert_eq!(cursor.read_after(), 2 + MAX_GAP + 5);
    }
}
