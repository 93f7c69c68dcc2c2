//! End to end: gateway → Broker (this crate's runner over real RabbitMQ) → converter → Broker →
//! notification → SMTP, with the real manifests in `eventing/` (under a namespace of the test's own, so
//! tests and a running dev stack never share queues), the real MongoDB-wire server and a real SMTP server.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use mongodb::bson::doc;
use vidmp3_runtime::config::Env;
use vidmp3_runtime::jwt::{JwtKeys, JwtSettings};

const SECRET: &str = "e2e-secret-e2e-secret-e2e-secret-e2e-secret";

struct Stack {
    gateway: String,
    broker_ingress: String,
    runner: Option<eventing::Runner>,
    smtp: testkit::SmtpServer,
    db: mongodb::Database,
    keys: JwtKeys,
    dead_letters: Arc<Mutex<Vec<axum::http::HeaderMap>>>,
    client: reqwest::Client,
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(vidmp3_runtime::serve::serve_on(
        listener,
        router,
        std::future::pending(),
    ));
    url
}

async fn start_stack(amqp_url: &str) -> Stack {
    testkit::ensure_services();
    let namespace = testkit::unique_name("e2e");
    let database = namespace.clone();
    let mongo = testkit::shared_mongo_uri();
    let smtp = testkit::SmtpServer::start().await;
    let common = [
        ("MONGODB_URI", mongo.as_str()),
        ("MONGODB_DATABASE", database.as_str()),
        ("PUBLIC_BASE_URL", "http://gateway.e2e"),
    ];

    let converter = converter::service::AppState::new(
        converter::service::Settings::from_env(&Env::from_pairs(
            common.iter().copied().chain([("CONVERT_CONCURRENCY", "2")]),
        ))
        .unwrap(),
    )
    .await
    .unwrap();
    let converter_url = serve(converter::service::router(converter)).await;
    let smtp_url = smtp.url();
    let notification = notification::AppState::new(
        notification::Settings::from_env(&Env::from_pairs(
            common
                .iter()
                .copied()
                .chain([("SMTP_URL", smtp_url.as_str())]),
        ))
        .unwrap(),
    )
    .await
    .unwrap();
    let notification_url = serve(notification::router(notification)).await;
    let dead_letters = Arc::new(Mutex::new(Vec::new()));
    let recorded = dead_letters.clone();
    let dead_letters_url = serve(Router::new().route(
        "/",
        post(move |headers: axum::http::HeaderMap| {
            recorded.lock().unwrap().push(headers);
            async { axum::http::StatusCode::ACCEPTED }
        }),
    ))
    .await;

    // The real manifests, moved into a namespace of this test's own.
    let dir = testkit::workspace_root().join("eventing");
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("namespace: vidmp3", &format!("namespace: {namespace}"));
            sources.push((path, text));
        }
    }
    let topology = eventing::Topology::from_sources(&sources).unwrap();
    let mut subscribers = eventing::SubscriberMap::new();
    subscribers.insert("converter", &converter_url).unwrap();
    subscribers
        .insert("notification", &notification_url)
        .unwrap();
    subscribers
        .insert("dead-letters", &dead_letters_url)
        .unwrap();
    let mut config = eventing::Config::new(topology, subscribers, amqp_url);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.shutdown_grace = Duration::from_secs(5);
    config.reconnect_max_backoff = Duration::from_millis(500);
    let runner = eventing::start(config).await.unwrap();
    assert!(runner.wait_connected(Duration::from_secs(20)).await);
    let broker_ingress = runner.ingress_url(&namespace, "default");

    let gateway_vars: Vec<(&str, &str)> = common
        .iter()
        .copied()
        .chain([
            ("AUTH_URL", "http://127.0.0.1:9"),
            ("JWT_SECRET", SECRET),
            ("K_SINK", broker_ingress.as_str()),
        ])
        .collect();
    let gateway = gateway::AppState::new(
        gateway::Settings::from_env(&Env::from_pairs(gateway_vars.clone())).unwrap(),
    )
    .await
    .unwrap();
    let gateway_url = serve(gateway::router(gateway)).await;
    let keys =
        JwtKeys::new(JwtSettings::from_env(&Env::from_pairs(gateway_vars)).unwrap()).unwrap();
    let db = mongodb::Client::with_uri_str(&mongo)
        .await
        .unwrap()
        .database(&database);
    Stack {
        gateway: gateway_url,
        broker_ingress,
        runner: Some(runner),
        smtp,
        db,
        keys,
        dead_letters,
        client: reqwest::Client::new(),
    }
}

impl Stack {
    fn token(&self) -> String {
        self.keys.issue("42", "owner@example.com", false).unwrap().0
    }

