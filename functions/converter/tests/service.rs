//! The converter's HTTP side against the real MongoDB-wire server: CloudEvent in, MP3 in GridFS, reply
//! event out; idempotent under redelivery; 503 (retry) while MongoDB is down; final 4xx for bad events.

use std::time::{Duration, Instant};

use cloudevents::binding::reqwest::RequestBuilderExt;
use cloudevents::binding::reqwest::ResponseExt;
use cloudevents::{AttributesReader, Event};
use futures::AsyncWriteExt;
use mongodb::bson::{Bson, doc, oid::ObjectId};
use vidmp3_runtime::config::Env;
use vidmp3_runtime::events::{
    self, AudioConverted, ConversionFailed, OutputOptions, VideoUploaded,
};
use vidmp3_runtime::jobs::{self, Job, JobState, NewJob};

struct App {
    url: String,
    db: mongodb::Database,
    client: reqwest::Client,
}

async fn spawn_app(mongo_uri: &str) -> App {
    let database = testkit::unique_name("conv");
    let vars = [
        ("MONGODB_URI", mongo_uri),
        ("MONGODB_DATABASE", database.as_str()),
        ("DB_CONNECT_TIMEOUT_SECONDS", "2"),
    ];
    let settings = converter::service::Settings::from_env(&Env::from_pairs(vars)).unwrap();
    let state = converter::service::AppState::new(settings).await.unwrap();
    let url = testkit::serve(converter::service::router(state)).await;
    let db = mongodb::Client::with_uri_str(mongo_uri)
        .await
        .unwrap()
        .database(&database);
    App {
        url,
        db,
        client: reqwest::Client::new(),
    }
}

impl App {
    /// Stores `file` from the media corpus as a video and makes an `uploaded` job for it; returns its event.
    async fn uploaded(&self, file: &str, output: OutputOptions) -> Event {
        let bytes = std::fs::read(testkit::media_corpus().join(file)).unwrap();
        let bucket = jobs::bucket(&self.db, jobs::VIDEOS_BUCKET);
        let video_id = ObjectId::new();
        let mut upload = bucket
            .open_upload_stream(file)
            .id(Bson::ObjectId(video_id))
            .await
            .unwrap();
        upload.write_all(&bytes).await.unwrap();
        upload.close().await.unwrap();
        let mut job = Job::uploaded(NewJob {
            owner_id: "1".into(),
            owner_email: "owner@example.com".into(),
            filename: file.into(),
            content_type: "video/mp4".into(),
            size_bytes: bytes.len() as u64,
            video_id,
            output,
        });
        job.event_pending = false;
        jobs::jobs(&self.db).insert_one(&job).await.unwrap();
        events::to_event(&VideoUploaded {
            job_id: job.id,
            video_id: video_id.to_hex(),
            owner: job.owner_email,
            filename: job.filename,
            content_type: job.content_type,
            size_bytes: bytes.len() as u64,
            output,
        })
    }

    async fn deliver(&self, event: Event) -> reqwest::Response {
        self.client
            .post(format!("{}/", self.url))
            .event(event)
            .unwrap()
            .send()
            .await
            .unwrap()
    }

    async fn job(&self, id: &str) -> Job {
        jobs::jobs(&self.db)
            .find_one(doc! {"_id": id})
            .await
            .unwrap()
            .unwrap()
    }

