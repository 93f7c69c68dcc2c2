//! The same Router answers through the AWS Lambda path: an API Gateway event parsed by lambda_http's own
//! request types is served by the router that `serve` would hand to `lambda_http::run`.

use axum::Router;
use axum::routing::post;
use http_body_util::BodyExt;
use tower::ServiceExt;
use vidmp3_runtime::telemetry::{Readiness, instrument};

const API_GATEWAY_V2_EVENT: &str = r#"{
  "version": "2.0",
  "routeKey": "$default",
  "rawPath": "/echo",
  "rawQueryString": "",
  "headers": {"content-type": "text/plain", "x-request-id": "lambda-req-1"},
  "requestContext": {
    "accountId": "123456789012", "apiId": "api", "domainName": "example.com", "domainPrefix": "example",
    "http": {"method": "POST", "path": "/echo", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "test"},
    "requestId": "id", "routeKey": "$default", "stage": "$default", "time": "29/Nov/2026:20:00:00 +0000", "timeEpoch": 1796000000000
  },
  "body": "hello from lambda",
  "isBase64Encoded": false
}"#;

#[tokio::test]
async fn a_router_answers_a_lambda_http_request() {
    let router: Router = instrument(
        Router::new().route(
            "/echo",
            post(|body: String| async move { body.to_uppercase() }),
        ),
        "test",
        Readiness::new(),
    );
    let request =
        lambda_http::request::from_str(API_GATEWAY_V2_EVENT).expect("a valid API Gateway v2 event");
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-request-id"],
        "lambda-req-1",
        "the request id is propagated"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"HELLO FROM LAMBDA");
}

#[tokio::test]
async fn health_routes_answer_through_the_lambda_path_too() {
    let router = instrument(
        Router::new(),
        "test",
        Readiness::new().check("always", || async { Ok(()) }),
    );
    let event = API_GATEWAY_V2_EVENT
        .replace("/echo", "/readyz")
        .replace("\"POST\"", "\"GET\"");
    let response = router
        .oneshot(lambda_http::request::from_str(&event).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["ready"], true);
    assert_eq!(body["checks"]["always"], "ok");
}
