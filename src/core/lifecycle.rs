//! Operator overrides of the rules, per machine, with no I/O. An override
//! (set through the API, the CLI or the admin page; stored by
//! `crate::machines`) beats every rule of `machines.toml`:
//! - "boot rule X once": until the installer calls back (see [`callback_url`]);
//! - "boot rule X until cleared";
//! - "boot the local disk".
//!
//! The adapters look the machine's override up and pass it in; every choice
//! of rule below goes through [`Policy::choose`], so DHCP (the loader), TFTP
//! (classic pxelinux configs) and HTTP (scripts, menus) agree.

use std::collections::HashMap;
use std::fmt;

use super::grub;
use super::identity::{Identity, Mac};
pub use super::render::Install;
use super::render::{Base, Rendered, RETRY_SECONDS};
use super::{Boot, BootKind, Location, Policy, Rule};

/// What an operator told pxed to boot for one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootOverride {
    /// Boot this rule of `machines.toml`; with `once`, only until the
    /// installer it boots calls back.
    Rule { rule: String, once: bool },
    /// Boot the local disk (the `local-bios.ipxe` / `local-efi.ipxe` scripts).
    Local,
}

impl fmt::Display for BootOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootOverride::Rule { rule, once: true } => write!(f, "rule {rule:?} once"),
            BootOverride::Rule { rule, once: false } => {
                write!(f, "rule {rule:?} until cleared")
            }
            BootOverride::Local => f.write_str("local disk"),
        }
    }
}

impl BootOverride {
    pub fn is_once(&self) -> bool {
        matches!(self, BootOverride::Rule { once: true, .. })
    }
}

/// A machine's override as the adapters see it: what to boot, and for a
/// one-shot override the callback token of the boot being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    pub boot: BootOverride,
    /// The newest per-boot callback token (one-shot overrides only).
    pub token: Option<String>,
}

/// Every machine's override, as one immutable snapshot.
pub type Overrides = HashMap<Mac, Active>;

/// The name a "local disk" override boots under: in events, logs and
/// scripts. Parentheses keep it apart from any rule name an operator would
/// write (and if one did, the override still boots the built-in rule).
pub const LOCAL_OVERRIDE: &str = "(override) local disk";

/// The rule a "local disk" override boots: no kernel, the local-boot scripts.
pub(super) fn local_rule() -> Rule<Boot> {
    Rule {
        name: LOCAL_OVERRIDE.to_string(),
        priority: 0,
        selectors: super::rules::Selectors::default(),
        boot: Boot {
            kind: BootKind::Local,
            template: String::new(),
            menu_template: super::render::MENU.to_string(),
            grub_template: super::grub::TEMPLATE.to_string(),
            kernel: None,
            initrd: None,
            args: String::new(),
            console: None,
            menu_timeout: 10,
            vars: serde_json::Map::new(),
            configs: Default::default(),
            loader: None,
            reservation: None,
        },
        order: usize::MAX,
        location: Location {
            file: "(built in)".into(),
            line: 0,
            column: 0,
        },
    }
}

/// How a machine's rule was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChosenBy {
    /// The rules of `machines.toml` (no override).
    Rules,
    /// The machine's override.
    Override(BootOverride),
    /// The override names a rule the config no longer has: the rules decide.
    Ignored(BootOverride),
}

/// The rule a machine boots and why.
#[derive(Debug, Clone)]
pub struct Choice<'p> {
    pub rule: Option<&'p Rule<Boot>>,
    pub by: ChosenBy,
}

/// Where an installer reports that it finished, consuming a one-shot
/// override: `<base>/callback/<mac>/<token>`. Only host characters, hex and
/// hyphens: it can sit unquoted on a kernel command line.
pub fn callback_url(base: &Base, mac: Mac, token: &str) -> String {
    format!("{}/callback/{}/{token}", base.url(), mac.hyphenated())
}

