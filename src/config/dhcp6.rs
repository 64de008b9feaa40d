//! The IPv6 half of `[dhcp]`: a `[[dhcp.subnet]]` whose `network` is an IPv6
//! prefix is served by DHCPv6 (`src/dhcp/v6/`), and a rule's `ip` may name an
//! IPv6 address to reserve. Validated here into [`Subnet6`], with every error
//! at its file:line:col, beside the IPv4 subnets of `config/dhcp.rs`.
//!
//! ```toml
//! [[dhcp.subnet]]
//! network = "fd97:e2e::/64"
//! pool = "fd97:e2e::100-fd97:e2e::1ff"
//! dns = ["fd97:e2e::1"]          # option 23
//! domain = "lab.example"         # option 24
//! lease_time = 3600              # valid and preferred lifetime
//! ```
//!
//! No `router`: IPv6 hosts learn routers from router advertisements, never
//! from DHCPv6 (RFC 8415 has no router option); see `[ipv6_ra]`.

use std::net::Ipv6Addr;

use toml::Spanned;

use super::{wire, DhcpMode, Loader};

/// Prefix lengths a DHCPv6 subnet may have: a pool needs host bits, and no
/// link is wider than a /16.
const PREFIX_RANGE: std::ops::RangeInclusive<u8> = 16..=126;

/// One IPv6 subnet pxed serves with DHCPv6 in full mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet6 {
    pub network: Ipv6Addr,
    pub prefix: u8,
    /// Inclusive; `None` for a subnet that only holds reservations.
    pub pool: Option<(Ipv6Addr, Ipv6Addr)>,
    pub dns: Vec<Ipv6Addr>,
    pub domain: Option<String>,
    /// Seconds: the valid and preferred lifetime of its addresses.
    pub lease_time: u32,
}

impl Subnet6 {
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & mask(self.prefix) == u128::from(self.network)
    }

    pub fn in_pool(&self, ip: Ipv6Addr) -> bool {
        self.pool
            .is_some_and(|(a, b)| (u128::from(a)..=u128::from(b)).contains(&u128::from(ip)))
    }

    /// How many addresses its pool has (saturating: a /64 pool is 2^64).
    pub fn pool_size(&self) -> u64 {
        self.pool.map_or(0, |(a, b)| {
            u64::try_from(u128::from(b) - u128::from(a))
                .unwrap_or(u64::MAX)
                .saturating_add(1)
        })
    }
}

fn mask(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => u128::MAX << (128 - u32::from(p.min(128))),
    }
}

