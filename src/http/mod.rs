//! The HTTP API (axum). Handlers call use cases only: they never see a
//! store or a model type, just ports and use-case results.
//!
//! Routes come in groups, each with its layers: work routes (`/predict`,
//! `/events`) behind the in-flight limit, `/admin/*` behind it and the
//! bearer token, and the rest (health, `/metrics`, `/openapi.json`, `/ui`)
//! behind neither. Each route is registered once, with its OpenAPI entry
//! ([`routes`]); `POST /predict` has one handler, which the fast path
//! ([`fast_path`]) calls before routing. Every response is JSON except
//! `/metrics` and the dashboard's assets under `/ui`.

pub mod admin;
pub mod auth;
pub mod demo_events;
pub mod error;
pub mod event_body;
pub mod events;
pub mod fast_path;
pub mod health;
pub mod intake;
pub mod json_errors;
pub mod metrics;
pub mod openapi;
pub mod predict;
pub mod server;
pub mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use hyper_util::service::{TowerToHyperService, TowerToHyperServiceFuture};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretString;
use tokio::sync::Semaphore;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::application::ingest::IngestEvents;
use crate::application::jobs::Jobs;
use crate::application::manage_models::ManageModels;
use crate::application::ports::EventStore;
use crate::application::predict::PredictChurn;
use crate::application::stream_ingest::IngestHealth;
use crate::application::supervisor::TaskHealth;
use crate::http::error::ApiError;

/// Request limits from the settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_batch_users: usize,
    pub max_body_bytes: usize,
    /// How long `/readyz` waits on each dependency's ping.
    pub probe_timeout: std::time::Duration,
}

/// What handlers share, behind one `Arc` ([`AppState`]): axum clones the
/// state for every extractor of every request, and cloning a struct of many
/// `Arc`s meant dozens of contended atomic updates per request (a third of
/// the CPU in profiles); one `Arc` is one.
pub struct AppContext {
    pub predict: PredictChurn,
    pub ingest: IngestEvents,
    pub jobs: Jobs,
    pub models: ManageModels,
    /// Erasure (`DELETE /admin/users/{id}`).
    pub forget: crate::application::erasure::ForgetUsers,
    /// For readiness pings only.
    pub events: Arc<dyn EventStore>,
    pub limits: Limits,
    pub admin_token: Option<SecretString>,
    pub admin_open: bool,
    pub prometheus: PrometheusHandle,
    /// Serving requests (`/predict*`) in flight.
    pub in_flight: Arc<Semaphore>,
    /// Requests that wait on the store or jobs (`POST /events`,
    /// `/admin/*`) in flight: a separate budget, so requests held by a
    /// slow or hung store never starve serving.
    pub store_in_flight: Arc<Semaphore>,
    /// The optional ingest and read tokens.
    pub tokens: auth::Tokens,
    /// Request-body bytes the server may hold at once.
    pub body_budget: intake::BodyBudget,
    /// State of the Kafka consumer, if one runs, for `/readyz`.
    pub stream_health: IngestHealth,
    /// Supervised background tasks, for `/readyz`.
    pub tasks: TaskHealth,
    /// The scheduler's leader election, when replicas coordinate.
    pub leadership: Option<crate::application::leadership::Leadership>,
}

/// The shared state handlers extract.
pub type AppState = Arc<AppContext>;

/// Refuses work beyond `max_concurrent_requests` with 429 instead of
/// queueing it: under overload, fast refusals beat slow timeouts.
async fn shed_load(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    shed(&state.in_flight, "max_concurrent_requests", request, next).await
}

/// The same for requests that wait on the store
/// (`max_concurrent_store_requests`).
async fn shed_store_load(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    shed(
        &state.store_in_flight,
        "max_concurrent_store_requests",
        request,
        next,
    )
    .await
}

async fn shed(
    permits: &Semaphore,
    setting: &str,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    // Borrowed, not owned: the permit lives as long as this call.
    let Ok(_permit) = permits.try_acquire() else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            format!("too many requests in flight (server.{setting}); retry shortly"),
        ));
    };
    Ok(next.run(request).await)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see /openapi.json",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route; see /openapi.json",
    )
}

/// The API as the server runs it: [`fast_path`] first, then the router.
#[derive(Clone)]
pub struct Api {
    state: AppState,
    router: TowerToHyperService<Router>,
}

/// The fast path's answer, or the router's future.
pub type ApiFuture<B> = futures::future::Either<
    std::future::Ready<Result<Response, std::convert::Infallible>>,
    futures::future::MapOk<
        TowerToHyperServiceFuture<Router, axum::http::Request<B>>,
        fn(Response) -> Response,
    >,
>;

