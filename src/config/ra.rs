//! `[ipv6_ra]`: the optional IPv6 Router Solicitation responder (`src/ra/`).
//! Off unless the operator turns it on (docs/decisions.md, "IPv6 RA
//! responder: off by default"). Read at start only: a reload keeps the
//! responder as it started and logs that the change waits for a restart.
//!
//! ```toml
//! [ipv6_ra]
//! enabled = true           # default false
//! interfaces = ["br0"]     # default: [dhcp] interfaces
//! interval = 600           # unsolicited advertisements every 600 s; default 0 (none)
//! managed = true           # M: addresses from DHCPv6 (IPv6 netboot); default false
//! other = true             # O: the boot file URL from DHCPv6; default false
//! ```
//!
//! With `managed` or `other` the advertisements also name, as on-link
//! (L = 1, A = 0), every IPv6 `[[dhcp.subnet]]` that holds an address of the
//! interface: iPXE needs M or O to run DHCPv6 at all, and the on-link prefix
//! to reach pxed's address without a router.

use std::time::Duration;

use toml::Spanned;

use super::{wire, Loader};

/// RFC 4861 §6.2.1: MaxRtrAdvInterval is between 4 and 1800 seconds.
const INTERVAL_RANGE: std::ops::RangeInclusive<u32> = 4..=1800;

/// The validated `[ipv6_ra]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaConfig {
    pub enabled: bool,
    /// The operator wrote `enabled = …`: a decision, so `pxed check` does not
    /// warn about a missing IPv6 router when it is `false`.
    pub decided: bool,
    /// Where to answer: `interfaces`, else `[dhcp] interfaces`. Never empty
    /// when `enabled`.
    pub interfaces: Vec<String>,
    /// Unsolicited advertisements (to all nodes) this often; `None`: only
    /// answer solicitations.
    pub interval: Option<Duration>,
    /// M and O flags (IPv6 netboot).
    pub managed: bool,
    pub other: bool,
}

impl RaConfig {
    /// What the responder does with this section: `None` when it is off
    /// (then interfaces and interval do not matter).
    pub fn running(&self) -> Option<(&[String], Option<Duration>, bool, bool)> {
        self.enabled.then_some((
            self.interfaces.as_slice(),
            self.interval,
            self.managed,
            self.other,
        ))
    }

    /// Whether the advertisements tell hosts to use DHCPv6 (M or O).
    pub fn sets_m_or_o(&self) -> bool {
        self.enabled && (self.managed || self.other)
    }
}

impl Loader<'_> {
    /// Validates `[ipv6_ra]`; `dhcp_interfaces` is the default interface list.
    pub(super) fn ipv6_ra(
        &mut self,
        w: Option<&Spanned<wire::Ra>>,
        dhcp_interfaces: &[String],
    ) -> RaConfig {
        let Some(section) = w else {
            return RaConfig::default();
        };
        let w = section.get_ref();
        let enabled = w.enabled.as_ref().is_some_and(|e| *e.get_ref());
        let interfaces = match &w.interfaces {
            Some(list) => {
                for name in list.get_ref() {
                    if !valid_interface_name(name) {
                        self.error(
                            list,
                            format!("interface {name:?}: an interface name such as \"br0\" (1-15 characters, no spaces or '/')"),
                        );
                    }
                }
                list.get_ref().clone()
            }
            None => dhcp_interfaces.to_vec(),
        };
        if enabled && interfaces.is_empty() {
            let at = w
                .enabled
                .as_ref()
                .map_or(section.span().start, |e| e.span().start);
            self.error_at(
                at,
                "[ipv6_ra] enabled = true needs `interfaces` (or [dhcp] interfaces): pxed answers router solicitations only on the boot networks it is told",
            );
        }
        let interval = match &w.interval {
            None => None,
            Some(i) if *i.get_ref() == 0 => None,
            Some(i) => {
                if !INTERVAL_RANGE.contains(i.get_ref()) {
                    self.error(
                        i,
                        format!(
                            "interval = {}: 0 (answer solicitations only) or {}-{} seconds (RFC 4861 MaxRtrAdvInterval)",
                            i.get_ref(),
                            INTERVAL_RANGE.start(),
                            INTERVAL_RANGE.end()
                        ),
                    );
                }
                Some(Duration::from_secs(u64::from(*i.get_ref())))
            }
        };
        let flag = |f: &Option<Spanned<bool>>| f.as_ref().is_some_and(|f| *f.get_ref());
        RaConfig {
            enabled,
            decided: w.enabled.is_some(),
            interfaces,
            interval,
            managed: flag(&w.managed),
            other: flag(&w.other),
        }
    }
}

/// Linux interface names: 1-15 bytes (IFNAMSIZ 16 with the NUL), no '/',
/// no whitespace.
fn valid_interface_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && !name
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert!(valid_interface_name("br0"));
        assert!(valid_interface_name("enp3s0f1.100"));
        assert!(!valid_interface_name(""));
        assert!(!valid_interface_name("a/b"));
        assert!(!valid_interface_name("br 0"));
        assert!(!valid_interface_name("abcdefghijklmnop"));
    }
}
