//! What `telemetry::instrument` adds to every function's router: request ids, the latency histogram in
//! `/metrics`, and problem+json answers for unknown routes and methods.

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use vidmp3_runtime::telemetry::{Readiness, instrument};

fn app() -> Router {
    instrument(
        Router::new()
            .route("/hello", get(|| async { "hello" }))
            .route("/things/{id}", post(|| async { "made" })),
        "test",
        Readiness::new(),
    )
}

async fn send(router: &Router, request: Request<Body>) -> (http::response::Parts, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts, String::from_utf8(bytes.to_vec()).unwrap())
}

fn get_request(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn a_request_without_an_id_gets_a_new_uuid_in_the_response() {
    let router = app();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (parts, _) = send(&router, get_request("/hello")).await;
        assert_eq!(parts.status, StatusCode::OK);
        let id = parts.headers["x-request-id"].to_str().unwrap().to_owned();
        uuid::Uuid::parse_str(&id).unwrap_or_else(|e| panic!("{id:?} is not a UUID: {e}"));
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1], "each request gets its own id");
    // An id the caller sends is kept (so a proxy's id follows the request through the logs).
    let (parts, _) = send(
        &router,
        Request::get("/hello")
            .header("x-request-id", "caller-chosen-1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(parts.headers["x-request-id"], "caller-chosen-1");
}

#[tokio::test]
async fn metrics_expose_a_latency_histogram_per_route_template() {
    let router = app();
    send(&router, get_request("/hello")).await;
    send(
        &router,
        Request::post("/things/42").body(Body::empty()).unwrap(),
    )
    .await;
    let (parts, text) = send(&router, get_request("/metrics")).await;
    assert_eq!(parts.status, StatusCode::OK);
    let bucket_lines = |route: &str| -> Vec<String> {
        text.lines()
            .filter(|l| {
                l.starts_with("http_request_duration_seconds_bucket{")
                    && l.contains(&format!("route=\"{route}\""))
            })
            .map(str::to_owned)
            .collect()
    };
    let hello = bucket_lines("/hello");
    assert!(
        hello.iter().any(|l| l.contains("le=\"0.005\""))
            && hello.iter().any(|l| l.contains("le=\"+Inf\"")),
        "no histogram buckets for /hello in:\n{text}"
    );
    let inf = hello
        .iter()
        .find(|l| l.contains("le=\"+Inf\"") && l.contains("status=\"200\""))
        .expect("a +Inf bucket for GET /hello 200");
    let count: f64 = inf.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0, "{inf}");
    // The label is the route template, never the raw path (bounded label values).
    assert!(!bucket_lines("/things/{id}").is_empty(), "{text}");
    assert!(bucket_lines("/things/42").is_empty(), "{text}");
    assert!(
        text.contains("http_request_duration_seconds_count{")
            && text.contains("http_request_duration_seconds_sum{"),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems_with_stable_codes() {
    let router = app();
    for (request, status, code) in [
        (get_request("/nope"), StatusCode::NOT_FOUND, "not_found"),
        (
            Request::post("/hello").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            get_request("/things/1"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Request::delete("/healthz").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ] {
        let what = format!("{} {}", request.method(), request.uri());
        let (parts, body) = send(&router, request).await;
        assert_eq!(parts.status, status, "{what}");
        assert_eq!(
            parts.headers["content-type"], "application/problem+json",
            "{what}"
        );
        let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["code"], code, "{what}");
        assert_eq!(problem["status"], status.as_u16(), "{what}");
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert!(parts.headers.contains_key("allow"), "{what}: Allow is kept");
        }
    }
}
