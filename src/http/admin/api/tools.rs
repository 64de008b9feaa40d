//! `/api/v1/explain`, `/api/v1/render` (what any identity gets, and why,
//! its override included) and `/api/v1/reload`.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::{json, Value};

use super::{time, ApiError, Caller};
use crate::core::identity::query_pairs;
use crate::core::lifecycle::ChosenBy;
use crate::core::{Active, BootOverride, Identity};
use crate::events::{self, Event, Stage};
use crate::http::admin::AdminState;

/// The identity a query describes (the names `/ipxe` takes), and the
/// override of its MAC.
fn identity(query: &str) -> Result<(Identity, Option<BootOverride>), ApiError> {
    let id = Identity::from_query(query).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let ovr = id.mac.and_then(crate::machines::lookup).map(|a| a.boot);
    Ok((id, ovr))
}

fn override_json(o: &BootOverride) -> Value {
    match o {
        BootOverride::Rule { rule, once } => json!({ "boot": "rule", "rule": rule, "once": once }),
        BootOverride::Local => json!({ "boot": "local" }),
    }
}

#[derive(Serialize)]
struct Verdict {
    name: String,
    priority: i32,
    specificity: u32,
    defined_at: String,
    /// `matched`, `also_matches` (a rule above wins) or `no_match`.
    verdict: &'static str,
    why: Option<String>,
}

pub async fn explain(
    State(admin): State<AdminState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let config = admin.config.load_full();
    let (id, ovr) = identity(query.as_deref().unwrap_or(""))?;
    let policy = &config.policy;
    let choice = policy.choose(&id, ovr.as_ref());
    let explained = policy.rules.explain(&id);
    let rules: Vec<Verdict> = explained
        .verdicts
        .iter()
        .enumerate()
        .map(|(i, (rule, v))| Verdict {
            name: rule.name.clone(),
            priority: rule.priority,
            specificity: rule.selectors.specificity(),
            defined_at: rule.location.to_string(),
            verdict: match (Some(i) == explained.winner, v) {
                (true, _) => "matched",
                (false, Ok(())) => "also_matches",
                (false, Err(_)) => "no_match",
            },
            why: v.as_ref().err().map(ToString::to_string),
        })
        .collect();
    let chosen_by = match &choice.by {
        ChosenBy::Rules => "rules",
        ChosenBy::Override(_) => "override",
        ChosenBy::Ignored(_) => "override_ignored",
    };
    Ok(Json(json!({
        "mac": id.mac.map(|m| m.to_string()),
        "rule": choice.rule.map(|r| r.name.clone()),
        "chosen_by": chosen_by,
        "override": ovr.as_ref().map(override_json),
        "rules": rules,
        "text": policy.explain_for(&id, ovr.as_ref()),
    })))
}

/// What the machine would be served now, as `pxed render` prints it (a
/// one-shot override's script is shown without a callback token: each
/// boot gets its own).
pub async fn render(
    State(admin): State<AdminState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let config = admin.config.load_full();
    let query = query.unwrap_or_default();
    let (id, ovr) = identity(&query)?;
    let format = query_pairs(&query)
        .find(|(k, _)| *k == "format")
        .map_or_else(|| "ipxe".to_string(), |(_, v)| v);
    let active = ovr.map(|boot| Active { boot, token: None });
    let base = config.server.shown_base().base().clone();
    let rendered = match format.as_str() {
        "ipxe" => config.policy.script_for(&id, &base, active.as_ref()),
        "pxelinux" => config
            .policy
            .menu_for(&id, &base, None, active.as_ref())
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no rule matches this machine"))?,
        "grub" => config.policy.grub_for(&id, &base, active.as_ref()),
        other => {
            return Err(ApiError::bad_request(format!(
                "format {other:?}: use ipxe, pxelinux or grub"
            )))
        }
    };
    Ok(Json(json!({
        "rule": rendered.rule,
        "format": format,
        "text": rendered.text,
    })))
}

/// Loads `machines.toml` and the templates again; a broken config is
/// refused (422, every error) and the serving one stays.
pub async fn reload(
    State(admin): State<AdminState>,
    Extension(Caller(who)): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let path = admin.config.load().path.clone();
    let (shared, status) = (admin.config.clone(), admin.reload.clone());
    let result = tokio::task::spawn_blocking(move || {
        crate::reload::reload_and_log(&path, &shared, &status, "API")
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (outcome, detail) = match &result {
        Ok(()) => ("ok", format!("config reloaded (by {who})")),
        Err(_) => ("rejected", format!("config reload rejected (by {who})")),
    };
    events::record_with(|| Event::new(Stage::Api, outcome, detail));
    match result {
        Ok(()) => {
            let config = admin.config.load_full();
            Ok(Json(json!({
                "reloaded": true,
                "loaded_at": time(config.loaded_at),
                "rules": config.policy.rules.len(),
                "warnings": config.warnings,
            })))
        }
        Err(errors) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the config was rejected, the previous one keeps serving: {}",
                errors
                    .0
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )),
    }
}
