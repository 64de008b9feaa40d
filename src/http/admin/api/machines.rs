//! `/api/v1/machines…`: the inventory, overrides and labels.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{json_body, time, ApiError, Caller};
use crate::core::{BootOverride, Mac};
use crate::http::admin::AdminState;
use crate::machines::{self, Labels, MachineRecord, Machines, OverrideRecord};

/// Most machines one list returns.
const LIST_MAX: usize = 10_000;
const LABELS_MAX: usize = 32;
const LABEL_KEY_MAX: usize = 64;
const LABEL_VALUE_MAX: usize = 256;

#[derive(Serialize)]
pub struct MachineJson {
    /// Colon form, lower case.
    mac: String,
    product: Option<String>,
    serial: Option<String>,
    manufacturer: Option<String>,
    uuid: Option<String>,
    arch: Option<String>,
    ip: Option<String>,
    first_seen: Option<String>,
    last_seen: Option<String>,
    last_step: Option<String>,
    last_outcome: Option<String>,
    /// The rule of its last script or menu.
    rule: Option<String>,
    labels: Labels,
    #[serde(rename = "override")]
    boot_override: Option<OverrideJson>,
}

#[derive(Serialize)]
pub struct OverrideJson {
    /// `rule` or `local`.
    boot: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    once: Option<bool>,
    set_by: String,
    set_at: String,
    /// Boots served under this override so far.
    boots: u32,
}

impl From<&OverrideRecord> for OverrideJson {
    fn from(o: &OverrideRecord) -> OverrideJson {
        let (boot, rule, once) = match &o.boot {
            BootOverride::Rule { rule, once } => ("rule", Some(rule.clone()), Some(*once)),
            BootOverride::Local => ("local", None, None),
        };
        OverrideJson {
            boot,
            rule,
            once,
            set_by: o.set_by.clone(),
            set_at: time(o.set_at),
            boots: o.boots,
        }
    }
}

impl From<MachineRecord> for MachineJson {
    fn from(m: MachineRecord) -> MachineJson {
        let seen = m.seen;
        let field = |f: fn(&crate::events::Machine) -> &Option<String>| {
            seen.as_ref().and_then(|s| f(s).clone())
        };
        MachineJson {
            mac: m.mac.to_string(),
            product: field(|s| &s.product),
            serial: field(|s| &s.serial),
            manufacturer: field(|s| &s.manufacturer),
            uuid: field(|s| &s.uuid),
            arch: field(|s| &s.arch),
            ip: field(|s| &s.ip),
            first_seen: seen.as_ref().map(|s| time(s.first_at)),
            last_seen: seen.as_ref().map(|s| time(s.last_at)),
            last_step: seen.as_ref().map(|s| s.stage.clone()),
            last_outcome: seen.as_ref().map(|s| s.outcome.clone()),
            rule: field(|s| &s.rule),
            labels: m.labels,
            boot_override: m.boot_override.as_ref().map(OverrideJson::from),
        }
    }
}

fn state() -> Result<&'static Machines, ApiError> {
    machines::get().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "machine state is not available (the database could not be opened; see the pxed log)",
        )
    })
}

pub fn parse_mac(mac: &str) -> Result<Mac, ApiError> {
    mac.parse::<Mac>()
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

pub async fn list() -> Result<Json<Vec<MachineJson>>, ApiError> {
    let all = state()?
        .list(LIST_MAX)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(all.into_iter().map(MachineJson::from).collect()))
}

/// One machine as it is now (after a write: as the write left it).
async fn current(mac: Mac) -> Result<Json<MachineJson>, ApiError> {
    match state()?.get(mac).await.map_err(ApiError::unavailable)? {
        Some(m) => Ok(Json(m.into())),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{mac} has not been seen and has no state"),
        )),
    }
}

pub async fn get(Path(mac): Path<String>) -> Result<Json<MachineJson>, ApiError> {
    current(parse_mac(&mac)?).await
}

/// `{"rule": "<name>", "once": true|false}` or `{"boot": "local"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideBody {
    rule: Option<String>,
    once: Option<bool>,
    boot: Option<String>,
}

/// The override a request body asks for, checked against the serving
/// config's rules.
pub fn parse_override(
    body: OverrideBody,
    config: &crate::config::Config,
) -> Result<BootOverride, ApiError> {
    match (body.rule, body.once, body.boot.as_deref()) {
        (None, None, Some("local")) => Ok(BootOverride::Local),
        (Some(rule), Some(once), None) => {
            if config.policy.rule(&rule).is_none() {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("no rule named {rule:?} in {}", config.path.display()),
                ));
            }
            Ok(BootOverride::Rule { rule, once })
        }
        (Some(_), None, None) => Err(ApiError::bad_request(
            "`once` is required with `rule`: true (until the installer calls back) or false (until cleared)",
        )),
        (None, None, Some(other)) => Err(ApiError::bad_request(format!(
            "boot {other:?}: the only boot without a rule is \"local\""
        ))),
        _ => Err(ApiError::bad_request(
            "expected {\"rule\": \"<name>\", \"once\": true|false} or {\"boot\": \"local\"}",
        )),
    }
}

pub async fn set_override(
    State(admin): State<AdminState>,
    Extension(Caller(who)): Extension<Caller>,
    Path(mac): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<MachineJson>, ApiError> {
    let mac = parse_mac(&mac)?;
    let body: OverrideBody = json_body(&headers, body).await?;
    let boot = parse_override(body, &admin.config.load_full())?;
    state()?
        .set_override(mac, Some(boot), &who)
        .await
        .map_err(ApiError::unavailable)?;
    current(mac).await
}

pub async fn clear_override(
    Extension(Caller(who)): Extension<Caller>,
    Path(mac): Path<String>,
) -> Result<Json<MachineJson>, ApiError> {
    let mac = parse_mac(&mac)?;
    state()?
        .set_override(mac, None, &who)
        .await
        .map_err(ApiError::unavailable)?;
    match current(mac).await {
        // Nothing left to show: the machine was never seen.
        Err(e) if e.status == StatusCode::NOT_FOUND => Ok(Json(
            MachineRecord {
                mac,
                seen: None,
                labels: Labels::new(),
                boot_override: None,
            }
            .into(),
        )),
        other => other,
    }
}

/// Checks labels: at most [`LABELS_MAX`], keys of letters, digits and
/// `. _ - /`, values of printable characters.
fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if labels.len() > LABELS_MAX {
        return Err(ApiError::bad_request(format!(
            "at most {LABELS_MAX} labels"
        )));
    }
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= LABEL_KEY_MAX
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
        if !key_ok {
            return Err(ApiError::bad_request(format!(
                "label key {k:?}: 1-{LABEL_KEY_MAX} letters, digits or . _ - /"
            )));
        }
        if v.chars().count() > LABEL_VALUE_MAX || v.chars().any(char::is_control) {
            return Err(ApiError::bad_request(format!(
                "label {k:?}: the value must be at most {LABEL_VALUE_MAX} characters, none of them control characters"
            )));
        }
    }
    Ok(())
}

/// Replaces the machine's labels with the body's object of strings.
pub async fn set_labels(
    Extension(Caller(who)): Extension<Caller>,
    Path(mac): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<MachineJson>, ApiError> {
    let mac = parse_mac(&mac)?;
    let labels: BTreeMap<String, String> = json_body(&headers, body).await?;
    check_labels(&labels)?;
    state()?
        .set_labels(mac, labels, &who)
        .await
        .map_err(ApiError::unavailable)?;
    current(mac).await
}
