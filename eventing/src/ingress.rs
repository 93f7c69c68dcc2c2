//! The Broker ingress (`POST /<namespace>/<broker>`) and health endpoints.
//!
//! Accepts a CloudEvent in binary or structured content mode (CloudEvents HTTP protocol binding
//! 1.0 §3.1/§3.2) and answers:
//! - `202 Accepted` (empty body) once RabbitMQ has confirmed the persistent message
//!   (publisher confirm) — the event is then safe across a RabbitMQ restart;
//! - `400` (problem+json) for a body that is not a valid CloudEvent;
//! - `404` (problem+json) for a namespace/broker pair with no Broker manifest;
//! - `413` (problem+json) for a body over the configured limit (default 256 KiB);
//! - `503` (problem+json, `Retry-After: 1`) while not connected to RabbitMQ or when the publish
//!   was not confirmed: the client should retry (the event may then be stored twice — delivery is
//!   at least once anyway).
//!
//! `GET /healthz` is always `200 ok`; `GET /readyz` is `200` when connected to RabbitMQ, else `503`.

use crate::message::StoredEvent;
use crate::runner::Shared;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use http_body_util::BodyExt;
use std::sync::Arc;

/// An RFC 9457 problem+json response.
pub(crate) fn problem(status: StatusCode, detail: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    let mut resp = (
        status,
        [(http::header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    }
    resp
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/{namespace}/{broker}", post(ingest))
        .with_state(shared)
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.current_session().is_some() {
        "ready".into_response()
    } else {
        problem(StatusCode::SERVICE_UNAVAILABLE, "not connected to RabbitMQ")
    }
}

async fn ingest(
    State(shared): State<Arc<Shared>>,
    Path((namespace, broker)): Path<(String, String)>,
    request: Request,
) -> Response {
    let Some(exchange) = shared.exchange_for(&namespace, &broker) else {
        return problem(
            StatusCode::NOT_FOUND,
            format!("no Broker {namespace}/{broker} in the manifests"),
        );
    };
    let limit = shared.max_body_bytes;
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("event body over {limit} bytes; events carry ids, never media"),
        )
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let bytes = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("reading body: {e}")),
    };
    let event = match cloudevents::binding::http::to_event(&parts.headers, bytes.to_vec()) {
        Ok(ev) => ev,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                format!("not a valid CloudEvent (binary or structured mode): {e}"),
            );
        }
    };
    let stored = StoredEvent::from_event(&event);
    let Some(session) = shared.current_session() else {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "not connected to RabbitMQ");
    };
    match session.publish(exchange, "", &stored).await {
        Ok(()) => {
            tracing::debug!(id = stored.id(), r#type = stored.ty(), %namespace, %broker, "event accepted");
            Response::builder()
                .status(StatusCode::ACCEPTED)
                .body(Body::empty())
                .unwrap_or_default()
        }
        Err(e) => {
            tracing::warn!(error = %e, id = stored.id(), "publishing an incoming event failed");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("event not stored: {e}"),
            )
        }
    }
}
