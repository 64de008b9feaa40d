//! `/config/<mac>/<rule>/<name>`: a machine's installer configs (cloud-init
//! NoCloud, kickstart, preseed, Ignition), rendered from the templates its
//! rule names, with the machine's variables: its MAC from the URL, the rest
//! of its identity from the inventory (what its last script request
//! reported). The rule is in the URL because the script that booted the
//! installer chose it (as pxelinux's option 209 names the menu's rule).

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::boot::{base, Origin};
use crate::config::Shared;
use crate::core::installer::ConfigKind;
use crate::core::lifecycle::{install, Choice, ChosenBy};
use crate::core::{BootOverride, ClientString, Identity, Mac};
use crate::events::{self, Event, Stage};

/// What pxed knows of the machine: the MAC, and the identity its last
/// script request reported (sanitised as templates see it anyway).
async fn identity(mac: Mac) -> Identity {
    let seen = match crate::machines::get() {
        Some(m) => m.get(mac).await.ok().flatten().and_then(|r| r.seen),
        None => None,
    };
    let Some(s) = seen else {
        return Identity::with_mac(mac);
    };
    let text = |v: &Option<String>| v.as_deref().and_then(ClientString::new);
    Identity {
        mac: Some(mac),
        product: text(&s.product),
        serial: text(&s.serial),
        manufacturer: text(&s.manufacturer),
        uuid: s.uuid.as_deref().and_then(|u| u.parse().ok()),
        arch: s.arch.as_deref().and_then(|a| a.parse().ok()),
    }
}

fn not_found(why: &'static str) -> Response {
    crate::metrics::get().request("http", "config", "not_found");
    (StatusCode::NOT_FOUND, format!("{why}\n")).into_response()
}

pub async fn config(
    State(shared): State<Shared>,
    origin: Origin,
    Path((mac, rule, name)): Path<(String, String, String)>,
) -> Response {
    let config = shared.load_full();
    let (Ok(mac), Some(kind)) = (mac.parse::<Mac>(), ConfigKind::from_name(&name)) else {
        return not_found("no such config");
    };
    let Some(rule) = config.policy.rule(&rule) else {
        return not_found("no such rule");
    };
    let base = base(&config, &origin);
    let id = identity(mac).await;
    // The callback of a one-shot override booting this rule, with the
    // newest token (the one its boot got).
    let active = crate::machines::lookup(mac);
    let by = match &active {
        Some(a) if matches!(&a.boot, BootOverride::Rule { rule: r, .. } if *r == rule.name) => {
            ChosenBy::Override(a.boot.clone())
        }
        _ => ChosenBy::Rules,
    };
    let choice = Choice {
        rule: Some(rule),
        by,
    };
    let urls = install(&choice, &id, &base, active.as_ref());
    let peer = origin.peer();
    let record = |outcome: &'static str, detail: String| {
        events::record_with(|| {
            Event::new(Stage::Config, outcome, detail)
                .mac(Some(mac))
                .ip(peer.ip())
                .rule(Some(&rule.name))
        })
    };
    match config
        .policy
        .installer_config(rule, kind, &id, &base, &urls)
    {
        None => not_found("this rule has no such config"),
        Some(Ok(text)) => {
            tracing::info!(%mac, %peer, rule = %rule.name, config = kind.name(), "installer config rendered");
            record("ok", format!("{} config", kind.name()));
            crate::metrics::get().request("http", "config", "ok");
            let headers = [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(kind.content_type()),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ];
            (headers, text).into_response()
        }
        Some(Err(e)) => {
            tracing::error!(%mac, rule = %rule.name, config = kind.name(), error = %e, "installer config failed to render; not served");
            record("failed", format!("{} config failed: {e}", kind.name()));
            crate::metrics::get().request("http", "config", "failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the config failed to render; see the pxed log\n",
            )
                .into_response()
        }
    }
}
