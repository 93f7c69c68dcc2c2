//! The converter's HTTP side: `POST /` takes a `dev.vidmp3.video.uploaded` CloudEvent (binary or
//! structured), converts inside the request (work after the response is not safe under scale-to-zero), and
//! answers 200 with a `dev.vidmp3.audio.converted` or `dev.vidmp3.conversion.failed` CloudEvent: a Knative
//! reply, which the Broker routes to the notification function.
//!
//! Answers:
//! - 200 + `audio.converted` / `conversion.failed`: done, including for a redelivered event of a job already
//!   finished (the reply is repeated so a reply lost on the way is not lost for good; notification dedupes);
//! - 200 without a body: nothing to do (the job was deleted while converting);
//! - 409: another converter holds a live lease on the job. Retryable, not 200: the holder may still finish
//!   (then a retry gets the 200 reply above) or die (then its lease expires within [`LEASE_MS`] and a retry
//!   takes the job over); a 200 now would end the delivery with no reply if the holder dies;
//! - 503: MongoDB or local disk unavailable (retryable; the lease is released first);
//! - 400 / 422: an event that can never succeed (wrong type, bad data, unknown job): final.
//!
//! State changes are conditional updates on the job (`uploaded → converting` with a lease, `converting →
//! converted | failed`), so a duplicate delivery never produces a second MP3.
//!
//! Once a conversion slot is taken, the work (claim, spool, transcode, store, finish) runs in a task of its
//! own that the request awaits: a caller that goes away mid-conversion (the Broker's per-attempt timeout
//! closes the connection and axum drops the request's future) does not stop it, the job still ends
//! `converted` or `failed`, and the redelivery gets the repeated reply.
//!
//! Encoding options: the event's `data.output` when it sets one, else the job's `output` (what the upload
//! asked for). The gateway writes the same options into both; the event wins so a replayed or hand-made
//! event can ask for another encoding. When neither sets `bitrate_kbps` nor `vbr_quality` (both absent is
//! the only "default" case: an explicit `vbr_quality: 2` counts as given), an MP3 source is stream-copied
//! and anything else is encoded VBR quality 2; when either sets one, every source, MP3 included, is
//! re-encoded with it (see [`transcode::TranscodeOptions::encoding`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cloudevents::Event;
use futures::AsyncWriteExt;
use mongodb::Database;
use mongodb::bson::{Bson, DateTime, doc, oid::ObjectId};
use mongodb::gridfs::GridFsBucket;
use mongodb::options::ReturnDocument;
use tokio::sync::Semaphore;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tokio_util::task::AbortOnDropHandle;
use vidmp3_runtime::config::{ConfigError, Env, MongoSettings};
use vidmp3_runtime::events::{
    self, AudioConverted, ConversionFailed, OutputOptions, VideoUploaded,
};
use vidmp3_runtime::jobs::{self, Job, JobState, MP3S_BUCKET, VIDEOS_BUCKET};
use vidmp3_runtime::{Problem, db, telemetry};

use crate::transcode::{self, Encoding, TranscodeError, TranscodeOptions};

/// A converter's lease on a job, renewed about once a second while it works, in milliseconds.
pub const LEASE_MS: i64 = 15_000;

/// Settings read from the environment at start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `MONGODB_URI`, `MONGODB_DATABASE`.
    pub mongo: MongoSettings,
    /// `CONVERT_CONCURRENCY`: conversions at once, each from its claim to its end (spool, transcode, store,
    /// finish) (default: the CPU count).
    pub concurrency: usize,
    /// `MAX_DURATION_S`: longest audio converted, in seconds (default 14400 = 4 h).
    pub max_duration_s: f64,
    /// `TMPDIR`-like scratch directory for the video and the MP3 (`CONVERT_TMPDIR`, default the system's).
    pub tmp_dir: PathBuf,
    /// `DB_CONNECT_TIMEOUT_SECONDS` (default 5).
    pub db_connect_timeout: Duration,
}

