//! `[dhcp]` and the DHCP keys of `[[rule]]` (`ip`, `hostname`, `loader`): read
//! loosely by serde ([`wire::Dhcp`]) and validated here into [`DhcpConfig`], with every
//! error at its file:line:col. Safe by default: without `[dhcp]` the mode is
//! `off`, and `full` needs at least one `[[dhcp.subnet]]` with a pool.
//!
//! ```toml
//! [dhcp]
//! mode = "full"                 # "off" (default) | "proxy" | "full"
//! interfaces = ["br0"]          # default: every interface
//! efi_loader = "ipxe.efi"       # default snponly.efi
//! [[dhcp.subnet]]
//! network = "10.97.0.0/16"
//! pool = "10.97.1.10-10.97.1.250"
//! router = "10.97.0.1"
//! dns = ["10.97.0.1"]
//! domain = "lab.example"
//! lease_time = 3600
//! ```

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::dhcp6::{is_ipv6_network, Subnet6};
use super::{wire, Loader};
use crate::core::decide::Loaders;

const DEFAULT_LISTEN: &str = "0.0.0.0:67";
const DEFAULT_LISTEN6: &str = "[::]:547";
const DEFAULT_PROXY_LISTEN: &str = "0.0.0.0:4011";
const DEFAULT_LEASE_DB: &str = "pxed-leases.sqlite";
const DEFAULT_LEASE_TIME: u32 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpMode {
    Off,
    /// ProxyDHCP: boot information only, beside another DHCP server.
    Proxy,
    /// pxed runs the subnet's DHCP: addresses, leases, reservations.
    Full,
}

impl DhcpMode {
    /// As written in `[dhcp] mode`.
    pub fn name(&self) -> &'static str {
        match self {
            DhcpMode::Off => "off",
            DhcpMode::Proxy => "proxy",
            DhcpMode::Full => "full",
        }
    }
}

/// One subnet pxed serves in full mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
    /// Inclusive; `None` for a subnet that only holds reservations.
    pub pool: Option<(Ipv4Addr, Ipv4Addr)>,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    /// Seconds.
    pub lease_time: u32,
}

impl Subnet {
    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask_bits(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask_bits(self.prefix) == u32::from(self.network)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask_bits(self.prefix))
    }

    pub fn in_pool(&self, ip: Ipv4Addr) -> bool {
        self.pool
            .is_some_and(|(a, b)| (u32::from(a)..=u32::from(b)).contains(&u32::from(ip)))
    }
}

fn mask_bits(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

/// The validated `[dhcp]` section.
#[derive(Debug, Clone)]
pub struct DhcpConfig {
    pub mode: DhcpMode,
    pub listen: SocketAddr,
    /// Whether DHCPv6 runs (`src/dhcp/v6/`): `[dhcp] dhcpv6`, by default
    /// in full mode with an IPv6 subnet.
    pub dhcpv6: bool,
    pub listen6: SocketAddr,
    /// Proxy mode also answers here (UEFI PXE asks on 4011 after a proxy offer).
    pub proxy_listen: SocketAddr,
    /// Interface names to answer on; empty: all.
    pub interfaces: Vec<String>,
    pub lease_db: PathBuf,
    /// fsync every lease commit (synchronous=FULL) to survive power loss, not
    /// only a crash of pxed. Default false; see docs/decisions.md.
    pub lease_fsync: bool,
    pub loaders: Loaders,
    pub subnets: Vec<Subnet>,
    /// The IPv6 subnets, served by DHCPv6 (`config/dhcp6.rs`).
    pub subnets6: Vec<Subnet6>,
    /// Every loader name, `[dhcp]`'s and the rules', with where it is set
    /// (for `pxed check`).
    pub loader_settings: Vec<super::LoaderSetting>,
    pub limits: DhcpLimits,
}

/// Flood protection (docs/dhcp.md, "Limits"). Rates are DHCP messages per
/// second with bursts of twice that; 0 turns a rate limit off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpLimits {
    /// Per client MAC (chaddr).
    pub rate_per_mac: u32,
    /// Per relay address + option 82 circuit id (one switch port).
    pub rate_per_circuit: u32,
    /// Per relay address, whatever the circuit. Off by default: a relay
    /// without option 82 speaks for a whole network, whose size pxed cannot know.
    pub rate_per_relay: u32,
    /// MACs, and relay sources, the rate limiter remembers (each table);
    /// read at start.
    pub rate_table_size: usize,
    /// Addresses held by outstanding offers, all subnets together; beyond it
    /// the oldest offer is let go. Default: a quarter of all pool addresses.
    pub max_offers: usize,
    /// Addresses one MAC may hold under different client ids (PXE ROM,
    /// installer and installed OS often send different ones).
    pub max_leases_per_mac: usize,
    /// Addresses held through one relay circuit (giaddr + option 82 circuit
    /// id: one switch port); 0 = no cap.
    pub max_leases_per_circuit: usize,
}

