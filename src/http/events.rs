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

use crate::application::ingest::{CollectRejects, Delivery, IngestError, IngestReport, SourceKind};
use crate::application::ports::RawRecord;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::{AppState, event_body};

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

/// Records validated and stored per step: memory per request stays a small
/// multiple of the body however tiny its records are.
const CHUNK_RECORDS: usize = 8_192;

/// Ingest events.
#[utoipa::path(
    post,
    path = "/events",
    request_body(content = String, description = "JSON array of events, or NDJSON (one event per line)"),
    responses(
        (status = 200, description = "Counts and per-event reasons", body = IngestResponse),
        (status = 400, description = "Body is neither a JSON array nor NDJSON; nothing was stored", body = ErrorBody),
        (status = 408, description = "Body not received within server.body_read_timeout_secs", body = ErrorBody),
        (status = 413, description = "Body larger than server.max_body_bytes", body = ErrorBody),
        (status = 429, description = "Too many requests or request bodies in flight", body = ErrorBody),
        (status = 503, description = "Event store unavailable; events of earlier chunks may be stored, resending is safe", body = ErrorBody),
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
    if body.trim_ascii().is_empty() {
        return Err(ApiError::bad_request(
            "empty body: send a JSON array of events or NDJSON (one event per line)",
        ));
    }
    // The split runs off the runtime and hands over a chunk at a time (two
    // in the pipe at most); each chunk is validated and stored before the
    // next, so earlier chunks stay stored if a later write fails (resending
    // is safe: the store is idempotent).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<RawRecord>>(1);
    let splitter = tokio::task::spawn_blocking(move || {
        event_body::split(&body, CHUNK_RECORDS, |chunk| {
            tx.blocking_send(chunk).is_ok()
        })
    });
    let mut rejects = CollectRejects::new(MAX_REPORTED_ERRORS);
    let mut report = IngestReport::default();
    // The body is one delivery: identical events in it are distinct, and
    // the same body sent again stores nothing new.
    let mut delivery = Delivery::new(SourceKind::Http);
    while let Some(chunk) = rx.recv().await {
        report += state
            .ingest
            .process(chunk, &mut delivery, &mut rejects)
            .await
            .map_err(|e| match e {
                IngestError::Store(e) => ApiError::from(e),
                // CollectRejects never fails; keep the mapping total anyway.
                IngestError::Source(e) => {
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                }
            })?;
    }
    splitter
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
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
