//! `machines.toml` exactly as serde reads it: loose types, every key known
//! (`deny_unknown_fields`), and byte spans kept on whatever is validated later so
//! that an error can name a line and column. Nothing outside `config` sees these
//! types; the server only ever holds a validated [`super::Config`].

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub server: Server,
    pub defaults: Option<Spanned<Section>>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Spanned<Section>>,
    /// `[dhcp]`, read and validated in `config/dhcp.rs`.
    pub dhcp: Option<Spanned<Dhcp>>,
    /// `[events]`, read and validated in `config/events.rs`.
    pub events: Option<Spanned<Events>>,
    /// `[ipv6_ra]`, read and validated in `config/ra.rs`.
    pub ipv6_ra: Option<Spanned<Ra>>,
    /// `[database]`, read and validated in `config/database.rs`.
    pub database: Option<Spanned<Database>>,
}

/// `[database]`, validated in `config/database.rs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub url: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
}

/// `[dhcp]`, validated in `config/dhcp.rs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dhcp {
    pub mode: Option<Spanned<String>>,
    pub listen: Option<Spanned<String>>,
    /// DHCPv6 (`config/dhcp6.rs`).
    pub listen6: Option<Spanned<String>>,
    pub dhcpv6: Option<Spanned<bool>>,
    pub proxy_listen: Option<Spanned<String>>,
    pub interfaces: Option<Spanned<Vec<String>>>,
    pub lease_db: Option<Spanned<String>>,
    pub lease_fsync: Option<Spanned<bool>>,
    pub bios_loader: Option<Spanned<String>>,
    pub efi_loader: Option<Spanned<String>>,
    pub arm32_loader: Option<Spanned<String>>,
    pub arm64_loader: Option<Spanned<String>>,
    pub rate_per_mac: Option<Spanned<u32>>,
    pub rate_per_circuit: Option<Spanned<u32>>,
    pub rate_per_relay: Option<Spanned<u32>>,
    pub rate_table_size: Option<Spanned<u32>>,
    pub max_offers: Option<Spanned<u32>>,
    pub max_leases_per_mac: Option<Spanned<u32>>,
    pub max_leases_per_circuit: Option<Spanned<u32>>,
    #[serde(default, rename = "subnet")]
    pub subnets: Vec<Spanned<DhcpSubnet>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// One `[[dhcp.subnet]]`.
pub struct DhcpSubnet {
    pub network: Spanned<String>,
    pub pool: Option<Spanned<String>>,
    pub router: Option<Spanned<String>>,
    pub dns: Option<Spanned<Vec<String>>>,
    pub domain: Option<Spanned<String>>,
    pub lease_time: Option<Spanned<u32>>,
}

/// `[events]`, validated in `config/events.rs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Events {
    pub db: Option<Spanned<String>>,
    pub keep_days: Option<Spanned<u32>>,
    pub max_events: Option<Spanned<u64>>,
}

/// `[ipv6_ra]`, validated in `config/ra.rs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ra {
    pub enabled: Option<Spanned<bool>>,
    pub interfaces: Option<Spanned<Vec<String>>>,
    pub interval: Option<Spanned<u32>>,
    pub managed: Option<Spanned<bool>>,
    pub other: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub http_listen: Option<Spanned<String>>,
    pub admin_listen: Option<Spanned<String>>,
    pub tftp_listen: Option<Spanned<String>>,
    pub public_url: Option<Spanned<String>>,
    pub assets_dir: Option<Spanned<String>>,
    pub templates_dir: Option<Spanned<String>>,
    pub search_paths: Option<Vec<Spanned<String>>>,
    /// `[server.files]`: served name → file (see `config/server.rs`).
    pub files: Option<BTreeMap<String, Spanned<String>>>,
    /// The API's token file (see `config/api.rs`).
    pub api_tokens: Option<Spanned<String>>,
    /// The shipped example config (see `config/paths.rs`).
    pub example: Option<Spanned<bool>>,
    /// This server's name in boot events (default: the host name).
    pub name: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selectors {
    pub mac: Option<Spanned<StringList>>,
    pub product: Option<Spanned<StringList>>,
    pub serial: Option<Spanned<StringList>>,
    pub uuid: Option<Spanned<StringList>>,
    pub manufacturer: Option<Spanned<StringList>>,
    pub arch: Option<Spanned<StringList>>,
}

/// One `[[rule]]`, or the `[defaults]` table (which may not have `name`,
/// `priority` or `match`). A rule's unset boot fields fall back to `[defaults]`.
/// One struct for both because serde cannot combine `flatten` with
/// `deny_unknown_fields` or with spans.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    pub name: Option<Spanned<String>>,
    pub priority: Option<Spanned<i32>>,
    #[serde(rename = "match")]
    pub selectors: Option<Spanned<Selectors>>,
    pub boot: Option<Spanned<String>>,
    pub template: Option<Spanned<String>>,
    pub menu_template: Option<Spanned<String>>,
    pub grub_template: Option<Spanned<String>>,
    pub kernel: Option<Spanned<String>>,
    pub initrd: Option<Spanned<String>>,
    pub args: Option<Spanned<String>>,
    pub console: Option<Spanned<Console>>,
    pub menu_timeout: Option<Spanned<u32>>,
    pub vars: Option<BTreeMap<String, toml::Value>>,
    /// Installer configs: name (`user-data`, `kickstart`, …) → template.
    pub configs: Option<Spanned<BTreeMap<String, String>>>,
    /// DHCP reservation and loader override (see `config/dhcp.rs`): `ip` is
    /// one address or a list, at most one IPv4 and one IPv6.
    pub ip: Option<Spanned<StringList>>,
    pub hostname: Option<Spanned<String>>,
    pub loader: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Console {
    /// `ttyS1`, `1` or `none`.
    pub port: ConsolePort,
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Whether the firmware already copies its screen to this port.
    pub firmware_redirect: Option<bool>,
}

fn default_baud() -> u32 {
    115_200
}

#[derive(Debug, Clone)]
pub enum ConsolePort {
    Index(i64),
    Name(String),
}

impl<'de> Deserialize<'de> for ConsolePort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConsolePort;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a serial port: a number (1) or a name (\"ttyS1\", \"none\")")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ConsolePort, E> {
                Ok(ConsolePort::Index(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ConsolePort, E> {
                Ok(ConsolePort::Name(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A selector value: one string or a list of strings.
#[derive(Debug, Clone, Default)]
pub struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringList, E> {
                Ok(StringList(vec![v.to_string()]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StringList, E> {
                Ok(StringList(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringList, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<ScalarString>()? {
                    out.push(item.0);
                }
                Ok(StringList(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A list element: a string, or a number written without quotes (arch `7`).
struct ScalarString(String);

impl<'de> Deserialize<'de> for ScalarString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ScalarString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}
