//! The OpenAPI document, generated from the handlers' annotations and
//! served at `/openapi.json`.

use axum::Json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Response, ResponseBuilder, content::ContentBuilder};
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

/// The answers every route can give before its handler runs (intake,
/// load shedding, the admin guard), added to each operation so the
/// document lists every status a client can see.
struct CommonResponses;

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

fn add(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| error_response(description));
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let admin = path.starts_with("/admin/");
            let work = admin || path.starts_with("/predict") || path == "/events";
            let ops = [
                (&mut item.get, false),
                (&mut item.post, true),
                (&mut item.put, true),
                (&mut item.delete, false),
            ];
            for (op, with_body) in ops {
                let Some(op) = op.as_mut() else { continue };
                add(op, "405", "Method not allowed on this route");
                if path.contains('{') {
                    add(op, "400", "Malformed path parameter");
                }
                add(op, "414", "Request URI too long");
                add(op, "431", "Request headers too large");
                if with_body {
                    add(
                        op,
                        "408",
                        "Body not received within server.body_read_timeout_secs",
                    );
                    add(op, "413", "Body larger than server.max_body_bytes");
                }
                if work {
                    add(op, "429", "Too many requests or request bodies in flight");
                }
                if admin {
                    add(op, "401", "Missing or wrong bearer token");
                    add(op, "403", "Admin API disabled (no token configured)");
                }
            }
        }
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
        admin::at_risk,
        admin::monitoring,
        admin::jobs,
        admin::promote,
        admin::rollback,
    ),
    components(schemas(crate::http::error::ErrorBody)),
    modifiers(&BearerAuth, &CommonResponses)
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