/// Whether a callback token has the form pxed mints (32 lower-case hex
/// digits), checked before anything is looked up.
pub fn is_token(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Policy {
    /// The rule this machine gets: its override if it has one (and the rule
    /// it names exists), else the rules'.
    pub fn choose(&self, id: &Identity, ovr: Option<&BootOverride>) -> Choice<'_> {
        let by_rules = || self.select(id);
        match ovr {
            None => Choice {
                rule: by_rules(),
                by: ChosenBy::Rules,
            },
            Some(o @ BootOverride::Local) => Choice {
                rule: Some(&self.local),
                by: ChosenBy::Override(o.clone()),
            },
            Some(o @ BootOverride::Rule { rule, .. }) => match self.rule(rule) {
                Some(r) => Choice {
                    rule: Some(r),
                    by: ChosenBy::Override(o.clone()),
                },
                None => Choice {
                    rule: by_rules(),
                    by: ChosenBy::Ignored(o.clone()),
                },
            },
        }
    }

    /// The rule of `machines.toml` named `name`.
    pub fn rule(&self, name: &str) -> Option<&Rule<Boot>> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// The iPXE script this machine gets, its override considered. A
    /// one-shot override's token puts the callback URL on the kernel
    /// command line (`pxed.callback=`) and in `install.callback_url`.
    pub fn script_for(&self, id: &Identity, base: &Base, ovr: Option<&Active>) -> Rendered {
        let choice = self.choose(id, ovr.map(|o| &o.boot));
        match choice.rule {
            Some(rule) => {
                let install = install(&choice, id, base, ovr);
                self.render_rule(rule, rule.boot.ipxe_template(id.arch), id, base, &install)
            }
            None => self.retry(
                id,
                base,
                "no rule matches this machine; add one to machines.toml",
            ),
        }
    }

    /// The pxelinux `menu.c32` config for this machine. `rule_hint` is the
    /// rule its iPXE script already chose (option 209): it keeps one boot
    /// consistent; without it (or when the config no longer has it) the
    /// override, then the rules decide.
    pub fn menu_for(
        &self,
        id: &Identity,
        base: &Base,
        rule_hint: Option<&str>,
        ovr: Option<&Active>,
    ) -> Option<Rendered> {
        self.menu_linking(id, base, base, rule_hint, ovr)
    }

    /// The pxelinux config a classic pxelinux client fetches over TFTP:
    /// kernel and initrd paths for TFTP, and, when pxed knows where that
    /// machine reaches its HTTP server (`http`), the callback and installer
    /// config URLs over HTTP (the installer, not pxelinux, calls them).
    pub fn menu_over_tftp(
        &self,
        id: &Identity,
        http: Option<&Base>,
        ovr: Option<&Active>,
    ) -> Option<Rendered> {
        self.menu_linking(id, &Base::Tftp, http.unwrap_or(&Base::Tftp), None, ovr)
    }

    /// `menu_for` with the base its files come from (`base`) apart from
    /// the base its callback and config URLs point at (`links`).
    fn menu_linking(
        &self,
        id: &Identity,
        base: &Base,
        links: &Base,
        rule_hint: Option<&str>,
        ovr: Option<&Active>,
    ) -> Option<Rendered> {
        let choice = match rule_hint.and_then(|name| self.rule(name)) {
            Some(r) => Choice {
                rule: Some(r),
                by: ovr.map_or(ChosenBy::Rules, |o| ChosenBy::Override(o.boot.clone())),
            },
            None => self.choose(id, ovr.map(|o| &o.boot)),
        };
        let rule = choice.rule?;
        let install = install(&choice, id, links, ovr);
        Some(self.render_rule(rule, &rule.boot.menu_template, id, base, &install))
    }

    /// A `grub.cfg` that prints `message` (pxed's own sentence) and
    /// restarts the machine.
    pub fn grub_retry(&self, message: &str) -> Rendered {
        Rendered {
            text: grub::retry(message, RETRY_SECONDS),
            rule: None,
        }
    }

    /// The `grub.cfg` this machine gets: its override, else its rule by MAC
    /// and CPU, rendered with the rule's `grub_template`. `base` is where
    /// the machine reaches pxed's HTTP server (a one-shot override's
    /// callback URL); kernel and initrd come over TFTP.
    pub fn grub_for(&self, id: &Identity, base: &Base, ovr: Option<&Active>) -> Rendered {
        let choice = self.choose(id, ovr.map(|o| &o.boot));
        let Some(rule) = choice.rule else {
            return self.grub_retry("no rule matches this machine; add one to machines.toml");
        };
        let install = install(&choice, id, base, ovr);
        match self.render_rule_checked(rule, &rule.boot.grub_template, id, base, &install) {
            Ok(text) => Rendered {
                text,
                rule: Some(rule.name.clone()),
            },
            Err(e) => {
                tracing::error!(rule = %rule.name, error = %e, "grub.cfg template failed to render");
                self.grub_retry("the grub.cfg template failed to render; see the pxed log")
            }
        }
    }

    /// `pxed explain` with the override: which rule, and why.
    pub fn explain_for(&self, id: &Identity, ovr: Option<&BootOverride>) -> String {
        let explained = self.rules.explain(id).to_string();
        match self.choose(id, ovr) {
            Choice {
                rule: Some(r),
                by: ChosenBy::Override(o),
            } => format!(
                "override: {o}: boots {:?}, whatever the rules below say\n{explained}",
                r.name
            ),
            Choice {
                by: ChosenBy::Ignored(o),
                ..
            } => format!(
                "override: {o}: ignored, the config has no such rule; the rules decide\n{explained}"
            ),
            _ => explained,
        }
    }
}

