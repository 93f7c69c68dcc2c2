//! JobSink mode: the same conversion as `POST /`, for videos longer than a request may last. Knative's
//! JobSink starts one Job per event and mounts the event (structured JSON) at `/etc/jobsink-event/event`.

use std::path::Path;

use vidmp3_runtime::events;

use crate::service::{AppState, handle};

/// Converts the event at `event_path` and POSTs the reply to `sink`. Returns the process exit status:
/// 0 when done (converted, failed for good, or nothing to do), 1 for transient failures (the Job is retried),
/// 2 for an unreadable event file.
pub async fn run(state: &AppState, event_path: &Path, sink: &str) -> i32 {
    let raw = match std::fs::read(event_path) {
        Ok(raw) => raw,
        Err(e) => {
            tracing::error!(path = %event_path.display(), error = %e, "cannot read the event file");
            return 2;
        }
    };
    let event: cloudevents::Event = match serde_json::from_slice(&raw) {
        Ok(event) => event,
        Err(e) => {
            tracing::error!(error = %e, "the event file is not a structured CloudEvent");
            return 2;
        }
    };
    match handle(state, &event).await {
        Ok(Some(reply)) => {
            let client = reqwest::Client::new();
            match events::send(&client, sink, reply).await {
                Ok(()) => 0,
                Err(e) => {
                    tracing::warn!(error = %e, "result event not delivered");
                    1
                }
            }
        }
        Ok(None) => 0,
        Err(problem) if problem.status >= 500 || problem.status == 409 => {
            tracing::warn!(%problem, "transient failure");
            1
        }
        Err(problem) => {
            tracing::error!(%problem, "the event can never succeed");
            0
        }
    }
}
