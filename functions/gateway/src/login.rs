//! `POST /login`: forwards the Basic credentials to auth byte for byte and returns auth's answer.

use std::net::{IpAddr, SocketAddr};

use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use vidmp3_runtime::Problem;

use crate::AppState;

/// Proxies to `${AUTH_URL}/login` with the request's `Authorization` and `Accept`, and `X-Forwarded-For` with
/// the client's address appended (as a proxy does), so auth's per-client login limit counts each client, not
/// the gateway: without it every client reaching auth through the gateway shared one counter, and five
/// failed logins from anyone locked everybody out.
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
    let forwarded = forwarded_for(
        headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()),
        peer.map(|Extension(ConnectInfo(addr))| addr.ip()),
    );
    if let Some(v) = forwarded {
        request = request.header("x-forwarded-for", v);
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

/// `X-Forwarded-For` for the request to auth: the incoming value with the peer's address appended, the
/// peer's address alone, or the incoming value alone when the peer is unknown (under Lambda).
fn forwarded_for(incoming: Option<&str>, peer: Option<IpAddr>) -> Option<String> {
    let incoming = incoming.map(str::trim).filter(|v| !v.is_empty());
    match (incoming, peer) {
        (Some(chain), Some(ip)) => Some(format!("{chain}, {ip}")),
        (None, Some(ip)) => Some(ip.to_string()),
        (Some(chain), None) => Some(chain.to_owned()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::forwarded_for;

    #[test]
    fn the_peer_is_appended_to_x_forwarded_for() {
        let peer = Some("192.0.2.7".parse().unwrap());
        assert_eq!(forwarded_for(None, peer).as_deref(), Some("192.0.2.7"));
        assert_eq!(
            forwarded_for(Some("203.0.113.1"), peer).as_deref(),
            Some("203.0.113.1, 192.0.2.7")
        );
        assert_eq!(forwarded_for(Some(" "), peer).as_deref(), Some("192.0.2.7"));
        assert_eq!(
            forwarded_for(Some("203.0.113.1"), None).as_deref(),
            Some("203.0.113.1")
        );
        assert_eq!(forwarded_for(None, None), None);
    }
}
