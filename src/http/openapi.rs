//! The OpenAPI document, generated from the handlers' annotations and
//! served at `/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::{admin, events, health, metrics, predict};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "churn", description = "Churn prediction API"),
    paths(
        predict::predict,
        predict::predict_batch,
        events::post_events,
        health::healthz,
        health::readyz,
        metrics::render,
        admin::retrain,
        crate::http::demo_events::generate_events,
        admin::rebuild_features,
        admin::job,
        admin::models,
        admin::promote,
        admin::rollback,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
