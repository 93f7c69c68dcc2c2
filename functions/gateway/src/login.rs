//! `POST /login`: forwards the Basic credentials to auth byte for byte and returns auth's answer.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use vidmp3_runtime::Problem;

use crate::AppState;

/// Proxies to `${AUTH_URL}/login` with the request's `Authorization`, `Accept` and `X-Forwarded-For`.
pub async fn login(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, Problem> {
    let mut request = state
        .http
        .post(format!("{}/login", state.settings.auth_url));
    for name in [
        header::AUTHORIZATION,
        header::ACCEPT,
        header::HeaderName::from_static("x-forwarded-for"),
    ] {
        if let Some(v) = headers.get(&name) {
            request = request.header(name, v);
        }
    }
    let answer = request.send().await.map_err(|e| {
        tracing::warn!(error = %e, "auth unreachable");
        Problem::unavailable("the login service is not answering; try again shortly")
    })?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = Response::builder().status(status);
    for name in [
        header::CONTENT_TYPE,
        header::RETRY_AFTER,
        header::WWW_AUTHENTICATE,
    ] {
        if let Some(v) = answer.headers().get(name.as_str()) {
            response = response.header(name, v.as_bytes());
        }
    }
    let body = answer
        .bytes()
        .await
        .map_err(|_| Problem::unavailable("the login service broke off its answer"))?;
    Ok(response
        .body(Body::from(body))
        .unwrap_or_else(|_| Problem::internal().into_response()))
}
