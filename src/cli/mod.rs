//! The `pxed` command line: the argument definitions (also the source of the
//! man page and shell completions, `generate.rs`) and one file per
//! subcommand body. `main.rs` only parses and dispatches.

mod check;
mod events;
mod generate;
mod inspect;
mod machines;
mod migrate;
mod serve;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The default `--config`: relative, so a checkout runs as is; the Debian
/// package's unit passes `/etc/pxed/machines.toml`.
const DEFAULT_CONFIG: &str = "machines.toml";

#[derive(Parser)]
#[command(
    name = "pxed",
    version,
    about = "Network-boot provisioning daemon: DHCP, TFTP and HTTP with per-machine boot rules"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the config is; every subcommand that reads it takes this.
#[derive(Args, Clone)]
pub struct ConfigArg {
    /// The rules file; templates and assets are found relative to it.
    #[arg(long, default_value = DEFAULT_CONFIG, value_hint = clap::ValueHint::FilePath)]
    pub config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        /// Log line format: `text` for people and journald, `json` (one
        /// object per line) for log collectors.
        #[arg(long, value_enum, env = "PXED_LOG_FORMAT", default_value = "text")]
        log_format: serve::LogFormat,
    },
    /// Validate machines.toml and every template, render every rule once, and
    /// check the files the rules name and the databases; every problem as
    /// `file:line:column: reason`. Exits 1 on any error.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print exactly what a machine would be served.
    Render {
        #[command(flatten)]
        machine: MachineArgs,
        #[arg(long, value_enum, default_value = "ipxe")]
        format: inspect::Format,
        /// The base URL scripts point at (default: public_url, else http://<http_listen>;
        /// on 0.0.0.0 the host is the placeholder `<pxed-address>`).
        #[arg(long)]
        base_url: Option<String>,
    },
    /// Show which rule a machine gets, which rules did not match, and why.
    /// Exits 1 when no rule matches.
    Explain {
        #[command(flatten)]
        machine: MachineArgs,
    },
    /// Print recorded boot events (DHCP, TFTP, scripts, assets), oldest first.
    Events(events::EventsArgs),
    /// List the machines a running pxed knows (its API: docs/api.md).
    Machines(machines::ApiArgs),
    /// Show a machine, or change what it boots: reinstall, boot, local,
    /// clear, label (through a running pxed's API).
    Machine {
        /// Its MAC address (any notation).
        mac: String,
        #[command(subcommand)]
        action: Option<machines::Action>,
        #[command(flatten)]
        api: machines::ApiArgs,
    },
    /// Copy this host's SQLite leases, boot events and machine state into
    /// the PostgreSQL database `[database]` names (empty), before several
    /// servers start on it (docs/ha.md).
    Migrate {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Write the man pages and shell completions into a directory (used to
    /// build the Debian package).
    #[command(hide = true)]
    Generate {
        /// Creates `man/` and `completions/` here.
        #[arg(long)]
        out: PathBuf,
    },
}

/// A machine as the firmware would describe it.
#[derive(Args)]
pub struct MachineArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The machine's MAC address (any notation).
    #[arg(long)]
    mac: String,
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

/// How `pxed` ends: success, or a failure already explained on stderr.
pub enum Outcome {
    Ok,
    /// Exit status 1 without a further message (`explain` found no rule,
    /// `check` found errors).
    Failed,
}

pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Serve { config, log_format } => serve::run(&config.config, log_format),
        Command::Check { config } => check::run(&config.config),
        Command::Render {
            machine,
            format,
            base_url,
        } => inspect::render(&machine, format, base_url.as_deref()),
        Command::Explain { machine } => inspect::explain(&machine),
        Command::Events(args) => events::run(&args),
        Command::Machines(api) => machines::list(&api),
        Command::Machine { mac, action, api } => machines::machine(&mac, action.as_ref(), &api),
        Command::Migrate { config } => migrate::run(&config),
        Command::Generate { out } => generate::run(&out),
    }
}

/// Loads the config, its errors as one message.
fn load(path: &std::path::Path) -> anyhow::Result<std::sync::Arc<pxed::config::Config>> {
    config_exists(path)?;
    pxed::config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A runtime for a command that reads the state backend (PostgreSQL's
/// driver is async; the commands are not).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A missing config is most often a command run from another directory
/// than the config's (the default is relative): say which flag fixes it.
fn config_exists(path: &std::path::Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let cwd = std::env::current_dir().map_or_else(|_| ".".into(), |d| d.display().to_string());
    anyhow::bail!(
        "{}: no such file (looked in {cwd}); pass --config /path/to/machines.toml \
         (the packaged one is /etc/pxed/machines.toml)",
        path.display()
    )
}
