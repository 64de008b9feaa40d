//! A machine's state on its page (override, labels) and, for a logged-in
//! session (see [`super::session`]), the forms that change it: reinstall
//! once, boot a rule until cleared, local disk, clear. Each form carries the
//! session's CSRF token.

use maud::{html, Markup};

use super::session::Session;
use crate::config::Config;
use crate::core::Mac;
use crate::machines::MachineRecord;

pub fn state(
    mac: Mac,
    record: Option<&MachineRecord>,
    session: Option<&Session>,
    config: &Config,
) -> Markup {
    let ovr = record.and_then(|r| r.boot_override.as_ref());
    let labels: Vec<String> = record
        .map(|r| r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect())
        .unwrap_or_default();
    let target = format!("/machines/{mac}/override");
    html! {
        h2 { "Boot override" }
        p #override {
            @match ovr {
                None => "None: the rules of machines.toml decide.",
                Some(o) => {
                    b { (o.boot) } " (set by " (o.set_by) " at "
                    (humantime::format_rfc3339_seconds(o.set_at)) ", " (o.boots) " boots since)"
                }
            }
        }
        @if !labels.is_empty() { p { "Labels: " (labels.join(", ")) } }
        @match session {
            Some(s) => {
                (action(&target, s, "reinstall", "reinstall once", Some(config)))
                (action(&target, s, "boot", "boot until cleared", Some(config)))
                (action(&target, s, "local", "local boot", None))
                (action(&target, s, "clear", "clear", None))
                form.act method="post" action="/logout" { button { "log out " (s.client) } }
            }
            None if config.server.api_tokens.is_some() => {
                p { a href="/login" { "Log in" } " to reinstall this machine, boot it from its local disk, or clear its override." }
            }
            None => p { "Set " code { "[server] api_tokens" } " to act on machines from here (docs/api.md)." },
        }
    }
}

/// One action's form; with `config`, a choice of rule.
fn action(target: &str, s: &Session, name: &str, label: &str, config: Option<&Config>) -> Markup {
    html! {
        form.act method="post" action=(target) {
            input type="hidden" name="csrf" value=(s.csrf);
            input type="hidden" name="action" value=(name);
            @if let Some(c) = config {
                select name="rule" id=(format!("{name}-rule")) {
                    @for r in c.policy.rules.iter() { option value=(r.name) { (r.name) } }
                }
                " "
            }
            button #(name) { (label) }
        }
    }
}
