//! `POST /predict?user_id=N` and `POST /predict/batch`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::application::predict::Prediction;
use crate::domain::explanation::DEFAULT_TOP_K;
use crate::domain::user::UserId;
use crate::http::AppState;
use crate::http::error::{ApiError, ErrorBody};

/// Query of `POST /predict`.
#[derive(Debug, Deserialize)]
pub struct PredictParams {
    /// An integer id or any string id (URL-encoded), as sent at ingestion.
    pub user_id: String,
    #[serde(default)]
    pub explain: bool,
    pub top_k: Option<usize>,
}

/// How many contributions to return, if any: `top_k` only with `explain`,
/// at least 1, at most every feature (more is the same answer).
fn top_k(explain: bool, top_k: Option<usize>) -> Result<Option<usize>, ApiError> {
    match (explain, top_k) {
        (false, None) => Ok(None),
        (false, Some(_)) => Err(ApiError::bad_request("top_k needs explain=true")),
        (true, Some(0)) => Err(ApiError::bad_request("top_k must be at least 1")),
        (true, k) => Ok(Some(k.unwrap_or(DEFAULT_TOP_K))),
    }
}

/// Churn probability of one user.
#[utoipa::path(
    post,
    path = "/predict",
    params(
        ("user_id" = String, Query, description = "The user to score: an integer id, or a string id (UUID, name) as sent at ingestion"),
        ("explain" = Option<bool>, Query, description = "Add the feature contributions (log-odds)"),
        ("top_k" = Option<usize>, Query, minimum = 1, description = "Contributions to list (default 5; needs explain=true)"),
    ),
    responses(
        (status = 200, description = "Prediction", body = Prediction),
        (status = 400, description = "Missing or malformed user_id", body = ErrorBody),
        (status = 404, description = "Unknown user", body = ErrorBody),
        (status = 503, description = "No production model or no features yet", body = ErrorBody),
    ),
    tag = "predict"
)]
pub async fn predict(
    State(state): State<AppState>,
    params: Result<Query<PredictParams>, QueryRejection>,
) -> Result<Json<Prediction>, ApiError> {
    let Query(params) = params
        .map_err(|e| ApiError::bad_request(format!("user_id must be given: {}", e.body_text())))?;
    let user = UserId::parse(&params.user_id)
        .map_err(|e| ApiError::bad_request(format!("user_id: {e}")))?;
    let k = top_k(params.explain, params.top_k)?;
    Ok(Json(state.predict.predict_now(&user, k).await?))
}

/// The answer of `POST /predict` when it needs no wait (the fast path):
/// `None` when live features must read the store first, which the
/// handler does.
///
/// # Errors
/// [`ApiError`] from the prediction (404 unknown user, 503 nothing loaded).
pub(crate) fn answer_cached(
    state: &crate::http::AppContext,
    user: &UserId,
) -> Option<Result<Json<Prediction>, ApiError>> {
    Some(
        state
            .predict
            .predict_cached(user, None)?
            .map(Json)
            .map_err(ApiError::from),
    )
}

/// Body of `POST /predict/batch`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BatchRequest {
    /// Integer ids and/or string ids, as sent at ingestion.
    pub user_ids: Vec<UserId>,
    /// Add the feature contributions (log-odds) to every prediction.
    #[serde(default)]
    pub explain: bool,
    /// Contributions to list per prediction (default 5; needs `explain`).
    #[schema(minimum = 1)]
    pub top_k: Option<usize>,
}

/// A user that could not be scored.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchFailure {
    pub user_id: UserId,
    pub error_type: &'static str,
    pub error: String,
}

/// Answer of `POST /predict/batch`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    pub predictions: Vec<Prediction>,
    pub errors: Vec<BatchFailure>,
}

/// Churn probabilities of many users from one consistent model + snapshot.
#[utoipa::path(
    post,
    path = "/predict/batch",
    request_body = BatchRequest,
    responses(
        (status = 200, description = "Predictions and per-user errors", body = BatchResponse),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 413, description = "Too many user ids", body = ErrorBody),
        (status = 503, description = "No production model or no features yet", body = ErrorBody),
    ),
    tag = "predict"
)]
pub async fn predict_batch(
    State(state): State<AppState>,
    body: Result<Json<BatchRequest>, JsonRejection>,
) -> Result<Json<BatchResponse>, ApiError> {
    let Json(request) = body.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!(
                "body larger than {} bytes (server.max_body_bytes)",
                state.limits.max_body_bytes
            ))
        } else {
            ApiError::bad_request(format!("invalid body: {}", e.body_text()))
        }
    })?;
    if request.user_ids.len() > state.limits.max_batch_users {
        return Err(ApiError::too_large(format!(
            "{} user ids requested; at most {} per batch",
            request.user_ids.len(),
            state.limits.max_batch_users
        )));
    }
    let k = top_k(request.explain, request.top_k)?;
    let results = state
        .predict
        .predict_batch_now(&request.user_ids, k)
        .await?;
    let mut response = BatchResponse {
        predictions: Vec::with_capacity(results.len()),
        errors: Vec::new(),
    };
    for (user_id, r) in request.user_ids.iter().zip(results) {
        match r {
            Ok(p) => response.predictions.push(p),
            Err(e) => {
                let api = ApiError::from(e);
                response.errors.push(BatchFailure {
                    user_id: user_id.clone(),
                    error_type: api.error_type,
                    error: api.message,
                });
            }
        }
    }
    Ok(Json(response))
}
