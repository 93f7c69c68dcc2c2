//! JobSink mode: the same conversion as `POST /`, for videos longer than a request may last. Knative's
//! JobSink starts one Job per event and mounts the event (structured JSON) at `/etc/jobsink-event/event`.

use std::path::Path;

use vidmp3_runtime::events;

use crate::service::{AppState, handle};

/// Converts the event at `event_path` and POSTs the reply to `sink`. Returns the process exit status, which
/// decides whether the Job controller runs the Job again:
/// - 0: done: converted, failed for good (the `conversion.failed` reply is posted), nothing to do, or an
///   event that can never succeed (bad data, unknown job, and an event file that cannot be read or is not
///   a structured CloudEvent: a rerun mounts the same file). The last ones are logged as one `error` line
///   naming the file and the reason, and post nothing (there is no job to report on);
/// - 1: transient (MongoDB or local disk unavailable, another converter's live lease, `K_SINK` not
///   accepting the reply): a rerun converts or repeats the reply.
pub async fn run(state: &AppState, event_path: &Path, sink: &str) -> i32 {
    let event = match read_event(event_path) {
        Ok(event) => event,
        Err(reason) => {
            tracing::error!(path = %event_path.display(), error = %reason, "the event file can never be converted; not retrying");
            return 0;
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

/// Reads a structured-mode CloudEvent (JSON) from `path`.
fn read_event(path: &Path) -> Result<cloudevents::Event, String> {
    let raw = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    serde_json::from_slice(&raw).map_err(|e| format!("not a structured CloudEvent: {e}"))
}
