//! Acting on machines from the admin pages: a login with an API token (the
//! same `[server] api_tokens` file, so the page has the API's clients and
//! its record of who did what), a session cookie (`HttpOnly`,
//! `SameSite=Strict`), and a per-session CSRF token in every form, compared
//! in constant time. Reading the pages needs none of this; without
//! `api_tokens` nobody can log in and the pages only read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::{page, AdminState};
use crate::core::{BootOverride, Mac};
use crate::sync::lock;

const COOKIE: &str = "pxed_session";
/// A session ends this long after its login.
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Most sessions kept; past that the oldest is dropped.
const MAX_SESSIONS: usize = 1024;

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The API client whose token logged in.
    pub client: String,
    /// Goes in every form of this session's pages.
    pub csrf: String,
    started: Instant,
}

#[derive(Debug, Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .map(str::to_string)
}

impl Sessions {
    fn create(&self, client: &str) -> anyhow::Result<String> {
        let id = crate::machines::new_token()?;
        let session = Session {
            client: client.to_string(),
            csrf: crate::machines::new_token()?,
            started: Instant::now(),
        };
        let mut map = lock(&self.by_id);
        map.retain(|_, s| s.started.elapsed() < SESSION_TTL);
        if map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.started)
                .map(|(k, _)| k.clone());
            oldest.map(|k| map.remove(&k));
        }
        map.insert(id.clone(), session);
        Ok(id)
    }

    /// The session of this request's cookie, if it is a live one.
    pub fn current(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers)?;
        let map = lock(&self.by_id);
        map.get(&id)
            .filter(|s| s.started.elapsed() < SESSION_TTL)
            .cloned()
    }

    fn end(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers) {
            lock(&self.by_id).remove(&id);
        }
    }
}

fn refuse(status: StatusCode, why: &str) -> Response {
    let body = html! { p.bad { (why) } p { a href="/machines" { "machines" } } };
    (status, page("not done", body)).into_response()
}

pub async fn login_page(State(state): State<AdminState>) -> Html<String> {
    let on = state.config.load().server.api_tokens.is_some();
    let body = html! {
        @if on {
            p { "Log in with an API token (from the file " code { "[server] api_tokens" } " names) to act on machines." }
            form method="post" action="/login" {
                label { "token " input type="password" name="token" autocomplete="off"; }
                " " button #login { "log in" }
            }
        } @else {
            p { "Nobody can log in: set " code { "[server] api_tokens" } " in machines.toml (docs/api.md)." }
        }
    };
    page("log in", body)
}

#[derive(Deserialize)]
pub struct Login {
    token: String,
}

pub async fn login(State(state): State<AdminState>, Form(form): Form<Login>) -> Response {
    let config = state.config.load_full();
    let client = config
        .server
        .api_tokens
        .as_ref()
        .and_then(|t| t.name_of(form.token.trim()));
    let Some(client) = client else {
        tracing::warn!("admin page login with an unknown token refused");
        return refuse(StatusCode::UNAUTHORIZED, "unknown token");
    };
    let id = match state.sessions.create(client) {
        Ok(id) => id,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    tracing::info!(client, "admin page login");
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict");
    let mut r = Redirect::to("/machines").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub async fn logout(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    state.sessions.end(&headers);
    let mut r = Redirect::to("/machines").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("pxed_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"),
    );
    r
}

/// A machine page's action form.
#[derive(Deserialize)]
pub struct Act {
    csrf: String,
    /// `reinstall` (the rule once), `boot` (the rule until cleared),
    /// `local` or `clear`.
    action: String,
    rule: Option<String>,
}

/// `POST /machines/<mac>/override`: a logged-in session's form, with its
/// CSRF token; then back to the machine's page.
pub async fn act(
    State(state): State<AdminState>,
    Path(mac): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Act>,
) -> Response {
    let Some(session) = state.sessions.current(&headers) else {
        return refuse(
            StatusCode::FORBIDDEN,
            "log in first (your session may have ended)",
        );
    };
    if !bool::from(session.csrf.as_bytes().ct_eq(form.csrf.as_bytes())) {
        return refuse(
            StatusCode::FORBIDDEN,
            "the form is stale or was not sent by this page; reload the page",
        );
    }
    let Ok(mac) = mac.parse::<Mac>() else {
        return refuse(StatusCode::BAD_REQUEST, "not a MAC address");
    };
    let config = state.config.load_full();
    let rule = form
        .rule
        .as_deref()
        .filter(|r| config.policy.rule(r).is_some())
        .map(str::to_string);
    let boot = match (form.action.as_str(), rule) {
        ("reinstall", Some(rule)) => Some(BootOverride::Rule { rule, once: true }),
        ("boot", Some(rule)) => Some(BootOverride::Rule { rule, once: false }),
        ("reinstall" | "boot", None) => {
            return refuse(StatusCode::BAD_REQUEST, "no such rule in machines.toml")
        }
        ("local", _) => Some(BootOverride::Local),
        ("clear", _) => None,
        _ => return refuse(StatusCode::BAD_REQUEST, "unknown action"),
    };
    let Some(machines) = crate::machines::get() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "machine state is not available; see the pxed log",
        );
    };
    let actor = format!("web:{}", session.client);
    if let Err(e) = machines.set_override(mac, boot, &actor).await {
        tracing::error!(%mac, error = %format!("{e:#}"), "cannot set the override");
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot store the change; see the pxed log",
        );
    }
    Redirect::to(&format!("/machines/{mac}")).into_response()
}
