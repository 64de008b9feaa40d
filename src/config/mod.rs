//! Loading `machines.toml` and `boot-templates/` into one validated, immutable
//! [`Config`]. This is the only place that reads the operator's files; it either
//! returns a config in which every rule has been rendered once, or every problem
//! found, each with file, line, column and reason. The server swaps configs
//! whole, so a broken edit never replaces a working one.

mod dhcp;
mod events;
mod ra;
mod wire;

pub use dhcp::{DhcpConfig, DhcpLimits, DhcpMode, Reservation, Subnet};
pub use events::EventsConfig;
pub use ra::RaConfig;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use toml::Spanned;

use crate::core::render::{self, Base};
use crate::core::rules::{Glob, Selectors};
use crate::core::{
    Arch, Boot, BootKind, ClientString, Console, Identity, Location, Mac, Policy, Rule, RuleSet,
    Templates, Uuid,
};

const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:8080";
const DEFAULT_TFTP_LISTEN: &str = "0.0.0.0:69";
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9180";
const DEFAULT_SEARCH_PATHS: &[&str] = &[
    "/usr/lib/ipxe",
    "/usr/lib/PXELINUX",
    "/usr/lib/syslinux/modules/bios",
];
const DEFAULT_MENU_TIMEOUT: u32 = 10;
const DEFAULT_CONSOLE: Console = Console {
    index: 0,
    baud: 115_200,
};

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

/// Stands for pxed's address in URLs shown when it cannot be known.
pub const PXED_ADDRESS_PLACEHOLDER: &str = "<pxed-address>";

/// What [`ServerConfig::shown_base`] can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShownBase {
    /// The URL machines are told.
    Known(Base),
    /// `http://<pxed-address>:<port>`: pxed listens on every address and no
    /// `public_url` is set, so the host depends on the machine's network.
    Placeholder(Base),
}

impl ShownBase {
    pub fn base(&self) -> &Base {
        match self {
            ShownBase::Known(b) | ShownBase::Placeholder(b) => b,
        }
    }

    /// One line for the operator when the URL is a placeholder.
    pub fn note(&self) -> Option<&'static str> {
        match self {
            ShownBase::Known(_) => None,
            ShownBase::Placeholder(_) => Some(
                "http_listen is an unspecified address: each machine is told the address it reached pxed at \
                 (by DHCP, the receiving interface's); set [server] public_url to show a real URL here",
            ),
        }
    }
}

/// Listeners and paths from `[server]`, with defaults applied and relative paths
/// resolved against the directory of `machines.toml`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub http_listen: SocketAddr,
    /// The admin listener (status page, rule preview, `/metrics`); `None`
    /// when `admin_listen = ""`. Loopback by default: it needs no token.
    pub admin_listen: Option<SocketAddr>,
    /// `None` when `tftp_listen = ""` turns TFTP off.
    pub tftp_listen: Option<SocketAddr>,
    /// How machines reach the HTTP server; `None` derives it per request.
    pub public_url: Option<Base>,
    pub assets_dir: PathBuf,
    pub templates_dir: PathBuf,
    /// Read-only directories searched after `assets_dir` (iPXE and syslinux
    /// binaries from distribution packages).
    pub search_paths: Vec<PathBuf>,
}

impl ServerConfig {
    /// How a machine that reached pxed at `ip` finds the HTTP server: the
    /// configured `public_url`, else `http://<ip>:<http port>`.
    pub fn base_at(&self, ip: std::net::IpAddr) -> Base {
        self.public_url
            .clone()
            .unwrap_or_else(|| Base::from_addr(SocketAddr::new(ip, self.http_listen.port())))
    }

    /// The base URL to show an operator when no machine is asking (the admin
    /// rule preview, `pxed render`): `public_url`, else `http_listen` when it
    /// names one address. On `0.0.0.0`/`[::]` each machine is told the address
    /// it reached pxed at, which only a request knows: then a placeholder.
    pub fn shown_base(&self) -> ShownBase {
        if let Some(base) = &self.public_url {
            return ShownBase::Known(base.clone());
        }
        let listen = self.http_listen;
        if listen.ip().is_unspecified() {
            ShownBase::Placeholder(Base::Http(format!(
                "http://{PXED_ADDRESS_PLACEHOLDER}:{}",
                listen.port()
            )))
        } else {
            ShownBase::Known(Base::from_addr(listen))
        }
    }

