//! The JSON log lines of `telemetry::init_tracing` carry the request id of the request they were logged in.
//! Alone in its test binary: the tracing subscriber is process-wide.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::Request;
use tower::ServiceExt;
use vidmp3_runtime::telemetry::{Readiness, init_tracing_with_writer, instrument};

/// Collects every line the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

#[tokio::test]
async fn log_lines_carry_the_request_id_generated_or_given() {
    let captured = Captured::default();
    let writer = captured.clone();
    init_tracing_with_writer(move || writer.clone(), false);
    let router = instrument(
        Router::new().route(
            "/work",
            get(|| async {
                tracing::info!(answer = 42, "did the work");
                "done"
            }),
        ),
        "logtest",
        Readiness::new(),
    );
    let generated = router
        .clone()
        .oneshot(Request::get("/work").body(Body::empty()).unwrap())
        .await
        .unwrap()
        .headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    router
        .oneshot(
            Request::get("/work")
                .header("x-request-id", "given-id-7")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let lines = captured.lines();
    for id in [generated.as_str(), "given-id-7"] {
        let line = lines
            .iter()
            .find(|l| l["message"] == "did the work" && l["span"]["request_id"] == id)
            .unwrap_or_else(|| panic!("no log line with request_id {id} in {lines:#?}"));
        assert_eq!(line["span"]["service"], "logtest");
        assert_eq!(line["span"]["path"], "/work");
        assert_eq!(line["answer"], 42);
        assert_eq!(line["level"], "INFO");
    }
}
