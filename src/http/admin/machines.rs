//! The machines page (every machine seen, and every rule's machines) and one
//! machine's boot timeline, read from the boot-event record.

use std::fmt::Write as _;
use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::response::Html;
use serde::Deserialize;

use super::{ago, e, page, AdminState};
use crate::core::identity::query_escape;
use crate::core::Mac;
use crate::events::{self, Machine, Reader, StoredEvent};

/// Most machines one page lists.
const MACHINES_SHOWN: usize = 5000;
/// Most events one timeline shows.
const EVENTS_SHOWN: usize = 500;

#[derive(Deserialize)]
pub struct Filter {
    rule: Option<String>,
}

/// Runs a read on a blocking thread: SQLite calls block.
async fn read<T: Send + 'static>(
    f: impl FnOnce(&Reader) -> Result<T, events::store::ReadError> + Send + 'static,
) -> Result<T, String> {
    let Some(db) = events::db() else {
        return Err("boot events are not recorded ([events] db = \"\", or the database could not be opened: see the log)".into());
    };
    tokio::task::spawn_blocking(move || Reader::open(db).and_then(|r| f(&r)))
        .await
        .map_err(|err| err.to_string())?
        .map_err(|err| err.to_string())
}

fn short(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn opt(v: &Option<String>) -> String {
    e(v.as_deref().unwrap_or("-"))
}

pub async fn list(State(state): State<AdminState>, Query(filter): Query<Filter>) -> Html<String> {
    let machines = match read(|r| r.machines(MACHINES_SHOWN)).await {
        Ok(m) => m,
        Err(err) => return page("machines", &format!("<p class=bad>{}</p>", e(&err))),
    };
    let config = state.config.load_full();
    let mut body = String::new();
    body.push_str("<h2>By rule</h2><table><tr><th>rule</th><th>machines</th></tr>");
    let rule_names = config.policy.rules.iter().map(|r| Some(r.name.as_str()));
    for rule in rule_names.chain(std::iter::once(None)) {
        let members: Vec<&Machine> = machines
            .iter()
            .filter(|m| m.rule.as_deref() == rule)
            .collect();
        if rule.is_none() && members.is_empty() {
            continue;
        }
        let (label, link) = match rule {
            Some(r) => (e(r), format!("/machines?rule={}", query_escape(r))),
            None => ("(none yet)".to_string(), "/machines?rule=".to_string()),
        };
        let _ = write!(
            body,
            "<tr><td><a href=\"{}\">{label}</a></td><td>{}</td></tr>",
            e(&link),
            members.len()
        );
    }
    body.push_str("</table>");
    let shown: Vec<&Machine> = machines
        .iter()
        .filter(|m| match &filter.rule {
            None => true,
            Some(r) if r.is_empty() => m.rule.is_none(),
            Some(r) => m.rule.as_deref() == Some(r.as_str()),
        })
        .collect();
    let _ = match &filter.rule {
        None => write!(body, "<h2>Every machine seen ({})</h2>", shown.len()),
        Some(r) => write!(
            body,
            "<h2>Machines of rule {} ({})</h2><p><a href=\"/machines\">all machines</a></p>",
            e(if r.is_empty() { "(none yet)" } else { r }),
            shown.len()
        ),
    };
    if shown.is_empty() {
        body.push_str("<p>No machine has been seen yet.</p>");
    } else {
        body.push_str(
            "<div class=wide><table><tr><th>MAC</th><th>last seen</th><th>last step</th><th>rule</th>\
             <th>IP</th><th>arch</th><th>product</th></tr>",
        );
        for m in shown {
            let _ = write!(
                body,
                "<tr><td><a href=\"/machines/{mac}\">{mac}</a></td><td>{}</td><td>{} <span class={}>{}</span></td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                short(m.last_at),
                e(&m.stage),
                if m.outcome == "ok" { "ok" } else { "bad" },
                e(&m.outcome),
                opt(&m.rule),
                opt(&m.ip),
                opt(&m.arch),
                opt(&m.product),
                mac = e(&m.mac),
            );
        }
        body.push_str("</table></div>");
    }
    page("machines", &body)
}

pub async fn timeline(Path(mac): Path<String>) -> Html<String> {
    let Ok(mac) = mac.parse::<Mac>() else {
        return page(
            "machine",
            &format!("<p class=bad>{} is not a MAC address</p>", e(&mac)),
        );
    };
    let found = read(move |r| {
        let events = r.events(Some(mac), EVENTS_SHOWN)?;
        let machine = r
            .machines(usize::MAX)?
            .into_iter()
            .find(|m| m.mac == mac.to_string());
        Ok((events, machine))
    })
    .await;
    let (events, machine) = match found {
        Ok(f) => f,
        Err(err) => return page("machine", &format!("<p class=bad>{}</p>", e(&err))),
    };
    let mut body = String::new();
    match &machine {
        None => body.push_str("<p>This machine has not been seen.</p>"),
        Some(m) => {
            let _ = write!(
                body,
                "<p>First seen {}, last seen {}. Rule <b>{}</b>, IP {}, arch {}, product {}.</p>",
                short(m.first_at),
                ago(m.last_at),
                opt(&m.rule),
                opt(&m.ip),
                opt(&m.arch),
                opt(&m.product),
            );
            let mut query = format!("mac={mac}");
            for (k, v) in [("product", &m.product), ("arch", &m.arch)] {
                if let Some(v) = v {
                    let _ = write!(query, "&{k}={}", query_escape(v));
                }
            }
            let _ = write!(
                body,
                "<p><a href=\"/preview?{}\">preview what this machine gets now</a></p>",
                e(&query)
            );
        }
    }
    if !events.is_empty() {
        body.push_str(
            "<h2>Boot steps, oldest first</h2><div class=wide><table><tr><th>time</th><th>step</th>\
             <th>outcome</th><th>what happened</th><th>rule</th><th>IP</th></tr>",
        );
        for ev in &events {
            timeline_row(&mut body, ev);
        }
        body.push_str("</table></div>");
    }
    page(&format!("machine {mac}"), &body)
}

fn timeline_row(body: &mut String, ev: &StoredEvent) {
    let repeats = if ev.count > 1 {
        format!(" <i>(×{}, last {})</i>", ev.count, short(ev.last_at))
    } else {
        String::new()
    };
    let _ = write!(
        body,
        "<tr><td>{}</td><td>{}</td><td class={}>{}</td><td>{}{repeats}</td><td>{}</td><td>{}</td></tr>",
        humantime::format_rfc3339_millis(ev.at),
        e(&ev.stage),
        if ev.outcome == "ok" { "ok" } else { "bad" },
        e(&ev.outcome),
        e(&ev.detail),
        opt(&ev.rule),
        opt(&ev.ip),
    );
}
