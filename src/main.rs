//! The `pxed` command line: serve, check, render, explain, events.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// glibc's malloc was a quarter of the instructions of a cached render
/// (callgrind, bench/http.sh load); see docs/decisions.md.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use pxed::config;
use pxed::core::{Arch, Base, ClientString, Identity, Mac, Uuid};

#[derive(Parser)]
#[command(
    name = "pxed",
    version,
    about = "Network-boot provisioning daemon: DHCP, TFTP and HTTP with per-machine boot rules"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve {
        #[arg(long, default_value = "machines.toml")]
        config: PathBuf,
    },
    /// Validate machines.toml and every template; render every rule once.
    Check {
        #[arg(long, default_value = "machines.toml")]
        config: PathBuf,
    },
    /// Print exactly what a machine would be served.
    Render {
        #[command(flatten)]
        machine: MachineArgs,
        #[arg(long, value_enum, default_value = "ipxe")]
        format: Format,
        /// The base URL scripts point at (default: public_url, else http://<http_listen>;
        /// on 0.0.0.0 the host is the placeholder `<pxed-address>`).
        #[arg(long)]
        base_url: Option<String>,
    },
    /// Show which rule a machine gets, which rules did not match, and why.
    Explain {
        #[command(flatten)]
        machine: MachineArgs,
    },
    /// Print recorded boot events (DHCP, TFTP, scripts, assets), oldest first.
    Events {
        #[arg(long, default_value = "machines.toml")]
        config: PathBuf,
        /// Only this machine's events (any MAC notation).
        #[arg(long)]
        mac: Option<String>,
        /// The newest this many events.
        #[arg(long, default_value_t = 200)]
        limit: usize,
    },
}

#[derive(Args)]
struct MachineArgs {
    #[arg(long, default_value = "machines.toml")]
    config: PathBuf,
    #[arg(long)]
    mac: Option<String>,
    /// SMBIOS product name.
    #[arg(long)]
    product: Option<String>,
    #[arg(long)]
    serial: Option<String>,
    #[arg(long)]
    manufacturer: Option<String>,
    #[arg(long)]
    uuid: Option<String>,
    /// bios, efi-ia32, efi-x64, efi-arm32, efi-arm64, http-x64, … or an option 93 number.
    #[arg(long)]
    arch: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Ipxe,
    Pxelinux,
}

