//! `/admin/*`: retrain, rebuild features, inspect jobs, list/promote/roll
//! back models. Guarded by a bearer token compared in constant time.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use crate::application::jobs::{JobKind, JobRecord};
use crate::application::manage_models::ModelSummary;
use crate::application::ports::AliasRecord;
use crate::http::AppState;
use crate::http::error::{ApiError, ErrorBody};

/// Rejects requests without the right `Authorization: Bearer <token>`.
/// With no token configured the admin API is closed, unless the settings
/// explicitly allow it unauthenticated (demos).
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match &state.admin_token {
        None if state.admin_open => Ok(next.run(request).await),
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "the admin API is disabled: set CHURN_SERVER__ADMIN_TOKEN (or server.allow_unauthenticated_admin for demos)",
        )),
        Some(token) => {
            crate::http::auth::check(request.headers(), token)
                .map_err(crate::http::auth::unauthorized)?;
            Ok(next.run(request).await)
        }
    }
}

fn integer_path(what: &str, e: &PathRejection) -> ApiError {
    ApiError::bad_request(format!("{what} must be an integer: {}", e.body_text()))
}

fn start(state: &AppState, kind: JobKind) -> Result<(StatusCode, Json<JobRecord>), ApiError> {
    let record = state.jobs.start(kind, "admin api")?;
    Ok((StatusCode::ACCEPTED, Json(record)))
}

/// Start a retraining job (train → evaluate → register → gate → hot swap).
#[utoipa::path(
    post,
    path = "/admin/retrain",
    responses(
        (status = 202, description = "Job started", body = JobRecord),
        (status = 401, body = ErrorBody),
        (status = 409, description = "A retraining job is already running", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "admin"
)]
pub async fn retrain(
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<JobRecord>), ApiError> {
    start(&state, JobKind::Retrain)
}

/// Start a feature rebuild (snapshot as of now, then hot swap).
#[utoipa::path(
    post,
    path = "/admin/features/rebuild",
    responses(
        (status = 202, description = "Job started", body = JobRecord),
        (status = 401, body = ErrorBody),
        (status = 409, description = "A rebuild is already running", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "admin"
)]
pub async fn rebuild_features(
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<JobRecord>), ApiError> {
    start(&state, JobKind::BuildFeatures)
}

/// A job's status and result.
#[utoipa::path(
    get,
    path = "/admin/jobs/{id}",
    params(("id" = u64, Path, description = "Job id")),
    responses((status = 200, body = JobRecord), (status = 404, body = ErrorBody)),
    security(("bearer" = [])),
    tag = "admin"
)]
pub async fn job(
    State(state): State<AppState>,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Json<JobRecord>, ApiError> {
    let Path(id) = id.map_err(|e| integer_path("job id", &e))?;
    state.jobs.get(id).map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_job",
            format!("job {id} does not exist"),
        )
    })
}

/// Registered model versions with aliases and metrics.
#[utoipa::path(
    get,
    path = "/admin/models",
    responses((status = 200, description = "Versions, oldest first, with aliases and metadata", body = Vec<serde_json::Value>)),
    security(("bearer" = [])),
    tag = "admin"
)]
pub async fn models(State(state): State<AppState>) -> Result<Json<Vec<ModelSummary>>, ApiError> {
    Ok(Json(state.models.list().await?))
}

/// Point `production` at a version and swap it in.
#[utoipa::path(
    post,
    path = "/admin/models/{version}/promote",
    params(("version" = u64, Path, description = "Model version")),
    responses(
        (status = 200, body = AliasRecord),
        (status = 404, description = "Unknown version", body = ErrorBody),
        (status = 409, description = "Concurrent alias move", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "admin"
)]
pub async fn promote(
    State(state): State<AppState>,
    version: Result<Path<u64>, PathRejection>,
) -> Result<Json<AliasRecord>, ApiError> {
    let Path(version) = version.map_err(|e| integer_path("version", &e))?;
    let record = state
        .models
        .promote(version, "promoted through the admin API")
        .await?;
    reload(&state).await?;
    Ok(Json(record))
}

