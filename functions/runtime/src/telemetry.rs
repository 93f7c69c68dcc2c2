//! Logs, request ids, metrics and the health endpoints every function serves.
//!
//! [`instrument`] wraps a function's router with: `x-request-id` (taken from the request or a new UUID, echoed
//! in the response, and recorded on the request's span), a trace span per request, Prometheus metrics
//! (`http_requests_total{method,route,status}` and `http_request_duration_seconds`), and the routes
//! `GET /healthz` (alive), `GET /readyz` (dependencies answer) and `GET /metrics` (Prometheus text format).
//! A path no route matches is a 404 `not_found` problem and a method a route does not take a 405
//! `method_not_allowed` problem (with `Allow`), instead of axum's empty answers.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Starts the global tracing subscriber: JSON lines by default (`LOG_FORMAT=json`), `LOG_FORMAT=text` for
/// humans (coloured only when stdout is a terminal); the filter comes from `RUST_LOG` (default `info`).
/// Any other `LOG_FORMAT` stops the process like every malformed setting ([`crate::config::or_exit`]).
/// Calling it twice is harmless. Lines go to stdout.
pub fn init_tracing() {
    use std::io::IsTerminal;
    init_tracing_with_writer(std::io::stdout, std::io::stdout().is_terminal());
}

/// [`init_tracing`] writing to `writer` instead of stdout (tests capture the lines with it); `ansi` colours
/// text lines.
pub fn init_tracing_with_writer<W>(writer: W, ansi: bool)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::EnvFilter;
    let text = crate::config::or_exit(match std::env::var("LOG_FORMAT").as_deref() {
        Err(_) | Ok("json") => Ok(false),
        Ok("text") => Ok(true),
        Ok(other) => Err(crate::config::ConfigError::new(
            "LOG_FORMAT",
            format!("must be json or text, got {other:?}"),
        )),
    });
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer);
    let result = if text {
        builder.with_ansi(ansi).try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    };
    drop(result);
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "http_request_duration_seconds".into(),
                    ),
                    &[
                        0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0,
                    ],
                )
                .expect("static buckets are valid")
                .install_recorder()
                .expect("the Prometheus recorder is installed once")
        })
        .clone()
}

type CheckFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The dependency checks behind `GET /readyz`, each bounded by a timeout.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, CheckFn)>,
}

impl Readiness {
    /// No checks: always ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a named check; it fails when it errors or takes longer than 3 s.
    pub fn check<F, Fut>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks
            .push((name, Arc::new(move || Box::pin(check()))));
        self
    }

    /// Runs every check concurrently: `(all passed, {name: "ok" | error})`.
    pub async fn run(&self) -> (bool, serde_json::Map<String, serde_json::Value>) {
        let results = futures::future::join_all(self.checks.iter().map(|(name, check)| {
            let fut = check();
            async move {
                let outcome = match tokio::time::timeout(Duration::from_secs(3), fut).await {
                    Ok(r) => r,
                    Err(_) => Err("timed out after 3 s".to_owned()),
                };
                (*name, outcome)
            }
        }))
        .await;
        let ok = results.iter().all(|(_, r)| r.is_ok());
        let map = results
            .into_iter()
            .map(|(n, r)| {
                (
                    n.to_owned(),
                    serde_json::Value::String(r.err().unwrap_or_else(|| "ok".into())),
                )
            })
            .collect();
        (ok, map)
    }
}

/// Wraps `router` with request ids, tracing, metrics and the `/healthz`, `/readyz`, `/metrics` routes, and
/// answers unknown paths with [`route_not_found`] and unsupported methods with [`method_not_allowed`]. This
/// replaces any fallback `router` set: a function that needs another one must wrap the result instead.
///
/// `service` names the function in logs (`service` field).
pub fn instrument(router: Router, service: &'static str, readiness: Readiness) -> Router {
    let handle = metrics_handle();
    let ops = Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz).with_state(readiness))
        .route("/metrics", get(move || std::future::ready(handle.render())));
    router
        .merge(ops)
        // Applies to the routes registered so far, hence after the merge.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(route_not_found)
        .layer(middleware::from_fn(record_metrics))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(move |req: &Request| {
            let request_id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", service, method = %req.method(), path = %req.uri().path(), request_id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// 404 `not_found` problem ("no such route"): what [`instrument`] answers for a path no route matches.
pub async fn route_not_found() -> crate::Problem {
    crate::Problem::not_found("no such route")
}

/// 405 `method_not_allowed` problem naming the method: what [`instrument`] answers when a route exists but
/// does not take the request's method (axum adds the `Allow` header listing the methods it takes).
pub async fn method_not_allowed(method: Method) -> crate::Problem {
    crate::Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this route does not answer {method}"),
    )
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    let (ok, checks) = readiness.run().await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({"ready": ok, "checks": checks})),
    )
        .into_response()
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req.route_label();
    let method = req.method().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

trait RouteLabel {
    fn route_label(&self) -> String;
}

impl RouteLabel for Request {
    /// The matched route template (`/jobs/{id}`), never the raw path, so labels stay bounded.
    fn route_label(&self) -> String {
        self.extensions()
            .get::<MatchedPath>()
            .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned())
    }
}
