//! Per-machine installer configs, with no I/O: cloud-init NoCloud
//! (`user-data`, `meta-data`, `vendor-data`, `network-config`), kickstart,
//! preseed and Ignition, each rendered from a template a rule names
//! (`configs = { kickstart = "ks.cfg" }`) with the machine's variables, and
//! served at `<base>/config/<mac>/<rule>/<name>`. A rule with configs gets
//! the kernel arguments that point its installer there, so `linux.ipxe`
//! needs no change; Ignition is validated as JSON before it is served.

use std::collections::BTreeMap;

use super::identity::{query_escape, Identity, Mac};
use super::render::{Base, Install, TemplateError};
use super::{Boot, Location, Policy, Rule};

/// The configs pxed knows how to serve and point an installer at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigKind {
    UserData,
    MetaData,
    VendorData,
    NetworkConfig,
    Kickstart,
    Preseed,
    Ignition,
}

impl ConfigKind {
    pub const ALL: [ConfigKind; 7] = [
        ConfigKind::UserData,
        ConfigKind::MetaData,
        ConfigKind::VendorData,
        ConfigKind::NetworkConfig,
        ConfigKind::Kickstart,
        ConfigKind::Preseed,
        ConfigKind::Ignition,
    ];

    /// The name in `configs = { … }` and in the URL.
    pub fn name(self) -> &'static str {
        match self {
            ConfigKind::UserData => "user-data",
            ConfigKind::MetaData => "meta-data",
            ConfigKind::VendorData => "vendor-data",
            ConfigKind::NetworkConfig => "network-config",
            ConfigKind::Kickstart => "kickstart",
            ConfigKind::Preseed => "preseed",
            ConfigKind::Ignition => "ignition",
        }
    }

    pub fn from_name(name: &str) -> Option<ConfigKind> {
        ConfigKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ConfigKind::Ignition => "application/json",
            _ => "text/plain; charset=utf-8",
        }
    }
}

/// `<base>/config/<mac>/<rule>/`: where a machine's installer finds its
/// configs (the NoCloud seed URL; the others are `<this><name>`).
pub fn config_url(base: &Base, mac: Mac, rule: &str) -> String {
    format!(
        "{}/config/{}/{}/",
        base.url(),
        mac.hyphenated(),
        query_escape(rule)
    )
}

/// The kernel arguments that point each installer at its config.
pub fn kernel_args(configs: &BTreeMap<ConfigKind, String>, url: &str) -> Vec<String> {
    let mut args = Vec::new();
    for kind in configs.keys() {
        match kind {
            ConfigKind::UserData => args.push(format!("ds=nocloud;s={url}")),
            ConfigKind::Kickstart => args.push(format!("inst.ks={url}kickstart")),
            ConfigKind::Preseed => {
                args.push(format!("auto=true priority=critical url={url}preseed"))
            }
            ConfigKind::Ignition => args.push(format!(
                "ignition.firstboot ignition.platform.id=metal ignition.config.url={url}ignition"
            )),
            // Read from the same seed URL as user-data.
            ConfigKind::MetaData | ConfigKind::VendorData | ConfigKind::NetworkConfig => {}
        }
    }
    args
}

/// Checks a rendered config: Ignition must be JSON.
pub fn validate(kind: ConfigKind, text: &str, template: &str) -> Result<(), TemplateError> {
    if kind != ConfigKind::Ignition {
        return Ok(());
    }
    serde_json::from_str::<serde_json::Value>(text)
        .map(|_| ())
        .map_err(|e| TemplateError {
            location: Location {
                file: template.into(),
                line: e.line(),
                column: e.column(),
            },
            reason: format!("the rendered Ignition config is not JSON: {e} (line and column of the rendered text; use {{{{json value}}}} for values)"),
        })
}

impl Boot {
    /// The kernel command line of one render: [`Boot::cmdline`], plus the
    /// arguments that point the installer at its configs, plus
    /// `pxed.callback=<url>` while a one-shot override boots (the installer,
    /// or any script reading `/proc/cmdline`, calls it when done).
    pub fn cmdline_with(&self, install: &Install) -> String {
        let mut words = vec![self.cmdline()];
        if let Some(url) = &install.config_url {
            words.extend(kernel_args(&self.configs, url));
        }
        if let Some(url) = &install.callback_url {
            words.push(format!("pxed.callback={url}"));
        }
        words.retain(|w| !w.is_empty());
        words.join(" ")
    }
}

impl Policy {
    /// The config `kind` of `rule` for this machine, rendered and checked;
    /// `None` when the rule has no such config.
    pub fn installer_config(
        &self,
        rule: &Rule<Boot>,
        kind: ConfigKind,
        id: &Identity,
        base: &Base,
        install: &Install,
    ) -> Option<Result<String, TemplateError>> {
        let template = rule.boot.configs.get(&kind)?;
        Some(
            self.render_rule_checked(rule, template, id, base, install)
                .and_then(|text| validate(kind, &text, template).map(|()| text)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_arguments_and_names() {
        let url = "http://h:1/config/52-54-00-00-00-01/r/";
        let configs: BTreeMap<ConfigKind, String> = [
            (ConfigKind::UserData, "u".to_string()),
            (ConfigKind::MetaData, "m".to_string()),
            (ConfigKind::Kickstart, "k".to_string()),
        ]
        .into();
        assert_eq!(
            kernel_args(&configs, url),
            [
                "ds=nocloud;s=http://h:1/config/52-54-00-00-00-01/r/",
                "inst.ks=http://h:1/config/52-54-00-00-00-01/r/kickstart"
            ]
        );
        for k in ConfigKind::ALL {
            assert_eq!(ConfigKind::from_name(k.name()), Some(k));
        }
        assert!(validate(ConfigKind::Ignition, "{\"ignition\":{}}", "t").is_ok());
        let e = validate(ConfigKind::Ignition, "{\n\"a\": x}", "ign.json").unwrap_err();
        assert!(e.to_string().starts_with("ign.json:2:"), "{e}");
        assert!(validate(ConfigKind::Kickstart, "{", "t").is_ok());
        let mac = Mac([0x52, 0x54, 0, 0, 0, 1]);
        let base = Base::Http("http://h:1".into());
        assert_eq!(
            config_url(&base, mac, "a b/c"),
            "http://h:1/config/52-54-00-00-00-01/a%20b%2Fc/"
        );
    }
}
