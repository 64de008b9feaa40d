//! Boot endpoints: the bootstrap `boot.ipxe`, the per-machine iPXE script
//! (`/ipxe?…`), and the per-machine pxelinux menu lpxelinux fetches. Each one
//! reads the identity from the request, asks the core, and writes the answer;
//! a request that cannot be understood still gets a script that explains itself
//! on the console and retries.

use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use std::sync::Arc;

use super::Conn;
use crate::config::{Config, Shared};
use crate::core::identity::{IdentityError, MenuRequest};
use crate::core::{Active, Answer, Base, Identity, Mac};
use crate::events::{self, repeats, Event, Stage};
use crate::machines;

/// Who asked and how they reached us: the connection and the `Host` header,
/// taken without copying the rest of the request's headers.
pub struct Origin {
    conn: Conn,
    host: Option<HeaderValue>,
}

impl Origin {
    /// The client's address.
    pub fn peer(&self) -> std::net::SocketAddr {
        self.conn.peer
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // `serve` always inserts Conn; a router used without it still answers.
        let unknown = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        let conn = parts.extensions.get::<Conn>().copied().unwrap_or(Conn {
            local: unknown,
            peer: unknown,
        });
        Ok(Origin {
            conn,
            host: parts.headers.get(header::HOST).cloned(),
        })
    }
}

/// Where this client reaches us: the configured public URL, else the `Host`
/// it used (validated to host characters), else the address it connected to.
pub(super) fn base(config: &Config, origin: &Origin) -> Base {
    config
        .server
        .public_url
        .clone()
        .or_else(|| {
            origin
                .host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .and_then(Base::from_authority)
        })
        .unwrap_or_else(|| Base::from_addr(origin.conn.local))
}

fn text(body: String) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            // Scripts depend on the rules of the moment: never cache them.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

pub async fn bootstrap(State(config): State<Shared>, origin: Origin) -> Response {
    let config = config.load_full();
    let base = base(&config, &origin);
    let conn = origin.conn;
    tracing::debug!(peer = %conn.peer, "boot.ipxe");
    crate::metrics::get().request("http", "boot.ipxe", "ok");
    events::record_with(|| Event::new(Stage::Bootstrap, "ok", "boot.ipxe").ip(conn.peer.ip()));
    text(config.policy.bootstrap(&base).text)
}

/// The answer to a render request: the machine's override (see
/// [`overridden`]) or the rules (cached per query).
async fn answer(config: &Config, query: &str, base: &Base) -> Result<Arc<Answer>, IdentityError> {
    match overridden(query).await {
        Overridden::No => config.policy.answer(query, base),
        Overridden::Yes(id, active) => {
            let rendered = config.policy.script_for(&id, base, Some(&active));
            Ok(Arc::new(Answer { id, rendered }))
        }
        Overridden::Failed(id, why) => {
            let rendered = config.policy.retry(&id, base, &why);
            Ok(Arc::new(Answer { id, rendered }))
        }
    }
}

enum Overridden {
    No,
    Yes(Identity, Active),
    /// A one-shot override whose callback token could not be stored: the
    /// machine waits and retries rather than install with no way to report
    /// back (it would install again at every boot).
    Failed(Identity, String),
}

/// Whether the machine asking has an override; for a one-shot override,
/// this boot's callback token is minted and stored first. Costs nothing
/// while no machine has an override.
async fn overridden(query: &str) -> Overridden {
    if !machines::any() {
        return Overridden::No;
    }
    let Ok(id) = Identity::from_query(query) else {
        return Overridden::No;
    };
    let Some(mac) = id.mac else {
        return Overridden::No;
    };
    match machines::for_boot(mac).await {
        Err(why) => Overridden::Failed(id, why),
        Ok(None) => Overridden::No,
        Ok(Some(a)) => Overridden::Yes(id, a),
    }
}

