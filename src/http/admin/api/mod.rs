//! The JSON API under `/api/v1/` on the admin listener (docs/api.md; the
//! OpenAPI document docs/openapi.yaml is checked against [`ROUTES`] and the
//! running server by tests). Every request needs `Authorization: Bearer
//! <token>` with a token from the file `[server] api_tokens` names; without
//! that key the whole API answers 404. Every answer is JSON, errors too
//! (`{"error": "…"}`); bad input gets a 4xx and changes nothing; every
//! write is a boot event naming the token's client.

mod events;
mod machines;
mod tools;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use super::AdminState;

/// Largest request body the API accepts; larger ones get 413.
pub const MAX_BODY: usize = 16 * 1024;
/// Most of a too-large body read (and dropped) before the 413 (after
/// authentication only).
const READ_MAX: usize = 1024 * 1024;

/// Every operation of the API: the router is built from this table, and a
/// test compares it with docs/openapi.yaml.
pub const ROUTES: &[(Method, &str)] = &[
    (Method::GET, "/api/v1/machines"),
    (Method::GET, "/api/v1/machines/{mac}"),
    (Method::PUT, "/api/v1/machines/{mac}/override"),
    (Method::DELETE, "/api/v1/machines/{mac}/override"),
    (Method::PUT, "/api/v1/machines/{mac}/labels"),
    (Method::GET, "/api/v1/machines/{mac}/events"),
    (Method::GET, "/api/v1/explain"),
    (Method::GET, "/api/v1/render"),
    (Method::POST, "/api/v1/reload"),
];

/// The handler of one entry of [`ROUTES`].
fn handler(method: &Method, path: &str) -> MethodRouter<AdminState> {
    let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
    match path.trim_start_matches("/api/v1") {
        "/machines" => on(filter, machines::list),
        "/machines/{mac}" => on(filter, machines::get),
        "/machines/{mac}/override" if method == Method::PUT => on(filter, machines::set_override),
        "/machines/{mac}/override" => on(filter, machines::clear_override),
        "/machines/{mac}/labels" => on(filter, machines::set_labels),
        "/machines/{mac}/events" => on(filter, events::of_machine),
        "/explain" => on(filter, tools::explain),
        "/render" => on(filter, tools::render),
        "/reload" => on(filter, tools::reload),
        // A row of ROUTES without a handler: every test that starts pxed fails.
        other => panic!("no handler for {method} {other}"),
    }
}

/// The API's routes (relative to `/api/v1`), behind authentication.
pub(super) fn router(state: AdminState) -> Router<AdminState> {
    let mut api = Router::new();
    let mut paths: Vec<&str> = ROUTES.iter().map(|(_, p)| *p).collect();
    paths.dedup();
    for path in paths {
        let mut methods = MethodRouter::new();
        for (method, _) in ROUTES.iter().filter(|(_, p)| *p == path) {
            methods = methods.merge(handler(method, path));
        }
        let relative = path.trim_start_matches("/api/v1");
        api = api.route(relative, methods.fallback(method_not_allowed));
    }
    api.fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state, authenticate))
}

/// An API error: its status and a message for a person.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A store failure: logged in full, the client gets a short message.
    pub fn unavailable(e: anyhow::Error) -> ApiError {
        tracing::error!(error = %format!("{e:#}"), "machine state failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "machine state is not available; see the pxed log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// Who is calling: the name of the client whose token was presented.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such API endpoint (docs/api.md)")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed here (docs/api.md)",
    )
}

/// The bearer token of a request, if it presents one.
fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// 404 without `api_tokens`, 401 without a known token; otherwise the
/// request goes on with its [`Caller`].
async fn authenticate(State(state): State<AdminState>, mut req: Request, next: Next) -> Response {
    let config = state.config.load_full();
    let Some(tokens) = &config.server.api_tokens else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "the API is off: set [server] api_tokens in machines.toml (docs/api.md)",
        )
        .into_response();
    };
    let peer = req
        .extensions()
        .get::<crate::http::Conn>()
        .map(|c| c.peer.to_string())
        .unwrap_or_default();
    let name = match bearer(&req) {
        None => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "an `Authorization: Bearer <token>` header is required",
            )
            .into_response()
        }
        Some(token) => tokens.name_of(token).map(str::to_string),
    };
    let Some(name) = name else {
        tracing::warn!(%peer, path = %req.uri().path(), "API request with an unknown token refused");
        return ApiError::new(StatusCode::UNAUTHORIZED, "unknown token").into_response();
    };
    req.extensions_mut().insert(Caller(name));
    next.run(req).await
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes into `T` (unknown
/// fields refused by `T`'s `deny_unknown_fields`).
pub async fn json_body<T: DeserializeOwned>(
    headers: &axum::http::HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        // Media types are case-insensitive (RFC 9110 §8.3.1), parameters
        // such as charset may follow; `application/jsonl` is not JSON.
        let json = ct.to_str().is_ok_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
    }
    // Read up to READ_MAX, refuse past MAX_BODY: a connection closed with
    // unread data is reset, and the reset can overtake the 413 on its way
    // to the client (seen in tests/api.rs with a 20 KB body).
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BODY} bytes"),
        )
    };
    let bytes = axum::body::to_bytes(body, READ_MAX)
        .await
        .map_err(|_| too_large())?;
    if bytes.len() > MAX_BODY {
        return Err(too_large());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// A timestamp as the API writes them: RFC 3339, UTC, seconds.
pub fn time(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