impl Settings {
    /// Reads and checks the settings.
    ///
    /// # Errors
    /// The first variable that is missing or malformed.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let concurrency = env.or("CONVERT_CONCURRENCY", cpus)?;
        if concurrency == 0 {
            return Err(ConfigError::new(
                "CONVERT_CONCURRENCY",
                "must be at least 1",
            ));
        }
        let max_duration_s = env.or("MAX_DURATION_S", 14_400.0)?;
        if !(max_duration_s > 0.0) {
            return Err(ConfigError::new("MAX_DURATION_S", "must be positive"));
        }
        Ok(Self {
            mongo: MongoSettings::from_env(env)?,
            concurrency,
            max_duration_s,
            tmp_dir: env.or("CONVERT_TMPDIR", std::env::temp_dir())?,
            db_connect_timeout: env.seconds("DB_CONNECT_TIMEOUT_SECONDS", 5)?,
        })
    }
}

/// Shared state of the converter.
#[derive(Clone)]
pub struct AppState {
    db: Database,
    videos: GridFsBucket,
    mp3s: GridFsBucket,
    permits: Arc<Semaphore>,
    settings: Arc<Settings>,
}

impl AppState {
    /// State from settings; connects nothing yet.
    ///
    /// # Errors
    /// A malformed `MONGODB_URI`.
    pub async fn new(settings: Settings) -> anyhow::Result<Self> {
        let swept = sweep_scratch(&settings.tmp_dir);
        if swept > 0 {
            tracing::info!(files = swept, dir = %settings.tmp_dir.display(), "deleted the scratch files of a converter that died");
        }
        let db = db::mongo_database(&settings.mongo, settings.db_connect_timeout).await?;
        Ok(Self {
            videos: jobs::bucket(&db, VIDEOS_BUCKET),
            mp3s: jobs::bucket(&db, MP3S_BUCKET),
            permits: Arc::new(Semaphore::new(settings.concurrency)),
            db,
            settings: Arc::new(settings),
        })
    }
}

/// Prefixes of the converter's scratch files in `CONVERT_TMPDIR`.
const SCRATCH_PREFIXES: [&str; 2] = ["vidmp3-in-", "vidmp3-out-"];

/// Deletes the scratch files a converter that died (SIGKILL, OOM kill) left in `dir`, returning how many.
/// A live converter holds an exclusive lock on each of its scratch files ([`lock_scratch`]); the kernel
/// drops the locks of a dead process, so a scratch file nobody locks is an orphan. (A file another
/// converter sharing the directory created a moment ago but has not locked yet could be taken for one:
/// that window is the two calls between `tempfile_in` and `lock_scratch`.)
pub fn sweep_scratch(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !SCRATCH_PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        if file.try_lock().is_ok() && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Marks a scratch file as in use for [`sweep_scratch`] until it is dropped (best effort).
fn lock_scratch(file: &tempfile::NamedTempFile) {
    if let Err(e) = file.as_file().try_lock() {
        tracing::debug!(error = %e, "could not lock a scratch file");
    }
}

/// The converter router with health, readiness (MongoDB answers) and metrics routes.
pub fn router(state: AppState) -> Router {
    let db_for_ready = state.db.clone();
    let readiness =
        telemetry::Readiness::new().check("mongodb", move || db::ping_mongo(db_for_ready.clone()));
    let routes = Router::new()
        .route("/", post(receive))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            events::MAX_EVENT_BYTES,
        ))
        .with_state(state);
    telemetry::instrument(routes, "converter", readiness)
}

async fn receive(State(state): State<AppState>, event: Event) -> Response {
    match handle(&state, &event).await {
        Ok(Some(reply)) => (StatusCode::OK, reply).into_response(),
        Ok(None) => StatusCode::OK.into_response(),
        Err(problem) => problem.into_response(),
    }
}

fn outcome(o: &'static str) {
    metrics::counter!("converter_conversions_total", "outcome" => o).increment(1);
}