pub async fn ipxe(
    State(config): State<Shared>,
    origin: Origin,
    RawQuery(query): RawQuery,
) -> Response {
    let config = config.load_full();
    let base = base(&config, &origin);
    let conn = origin.conn;
    let started = std::time::Instant::now();
    let (body, matched) = match answer(&config, query.as_deref().unwrap_or(""), &base).await {
        Ok(answer) => {
            log_script(&answer, &conn);
            (answer.rendered.text.clone(), answer.rendered.rule.is_some())
        }
        Err(e) => {
            tracing::warn!(peer = %conn.peer, error = %e, "malformed render request; sent the retry script");
            events::record_with(|| {
                Event::new(Stage::Script, "malformed", format!("bad request: {e}"))
                    .ip(conn.peer.ip())
            });
            let message = format!("bad request from this machine: {}", e.sanitized());
            let retry = config.policy.retry(&Identity::default(), &base, &message);
            (retry.text, false)
        }
    };
    let metrics = crate::metrics::get();
    metrics.render_time(started.elapsed().as_secs_f64());
    metrics.request("http", "ipxe", if matched { "ok" } else { "retry" });
    text(body)
}

/// Records and logs a rendered script.
fn log_script(answer: &Answer, conn: &Conn) {
    let (id, rendered) = (&answer.id, &answer.rendered);
    let product = || id.product.as_ref().map(|p| p.safe());
    events::record_with(|| {
        let (outcome, detail) = match &rendered.rule {
            Some(_) => ("ok", "iPXE script"),
            None => ("no_rule", "no rule matches: retry script"),
        };
        Event::new(Stage::Script, outcome, detail)
            .mac(id.mac)
            .ip(conn.peer.ip())
            .rule(rendered.rule.as_deref())
            .identity(id)
    });
    // A machine asking again for the same script within a minute is
    // logged at debug only (and counted in its event record).
    let fresh = match id.mac {
        Some(m) => repeats::renders().fresh(m, &rendered.rule, std::time::Instant::now()),
        None => true,
    };
    let mac = || fmt_mac(id.mac);
    match (&rendered.rule, fresh) {
        (Some(rule), true) => {
            tracing::info!(mac = %mac(), peer = %conn.peer, %rule, product = product().as_deref(), "ipxe script rendered")
        }
        (Some(rule), false) => {
            tracing::debug!(mac = %mac(), peer = %conn.peer, %rule, "ipxe script rendered again")
        }
        (None, _) => {
            tracing::warn!(mac = %mac(), peer = %conn.peer, product = product().as_deref(), "no rule matches; sent the retry script")
        }
    }
}

/// `/pxelinux/pxelinux.cfg/01-<mac>[?rule=<name>&<identity query>]`. Names pxelinux tries
/// that are not a MAC (UUID, hex IP, `default`) get 404 at once so it moves on.
pub async fn pxelinux_config(
    State(config): State<Shared>,
    origin: Origin,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let config = config.load_full();
    let base = base(&config, &origin);
    let conn = origin.conn;
    let metrics = crate::metrics::get();
    let Some(MenuRequest { mac, id, rule_hint }) =
        MenuRequest::parse(&name, query.as_deref().unwrap_or_default())
    else {
        metrics.request("http", "pxelinux", "not_found");
        return (StatusCode::NOT_FOUND, "not a per-machine config name\n").into_response();
    };
    let span = tracing::info_span!("pxelinux", mac = %mac, peer = %conn.peer);
    let _enter = span.enter();
    let active = machines::for_boot(mac).await.unwrap_or(None);
    match config
        .policy
        .menu_for(&id, &base, rule_hint.as_deref(), active.as_ref())
    {
        Some(rendered) => {
            tracing::info!(rule = rendered.rule.as_deref(), "pxelinux config rendered");
            record_menu(&id, &conn, "ok", "pxelinux menu", rendered.rule.as_deref());
            metrics.request("http", "pxelinux", "ok");
            text(rendered.text)
        }
        None => {
            tracing::warn!("no rule matches; no pxelinux config");
            record_menu(&id, &conn, "no_rule", "no rule matches: no menu", None);
            metrics.request("http", "pxelinux", "no_rule");
            (StatusCode::NOT_FOUND, "no rule matches this machine\n").into_response()
        }
    }
}

fn record_menu(
    id: &Identity,
    conn: &Conn,
    outcome: &'static str,
    detail: &str,
    rule: Option<&str>,
) {
    events::record_with(|| {
        Event::new(Stage::Menu, outcome, detail)
            .mac(id.mac)
            .ip(conn.peer.ip())
            .rule(rule)
            .arch(id.arch)
            .product(id.product.as_ref().map(|p| p.safe()))
    });
}

fn fmt_mac(mac: Option<Mac>) -> String {
    mac.map_or_else(|| "-".to_string(), |m| m.to_string())
}
