//! The OpenAPI document: a frame here, the paths from the handlers'
//! annotations as the router registers them (`http::routes`), served at
//! `/openapi.json`.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Response, ResponseBuilder, content::ContentBuilder};
use utoipa::{Modify, OpenApi};

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
/// routing), added to each operation so the document lists every status a
/// client can see. A group's own answers (the in-flight limit, the admin
/// guard) are added where the group is built (`http::routes`).
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

/// Documents an error answer on `op` unless the handler documents it.
pub(crate) fn add(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| error_response(description));
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
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
            }
        }
    }
}

/// The document's frame: title, the bearer scheme, the error schema. The
/// paths come from the routes as they are registered.
#[derive(OpenApi)]
#[openapi(
    info(title = "churn", description = "Churn prediction API"),
    components(schemas(crate::http::error::ErrorBody)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// The frame the router's routes are added to.
pub(crate) fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document once every route is in: the answers common to all.
pub(crate) fn finish(mut api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    CommonResponses.modify(&mut api);
    api
}
