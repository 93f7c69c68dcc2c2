//! The converter's HTTP side against the real MongoDB-wire server: CloudEvent in, MP3 in GridFS, reply
//! event out; idempotent under redelivery; 503 (retry) while MongoDB is down; final 4xx for bad events;
//! a caller that goes away mid-conversion does not leave the job `converting`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cloudevents::binding::reqwest::RequestBuilderExt;
use cloudevents::binding::reqwest::ResponseExt;
use cloudevents::{AttributesReader, Event};
use ffmpeg_next as ffmpeg;
use futures::AsyncReadExt;
use futures::AsyncWriteExt;
use mongodb::bson::{Bson, DateTime, doc, oid::ObjectId};
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
    spawn_app_with(mongo_uri, &[]).await
}

/// The converter with `extra` settings (`MAX_DURATION_S`, `CONVERT_CONCURRENCY`, ...).
async fn spawn_app_with(mongo_uri: &str, extra: &[(&str, &str)]) -> App {
    let database = testkit::unique_name("conv");
    let mut vars = vec![
        ("MONGODB_URI", mongo_uri),
        ("MONGODB_DATABASE", database.as_str()),
        ("DB_CONNECT_TIMEOUT_SECONDS", "2"),
    ];
    vars.extend_from_slice(extra);
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
        self.uploaded_bytes(&bytes, file, output, output).await
    }

    /// Stores `bytes` as a video uploaded as `filename`, with `job_output` in the job and `event_output`
    /// in the event; returns the event.
    async fn uploaded_bytes(
        &self,
        bytes: &[u8],
        filename: &str,
        job_output: OutputOptions,
        event_output: OutputOptions,
    ) -> Event {
        let file = filename;
        let bucket = jobs::bucket(&self.db, jobs::VIDEOS_BUCKET);
        let video_id = ObjectId::new();
        let mut upload = bucket
            .open_upload_stream(file)
            .id(Bson::ObjectId(video_id))
            .await
            .unwrap();
        upload.write_all(bytes).await.unwrap();
        upload.close().await.unwrap();
        let mut job = Job::uploaded(NewJob {
            owner_id: "1".into(),
            owner_email: "owner@example.com".into(),
            filename: file.into(),
            content_type: "video/mp4".into(),
            size_bytes: bytes.len() as u64,
            video_id,
            output: job_output,
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
            output: event_output,
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

    /// Delivers `event` until it gets something other than 409 (another converter's live lease), for at
    /// most `patience`; returns that answer.
    async fn deliver_until_not_409(&self, event: &Event, patience: Duration) -> reqwest::Response {
        let deadline = Instant::now() + patience;
        loop {
            let r = self.deliver(event.clone()).await;
            if r.status() != 409 {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "still 409 after {patience:?}: the job stays `converting`"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The MP3 stored for a converted job, as bytes.
    async fn mp3(&self, job: &Job) -> Vec<u8> {
        let mut stream = jobs::bucket(&self.db, jobs::MP3S_BUCKET)
            .open_download_stream(Bson::ObjectId(job.mp3_id.expect("an mp3 id")))
            .await
            .unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.unwrap();
        bytes
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
    assert!(!job.partial, "a whole file is not partial");
    assert_eq!(job.mp3_size_bytes, Some(data.size_bytes as i64));
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

/// A longer clip made from the corpus: the 10 s audio-only m4a played `times` times in a row (a stream
/// copy, well under a second to make), so a conversion lasts long enough to interrupt or to overlap.
fn looped_clip(times: u32) -> Vec<u8> {
    static CLIPS: OnceLock<std::sync::Mutex<std::collections::HashMap<u32, Vec<u8>>>> =
        OnceLock::new();
    let mut clips = CLIPS.get_or_init(Default::default).lock().unwrap();
    clips
        .entry(times)
        .or_insert_with(|| {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("looped.m4a");
            let status = std::process::Command::new("ffmpeg")
                .args(["-nostdin", "-v", "error", "-y", "-stream_loop"])
                .arg((times - 1).to_string())
                .arg("-i")
                .arg(testkit::media_corpus().join("m4a_aac_audio_only_10s.m4a"))
                .args(["-c", "copy"])
                .arg(&out)
                .status()
                .expect("the ffmpeg CLI runs");
            assert!(status.success(), "ffmpeg could not loop the clip");
            std::fs::read(out).unwrap()
        })
        .clone()
}

/// The ID3 title of an MP3 (`None` without one), read with libavformat.
fn mp3_title(bytes: &[u8]) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.mp3");
    std::fs::write(&path, bytes).unwrap();
    let ictx = ffmpeg::format::input(&path).expect("the MP3 opens");
    assert_eq!(ictx.format().name(), "mp3");
    ictx.metadata().get("title").map(str::to_owned)
}

/// The bug this guards against: the Broker's per-attempt timeout closes the connection, axum drops the
/// request's future, and the lease heartbeat went on renewing the job's `converting` lease for ever, so
/// every retry got 409 until the event was dead-lettered.
#[tokio::test]
async fn a_caller_gone_mid_conversion_does_not_leave_the_job_converting() {
    testkit::ensure_services();
    let app = spawn_app(&testkit::shared_mongo_uri()).await;
    let default = OutputOptions::default();
    let event = app
        .uploaded_bytes(&looped_clip(24), "a long talk.m4a", default, default)
        .await;
    let id = event.subject().unwrap().to_owned();
    let call = {
        let request = app
            .client
            .post(format!("{}/", app.url))
            .event(event.clone())
            .unwrap();
        tokio::spawn(request.send())
    };
    // Hang up once the transcode is under way: the heartbeat has written some progress.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = app.job(&id).await;
        if job.state == JobState::Converting && job.progress > 0.0 {
            assert!(job.progress < 1.0);
            break;
        }
        assert_ne!(
            job.state,
            JobState::Converted,
            "converted before the caller could hang up: make the clip longer"
        );
        assert!(Instant::now() < deadline, "the conversion never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());

    // The redelivery: 409 while the work goes on, then the finished job's reply.
    let response = app
        .deliver_until_not_409(&event, Duration::from_secs(90))
        .await;
    assert_eq!(response.status(), 200);
    let reply = response.into_event().await.unwrap();
    assert_eq!(reply.ty(), events::AUDIO_CONVERTED);
    let data: AudioConverted = events::from_event(&reply).unwrap();
    assert!(data.duration_s > 230.0, "{}", data.duration_s);
    let job = app.job(&id).await;
    assert_eq!(job.state, JobState::Converted);
    assert_eq!(job.mp3_id.unwrap().to_hex(), data.mp3_id);
    assert!(job.lease_until.is_none());
    assert_eq!(app.count("mp3s.files").await, 1, "exactly one MP3");

    // Nothing of ours renews a lease on this job any more: put it back to `converting` (as if another
    // converter had taken it) and see that no heartbeat touches it over a few of its 1 s ticks.
    let lease = DateTime::from_millis(DateTime::now().timestamp_millis() + 60_000);
    let marker = DateTime::from_millis(1_000_000);
    jobs::jobs(&app.db)
        .update_one(
            doc! {"_id": &id},
            doc! {"$set": {"state": "converting", "lease_until": lease, "updated_at": marker}},
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let job = app.job(&id).await;
    assert_eq!(
        (job.updated_at, job.lease_until),
        (marker, Some(lease)),
        "a heartbeat still renews the lease after the work ended"
    );
}

/// 409, retryable, rather than 200: the lease holder may still finish, and a retry after it has gets the
/// 200 reply; if it dies instead, its lease expires and a retry takes the job over (next test). A 200 here
/// would end the delivery with no reply at all in that case.
#[tokio::test]
async fn a_live_lease_gets_409_and_changes_nothing() {
    testkit::ensure_services();
    let app = spawn_app(&testkit::shared_mongo_uri()).await;
    let event = app
        .uploaded("mp4_h264_aac_faststart_10s.mp4", OutputOptions::default())
        .await;
    let id = event.subject().unwrap().to_owned();
    let lease = DateTime::from_millis(DateTime::now().timestamp_millis() + 60_000);
    jobs::jobs(&app.db)
        .update_one(
            doc! {"_id": &id},
            doc! {"$set": {"state": "converting", "lease_until": lease, "progress": 0.4}},
        )
        .await
        .unwrap();
    let response = app.deliver(event).await;
    assert_eq!(response.status(), 409, "retryable: the holder may finish");
    assert_eq!(
        response.headers()["content-type"],
        vidmp3_runtime::problem::PROBLEM_JSON
    );
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "conversion_in_progress");
    let job = app.job(&id).await;
    assert_eq!(
        (job.state, job.lease_until, job.progress),
        (JobState::Converting, Some(lease), 0.4)
    );
    assert_eq!(app.count("mp3s.files").await, 0);
}

/// A converter that died leaves its lease to run out; the next delivery takes the job over.
#[tokio::test]
async fn an_expired_lease_is_taken_over_and_converts_once() {
    testkit::ensure_services();
    let app = spawn_app(&testkit::shared_mongo_uri()).await;
    let event = app
        .uploaded("mp4_h264_aac_faststart_10s.mp4", OutputOptions::default())
        .await;
    let id = event.subject().unwrap().to_owned();
    // A converter that died 1 s after its lease ran out.
    let expired = DateTime::from_millis(DateTime::now().timestamp_millis() - 1_000);
    jobs::jobs(&app.db)
        .update_one(
            doc! {"_id": &id},
            doc! {"$set": {"state": "converting", "lease_until": expired, "progress": 0.4}},
        )
        .await
        .unwrap();
    let response = app.deliver(event.clone()).await;
    assert_eq!(response.status(), 200);
    let first = response.into_event().await.unwrap();
    assert_eq!(first.ty(), events::AUDIO_CONVERTED);
    let job = app.job(&id).await;
    assert_eq!((job.state, job.progress), (JobState::Converted, 1.0));
    assert!(job.lease_until.is_none());
    let again = app.deliver(event).await.into_event().await.unwrap();
    assert_eq!(again.id(), first.id());
    assert_eq!(app.count("mp3s.files").await, 1, "converted once");
}

#[tokio::test]
async fn a_structured_mode_event_converts() {
    testkit::ensure_services();
    let app = spawn_app(&testkit::shared_mongo_uri()).await;
    let event = app
        .uploaded("mkv_vp9_opus_10s.mkv", OutputOptions::default())
        .await;
    let response = app
        .client
        .post(format!("{}/", app.url))
        .header("content-type", "application/cloudevents+json")
        .body(serde_json::to_vec(&event).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.into_event().await.unwrap().ty(),
        events::AUDIO_CONVERTED
    );
    let job = app.job(event.subject().unwrap()).await;
    assert_eq!(job.state, JobState::Converted);
    assert_eq!(app.count("mp3s.files").await, 1);
}

#[tokio::test]
async fn a_truncated_file_converts_what_is_there_and_the_job_says_partial() {
    testkit::ensure_services();
    let app = spawn_app(&testkit::shared_mongo_uri()).await;
    let event = app
        .uploaded(
            "mp4_truncated_60pct_faststart.mp4",
            OutputOptions::default(),
        )
        .await;
    let response = app.deliver(event.clone()).await;
    assert_eq!(response.status(), 200);
    let data: AudioConverted = events::from_event(&response.into_event().await.unwrap()).unwrap();
    // media-cases.json: 5.93 s of the claimed 10 s decode.
    assert!((data.duration_s - 5.93).abs() <= 0.1, "{}", data.duration_s);
    let job = app.job(event.subject().unwrap()).await;
    assert_eq!(job.state, JobState::Converted);
    assert!(job.partial, "the job says the source was cut short");
}

#[tokio::test]
async fn max_duration_s_refuses_a_longer_video_as_too_long() {
    testkit::ensure_services();
    let app = spawn_app_with(&testkit::shared_mongo_uri(), &[("MAX_DURATION_S", "5")]).await;
    let event = app
        .uploaded("mp4_h264_aac_faststart_10s.mp4", OutputOptions::default())
        .await;
    let response = app.deliver(event.clone()).await;
    assert_eq!(response.status(), 200, "permanent: no retry");
    let reply = response.into_event().await.unwrap();
    assert_eq!(reply.ty(), events::CONVERSION_FAILED);
    let data: ConversionFailed = events::from_event(&reply).unwrap();
    assert_eq!(data.reason, "too_long");
    let job = app.job(event.subject().unwrap()).await;
    assert_eq!(
        (job.state, job.error_code.as_deref()),
        (JobState::Failed, Some("too_long"))
    );
    assert!(job.lease_until.is_none());
    assert_eq!(app.count("mp3s.files").await, 0);
}

#[tokio::test]
async fn the_title_falls_back_to_the_uploaded_file_name() {
    testkit::ensure_services();
    let app = spawn_app(&testkit::shared_mongo_uri()).await;
    let default = OutputOptions::default();
    let corpus = testkit::media_corpus();
    let untitled = std::fs::read(corpus.join("mp4_h264_aac_faststart_10s.mp4")).unwrap();
    let tagged = std::fs::read(corpus.join("mp4_h264_aac_tagged_title_artist_10s.mp4")).unwrap();
    let mut titles = Vec::new();
    for bytes in [&untitled, &tagged] {
        let event = app
            .uploaded_bytes(bytes, "Été à Paris – live.mp4", default, default)
            .await;
        assert_eq!(app.deliver(event.clone()).await.status(), 200);
        let job = app.job(event.subject().unwrap()).await;
        titles.push(mp3_title(&app.mp3(&job).await));
    }
    assert_eq!(
        titles,
        [
            Some("Été à Paris – live".to_owned()),
            // The source's own title wins (media-cases.json).
            Some("Corpus Test Title – Café".to_owned())
        ]
    );
}

#[tokio::test]
async fn the_events_output_options_win_and_the_jobs_are_the_fallback() {
    testkit::ensure_services();
    let app = spawn_app(&testkit::shared_mongo_uri()).await;
    let bytes =
        std::fs::read(testkit::media_corpus().join("mp4_h264_aac_faststart_10s.mp4")).unwrap();
    let cbr = |kbps| OutputOptions {
        bitrate_kbps: Some(kbps),
        vbr_quality: None,
    };
    let mut rates = Vec::new();
    // (job, event): the event asks for 96 kb/s over the job's 320; then the event asks nothing.
    for (job_output, event_output) in [(cbr(320), cbr(96)), (cbr(320), OutputOptions::default())] {
        let event = app
            .uploaded_bytes(&bytes, "clip.mp4", job_output, event_output)
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
    // Options out of range in the event are a final 400, not a conversion.
    let event = app
        .uploaded_bytes(&bytes, "clip.mp4", cbr(320), cbr(500))
        .await;
    assert_eq!(app.deliver(event).await.status(), 400);
}

/// The user trial: an AVI whose audio is already 192 kbit/s MP3, uploaded with `bitrate_kbps=64`, comes
/// back at 64 kbit/s (re-encoded), whether the option is in the event or only in the job; without any
/// option the MP3 is stream-copied and keeps its 192 kbit/s.
#[tokio::test]
async fn an_mp3_source_is_reencoded_when_options_are_given_and_copied_otherwise() {
    testkit::ensure_services();
    let app = spawn_app(&testkit::shared_mongo_uri()).await;
    let bytes = std::fs::read(testkit::media_corpus().join("avi_mpeg4_mp3_10s.avi")).unwrap();
    let cbr64 = OutputOptions {
        bitrate_kbps: Some(64),
        vbr_quality: None,
    };
    let default = OutputOptions::default();
    let mut rates = Vec::new();
    // (job, event): both ask for 64; only the job does; nothing is asked.
    for (job_output, event_output) in [(cbr64, cbr64), (cbr64, default), (default, default)] {
        let event = app
            .uploaded_bytes(&bytes, "clip.avi", job_output, event_output)
            .await;
        let response = app.deliver(event).await;
        assert_eq!(response.status(), 200);
        let reply = response.into_event().await.unwrap();
        assert_eq!(reply.ty(), events::AUDIO_CONVERTED);
        rates.push(
            events::from_event::<AudioConverted>(&reply)
                .unwrap()
                .bitrate_kbps,
        );
    }
    // Whole-file averages (size over duration, tags included): 64 kbit/s re-encodes, the 192 kbit/s copy.
    assert!(
        (60..=70).contains(&rates[0]) && (60..=70).contains(&rates[1]),
        "{rates:?}"
    );
    assert!((185..=200).contains(&rates[2]), "{rates:?}");
}

/// Delivers two ~2 s conversions at once to a converter with `CONVERT_CONCURRENCY=concurrency`, sampling
/// both jobs' states meanwhile; returns the most jobs seen `converting` at once, and whether a job was
/// seen still `uploaded` (waiting for a slot) while the other converted.
async fn overlap(concurrency: &str) -> (usize, bool) {
    let app = spawn_app_with(
        &testkit::shared_mongo_uri(),
        &[("CONVERT_CONCURRENCY", concurrency)],
    )
    .await;
    let clip = looped_clip(12);
    let default = OutputOptions::default();
    let mut events = Vec::new();
    for name in ["one.m4a", "two.m4a"] {
        events.push(app.uploaded_bytes(&clip, name, default, default).await);
    }
    let ids: Vec<String> = events
        .iter()
        .map(|e| e.subject().unwrap().to_owned())
        .collect();
    let calls: Vec<_> = events
        .into_iter()
        .map(|e| {
            let request = app.client.post(format!("{}/", app.url)).event(e).unwrap();
            tokio::spawn(request.send())
        })
        .collect();
    let (mut most, mut saw_waiting) = (0, false);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut states = Vec::new();
        for id in &ids {
            states.push(app.job(id).await.state);
        }
        let converting = states
            .iter()
            .filter(|s| **s == JobState::Converting)
            .count();
        most = most.max(converting);
        saw_waiting |= converting == 1 && states.contains(&JobState::Uploaded);
        if states.iter().all(|s| *s == JobState::Converted) {
            break;
        }
        assert!(Instant::now() < deadline, "not converted: {states:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
    }
    (most, saw_waiting)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn convert_concurrency_1_converts_one_job_at_a_time() {
    testkit::ensure_services();
    let (most, saw_waiting) = overlap("1").await;
    assert_eq!(most, 1, "two jobs were converting at once");
    assert!(saw_waiting, "the second job never waited for the first");
    // The same sampling does see two at once when two are allowed, so it would catch an overlap.
    let (most, _) = overlap("2").await;
    assert_eq!(most, 2);
}

impl App {
    async fn metrics(&self) -> String {
        let r = self
            .client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }
}

#[tokio::test]
async fn metrics_count_conversions_by_outcome_and_time_the_event_route() {
    testkit::ensure_services();
    let app = spawn_app(&testkit::shared_mongo_uri()).await;
    // The recorder is process-wide and other tests convert concurrently: compare with a before value
    // and expect at least this test's own increment.
    let before = app.metrics().await;
    let event = app
        .uploaded("mp4_h264_aac_faststart_10s.mp4", OutputOptions::default())
        .await;
    assert_eq!(app.deliver(event).await.status(), 200);
    let after = app.metrics().await;
    let converted = |text: &str| {
        testkit::metric_value(text, "converter_conversions_total", "outcome=\"converted\"")
    };
    assert!(
        converted(&after) >= converted(&before) + 1.0,
        "converter_conversions_total{{outcome=\"converted\"}} did not grow: {after}"
    );
    let route = "method=\"POST\",route=\"/\",status=\"200\"";
    assert!(
        after.contains(&format!(
            "http_request_duration_seconds_bucket{{{route},le=\"+Inf\"}}"
        )),
        "a latency histogram for POST /: {after}"
    );
    assert!(
        testkit::metric_value(&after, "http_request_duration_seconds_count", route) >= 1.0,
        "{after}"
    );
}
