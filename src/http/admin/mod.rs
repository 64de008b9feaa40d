//! The admin listener (loopback by default; its pages read without a token,
//! and act on machines only after a login with an API token): a status
//! page (which config is serving, since when, from which files, the last
//! rejected reload and why, every rule), the machines page and each machine's
//! boot timeline ([`machines`]), a rule preview that renders any identity and
//! explains the match as `pxed explain` does, and `/metrics`.
//! Plain server-rendered HTML that works without JavaScript and on a phone.

mod actions;
mod api;
mod machines;
mod session;

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::config::{Config, Shared};
use crate::core::{Active, BootKind, Identity};
use crate::reload::Status;

#[derive(Clone)]
struct AdminState {
    config: Shared,
    reload: Arc<Status>,
    /// Who is logged in to the pages' actions (see [`session`]).
    sessions: Arc<session::Sessions>,
}

pub use api::ROUTES as API_ROUTES;

pub fn router(config: Shared, reload: Arc<Status>) -> Router {
    let state = AdminState {
        config,
        reload,
        sessions: Arc::default(),
    };
    Router::new()
        .nest("/api/v1", api::router(state.clone()))
        .route("/", get(status))
        .route("/machines", get(machines::list))
        .route("/machines/{mac}", get(machines::timeline))
        .route("/machines/{mac}/override", post(session::act))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/preview", get(preview))
        .route("/metrics", get(metrics))
        .with_state(state)
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1rem;max-width:70rem}\
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ccc;padding:.3rem;text-align:left;vertical-align:top}\
pre{background:#f4f4f4;padding:.5rem;overflow-x:auto}.bad{color:#a00}\
form.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(14rem,1fr));gap:.5rem}input{width:95%}\
form.act{display:inline-block;margin:0 .5rem .5rem 0}form.act select,form.act input{width:auto}\
nav a{margin-right:1rem}.wide{overflow-x:auto}.ok{color:#060}";

/// A whole page: the navigation, the title, `body`. Built with maud, which
/// escapes every value it is given (see docs/decisions.md).
fn page(title: &str, body: Markup) -> Html<String> {
    let html = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { (title) " - pxed" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav {
                    a href="/" { "status" }
                    a href="/machines" { "machines" }
                    a href="/preview" { "rule preview" }
                    a href="/metrics" { "metrics" }
                }
                h1 { (title) }
                (body)
            }
        }
    };
    Html(html.into_string())
}

fn ago(t: SystemTime) -> String {
    let secs = SystemTime::now()
        .duration_since(t)
        .unwrap_or_default()
        .as_secs();
    format!("{} ({secs} s ago)", httpdate::fmt_http_date(t))
}

async fn status(State(state): State<AdminState>) -> Html<String> {
    let config = state.config.load_full();
    let body = html! {
        p { "Serving " code { (config.path.display()) } ", loaded " (ago(config.loaded_at)) "." }
        h2 { "Files" }
        ul { @for f in &config.files { li { code { (f.display()) } } } }
        @for w in &config.warnings { p.bad { "warning: " (w) } }
        h2 { "Last rejected reload" }
        @match state.reload.last_rejected() {
            None => p { "None since the serving config was loaded." },
            Some(r) => {
                p.bad { (ago(r.at)) " (trigger: " (r.trigger) "); the config above kept serving:" }
                pre { @for err in &r.errors { (err) "\n" } }
            }
        }
        (rules_table(&config))
    };
    page("pxed status", body)
}

fn rules_table(config: &Config) -> Markup {
    html! {
        h2 { "Rules, in the order they are tried" }
        table {
            tr { th { "rule" } th { "priority" } th { "specificity" } th { "match" } th { "boot" } th { "defined at" } }
            @for rule in config.policy.rules.iter() {
                tr {
                    td { (rule.name) }
                    td { (rule.priority) }
                    td { (rule.selectors.specificity()) }
                    td { (rule.selectors) }
                    td {
                        @match rule.boot.kind {
                            BootKind::Local => "local disk",
                            kind => { (kind.name()) " " (rule.boot.kernel.as_deref().unwrap_or("")) },
                        }
                    }
                    td { (rule.location) }
                }
            }
        }
    }
}

/// Renders any identity the way the machine would get it (its override
/// included), with the explanation of the match. The form's fields use the
/// render endpoint's query names, so a URL from a machine's log can be
/// pasted in.
async fn preview(State(state): State<AdminState>, RawQuery(query): RawQuery) -> Html<String> {
    let config = state.config.load_full();
    let query = query.unwrap_or_default();
    let id = Identity::from_query(&query);
    let known = id.clone().unwrap_or_default();
    let raw = |s: &Option<crate::core::ClientString>| s.as_ref().map(|p| p.raw().to_string());
    let fields = [
        ("mac", known.mac.map(|m| m.to_string())),
        ("product", raw(&known.product)),
        ("serial", raw(&known.serial)),
        ("manufacturer", raw(&known.manufacturer)),
        ("uuid", known.uuid.as_ref().map(|u| u.to_string())),
        ("arch", known.arch.map(|a| a.name())),
    ];
    let body = html! {
        form.grid method="get" {
            @for (name, value) in &fields {
                label { (name) br; input name=(name) value=(value.as_deref().unwrap_or("")); }
            }
            div { br; button { "preview" } }
        }
        @match id {
            Err(err) => p.bad { (err) },
            Ok(id) if !query.is_empty() => (preview_of(&config, &id)),
            Ok(_) => p { "Fill in what a machine reports and press preview." },
        }
    };
    page("rule preview", body)
}

fn preview_of(config: &Config, id: &Identity) -> Markup {
    let shown = config.server.shown_base();
    let base = shown.base();
    let active = id
        .mac
        .and_then(crate::machines::lookup)
        .map(|a| Active { token: None, ..a });
    let boot = active.as_ref().map(|a| &a.boot);
    let script = config.policy.script_for(id, base, active.as_ref());
    let menu = config.policy.menu_for(id, base, None, active.as_ref());
    let grub = config
        .policy
        .choose(id, boot)
        .rule
        .filter(|r| r.boot.kind == BootKind::Grub)
        .map(|_| config.policy.grub_for(id, base, active.as_ref()));
    html! {
        h2 { "Why" }
        pre { (config.policy.explain_for(id, boot)) }
        @if let Some(note) = shown.note() { p { i { (note) } } }
        h2 { "iPXE script" }
        pre { (script.text) }
        @if let Some(menu) = menu {
            h2 { "pxelinux menu" }
            pre { (menu.text) }
        }
        @if let Some(grub) = grub {
            h2 { "grub.cfg" }
            pre { (grub.text) }
        }
    }
}

/// The exposition in OpenMetrics when the scraper asks for it (Prometheus
/// does), else in Prometheus text 0.0.4, as `text/plain; version=0.0.4`,
/// which a browser shows instead of downloading and every Prometheus-format
/// parser reads.
async fn metrics(State(state): State<AdminState>, headers: axum::http::HeaderMap) -> Response {
    let config = state.config.load_full();
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        crate::metrics::get().encode(&config, openmetrics),
    )
        .into_response()
}
