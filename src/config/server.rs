//! `[server]`: listeners and directories, with defaults applied and relative
//! paths resolved against the directory of `machines.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::{wire, Loader};
use crate::core::render::Base;

const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:8080";
const DEFAULT_TFTP_LISTEN: &str = "0.0.0.0:69";
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9180";
const DEFAULT_SEARCH_PATHS: &[&str] = &[
    "/usr/lib/ipxe",
    "/usr/lib/PXELINUX",
    "/usr/lib/syslinux/modules/bios",
];
/// `[server.files]` before the operator's entries: the Secure Boot chain as
/// Debian's shim-signed and grub-efi-*-signed packages install it, under the
/// names the firmware is handed (`core::grub::chain`) and the shim asks for.
pub const DEFAULT_FILES: &[(&str, &str)] = &[
    ("shimx64.efi", "/usr/lib/shim/shimx64.efi.signed"),
    (
        "grubx64.efi",
        "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
    ),
    ("shimaa64.efi", "/usr/lib/shim/shimaa64.efi.signed"),
    (
        "grubaa64.efi",
        "/usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed",
    ),
];
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

/// One `[server.files]` entry (or default), with where it is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSetting {
    /// The name machines ask for.
    pub name: String,
    pub path: PathBuf,
    /// `None` for pxed's default ([`DEFAULT_FILES`]).
    pub at: Option<crate::core::Location>,
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
    /// Names served from named files, looked up before the directories
    /// (`[server.files]` over [`DEFAULT_FILES`]).
    pub files: crate::assets::Files,
    /// Each entry of `files` with where it is set, for `pxed check`.
    pub file_settings: Vec<FileSetting>,
    /// The JSON API's clients; `None` (no `api_tokens`): no API at all.
    pub api_tokens: Option<std::sync::Arc<super::api::ApiTokens>>,
    /// This server's name: boot events and leases say which server handled
    /// them (several servers share one database, docs/ha.md). Default: the
    /// host name.
    pub name: String,
}

/// The host name, or `pxed` when the system has none.
fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "pxed".into())
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
    pub fn asset_roots(&self) -> crate::assets::Roots<'_> {
        crate::assets::Roots {
            files: &self.files,
            assets: &self.assets_dir,
            search: &self.search_paths,
        }
    }
}

impl Loader<'_> {
    pub(super) fn server(&mut self, w: &wire::Server, base_dir: &Path) -> ServerConfig {
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
        let (files, file_settings) = self.files(w.files.as_ref(), base_dir);
        ServerConfig {
            http_listen,
            admin_listen,
            tftp_listen,
            public_url,
            assets_dir: dir(&w.assets_dir, "assets"),
            templates_dir: dir(&w.templates_dir, "boot-templates"),
            search_paths,
            files,
            file_settings,
            api_tokens: self
                .api_tokens(w.api_tokens.as_ref(), base_dir)
                .map(std::sync::Arc::new),
            name: self.server_name(w.name.as_ref()),
        }
    }

    fn server_name(&mut self, v: Option<&Spanned<String>>) -> String {
        let Some(n) = v else { return host_name() };
        let name = n.get_ref();
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            self.error(
                n,
                format!("name {name:?}: 1 to 64 letters, digits, '-', '_' or '.'"),
            );
        }
        name.clone()
    }

    /// `[server.files]` over [`DEFAULT_FILES`] (an entry replaces the
    /// default of its name); relative files are under the config's directory.
    fn files(
        &mut self,
        w: Option<&std::collections::BTreeMap<String, Spanned<String>>>,
        base_dir: &Path,
    ) -> (crate::assets::Files, Vec<FileSetting>) {
        let mut settings: std::collections::BTreeMap<&str, FileSetting> = DEFAULT_FILES
            .iter()
            .map(|(name, path)| {
                let s = FileSetting {
                    name: name.to_string(),
                    path: PathBuf::from(path),
                    at: None,
                };
                (*name, s)
            })
            .collect();
        for (name, file) in w.into_iter().flatten() {
            let clean = crate::assets::check_relative(name).is_ok() && !name.starts_with("./");
            if !clean || file.get_ref().is_empty() {
                self.error(file, format!("[server.files] {name:?} = {:?}: the name must be a relative path (no '..') and the file must be named", file.get_ref()));
                continue;
            }
            let setting = FileSetting {
                name: name.clone(),
                path: base_dir.join(file.get_ref()),
                at: Some(self.location(file.span().start)),
            };
            settings.insert(name, setting);
        }
        let files = settings
            .values()
            .map(|s| (s.name.clone(), s.path.clone()))
            .collect();
        (files, settings.into_values().collect())
    }

    /// A listener that `""` turns off.
    fn optional_addr(&mut self, v: Option<&Spanned<String>>, default: &str) -> Option<SocketAddr> {
        match v {
            Some(s) if s.get_ref().is_empty() => None,
            other => Some(self.socket_addr(other, default)),
        }
    }

    pub(super) fn socket_addr(&mut self, v: Option<&Spanned<String>>, default: &str) -> SocketAddr {
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
}
