//! The admin listener (loopback by default, read-only, so no token): a status
//! page (which config is serving, since when, from which files, the last
//! rejected reload and why, every rule), the machines page and each machine's
//! boot timeline ([`machines`]), a rule preview that renders any identity and
//! explains the match as `pxed explain` does, and `/metrics`.
//! Plain server-rendered HTML that works without JavaScript and on a phone.

mod api;
mod machines;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::config::{Config, Shared};
use crate::core::{BootKind, Identity};
use crate::reload::Status;

#[derive(Clone)]
struct AdminState {
    config: Shared,
    reload: Arc<Status>,
}

pub use api::ROUTES as API_ROUTES;

pub fn router(config: Shared, reload: Arc<Status>) -> Router {
    let state = AdminState { config, reload };
    Router::new()
        .nest("/api/v1", api::router(state.clone()))
        .route("/", get(status))
        .route("/machines", get(machines::list))
        .route("/machines/{mac}", get(machines::timeline))
        .route("/preview", get(preview))
        .route("/metrics", get(metrics))
        .with_state(state)
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1rem;max-width:70rem}\
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ccc;padding:.3rem;text-align:left;vertical-align:top}\
pre{background:#f4f4f4;padding:.5rem;overflow-x:auto}.bad{color:#a00}\
form{display:grid;grid-template-columns:repeat(auto-fill,minmax(14rem,1fr));gap:.5rem}input{width:95%}\
nav a{margin-right:1rem}.wide{overflow-x:auto}.ok{color:#060}";

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <title>{title} - pxed</title><style>{STYLE}</style></head><body>\
         <nav><a href=\"/\">status</a><a href=\"/machines\">machines</a><a href=\"/preview\">rule preview</a><a href=\"/metrics\">metrics</a></nav>\
         <h1>{title}</h1>{body}</body></html>"
    ))
}

fn ago(t: SystemTime) -> String {
    let secs = SystemTime::now()
        .duration_since(t)
        .unwrap_or_default()
        .as_secs();
    format!("{} ({secs} s ago)", httpdate::fmt_http_date(t))
}

/// HTML-escapes text and attribute values. Not handlebars' `html_escape`,
/// which also escapes `=` and would garble every kernel argument shown.
fn e(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

async fn status(State(state): State<AdminState>) -> Html<String> {
    let config = state.config.load_full();
    let mut body = String::new();
    let _ = write!(
        body,
        "<p>Serving <code>{}</code>, loaded {}.</p><h2>Files</h2><ul>",
        e(&config.path.display().to_string()),
        ago(config.loaded_at)
    );
    for f in &config.files {
        let _ = write!(
            body,
            "<li><code>{}</code></li>",
            e(&f.display().to_string())
        );
    }
    body.push_str("</ul>");
    for w in &config.warnings {
        let _ = write!(body, "<p class=bad>warning: {}</p>", e(w));
    }
    body.push_str("<h2>Last rejected reload</h2>");
    match state.reload.last_rejected() {
        None => body.push_str("<p>None since the serving config was loaded.</p>"),
        Some(r) => {
            let _ = write!(
                body,
                "<p class=bad>{} (trigger: {}); the config above kept serving:</p><pre>",
                ago(r.at),
                r.trigger
            );
            for err in &r.errors {
                let _ = writeln!(body, "{}", e(err));
            }
            body.push_str("</pre>");
        }
    }
    rules_table(&config, &mut body);
    page("pxed status", &body)
}

fn rules_table(config: &Config, body: &mut String) {
    body.push_str(
        "<h2>Rules, in the order they are tried</h2><table><tr><th>rule</th><th>priority</th>\
         <th>specificity</th><th>match</th><th>boot</th><th>defined at</th></tr>",
    );
    for rule in config.policy.rules.iter() {
        let boot = match rule.boot.kind {
            BootKind::Local => "local disk".to_string(),
            kind => format!(
                "{} {}",
                kind.name(),
                rule.boot.kernel.as_deref().unwrap_or("")
            ),
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e(&rule.name),
            rule.priority,
            rule.selectors.specificity(),
            e(&rule.selectors.to_string()),
            e(&boot),
            e(&rule.location.to_string())
        );
    }
    body.push_str("</table>");
}

/// Renders any identity the way the machine would get it, with the
/// explanation of the match. The form's fields use the render endpoint's
/// query names, so a URL from a machine's log can be pasted in.
async fn preview(State(state): State<AdminState>, RawQuery(query): RawQuery) -> Html<String> {
    let config = state.config.load_full();
    let query = query.unwrap_or_default();
    let id = Identity::from_query(&query);
    let field = |name: &str, value: Option<String>| {
        format!(
            "<label>{name}<br><input name={name} value=\"{}\"></label>",
            e(&value.unwrap_or_default())
        )
    };
    let known = id.clone().unwrap_or_default();
    let mut body = String::from("<form method=get>");
    body.push_str(&field("mac", known.mac.map(|m| m.to_string())));
    body.push_str(&field(
        "product",
        known.product.as_ref().map(|p| p.raw().to_string()),
    ));
    body.push_str(&field(
        "serial",
        known.serial.as_ref().map(|p| p.raw().to_string()),
    ));
    body.push_str(&field(
        "manufacturer",
        known.manufacturer.as_ref().map(|p| p.raw().to_string()),
    ));
    body.push_str(&field("uuid", known.uuid.as_ref().map(|u| u.to_string())));
    body.push_str(&field("arch", known.arch.map(|a| a.name())));
    body.push_str("<div><br><button>preview</button></div></form>");
    match id {
        Err(err) => {
            let _ = write!(body, "<p class=bad>{}</p>", e(&err.to_string()));
        }
        Ok(id) if !query.is_empty() => {
            let shown = config.server.shown_base();
            let base = shown.base();
            let _ = write!(
                body,
                "<h2>Why</h2><pre>{}</pre>",
                e(&config.policy.rules.explain(&id).to_string())
            );
            if let Some(note) = shown.note() {
                let _ = write!(body, "<p><i>{}</i></p>", e(note));
            }
            let script = config.policy.ipxe_script(&id, base);
            let _ = write!(body, "<h2>iPXE script</h2><pre>{}</pre>", e(&script.text));
            if let Some(menu) = config.policy.pxelinux_config(&id, base, None) {
                let _ = write!(body, "<h2>pxelinux menu</h2><pre>{}</pre>", e(&menu.text));
            }
            if config
                .policy
                .select(&id)
                .is_some_and(|r| r.boot.kind == BootKind::Grub)
            {
                let grub = config.policy.grub_for(&id, base, None);
                let _ = write!(body, "<h2>grub.cfg</h2><pre>{}</pre>", e(&grub.text));
            }
        }
        Ok(_) => body.push_str("<p>Fill in what a machine reports and press preview.</p>"),
    }
    page("rule preview", &body)
}

/// The exposition in OpenMetrics when the scraper asks for it (Prometheus
/// does), else as `text/plain; version=0.0.4`, which a browser shows instead
/// of downloading and every Prometheus-format parser reads.
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
        crate::metrics::get().encode(&config),
    )
        .into_response()
}
