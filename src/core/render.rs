//! What a machine is handed: the bootstrap `boot.ipxe`, its per-machine iPXE
//! script, its pxelinux menu, or a retry script when something is wrong. All
//! rendering goes through handlebars with HTML escaping off and strict
//! variables; client-supplied strings reach templates only in their sanitised
//! form (see [`super::identity::sanitize`]), so no SMBIOS string can add a line
//! or a command to a script.

use std::collections::HashMap;
use std::sync::Arc;

use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderErrorReason,
};
use serde_json::Value;

pub use super::base::Base;
pub use super::context::{Install, RETRY_SECONDS};
use super::context::{Needs, Parts};
use super::identity::{Arch, Identity, IdentityError};
use super::{Boot, BootKind, Location, Policy, Rule};

/// The templates every config must provide (the shipped `boot-templates/` has
/// them all).
pub const BOOTSTRAP: &str = "boot.ipxe";
pub const RETRY: &str = "retry.ipxe";
pub const LINUX: &str = "linux.ipxe";
pub const PXELINUX_CHAIN: &str = "pxelinux.ipxe";
pub const MENU: &str = "menu.pxelinux";
pub const LOCAL_BIOS: &str = "local-bios.ipxe";
pub const LOCAL_EFI: &str = "local-efi.ipxe";
pub const REQUIRED: &[&str] = &[
    BOOTSTRAP,
    RETRY,
    LINUX,
    PXELINUX_CHAIN,
    MENU,
    LOCAL_BIOS,
    LOCAL_EFI,
];

/// A rendered script or config, and the rule that produced it (none for the
/// bootstrap and retry scripts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub rule: Option<String>,
}

/// Most scripts a snapshot remembers; past that it starts over. A rack's worth
/// of machines fits many times.
const SCRIPT_CACHE_LIMIT: usize = 8192;
/// Longer render requests are answered but not remembered (iPXE's own are a
/// few hundred bytes), so the cache's memory stays bounded.
const CACHED_QUERY_MAX: usize = 1024;

/// A render request answered: who the machine said it is, and its script.
#[derive(Debug)]
pub struct Answer {
    pub id: Identity,
    pub rendered: Rendered,
}

/// Answered render requests of one snapshot, by base URL and the query
/// exactly as the machine sent it. A machine sends the same query at every
/// boot, so a repeat costs one lookup: no parsing, no rule match, no render
/// (together ~30% of a request's instructions under bench/http.sh's load).
/// A reload builds a new policy, so the cache can never serve an old rule.
#[derive(Debug, Default)]
pub struct ScriptCache {
    answers: std::sync::Mutex<ScriptMap>,
}

/// Base → query → answer, looked up by reference (nothing is built on a hit).
#[derive(Debug, Default)]
struct ScriptMap {
    by_base: HashMap<Base, HashMap<String, Arc<Answer>>>,
    len: usize,
}

impl ScriptCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, ScriptMap> {
        crate::sync::lock(&self.answers)
    }

    fn get(&self, query: &str, base: &Base) -> Option<Arc<Answer>> {
        self.lock().by_base.get(base)?.get(query).cloned()
    }

    fn insert(&self, query: &str, base: &Base, answer: Arc<Answer>) {
        if query.len() > CACHED_QUERY_MAX {
            return;
        }
        let mut map = self.lock();
        if map.len >= SCRIPT_CACHE_LIMIT {
            *map = ScriptMap::default();
        }
        let previous = map
            .by_base
            .entry(base.clone())
            .or_default()
            .insert(query.to_string(), answer);
        if previous.is_none() {
            map.len += 1;
        }
    }
}

/// The compiled template set of one config snapshot.
#[derive(Debug)]
pub struct Templates {
    hb: Handlebars<'static>,
    /// Template name → the file it came from, so render errors name the file.
    paths: std::collections::HashMap<String, String>,
    /// Template name → the context keys it can reach (see `core::context`).
    needs: HashMap<String, Needs>,
}

/// A template problem, placed in the template file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {reason}")]
pub struct TemplateError {
    pub location: Location,
    pub reason: String,
}

/// `{{truncate value n}}`: at most n characters of value; nothing for null, so a
/// template can show a product string a machine may not have reported.
fn truncate_helper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let text = h.param(0).and_then(|p| p.value().as_str()).unwrap_or("");
    let max = h
        .param(1)
        .and_then(|p| p.value().as_u64())
        .unwrap_or(u64::MAX);
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    out.write(&text.chars().take(max).collect::<String>())?;
    Ok(())
}

