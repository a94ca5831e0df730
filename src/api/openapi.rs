//! The OpenAPI 3.1 document of the API, generated from the handlers' annotations and the wire
//! types, so it cannot drift from the code: served at `GET /openapi.json`, checked against the
//! router in `src/api/tests.rs`, and used by schemathesis against the live service (tests/e2e).

use std::sync::OnceLock;

use axum::Json;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{Modify, OpenApi};

use super::error::ErrorBody;
use super::{conversations, handlers};

/// Name of the `X-API-Key` security scheme in the document (also spelled out in `security`).
pub const API_KEY_SCHEME: &str = "api_key";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "runtime-api",
        description = "OpenHands Remote Runtime API: isolated, pausable agent sandboxes on Kubernetes or as local processes. \
            Every error, whatever its status, is a JSON `ErrorBody`."
    ),
    paths(
        handlers::start, handlers::stop, handlers::pause, handlers::resume, handlers::list,
        handlers::get_runtime, handlers::sessions_batch, conversations::batch_conversations,
        handlers::get_session,
        handlers::registry_prefix, handlers::image_exists, handlers::build, handlers::build_status,
        handlers::health, handlers::livez, handlers::readyz, handlers::metrics, openapi_json,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Conventions),
    security(("api_key" = [])),
)]
struct ApiDoc;

/// What applies to the whole API rather than to one handler: the key's scheme, and the
/// rejections any request can meet before its handler (an over-long target or header section).
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            API_KEY_SCHEME,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        let error = || {
            utoipa::openapi::ResponseBuilder::new().content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("ErrorBody"))))
                    .build(),
            )
        };
        for item in doc.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post].into_iter().flatten() {
                let responses = &mut op.responses.responses;
                for (status, text) in
                    [("414", "Request target too long"), ("431", "Request headers too large")]
                {
                    responses
                        .entry(status.into())
                        .or_insert_with(|| RefOr::T(error().description(text).build()));
                }
            }
        }
    }
}

/// The document, built once.
pub fn document() -> &'static Document {
    static DOC: OnceLock<Document> = OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "health", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object)))]
pub async fn openapi_json() -> Response {
    ([(CONTENT_TYPE, "application/json")], Json(document())).into_response()
}
