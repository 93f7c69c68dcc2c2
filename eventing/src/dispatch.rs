//! Delivery of one event to one subscriber, with the Knative retry rules.
//!
//! Knative eventing delivery spec (`duckv1.DeliverySpec`, as implemented by
//! `kncloudevents` and the eventing-rabbitmq dispatcher):
//! - every attempt is an HTTP `POST` in binary content mode with `Prefer: reply`, limited by
//!   `timeout` when set;
//! - 2xx is success; if the response carries a CloudEvent (binary `ce-specversion` header, or
//!   structured `application/cloudevents+json`) it is a *reply* for the Broker;
//! - no response (connection error, timeout), 404, 408, 409, 429 and 5xx are retried, up to
//!   `retry` times, waiting [`DeliverySpec::backoff`] before retry `n`;
//! - any other status (1xx, 3xx — redirects are not followed —, other 4xx) fails at once;
//! - no delivery spec means a single attempt.

use crate::manifest::DeliverySpec;
use crate::message::StoredEvent;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use url::Url;

/// The header asking the subscriber for a reply event (Knative sends it on every delivery).
pub const PREFER_REPLY: (&str, &str) = ("prefer", "reply");

/// The result of delivering one event (after all retries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The subscriber answered 2xx; `reply` is the event it answered with, if any.
    Delivered {
        /// The reply event, to be published to the Broker.
        reply: Option<StoredEvent>,
    },
    /// The last attempt failed (retries exhausted or a non-retryable status).
    Failed {
        /// The last HTTP status, 0 when there was no response.
        status: u16,
        /// The last response body (or `dispatch error: ...` when there was no response),
        /// truncated to 1 KiB.
        body: Vec<u8>,
        /// How many attempts were made.
        attempts: u32,
    },
    /// Stopped between attempts (shutdown or connection loss); the message must be requeued.
    Interrupted,
}

/// Whether a response status is retried (Knative's retryable set: 404, 408, 409, 429, 5xx).
pub fn is_retryable(status: u16) -> bool {
    matches!(status, 404 | 408 | 409 | 429) || (500..600).contains(&status)
}

enum Attempt {
    Success(Option<StoredEvent>),
    Retry { status: u16, body: Vec<u8> },
    Final { status: u16, body: Vec<u8> },
}

/// Sends `event` to `url` according to `delivery`, retrying as described in the
/// [module docs](self). `stop` interrupts the wait between attempts (never an attempt in
/// flight). `max_reply_bytes` caps the size of a reply event's body.
pub async fn deliver(
    client: &reqwest::Client,
    url: &Url,
    event: &StoredEvent,
    delivery: Option<&DeliverySpec>,
    stop: &CancellationToken,
    max_reply_bytes: usize,
) -> Outcome {
    let retries = delivery.map_or(0, |d| d.retry);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let result = attempt_once(
            client,
            url,
            event,
            delivery.and_then(|d| d.timeout),
            max_reply_bytes,
        )
        .await;
        match result {
            Attempt::Success(reply) => return Outcome::Delivered { reply },
            Attempt::Final { status, body } => {
                return Outcome::Failed {
                    status,
                    body,
                    attempts: attempt,
                };
            }
            Attempt::Retry { status, body } => {
                let retry_number = attempt; // retry n follows attempt n
                if retry_number > retries {
                    return Outcome::Failed {
                        status,
                        body,
                        attempts: attempt,
                    };
                }
                let wait = delivery.map_or(Duration::ZERO, |d| d.backoff(retry_number));
                tracing::info!(
                    id = event.id(),
                    r#type = event.ty(),
                    %url,
                    status,
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    "delivery failed, retrying"
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => return Outcome::Interrupted,
                }
            }
        }
    }
}

async fn attempt_once(
    client: &reqwest::Client,
    url: &Url,
    event: &StoredEvent,
    timeout: Option<Duration>,
    max_reply_bytes: usize,
) -> Attempt {
    let mut req = client
        .post(url.clone())
        .headers(event.http_headers())
        .header(PREFER_REPLY.0, PREFER_REPLY.1)
        .body(event.data.clone());
    if let Some(t) = timeout {
        req = req.timeout(t);
    }
    let work = async {
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry {
                    status: 0,
                    body: format!("dispatch error: {}", error_chain(&e)).into_bytes(),
                };
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if (200..300).contains(&status) {
            let is_event = headers.contains_key("ce-specversion")
                || headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("application/cloudevents+json"));
            let body = match read_capped(resp, max_reply_bytes + 1).await {
                Ok(b) => b,
                Err(e) if is_event => {
                    return Attempt::Retry {
                        status: 0,
                        body: format!("reading reply: {}", error_chain(&e)).into_bytes(),
                    };
                }
                Err(_) => Vec::new(),
            };
            if !is_event {
                return Attempt::Success(None);
            }
            if body.len() > max_reply_bytes {
                return Attempt::Final {
                    status,
                    body: format!("reply event larger than {max_reply_bytes} bytes").into_bytes(),
                };
            }
            return match cloudevents::binding::http::to_event(&headers, body) {
                Ok(ev) => Attempt::Success(Some(StoredEvent::from_event(&ev))),
                Err(e) => Attempt::Final {
                    status,
                    body: format!("invalid reply event: {e}").into_bytes(),
                },
            };
        }
        let body = read_capped(resp, 1024).await.unwrap_or_default();
        if is_retryable(status) {
            Attempt::Retry { status, body }
        } else {
            Attempt::Final { status, body }
        }
    };
    match timeout {
        // The request timeout covers sending and the body; this also bounds reading a reply.
        Some(t) => tokio::time::timeout(t + Duration::from_millis(50), work)
            .await
            .unwrap_or_else(|_| Attempt::Retry {
                status: 0,
                body: format!("dispatch error: timed out after {t:?}").into_bytes(),
            }),
        None => work.await,
    }
}

/// Reads at most `cap` bytes of a response body.
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = cap - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= cap {
            break;
        }
    }
    Ok(out)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_set_is_knatives() {
        for s in [404, 408, 409, 429, 500, 502, 503, 599] {
            assert!(is_retryable(s), "{s}");
        }
        for s in [200, 301, 400, 401, 403, 405, 410, 413, 422] {
            assert!(!is_retryable(s), "{s}");
        }
    }
}