/// A helper writing `f` of its one string parameter (nothing for null):
/// `{{grub_quote rule.name}}`, `{{grub_words boot.cmdline}}`.
fn string_helper(
    f: fn(&str) -> String,
) -> impl Fn(&Helper, &Handlebars, &Context, &mut RenderContext, &mut dyn Output) -> HelperResult
       + Send
       + Sync {
    move |h, _, _, _, out| {
        let text = h.param(0).and_then(|p| p.value().as_str()).unwrap_or("");
        out.write(&f(text))?;
        Ok(())
    }
}

/// A template syntax error in the operator's words: handlebars' own message
/// for a syntax error is its parser's grammar rule (`expected
/// trailing_tilde_to_omit_whitespace`), which names nothing they wrote.
fn template_error_reason(reason: &handlebars::TemplateErrorReason) -> String {
    match reason {
        handlebars::TemplateErrorReason::InvalidSyntax(_) => {
            "invalid handlebars syntax: an expression here is not closed or not well formed \
             (`{{name}}`, `{{#if x}}…{{/if}}`: every `{{` needs its `}}`)"
                .to_string()
        }
        handlebars::TemplateErrorReason::MismatchingClosedHelper(open, close) => {
            format!("`{{{{#{open}}}}}` is closed by `{{{{/{close}}}}}`")
        }
        other => other.to_string(),
    }
}

/// `{{json value}}`: the value as JSON (a string quoted and escaped), so
/// that an Ignition template cannot be broken by what a machine reports.
fn json_helper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let value = h.param(0).map_or(&Value::Null, |p| p.value());
    out.write(&value.to_string())?;
    Ok(())
}

impl Templates {
    /// Compiles `(name, file path for messages, source)` triples. Every error is
    /// reported, not only the first.
    pub fn compile<'a>(
        sources: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Result<Templates, Vec<TemplateError>> {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        hb.register_helper("truncate", Box::new(truncate_helper));
        hb.register_helper("grub_quote", Box::new(string_helper(super::grub::quote)));
        hb.register_helper("grub_words", Box::new(string_helper(super::grub::words)));
        hb.register_helper("json", Box::new(json_helper));
        let mut errors = Vec::new();
        let mut paths = std::collections::HashMap::new();
        for (name, path, source) in sources {
            paths.insert(name.to_string(), path.to_string());
            if let Err(e) = hb.register_template_string(name, source) {
                let (line, column) = e.pos().unwrap_or((1, 1));
                errors.push(TemplateError {
                    location: Location {
                        file: path.into(),
                        line,
                        column,
                    },
                    reason: template_error_reason(e.reason()),
                });
            }
        }
        if errors.is_empty() {
            let needs = hb
                .get_templates()
                .iter()
                .map(|(name, t)| (name.clone(), Needs::of(t)))
                .collect();
            Ok(Templates { hb, paths, needs })
        } else {
            Err(errors)
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.hb.has_template(name)
    }

    /// Renders `name` with the context of `parts`, built only as far as the
    /// template reaches and handed to handlebars as it is: its `render(&T)`
    /// would first copy the whole tree (`to_value`), a tenth of a new
    /// machine's render (bench/callgrind.sh, docs/decisions.md).
    fn render(&self, name: &str, parts: &Parts) -> Result<String, TemplateError> {
        self.render_as(name, parts, self.needs.get(name).unwrap_or(&Needs::ALL))
    }

    fn render_as(&self, name: &str, parts: &Parts, needs: &Needs) -> Result<String, TemplateError> {
        let ctx: Value = parts.context(needs);
        // handlebars renders into an 8 KiB buffer; scripts are ~0.5 KiB and
        // the answer cache keeps 8,192 of them: without the shrink that was
        // 67 MB of the 10,000-machine storm's 88 MB heap peak (heaptrack,
        // docs/decisions.md). One small copy per render, none per cached hit.
        let ctx = handlebars::Context::from(ctx);
        self.hb.render_with_context(name, &ctx).map(|mut text| {
            text.shrink_to_fit();
            text
        }).map_err(|e| {
            let template = e.template_name.clone().unwrap_or_else(|| name.to_string());
            let reason = match e.reason() {
                RenderErrorReason::MissingVariable(Some(var)) => format!(
                    "undefined variable `{var}` (docs/configuration.md lists what templates can use)"
                ),
                other => other.to_string(),
            };
            TemplateError {
                location: Location {
                    file: self.paths.get(&template).cloned().unwrap_or(template).into(),
                    line: e.line_no.unwrap_or(1),
                    column: e.column_no.unwrap_or(1),
                },
                reason,
            }
        })
    }
}

impl Boot {
    /// The iPXE template a machine with this firmware gets for this rule.
    pub fn ipxe_template(&self, arch: Option<Arch>) -> &str {
        match self.kind {
            BootKind::Local if self.template.is_empty() => {
                if arch.is_some_and(|a| a.is_efi()) {
                    LOCAL_EFI
                } else {
                    LOCAL_BIOS
                }
            }
            _ => &self.template,
        }
    }