/// Processes one `video.uploaded` event: `Ok(Some(reply))` to answer with, `Ok(None)` for nothing to do,
/// `Err` with a retryable (409/503) or final (4xx) problem.
///
/// # Errors
/// See the module docs.
pub async fn handle(state: &AppState, event: &Event) -> Result<Option<Event>, Problem> {
    let data: VideoUploaded = events::from_event(event)
        .map_err(|e| Problem::bad_request("invalid_event", e.to_string()))?;
    data.output
        .validate()
        .map_err(|e| Problem::bad_request("invalid_event", e))?;
    // Wait for a conversion slot before taking the job's lease, so a lease is only held while working. A
    // caller gone while waiting here leaves nothing behind: the job is not claimed yet.
    let permit = state
        .permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Problem::internal())?;
    // No await between taking the slot and spawning: from the claim on, the work no longer depends on
    // this future staying alive (see the module docs).
    let work = tokio::spawn(claim_and_convert(state.clone(), data, permit));
    work.await.map_err(|e| {
        tracing::error!(error = %e, "the conversion task panicked");
        Problem::internal()
    })?
}

/// Claims the job and converts it; runs as its own task (see [`handle`]).
async fn claim_and_convert(
    state: AppState,
    data: VideoUploaded,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<Option<Event>, Problem> {
    // The slot is held until the job is finished or handed back (dropped on return), so two jobs are never
    // `converting` in one converter beyond CONVERT_CONCURRENCY.
    let _permit = permit;
    let state = &state;
    let collection = jobs::jobs(&state.db);
    let now = DateTime::now();
    let claim = doc! {
        "_id": &data.job_id,
        "$or": [
            {"state": JobState::Uploaded.as_str()},
            {"state": JobState::Converting.as_str(), "lease_until": {"$lt": now}},
        ],
    };
    let lease = doc! {"$set": {
        "state": JobState::Converting.as_str(),
        "lease_until": DateTime::from_millis(now.timestamp_millis() + LEASE_MS),
        "progress": 0.0,
        "updated_at": now,
    }};
    let claimed = collection
        .find_one_and_update(claim, lease)
        .return_document(ReturnDocument::After)
        .await
        .map_err(|e| unavailable(&e))?;
    let Some(job) = claimed else {
        let existing = collection
            .find_one(doc! {"_id": &data.job_id})
            .await
            .map_err(|e| unavailable(&e))?;
        return match existing {
            None => Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_job",
                format!("no job {}", data.job_id),
            )),
            Some(job) => match job.state {
                JobState::Converted => {
                    outcome("duplicate");
                    Ok(Some(events::to_event(&converted_event(&job))))
                }
                JobState::Failed => {
                    outcome("duplicate");
                    Ok(Some(events::to_event(&failed_event(&job))))
                }
                _ => Err(Problem::new(
                    StatusCode::CONFLICT,
                    "conversion_in_progress",
                    "another converter is working on this job; retry later",
                )),
            },
        };
    };
    tracing::info!(job_id = %job.id, "conversion started");
    let encoding = encoding(&data.output, &job.output);
    match convert(state, &job, encoding).await {
        Ok(Converted::Stored(job)) => {
            outcome("converted");
            Ok(Some(events::to_event(&converted_event(&job))))
        }
        Ok(Converted::JobGone) => Ok(None),
        Err(Failure::Permanent(e)) => {
            outcome("failed");
            tracing::info!(job_id = %job.id, code = e.code(), error = %e, "conversion failed");
            let failed = finish_failed(state, &job, e.code(), &e.to_string()).await?;
            Ok(failed.map(|job| events::to_event(&failed_event(&job))))
        }
        Err(Failure::Transient(problem)) => {
            outcome("retry");
            release(state, &job.id).await;
            Err(problem)
        }
    }
}

enum Converted {
    Stored(Job),
    JobGone,
}

enum Failure {
    Permanent(TranscodeError),
    Transient(Problem),
}

fn unavailable(e: &mongodb::error::Error) -> Problem {
    tracing::warn!(error = %e, "MongoDB unavailable");
    Problem::unavailable("the job store is not answering")
}

