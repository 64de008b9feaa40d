//! `[[rule]]` and `[defaults]`: selectors and boot settings, validated into
//! the core's [`Rule`]s (a rule's unset boot keys fall back to `[defaults]`).

use std::collections::HashSet;

use std::collections::BTreeMap;

use toml::Spanned;

use super::reserve::RuleDhcp;
use super::{wire, ConfigError, DhcpConfig, Loader};
use crate::core::installer::ConfigKind;
use crate::core::rules::{Glob, Selectors};
use crate::core::{grub, render};
use crate::core::{Arch, Boot, BootKind, Console, Mac, Rule, RuleSet, Templates, Uuid};

const DEFAULT_MENU_TIMEOUT: u32 = 10;
const DEFAULT_CONSOLE: Console = Console {
    index: 0,
    baud: 115_200,
    firmware_redirect: true,
};

impl Loader<'_> {
    /// Every `[[rule]]`, validated; names unique; no two rules that could
    /// match the same machine at the same priority (`None` if any clash).
    pub(super) fn rules(
        &mut self,
        sections: &[Spanned<wire::Section>],
        defaults: &wire::Section,
        templates: Option<&Templates>,
        served: &DhcpConfig,
        dhcp: &mut RuleDhcp,
    ) -> Option<RuleSet<Boot>> {
        let mut rules = Vec::new();
        let mut names = HashSet::new();
        for (order, section) in sections.iter().enumerate() {
            if let Some(rule) = self.rule(section, order, defaults, templates, served, dhcp) {
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
        Some(rules)
    }

    pub(super) fn defaults(&mut self, d: Option<&Spanned<wire::Section>>) -> wire::Section {
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

    fn rule(
        &mut self,
        section: &Spanned<wire::Section>,
        order: usize,
        defaults: &wire::Section,
        templates: Option<&Templates>,
        served: &DhcpConfig,
        dhcp: &mut RuleDhcp,
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
        let (loader, reservation) = self.rule_dhcp(s, served, dhcp);
        self.asset_ref(
            "kernel",
            s.kernel.as_ref().or(defaults.kernel.as_ref()),
            name.get_ref(),
        );
        self.asset_ref(
            "initrd",
            s.initrd.as_ref().or(defaults.initrd.as_ref()),
            name.get_ref(),
        );
        let boot = Boot {
            loader,
            reservation,
            ..self.boot(s, defaults, templates)?
        };
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

    /// `boot = "…"` (`ipxe` when unset); `None`, the error recorded, when
    /// it is none pxed knows.
    fn boot_kind(&mut self, k: Option<&Spanned<String>>) -> Option<BootKind> {
        let Some(k) = k else {
            return Some(BootKind::Ipxe);
        };
        match k.get_ref().as_str() {
            "ipxe" => Some(BootKind::Ipxe),
            "pxelinux" => Some(BootKind::Pxelinux),
            "local" => Some(BootKind::Local),
            "grub" => Some(BootKind::Grub),
            other => {
                let why =
                    format!("boot = {other:?}: use \"ipxe\", \"pxelinux\", \"grub\" or \"local\"");
                self.error(k, why);
                None
            }
        }
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
        let kind = self.boot_kind(pick(&s.boot, &d.boot))?;
        let string = |v: Option<&Spanned<String>>| v.map(|s| s.get_ref().clone());
        let template = pick(&s.template, &d.template);
        let menu_template = pick(&s.menu_template, &d.menu_template);
        let grub_template = pick(&s.grub_template, &d.grub_template);
        for t in [template, menu_template, grub_template]
            .into_iter()
            .flatten()
        {
            if templates.is_some_and(|ts| !ts.has(t.get_ref())) {
                self.error(
                    t,
                    format!("no template {:?} in the template directory", t.get_ref()),
                );
            }
        }
        let template = match (template, kind) {
            (Some(t), _) => t.get_ref().clone(),
            // iPXE clients (and BIOS machines) of a GRUB rule boot its
            // kernel through iPXE.
            (None, BootKind::Ipxe | BootKind::Grub) => render::LINUX.to_string(),
            (None, BootKind::Pxelinux) => render::PXELINUX_CHAIN.to_string(),
            (None, BootKind::Local) => String::new(),
        };
        let kernel = string(pick(&s.kernel, &d.kernel));
        let needs_kernel = matches!(kind, BootKind::Pxelinux | BootKind::Grub)
            || (kind == BootKind::Ipxe && template == render::LINUX);
        if needs_kernel && kernel.is_none() {
            let at = s.name.as_ref().map_or(0, |n| n.span().start);
            self.error_at(at, format!("boot = {:?} with the default template needs a `kernel` (here or in [defaults])", kind.name()));
        }
        if kind == BootKind::Grub {
            self.grub_files(s, d, grub_template.is_none(), templates);
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
            grub_template: string(grub_template).unwrap_or_else(|| grub::TEMPLATE.to_string()),
            kernel,
            initrd: string(pick(&s.initrd, &d.initrd)),
            args: string(pick(&s.args, &d.args)).unwrap_or_default(),
            console,
            menu_timeout: pick(&s.menu_timeout, &d.menu_timeout)
                .map_or(DEFAULT_MENU_TIMEOUT, |t| *t.get_ref()),
            vars,
            configs: self.configs(pick(&s.configs, &d.configs), templates),
            loader: None,
            reservation: None,
        })
    }

    /// What a GRUB rule fetches over TFTP: its kernel and initrd must be
    /// files (the signed GRUB has no HTTP), and the default template must
    /// exist (an older template directory lacks it).
    fn grub_files(
        &mut self,
        s: &wire::Section,
        d: &wire::Section,
        default_template: bool,
        templates: Option<&Templates>,
    ) {
        let kernel = s.kernel.as_ref().or(d.kernel.as_ref());
        let initrd = s.initrd.as_ref().or(d.initrd.as_ref());
        for v in [kernel, initrd].into_iter().flatten() {
            if v.get_ref().contains("://") {
                let msg = format!("{:?}: boot = \"grub\" fetches the kernel and initrd over TFTP (the signed GRUB has no HTTP); use a path under the asset roots", v.get_ref());
                self.error(v, msg);
                return;
            }
        }
        if default_template && templates.is_some_and(|ts| !ts.has(grub::TEMPLATE)) {
            let at = (s.boot.as_ref().or(d.boot.as_ref())).map_or(0, |b| b.span().start);
            self.error_at(at, format!("boot = \"grub\" needs the template {:?} in the template directory (copy it from the shipped boot-templates/)", grub::TEMPLATE));
        }
    }

    /// `configs = { kickstart = "ks.cfg", … }`: known names, existing templates.
    fn configs(
        &mut self,
        v: Option<&Spanned<BTreeMap<String, String>>>,
        templates: Option<&Templates>,
    ) -> BTreeMap<ConfigKind, String> {
        let mut out = BTreeMap::new();
        for (name, template) in v.map(Spanned::get_ref).into_iter().flatten() {
            let Some(kind) = ConfigKind::from_name(name) else {
                let known: Vec<&str> = ConfigKind::ALL.iter().map(|k| k.name()).collect();
                if let Some(v) = v {
                    self.error(
                        v,
                        format!("configs: unknown config {name:?}; use {}", known.join(", ")),
                    );
                }
                continue;
            };
            if templates.is_some_and(|ts| !ts.has(template)) {
                if let Some(v) = v {
                    self.error(
                        v,
                        format!("configs: no template {template:?} in the template directory"),
                    );
                }
            }
            out.insert(kind, template.clone());
        }
        out
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
            Some(index) if index < 4 => Some(Console {
                index,
                baud,
                // The usual SOL setup: the BIOS redirects its text screen.
                firmware_redirect: c.get_ref().firmware_redirect.unwrap_or(true),
            }),
            _ => {
                self.error(
                    c,
                    "console port must be 0-3, \"ttyS0\"-\"ttyS3\" or \"none\"",
                );
                None
            }
        }
    }
}
