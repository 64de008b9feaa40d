//! Loading `machines.toml` and `boot-templates/` into one validated, immutable
//! [`Config`]. This is the only place that reads the operator's files; it either
//! returns a config in which every rule has been rendered once, or every problem
//! found, each with file, line, column and reason. The server swaps configs
//! whole, so a broken edit never replaces a working one.

//!
//! One file per part of `machines.toml`: [`wire`] is what serde reads (every
//! serde type, loose, with spans); `server.rs`, `rules.rs`, `templates.rs`,
//! `dhcp.rs`, `events.rs` and `ra.rs` each validate their part through the
//! one [`Loader`] that collects errors.

pub mod api;
mod database;
mod database_tls;
mod dhcp;
mod dhcp6;
mod events;
mod loaders;
mod parse;
mod paths;
mod ra;
mod reserve;
mod rules;
mod server;
mod templates;
mod wire;

pub use database::{DatabaseConfig, TlsMode, TlsSettings};
pub use dhcp::{DhcpConfig, DhcpLimits, DhcpMode, Subnet};
pub use dhcp6::Subnet6;
pub use events::EventsConfig;
pub use loaders::LoaderSetting;
pub use paths::{state_dir, AssetRef, DatabaseRef, PACKAGED_STATE_DIR};
pub use ra::RaConfig;
pub use server::{FileSetting, ServerConfig, ShownBase, DEFAULT_FILES, PXED_ADDRESS_PLACEHOLDER};
pub use templates::{read_templates, TemplateFile, TemplateFiles};

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use toml::Spanned;

use crate::core::{Location, Policy};

/// One problem in the operator's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub location: Location,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.reason)
    }
}

/// Every problem found in one attempt to load the config.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A validated config snapshot: what the daemon serves from.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub server: ServerConfig,
    pub policy: Policy,
    /// Every file this snapshot was built from.
    pub files: Vec<PathBuf>,
    pub loaded_at: SystemTime,
    /// Things worth telling the operator that do not stop the config loading.
    pub warnings: Vec<String>,
    /// `[dhcp]` (see `config/dhcp.rs`; the rules carry their own loader and
    /// reservation).
    pub dhcp: DhcpConfig,
    /// `[events]` (see `config/events.rs`).
    pub events: EventsConfig,
    /// `[ipv6_ra]`, the Router Solicitation responder (see `config/ra.rs`).
    pub ipv6_ra: RaConfig,
    /// `[database]`: PostgreSQL shared by several servers; `None`: SQLite
    /// files (see `config/database.rs`, `crate::storage`).
    pub database: Option<DatabaseConfig>,
    /// Local kernels and initrds the rules boot (see `config/paths.rs`).
    pub asset_refs: Vec<AssetRef>,
    /// The database files pxed writes.
    pub databases: Vec<DatabaseRef>,
    /// Where `[server] assets_dir` is set; `None` for the default.
    pub assets_dir_at: Option<Location>,
    /// `[server] example = true`: the shipped example, whose kernel and
    /// initrd are not shipped; `pxed check` warns about them instead of
    /// failing (see `config/paths.rs`).
    pub example: bool,
}

/// The settings that differ between `old` and `new` but only take effect
/// when pxed starts (the sockets they describe are opened once).
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.dhcp, &new.dhcp);
    [
        ("[dhcp] mode", a.mode != b.mode),
        ("[dhcp] listen", a.listen != b.listen),
        ("[dhcp] proxy_listen", a.proxy_listen != b.proxy_listen),
        ("[dhcp] interfaces", a.interfaces != b.interfaces),
        ("[dhcp] lease_db", a.lease_db != b.lease_db),
        ("[dhcp] lease_fsync", a.lease_fsync != b.lease_fsync),
        ("[ipv6_ra]", old.ipv6_ra.running() != new.ipv6_ra.running()),
        ("[events]", old.events != new.events),
        ("[database]", old.database != new.database),
        ("[server] name", old.server.name != new.server.name),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

/// Loads and fully validates the config at `path`.
pub fn load(path: &Path) -> Result<Arc<Config>, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            location: Location {
                file: path.display().to_string().into(),
                line: 1,
                column: 1,
            },
            reason: format!("cannot read: {e}"),
        }])
    })?;
    load_text(path, &text, TemplateFiles::Directory)
}