    /// The kernel command line: the rule's arguments, plus the serial console
    /// unless the arguments already name one.
    pub fn cmdline(&self) -> String {
        let mut line = self.args.trim().to_string();
        if let Some(c) = self.console {
            if !line.split_whitespace().any(|a| a.starts_with("console=")) {
                if !line.is_empty() {
                    line.push(' ');
                }
                line.push_str(&c.kernel_arg());
            }
        }
        line
    }
}

/// `text` with control characters (a newline would start a new script
/// command) turned into spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Last resort when even `retry.ipxe` fails to render: the firmware must never
/// be left at a dead end.
fn builtin_retry(base: &Base) -> String {
    format!(
        "#!ipxe\necho pxed: internal error rendering the boot script, retrying in {RETRY_SECONDS} seconds\nsleep {RETRY_SECONDS}\nchain {}/boot.ipxe\n",
        base.url()
    )
}

impl Policy {
    /// The static bootstrap served at `/boot.ipxe`.
    pub fn bootstrap(&self, base: &Base) -> Rendered {
        let (id, install) = (Identity::default(), Install::default());
        let text = self
            .templates
            .render(BOOTSTRAP, &Parts::fixed(&id, base, None, &install))
            .unwrap_or_else(|_| builtin_retry(base));
        Rendered { text, rule: None }
    }

    /// A script that prints `message` on the console and starts over.
    /// `message` is pxed's own sentence, written as it is (only kept to one
    /// line): a client value may appear in it only through
    /// [`super::identity::sanitize`] (see `IdentityError::sanitized`), never
    /// raw. Sanitising the whole sentence would mangle pxed's text ("machine_
    /// add one") and cut it at a client string's length.
    pub fn retry(&self, id: &Identity, base: &Base, message: &str) -> Rendered {
        let message = one_line(message);
        let install = Install::default();
        let text = self
            .templates
            .render(RETRY, &Parts::fixed(id, base, Some(&message), &install))
            .unwrap_or_else(|_| builtin_retry(base));
        Rendered { text, rule: None }
    }

    /// The iPXE script for this machine.
    /// The answer to a render request as it arrived (`product=…&mac=…`),
    /// remembered per snapshot when a rule matched (retry scripts are cheap,
    /// and unknown machines must not fill the cache).
    pub fn answer(&self, query: &str, base: &Base) -> Result<Arc<Answer>, IdentityError> {
        if let Some(hit) = self.scripts.get(query, base) {
            return Ok(hit);
        }
        let id = Identity::from_query(query)?;
        let rendered = self.ipxe_script(&id, base);
        let matched = rendered.rule.is_some();
        let answer = Arc::new(Answer { id, rendered });
        if matched {
            self.scripts.insert(query, base, answer.clone());
        }
        Ok(answer)
    }

    /// The iPXE script this machine gets by the rules alone: its rule's
    /// template, or the retry script when no rule matches.
    pub fn ipxe_script(&self, id: &Identity, base: &Base) -> Rendered {
        self.script_for(id, base, None)
    }

    /// The pxelinux `menu.c32` config for this machine by the rules alone
    /// (see [`Policy::menu_for`]).
    pub fn pxelinux_config(
        &self,
        id: &Identity,
        base: &Base,
        rule_hint: Option<&str>,
    ) -> Option<Rendered> {
        self.menu_for(id, base, rule_hint, None)
    }

    pub(super) fn render_rule(
        &self,
        rule: &Rule<Boot>,
        template: &str,
        id: &Identity,
        base: &Base,
        install: &Install,
    ) -> Rendered {
        match self.render_rule_checked(rule, template, id, base, install) {
            Ok(text) => Rendered {
                text,
                rule: Some(rule.name.clone()),
            },
            Err(e) => {
                tracing::error!(rule = %rule.name, error = %e, "template failed to render");
                self.retry(
                    id,
                    base,
                    "the boot template failed to render; see the pxed log",
                )
            }
        }
    }

    /// Renders the bootstrap and retry templates, reporting failure instead of
    /// falling back. Used when loading a config.
    pub fn check_fixed_templates(&self, base: &Base) -> Result<(), TemplateError> {
        let (id, none) = (Identity::default(), Install::default());
        self.templates
            .render(BOOTSTRAP, &Parts::fixed(&id, base, None, &none))?;
        self.templates.render(
            RETRY,
            &Parts::fixed(&id, base, Some("sample message"), &none),
        )?;
        Ok(())
    }

