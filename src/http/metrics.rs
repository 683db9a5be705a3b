//! The request metrics middleware and `GET /metrics` (the recorder itself
//! is installed by [`crate::telemetry::recorder`]).

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};

use crate::http::AppState;
use crate::telemetry::metric_names;

/// Metric handles per route, then per (method, status), created once:
/// building labelled keys on every request (strings, hashing, a registry
/// lookup) cost more than the prediction itself. Looked up by the route's
/// `&str`, so a request allocates nothing here.
type ByStatus = Vec<((Method, u16), (Counter, Histogram))>;
static HANDLES: OnceLock<RwLock<HashMap<String, ByStatus>>> = OnceLock::new();

/// Counts one request and records its latency (the router's [`track`]
/// layer, and the fast path that answers before the router).
pub fn record(route: &str, method: &Method, status: u16, seconds: f64) {
    let map = HANDLES.get_or_init(Default::default);
    {
        let read = map.read().unwrap_or_else(|p| p.into_inner());
        if let Some((_, (count, latency))) = read
            .get(route)
            .and_then(|v| v.iter().find(|((m, s), _)| *s == status && m == method))
        {
            count.increment(1);
            latency.record(seconds);
            return;
        }
    }
    let (count, latency) = (
        metrics::counter!(metric_names::HTTP_REQUESTS_TOTAL, "route" => route.to_string(), "method" => method.to_string(), "status" => status.to_string()),
        metrics::histogram!(metric_names::HTTP_REQUEST_DURATION_SECONDS, "route" => route.to_string()),
    );
    count.increment(1);
    latency.record(seconds);
    map.write()
        .unwrap_or_else(|p| p.into_inner())
        .entry(route.to_string())
        .or_default()
        .push(((method.clone(), status), (count, latency)));
}

/// The method as a label: the standard ones, anything else `OTHER` (a
/// client choosing methods must not mint series).
fn method_label(method: &Method) -> Method {
    match *method {
        Method::GET
        | Method::POST
        | Method::PUT
        | Method::DELETE
        | Method::HEAD
        | Method::OPTIONS
        | Method::PATCH => method.clone(),
        _ => Method::from_bytes(b"OTHER").unwrap_or(Method::GET),
    }
}

/// Counts requests and records latency by route template, method and
/// status; every label has a bounded set of values.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    record(
        route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", body = String)), tag = "health")]
pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
    if let Some(f) = state.predict.state().features() {
        let age = chrono::Utc::now().timestamp() - f.as_of();
        metrics::gauge!(metric_names::FEATURE_SNAPSHOT_AGE_SECONDS).set(age as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.prometheus.render(),
    )
}
