//! JobSink mode (`converter job`) and resource hygiene over many jobs, against the real MongoDB-wire server.

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

#[tokio::test]
async fn job_mode_converts_the_mounted_event_and_posts_the_result_to_k_sink() {
    testkit::ensure_services();
    let database = testkit::unique_name("jobsink");
    let mongo = testkit::shared_mongo_uri();
    let db = mongodb::Client::with_uri_str(&mongo)
        .await
        .unwrap()
        .database(&database);
    let received: Arc<Mutex<Vec<Event>>> = Arc::default();
    let sink = {
        let received = received.clone();
        let router = Router::new().route(
            "/",
            post(move |event: Event| {
                received.lock().unwrap().push(event);
                async { axum::http::StatusCode::ACCEPTED }
            }),
        );
        testkit::serve(router).await
    };
    let event = uploaded(&db, "mkv_vp9_opus_10s.mkv").await;
    let dir = tempfile::tempdir().unwrap();
    let event_path = dir.path().join("event");
    std::fs::write(&event_path, serde_json::to_vec(&event).unwrap()).unwrap();
    let run = |path: &std::path::Path| {
        let (mongo, database, sink, path) = (
            mongo.clone(),
            database.clone(),
            sink.clone(),
            path.to_owned(),
        );
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_converter"))
                .arg("job")
                .env("MONGODB_URI", mongo)
                .env("MONGODB_DATABASE", database)
                .env("K_SINK", sink)
                .env("JOBSINK_EVENT_PATH", path)
                .output()
                .unwrap()
        })
    };
    let out = run(&event_path).await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].ty(), events::AUDIO_CONVERTED);
    let job = jobs::jobs(&db)
        .find_one(doc! {"_id": event.subject().unwrap()})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state, JobState::Converted);
    let missing = run(&dir.path().join("no-such-event")).await.unwrap();
    assert_eq!(
        missing.status.code(),
        Some(2),
        "an unreadable event file is not retried as transient"
    );
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_jobs_failing_ones_included_leak_no_temp_file_or_descriptor() {
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
            baseline = Some(open_fds());
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        std::fs::read_dir(scratch.path()).unwrap().count(),
        0,
        "temp files left behind"
    );
    let (before, after) = (baseline.unwrap(), open_fds());
    assert!(
        after <= before + 4,
        "file descriptors grew from {before} to {after} over 100 jobs"
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
