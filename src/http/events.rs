//! `POST /events`: a JSON array or NDJSON body of events. Valid events are
//! stored (idempotently); each invalid one is reported back with its index
//! and reason and counted in `/metrics` — a bad event never sinks the batch.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::application::ingest::{CollectRejects, IngestError};
use crate::application::ports::RawRecord;
use crate::http::AppState;
use crate::http::error::{ApiError, ErrorBody};

/// One rejected event.
#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedEvent {
    /// 0-based position in the array, or 1-based line number for NDJSON.
    pub index: usize,
    pub field: &'static str,
    pub error: String,
}

/// Answer of `POST /events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestResponse {
    /// Newly stored events.
    pub accepted: u64,
    /// Valid events that were already stored (redeliveries).
    pub duplicates: u64,
    pub rejected: u64,
    pub errors: Vec<RejectedEvent>,
}

/// At most this many per-event reasons are echoed back.
const MAX_REPORTED_ERRORS: usize = 1_000;

fn split_body(body: &[u8]) -> Result<Vec<RawRecord>, ApiError> {
    let trimmed = body.trim_ascii_start();
    if trimmed.first() == Some(&b'[') {
        // Only the array's structure is parsed here: each element stays raw
        // text, parsed once by the event parser, as NDJSON lines are.
        let values: Vec<&serde_json::value::RawValue> = serde_json::from_slice(trimmed)
            .map_err(|e| ApiError::bad_request(format!("body is not a JSON array: {e}")))?;
        Ok(values
            .into_iter()
            .enumerate()
            .map(|(i, v)| RawRecord::new(v.get().as_bytes().to_vec(), i.to_string()))
            .collect())
    } else {
        Ok(body
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, line)| !line.trim_ascii().is_empty())
            .map(|(i, line)| RawRecord::new(line.trim_ascii().to_vec(), (i + 1).to_string()))
            .collect())
    }
}

/// Ingest events.
#[utoipa::path(
    post,
    path = "/events",
    request_body(content = String, description = "JSON array of events, or NDJSON (one event per line)"),
    responses(
        (status = 200, description = "Counts and per-event reasons", body = IngestResponse),
        (status = 400, description = "Body is neither a JSON array nor NDJSON", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 503, description = "Event store unavailable; nothing was stored", body = ErrorBody),
    ),
    tag = "events"
)]
pub async fn post_events(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<IngestResponse>), ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!(
                "body larger than {} bytes; split it into smaller requests",
                state.limits.max_body_bytes
            ))
        } else {
            ApiError::bad_request(e.body_text())
        }
    })?;
    let records = split_body(&body)?;
    let mut rejects = CollectRejects::new(MAX_REPORTED_ERRORS);
    let report = state
        .ingest
        .process(records, &mut rejects)
        .await
        .map_err(|e| match e {
            IngestError::Store(e) => ApiError::from(e),
            // CollectRejects never fails; keep the mapping total anyway.
            IngestError::Source(e) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        })?;
    let errors = rejects
        .notes
        .into_iter()
        .map(|n| RejectedEvent {
            index: n.origin.parse().unwrap_or(0),
            field: n.field,
            error: n.error,
        })
        .collect();
    Ok((
        StatusCode::OK,
        Json(IngestResponse {
            accepted: report.inserted,
            duplicates: report.duplicates,
            rejected: report.rejected,
            errors,
        }),
    ))
}