impl Loader<'_> {
    /// `[dhcp] dhcpv6`: whether DHCPv6 runs. By default in full mode when an
    /// IPv6 subnet is served; proxy mode answers DHCPv6 only when asked to
    /// (another DHCPv6 server may hold UDP 547 on this host).
    pub(super) fn dhcpv6(&mut self, w: &wire::Dhcp, mode: DhcpMode, subnets6: &[Subnet6]) -> bool {
        let Some(set) = &w.dhcpv6 else {
            return mode == DhcpMode::Full && !subnets6.is_empty();
        };
        let on = *set.get_ref();
        if on && mode == DhcpMode::Full && subnets6.is_empty() {
            self.error(set, "dhcpv6 = true in full mode needs an IPv6 [[dhcp.subnet]] (network = \"fd00:1::/64\", pool = …)");
        }
        on && mode != DhcpMode::Off
    }

    /// Every IPv6 `[[dhcp.subnet]]`; no two may overlap.
    pub(super) fn subnets6(&mut self, w: &wire::Dhcp) -> Vec<Subnet6> {
        let mut out: Vec<Subnet6> = Vec::new();
        for s in w.subnets.iter().filter(|s| is_ipv6_network(s.get_ref())) {
            let Some(subnet) = self.subnet6(s.get_ref()) else {
                continue;
            };
            if let Some(other) = out
                .iter()
                .find(|o| o.contains(subnet.network) || subnet.contains(o.network))
            {
                self.error(
                    &s.get_ref().network,
                    format!(
                        "subnet {}/{} overlaps subnet {}/{}",
                        subnet.network, subnet.prefix, other.network, other.prefix
                    ),
                );
            }
            out.push(subnet);
        }
        out
    }

    fn subnet6(&mut self, w: &wire::DhcpSubnet) -> Option<Subnet6> {
        let net = w.network.get_ref();
        let parsed = net.split_once('/').and_then(|(a, p)| {
            let prefix = p.trim().parse::<u8>().ok()?;
            Some((a.trim().parse::<Ipv6Addr>().ok()?, prefix))
        });
        let Some((addr, prefix)) = parsed.filter(|(_, p)| PREFIX_RANGE.contains(p)) else {
            self.error(
                &w.network,
                format!(
                    "network {net:?}: write it as address/prefix, e.g. \"fd00:1::/64\" (prefix {}-{})",
                    PREFIX_RANGE.start(),
                    PREFIX_RANGE.end()
                ),
            );
            return None;
        };
        let network = Ipv6Addr::from(u128::from(addr) & mask(prefix));
        if network != addr {
            self.error(
                &w.network,
                format!("network {net:?} has host bits set; did you mean {network}/{prefix}?"),
            );
        }
        if let Some(r) = &w.router {
            self.error(r, "an IPv6 subnet has no `router`: IPv6 hosts learn routers from router advertisements, not DHCPv6 (see [ipv6_ra] and docs/dhcp.md)");
        }
        let mut subnet = Subnet6 {
            network,
            prefix,
            pool: None,
            dns: Vec::new(),
            domain: None,
            lease_time: 0,
        };
        if let Some(p) = &w.pool {
            subnet.pool = self.pool6(p, &subnet);
        }
        (subnet.dns, subnet.domain, subnet.lease_time) = self.subnet_options(w, "IPv6");
        Some(subnet)
    }

    /// `pool = "first-last"`, inside the subnet, without its all-zero host
    /// address (the Subnet-Router anycast address, RFC 4291 §2.6.1).
    fn pool6(&mut self, p: &Spanned<String>, subnet: &Subnet6) -> Option<(Ipv6Addr, Ipv6Addr)> {
        let range = p.get_ref().split_once('-').and_then(|(a, b)| {
            Some((
                a.trim().parse::<Ipv6Addr>().ok()?,
                b.trim().parse::<Ipv6Addr>().ok()?,
            ))
        });
        match range {
            Some((a, b))
                if u128::from(a) <= u128::from(b)
                    && subnet.contains(a)
                    && subnet.contains(b)
                    && a != subnet.network =>
            {
                Some((a, b))
            }
            _ => {
                self.error(p, format!("pool {:?}: write \"first-last\" with both inside {}/{}, first <= last, excluding the subnet's all-zero address", p.get_ref(), subnet.network, subnet.prefix));
                None
            }
        }
    }
}

/// Whether a `[[dhcp.subnet]]` is an IPv6 one (its network has a ':').
pub(super) fn is_ipv6_network(s: &wire::DhcpSubnet) -> bool {
    s.network.get_ref().contains(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_arithmetic() {
        let s = Subnet6 {
            network: "fd00:1::".parse().unwrap(),
            prefix: 64,
            pool: Some(("fd00:1::10".parse().unwrap(), "fd00:1::1f".parse().unwrap())),
            dns: vec![],
            domain: None,
            lease_time: 60,
        };
        assert!(s.contains("fd00:1::ffff:1".parse().unwrap()));
        assert!(!s.contains("fd00:2::1".parse().unwrap()));
        assert!(s.in_pool("fd00:1::1f".parse().unwrap()));
        assert!(!s.in_pool("fd00:1::20".parse().unwrap()));
        assert_eq!(s.pool_size(), 16);
        let wide = Subnet6 {
            pool: Some((
                "fd00:1::1".parse().unwrap(),
                "fd00:1::ffff:ffff:ffff:ffff".parse().unwrap(),
            )),
            ..s
        };
        assert_eq!(wide.pool_size(), u64::MAX);
    }
}