impl Default for DhcpLimits {
    fn default() -> DhcpLimits {
        DhcpLimits {
            rate_per_mac: 10,
            rate_per_circuit: 100,
            rate_per_relay: 0,
            rate_table_size: 65_536,
            max_offers: MIN_OFFERS,
            max_leases_per_mac: 4,
            max_leases_per_circuit: 32,
        }
    }
}

/// The default `max_offers` never goes below this (tiny test pools).
const MIN_OFFERS: usize = 64;

impl DhcpLimits {
    /// The default offer cap for these subnets: a quarter of their pools.
    fn offers_for(subnets: &[Subnet]) -> usize {
        let addresses: u64 = subnets
            .iter()
            .filter_map(|s| s.pool)
            .map(|(a, b)| u64::from(u32::from(b) - u32::from(a)) + 1)
            .sum();
        usize::try_from(addresses / 4)
            .unwrap_or(usize::MAX)
            .max(MIN_OFFERS)
    }
}

impl DhcpConfig {
    /// The subnet containing `ip` (an interface address or a relay's giaddr).
    pub fn subnet_for(&self, ip: Ipv4Addr) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.contains(ip))
    }

    /// The IPv6 subnet containing `ip`.
    pub fn subnet6_for(&self, ip: Ipv6Addr) -> Option<&Subnet6> {
        self.subnets6.iter().find(|s| s.contains(ip))
    }
}