impl MachineArgs {
    fn identity(&self) -> anyhow::Result<Identity> {
        Ok(Identity {
            mac: self.mac.as_deref().map(str::parse::<Mac>).transpose()?,
            product: self.product.as_deref().and_then(ClientString::new),
            serial: self.serial.as_deref().and_then(ClientString::new),
            manufacturer: self.manufacturer.as_deref().and_then(ClientString::new),
            uuid: self.uuid.as_deref().map(str::parse::<Uuid>).transpose()?,
            arch: self.arch.as_deref().map(str::parse::<Arch>).transpose()?,
        })
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<std::sync::Arc<config::Config>> {
    config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The override stored for this machine by a running (or past) daemon.
fn stored_override(
    c: &config::Config,
    id: &Identity,
) -> anyhow::Result<Option<pxed::core::BootOverride>> {
    match id.mac {
        Some(mac) => pxed::machines::read_override(&pxed::machines::db_path(c), mac),
        None => Ok(None),
    }
}

/// `pxed check`: the config loads, then the filesystem checks of
/// `pxed::check`; fails on an error finding, prints warnings and notes.
fn check(config: &std::path::Path) -> anyhow::Result<()> {
    let c = load(config)?;
    for w in &c.warnings {
        eprintln!("warning: {w}");
    }
    let findings = pxed::check::run(&c);
    for finding in &findings {
        eprintln!("{finding}");
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == pxed::check::Severity::Error)
        .count();
    if errors > 0 {
        anyhow::bail!("{}: {errors} error(s)", config.display());
    }
    println!(
        "{}: ok, {} rules, {} files",
        config.display(),
        c.policy.rules.len(),
        c.files.len()
    );
    Ok(())
}

/// `pxed render`: exactly what the machine is served now.
fn render(machine: &MachineArgs, format: Format, base_url: Option<String>) -> anyhow::Result<()> {
    let c = load(&machine.config)?;
    let id = machine.identity()?;
    let base = match base_url {
        Some(u) => Base::from_url(&u)
            .ok_or_else(|| anyhow::anyhow!("--base-url {u:?} is not http://host[:port]"))?,
        None => {
            let shown = c.server.shown_base();
            if let Some(note) = shown.note() {
                eprintln!("note: {note} (or pass --base-url)");
            }
            shown.base().clone()
        }
    };
    // What the machine is served now: its override counts (shown
    // without a callback token; each boot gets its own).
    let active = stored_override(&c, &id)?.map(|boot| pxed::core::Active { boot, token: None });
    let rendered = match format {
        Format::Ipxe => c.policy.script_for(&id, &base, active.as_ref()),
        Format::Pxelinux => c
            .policy
            .menu_for(&id, &base, None, active.as_ref())
            .ok_or_else(|| anyhow::anyhow!("no rule matches this machine"))?,
    };
    print!("{}", rendered.text);
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            // Log lines are formatted on the request's thread but written by a
            // background thread in batches: one write(2) per line on stderr
            // cost a third of the render endpoint's throughput (bench/http.sh).
            // Not lossy: a full queue slows requests, never drops lines. 16,384
            // lines, not the crate's 128,000: its slots are allocated up front
            // (4.1 MB resident at start; 0.5 MB now), and a writer that far
            // behind is a backlog more slots would only defer.
            let (writer, _flush_on_exit) =
                tracing_appender::non_blocking::NonBlockingBuilder::default()
                    .lossy(false)
                    .buffered_lines_limit(16_384)
                    .finish(std::io::BufWriter::with_capacity(
                        64 * 1024,
                        std::io::stderr(),
                    ));
            tracing_subscriber::fmt()
                .with_writer(writer)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("PXED_LOG")
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .init();
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(pxed::server::run(config))
        }
        Command::Check { config } => check(&config),
        Command::Render {
            machine,
            format,
            base_url,
        } => render(&machine, format, base_url),
        Command::Explain { machine } => {
            let c = load(&machine.config)?;
            let id = machine.identity()?;
            let ovr = stored_override(&c, &id)?;
            print!("{}", c.policy.explain_for(&id, ovr.as_ref()));
            Ok(())
        }
        Command::Events { config, mac, limit } => {
            let c = load(&config)?;
            let db = c.events.db.as_deref().ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: [events] db = \"\": nothing is recorded",
                    config.display()
                )
            })?;
            let mac = mac.as_deref().map(str::parse::<Mac>).transpose()?;
            let reader = pxed::events::Reader::open(db)?;
            for event in reader.events(mac, limit)? {
                println!("{event}");
            }
            Ok(())
        }
    }
}

/// mimalloc's `mi_option_arena_eager_commit` (index 4 in the `mi_option_t`
/// enum of mimalloc.h, v2 and v3; the Rust binding leaves the less stable
/// options unnamed and says to pass their index).
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Commit arena memory as it is used, not the whole arena at once: peak RSS
/// in the 10,000-machine storm 63 → 33 MB (docs/decisions.md). Only when the
/// option still has mimalloc's documented default (2), so a renumbered enum
/// in a future mimalloc changes nothing rather than the wrong option.
///
/// It runs from `.init_array`, before Rust's runtime allocates anything: by
/// `main` the first arena (1 GiB of address space) is already reserved and
/// committed, and setting the option there changed nothing (measured).
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
#[used]
#[link_section = ".init_array"]
static TUNE_ALLOCATOR: extern "C" fn() = tune_allocator;

#[cfg(all(feature = "mimalloc", target_os = "linux"))]
extern "C" fn tune_allocator() {
    // SAFETY: plain setters/getters of mimalloc's option table, called before
    // main, while no other thread exists (they are not thread safe).
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT) == 2 {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pxed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