    /// Renders `template` for `rule`, reporting failure instead of falling back.
    /// Used by `pxed check` to render every rule once.
    pub fn render_rule_checked(
        &self,
        rule: &Rule<Boot>,
        template: &str,
        id: &Identity,
        base: &Base,
        install: &Install,
    ) -> Result<String, TemplateError> {
        let parts = Parts {
            id,
            rule: Some(rule),
            base,
            message: None,
            install,
        };
        self.templates.render(template, &parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_render_request_is_answered_from_the_cache() {
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("machines.toml");
        let config = crate::config::load(&shipped).unwrap();
        let policy = &config.policy;
        let base = Base::Http("http://10.0.0.1:8080".into());
        let query = "product=Express5800%2Fi120Ra-e1&mac=52:54:00:12:34:56";
        let first = policy.answer(query, &base).unwrap();
        let again = policy.answer(query, &base).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "a repeat is a lookup");
        assert_eq!(first.rendered, policy.ipxe_script(&first.id, &base));
        let elsewhere = Base::Http("http://10.0.0.2:8080".into());
        let other = policy.answer(query, &elsewhere).unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        assert!(other.rendered.text.contains("10.0.0.2"));
        assert!(policy.answer("mac=zz", &base).is_err());
        // A cached script holds what it needs, not handlebars' 8 KiB render
        // buffer (8,192 of those were 67 MB of a storm's heap).
        let text = &first.rendered.text;
        assert!(
            text.capacity() < text.len() + 64,
            "{} bytes held for a {}-byte script",
            text.capacity(),
            text.len()
        );
    }

    /// Every template renders what it rendered with the whole context: the
    /// shipped ones for every rule and firmware, and templates the key walk
    /// must give up on (blocks that change the context, `this`, partials, a
    /// misspelt key, which must still fail the same way).
    #[test]
    fn a_context_of_the_reachable_keys_renders_as_the_whole_one() {
        let shipped =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fixture/machines.toml");
        let config = crate::config::load(&shipped).unwrap();
        let policy = &config.policy;
        let base = Base::Http("http://10.0.0.1:8080".into());
        let query =
            "product=Express5800%2Fi120Ra-e1&serial=SN-42-x&manufacturer=NEC&mac=52:54:00:12:34:56";
        let mut id = Identity::from_query(query).unwrap();
        let install = Install {
            callback_url: Some("http://cb/".into()),
            config_url: Some("http://cfg/".into()),
        };
        let odd = [
            "{{#each machine}}{{@key}}={{this}} {{/each}}",
            "{{#with boot}}{{kernel_url}} {{../server.base_url}}{{/with}}",
            "{{json this}} {{this.rule.name}}",
            "{{json boot}} {{json machine.mac}} {{#if console}}{{json console}}{{/if}}",
            "{{lookup machine \"mac\"}}",
            "{{#if (eq rule.name \"db1\")}}{{machine.mac_hex}}{{else if console}}{{console.tty}}{{/if}}",
            "{{> linux.ipxe}}",
            "{{machine.mca}}",
            "{{machne.mac}}",
            "{{@root.machine.mac}}",
            "{{[machine].mac}} {{machine.[mac]}}",
            "{{vars.role}} {{grub.serial}} {{pxelinux.config}} {{install.config_url}}",
        ];
        let names: Vec<String> = (0..odd.len()).map(|i| format!("odd{i}")).collect();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("boot-templates");
        let files: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(e.path()).unwrap())
            })
            .collect();
        let sources = files
            .iter()
            .map(|(n, s)| (n.as_str(), n.as_str(), s.as_str()));
        let odd_sources = names
            .iter()
            .zip(odd)
            .map(|(n, s)| (n.as_str(), n.as_str(), s));
        let templates = Templates::compile(sources.chain(odd_sources)).unwrap();
        let mut rendered = 0;
        for arch in [None, Some(Arch::EfiX64), Some(Arch::EfiArm64)] {
            id.arch = arch;
            for rule in policy.rules.iter().map(Some).chain([None]) {
                for name in templates.needs.keys() {
                    let parts = Parts {
                        id: &id,
                        rule,
                        base: &base,
                        message: Some("m"),
                        install: &install,
                    };
                    let whole = templates.render_as(name, &parts, &Needs::ALL);
                    assert_eq!(templates.render(name, &parts), whole, "{name}");
                    rendered += usize::from(whole.is_ok());
                }
            }
        }
        assert!(rendered > 300, "{rendered} renders compared");
    }
}
