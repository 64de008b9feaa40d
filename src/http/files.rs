//! Files under the asset roots over HTTP: Content-Length always, Range and HEAD
//! for large kernels and initrds, HTTP/1.0 clients, and never a redirect.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use super::Conn;
use crate::assets::{self, AssetError};
use crate::config::Shared;
use crate::events::{self, Event, Stage};

pub async fn asset(
    State(config): State<Shared>,
    Extension(conn): Extension<Conn>,
    Path(path): Path<String>,
    request: Request,
) -> Response {
    let config = config.load_full();
    let metrics = crate::metrics::get();
    // `/assets//grubx64.efi` is `grubx64.efi`, as nginx merges slashes: the
    // shim, booted over UEFI HTTP Boot, asks for its GRUB as the directory
    // of its own URL plus `/grubx64.efi`. TFTP strips leading `/` too.
    let path = path.trim_start_matches('/');
    match assets::resolve(config.server.asset_roots(), path) {
        Ok(file) => {
            tracing::debug!(peer = %conn.peer, file = %file.display(), "asset");
            metrics.request("http", "asset", "ok");
            let response = match ServeFile::new(file).oneshot(request).await {
                Ok(response) => response.map(Body::new),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
            };
            record(&conn, path, &response);
            response
        }
        Err(e @ AssetError::Refused(_)) => {
            tracing::warn!(peer = %conn.peer, path = %path.escape_debug(), error = %e, "asset request refused");
            metrics.request("http", "asset", "refused");
            record_refusal(&conn, path, "refused", &e);
            (StatusCode::FORBIDDEN, format!("{e}\n")).into_response()
        }
        Err(e @ AssetError::NotFound) => {
            tracing::info!(peer = %conn.peer, path = %path.escape_debug(), "asset not found");
            metrics.request("http", "asset", "not_found");
            record_refusal(&conn, path, "not_found", &e);
            (StatusCode::NOT_FOUND, format!("{e}\n")).into_response()
        }
    }
}

/// The boot event of a served file: status and length as sent.
fn record(conn: &Conn, path: &str, response: &Response) {
    events::record_with(|| {
        let status = response.status();
        let outcome = if status.is_success() { "ok" } else { "failed" };
        let length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?");
        let detail = format!("{path}: {} {length} bytes", status.as_u16());
        Event::new(Stage::Asset, outcome, detail).ip(conn.peer.ip())
    });
}

fn record_refusal(conn: &Conn, path: &str, outcome: &'static str, e: &AssetError) {
    events::record_with(|| {
        Event::new(Stage::Asset, outcome, format!("{path}: {e}")).ip(conn.peer.ip())
    });
}

pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}
