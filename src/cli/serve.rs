//! `pxed serve`: the log set-up, then the daemon (`pxed::server`).

use std::path::Path;

use super::Outcome;

/// `--log-format` / `PXED_LOG_FORMAT` (names kept stable: log collectors
/// and units depend on them).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-11-30T12:00:00Z INFO pxed::http::boot: ipxe script rendered mac=… rule=…`
    Text,
    /// One JSON object per line, event fields at the top level
    /// (`{"timestamp":…,"level":"INFO","message":…,"mac":…}`).
    Json,
}

pub fn run(config: &Path, format: LogFormat) -> anyhow::Result<Outcome> {
    // Log lines are formatted on the request's thread but written by a
    // background thread in batches: one write(2) per line on stderr
    // cost a third of the render endpoint's throughput (bench/http.sh).
    // Not lossy: a full queue slows requests, never drops lines. 16,384
    // lines, not the crate's 128,000: its slots are allocated up front
    // (4.1 MB resident at start; 0.5 MB now), and a writer that far
    // behind is a backlog more slots would only defer.
    let (writer, _flush_on_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(16_384)
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let filter = tracing_subscriber::EnvFilter::try_from_env("PXED_LOG")
        // The database driver and its pool log every broken connection (a
        // dozen lines when PostgreSQL restarts); pxed says it once itself.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn,deadpool=error")
        });
    let builder = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    let served = super::config_exists(config).and_then(|()| {
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(pxed::server::run(config.to_path_buf()))
    });
    match served {
        // A collector parses every line of a JSON log: the reason pxed could
        // not start (no config, a broken one, a port in use) is one more
        // JSON line, not main's plain `pxed: …`.
        Err(e) if format == LogFormat::Json => {
            tracing::error!("{e:#}");
            Ok(Outcome::Failed)
        }
        served => served.map(|()| Outcome::Ok),
    }
}
