//! `POST /admin/events/generate`: generates seeded demo events and ingests
//! them (the seed pipeline's `generate_events` step, for the Airflow DAG and
//! demos). Admin-only: production events arrive through `/events` or Kafka.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::application::generate::{GeneratorOptions, generate};
use crate::application::ingest::IngestReport;
use crate::http::AppState;
use crate::http::error::{ApiError, ErrorBody};

/// What to generate; every field has a default.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateRequest {
    pub users: u64,
    pub days: u32,
    pub seed: u64,
    pub churn_share: f64,
    /// Last instant of the data (RFC 3339); default: now.
    pub end: Option<String>,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        Self {
            users: 2_000,
            days: 120,
            seed: 42,
            churn_share: 0.35,
            end: None,
        }
    }
}

/// Most users one request may generate (about 200 events each).
const MAX_USERS: u64 = 100_000;

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
    body: Option<Json<GenerateRequest>>,
) -> Result<Json<IngestReport>, ApiError> {
    let req = body.map(|Json(b)| b).unwrap_or_default();
    if req.users == 0 || req.users > MAX_USERS {
        return Err(ApiError::bad_request(format!(
            "users must be within 1..={MAX_USERS}"
        )));
    }
    if req.days < 7 || !(0.0..=1.0).contains(&req.churn_share) {
        return Err(ApiError::bad_request(
            "days must be at least 7 and churn_share within [0, 1]",
        ));
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
    };
    // Generating is CPU work: keep it off the runtime.
    let events = tokio::task::spawn_blocking(move || {
        let mut events = Vec::new();
        generate(opts, |e| events.push(e));
        events
    })
    .await
    .map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
        )
    })?;
    Ok(Json(state.ingest.store_all(events).await?))
}
