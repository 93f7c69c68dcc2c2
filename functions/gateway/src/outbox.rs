//! The outbox for `video.uploaded` events: a job remembers (`event_pending`) that the Broker has not yet
//! accepted its event, and whoever sends it first claims it (`event_claim_until`, a conditional update), so the
//! event is neither lost when `K_SINK` is down nor sent twice at once. `POST /internal/redeliver` re-sends what
//! is pending; a PingSource calls it in the cluster, a timer in the dev stack.

use axum::Json;
use axum::extract::State;
use mongodb::bson::{DateTime, doc};
use serde::{Deserialize, Serialize};
use vidmp3_runtime::events::{self, VideoUploaded};
use vidmp3_runtime::jobs::{self, Job};

use crate::AppState;

/// How long a sender holds a job's outbox claim, in milliseconds (30 s).
///
/// Three times [`SEND_TIMEOUT`]: a sender gives up on a sink that does not answer long before its claim
/// ends, so a concurrent `POST /internal/redeliver` can never find the claim expired while the event is
/// still on its way (which would send it twice).
pub const CLAIM_MS: i64 = 30_000;
/// The longest one POST of an event to `K_SINK` may take, connect included (10 s); shorter than the HTTP
/// client's own timeout, which serves the calls to auth as well.
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Most events re-sent by one `POST /internal/redeliver`.
pub const REDELIVER_BATCH: usize = 100;

/// The `video.uploaded` data for `job`.
pub fn uploaded_event(job: &Job) -> VideoUploaded {
    VideoUploaded {
        job_id: job.id.clone(),
        video_id: job.video_id.map(|v| v.to_hex()).unwrap_or_default(),
        owner: job.owner_email.clone(),
        filename: job.filename.clone(),
        content_type: job.content_type.clone(),
        size_bytes: u64::try_from(job.size_bytes).unwrap_or(0),
        output: job.output,
    }
}

/// Sends the event of a job whose claim the caller holds; marks it sent on success, releases the claim on
/// failure. Returns whether the sink accepted it.
pub async fn send_claimed(state: &AppState, job: &Job) -> bool {
    let collection = jobs::jobs(&state.db);
    let Some(sink) = state.settings.sink.as_deref() else {
        tracing::warn!(job_id = %job.id, "K_SINK is not set: the event stays pending");
        return false;
    };
    let sending = events::send(&state.http, sink, events::to_event(&uploaded_event(job)));
    let sent = match tokio::time::timeout(SEND_TIMEOUT, sending).await {
        Ok(sent) => sent,
        Err(_) => Err(events::SendError::Unreachable(format!(
            "no answer within {} s",
            SEND_TIMEOUT.as_secs()
        ))),
    };
    match sent {
        Ok(()) => {
            let sent = doc! {"$set": {"event_pending": false, "updated_at": DateTime::now()}, "$unset": {"event_claim_until": ""}};
            if let Err(e) = collection
                .update_one(doc! {"_id": &job.id, "event_pending": true}, sent)
                .await
            {
                // The event went out; a later redelivery may send it again, which consumers tolerate (idempotent).
                tracing::warn!(job_id = %job.id, error = %e, "event sent but not marked sent");
            }
            metrics::counter!("gateway_events_total", "outcome" => "sent").increment(1);
            true
        }
        Err(e) => {
            tracing::warn!(job_id = %job.id, error = %e, "event not accepted by the sink: kept pending");
            let release = doc! {"$set": {"event_claim_until": DateTime::now()}};
            drop(collection.update_one(doc! {"_id": &job.id}, release).await);
            metrics::counter!("gateway_events_total", "outcome" => "pending").increment(1);
            false
        }
    }
}

/// Answer of `POST /internal/redeliver`.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RedeliverReport {
    /// Events the sink accepted.
    pub sent: u32,
    /// Events it did not (still pending).
    pub failed: u32,
}

/// Re-sends the pending `video.uploaded` events, up to 100 a call (`REDELIVER_BATCH`); stops at the first refusal (the sink is
/// down: hammering it helps nobody).
#[utoipa::path(post, path = "/internal/redeliver", tag = "internal", description = "Re-sends pending video.uploaded events (called by a PingSource / the dev stack's timer).",
    responses((status = 200, body = crate::outbox::RedeliverReport)))]
pub async fn redeliver(State(state): State<AppState>) -> Json<RedeliverReport> {
    let collection = jobs::jobs(&state.db);
    let mut report = RedeliverReport::default();
    for _ in 0..REDELIVER_BATCH {
        let now = DateTime::now();
        let until = DateTime::from_millis(now.timestamp_millis() + CLAIM_MS);
        let filter = doc! {
            "event_pending": true,
            "$or": [{"event_claim_until": null}, {"event_claim_until": {"$lt": now}}],
        };
        let claimed = match collection
            .find_one_and_update(filter, doc! {"$set": {"event_claim_until": until}})
            .await
        {
            Ok(Some(job)) => job,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "redelivery: MongoDB unavailable");
                break;
            }
        };
        if send_claimed(&state, &claimed).await {
            report.sent += 1;
        } else {
            report.failed += 1;
            break;
        }
    }
    if report.sent + report.failed > 0 {
        tracing::info!(sent = report.sent, failed = report.failed, "redelivery");
    }
    Json(report)
}