    async fn upload(&self, file: &str) -> String {
        let path = testkit::media_corpus().join(file);
        let bytes = std::fs::read(&path).unwrap();
        let part = reqwest::multipart::Part::bytes(bytes).file_name(file.to_owned());
        let r = self
            .client
            .post(format!("{}/upload", self.gateway))
            .bearer_auth(self.token())
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        r.json::<serde_json::Value>().await.unwrap()["job_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn job(&self, id: &str) -> serde_json::Value {
        self.client
            .get(format!("{}/jobs/{id}", self.gateway))
            .bearer_auth(self.token())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn wait_for_email(&self, job_id: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            // Flush the gateway's outbox as the dev stack's timer (or the cluster's PingSource) would.
            let _ = self
                .client
                .post(format!("{}/internal/redeliver", self.gateway))
                .send()
                .await;
            if let Some(mail) = self
                .smtp
                .messages()
                .into_iter()
                .find(|m| m.contains(job_id))
            {
                return mail;
            }
            assert!(
                Instant::now() < deadline,
                "no email about {job_id} within {timeout:?}; job: {}",
                self.job(job_id).await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn count(&self, collection: &str) -> u64 {
        self.db
            .collection::<mongodb::bson::Document>(collection)
            .count_documents(doc! {})
            .await
            .unwrap()
    }

    /// Waits a little longer than any retry would take to show a duplicate, then counts.
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// The download link in an email's plain-text part (quoted-printable soft breaks undone).
fn link_in(mail: &str) -> String {
    let flat = mail
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    let start = flat
        .find("http://gateway.e2e/jobs/")
        .expect("a download link");
    flat[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches(['.', ')'])
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corpus_video_becomes_one_mp3_and_one_email_whose_link_downloads_it() {
    let stack = start_stack(&testkit::shared_amqp_url()).await;
    let job_id = stack.upload("mp4_h264_aac_moov_at_end_10s.mp4").await;
    let mail = stack
        .wait_for_email(&job_id, Duration::from_secs(120))
        .await;
    let link = link_in(&mail);
    assert_eq!(link, format!("http://gateway.e2e/jobs/{job_id}/mp3"));
    let path = link.trim_start_matches("http://gateway.e2e");
    let mp3 = stack
        .client
        .get(format!("{}{path}", stack.gateway))
        .bearer_auth(stack.token())
        .send()
        .await
        .unwrap();
    assert_eq!(mp3.status(), 200);
    assert_eq!(mp3.headers()["content-type"], "audio/mpeg");
    let file = tempfile::NamedTempFile::with_suffix(".mp3").unwrap();
    std::fs::write(file.path(), mp3.bytes().await.unwrap()).unwrap();
    let seconds = testkit::decoded_audio_seconds(file.path()).expect("the MP3 decodes");
    assert!(
        (seconds - 10.01).abs() <= 0.1,
        "decoded {seconds} s, want 10.01 ± 0.1"
    );
    stack.settle().await;
    assert_eq!(stack.count("mp3s.files").await, 1, "exactly one MP3");
    assert_eq!(stack.smtp.messages().len(), 1, "exactly one email");
    let job = stack.job(&job_id).await;
    assert_eq!(job["state"], "converted");
    assert_eq!(job["notified"], true);
    assert!(stack.dead_letters.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_video_without_audio_fails_with_its_reason_and_one_failure_email() {
    let stack = start_stack(&testkit::shared_amqp_url()).await;
    let job_id = stack.upload("mp4_h264_no_audio_track_10s.mp4").await;
    let mail = stack
        .wait_for_email(&job_id, Duration::from_secs(120))
        .await;
    assert!(mail.contains("We could not convert"), "{mail}");
    stack.settle().await;
    let job = stack.job(&job_id).await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["error"]["code"], "no_audio_stream");
    assert_eq!(stack.count("mp3s.files").await, 0);
    assert_eq!(stack.smtp.messages().len(), 1, "exactly one failure email");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicated_event_still_gives_one_mp3_and_one_email() {
    let stack = start_stack(&testkit::shared_amqp_url()).await;
    let job_id = stack.upload("webm_vp8_vorbis_10s.webm").await;
    stack
        .wait_for_email(&job_id, Duration::from_secs(120))
        .await;
    // The Broker delivers at least once: replay the same event through the ingress, twice.
    let job: vidmp3_runtime::jobs::Job = vidmp3_runtime::jobs::jobs(&stack.db)
        .find_one(doc! {"_id": &job_id})
        .await
        .unwrap()
        .unwrap();
    let event = vidmp3_runtime::events::to_event(&gateway::outbox::uploaded_event(&job));
    for _ in 0..2 {
        vidmp3_runtime::events::send(&stack.client, &stack.broker_ingress, event.clone())
            .await
            .unwrap();
    }
    stack.settle().await;
    assert_eq!(stack.count("mp3s.files").await, 1, "exactly one MP3");
    assert_eq!(stack.smtp.messages().len(), 1, "exactly one email");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_restarted_right_after_an_upload_still_gives_one_mp3_and_one_email() {
    let mut rabbit = testkit::RabbitServer::start().await;
    let mut stack = start_stack(&rabbit.amqp_url).await;
    let job_id = stack.upload("mkv_vp9_opus_10s.mkv").await;
    rabbit.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    rabbit.start_again().await;
    stack
        .wait_for_email(&job_id, Duration::from_secs(180))
        .await;
    stack.settle().await;
    assert_eq!(stack.count("mp3s.files").await, 1, "exactly one MP3");
    assert_eq!(stack.smtp.messages().len(), 1, "exactly one email");
    assert_eq!(stack.job(&job_id).await["state"], "converted");
    if let Some(runner) = stack.runner.take() {
        runner.shutdown().await;
    }
}