    /// Every root an asset may come from, in lookup order.
    pub fn asset_roots(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.assets_dir.as_path())
            .chain(self.search_paths.iter().map(PathBuf::as_path))
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
    /// `[dhcp]` and the rules' reservations (see `config/dhcp.rs`).
    pub dhcp: DhcpConfig,
    /// `[events]` (see `config/events.rs`).
    pub events: EventsConfig,
    /// `[ipv6_ra]`, the Router Solicitation responder (see `config/ra.rs`).
    pub ipv6_ra: RaConfig,
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

/// One template file as read from disk: its name (what rules refer to), its
/// path (for error messages) and its text.
#[derive(Debug, Clone)]
pub struct TemplateFile {
    pub name: String,
    pub path: PathBuf,
    pub text: String,
}

/// Where a config's templates come from.
#[derive(Debug, Clone, Copy)]
pub enum TemplateFiles<'a> {
    /// Read from the directory `templates_dir` names (what the daemon does).
    Directory,
    /// Already read (see [`read_templates`]), whatever `templates_dir` says:
    /// the fuzz target validates thousands of configs a second against the
    /// shipped templates without touching the disk.
    Given(&'a [TemplateFile]),
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
    };
    let config = loader.build(path, &base_dir, templates);
    match config {
        Some(c) if loader.errors.is_empty() => Ok(Arc::new(c)),
        _ => Err(ConfigErrors(loader.errors)),
    }
}

/// Reads every template file in `dir` (editor swap and backup files skipped).
pub fn read_templates(dir: &Path) -> Result<Vec<TemplateFile>, ConfigErrors> {
    let mut loader = Loader {
        file: dir.display().to_string().into(),
        text: "",
        errors: Vec::new(),
    };
    match loader.read_templates(dir) {
        Some(files) if loader.errors.is_empty() => Ok(files),
        _ => Err(ConfigErrors(loader.errors)),
    }
}