/// Hands the job back (`converting → uploaded`) so a retry can take it at once.
async fn release(state: &AppState, job_id: &str) {
    let back = doc! {"$set": {"state": JobState::Uploaded.as_str(), "updated_at": DateTime::now()}, "$unset": {"lease_until": ""}};
    if let Err(e) = jobs::jobs(&state.db)
        .update_one(
            doc! {"_id": job_id, "state": JobState::Converting.as_str()},
            back,
        )
        .await
    {
        tracing::warn!(job_id, error = %e, "could not release the lease; it expires by itself");
    }
}

/// The encoding asked for: the event's options when it sets one, else the job's; `None` when neither sets
/// any, which lets the transcoder stream-copy an MP3 source (see the module docs).
fn encoding(event: &OutputOptions, job: &OutputOptions) -> Option<Encoding> {
    let options = if event.is_default() { job } else { event };
    match (options.bitrate_kbps, options.vbr_quality) {
        (Some(kbps), _) => Some(Encoding::Cbr { bitrate_kbps: kbps }),
        (None, Some(q)) => Some(Encoding::Vbr { quality: q }),
        (None, None) => None,
    }
}

async fn convert(
    state: &AppState,
    job: &Job,
    encoding: Option<Encoding>,
) -> Result<Converted, Failure> {
    let video_id = job
        .video_id
        .ok_or_else(|| Failure::Permanent(TranscodeError::EmptyFile))?;
    // Renew the lease from the start: spooling a big video can take longer than LEASE_MS by itself.
    let (progress_tx, progress_rx) = tokio::sync::watch::channel(0.0f64);
    // Aborted when dropped, so the heartbeat stops however the conversion ends: a return, an early `?`,
    // a panic, or the conversion's future being dropped.
    let heartbeat = AbortOnDropHandle::new(tokio::spawn(heartbeat(
        state.db.clone(),
        job.id.clone(),
        progress_rx,
    )));
    let transient = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(job_id = %job.id, error = %e, "{what}");
        Failure::Transient(Problem::unavailable(format!(
            "{what}; the conversion will be retried"
        )))
    };
    // Spool the video to a seekable temp file: an mp4 with its index at the end needs seeking.
    let input = tempfile::Builder::new()
        .prefix("vidmp3-in-")
        .tempfile_in(&state.settings.tmp_dir)
        .map_err(|e| transient("no scratch space for the video", &e))?;
    lock_scratch(&input);
    let download = match state
        .videos
        .open_download_stream(Bson::ObjectId(video_id))
        .await
    {
        Ok(d) => d,
        Err(e) if matches!(*e.kind, mongodb::error::ErrorKind::GridFs(_)) => {
            return Err(Failure::Permanent(TranscodeError::InvalidData {
                detail: "the uploaded video is gone".into(),
            }));
        }
        Err(e) => {
            return Err(transient(
                "could not read the video from the file store",
                &e,
            ));
        }
    };
    {
        let file = tokio::fs::File::create(input.path())
            .await
            .map_err(|e| transient("could not write the scratch file", &e))?;
        let mut writer = tokio::io::BufWriter::with_capacity(256 * 1024, file);
        let mut reader = tokio::io::BufReader::with_capacity(255 * 1024, download.compat());
        tokio::io::copy_buf(&mut reader, &mut writer)
            .await
            .map_err(|e| transient("could not copy the video", &e))?;
        tokio::io::AsyncWriteExt::flush(&mut writer)
            .await
            .map_err(|e| transient("could not write the scratch file", &e))?;
    }
    let output = tempfile::Builder::new()
        .prefix("vidmp3-out-")
        .suffix(".mp3")
        .tempfile_in(&state.settings.tmp_dir)
        .map_err(|e| transient("no scratch space for the MP3", &e))?;
    lock_scratch(&output);

    let options = TranscodeOptions {
        encoding,
        max_duration_s: Some(state.settings.max_duration_s),
        fallback_title: Some(jobs::filename_stem(&job.filename).to_owned()),
    };
    let started = Instant::now();
    let blocking = tokio::task::spawn_blocking(move || {
        let mut report_progress = |p: f64| {
            progress_tx.send_replace(p);
        };
        let result =
            transcode::transcode(input.path(), output.path(), &options, &mut report_progress);
        (result, input, output)
    })
    .await;
    let (result, _input, output) = blocking.map_err(|_| {
        Failure::Permanent(TranscodeError::Internal("the conversion crashed".into()))
    })?;
    let report = match result {
        Ok(r) => r,
        Err(e @ TranscodeError::Io { .. }) => {
            return Err(transient("local disk error during the conversion", &e));
        }
        Err(e) => return Err(Failure::Permanent(e)),
    };
    tracing::info!(
        job_id = %job.id,
        duration_s = report.duration_s,
        size_bytes = report.size_bytes,
        stream_copied = report.stream_copied,
        partial = report.partial,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "transcoded"
    );

    let mp3_id = ObjectId::new();
    let mp3_name = jobs::mp3_filename(&job.filename);
    store_mp3(state, mp3_id, &mp3_name, output.path())
        .await
        .map_err(|e| transient("could not store the MP3", &e))?;
    let done = doc! {"$set": {
        "state": JobState::Converted.as_str(),
        "mp3_id": mp3_id,
        "duration_s": report.duration_s,
        "mp3_size_bytes": i64::try_from(report.size_bytes).unwrap_or(i64::MAX),
        "bitrate_kbps": i32::try_from(report.bitrate_kbps).unwrap_or(i32::MAX),
        "partial": report.partial,
        "progress": 1.0,
        "updated_at": DateTime::now(),
    }, "$unset": {"lease_until": ""}};
    let updated = jobs::jobs(&state.db)
        .find_one_and_update(
            doc! {"_id": &job.id, "state": JobState::Converting.as_str()},
            done,
        )
        .return_document(ReturnDocument::After)
        .await;
    // Renewed until here: storing a long MP3 can outlast LEASE_MS too.
    drop(heartbeat);
    match updated {
        Ok(Some(job)) => Ok(Converted::Stored(job)),
        Ok(None) => {
            // The job was deleted (or taken over after our lease expired): the MP3 must not be orphaned.
            tracing::info!(job_id = %job.id, "job gone or taken over while converting: MP3 discarded");
            drop(state.mp3s.delete(Bson::ObjectId(mp3_id)).await);
            Ok(Converted::JobGone)
        }
        Err(e) => {
            drop(state.mp3s.delete(Bson::ObjectId(mp3_id)).await);
            Err(transient("could not record the conversion", &e))
        }
    }
}

