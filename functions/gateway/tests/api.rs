//! The gateway over HTTP against the real MongoDB-wire server (a database per test) and a real HTTP
//! receiver standing in for the Broker's ingress (`K_SINK`), which records the CloudEvents it gets.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::serve;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use cloudevents::{AttributesReader, Event};
use futures::{AsyncWriteExt, TryStreamExt};
use gateway::{AppState, Settings};
use mongodb::bson::{Bson, DateTime, doc, oid::ObjectId};
use tokio::io::AsyncWriteExt as _;
use vidmp3_runtime::config::Env;
use vidmp3_runtime::events::VideoUploaded;
use vidmp3_runtime::jobs::{self, JobState};
use vidmp3_runtime::jwt::{JwtKeys, JwtSettings};

const SECRET: &str = "gateway-test-secret-gateway-test-secret";

/// A CloudEvent receiver: records events; answers 503 while `failing` is set; waits `delay_ms` after
/// recording an event before it answers (a slow or hanging Broker ingress).
#[derive(Clone, Default)]
struct Receiver {
    events: Arc<Mutex<Vec<Event>>>,
    failing: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
}

impl Receiver {
    async fn spawn(&self) -> String {
        let me = self.clone();
        let router = Router::new().route(
            "/",
            post(move |event: Event| {
                let me = me.clone();
                async move {
                    if me.failing.load(Ordering::SeqCst) {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    me.events.lock().unwrap().push(event);
                    let delay = me.delay_ms.load(Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    StatusCode::ACCEPTED
                }
            }),
        );
        serve(router).await
    }

    fn uploaded(&self) -> Vec<VideoUploaded> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| vidmp3_runtime::events::from_event(e).unwrap())
            .collect()
    }
}

struct App {
    url: String,
    state: AppState,
    receiver: Receiver,
    client: reqwest::Client,
    keys: JwtKeys,
}

async fn spawn_app_with(mongo_uri: &str, extra: &[(&str, &str)]) -> App {
    testkit::ensure_services();
    let receiver = Receiver::default();
    let sink = receiver.spawn().await;
    // The auth stand-in echoes what it received, to prove the gateway forwards credentials byte for byte.
    let auth = serve(Router::new().route(
        "/login",
        post(|headers: axum::http::HeaderMap| async move {
            let got = headers
                .get("authorization")
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            (StatusCode::OK, [("content-type", "text/plain")], got)
        }),
    ))
    .await;
    let database = testkit::unique_name("gw");
    let mut vars = vec![
        ("AUTH_URL", auth.as_str()),
        ("MONGODB_URI", mongo_uri),
        ("MONGODB_DATABASE", database.as_str()),
        ("JWT_SECRET", SECRET),
        ("K_SINK", sink.as_str()),
        ("PUBLIC_BASE_URL", "http://gateway.test"),
        ("DB_CONNECT_TIMEOUT_SECONDS", "2"),
    ];
    vars.extend_from_slice(extra);
    let settings = Settings::from_env(&Env::from_pairs(vars.clone())).unwrap();
    let keys = JwtKeys::new(JwtSettings::from_env(&Env::from_pairs(vars)).unwrap()).unwrap();
    let state = AppState::new(settings).await.unwrap();
    let url = serve(gateway::router(state.clone())).await;
    App {
        url,
        state,
        receiver,
        client: reqwest::Client::new(),
        keys,
    }
}

async fn spawn_app(extra: &[(&str, &str)]) -> App {
    testkit::ensure_services();
    spawn_app_with(&testkit::shared_mongo_uri(), extra).await
}

/// A few bytes that sniff as an MP4 (ftyp box) followed by filler.
fn fake_video(len: usize) -> Vec<u8> {
    let mut v = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41".to_vec();
    v.resize(len, 0xAB);
    v
}

impl App {
    fn token(&self, sub: &str, admin: bool) -> String {
        self.keys
            .issue(sub, &format!("user{sub}@example.com"), admin)
            .unwrap()
            .0
    }

