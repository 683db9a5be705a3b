//! `GET /healthz` (the process is alive) and `GET /readyz` (it can serve:
//! model and features loaded, store and registry reachable).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)), tag = "health")]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness checks, each with its own verdict.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    pub model_loaded: bool,
    pub model_version: Option<u64>,
    pub features_loaded: bool,
    pub features_as_of: Option<String>,
    pub store_reachable: bool,
    pub registry_reachable: bool,
    /// Whether a Kafka consumer runs in this process.
    pub stream_consumer: bool,
    /// The consumer is paused because writes keep failing (see `problems`).
    pub stream_paused: bool,
    /// The consumer reaches its brokers (`true` without a consumer).
    pub stream_source_reachable: bool,
    /// Supervised background tasks by name (consumer, registry poll,
    /// scheduler); any not running makes the server unready.
    #[schema(value_type = Object)]
    pub tasks: std::collections::BTreeMap<&'static str, crate::application::supervisor::TaskState>,
    /// Who runs the schedule (absent when the schedule or the lease is
    /// off). Following is not a problem; a lease that cannot be read or
    /// renewed is.
    pub scheduler: Option<crate::application::leadership::LeaderStatus>,
    pub problems: Vec<String>,
}

/// Readiness: 200 when every check passes, 503 otherwise.
#[utoipa::path(
    get,
    path = "/readyz",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)),
    tag = "health"
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let mut problems = Vec::new();
    let model = state.predict.state().model();
    let features = state.predict.state().features();
    if model.is_none() {
        problems.push("no production model loaded".to_string());
    }
    if features.is_none() {
        problems.push("no feature snapshot loaded".to_string());
    }
    // The alias names a version that cannot be served: a problem even
    // while an earlier version serves on (after a failed move, or as the
    // fallback of a restart), because an operator has to act.
    if let Some(problem) = state.predict.state().alias_problem() {
        problems.push(problem.to_string());
    }
    // Both pings at once, each bounded: a dependency that accepts
    // connections and never answers makes the server unready within
    // `server.probe_timeout_ms`, and names itself.
    let limit = state.limits.probe_timeout;
    let (store, registry) = tokio::join!(
        tokio::time::timeout(limit, state.events.ping()),
        tokio::time::timeout(limit, state.models.registry().ping()),
    );
    let silent = || {
        format!(
            "no answer within {} ms (server.probe_timeout_ms)",
            limit.as_millis()
        )
    };
    let store_reachable = match store {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            problems.push(format!("event store: {e}"));
            false
        }
        Err(_) => {
            problems.push(format!("event store: {}", silent()));
            false
        }
    };
    let registry_reachable = match registry {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            problems.push(format!("registry: {e}"));
            false
        }
        Err(_) => {
            problems.push(format!("registry: {}", silent()));
            false
        }
    };
    let stream_paused = match state.stream_health.paused_because() {
        Some(reason) => {
            problems.push(format!("kafka consumption paused: {reason}"));
            true
        }
        None => false,
    };
    let source_problem = state.stream_health.source_problem();
    let stream_source_reachable = source_problem.is_none();
    problems.extend(source_problem);
    problems.extend(state.tasks.problems());
    let scheduler = state.leadership.as_ref().map(|l| l.status());
    if let Some(problem) = scheduler.as_ref().and_then(|s| s.problem.clone()) {
        problems.push(problem);
    }
    let ready = problems.is_empty();
    let body = Readiness {
        ready,
        model_loaded: model.is_some(),
        model_version: model.map(|m| m.metadata.version),
        features_loaded: features.is_some(),
        features_as_of: features.map(|f| crate::domain::time::format_rfc3339(f.as_of())),
        store_reachable,
        registry_reachable,
        stream_consumer: state.stream_health.running(),
        stream_paused,
        stream_source_reachable,
        tasks: state.tasks.snapshot(),
        scheduler,
        problems,
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
