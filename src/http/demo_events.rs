//! `POST /admin/events/generate`: generates seeded demo events and ingests
//! them (the seed pipeline's `generate_events` step, for the Airflow DAG and
//! demos). Admin-only: production events arrive through `/events` or Kafka.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::application::generate::{GeneratorOptions, generate_while};
use crate::application::ingest::{Delivery, IngestError, IngestReport, SourceKind};
use crate::domain::event::Event;
use crate::http::AppState;
use crate::http::error::{ApiError, ErrorBody};

/// What to generate; every field has a default (`{}` takes them all).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateRequest {
    pub users: u64,
    pub days: u32,
    pub seed: u64,
    pub churn_share: f64,
    /// Last instant of the data (RFC 3339); default: now.
    pub end: Option<String>,
    /// UUID-shaped string user ids instead of integers.
    pub string_ids: bool,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        Self {
            users: 2_000,
            days: 120,
            seed: 42,
            churn_share: 0.35,
            end: None,
            string_ids: false,
        }
    }
}

/// Most users one request may generate (about 200 events each).
const MAX_USERS: u64 = 100_000;
/// Longest history one request may generate (ten years).
const MAX_DAYS: u32 = 3_650;
/// Most user-days one request may generate (about 20 million events).
const MAX_USER_DAYS: u64 = 12_000_000;

/// Generate and ingest demo events.
#[utoipa::path(
    post,
    path = "/admin/events/generate",
    request_body = GenerateRequest,
    responses(
        (status = 200, description = "Events generated and stored", body = IngestReport),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "admin"
)]
pub async fn generate_events(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<IngestReport>, ApiError> {
    // The body must be the JSON object (whatever its content type); `{}`
    // takes every default. An empty body is refused rather than read as
    // "defaults": a bare POST by mistake would store ~400k demo events.
    if body.trim_ascii().is_empty() {
        return Err(ApiError::bad_request(
            "a JSON body is required: {} generates the defaults (2,000 users over 120 days)",
        ));
    }
    let req: GenerateRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
    if req.users == 0 || req.users > MAX_USERS {
        return Err(ApiError::bad_request(format!(
            "users must be within 1..={MAX_USERS}"
        )));
    }
    if !(7..=MAX_DAYS).contains(&req.days) || !(0.0..=1.0).contains(&req.churn_share) {
        return Err(ApiError::bad_request(format!(
            "days must be within 7..={MAX_DAYS} and churn_share within [0, 1]"
        )));
    }
    if req.users * u64::from(req.days) > MAX_USER_DAYS {
        return Err(ApiError::bad_request(format!(
            "users × days is {}; at most {MAX_USER_DAYS} per request",
            req.users * u64::from(req.days)
        )));
    }
    let end = match &req.end {
        Some(v) => crate::domain::time::parse_timestamp(v)
            .ok_or_else(|| ApiError::bad_request(format!("end: {v:?} is not a timestamp")))?,
        None => chrono::Utc::now().timestamp(),
    };
    let opts = GeneratorOptions {
        users: req.users,
        days: req.days,
        end,
        seed: req.seed,
        churn_share: req.churn_share,
        string_ids: req.string_ids,
    };
    // Generating is CPU work: keep it off the runtime, and store it a batch
    // at a time. If the client goes away this future is dropped, the
    // channel closes and the generator stops at its next event.
    let batch = state.ingest.batch_size();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Event>>(1);
    let generator = tokio::task::spawn_blocking(move || {
        let mut events = Vec::with_capacity(batch);
        let mut open = true;
        generate_while(opts, |e| {
            events.push(e);
            if events.len() >= batch {
                open = tx.blocking_send(std::mem::take(&mut events)).is_ok();
            }
            open
        });
        if open && !events.is_empty() {
            let _ = tx.blocking_send(events);
        }
    });
    let mut report = IngestReport::default();
    let mut delivery = Delivery::new(SourceKind::Generator);
    while let Some(events) = rx.recv().await {
        report += state
            .ingest
            .process_events(events, &mut delivery)
            .await
            .map_err(|e| match e {
                IngestError::Store(e) => ApiError::from(e),
                IngestError::Source(e) => ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    e.to_string(),
                ),
            })?;
    }
    generator.await.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
        )
    })?;
    Ok(Json(report))
}