struct Loader<'a> {
    file: Arc<str>,
    text: &'a str,
    errors: Vec<ConfigError>,
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
        let wire: wire::File = match toml::from_str(self.text) {
            Ok(w) => w,
            Err(e) => {
                let offset = e.span().map_or(0, |s| s.start);
                self.error_at(offset, e.message().to_string());
                return None;
            }
        };
        let server = self.server(&wire.server, base_dir);
        let defaults = self.defaults(wire.defaults.as_ref());
        let dhcp = self.dhcp(
            wire.dhcp.as_ref(),
            &wire.rules,
            wire.defaults.as_ref(),
            base_dir,
        );
        let events = self.events(wire.events.as_ref(), &dhcp.lease_db, base_dir);
        let ipv6_ra = self.ipv6_ra(wire.ipv6_ra.as_ref(), &dhcp.interfaces);
        let (templates, template_files) = match template_files {
            TemplateFiles::Directory => match self.read_templates(&server.templates_dir) {
                Some(files) => self.templates(&server.templates_dir, &files),
                None => (None, Vec::new()),
            },
            TemplateFiles::Given(files) => self.templates(&server.templates_dir, files),
        };
        let mut rules = Vec::new();
        let mut names = HashSet::new();
        for (order, section) in wire.rules.iter().enumerate() {
            if let Some(rule) = self.rule(section, order, &defaults, templates.as_ref()) {
                if !names.insert(rule.name.clone()) {
                    self.error_at(
                        section.span().start,
                        format!(
                            "a rule named {:?} already exists; rule names must be unique",
                            rule.name
                        ),
                    );
                }
                rules.push(rule);
            }
        }
        let rules = match RuleSet::new(rules) {
            Ok(r) => r,
            Err(clashes) => {
                for c in clashes {
                    self.errors.push(ConfigError {
                        location: c.second.1.clone(),
                        reason: c.to_string(),
                    });
                }
                return None;
            }
        };
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
        })
    }

    fn server(&mut self, w: &wire::Server, base_dir: &Path) -> ServerConfig {
        let http_listen = self.socket_addr(w.http_listen.as_ref(), DEFAULT_HTTP_LISTEN);
        let tftp_listen = self.optional_addr(w.tftp_listen.as_ref(), DEFAULT_TFTP_LISTEN);
        let admin_listen = self.optional_addr(w.admin_listen.as_ref(), DEFAULT_ADMIN_LISTEN);
        let public_url = w.public_url.as_ref().and_then(|u| {
            let base = Base::from_url(u.get_ref());
            if base.is_none() {
                self.error(u, format!("public_url {:?} must be http://host[:port][/path] with only host, port and path characters", u.get_ref()));
            }
            base
        });
        let dir = |v: &Option<Spanned<String>>, default: &str| {
            base_dir.join(v.as_ref().map_or(default, |s| s.get_ref().as_str()))
        };
        let search_paths = match &w.search_paths {
            Some(paths) => paths.iter().map(|p| base_dir.join(p.get_ref())).collect(),
            None => DEFAULT_SEARCH_PATHS.iter().map(PathBuf::from).collect(),
        };
        ServerConfig {
            http_listen,
            admin_listen,
            tftp_listen,
            public_url,
            assets_dir: dir(&w.assets_dir, "assets"),
            templates_dir: dir(&w.templates_dir, "boot-templates"),
            search_paths,
        }
    }

    /// A listener that `""` turns off.
    fn optional_addr(&mut self, v: Option<&Spanned<String>>, default: &str) -> Option<SocketAddr> {
        match v {
            Some(s) if s.get_ref().is_empty() => None,
            other => Some(self.socket_addr(other, default)),
        }
    }

    fn socket_addr(&mut self, v: Option<&Spanned<String>>, default: &str) -> SocketAddr {
        let fallback = || {
            default
                .parse()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
        };
        match v {
            None => fallback(),
            Some(s) => s.get_ref().parse().unwrap_or_else(|_| {
                self.error(
                    s,
                    format!(
                        "{:?} is not an address:port such as \"0.0.0.0:8080\"",
                        s.get_ref()
                    ),
                );
                fallback()
            }),
        }
    }

    fn defaults(&mut self, d: Option<&Spanned<wire::Section>>) -> wire::Section {
        let Some(d) = d else {
            return wire::Section::default();
        };
        let section = d.get_ref();
        for (set, key) in [
            (section.name.is_some(), "name"),
            (section.priority.is_some(), "priority"),
            (section.selectors.is_some(), "match"),
        ] {
            if set {
                self.error(
                    d,
                    format!("[defaults] cannot have `{key}`: it belongs to a [[rule]]"),
                );
            }
        }
        section.clone()
    }

    /// The template files in `dir`; what cannot be read is an error. `None`
    /// when the directory itself cannot be read.
    fn read_templates(&mut self, dir: &Path) -> Option<Vec<TemplateFile>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                self.errors.push(ConfigError {
                    location: Location {
                        file: dir.display().to_string().into(),
                        line: 1,
                        column: 1,
                    },
                    reason: format!("cannot read the template directory: {e}"),
                });
                return None;
            }
        };
        let mut files = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            // Editors leave swap and backup files beside the real ones.
            if name.starts_with('.')
                || name.ends_with('~')
                || name.ends_with(".swp")
                || !entry.path().is_file()
            {
                continue;
            }
            match std::fs::read_to_string(entry.path()) {
                Ok(text) => files.push(TemplateFile {
                    name,
                    path: entry.path(),
                    text,
                }),
                Err(e) => self.errors.push(ConfigError {
                    location: Location {
                        file: entry.path().display().to_string().into(),
                        line: 1,
                        column: 1,
                    },
                    reason: format!("cannot read: {e}"),
                }),
            }
        }
        Some(files)
    }

    /// Compiles the template files; `dir` names missing required ones.
    fn templates(
        &mut self,
        dir: &Path,
        files: &[TemplateFile],
    ) -> (Option<Templates>, Vec<PathBuf>) {
        let sources: BTreeMap<&str, &TemplateFile> =
            files.iter().map(|f| (f.name.as_str(), f)).collect();
        for required in render::REQUIRED {
            if !sources.contains_key(*required) {
                self.errors.push(ConfigError {
                    location: Location { file: dir.join(required).display().to_string().into(), line: 1, column: 1 },
                    reason: "missing: pxed needs this template (copy it from the shipped boot-templates/)".into(),
                });
            }
        }
        let paths: Vec<(&str, String, &str)> = sources
            .values()
            .map(|f| {
                (
                    f.name.as_str(),
                    f.path.display().to_string(),
                    f.text.as_str(),
                )
            })
            .collect();
        let files = sources.values().map(|f| f.path.clone()).collect();
        match Templates::compile(paths.iter().map(|(n, p, t)| (*n, p.as_str(), *t))) {
            Ok(t) => (Some(t), files),
            Err(errs) => {
                self.errors.extend(errs.into_iter().map(|e| ConfigError {
                    location: e.location,
                    reason: e.reason,
                }));
                (None, files)
            }
        }
    }

    fn rule(
        &mut self,
        section: &Spanned<wire::Section>,
        order: usize,
        defaults: &wire::Section,
        templates: Option<&Templates>,
    ) -> Option<Rule<Boot>> {
        let s = section.get_ref();
        let Some(name) = &s.name else {
            self.error(section, "a [[rule]] needs a `name`");
            return None;
        };
        let location = self.location(name.span().start);
        let selectors = match &s.selectors {
            Some(m) => self.selectors(m.get_ref()),
            None => Selectors::default(),
        };
        let boot = self.boot(s, defaults, templates)?;
        Some(Rule {
            name: name.get_ref().clone(),
            priority: s.priority.as_ref().map_or(0, |p| *p.get_ref()),
            selectors,
            boot,
            order,
            location,
        })
    }

    fn selectors(&mut self, m: &wire::Selectors) -> Selectors {
        Selectors {
            mac: self.parsed(&m.mac, |s| s.parse::<Mac>().map_err(|e| e.to_string())),
            uuid: self.parsed(&m.uuid, |s| s.parse::<Uuid>().map_err(|e| e.to_string())),
            serial: self.parsed(&m.serial, |s| Ok(Glob::new(s))),
            product: self.parsed(&m.product, |s| Ok(Glob::new(s))),
            manufacturer: self.parsed(&m.manufacturer, |s| Ok(Glob::new(s))),
            arch: self.parsed(&m.arch, |s| {
                s.parse::<Arch>().map_err(|_| {
                    let names: Vec<String> = Arch::NAMED.iter().map(Arch::name).collect();
                    format!(
                        "unknown arch {s:?}; use one of {} or an option 93 number",
                        names.join(", ")
                    )
                })
            }),
        }
    }

    fn parsed<T>(
        &mut self,
        v: &Option<Spanned<wire::StringList>>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<Vec<T>> {
        let v = v.as_ref()?;
        if v.get_ref().0.is_empty() {
            self.error(
                v,
                "an empty list matches nothing; remove the key to match any value",
            );
        }
        let mut out = Vec::new();
        for item in &v.get_ref().0 {
            match parse(item) {
                Ok(x) => out.push(x),
                Err(e) => self.error(v, e),
            }
        }
        Some(out)
    }

    fn boot(
        &mut self,
        s: &wire::Section,
        d: &wire::Section,
        templates: Option<&Templates>,
    ) -> Option<Boot> {
        fn pick<'a, T>(
            rule: &'a Option<Spanned<T>>,
            default: &'a Option<Spanned<T>>,
        ) -> Option<&'a Spanned<T>> {
            rule.as_ref().or(default.as_ref())
        }
        let kind = match pick(&s.boot, &d.boot) {
            None => BootKind::Ipxe,
            Some(k) => match k.get_ref().as_str() {
                "ipxe" => BootKind::Ipxe,
                "pxelinux" => BootKind::Pxelinux,
                "local" => BootKind::Local,
                other => {
                    self.error(
                        k,
                        format!("boot = {other:?}: use \"ipxe\", \"pxelinux\" or \"local\""),
                    );
                    return None;
                }
            },
        };
        let string = |v: Option<&Spanned<String>>| v.map(|s| s.get_ref().clone());
        let template = pick(&s.template, &d.template);
        let menu_template = pick(&s.menu_template, &d.menu_template);
        for t in [template, menu_template].into_iter().flatten() {
            if templates.is_some_and(|ts| !ts.has(t.get_ref())) {
                self.error(
                    t,
                    format!("no template {:?} in the template directory", t.get_ref()),
                );
            }
        }
        let template = match (template, kind) {
            (Some(t), _) => t.get_ref().clone(),
            (None, BootKind::Ipxe) => render::LINUX.to_string(),
            (None, BootKind::Pxelinux) => render::PXELINUX_CHAIN.to_string(),
            (None, BootKind::Local) => String::new(),
        };
        let kernel = string(pick(&s.kernel, &d.kernel));
        let needs_kernel = matches!(kind, BootKind::Pxelinux)
            || (kind == BootKind::Ipxe && template == render::LINUX);
        if needs_kernel && kernel.is_none() {
            let at = s.name.as_ref().map_or(0, |n| n.span().start);
            self.error_at(at, format!("boot = {:?} with the default template needs a `kernel` (here or in [defaults])", kind.name()));
        }
        let console = match pick(&s.console, &d.console) {
            None => Some(DEFAULT_CONSOLE),
            Some(c) => self.console(c),
        };
        let mut vars = serde_json::Map::new();
        for source in [&d.vars, &s.vars].into_iter().flatten() {
            for (k, v) in source {
                vars.insert(
                    k.clone(),
                    serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
                );
            }
        }
        Some(Boot {
            kind,
            template,
            menu_template: string(menu_template).unwrap_or_else(|| render::MENU.to_string()),
            kernel,
            initrd: string(pick(&s.initrd, &d.initrd)),
            args: string(pick(&s.args, &d.args)).unwrap_or_default(),
            console,
            menu_timeout: pick(&s.menu_timeout, &d.menu_timeout)
                .map_or(DEFAULT_MENU_TIMEOUT, |t| *t.get_ref()),
            vars,
        })
    }

    fn console(&mut self, c: &Spanned<wire::Console>) -> Option<Console> {
        let index = match &c.get_ref().port {
            wire::ConsolePort::Name(n) if n == "none" => return None,
            wire::ConsolePort::Name(n) => n.strip_prefix("ttyS").and_then(|i| i.parse::<u8>().ok()),
            wire::ConsolePort::Index(i) => u8::try_from(*i).ok(),
        };
        let baud = c.get_ref().baud;
        const BAUDS: &[u32] = &[9600, 19200, 38400, 57600, 115200];
        if !BAUDS.contains(&baud) {
            self.error(c, format!("baud {baud} is not one of {BAUDS:?}"));
        }
        match index {
            Some(index) if index < 4 => Some(Console { index, baud }),
            _ => {
                self.error(
                    c,
                    "console port must be 0-3, \"ttyS0\"-\"ttyS3\" or \"none\"",
                );
                None
            }
        }
    }

    /// Renders the bootstrap, the retry script and every rule's templates once
    /// with a sample machine, so that an undefined variable or a failing helper
    /// is caught now and not when a machine boots.
    fn render_everything(&mut self, policy: &Policy) {
        let base = Base::Http("http://pxed.example:8080".into());
        if let Err(e) = policy.check_fixed_templates(&base) {
            self.errors.push(ConfigError {
                location: e.location,
                reason: e.reason,
            });
        }
        let sample = |arch| Identity {
            mac: Some(Mac([0x52, 0x54, 0x00, 0x00, 0x00, 0x01])),
            product: ClientString::new("sample product"),
            serial: ClientString::new("sample serial"),
            manufacturer: ClientString::new("sample vendor"),
            uuid: "00000000-0000-0000-0000-000000000001".parse().ok(),
            arch: Some(arch),
        };
        // As a one-shot override would render it, so that a template using
        // `install.callback_url` is checked with a value.
        let install = crate::core::lifecycle::Install {
            callback_url: Some(crate::core::lifecycle::callback_url(
                &base,
                Mac([0x52, 0x54, 0x00, 0x00, 0x00, 0x01]),
                "00000000000000000000000000000000",
            )),
        };
        for rule in policy.rules.iter() {
            let mut templates = vec![(
                rule.boot.ipxe_template(Some(Arch::Bios)).to_string(),
                Arch::Bios,
            )];
            templates.push((
                rule.boot.ipxe_template(Some(Arch::EfiX64)).to_string(),
                Arch::EfiX64,
            ));
            if rule.boot.kind == BootKind::Pxelinux {
                templates.push((rule.boot.menu_template.clone(), Arch::Bios));
            }
            templates.dedup_by(|a, b| a.0 == b.0);
            for (t, arch) in templates {
                if let Err(e) = policy.render_rule_checked(rule, &t, &sample(arch), &base, &install)
                {
                    // One broken template fails every rule using it: say it once.
                    if self.errors.iter().any(|known| known.location == e.location) {
                        continue;
                    }
                    self.errors.push(ConfigError {
                        location: e.location,
                        reason: format!(
                            "{} (rendering rule {:?} at {})",
                            e.reason, rule.name, rule.location
                        ),
                    });
                }
            }
        }
    }
}

/// The config every adapter reads from. A reload stores a new snapshot; each
/// request loads the current one once and keeps it until it is answered.
pub type Shared = Arc<arc_swap::ArcSwap<Config>>;