/// Validates `text` as the contents of the config file `path` (which names
/// it in errors and anchors its relative paths).
pub fn load_text(
    path: &Path,
    text: &str,
    templates: TemplateFiles,
) -> Result<Arc<Config>, ConfigErrors> {
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut loader = Loader {
        file: path.display().to_string().into(),
        text,
        errors: Vec::new(),
        asset_refs: Vec::new(),
    };
    let config = loader.build(path, &base_dir, templates);
    match config {
        Some(c) if loader.errors.is_empty() => Ok(Arc::new(c)),
        _ => Err(ConfigErrors(loader.errors)),
    }
}

struct Loader<'a> {
    file: Arc<str>,
    text: &'a str,
    errors: Vec<ConfigError>,
    /// Filled while the rules are read (`Loader::asset_ref`).
    asset_refs: Vec<AssetRef>,
}

impl Loader<'_> {
    fn location(&self, offset: usize) -> Location {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Location {
            file: self.file.clone(),
            line,
            column,
        }
    }

    fn error_at(&mut self, offset: usize, reason: impl Into<String>) {
        let location = self.location(offset);
        self.errors.push(ConfigError {
            location,
            reason: reason.into(),
        });
    }

    fn error<T>(&mut self, at: &Spanned<T>, reason: impl Into<String>) {
        self.error_at(at.span().start, reason);
    }

    fn build(
        &mut self,
        path: &Path,
        base_dir: &Path,
        template_files: TemplateFiles,
    ) -> Option<Config> {
        let wire = self.parse()?;
        let server = self.server(&wire.server, base_dir);
        let defaults = self.defaults(wire.defaults.as_ref());
        let state_dir = state_dir(base_dir);
        let mut dhcp = self.dhcp(wire.dhcp.as_ref(), wire.defaults.as_ref(), &state_dir);
        let events = self.events(wire.events.as_ref(), &dhcp.lease_db, &state_dir);
        let databases = self.databases(&wire, &dhcp.lease_db, events.db.as_deref());
        let ipv6_ra = self.ipv6_ra(wire.ipv6_ra.as_ref(), &dhcp.interfaces);
        let database = self.database(wire.database.as_ref(), base_dir);
        let (templates, template_files) = match template_files {
            TemplateFiles::Directory => match self.read_templates(&server.templates_dir) {
                Some(files) => self.templates(&server.templates_dir, &files),
                None => (None, Vec::new()),
            },
            TemplateFiles::Given(files) => self.templates(&server.templates_dir, files),
        };
        let mut rule_dhcp = reserve::RuleDhcp::default();
        let rules = self.rules(
            &wire.rules,
            &defaults,
            templates.as_ref(),
            &dhcp,
            &mut rule_dhcp,
        );
        dhcp.loader_settings.append(&mut rule_dhcp.loader_settings);
        let rules = rules?;
        let policy = Policy::new(rules, templates?);
        self.render_everything(&policy);
        let mut warnings = Vec::new();
        if !policy.rules.has_catch_all() {
            warnings.push(format!(
                "{}: no rule without `match`: machines that match no rule get the retry script",
                self.file
            ));
        }
        let mut files = vec![path.to_path_buf()];
        if let Some(tokens) = &server.api_tokens {
            warnings.extend(api::permission_warning(&tokens.path));
            files.push(tokens.path.clone());
        }
        files.extend(template_files);
        Some(Config {
            path: path.to_path_buf(),
            server,
            policy,
            files,
            loaded_at: SystemTime::now(),
            warnings,
            dhcp,
            events,
            ipv6_ra,
            database,
            asset_refs: std::mem::take(&mut self.asset_refs),
            databases,
            assets_dir_at: self.key_at(wire.server.assets_dir.as_ref()),
            example: wire.server.example.as_ref().is_some_and(|e| *e.get_ref()),
        })
    }
}

/// The config every adapter reads from. A reload stores a new snapshot; each
/// request loads the current one once and keeps it until it is answered.
pub type Shared = Arc<arc_swap::ArcSwap<Config>>;

#[cfg(test)]
mod tests;
