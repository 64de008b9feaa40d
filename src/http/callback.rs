//! `/callback/<mac>/<token>` on the boot listener: an installer booted by a
//! one-shot override reports that it finished (busybox `wget`, a kickstart
//! `%post` with `curl`, cloud-init's `phone_home`), which clears the
//! override, so the machine's next boot follows the rules again. GET and
//! POST both work: installers have whichever their environment offers. The
//! token is per boot and unguessable (128 random bits), so nobody else on
//! the boot network can end someone's install override.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::boot::Origin;
use crate::core::lifecycle::is_token;
use crate::core::Mac;
use crate::events::{self, Event, Stage};
use crate::machines::{self, Callback};

pub async fn callback(Path((mac, token)): Path<(String, String)>, origin: Origin) -> Response {
    let peer = origin.peer();
    let metrics = crate::metrics::get();
    let (Ok(mac), true) = (mac.parse::<Mac>(), is_token(&token)) else {
        metrics.request("http", "callback", "not_found");
        return (StatusCode::NOT_FOUND, "no such callback\n").into_response();
    };
    let Some(state) = machines::get() else {
        metrics.request("http", "callback", "unavailable");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "machine state is not available; see the pxed log\n",
        )
            .into_response();
    };
    match state.callback(mac, &token).await {
        Ok(Callback::Consumed(boot)) => {
            metrics.request("http", "callback", "ok");
            format!("pxed: {mac}: override {boot} done; the next boot follows the rules\n")
                .into_response()
        }
        Ok(Callback::Unknown) => {
            tracing::warn!(%mac, %peer, "callback with a token of no one-shot override (consumed, cleared or never issued)");
            events::record_with(|| {
                Event::new(
                    Stage::Callback,
                    "refused",
                    "callback with an unknown token: nothing changed",
                )
                .mac(Some(mac))
                .ip(peer.ip())
            });
            metrics.request("http", "callback", "not_found");
            (StatusCode::NOT_FOUND, "no such callback\n").into_response()
        }
        Err(e) => {
            tracing::error!(%mac, error = %format!("{e:#}"), "cannot consume the override");
            metrics.request("http", "callback", "failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot store the callback; try again\n",
            )
                .into_response()
        }
    }
}