    async fn upload(&self, token: &str, name: &str, bytes: Vec<u8>) -> reqwest::Response {
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(name.to_owned())
            .mime_str("video/mp4")
            .unwrap();
        let form = reqwest::multipart::Form::new().part("file", part);
        self.client
            .post(format!("{}/upload", self.url))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    async fn upload_ok(&self, token: &str, name: &str, bytes: Vec<u8>) -> String {
        let r = self.upload(token, name, bytes).await;
        assert_eq!(r.status(), 202);
        r.json::<serde_json::Value>().await.unwrap()["job_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn count(&self, collection: &str) -> u64 {
        self.state
            .db
            .collection::<mongodb::bson::Document>(collection)
            .count_documents(doc! {})
            .await
            .unwrap()
    }

    async fn stored_nothing(&self) {
        assert_eq!(self.count("videos.files").await, 0, "no GridFS file");
        assert_eq!(self.count("videos.chunks").await, 0, "no GridFS chunk");
        assert_eq!(self.count("jobs").await, 0, "no job");
    }

    /// Marks a job converted with an MP3 of `bytes` stored in GridFS, as the converter would.
    async fn fake_conversion(&self, job_id: &str, bytes: &[u8]) -> ObjectId {
        let id = ObjectId::new();
        let mut upload = self
            .state
            .mp3s
            .open_upload_stream("x.mp3")
            .id(Bson::ObjectId(id))
            .await
            .unwrap();
        upload.write_all(bytes).await.unwrap();
        upload.close().await.unwrap();
        jobs::jobs(&self.state.db)
            .update_one(
                doc! {"_id": job_id},
                doc! {"$set": {"state": "converted", "mp3_id": id, "duration_s": 10.0, "mp3_size_bytes": bytes.len() as i64, "bitrate_kbps": 192, "updated_at": DateTime::now()}},
            )
            .await
            .unwrap();
        id
    }
}

async fn problem_code(r: reqwest::Response) -> String {
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    r.json::<serde_json::Value>().await.unwrap()["code"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn an_upload_is_stored_in_gridfs_makes_a_job_and_sends_one_event() {
    let app = spawn_app(&[]).await;
    let token = app.token("7", false);
    let video = fake_video(700_000);
    let r = app.upload(&token, "Café – été.mp4", video.clone()).await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let body: serde_json::Value = r.json().await.unwrap();
    let job_id = body["job_id"].as_str().unwrap();
    assert_eq!(location, format!("http://gateway.test/jobs/{job_id}"));
    assert_eq!(body["status_url"], location);
    assert_eq!(body["size_bytes"], 700_000);
    assert_eq!(body["event_pending"], false);

    let events = app.receiver.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].ty(), "dev.vidmp3.video.uploaded");
    assert_eq!(events[0].source().as_str(), "/gateway");
    assert_eq!(events[0].subject(), Some(job_id));
    let data = &app.receiver.uploaded()[0];
    assert_eq!(
        (data.owner.as_str(), data.filename.as_str(), data.size_bytes),
        ("user7@example.com", "Café – été.mp4", 700_000)
    );

    let stored: Vec<u8> = {
        let mut bytes = Vec::new();
        let mut download = app
            .state
            .videos
            .open_download_stream(Bson::ObjectId(ObjectId::parse_str(&data.video_id).unwrap()))
            .await
            .unwrap();
        futures::AsyncReadExt::read_to_end(&mut download, &mut bytes)
            .await
            .unwrap();
        bytes
    };
    assert!(stored == video, "GridFS holds the uploaded bytes");
    let job: serde_json::Value = app
        .get(&token, &format!("/jobs/{job_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["state"], "uploaded");
    assert_eq!(job["filename"], "Café – été.mp4");
    assert!(job.get("mp3").is_none());
}

#[tokio::test]
async fn a_raw_body_upload_with_a_filename_and_output_options_works() {
    let app = spawn_app(&[]).await;
    let token = app.token("1", false);
    let r = app
        .client
        .post(format!(
            "{}/upload?filename=clip.mkv&bitrate_kbps=128",
            app.url
        ))
        .bearer_auth(&token)
        .header("content-type", "video/x-matroska")
        .body(fake_video(10_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let data = &app.receiver.uploaded()[0];
    assert_eq!(data.filename, "clip.mkv");
    assert_eq!(data.output.bitrate_kbps, Some(128));
}

#[tokio::test]
async fn bad_uploads_are_refused_with_problems_and_store_nothing() {
    let app = spawn_app(&[("MAX_UPLOAD_BYTES", "100000")]).await;
    let token = app.token("1", false);
    assert_eq!(
        problem_code(app.upload(&token, "empty.mp4", Vec::new()).await).await,
        "empty_file"
    );
    let text = app
        .upload(
            &token,
            "notes.mp4",
            b"just some text, not a video at all\n".repeat(50),
        )
        .await;
    assert_eq!(text.status(), 415);
    assert_eq!(problem_code(text).await, "not_media");
    let png = app
        .upload(
            &token,
            "image.mp4",
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR".to_vec(),
        )
        .await;
    assert_eq!(png.status(), 415);
    let big = app.upload(&token, "big.mp4", fake_video(300_000)).await;
    assert_eq!(big.status(), 413);
    assert_eq!(problem_code(big).await, "payload_too_large");
    // Without Content-Length (chunked), the limit holds while streaming.
    let chunks = futures::stream::iter((0..30).map(|i| {
        Ok::<_, std::io::Error>(if i == 0 {
            fake_video(10_000)
        } else {
            vec![1u8; 10_000]
        })
    }));
    let streamed = app
        .client
        .post(format!("{}/upload?filename=s.mp4", app.url))
        .bearer_auth(&token)
        .header("content-type", "video/mp4")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 413);
    let bad_options = app
        .client
        .post(format!(
            "{}/upload?filename=a.mp4&bitrate_kbps=999",
            app.url
        ))
        .bearer_auth(&token)
        .header("content-type", "video/mp4")
        .body(fake_video(1000))
        .send()
        .await
        .unwrap();
    assert_eq!(problem_code(bad_options).await, "invalid_output_options");
    let wrong_type = app
        .client
        .post(format!("{}/upload", app.url))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
    let two_files = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(fake_video(1000)).file_name("a.mp4"),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(fake_video(1000)).file_name("b.mp4"),
        );
    let r = app
        .client
        .post(format!("{}/upload", app.url))
        .bearer_auth(&token)
        .multipart(two_files)
        .send()
        .await
        .unwrap();
    assert_eq!(problem_code(r).await, "too_many_files");
    let anonymous = app
        .client
        .post(format!("{}/upload", app.url))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.stored_nothing().await;
    assert!(app.receiver.events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_aborted_upload_leaves_no_chunks_behind() {
    let app = spawn_app(&[]).await;
    let token = app.token("1", false);
    let addr = app.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /upload?filename=cut.mp4 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: video/mp4\r\nContent-Length: 5000000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&fake_video(1_500_000)).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (files, chunks) = (
            app.count("videos.files").await,
            app.count("videos.chunks").await,
        );
        if files == 0 && chunks == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{files} files and {chunks} chunks left behind"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(app.count("jobs").await, 0);
}

#[tokio::test]
async fn only_the_owner_or_an_admin_sees_a_job_or_its_file() {
    let app = spawn_app(&[]).await;
    let (alice, bob, admin) = (
        app.token("1", false),
        app.token("2", false),
        app.token("3", true),
    );
    let job_id = app.upload_ok(&alice, "a.mp4", fake_video(5000)).await;
    let mp3_id = app.fake_conversion(&job_id, b"ID3 fake mp3 bytes").await;
    for path in [
        format!("/jobs/{job_id}"),
        format!("/jobs/{job_id}/mp3"),
        format!("/download?fid={}", mp3_id.to_hex()),
    ] {
        let r = app.get(&bob, &path).await;
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(problem_code(r).await, "not_found");
        assert_eq!(app.get(&alice, &path).await.status(), 200, "{path}");
        assert_eq!(app.get(&admin, &path).await.status(), 200, "{path}");
    }
    let unknown = app.get(&alice, &format!("/jobs/{}", uuid_v4())).await;
    assert_eq!(unknown.status(), 404);
    let r = app
        .client
        .delete(format!("{}/jobs/{job_id}", app.url))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        problem_code(app.get(&alice, "/jobs/not-a-uuid").await).await,
        "invalid_id"
    );
    assert_eq!(app.get(&alice, "/download?fid=xyz").await.status(), 400);
    let listed: serde_json::Value = app.get(&bob, "/jobs").await.json().await.unwrap();
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 0);
    let no_token = app
        .client
        .get(format!("{}/jobs/{job_id}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
}

fn uuid_v4() -> String {
    let n: u128 = rand_u128();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (n >> 96) as u32,
        (n >> 80) as u16,
        (n >> 68) as u16 & 0xfff,
        (n >> 56) as u16 & 0xfff,
        n as u64 & 0xffff_ffff_ffff
    )
}

fn rand_u128() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test]
async fn downloads_stream_with_headers_ranges_and_etags() {
    let app = spawn_app(&[]).await;
    let token = app.token("1", false);
    let job_id = app
        .upload_ok(&token, "Zoë's clip.mov", fake_video(5000))
        .await;
    let mp3: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    app.fake_conversion(&job_id, &mp3).await;
    let r = app.get(&token, &format!("/jobs/{job_id}/mp3")).await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "audio/mpeg");
    assert_eq!(h["content-length"], "600000");
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(
        h["content-disposition"],
        "attachment; filename=\"Zo_'s clip.mp3\"; filename*=UTF-8''Zo%C3%AB%27s%20clip.mp3"
    );
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert!(r.bytes().await.unwrap() == mp3);

    let ranged = |range: &'static str| {
        app.client
            .get(format!("{}/jobs/{job_id}/mp3", app.url))
            .bearer_auth(&token)
            .header("range", range)
            .send()
    };
    let part = ranged("bytes=300000-300099").await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        "bytes 300000-300099/600000"
    );
    assert!(part.bytes().await.unwrap() == mp3[300_000..300_100]);
    let tail = ranged("bytes=-10").await.unwrap();
    assert_eq!(tail.status(), 206);
    assert!(tail.bytes().await.unwrap() == mp3[599_990..]);
    let beyond = ranged("bytes=700000-").await.unwrap();
    assert_eq!(beyond.status(), 416);
    assert_eq!(beyond.headers()["content-range"], "bytes */600000");
    let cached = app
        .client
        .get(format!("{}/jobs/{job_id}/mp3", app.url))
        .bearer_auth(&token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    let job: serde_json::Value = app
        .get(&token, &format!("/jobs/{job_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        job["mp3"]["url"],
        format!("http://gateway.test/jobs/{job_id}/mp3")
    );
}

#[tokio::test]
async fn a_job_not_converted_yet_has_no_mp3() {
    let app = spawn_app(&[]).await;
    let token = app.token("1", false);
    let job_id = app.upload_ok(&token, "a.mp4", fake_video(5000)).await;
    let r = app.get(&token, &format!("/jobs/{job_id}/mp3")).await;
    assert_eq!(r.status(), 409);
    assert_eq!(problem_code(r).await, "not_ready");
}

#[tokio::test]
async fn delete_removes_the_video_the_mp3_and_the_job() {
    let app = spawn_app(&[]).await;
    let token = app.token("1", false);
    let job_id = app.upload_ok(&token, "a.mp4", fake_video(300_000)).await;
    app.fake_conversion(&job_id, &[7u8; 1000]).await;
    let r = app
        .client
        .delete(format!("{}/jobs/{job_id}", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for c in [
        "jobs",
        "videos.files",
        "videos.chunks",
        "mp3s.files",
        "mp3s.chunks",
    ] {
        assert_eq!(app.count(c).await, 0, "{c}");
    }
    assert_eq!(
        app.get(&token, &format!("/jobs/{job_id}")).await.status(),
        404
    );
}

#[tokio::test]
async fn jobs_are_listed_newest_first_in_pages() {
    let app = spawn_app(&[]).await;
    let token = app.token("1", false);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            app.upload_ok(&token, &format!("{i}.mp4"), fake_video(1000))
                .await,
        );
    }
    let page1: serde_json::Value = app.get(&token, "/jobs?limit=2").await.json().await.unwrap();
    let got: Vec<&str> = page1["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str()]);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let page2: serde_json::Value = app
        .get(&token, &format!("/jobs?limit=2&before={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page2["jobs"][0]["job_id"], ids[0].as_str());
    assert!(page2.get("next_cursor").is_none());
    assert_eq!(app.get(&token, "/jobs?limit=0").await.status(), 400);
    assert_eq!(
        problem_code(app.get(&token, "/jobs?limit=abc").await).await,
        "invalid_query"
    );
    assert_eq!(
        problem_code(app.get(&token, "/download").await).await,
        "invalid_query"
    );
}

#[tokio::test]
async fn the_outbox_resends_once_the_sink_is_back_and_never_twice() {
    let app = spawn_app(&[]).await;
    let token = app.token("1", false);
    app.receiver.failing.store(true, Ordering::SeqCst);
    let r = app.upload(&token, "a.mp4", fake_video(5000)).await;
    assert_eq!(
        r.status(),
        202,
        "the upload succeeds although the sink is down"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["event_pending"], true);
    let redeliver = || async {
        app.client
            .post(format!("{}/internal/redeliver", app.url))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    assert_eq!(redeliver().await["sent"], 0, "still down");
    app.receiver.failing.store(false, Ordering::SeqCst);
    let first = redeliver().await;
    assert_eq!(first["sent"], 1);
    assert_eq!(redeliver().await["sent"], 0);
    let events = app.receiver.uploaded();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].job_id, body["job_id"].as_str().unwrap());
    let job = jobs::jobs(&app.state.db)
        .find_one(doc! {"_id": &events[0].job_id})
        .await
        .unwrap()
        .unwrap();
    assert!(!job.event_pending);
}

#[tokio::test]
async fn fifty_concurrent_uploads_make_fifty_jobs_and_fifty_events() {
    let app = Arc::new(spawn_app(&[]).await);
    let token = app.token("1", false);
    let uploads = (0..50).map(|i| {
        let (app, token) = (app.clone(), token.clone());
        tokio::spawn(async move {
            app.upload_ok(&token, &format!("{i}.mp4"), fake_video(50_000 + i))
                .await
        })
    });
    let mut ids: Vec<String> = futures::future::join_all(uploads)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50);
    assert_eq!(app.count("jobs").await, 50);
    assert_eq!(app.count("videos.files").await, 50);
    let mut evented: Vec<String> = app
        .receiver
        .uploaded()
        .into_iter()
        .map(|e| e.job_id)
        .collect();
    evented.sort();
    assert_eq!(evented, ids);
}

#[tokio::test]
async fn login_is_forwarded_to_auth_byte_for_byte() {
    let app = spawn_app(&[]).await;
    let r = app
        .client
        .post(format!("{}/login", app.url))
        .basic_auth("zoë@example.com", Some("pässword"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let expected = format!("Basic {}", base64_encode("zoë@example.com:pässword"));
    assert_eq!(r.text().await.unwrap(), expected);
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn mongodb_down_is_503_within_the_timeout_and_nothing_is_half_written() {
    let mut mongo = testkit::MongoServer::start().await;
    let app = spawn_app_with(&mongo.uri, &[]).await;
    let token = app.token("1", false);
    app.upload_ok(&token, "before.mp4", fake_video(1000)).await;
    mongo.stop().await;
    let started = Instant::now();
    let r = app.upload(&token, "during.mp4", fake_video(400_000)).await;
    assert_eq!(r.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(problem_code(r).await, "dependency_unavailable");
    assert_eq!(app.get(&token, "/jobs").await.status(), 503);
    assert_eq!(
        app.client
            .get(format!("{}/readyz", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    mongo.restart().await;
    let mut ok = false;
    for _ in 0..40 {
        if app.get(&token, "/jobs").await.status() == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(ok, "works again without a restart");
    let files: Vec<mongodb::bson::Document> = app
        .state
        .db
        .collection("videos.files")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        files.len(),
        1,
        "only the upload from before the outage: {files:?}"
    );
    let before_id = files[0].get("_id").unwrap().clone();
    let stray_chunks = app
        .state
        .db
        .collection::<mongodb::bson::Document>("videos.chunks")
        .count_documents(doc! {"files_id": {"$ne": before_id}})
        .await
        .unwrap();
    assert_eq!(stray_chunks, 0, "no chunk of the refused upload");
    assert_eq!(app.count("jobs").await, 1);
}

#[tokio::test]
async fn metrics_and_health() {
    let app = spawn_app(&[]).await;
    let token = app.token("1", false);
    app.upload_ok(&token, "a.mp4", fake_video(1000)).await;
    let text = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("gateway_uploads_total{outcome=\"accepted\"}"),
        "{text}"
    );
    assert!(text.contains("route=\"/jobs/{id}\"") || text.contains("route=\"/upload\""));
    assert_eq!(
        app.client
            .get(format!("{}/healthz", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.client
            .get(format!("{}/readyz", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let job_state = jobs::jobs(&app.state.db)
        .find_one(doc! {})
        .await
        .unwrap()
        .unwrap()
        .state;
    assert_eq!(job_state, JobState::Uploaded);
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_status_and_body() {
    let app = spawn_app(&[]).await;
    let doc: serde_json::Value = app
        .client
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let expect: &[(&str, &str, &[&str])] = &[
        ("/login", "post", &["200", "401", "429", "503"]),
        (
            "/upload",
            "post",
            &["202", "400", "401", "408", "413", "415", "503"],
        ),
        ("/jobs", "get", &["200", "400", "401", "503"]),
        ("/jobs/{id}", "get", &["200", "400", "401", "404", "503"]),
        ("/jobs/{id}", "delete", &["204", "400", "401", "404", "503"]),
        (
            "/jobs/{id}/mp3",
            "get",
            &[
                "200", "206", "304", "400", "401", "404", "409", "416", "503",
            ],
        ),
        (
            "/download",
            "get",
            &["200", "206", "400", "401", "404", "416"],
        ),
        ("/internal/redeliver", "post", &["200"]),
        ("/healthz", "get", &["200"]),
        ("/readyz", "get", &["200", "503"]),
        ("/metrics", "get", &["200"]),
        ("/openapi.json", "get", &["200"]),
        ("/", "get", &["200", "304"]),
        ("/assets/{file}", "get", &["200", "304", "404"]),
    ];
    for (path, method, statuses) in expect {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        for status in *statuses {
            assert!(
                op["responses"][status].is_object(),
                "{method} {path} lacks {status}"
            );
        }
    }
    for schema in [
        "Problem",
        "JobView",
        "JobPage",
        "UploadAccepted",
        "JobState",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema}"
        );
    }
    assert_eq!(
        doc["paths"].as_object().unwrap().len(),
        13,
        "every route and only routes"
    );
    let missing = app
        .client
        .get(format!("{}/assets/nope.js", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404, "as documented for /assets/{{file}}");
}

/// The web page's security headers (the page itself is tested in a browser: eventing/tests/browser.rs).
#[tokio::test]
async fn the_page_and_its_assets_carry_a_strict_content_security_policy() {
    let app = spawn_app(&[]).await;
    let client = &app.client;
    for (path, kind) in [
        ("/", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
        ("/assets/icon.svg", "image/svg+xml"),
    ] {
        let r = client
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["cross-origin-opener-policy"], "same-origin", "{path}");
        assert!(h.contains_key("permissions-policy"), "{path}");
        // Revalidated, never stale: the ETag answers 304.
        let etag = h["etag"].clone();
        let again = client
            .get(format!("{}{path}", app.url))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
    }
    // The page has no inline script or style for the policy to have to allow.
    let html = client
        .get(format!("{}/", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!html.contains("<script>") && !html.contains("style=") && !html.contains("<style"));
    // API answers carry the headers too.
    let r = client
        .get(format!("{}/jobs", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(r.headers().contains_key("content-security-policy"));
}

/// Sends `head` (a request without its body) on a raw connection and returns the status line of the
/// answer, which must come while the body is still withheld.
async fn status_line_before_the_body(app: &App, head: &str) -> String {
    use tokio::io::AsyncReadExt;
    let addr = app.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    // Generous: only a server that waits for the body (which never comes) runs into it.
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while !got.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "no answer while the body is withheld");
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_content_length_over_the_limit_is_413_before_any_body_and_stores_nothing() {
    let app = spawn_app(&[("MAX_UPLOAD_BYTES", "100000")]).await;
    let token = app.token("1", false);
    let addr = app.url.trim_start_matches("http://").to_owned();
    for content_type in ["video/mp4", "multipart/form-data; boundary=XyZ"] {
        let head = format!(
            "POST /upload?filename=big.mp4 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: {content_type}\r\nContent-Length: 50000000000\r\n\r\n"
        );
        let status = status_line_before_the_body(&app, &head).await;
        assert!(
            status.starts_with("HTTP/1.1 413"),
            "{content_type}: {status}"
        );
    }
    app.stored_nothing().await;
    assert!(app.receiver.events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_job_shows_its_error_progress_and_timestamps() {
    let app = spawn_app(&[]).await;
    let token = app.token("1", false);
    let job_id = app.upload_ok(&token, "silent.mp4", fake_video(5000)).await;
    let fresh: serde_json::Value = app
        .get(&token, &format!("/jobs/{job_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fresh["progress"], 0.0);
    assert!(fresh.get("error").is_none(), "{fresh}");
    let created = DateTime::parse_rfc3339_str(fresh["created_at"].as_str().unwrap()).unwrap();
    let age = DateTime::now().timestamp_millis() - created.timestamp_millis();
    assert!((0..60_000).contains(&age), "created {age} ms ago");
    let later = DateTime::from_millis(created.timestamp_millis() + 5_000);
    jobs::jobs(&app.state.db)
        .update_one(
            doc! {"_id": &job_id},
            doc! {"$set": {"state": "failed", "progress": 0.4, "error_code": "no_audio_stream",
            "error_message": "the file has no audio track", "updated_at": later}},
        )
        .await
        .unwrap();
    let job: serde_json::Value = app
        .get(&token, &format!("/jobs/{job_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["state"], "failed");
    assert_eq!(job["error"]["code"], "no_audio_stream", "{job}");
    assert_eq!(
        job["error"]["message"], "the file has no audio track",
        "{job}"
    );
    assert_eq!(job["progress"], 0.4);
    assert_eq!(job["created_at"], fresh["created_at"], "unchanged");
    assert_eq!(
        DateTime::parse_rfc3339_str(job["updated_at"].as_str().unwrap()).unwrap(),
        later
    );
    assert!(job.get("mp3").is_none(), "{job}");
}

#[tokio::test]
async fn output_options_from_the_query_or_form_parts_reach_the_event_and_not_both() {
    let app = spawn_app(&[]).await;
    let token = app.token("1", false);
    let raw = |query: &'static str| {
        app.client
            .post(format!("{}/upload?filename=a.mp4&{query}", app.url))
            .bearer_auth(&token)
            .header("content-type", "video/mp4")
            .body(fake_video(2000))
            .send()
    };
    let form = |options: &[(&'static str, &'static str)]| {
        let mut form = reqwest::multipart::Form::new();
        for (name, value) in options {
            form = form.text(*name, *value);
        }
        let file = reqwest::multipart::Part::bytes(fake_video(2000))
            .file_name("b.mp4")
            .mime_str("video/mp4")
            .unwrap();
        app.client
            .post(format!("{}/upload", app.url))
            .bearer_auth(&token)
            .multipart(form.part("file", file))
            .send()
    };
    assert_eq!(raw("vbr_quality=4").await.unwrap().status(), 202);
    assert_eq!(form(&[("bitrate_kbps", "96")]).await.unwrap().status(), 202);
    assert_eq!(form(&[("vbr_quality", "0")]).await.unwrap().status(), 202);
    let outputs: Vec<(Option<u32>, Option<u32>)> = app
        .receiver
        .uploaded()
        .iter()
        .map(|e| (e.output.bitrate_kbps, e.output.vbr_quality.map(u32::from)))
        .collect();
    assert_eq!(
        outputs,
        [(None, Some(4)), (Some(96), None), (None, Some(0))]
    );

    let both_query = raw("vbr_quality=4&bitrate_kbps=128").await.unwrap();
    assert_eq!(both_query.status(), 400);
    assert_eq!(problem_code(both_query).await, "invalid_output_options");
    let both_parts = form(&[("bitrate_kbps", "128"), ("vbr_quality", "2")])
        .await
        .unwrap();
    assert_eq!(both_parts.status(), 400);
    assert_eq!(problem_code(both_parts).await, "invalid_output_options");
    let not_a_number = form(&[("vbr_quality", "high")]).await.unwrap();
    assert_eq!(problem_code(not_a_number).await, "invalid_output_options");
    assert_eq!(
        app.receiver.uploaded().len(),
        3,
        "no event for a refused upload"
    );
    assert_eq!(app.count("jobs").await, 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.count("videos.files").await,
        3,
        "refused uploads keep no file"
    );
}

/// Makes one job whose event is pending (the sink was down at upload time).
async fn pending_job(app: &App) -> String {
    let token = app.token("1", false);
    app.receiver.failing.store(true, Ordering::SeqCst);
    let r = app.upload(&token, "a.mp4", fake_video(5000)).await;
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["event_pending"], true);
    app.receiver.failing.store(false, Ordering::SeqCst);
    app.receiver.events.lock().unwrap().clear();
    body["job_id"].as_str().unwrap().to_owned()
}

async fn redeliver(app: &App) -> serde_json::Value {
    app.client
        .post(format!("{}/internal/redeliver", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn two_concurrent_redeliveries_to_a_slow_sink_send_the_event_once() {
    let app = spawn_app(&[]).await;
    let job_id = pending_job(&app).await;
    app.receiver.delay_ms.store(1_500, Ordering::SeqCst);
    let (a, b) = tokio::join!(redeliver(&app), async {
        // The second starts while the first waits for the sink.
        tokio::time::sleep(Duration::from_millis(300)).await;
        redeliver(&app).await
    });
    assert_eq!(
        a["sent"].as_u64().unwrap() + b["sent"].as_u64().unwrap(),
        1,
        "{a} {b}"
    );
    assert_eq!(b["sent"], 0, "the claim is held for the whole send: {b}");
    let events = app.receiver.uploaded();
    assert_eq!(events.len(), 1, "exactly one event received");
    assert_eq!(events[0].job_id, job_id);
    assert_eq!(redeliver(&app).await["sent"], 0, "and nothing later");
    assert_eq!(app.receiver.uploaded().len(), 1);
}

/// A sink that never answers: the sender gives up after `outbox::SEND_TIMEOUT`, well inside its claim
/// (`outbox::CLAIM_MS`), so the claim cannot expire mid-send; the event stays pending for a later try.
#[tokio::test]
async fn a_hanging_sink_is_given_up_on_well_within_the_claim() {
    use gateway::outbox::{CLAIM_MS, SEND_TIMEOUT};
    let send_ms = i64::try_from(SEND_TIMEOUT.as_millis()).unwrap();
    assert!(
        send_ms * 2 <= CLAIM_MS,
        "{send_ms} ms send, {CLAIM_MS} ms claim"
    );
    let app = spawn_app(&[]).await;
    let job_id = pending_job(&app).await;
    app.receiver.delay_ms.store(600_000, Ordering::SeqCst);
    let started = Instant::now();
    let (a, b) = tokio::join!(redeliver(&app), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        redeliver(&app).await
    });
    let took = started.elapsed();
    assert_eq!(
        (a["sent"].clone(), a["failed"].clone()),
        (0.into(), 1.into()),
        "{a}"
    );
    assert_eq!(
        (b["sent"].clone(), b["failed"].clone()),
        (0.into(), 0.into()),
        "claimed: {b}"
    );
    assert!(
        took < SEND_TIMEOUT + Duration::from_secs(5),
        "gave up after {took:?}"
    );
    assert_eq!(
        app.receiver.uploaded().len(),
        1,
        "one attempt reached the sink"
    );
    let job = jobs::jobs(&app.state.db)
        .find_one(doc! {"_id": &job_id})
        .await
        .unwrap()
        .unwrap();
    assert!(job.event_pending, "still pending");
    assert!(
        job.event_claim_until.unwrap() <= DateTime::now(),
        "the claim is released for the next redelivery"
    );
}
