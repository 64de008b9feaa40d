//! The handlebars context of a render, built with only the keys its template
//! can reach. A new machine's render spent about half its instructions
//! building the full context (`machine`, `boot`, `grub`, `console`, the
//! pxelinux menu name…) while `linux.ipxe` reads eight values of it
//! (bench/callgrind.sh, docs/decisions.md). Each template's reachable keys
//! are found once, when it is compiled, by walking its parsed form; anything
//! the walk cannot follow (`each`, `with`, partials, `this`, `..`, `@root`,
//! `lookup`, a name it does not know) makes the template take the whole
//! context, so output and strict-mode errors stay what they were.

use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{Path, PathSeg};
use serde_json::{Map, Value};

use super::base::Base;
use super::identity::{query_escape, Identity};
use super::{Boot, Rule};

/// Seconds a machine waits before retrying when it could not be given a script.
pub const RETRY_SECONDS: u32 = 10;

/// The per-machine URLs one render carries (see `core::lifecycle`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Install {
    /// `<base>/callback/<mac>/<token>` when a one-shot override is booting.
    pub callback_url: Option<String>,
    /// `<base>/config/<mac>/<rule>/` when the rule has installer configs.
    pub config_url: Option<String>,
}

/// The context's top-level keys (docs/configuration.md).
const TOP: &[&str] = &[
    "machine",
    "rule",
    "boot",
    "console",
    "grub",
    "server",
    "pxelinux",
    "vars",
    "message",
    "retry_seconds",
    "install",
];

/// Helpers that read their parameters in the current context and nothing
/// else (ours, and handlebars' built-in comparisons).
const PLAIN_HELPERS: &[&str] = &[
    "truncate",
    "grub_quote",
    "grub_words",
    "json",
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "and",
    "or",
    "not",
    "len",
];

/// Characters of the product that travel in option 209 for the menu title
/// (menu.c32 shows 56 columns of it, MAC included).
const MENU_PRODUCT_CHARS: usize = 32;

/// What a template can reach: everything, or these top-level keys, each
/// whole (`None`) or only the listed second-level keys.
#[derive(Debug, Clone, Default)]
pub(super) struct Needs {
    all: bool,
    keys: Vec<(String, Option<Vec<String>>)>,
}

/// The keys wanted of one object.
#[derive(Clone, Copy)]
enum Want<'a> {
    All,
    Some(&'a [String]),
}

impl Want<'_> {
    fn has(self, key: &str) -> bool {
        match self {
            Want::All => true,
            Want::Some(keys) => keys.iter().any(|k| k == key),
        }
    }
}

impl Needs {
    pub(super) const ALL: Needs = Needs {
        all: true,
        keys: Vec::new(),
    };

    /// The keys `template` can reach.
    pub(super) fn of(template: &Template) -> Needs {
        let mut needs = Needs::default();
        needs.template(template);
        needs
    }