/// Move `production` back to its previous version and swap it in.
#[utoipa::path(
    post,
    path = "/admin/models/rollback",
    responses(
        (status = 200, body = AliasRecord),
        (status = 409, description = "No earlier version", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "admin"
)]
pub async fn rollback(State(state): State<AppState>) -> Result<Json<AliasRecord>, ApiError> {
    let record = state.models.rollback().await?;
    reload(&state).await?;
    Ok(Json(record))
}

async fn reload(state: &AppState) -> Result<(), ApiError> {
    state
        .predict
        .state()
        .reload_model(&state.models)
        .await
        .map(|_| ())
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "swap_failed",
                e.to_string(),
            )
        })
}

/// Query of `GET /admin/at-risk`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AtRiskParams {
    /// Users to list (default 100, at most `server.max_batch_users`).
    #[param(minimum = 1)]
    pub limit: Option<usize>,
    /// Reasons per user (default 5).
    #[param(minimum = 1)]
    pub top_k: Option<usize>,
}

/// The users most likely to churn, most likely first, with their reasons.
#[utoipa::path(
    get,
    path = "/admin/at-risk",
    params(AtRiskParams),
    responses(
        (status = 200, description = "Predictions with explanations, highest first, of the users eligible at the snapshot's time",
            body = Vec<crate::application::predict::Prediction>,
            headers(
                ("churn-ranked-users" = usize, description = "Users the list was ranked from (the eligible ones)"),
                ("churn-left-out-users" = usize, description = "Users of the snapshot left out"),
                ("churn-left-out-reason" = String, description = "Why they were left out"),
            )),
        (status = 400, body = ErrorBody),
        (status = 503, description = "No production model or no features yet", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "admin"
)]
pub async fn at_risk(
    State(state): State<AppState>,
    params: Result<axum::extract::Query<AtRiskParams>, axum::extract::rejection::QueryRejection>,
) -> Result<
    (
        axum::http::HeaderMap,
        Json<Vec<crate::application::predict::Prediction>>,
    ),
    ApiError,
> {
    let axum::extract::Query(params) =
        params.map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))?;
    let limit = params.limit.unwrap_or(100);
    let max = state.limits.max_batch_users;
    if limit == 0 || limit > max {
        return Err(ApiError::bad_request(format!(
            "limit must be within 1..={max}"
        )));
    }
    let top_k = params
        .top_k
        .unwrap_or(crate::domain::explanation::DEFAULT_TOP_K);
    if top_k == 0 {
        return Err(ApiError::bad_request("top_k must be at least 1"));
    }
    let list = state.predict.at_risk_named(limit, top_k).await?;
    // The body stays the list; who was ranked and who left out (and why)
    // ride along as headers, which the dashboard shows.
    let mut headers = axum::http::HeaderMap::new();
    for (name, value) in [
        ("churn-snapshot-users", list.snapshot_users.to_string()),
        ("churn-ranked-users", list.ranked_users.to_string()),
        ("churn-left-out-users", list.left_out.to_string()),
        ("churn-left-out-reason", list.left_out_reason.clone()),
    ] {
        if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    Ok((headers, Json(list.predictions)))
}

/// Drift and data quality of the serving snapshot against the production
/// model's training reference, as of the last feature build or model swap.
#[utoipa::path(
    get,
    path = "/admin/monitoring",
    responses(
        (status = 200, description = "PSI per feature (largest first), of the predictions, share of new users, alerts", body = crate::domain::drift::DriftReport),
        (status = 503, description = "Nothing measured yet (no model, no snapshot, or a model registered without a reference)", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "admin"
)]
pub async fn monitoring(
    State(state): State<AppState>,
) -> Result<Json<crate::domain::drift::DriftReport>, ApiError> {
    let serving = state.predict.state();
    if let Some(report) = serving.drift()
        && serving
            .model()
            .is_some_and(|m| m.metadata.version == report.model_version)
    {
        return Ok(Json((*report).clone()));
    }
    let why = match (serving.model(), serving.features()) {
        (None, _) => "no production model is loaded".to_string(),
        (_, None) => "no feature snapshot is loaded".to_string(),
        (Some(m), Some(_)) if m.metadata.drift_reference.is_none() => format!(
            "model version {} was registered without a drift reference: retrain to get one",
            m.metadata.version
        ),
        _ => "the serving snapshot is still being scored; retry shortly".to_string(),
    };
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_drift_report",
        format!("no drift measurement: {why}"),
    ))
}