impl Loader<'_> {
    /// Validates `[dhcp]` (the rules' `loader`, `ip` and `hostname` are
    /// validated with each rule: [`Loader::rule_dhcp`]).
    pub(super) fn dhcp(
        &mut self,
        w: Option<&Spanned<wire::Dhcp>>,
        defaults: Option<&Spanned<wire::Section>>,
        state_dir: &Path,
    ) -> DhcpConfig {
        if let Some(d) = defaults {
            self.no_rule_dhcp_keys(d.get_ref());
        }
        let empty = wire::Dhcp::default();
        let w = w.map_or(&empty, |w| w.get_ref());
        let mode = self.dhcp_mode(w);
        let listen = self.socket_addr(w.listen.as_ref(), DEFAULT_LISTEN);
        let listen6 = self.socket_addr(w.listen6.as_ref(), DEFAULT_LISTEN6);
        let proxy_listen = self.socket_addr(w.proxy_listen.as_ref(), DEFAULT_PROXY_LISTEN);
        let (loaders, loader_settings) = self.loaders(w);
        let subnets6 = self.subnets6(w);
        let subnets = self.subnets(w, mode, &subnets6);
        DhcpConfig {
            mode,
            listen,
            dhcpv6: self.dhcpv6(w, mode, &subnets6),
            listen6,
            proxy_listen,
            interfaces: w
                .interfaces
                .as_ref()
                .map(|i| i.get_ref().clone())
                .unwrap_or_default(),
            lease_db: state_dir.join(
                w.lease_db
                    .as_ref()
                    .map_or(DEFAULT_LEASE_DB, |p| p.get_ref().as_str()),
            ),
            lease_fsync: w.lease_fsync.as_ref().is_some_and(|f| *f.get_ref()),
            loaders,
            limits: self.dhcp_limits(w, &subnets),
            subnets,
            subnets6,
            loader_settings,
        }
    }

    fn dhcp_mode(&mut self, w: &wire::Dhcp) -> DhcpMode {
        let Some(m) = &w.mode else {
            return DhcpMode::Off;
        };
        match m.get_ref().as_str() {
            "off" => DhcpMode::Off,
            "proxy" => DhcpMode::Proxy,
            "full" => DhcpMode::Full,
            other => {
                self.error(
                    m,
                    format!("mode = {other:?}: use \"off\", \"proxy\" or \"full\""),
                );
                DhcpMode::Off
            }
        }
    }

    /// Every IPv4 `[[dhcp.subnet]]`; no two may overlap, and full mode needs
    /// a pool (IPv4 or IPv6: `v6`).
    fn subnets(&mut self, w: &wire::Dhcp, mode: DhcpMode, v6: &[Subnet6]) -> Vec<Subnet> {
        let wire: Vec<_> = w
            .subnets
            .iter()
            .filter(|s| !is_ipv6_network(s.get_ref()))
            .collect();
        let subnets: Vec<Subnet> = wire.iter().filter_map(|s| self.subnet(s)).collect();
        for (i, a) in subnets.iter().enumerate() {
            for b in &subnets[..i] {
                if a.contains(b.network) || b.contains(a.network) {
                    self.error(
                        &wire[i].get_ref().network,
                        format!(
                            "subnet {}/{} overlaps subnet {}/{}",
                            a.network, a.prefix, b.network, b.prefix
                        ),
                    );
                }
            }
        }
        let pools = subnets.iter().any(|s| s.pool.is_some()) || v6.iter().any(|s| s.pool.is_some());
        if mode == DhcpMode::Full && !pools {
            let at = w.mode.as_ref().map_or(0, |m| m.span().start);
            self.error_at(
                at,
                "mode = \"full\" needs at least one [[dhcp.subnet]] with a `pool`",
            );
        }
        subnets
    }

    /// `rate_*`, `max_offers`, `max_leases_per_mac`: defaults, bounds.
    fn dhcp_limits(&mut self, w: &wire::Dhcp, subnets: &[Subnet]) -> DhcpLimits {
        let d = DhcpLimits::default();
        let num = |v: &Option<Spanned<u32>>| v.as_ref().map(|v| *v.get_ref());
        let limits = DhcpLimits {
            rate_per_mac: num(&w.rate_per_mac).unwrap_or(d.rate_per_mac),
            rate_per_circuit: num(&w.rate_per_circuit).unwrap_or(d.rate_per_circuit),
            rate_per_relay: num(&w.rate_per_relay).unwrap_or(d.rate_per_relay),
            rate_table_size: num(&w.rate_table_size).map_or(d.rate_table_size, |n| n as usize),
            max_offers: num(&w.max_offers)
                .map_or_else(|| DhcpLimits::offers_for(subnets), |n| n as usize),
            max_leases_per_mac: num(&w.max_leases_per_mac)
                .map_or(d.max_leases_per_mac, |n| n as usize),
            max_leases_per_circuit: num(&w.max_leases_per_circuit)
                .map_or(d.max_leases_per_circuit, |n| n as usize),
        };
        for (v, key, min, max) in [
            (&w.rate_table_size, "rate_table_size", 16, 16_777_216),
            (&w.max_offers, "max_offers", 1, u32::MAX),
            (&w.max_leases_per_mac, "max_leases_per_mac", 1, 1024),
        ] {
            if let Some(v) = v {
                if !(min..=max).contains(v.get_ref()) {
                    self.error(v, format!("{key} = {}: use {min} to {max}", v.get_ref()));
                }
            }
        }
        limits
    }

    fn ip(&mut self, v: &Spanned<String>) -> Option<Ipv4Addr> {
        let r = v.get_ref().trim().parse::<Ipv4Addr>().ok();
        if r.is_none() {
            self.error(v, format!("{:?} is not an IPv4 address", v.get_ref()));
        }
        r
    }

    fn subnet(&mut self, s: &Spanned<wire::DhcpSubnet>) -> Option<Subnet> {
        let w = s.get_ref();
        let net = w.network.get_ref();
        let parsed = net.split_once('/').and_then(|(a, p)| {
            Some((
                a.trim().parse::<Ipv4Addr>().ok()?,
                p.trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|p| (8..=30).contains(p))?,
            ))
        });
        let Some((addr, prefix)) = parsed else {
            self.error(&w.network, format!("network {net:?}: write it as address/prefix, e.g. \"10.0.0.0/24\" (prefix 8-30)"));
            return None;
        };
        let network = Ipv4Addr::from(u32::from(addr) & mask_bits(prefix));
        let mut subnet = Subnet {
            network,
            prefix,
            pool: None,
            router: None,
            dns: Vec::new(),
            domain: None,
            lease_time: 0,
        };
        if network != addr {
            self.error(
                &w.network,
                format!("network {net:?} has host bits set; did you mean {network}/{prefix}?"),
            );
        }
        if let Some(p) = &w.pool {
            subnet.pool = self.pool(p, &subnet);
        }
        if let Some(r) = &w.router {
            subnet.router = self.ip(r);
            if subnet.router.is_some_and(|r| !subnet.contains(r)) {
                self.error(
                    r,
                    format!("router {} is not inside {network}/{prefix}", r.get_ref()),
                );
            }
        }
        (subnet.dns, subnet.domain, subnet.lease_time) = self.subnet_options(w, "IPv4");
        Some(subnet)
    }

    /// A subnet's `dns` (addresses of its family, `A`), `domain` and
    /// `lease_time`, the same for IPv4 and IPv6.
    pub(super) fn subnet_options<A: std::str::FromStr>(
        &mut self,
        w: &wire::DhcpSubnet,
        family: &str,
    ) -> (Vec<A>, Option<String>, u32) {
        let mut dns = Vec::new();
        if let Some(d) = &w.dns {
            for x in d.get_ref() {
                match x.trim().parse::<A>() {
                    Ok(ip) => dns.push(ip),
                    Err(_) => self.error(d, format!("dns {x:?} is not an {family} address (a subnet hands out name servers of its own family)")),
                }
            }
        }
        if let Some(t) = w.lease_time.as_ref().filter(|t| *t.get_ref() < 60) {
            self.error(t, "lease_time must be at least 60 seconds");
        }
        let lease_time = w
            .lease_time
            .as_ref()
            .map_or(DEFAULT_LEASE_TIME, |t| *t.get_ref());
        (dns, w.domain.as_ref().map(|d| self.domain(d)), lease_time)
    }

    /// `pool = "first-last"`, inside the subnet, without its network and
    /// broadcast addresses.
    fn pool(&mut self, p: &Spanned<String>, subnet: &Subnet) -> Option<(Ipv4Addr, Ipv4Addr)> {
        let (network, prefix) = (subnet.network, subnet.prefix);
        let range = p.get_ref().split_once('-').and_then(|(a, b)| {
            Some((
                a.trim().parse::<Ipv4Addr>().ok()?,
                b.trim().parse::<Ipv4Addr>().ok()?,
            ))
        });
        match range {
            Some((a, b))
                if u32::from(a) <= u32::from(b)
                    && subnet.contains(a)
                    && subnet.contains(b)
                    && a != network
                    && b != subnet.broadcast() =>
            {
                Some((a, b))
            }
            _ => {
                self.error(p, format!("pool {:?}: write \"first-last\" with both inside {network}/{prefix}, first <= last, excluding the network and broadcast addresses", p.get_ref()));
                None
            }
        }
    }

    pub(super) fn domain(&mut self, d: &Spanned<String>) -> String {
        let ok = d.get_ref().len() <= 253
            && d.get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !ok {
            self.error(
                d,
                format!(
                    "domain {:?}: letters, digits, '-' and '.' only",
                    d.get_ref()
                ),
            );
        }
        d.get_ref().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_arithmetic() {
        let s = Subnet {
            network: Ipv4Addr::new(10, 0, 0, 0),
            prefix: 24,
            pool: Some((Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 20))),
            router: None,
            dns: vec![],
            domain: None,
            lease_time: 60,
        };
        assert_eq!(s.mask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 0, 0, 255));
        assert!(s.contains(Ipv4Addr::new(10, 0, 0, 77)));
        assert!(!s.contains(Ipv4Addr::new(10, 0, 1, 1)));
        assert!(s.in_pool(Ipv4Addr::new(10, 0, 0, 20)));
        assert!(!s.in_pool(Ipv4Addr::new(10, 0, 0, 21)));
    }
}