    async fn count(&self, collection: &str) -> u64 {
        self.db
            .collection::<mongodb::bson::Document>(collection)
            .count_documents(doc! {})
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_video_converts_and_the_reply_is_an_audio_converted_event() {
    testkit::ensure_services();
    let app = spawn_app(&testkit::shared_mongo_uri()).await;
    let event = app
        .uploaded("mp4_h264_aac_faststart_10s.mp4", OutputOptions::default())
        .await;
    let response = app.deliver(event.clone()).await;
    assert_eq!(response.status(), 200);
    let reply = response.into_event().await.expect("a CloudEvent reply");
    assert_eq!(reply.ty(), events::AUDIO_CONVERTED);
    assert_eq!(reply.source().as_str(), "/converter");
    let data: AudioConverted = events::from_event(&reply).unwrap();
    assert!(
        (data.duration_s - 10.01).abs() <= 0.1,
        "{}",
        data.duration_s
    );
    let job = app.job(event.subject().unwrap()).await;
    assert_eq!(job.state, JobState::Converted);
    assert_eq!(job.mp3_id.unwrap().to_hex(), data.mp3_id);
    assert_eq!(job.progress, 1.0);
    assert!(job.lease_until.is_none());
    assert_eq!(app.count("mp3s.files").await, 1);
}

#[tokio::test]
async fn a_redelivered_event_gives_one_mp3_and_repeats_the_reply() {
    testkit::ensure_services();
    let app = spawn_app(&testkit::shared_mongo_uri()).await;
    let event = app
        .uploaded("mp4_h264_aac_faststart_10s.mp4", OutputOptions::default())
        .await;
    let first = app.deliver(event.clone()).await.into_event().await.unwrap();
    let again = app.deliver(event.clone()).await;
    assert_eq!(again.status(), 200);
    let second = again.into_event().await.unwrap();
    assert_eq!(
        first.id(),
        second.id(),
        "the same reply, so notification dedupes it"
    );
    assert_eq!(app.count("mp3s.files").await, 1, "no second MP3");
}

#[tokio::test]
async fn a_permanent_failure_marks_the_job_failed_and_replies_conversion_failed() {
    testkit::ensure_services();
    let app = spawn_app(&testkit::shared_mongo_uri()).await;
    let event = app
        .uploaded("mp4_h264_no_audio_track_10s.mp4", OutputOptions::default())
        .await;
    let response = app.deliver(event.clone()).await;
    assert_eq!(response.status(), 200, "no retry for a permanent failure");
    let reply = response.into_event().await.unwrap();
    assert_eq!(reply.ty(), events::CONVERSION_FAILED);
    let data: ConversionFailed = events::from_event(&reply).unwrap();
    assert_eq!(data.reason, "no_audio_stream");
    let job = app.job(event.subject().unwrap()).await;
    assert_eq!(
        (job.state, job.error_code.as_deref()),
        (JobState::Failed, Some("no_audio_stream"))
    );
    assert_eq!(app.count("mp3s.files").await, 0);
}

#[tokio::test]
async fn output_options_change_the_bitrate() {
    testkit::ensure_services();
    let app = spawn_app(&testkit::shared_mongo_uri()).await;
    let mut rates = Vec::new();
    for kbps in [96, 320] {
        let event = app
            .uploaded(
                "mp4_h264_aac_faststart_10s.mp4",
                OutputOptions {
                    bitrate_kbps: Some(kbps),
                    vbr_quality: None,
                },
            )
            .await;
        let reply = app.deliver(event).await.into_event().await.unwrap();
        rates.push(
            events::from_event::<AudioConverted>(&reply)
                .unwrap()
                .bitrate_kbps,
        );
    }
    assert!(
        (85..=110).contains(&rates[0]) && (290..=335).contains(&rates[1]),
        "{rates:?}"
    );
}

#[tokio::test]
async fn bad_events_get_a_final_4xx() {
    testkit::ensure_services();
    let app = spawn_app(&testkit::shared_mongo_uri()).await;
    let unknown = events::to_event(&VideoUploaded {
        job_id: "no-such-job".into(),
        video_id: ObjectId::new().to_hex(),
        owner: "o@example.com".into(),
        filename: "x.mp4".into(),
        content_type: "video/mp4".into(),
        size_bytes: 1,
        output: OutputOptions::default(),
    });
    assert_eq!(app.deliver(unknown).await.status(), 422);
    let wrong_type = events::to_event(&ConversionFailed {
        job_id: "j".into(),
        owner: "o".into(),
        filename: "f".into(),
        reason: "internal".into(),
        message: "m".into(),
    });
    assert_eq!(app.deliver(wrong_type).await.status(), 400);
    let junk = app
        .client
        .post(format!("{}/", app.url))
        .header("content-type", "application/json")
        .body("[1,2")
        .send()
        .await
        .unwrap();
    assert!(junk.status().is_client_error());
    let huge = app
        .client
        .post(format!("{}/", app.url))
        .header("content-type", "application/cloudevents+json")
        .body(vec![b' '; 1_000_000])
        .send()
        .await
        .unwrap();
    assert!(huge.status().is_client_error(), "{}", huge.status());
}

#[tokio::test]
async fn mongodb_down_is_503_then_the_retry_succeeds() {
    let mut mongo = testkit::MongoServer::start().await;
    let app = spawn_app(&mongo.uri).await;
    let event = app
        .uploaded("mp4_h264_aac_faststart_10s.mp4", OutputOptions::default())
        .await;
    mongo.stop().await;
    let started = Instant::now();
    let down = app.deliver(event.clone()).await;
    assert_eq!(down.status(), 503, "a retryable answer");
    assert!(started.elapsed() < Duration::from_secs(8));
    mongo.restart().await;
    let mut status = 0;
    for _ in 0..40 {
        let r = app.deliver(event.clone()).await;
        status = r.status().as_u16();
        if status == 200 {
            assert_eq!(r.into_event().await.unwrap().ty(), events::AUDIO_CONVERTED);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status, 200);
    assert_eq!(app.count("mp3s.files").await, 1);
}

/// Found by scripts/chaos: a GridFS upload abandoned while MongoDB is down kept the chunks it had written
/// (the driver's abort cannot reach MongoDB either). `jobs::abort_upload` deletes them once MongoDB is back.
#[tokio::test]
async fn an_upload_abandoned_while_mongodb_is_down_leaves_no_chunk_once_it_is_back() {
    let mut mongo = testkit::MongoServer::start().await;
    let mut options = mongodb::options::ClientOptions::parse(&mongo.uri)
        .await
        .unwrap();
    options.server_selection_timeout = Some(Duration::from_secs(2));
    let db = mongodb::Client::with_options(options)
        .unwrap()
        .database(&testkit::unique_name("abandoned"));
    let bucket = jobs::bucket(&db, jobs::MP3S_BUCKET);
    let chunks = db.collection::<mongodb::bson::Document>("mp3s.chunks");
    let id = ObjectId::new();
    let mut upload = bucket
        .open_upload_stream("cut-off.mp3")
        .id(Bson::ObjectId(id))
        .await
        .unwrap();
    upload.write_all(&vec![7u8; 600 * 1024]).await.unwrap(); // two full chunks written
    let written = chunks.count_documents(doc! {"files_id": id}).await.unwrap();
    assert!(written >= 2, "{written} chunks written");

    mongo.stop().await;
    jobs::abort_upload(&db, jobs::MP3S_BUCKET, &mut upload, id).await;
    mongo.restart().await;

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(0) = chunks.count_documents(doc! {"files_id": id}).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned upload's chunks are still there"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
