//! The DHCP keys of a `[[rule]]`: `loader`, and the reservation `ip` and
//! `hostname` make for the one MAC the rule matches (`ip` is one address or
//! a list of at most one IPv4 and one IPv6 address, each inside a subnet pxed
//! serves, `config/dhcp.rs` and `config/dhcp6.rs`). Every address and every
//! MAC is reserved once; errors at their file:line:col.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use toml::Spanned;

use super::{wire, DhcpConfig, Loader, Subnet, Subnet6};
use crate::core::{Mac, Reservation};

/// What the rules' DHCP keys set so far, while the rules are validated in
/// order: reserved addresses and MACs (each reserved once), and the rules'
/// loader settings (for `pxed check`).
#[derive(Debug, Default)]
pub(super) struct RuleDhcp {
    ips: HashSet<Ipv4Addr>,
    ips6: HashSet<Ipv6Addr>,
    macs: HashSet<Mac>,
    pub loader_settings: Vec<super::LoaderSetting>,
}

impl Loader<'_> {
    /// A rule's DHCP keys: its `loader`, and the reservation its `ip` and
    /// `hostname` make for the one MAC it matches. `seen` collects what
    /// earlier rules reserved: an address or a MAC is reserved once.
    pub(super) fn rule_dhcp(
        &mut self,
        s: &wire::Section,
        served: &DhcpConfig,
        seen: &mut RuleDhcp,
    ) -> (Option<String>, Option<Reservation>) {
        let loader = self.rule_loader(s).map(|(file, setting)| {
            seen.loader_settings.push(setting);
            file
        });
        let reservation = self.reservation(s, served, seen).and_then(|(r, at)| {
            if seen.macs.insert(r.mac) {
                Some(r)
            } else {
                let mac = r.mac;
                self.error_at(
                    at,
                    format!("{mac} already has a reservation in another rule"),
                );
                None
            }
        });
        (loader, reservation)
    }

    /// `[defaults]` cannot reserve or pick a loader: those belong to one rule.
    pub(super) fn no_rule_dhcp_keys(&mut self, s: &wire::Section) {
        if let Some(ip) = &s.ip {
            self.error(ip, "[defaults] cannot have `ip`: it belongs to a [[rule]]");
        }
        for (v, key) in [(&s.hostname, "hostname"), (&s.loader, "loader")] {
            if let Some(v) = v {
                self.error(v, format!("[defaults] cannot have `{key}`: it belongs to a [[rule]] (use [dhcp] *_loader for a default loader)"));
            }
        }
    }

    /// A rule's `ip` and `hostname`: the reservation, and where to point an
    /// error about it.
    fn reservation(
        &mut self,
        s: &wire::Section,
        served: &DhcpConfig,
        seen: &mut RuleDhcp,
    ) -> Option<(Reservation, usize)> {
        if s.ip.is_none() && s.hostname.is_none() {
            return None;
        }
        let macs = s
            .selectors
            .as_ref()
            .and_then(|m| m.get_ref().mac.as_ref())
            .map(|m| m.get_ref().0.clone())
            .unwrap_or_default();
        let key =
            s.ip.as_ref()
                .map(|k| k.span().start)
                .or(s.hostname.as_ref().map(|k| k.span().start))
                .unwrap_or(0);
        let mac = match macs.as_slice() {
            [one] => one.parse::<Mac>().ok(),
            _ => {
                self.error_at(key, "only a rule that matches exactly one MAC (match = { mac = \"…\" }) can reserve an `ip` or `hostname`");
                None
            }
        };
        let (ip, ip6) = match &s.ip {
            Some(list) => self.reserved_ips(list, served, seen),
            None => (None, None),
        };
        let hostname = s.hostname.as_ref().and_then(|h| self.hostname(h));
        let r = Reservation {
            mac: mac?,
            ip,
            ip6,
            hostname,
        };
        Some((r, key))
    }

    /// A rule's `ip`: one address or a list of at most one per family, each
    /// inside a subnet pxed serves and reserved once.
    fn reserved_ips(
        &mut self,
        list: &Spanned<wire::StringList>,
        served: &DhcpConfig,
        seen: &mut RuleDhcp,
    ) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
        let (mut v4, mut v6) = (None, None);
        for text in &list.get_ref().0 {
            match text.trim().parse::<IpAddr>() {
                Ok(IpAddr::V4(a)) if v4.is_none() => {
                    self.reserved_ip(list, a, &served.subnets, &mut seen.ips);
                    v4 = Some(a);
                }
                Ok(IpAddr::V6(a)) if v6.is_none() => {
                    self.reserved_ip6(list, a, &served.subnets6, &mut seen.ips6);
                    v6 = Some(a);
                }
                Ok(_) => self.error(
                    list,
                    "ip: at most one IPv4 and one IPv6 address per machine",
                ),
                Err(_) => self.error(list, format!("{text:?} is not an IPv4 or IPv6 address")),
            }
        }
        (v4, v6)
    }

    /// A reserved address: inside a subnet, not its network or broadcast
    /// address, reserved once.
    fn reserved_ip(
        &mut self,
        at: &Spanned<wire::StringList>,
        addr: Ipv4Addr,
        subnets: &[Subnet],
        taken: &mut HashSet<Ipv4Addr>,
    ) {
        match subnets.iter().find(|n| n.contains(addr)) {
            None => self.error(
                at,
                format!("{addr} is not inside any [[dhcp.subnet]]; a reserved address must be in a subnet pxed serves"),
            ),
            Some(n) if addr == n.network || addr == n.broadcast() => self.error(
                at,
                format!("{addr} is the network or broadcast address of {}/{}", n.network, n.prefix),
            ),
            Some(_) if !taken.insert(addr) => {
                self.error(at, format!("{addr} is reserved by another rule too"))
            }
            Some(_) => {}
        }
    }

    fn hostname(&mut self, h: &Spanned<String>) -> Option<String> {
        let ok = !h.get_ref().is_empty()
            && h.get_ref().len() <= 253
            && h.get_ref().split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !ok {
            self.error(
                h,
                format!(
                    "hostname {:?}: use letters, digits, '-' and '.' (labels of at most 63)",
                    h.get_ref()
                ),
            );
        }
        ok.then(|| h.get_ref().clone())
    }

    /// A rule's reserved IPv6 address: inside an IPv6 subnet, not its
    /// all-zero address, reserved once.
    pub(super) fn reserved_ip6(
        &mut self,
        at: &Spanned<wire::StringList>,
        addr: Ipv6Addr,
        subnets: &[Subnet6],
        taken: &mut HashSet<Ipv6Addr>,
    ) {
        match subnets.iter().find(|n| n.contains(addr)) {
            None => self.error(
                at,
                format!("{addr} is not inside any IPv6 [[dhcp.subnet]]; a reserved address must be in a subnet pxed serves"),
            ),
            Some(n) if addr == n.network => self.error(
                at,
                format!("{addr} is the all-zero (Subnet-Router anycast) address of {}/{}", n.network, n.prefix),
            ),
            Some(_) if !taken.insert(addr) => {
                self.error(at, format!("{addr} is reserved by another rule too"))
            }
            Some(_) => {}
        }
    }
}
