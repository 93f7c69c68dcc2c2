//! `GET /openapi.json`: the gateway's OpenAPI 3.1 document, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "vidmp3 gateway", description = "Upload a video, get an MP3 back. Errors are application/problem+json (RFC 9457) with a stable `code`."),
    paths(
        crate::login::login,
        crate::upload::upload,
        crate::jobs_api::list,
        crate::jobs_api::get,
        crate::jobs_api::delete,
        crate::download::job_mp3,
        crate::download::by_file_id,
        crate::outbox::redeliver,
        healthz,
        readyz,
        metrics,
        openapi_json,
        page,
        asset,
    ),
    components(schemas(vidmp3_runtime::Problem, vidmp3_runtime::jobs::JobState, vidmp3_runtime::events::OutputOptions)),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

/// Serves the document.
pub async fn serve_openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

// The routes every function gets from `vidmp3_runtime::telemetry::instrument`, described here.
#[allow(dead_code)]
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive", body = serde_json::Value)))]
fn healthz() {}

#[allow(dead_code)]
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "MongoDB answers", body = serde_json::Value),
    (status = 503, description = "a dependency does not answer", body = serde_json::Value)))]
fn readyz() {}

#[allow(dead_code)]
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
fn metrics() {}

#[allow(dead_code)]
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "this document", body = serde_json::Value)))]
fn openapi_json() {}

// The web page (`crate::web::routes`): served from embedded files in a loop, so described here.
#[allow(dead_code)]
#[utoipa::path(get, path = "/", tag = "page", description = "The web page: log in, upload, follow the jobs, download. Revalidated with its ETag.",
    responses(
        (status = 200, description = "the page", content_type = "text/html", body = String),
        (status = 304, description = "If-None-Match names the current version")))]
fn page() {}

#[allow(dead_code)]
#[utoipa::path(get, path = "/assets/{file}", tag = "page", description = "The page's script, style sheet and icon. Revalidated with their ETags.",
    params(("file" = String, Path, description = "`app.js`, `app.css` or `icon.svg`")),
    responses(
        (status = 200, description = "the file (text/javascript, text/css or image/svg+xml)", body = String),
        (status = 304, description = "If-None-Match names the current version"),
        (status = 404, description = "no such file", body = vidmp3_runtime::Problem, content_type = "application/problem+json")))]
fn asset() {}
