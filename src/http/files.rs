//! Files under the asset roots over HTTP: Content-Length always, Range and HEAD
//! for large kernels and initrds, HTTP/1.0 clients, and never a redirect.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use super::Conn;
use crate::assets::{self, AssetError};
use crate::config::Shared;

pub async fn asset(
    State(config): State<Shared>,
    Extension(conn): Extension<Conn>,
    Path(path): Path<String>,
    request: Request,
) -> Response {
    let config = config.load_full();
    let metrics = crate::metrics::get();
    match assets::resolve(config.server.asset_roots(), &path) {
        Ok(file) => {
            tracing::debug!(peer = %conn.peer, file = %file.display(), "asset");
            metrics.request("http", "asset", "ok");
            match ServeFile::new(file).oneshot(request).await {
                Ok(response) => response.map(Body::new),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
            }
        }
        Err(e @ AssetError::Refused(_)) => {
            tracing::warn!(peer = %conn.peer, path = ?path, error = %e, "asset request refused");
            metrics.request("http", "asset", "refused");
            (StatusCode::FORBIDDEN, format!("{e}\n")).into_response()
        }
        Err(e @ AssetError::NotFound) => {
            tracing::info!(peer = %conn.peer, path = ?path, "asset not found");
            metrics.request("http", "asset", "not_found");
            (StatusCode::NOT_FOUND, format!("{e}\n")).into_response()
        }
    }
}

pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}
