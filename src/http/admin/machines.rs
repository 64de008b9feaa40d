//! The machines page (every machine seen, and every rule's machines) and one
//! machine's page: its override and labels, the actions on it (see
//! [`super::actions`]), and its boot timeline from the boot-event record.

use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Html;
use maud::{html, Markup};
use serde::Deserialize;

use super::{ago, page, AdminState};
use crate::core::identity::query_escape;
use crate::core::Mac;
use crate::events::{self, EventLog, Machine, StoredEvent};

/// Most machines one page lists.
const MACHINES_SHOWN: usize = 5000;
/// Most events one timeline shows.
const EVENTS_SHOWN: usize = 500;

#[derive(Deserialize)]
pub struct Filter {
    rule: Option<String>,
}

/// The event record, or why there is none.
fn log() -> Result<&'static dyn EventLog, String> {
    events::log().ok_or_else(|| "boot events are not recorded ([events] db = \"\", or the database could not be opened: see the log)".into())
}

fn short(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn opt(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

pub async fn list(State(state): State<AdminState>, Query(filter): Query<Filter>) -> Html<String> {
    let machines = match async {
        log()?
            .machines(MACHINES_SHOWN)
            .await
            .map_err(|e| format!("{e:#}"))
    }
    .await
    {
        Ok(m) => m,
        Err(err) => return page("machines", html! { p.bad { (err) } }),
    };
    let config = state.config.load_full();
    let rule_names = config.policy.rules.iter().map(|r| Some(r.name.as_str()));
    let by_rule: Vec<(Option<&str>, usize)> = rule_names
        .chain(std::iter::once(None))
        .map(|rule| {
            (
                rule,
                machines
                    .iter()
                    .filter(|m| m.rule.as_deref() == rule)
                    .count(),
            )
        })
        .filter(|(rule, n)| rule.is_some() || *n > 0)
        .collect();
    let shown: Vec<&Machine> = machines
        .iter()
        .filter(|m| match &filter.rule {
            None => true,
            Some(r) if r.is_empty() => m.rule.is_none(),
            Some(r) => m.rule.as_deref() == Some(r.as_str()),
        })
        .collect();
    let body = html! {
        h2 { "By rule" }
        table {
            tr { th { "rule" } th { "machines" } }
            @for (rule, n) in &by_rule {
                tr {
                    td { a href=(format!("/machines?rule={}", query_escape(rule.unwrap_or("")))) { (rule.unwrap_or("(none yet)")) } }
                    td { (n) }
                }
            }
        }
        @match &filter.rule {
            None => h2 { "Every machine seen (" (shown.len()) ")" },
            Some(r) => {
                h2 { "Machines of rule " (if r.is_empty() { "(none yet)" } else { r }) " (" (shown.len()) ")" }
                p { a href="/machines" { "all machines" } }
            }
        }
        @if shown.is_empty() {
            p { "No machine has been seen yet." }
        } @else {
            div.wide { table {
                tr { th { "MAC" } th { "last seen" } th { "last step" } th { "rule" } th { "override" } th { "IP" } th { "arch" } th { "product" } }
                @for m in shown {
                    tr {
                        td { a href=(format!("/machines/{}", m.mac)) { (m.mac) } }
                        td { (short(m.last_at)) }
                        td { (m.stage) " " span class=(if m.outcome == "ok" { "ok" } else { "bad" }) { (m.outcome) } }
                        td { (opt(&m.rule)) }
                        td { (m.mac.parse::<Mac>().ok().and_then(crate::machines::lookup).map_or_else(|| "-".to_string(), |a| a.boot.to_string())) }
                        td { (opt(&m.ip)) }
                        td { (opt(&m.arch)) }
                        td { (opt(&m.product)) }
                    }
                }
            } }
        }
    };
    page("machines", body)
}

pub async fn timeline(
    State(state): State<AdminState>,
    Path(mac): Path<String>,
    headers: HeaderMap,
) -> Html<String> {
    let Ok(mac) = mac.parse::<Mac>() else {
        return page("machine", html! { p.bad { (mac) " is not a MAC address" } });
    };
    let found = async {
        let log = log()?;
        let query = events::Query {
            mac: Some(mac),
            limit: EVENTS_SHOWN,
            ..Default::default()
        };
        let events = log.query(query).await.map_err(|e| format!("{e:#}"))?;
        let machine = log
            .machines(usize::MAX)
            .await
            .map_err(|e| format!("{e:#}"))?
            .into_iter()
            .find(|m| m.mac == mac.to_string());
        Ok::<_, String>((events, machine))
    }
    .await;
    let (events, machine) = match found {
        Ok(f) => f,
        Err(err) => return page("machine", html! { p.bad { (err) } }),
    };
    let record = match crate::machines::get() {
        Some(m) => m.get(mac).await.ok().flatten(),
        None => None,
    };
    let session = state.sessions.current(&headers);
    let config = state.config.load_full();
    let body = html! {
        @match &machine {
            None => p { "This machine has not been seen." },
            Some(m) => (summary(mac, m)),
        }
        (super::actions::state(mac, record.as_ref(), session.as_ref(), &config))
        @if !events.is_empty() {
            h2 { "Boot steps, oldest first" }
            div.wide { table {
                tr { th { "time" } th { "step" } th { "outcome" } th { "what happened" } th { "rule" } th { "IP" } th { "server" } }
                @for ev in &events { (timeline_row(ev)) }
            } }
        }
    };
    page(&format!("machine {mac}"), body)
}

fn summary(mac: Mac, m: &Machine) -> Markup {
    let mut query = format!("mac={mac}");
    for (k, v) in [("product", &m.product), ("arch", &m.arch)] {
        if let Some(v) = v {
            query.push_str(&format!("&{k}={}", query_escape(v)));
        }
    }
    html! {
        p {
            "First seen " (short(m.first_at)) ", last seen " (ago(m.last_at)) ". Rule " b { (opt(&m.rule)) }
            ", IP " (opt(&m.ip)) ", arch " (opt(&m.arch)) ", product " (opt(&m.product)) "."
        }
        p { a href=(format!("/preview?{query}")) { "preview what this machine gets now" } }
    }
}

fn timeline_row(ev: &StoredEvent) -> Markup {
    html! {
        tr {
            td { (humantime::format_rfc3339_millis(ev.at)) }
            td { (ev.stage) }
            td class=(if ev.outcome == "ok" { "ok" } else { "bad" }) { (ev.outcome) }
            td {
                (ev.detail)
                @if ev.count > 1 { " " i { "(×" (ev.count) ", last " (short(ev.last_at)) ")" } }
            }
            td { (opt(&ev.rule)) }
            td { (opt(&ev.ip)) }
            td { (opt(&ev.server)) }
        }
    }
}
