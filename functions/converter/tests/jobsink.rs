//! JobSink mode (`converter job`) and resource hygiene over many jobs, against the real MongoDB-wire server.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use cloudevents::binding::reqwest::{RequestBuilderExt, ResponseExt};
use cloudevents::{AttributesReader, Event};
use futures::AsyncWriteExt;
use mongodb::bson::{Bson, doc, oid::ObjectId};
use vidmp3_runtime::config::Env;
use vidmp3_runtime::events::{self, OutputOptions, VideoUploaded};
use vidmp3_runtime::jobs::{self, Job, JobState, NewJob};

/// Stores a corpus file as a video with an `uploaded` job; returns the job's event.
async fn uploaded(db: &mongodb::Database, file: &str) -> Event {
    let bytes = std::fs::read(testkit::media_corpus().join(file)).unwrap();
    let video_id = ObjectId::new();
    let mut upload = jobs::bucket(db, jobs::VIDEOS_BUCKET)
        .open_upload_stream(file)
        .id(Bson::ObjectId(video_id))
        .await
        .unwrap();
    upload.write_all(&bytes).await.unwrap();
    upload.close().await.unwrap();
    let job = Job::uploaded(NewJob {
        owner_id: "1".into(),
        owner_email: "owner@example.com".into(),
        filename: file.into(),
        content_type: "video/mp4".into(),
        size_bytes: bytes.len() as u64,
        video_id,
        output: OutputOptions::default(),
    });
    jobs::jobs(db).insert_one(&job).await.unwrap();
    events::to_event(&VideoUploaded {
        job_id: job.id,
        video_id: video_id.to_hex(),
        owner: job.owner_email,
        filename: job.filename,
        content_type: job.content_type,
        size_bytes: bytes.len() as u64,
        output: OutputOptions::default(),
    })
}

/// A K_SINK that records the events it accepts.
async fn sink() -> (String, Arc<Mutex<Vec<Event>>>) {
    let received: Arc<Mutex<Vec<Event>>> = Arc::default();
    let router = {
        let received = received.clone();
        Router::new().route(
            "/",
            post(move |event: Event| {
                received.lock().unwrap().push(event);
                async { axum::http::StatusCode::ACCEPTED }
            }),
        )
    };
    (testkit::serve(router).await, received)
}

/// A URL where nothing listens (a port just freed).
fn dead_sink() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/")
}

/// A database on the shared MongoDB-wire server: (its URI, its name, a handle).
async fn database(prefix: &str) -> (String, String, mongodb::Database) {
    let name = testkit::unique_name(prefix);
    let uri = testkit::shared_mongo_uri();
    let db = mongodb::Client::with_uri_str(&uri)
        .await
        .unwrap()
        .database(&name);
    (uri, name, db)
}

/// Runs `converter job` on the event file at `path`.
async fn run_job(mongo: &str, database: &str, sink: &str, path: &Path) -> std::process::Output {
    let (mongo, database, sink, path) = (
        mongo.to_owned(),
        database.to_owned(),
        sink.to_owned(),
        path.to_owned(),
    );
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_converter"))
            .arg("job")
            .env("MONGODB_URI", mongo)
            .env("MONGODB_DATABASE", database)
            .env("K_SINK", sink)
            .env("JOBSINK_EVENT_PATH", path)
            .env("LOG_FORMAT", "json")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// Writes `event` as the mounted (structured) event file in `dir`.
fn event_file(dir: &Path, event: &Event) -> PathBuf {
    let path = dir.join("event");
    std::fs::write(&path, serde_json::to_vec(event).unwrap()).unwrap();
    path
}

/// The log lines (JSON) at `level` in a run's stdout.
fn log_lines(out: &std::process::Output, level: &str) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["level"] == level)
        .collect()
}

fn logs(out: &std::process::Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn job_mode_converts_the_mounted_event_and_posts_the_result_to_k_sink() {
    testkit::ensure_services();
    let (mongo, name, db) = database("jobsink").await;
    let (sink, received) = sink().await;
    let event = uploaded(&db, "mkv_vp9_opus_10s.mkv").await;
    let dir = tempfile::tempdir().unwrap();
    let out = run_job(&mongo, &name, &sink, &event_file(dir.path(), &event)).await;
    assert_eq!(out.status.code(), Some(0), "{}", logs(&out));
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].ty(), events::AUDIO_CONVERTED);
    let job = jobs::jobs(&db)
        .find_one(doc! {"_id": event.subject().unwrap()})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state, JobState::Converted);
}

/// An event file that can never succeed is not retried (exit 0: the Job controller would rerun it on the
/// same file for nothing); one error line says which file and why.
#[tokio::test]
async fn an_unreadable_or_malformed_event_file_exits_0_with_one_error_line() {
    testkit::ensure_services();
    let (mongo, name, _db) = database("jobsink-bad").await;
    let (sink, received) = sink().await;
    let dir = tempfile::tempdir().unwrap();
    let malformed = dir.path().join("malformed");
    std::fs::write(&malformed, b"{\"specversion\": \"1.0\", \"id\": ").unwrap();
    for (path, reason) in [
        (dir.path().join("no-such-event"), "cannot read it"),
        (malformed, "not a structured CloudEvent"),
    ] {
        let out = run_job(&mongo, &name, &sink, &path).await;
        assert_eq!(out.status.code(), Some(0), "{}", logs(&out));
        let errors = log_lines(&out, "ERROR");
        assert_eq!(errors.len(), 1, "{}", logs(&out));
        let error = errors[0]["error"].as_str().unwrap_or_default();
        assert!(error.starts_with(reason), "{error}");
        assert_eq!(errors[0]["path"], path.to_str().unwrap());
    }
    assert!(
        received.lock().unwrap().is_empty(),
        "no job, nothing to post"
    );
}