/// Every answer says `X-Content-Type-Options: nosniff`: error bodies and
/// predictions echo what the client sent (ids, messages), which a browser
/// must never sniff into something other than JSON.
fn nosniff(mut response: Response) -> Response {
    response.headers_mut().insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    response
}

impl Api {
    pub fn new(state: AppState) -> Self {
        Self {
            router: TowerToHyperService::new(router(state.clone())),
            state,
        }
    }
}

impl<B> hyper::service::Service<axum::http::Request<B>> for Api
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = ApiFuture<B>;

    fn call(&self, request: axum::http::Request<B>) -> Self::Future {
        use futures::TryFutureExt;
        match fast_path::answer(&self.state, &request) {
            Some(response) => {
                futures::future::Either::Left(std::future::ready(Ok(nosniff(response))))
            }
            None => futures::future::Either::Right(
                self.router
                    .call(request)
                    .map_ok(nosniff as fn(Response) -> Response),
            ),
        }
    }
}

/// Route groups and what a client can meet in each before the handler
/// runs: documented once per group, where the group's layer is applied.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Group {
    /// Serving routes: the in-flight limit (429), the read token (401).
    Serve,
    /// `POST /events`: the store's in-flight limit (429), the ingest
    /// token (401).
    Ingest,
    /// `/admin/*`: the in-flight limit and the bearer token (401, 403).
    Admin,
}

/// Adds a group's answers to every operation of `router`'s document.
fn document<S: Clone + Send + Sync + 'static>(
    mut router: OpenApiRouter<S>,
    group: Group,
) -> OpenApiRouter<S> {
    let doc = router.get_openapi_mut();
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            openapi::add(op, "429", "Too many requests or request bodies in flight");
            if group != Group::Admin {
                openapi::add(
                    op,
                    "401",
                    "Missing or wrong bearer token, when one is configured",
                );
            }
            if group == Group::Admin {
                openapi::add(op, "401", "Missing or wrong bearer token");
                openapi::add(op, "403", "Admin API disabled (no token configured)");
            }
        }
    }
    router
}

/// Builds the full router and its OpenAPI document in one pass: a route is
/// registered once (`routes!` reads its `#[utoipa::path]`), in the group
/// whose layers it gets.
///
/// Layers run outside in: intake (head bounds, body read under a deadline
/// and the byte budget), then for work routes the in-flight limit, so a
/// slow upload never holds a request permit and health, readiness and
/// metrics are never refused for load.
pub fn routes(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let admin = OpenApiRouter::new()
        .routes(routes!(admin::retrain))
        .routes(routes!(demo_events::generate_events))
        .routes(routes!(admin::rebuild_features))
        .routes(routes!(admin::jobs))
        .routes(routes!(admin::job))
        .routes(routes!(admin::models))
        .routes(routes!(admin::at_risk))
        .routes(routes!(admin::monitoring))
        .routes(routes!(admin::consistency, admin::last_consistency))
        .routes(routes!(admin::promote))
        .routes(routes!(admin::rollback))
        .routes(routes!(admin::forget_user))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            admin::require_token,
        ));
    let serve = OpenApiRouter::new()
        .routes(routes!(predict::predict))
        .routes(routes!(predict::predict_batch))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_read_token,
        ));
    let ingest = OpenApiRouter::new()
        .routes(routes!(events::post_events))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_ingest_token,
        ));
    // Layers run outside in: the in-flight limit, then the token.
    let serve = document(serve, Group::Serve)
        .route_layer(middleware::from_fn_with_state(state.clone(), shed_load));
    let stored = document(ingest, Group::Ingest)
        .merge(document(admin, Group::Admin))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            shed_store_load,
        ));
    let work = serve.merge(stored);
    let (router, api) = OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(metrics::render))
        .merge(work)
        .split_for_parts();
    let api = openapi::finish(api);
    let document = Arc::new(api.clone());
    let router = router
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move { axum::Json((*document).clone()) }
            }),
        )
        .route("/ui", get(ui::index))
        .route("/ui/", get(ui::index))
        .route("/ui/app.js", get(ui::app_js))
        .route("/ui/app.css", get(ui::app_css))
        .route("/ui/uplot.min.js", get(ui::uplot_js))
        .route("/ui/uplot.min.css", get(ui::uplot_css))
        // Before the metrics layer, so 405s are counted too.
        .method_not_allowed_fallback(method_not_allowed)
        // route_layer: runs after routing, so the route template is known.
        .route_layer(middleware::from_fn(metrics::track))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            intake::intake,
        ))
        .with_state(state);
    (router, api)
}

/// The router alone.
pub fn router(state: AppState) -> Router {
    routes(state).0
}