async fn store_mp3(
    state: &AppState,
    id: ObjectId,
    name: &str,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let mut upload = state
        .mp3s
        .open_upload_stream(name)
        .id(Bson::ObjectId(id))
        .await?;
    let mut file = tokio::fs::File::open(path).await?;
    let mut buffer = vec![0u8; 255 * 1024];
    loop {
        let n = tokio::io::AsyncReadExt::read(&mut file, &mut buffer).await?;
        if n == 0 {
            break;
        }
        if let Err(e) = upload.write_all(&buffer[..n]).await {
            jobs::abort_upload(&state.db, MP3S_BUCKET, &mut upload, id).await;
            return Err(e.into());
        }
    }
    if let Err(e) = upload.close().await {
        jobs::abort_upload(&state.db, MP3S_BUCKET, &mut upload, id).await;
        return Err(e.into());
    }
    Ok(())
}

/// Writes progress and renews the lease about once a second while the conversion runs.
async fn heartbeat(db: Database, job_id: String, mut progress: tokio::sync::watch::Receiver<f64>) {
    let collection = jobs::jobs(&db);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let p = *progress.borrow_and_update();
        let now = DateTime::now();
        let update = doc! {"$set": {
            "progress": p.clamp(0.0, 1.0),
            "lease_until": DateTime::from_millis(now.timestamp_millis() + LEASE_MS),
            "updated_at": now,
        }};
        if let Err(e) = collection
            .update_one(
                doc! {"_id": &job_id, "state": JobState::Converting.as_str()},
                update,
            )
            .await
        {
            tracing::debug!(job_id, error = %e, "progress not recorded");
        }
    }
}