    fn want(&self, key: &str) -> Option<Want<'_>> {
        if self.all {
            return Some(Want::All);
        }
        let (_, sub) = self.keys.iter().find(|(k, _)| k == key)?;
        Some(sub.as_deref().map_or(Want::All, Want::Some))
    }

    fn template(&mut self, t: &Template) {
        for e in &t.elements {
            match e {
                TemplateElement::RawString(_) | TemplateElement::Comment(_) => {}
                TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                    self.expression(h)
                }
                TemplateElement::HelperBlock(h) => self.block(h),
                _ => self.all = true,
            }
        }
    }

    /// `{{path}}` or `{{helper params…}}`.
    fn expression(&mut self, h: &HelperTemplate) {
        match &h.name {
            Parameter::Path(p) if h.params.is_empty() && h.hash.is_empty() => self.path(p),
            Parameter::Name(n) if PLAIN_HELPERS.contains(&n.as_str()) => self.params(h),
            // A bare name that is no helper is looked up as a variable.
            Parameter::Name(n) if h.params.is_empty() && h.hash.is_empty() => {
                self.named(&[n.as_str()])
            }
            _ => self.all = true,
        }
    }

    /// `{{#if}}` and `{{#unless}}` keep the context; any other block may not.
    fn block(&mut self, h: &HelperTemplate) {
        let keeps = matches!(&h.name, Parameter::Name(n) if n == "if" || n == "unless");
        if !keeps || h.block_param.is_some() {
            self.all = true;
            return;
        }
        self.params(h);
        for t in [&h.template, &h.inverse].into_iter().flatten() {
            self.template(t);
        }
    }

    fn params(&mut self, h: &HelperTemplate) {
        for p in h.params.iter().chain(h.hash.values()) {
            match p {
                Parameter::Path(p) => self.path(p),
                Parameter::Literal(_) => {}
                Parameter::Subexpression(s) => match s.as_element() {
                    TemplateElement::Expression(h) => self.expression(h),
                    _ => self.all = true,
                },
                _ => self.all = true,
            }
        }
    }

    fn path(&mut self, p: &Path) {
        let Path::Relative((segs, _)) = p else {
            self.all = true;
            return;
        };
        let mut names = Vec::with_capacity(segs.len());
        for s in segs {
            match s {
                PathSeg::Named(n) => names.push(n.as_str()),
                _ => {
                    self.all = true;
                    return;
                }
            }
        }
        self.named(&names);
    }

    /// A path of plain names from the root: the first must be a context key.
    fn named(&mut self, names: &[&str]) {
        let Some(&top) = names.first().filter(|n| TOP.contains(n)) else {
            self.all = true;
            return;
        };
        let at = match self.keys.iter().position(|(k, _)| k == top) {
            Some(at) => at,
            None => {
                self.keys.push((top.to_string(), Some(Vec::new())));
                self.keys.len() - 1
            }
        };
        let sub = &mut self.keys[at].1;
        match (names.get(1), sub.as_mut()) {
            (None, _) => *sub = None,
            (Some(n), Some(subs)) if !subs.iter().any(|s| s == n) => subs.push(n.to_string()),
            _ => {}
        }
    }
}

/// An object of the context, holding only the wanted keys.
struct Obj<'a> {
    want: Want<'a>,
    map: Map<String, Value>,
}

impl<'a> Obj<'a> {
    fn new(want: Want<'a>) -> Obj<'a> {
        Obj {
            want,
            map: Map::new(),
        }
    }

    fn put<V: Into<Value>>(&mut self, key: &str, value: impl FnOnce() -> V) {
        if self.want.has(key) {
            self.map.insert(key.to_string(), value().into());
        }
    }

    fn done(self) -> Value {
        Value::Object(self.map)
    }
}

/// What one render is about.
pub(super) struct Parts<'a> {
    pub id: &'a Identity,
    pub rule: Option<&'a Rule<Boot>>,
    pub base: &'a Base,
    pub message: Option<&'a str>,
    pub install: &'a Install,
}