/// The per-machine URLs a render of `choice` carries: the callback while
/// a one-shot override boots (with this boot's token), the configs' URL
/// when the rule has installer configs (over HTTP, with a MAC).
pub fn install(choice: &Choice, id: &Identity, base: &Base, ovr: Option<&Active>) -> Install {
    let once = matches!(&choice.by, ChosenBy::Override(o) if o.is_once());
    let callback_url = match (once, id.mac, ovr.and_then(|o| o.token.as_deref())) {
        (true, Some(mac), Some(token)) => Some(callback_url(base, mac, token)),
        _ => None,
    };
    let config_url = match (choice.rule, id.mac, base) {
        (Some(r), Some(mac), Base::Http(_)) if !r.boot.configs.is_empty() => {
            Some(super::installer::config_url(base, mac, &r.name))
        }
        _ => None,
    };
    Install {
        callback_url,
        config_url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> std::sync::Arc<crate::config::Config> {
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("machines.toml");
        crate::config::load(&shipped).unwrap()
    }

    const MAC: Mac = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

    fn nec() -> Identity {
        Identity {
            product: crate::core::ClientString::new("Express5800/i120Ra-e1"),
            ..Identity::with_mac(MAC)
        }
    }

    fn base() -> Base {
        Base::Http("http://10.0.0.1:8080".into())
    }

    #[test]
    fn an_override_beats_the_rules_and_a_missing_rule_is_ignored() {
        let config = policy();
        let p = &config.policy;
        let id = nec();
        assert_eq!(p.choose(&id, None).rule.unwrap().name, "nec-express5800");
        let once = BootOverride::Rule {
            rule: "rescue-node".into(),
            once: true,
        };
        let c = p.choose(&id, Some(&once));
        assert_eq!(c.rule.unwrap().name, "rescue-node");
        assert_eq!(c.by, ChosenBy::Override(once.clone()));
        let local = p.choose(&id, Some(&BootOverride::Local));
        assert_eq!(local.rule.unwrap().name, LOCAL_OVERRIDE);
        let gone = BootOverride::Rule {
            rule: "gone".into(),
            once: false,
        };
        let c = p.choose(&id, Some(&gone));
        assert_eq!(c.rule.unwrap().name, "nec-express5800");
        assert_eq!(c.by, ChosenBy::Ignored(gone.clone()));
        let why = p.explain_for(&id, Some(&gone));
        assert!(
            why.starts_with("override: rule \"gone\" until cleared: ignored"),
            "{why}"
        );
        let why = p.explain_for(&id, Some(&once));
        assert!(
            why.starts_with("override: rule \"rescue-node\" once: boots \"rescue-node\""),
            "{why}"
        );
    }

    #[test]
    fn a_one_shot_override_puts_its_callback_on_the_kernel_line() {
        let config = policy();
        let p = &config.policy;
        let token = "0123456789abcdef0123456789abcdef";
        let active = Active {
            boot: BootOverride::Rule {
                rule: "default".into(),
                once: true,
            },
            token: Some(token.into()),
        };
        let script = p.script_for(&nec(), &base(), Some(&active));
        assert_eq!(script.rule.as_deref(), Some("default"));
        let url = format!("http://10.0.0.1:8080/callback/52-54-00-12-34-56/{token}");
        assert!(
            script.text.contains(&format!("pxed.callback={url}")),
            "{}",
            script.text
        );
        // Until cleared: no callback.
        let kept = Active {
            boot: BootOverride::Rule {
                rule: "default".into(),
                once: false,
            },
            token: None,
        };
        let script = p.script_for(&nec(), &base(), Some(&kept));
        assert!(!script.text.contains("pxed.callback"), "{}", script.text);
        let local = Active {
            boot: BootOverride::Local,
            token: None,
        };
        let script = p.script_for(&nec(), &base(), Some(&local));
        assert!(script.text.contains("sanboot"), "{}", script.text);
        assert_eq!(script.rule.as_deref(), Some(LOCAL_OVERRIDE));
        assert!(is_token(token));
        assert!(!is_token("0123456789ABCDEF0123456789abcdef"));
        assert!(!is_token("../etc"));
    }
}
