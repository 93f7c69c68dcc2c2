//! `POST /login`: forwards the Basic credentials to auth byte for byte and returns auth's answer.

use std::net::SocketAddr;

use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use vidmp3_runtime::{Problem, forwarded};

use crate::AppState;

/// Proxies to `${AUTH_URL}/login` with the request's `Authorization` and `Accept`, and `X-Forwarded-For` set
/// to the client's address (the TCP peer, or the `X-Forwarded-For` entry our `TRUSTED_PROXY_HOPS`-th proxy
/// appended), so auth's per-client login limit counts each client, not the gateway: without it every client
/// reaching auth through the gateway shared one counter. Entries the client wrote itself are not forwarded:
/// auth (`TRUSTED_PROXY_HOPS=1`) takes the last entry, and a client rotating its own `X-Forwarded-For`
/// stays one client.
#[utoipa::path(post, path = "/login", tag = "auth",
    description = "Forwards HTTP Basic credentials (RFC 7617, UTF-8) to auth byte for byte and returns its answer.",
    responses(
        (status = 200, description = "The JWT as text/plain, or {access_token, token_type, expires_in} with Accept: application/json", content_type = "text/plain", body = String),
        (status = 401, description = "wrong email or password, or malformed credentials", body = vidmp3_runtime::Problem, content_type = "application/problem+json"),
        (status = 429, description = "too many failed logins; see Retry-After", body = vidmp3_runtime::Problem, content_type = "application/problem+json"),
        (status = 503, description = "auth (or its database) did not answer", body = vidmp3_runtime::Problem, content_type = "application/problem+json")
    ),
    security(("basic" = [])))]
pub async fn login(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let mut request = state
        .http
        .post(format!("{}/login", state.settings.auth_url));
    for name in [header::AUTHORIZATION, header::ACCEPT] {
        if let Some(v) = headers.get(&name) {
            request = request.header(name, v);
        }
    }
    // `None` (no header: auth counts the gateway) only when neither is known: under Lambda with
    // TRUSTED_PROXY_HOPS=0.
    let client = forwarded::client_address(
        peer.map(|Extension(ConnectInfo(addr))| addr.ip()),
        &headers,
        state.settings.trusted_proxy_hops,
    );
    if let Some(ip) = client {
        request = request.header("x-forwarded-for", ip.to_string());
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