impl<'a> Parts<'a> {
    /// The parts of a script no rule produced (bootstrap, retry).
    pub(super) fn fixed(
        id: &'a Identity,
        base: &'a Base,
        message: Option<&'a str>,
        install: &'a Install,
    ) -> Parts<'a> {
        Parts {
            id,
            rule: None,
            base,
            message,
            install,
        }
    }

    /// The template context, as far as `needs` reaches. Every key is present
    /// (null when unknown) so strict mode only catches real typos.
    pub(super) fn context(&self, needs: &Needs) -> Value {
        let mut root = Map::new();
        let mut put = |key: &str, build: &dyn Fn(Want) -> Value| {
            if let Some(w) = needs.want(key) {
                root.insert(key.to_string(), build(w));
            }
        };
        put("machine", &|w| self.machine(w));
        put("rule", &|w| {
            self.rule.map_or(Value::Null, |r| {
                let mut o = Obj::new(w);
                o.put("name", || r.name.clone());
                o.put("priority", || r.priority);
                o.done()
            })
        });
        put("boot", &|w| {
            self.rule
                .map_or(Value::Null, |r| boot(&r.boot, self.base, self.install, w))
        });
        put("console", &|w| self.console(w));
        put("grub", &|_| {
            super::grub::context(self.id.arch, self.rule.and_then(|r| r.boot.console))
        });
        put("server", &|w| {
            let mut o = Obj::new(w);
            o.put("base_url", || self.base.url().to_string());
            o.put("assets_url", || self.base.asset(""));
            o.put("pxelinux_prefix", || {
                format!("{}/pxelinux/", self.base.url())
            });
            o.done()
        });
        put("pxelinux", &|w| {
            let mut o = Obj::new(w);
            o.put("config", || self.menu_name());
            o.done()
        });
        put("vars", &|_| {
            Value::Object(self.rule.map(|r| r.boot.vars.clone()).unwrap_or_default())
        });
        put("message", &|_| self.message.into());
        put("retry_seconds", &|_| RETRY_SECONDS.into());
        put("install", &|w| {
            let mut o = Obj::new(w);
            o.put("callback_url", || self.install.callback_url.clone());
            o.put("config_url", || self.install.config_url.clone());
            o.done()
        });
        Value::Object(root)
    }

    fn machine(&self, w: Want) -> Value {
        let id = self.id;
        let mut o = Obj::new(w);
        o.put("mac", || id.mac.map(|m| m.to_string()));
        o.put("mac_hyphen", || id.mac.map(|m| m.hyphenated()));
        o.put("mac_hex", || id.mac.map(|m| m.hex()));
        o.put("product", || id.product.as_ref().map(|s| s.safe()));
        o.put("serial", || id.serial.as_ref().map(|s| s.safe()));
        o.put("manufacturer", || {
            id.manufacturer.as_ref().map(|s| s.safe())
        });
        o.put("uuid", || id.uuid.as_ref().map(|u| u.to_string()));
        o.put("arch", || id.arch.map(|a| a.name()));
        o.put("firmware", || match id.arch {
            Some(a) if a.is_efi() => "efi",
            _ => "bios",
        });
        o.done()
    }

    fn console(&self, w: Want) -> Value {
        let Some(c) = self.rule.and_then(|r| r.boot.console) else {
            return Value::Null;
        };
        let mut o = Obj::new(w);
        o.put("index", || c.index);
        o.put("tty", || c.tty());
        o.put("baud", || c.baud);
        o.put("kernel_arg", || c.kernel_arg());
        o.put("firmware_redirect", || c.firmware_redirect);
        o.done()
    }

    /// Option 209 names the menu by MAC, the matched rule and the start of
    /// the product (for the menu title) only: lpxelinux loses option 210
    /// when 209 grows past ~240 bytes, which a full identity query with real
    /// SMBIOS strings does (tests/e2e.rs,
    /// pxelinux_menu_survives_a_long_smbios_identity).
    fn menu_name(&self) -> String {
        let file = self
            .id
            .mac
            .map_or_else(|| "01-".to_string(), |m| m.pxelinux_name());
        let mut menu_name = format!("pxelinux.cfg/{file}");
        if let Some(r) = self.rule {
            menu_name.push_str(&format!("?rule={}", query_escape(&r.name)));
            if let Some(p) = &self.id.product {
                let shown: String = p.raw().chars().take(MENU_PRODUCT_CHARS).collect();
                menu_name.push_str(&format!("&product={}", query_escape(&shown)));
            }
        }
        menu_name
    }
}

/// The template's `boot` object for a rule.
fn boot(b: &Boot, base: &Base, install: &Install, w: Want) -> Value {
    let mut o = Obj::new(w);
    o.put("kind", || b.kind.name());
    o.put("kernel", || b.kernel.clone());
    o.put("initrd", || b.initrd.clone());
    o.put("kernel_url", || b.kernel.as_deref().map(|k| base.asset(k)));
    o.put("initrd_url", || b.initrd.as_deref().map(|i| base.asset(i)));
    o.put("kernel_path", || b.kernel.as_deref().and_then(tftp_path));
    o.put("initrd_path", || b.initrd.as_deref().and_then(tftp_path));
    o.put("initrd_name", || {
        b.initrd
            .as_deref()
            .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
    });
    o.put("args", || b.args.clone());
    o.put("cmdline", || b.cmdline_with(install));
    o.put("menu_timeout", || b.menu_timeout);
    o.put("menu_timeout_ds", || b.menu_timeout.saturating_mul(10));
    o.done()
}

/// An asset's absolute path on the TFTP server (`/debian/vmlinuz`), as GRUB
/// fetches it; `None` for a URL.
fn tftp_path(path: &str) -> Option<String> {
    (!path.contains("://")).then(|| format!("/{}", path.trim_start_matches('/')))
}
