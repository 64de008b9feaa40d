//! `pxed serve`: load the config, bind every listener (failing with one clear
//! line when a port cannot be bound), run the adapters, and reload on SIGHUP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{self, Shared};
use crate::listen::bind_error;

/// Descriptors pxed may hold at once besides its listeners: every HTTP
/// connection and every TFTP transfer has one.
const DESCRIPTORS_NEEDED: u64 =
    (crate::http::MAX_CONNECTIONS + crate::tftp::MAX_TRANSFERS + 256) as u64;

/// Raises the soft open-files limit to the hard one. The common soft default,
/// 1,024, is below the HTTP connection cap: under a storm accept(2) would
/// fail with EMFILE long before the cap is reached.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let soft = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    if soft < DESCRIPTORS_NEEDED {
        tracing::warn!(
            limit = soft,
            needed = DESCRIPTORS_NEEDED,
            "the open-files limit is below what the HTTP connection and TFTP transfer caps need; \
             raise it (systemd: LimitNOFILE=) or connections will wait for descriptors"
        );
    }
}

pub async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    raise_open_files_limit();
    let config = config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    warn_about(&config, &config_path);
    let shared: Shared = Arc::new(ArcSwap::new(config.clone()));
    let backend = crate::storage::Backend::open(&config)?;
    start_state(&config, &backend).await;

    // Bind every listener before announcing any: "listening" means started.
    let http_addr = config.server.http_listen;
    let http =
        crate::http::bind(http_addr).map_err(|e| bind_error("HTTP (http_listen)", http_addr, e))?;
    let admin = match config.server.admin_listen {
        Some(addr) => Some(
            crate::http::bind(addr)
                .map_err(|e| bind_error("the admin page (admin_listen)", addr, e))?,
        ),
        None => None,
    };
    let tftp = match config.server.tftp_listen {
        Some(addr) => Some(crate::tftp::bind(addr).await?),
        None => None,
    };
    let dhcp = crate::dhcp::start(&shared, backend.lease_opener())?;
    let ra = crate::ra::start(&config)?;

    let reload_status = Arc::new(crate::reload::Status::default());
    let reloader = crate::reload::Reloader::install(
        config_path.clone(),
        shared.clone(),
        reload_status.clone(),
    );
    let mut listening = Listening::default();
    let mut tasks = tokio::task::JoinSet::new();
    let http_at = http.local_addr().context("http listener address")?;
    tracing::info!(addr = %http_at, "http listening");
    listening.add("http", http_at);
    tasks.spawn(crate::http::serve(
        http,
        crate::http::router(shared.clone()),
        "http",
    ));
    if let Some(admin) = admin {
        let admin_at = admin.local_addr().context("admin listener address")?;
        tracing::info!(addr = %admin_at, "admin listening");
        warn_if_admin_exposed(admin_at);
        listening.add("admin", admin_at);
        let app = crate::http::admin::router(shared.clone(), reload_status.clone());
        tasks.spawn(crate::http::serve(admin, app, "admin"));
    }
    if let Some(tftp) = tftp {
        listening.add("tftp", tftp.local_addr().context("tftp listener address")?);
        tasks.spawn(crate::tftp::serve(tftp, shared.clone()));
    }
    tasks.spawn(reloader.run());
    if let Some(dhcp) = dhcp {
        listening.add(
            &format!("dhcp-{}", config.dhcp.mode.name()),
            config.dhcp.listen,
        );
        tasks.spawn(dhcp);
    }
    if let Some(ra) = ra {
        tasks.spawn(ra);
    }
    listening.announce(&config_path);
    let stopped = until_stopped(tasks).await;
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    stopped
}

/// The config's warnings, at start.
fn warn_about(config: &config::Config, config_path: &Path) {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    if config.example {
        tracing::warn!(
            config = %config_path.display(),
            "serving the shipped example config ([server] example = true): put your kernels in assets_dir, \
             write your rules, then delete that line (`pxed check` then fails on any missing kernel)"
        );
    }
}

/// Runs until SIGTERM, Ctrl-C, or a server task failing.
async fn until_stopped(mut tasks: tokio::task::JoinSet<()>) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, stopping"),
        _ = term.recv() => tracing::info!("SIGTERM, stopping"),
        Some(done) = tasks.join_next() => {
            if let Err(e) = done {
                anyhow::bail!("a server task failed: {e}");
            }
        }
    }
    Ok(())
}

/// `http=0.0.0.0:8080 admin=127.0.0.1:9180 …` for the start line.
#[derive(Default)]
struct Listening(Vec<String>);

impl Listening {
    fn add(&mut self, what: &str, addr: SocketAddr) {
        self.0.push(format!("{what}={addr}"));
    }

    /// The start line (version, config, listeners), then readiness to
    /// systemd: every listener is bound by now.
    fn announce(&self, config_path: &Path) {
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            config = %std::path::absolute(config_path).unwrap_or(config_path.to_path_buf()).display(),
            listeners = %self.0.join(" "),
            "pxed started"
        );
        notify_systemd(&[sd_notify::NotifyState::Ready]);
    }
}

/// Tells systemd (`Type=notify`) that pxed is up, or stopping. Outside
/// systemd (`NOTIFY_SOCKET` unset) it does nothing.
fn notify_systemd(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// The admin listener has no authentication: anyone who reaches it sees
/// every machine's boot record and the config. Off loopback that is worth
/// a line nobody misses.
fn warn_if_admin_exposed(addr: SocketAddr) {
    if !addr.ip().is_loopback() {
        tracing::warn!(
            addr = %addr,
            "ADMIN LISTENER EXPOSED: admin_listen is not a loopback address and the admin pages and /metrics \
             have no authentication; anyone who can reach {addr} reads every machine's boot record and the \
             rules. Bind it to 127.0.0.1 (the default) and reach it over SSH, or firewall the port"
        );
    }
}

/// Connects to the shared database and migrates its schema (at most the
/// driver's deadline); if it cannot, says so once and goes on: HTTP and
/// TFTP do not wait for it, DHCP retries its leases, events and machine
/// state connect when it answers.
async fn connect_database(backend: &crate::storage::Backend) {
    let ready = backend.ready().await;
    if let crate::storage::Backend::Postgres(db) = backend {
        crate::storage::pg::hold_name(db.clone());
    }
    if let Err(e) = ready {
        tracing::error!(
            "{e:#}; starting without the database: HTTP and TFTP serve, DHCP waits for it, machine state and events retry"
        );
    }
}

/// Opens the state backend's event record and machine state. Neither stops
/// pxed from booting machines: a failure is one line, and serving goes on.
async fn start_state(config: &config::Config, backend: &crate::storage::Backend) {
    connect_database(backend).await;
    backend.move_legacy_state(config);
    let events = backend.events(config).and_then(|opened| match opened {
        Some((store, log)) => crate::events::start(&config.events, store, log),
        None => Ok(()),
    });
    if let Err(e) = events {
        tracing::error!("boot events are not recorded: {e:#}");
    }
    // Without it machines boot by the rules alone; the API says why it cannot act.
    let machines = match backend.machines(config) {
        Ok(store) => {
            let db = backend.describe(config);
            crate::machines::start(store, db, backend.is_shared()).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = machines {
        tracing::error!("machine state (overrides, labels) is not available: {e:#}");
    }
}
