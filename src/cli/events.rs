//! `pxed events`: the recorded boot steps, as text or JSON lines, optionally
//! following the database as the daemon writes it.

use std::time::{Duration, SystemTime};

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
    loop {
        let events = log.query(query.clone()).await?;
        for event in &events {
            print(event, args.json)?;
        }
        if !args.follow {
            return Ok(Outcome::Ok);
        }
        if let Some(last) = events.iter().map(|e| e.id).max() {
            query.after_id = Some(last);
        } else if query.after_id.is_none() {
            query.after_id = Some(log.last_id().await?);
        }
        query.limit = usize::MAX;
        tokio::time::sleep(FOLLOW_EVERY).await;
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