async fn finish_failed(
    state: &AppState,
    job: &Job,
    code: &str,
    message: &str,
) -> Result<Option<Job>, Problem> {
    let failed = doc! {"$set": {
        "state": JobState::Failed.as_str(),
        "error_code": code,
        "error_message": message,
        "updated_at": DateTime::now(),
    }, "$unset": {"lease_until": ""}};
    jobs::jobs(&state.db)
        .find_one_and_update(
            doc! {"_id": &job.id, "state": JobState::Converting.as_str()},
            failed,
        )
        .return_document(ReturnDocument::After)
        .await
        .map_err(|e| unavailable(&e))
}

fn converted_event(job: &Job) -> AudioConverted {
    AudioConverted {
        job_id: job.id.clone(),
        mp3_id: job.mp3_id.map(|m| m.to_hex()).unwrap_or_default(),
        owner: job.owner_email.clone(),
        filename: job.filename.clone(),
        duration_s: job.duration_s.unwrap_or_default(),
        size_bytes: u64::try_from(job.mp3_size_bytes.unwrap_or_default()).unwrap_or(0),
        bitrate_kbps: u32::try_from(job.bitrate_kbps.unwrap_or_default()).unwrap_or(0),
    }
}

fn failed_event(job: &Job) -> ConversionFailed {
    ConversionFailed {
        job_id: job.id.clone(),
        owner: job.owner_email.clone(),
        filename: job.filename.clone(),
        reason: job.error_code.clone().unwrap_or_else(|| "internal".into()),
        message: job.error_message.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The heartbeat's guard: once dropped, the task it holds makes no more progress.
    #[tokio::test]
    async fn a_dropped_guard_stops_its_task() {
        let ticks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = ticks.clone();
        let guard = AbortOnDropHandle::new(tokio::spawn(async move {
            loop {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(guard);
        tokio::task::yield_now().await;
        let at_drop = ticks.load(std::sync::atomic::Ordering::SeqCst);
        assert!(at_drop > 0, "the task ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(ticks.load(std::sync::atomic::Ordering::SeqCst), at_drop);
    }

    #[test]
    fn event_options_win_over_the_jobs() {
        let cbr = |kbps| OutputOptions {
            bitrate_kbps: Some(kbps),
            vbr_quality: None,
        };
        let vbr = OutputOptions {
            bitrate_kbps: None,
            vbr_quality: Some(5),
        };
        let default = OutputOptions::default();
        assert_eq!(
            encoding(&cbr(96), &vbr),
            Some(Encoding::Cbr { bitrate_kbps: 96 })
        );
        assert_eq!(encoding(&default, &vbr), Some(Encoding::Vbr { quality: 5 }));
        // No option anywhere is the only case left to the transcoder's default (which may stream-copy); an
        // explicit VBR q2, the same encoding as the default, still counts as asked for.
        assert_eq!(encoding(&default, &default), None);
        let q2 = OutputOptions {
            bitrate_kbps: None,
            vbr_quality: Some(2),
        };
        assert_eq!(encoding(&default, &q2), Some(Encoding::Vbr { quality: 2 }));
    }

    #[test]
    fn sweep_deletes_only_scratch_files_nobody_locks() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = |prefix: &str| {
            tempfile::Builder::new()
                .prefix(prefix)
                .tempfile_in(dir.path())
                .unwrap()
        };
        let live = scratch("vidmp3-in-");
        lock_scratch(&live);
        // A dead converter's files: on disk, unlocked.
        let (_, dead_in) = scratch("vidmp3-in-").keep().unwrap();
        let (_, dead_out) = scratch("vidmp3-out-").keep().unwrap();
        let (_, other) = scratch("someone-else-").keep().unwrap();
        assert_eq!(sweep_scratch(dir.path()), 2);
        assert!(live.path().exists());
        assert!(!dead_in.exists() && !dead_out.exists());
        assert!(other.exists());
        assert_eq!(sweep_scratch(&dir.path().join("missing")), 0);
    }
}
