//! `/api/v1/machines/{mac}/events`: one machine's boot steps from the event
//! record. With a shared database (docs/ha.md) that is every server's steps,
//! each naming the server that handled it.

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::machines::parse_mac;
use super::ApiError;
use crate::events;

/// Steps one answer holds at most (the newest).
const LIMIT_MAX: usize = 5000;
const LIMIT_DEFAULT: usize = 200;

#[derive(Deserialize)]
pub struct Limit {
    limit: Option<usize>,
}

pub async fn of_machine(
    Path(mac): Path<String>,
    Query(q): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    let mac = parse_mac(&mac)?;
    let log = events::log().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "boot events are not recorded ([events] db = \"\", or the database could not be opened: see the pxed log)",
        )
    })?;
    let query = events::Query {
        mac: Some(mac),
        limit: q.limit.unwrap_or(LIMIT_DEFAULT).min(LIMIT_MAX),
        ..Default::default()
    };
    let found = log.query(query).await.map_err(ApiError::unavailable)?;
    let steps: Vec<Value> = found.iter().map(events::StoredEvent::to_json).collect();
    Ok(Json(Value::Array(steps)))
}