/// The last live-vs-batch comparison (after the last snapshot swap, or
/// the last `POST`).
#[utoipa::path(
    get,
    path = "/admin/features/consistency",
    responses(
        (status = 200, description = "The last consistency report", body = crate::application::live_features::ConsistencyReport),
        (status = 503, description = "Live features are off, or no check ran yet", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "admin"
)]
pub async fn last_consistency(
    State(state): State<AppState>,
) -> Result<Json<crate::application::live_features::ConsistencyReport>, ApiError> {
    let report = state.predict.live().and_then(|l| l.report()).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_consistency_check",
            "no live-vs-batch check yet: live features are off, or no snapshot was loaded since start (POST runs one)",
        )
    })?;
    Ok(Json((*report).clone()))
}

/// Live features against the serving snapshot, now: a sample of its users
/// is read from the store and evaluated as of the snapshot's time; per
/// feature, the share whose value differs (also after every snapshot swap,
/// into `churn_live_mismatch_ratio`).
#[utoipa::path(
    post,
    path = "/admin/features/consistency",
    responses(
        (status = 200, description = "Mismatch share per feature, the worst, and whether it alerts", body = crate::application::live_features::ConsistencyReport),
        (status = 503, description = "Live features are off, or no snapshot is loaded", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "admin"
)]
pub async fn consistency(
    State(state): State<AppState>,
) -> Result<Json<crate::application::live_features::ConsistencyReport>, ApiError> {
    let unavailable =
        |m: &str| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_consistency_check", m);
    let live = state
        .predict
        .live()
        .ok_or_else(|| unavailable("live features are off (features.live = false)"))?;
    let snapshot = state
        .predict
        .state()
        .features()
        .ok_or_else(|| unavailable("no feature snapshot is loaded"))?;
    Ok(Json(live.check(&snapshot).await))
}

/// Query of `GET /admin/jobs`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsParams {
    /// Jobs to list, newest first (default 20, at most 200).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
}

/// The newest jobs, newest first.
#[utoipa::path(
    get,
    path = "/admin/jobs",
    params(JobsParams),
    responses((status = 200, body = Vec<JobRecord>), (status = 400, body = ErrorBody)),
    security(("bearer" = [])),
    tag = "admin"
)]
pub async fn jobs(
    State(state): State<AppState>,
    params: Result<axum::extract::Query<JobsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<JobRecord>>, ApiError> {
    let axum::extract::Query(params) =
        params.map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))?;
    let limit = params.limit.unwrap_or(20);
    if limit == 0 || limit > 200 {
        return Err(ApiError::bad_request("limit must be within 1..=200"));
    }
    Ok(Json(state.jobs.recent(limit)))
}

/// Erase a user: their events, feature rows, scores and name leave the
/// store, their id leaves every model version's drift sample and what this
/// server holds in memory. Answers what was removed; erasing an unknown or
/// already erased user removes nothing and is not an error.
#[utoipa::path(
    delete,
    path = "/admin/users/{user_id}",
    params(("user_id" = String, Path, description = "An integer id or a string id (URL-encoded), as sent at ingestion")),
    responses(
        (status = 200, description = "What was erased", body = crate::application::erasure::ErasureReport),
        (status = 400, body = ErrorBody),
        (status = 503, description = "The store or the registry is unavailable; retrying is safe", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "admin"
)]
pub async fn forget_user(
    State(state): State<AppState>,
    user_id: Result<Path<String>, PathRejection>,
) -> Result<Json<crate::application::erasure::ErasureReport>, ApiError> {
    let Path(user_id) = user_id.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let user = crate::domain::user::UserId::parse(&user_id)
        .map_err(|e| ApiError::bad_request(format!("user_id: {e}")))?;
    let report = state.forget.forget(&[user]).await?;
    state.predict.state().forget(&report.users).await;
    if let Some(live) = state.predict.live() {
        live.stored(report.users.iter().copied());
    }
    Ok(Json(report))
}