/// K_SINK not answering is transient: exit 1 so the Job runs again; the rerun repeats the reply.
#[tokio::test]
async fn k_sink_down_exits_1_and_the_rerun_delivers_the_reply() {
    testkit::ensure_services();
    let (mongo, name, db) = database("jobsink-sink").await;
    let event = uploaded(&db, "mkv_vp9_opus_10s.mkv").await;
    let dir = tempfile::tempdir().unwrap();
    let path = event_file(dir.path(), &event);
    let out = run_job(&mongo, &name, &dead_sink(), &path).await;
    assert_eq!(out.status.code(), Some(1), "{}", logs(&out));
    let (sink, received) = sink().await;
    let out = run_job(&mongo, &name, &sink, &path).await;
    assert_eq!(out.status.code(), Some(0), "{}", logs(&out));
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].ty(), events::AUDIO_CONVERTED);
    let mp3s = db
        .collection::<mongodb::bson::Document>("mp3s.files")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(mp3s, 1, "the rerun did not convert again");
}

#[tokio::test]
async fn a_permanent_failure_exits_0_and_posts_conversion_failed() {
    testkit::ensure_services();
    let (mongo, name, db) = database("jobsink-fail").await;
    let (sink, received) = sink().await;
    let event = uploaded(&db, "mp4_h264_no_audio_track_10s.mp4").await;
    let dir = tempfile::tempdir().unwrap();
    let out = run_job(&mongo, &name, &sink, &event_file(dir.path(), &event)).await;
    assert_eq!(out.status.code(), Some(0), "{}", logs(&out));
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].ty(), events::CONVERSION_FAILED);
    let data: events::ConversionFailed = events::from_event(&got[0]).unwrap();
    assert_eq!(
        (data.job_id.as_str(), data.reason.as_str()),
        (event.subject().unwrap(), "no_audio_stream")
    );
    let job = jobs::jobs(&db)
        .find_one(doc! {"_id": event.subject().unwrap()})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state, JobState::Failed);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The threads of this process (the router runs in it): one `/proc/self/task` entry each.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_jobs_failing_ones_included_leak_no_temp_file_descriptor_or_thread() {
    testkit::ensure_services();
    let database = testkit::unique_name("leak");
    let mongo = testkit::shared_mongo_uri();
    let scratch = tempfile::tempdir().unwrap();
    let scratch_path = scratch.path().to_str().unwrap().to_owned();
    let vars = [
        ("MONGODB_URI", mongo.as_str()),
        ("MONGODB_DATABASE", database.as_str()),
        ("CONVERT_TMPDIR", scratch_path.as_str()),
        ("CONVERT_CONCURRENCY", "2"),
    ];
    let state = converter::service::AppState::new(
        converter::service::Settings::from_env(&Env::from_pairs(vars)).unwrap(),
    )
    .await
    .unwrap();
    let url = testkit::serve(converter::service::router(state)).await;
    let db = mongodb::Client::with_uri_str(&mongo)
        .await
        .unwrap()
        .database(&database);
    let client = reqwest::Client::new();
    let files = [
        "m4a_aac_audio_only_10s.m4a",
        "mp4_h264_no_audio_track_10s.mp4",
        "random_bytes.mp4",
        "avi_mpeg4_mp3_10s.avi",
    ];
    let mut baseline = None;
    for round in 0..25 {
        for file in files {
            let event = uploaded(&db, file).await;
            let reply = client
                .post(format!("{url}/"))
                .event(event)
                .unwrap()
                .send()
                .await
                .unwrap();
            assert_eq!(reply.status(), 200);
            reply.into_event().await.unwrap();
        }
        if round == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            baseline = Some((open_fds(), threads()));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        std::fs::read_dir(scratch.path()).unwrap().count(),
        0,
        "temp files left behind"
    );
    let ((before, threads_before), after) = (baseline.unwrap(), open_fds());
    assert!(
        after <= before + 4,
        "file descriptors grew from {before} to {after} over 100 jobs"
    );
    // Threads: the baseline (after round 0) already holds the runtime's 2 workers and the blocking-pool
    // threads round 0 used. Requests here are sequential, so each later round needs no more blocking
    // threads than round 0 did; but other tests in this binary start and end their own runtimes meanwhile,
    // and the blocking pool keeps an idle thread 10 s. Allow CONVERT_CONCURRENCY (2) transcodes + the
    // runtime's 2 workers above the baseline, and if the count is above that, give idle blocking threads
    // their 10 s to exit before judging. A thread kept per job (or per failed job) is 50-100 more: it
    // never comes under the bound. Seen here: 6 before, 7 after.
    let thread_bound = threads_before + 2 + 2;
    let settle_until = std::time::Instant::now() + Duration::from_secs(12);
    while threads() > thread_bound && std::time::Instant::now() < settle_until {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let threads_after = threads();
    assert!(
        threads_after <= thread_bound,
        "threads grew from {threads_before} to {threads_after} over 100 jobs"
    );
    let converted = jobs::jobs(&db)
        .count_documents(doc! {"state": "converted"})
        .await
        .unwrap();
    let failed = jobs::jobs(&db)
        .count_documents(doc! {"state": "failed"})
        .await
        .unwrap();
    assert_eq!((converted, failed), (50, 50));
}
