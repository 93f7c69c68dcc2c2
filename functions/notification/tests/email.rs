//! The notification function against a real SMTP server (its own sink per test) and the MongoDB-wire
//! server: the emails' content, exactly one email per job, and retries when SMTP is down or refuses.

use std::time::Duration;

use cloudevents::binding::reqwest::RequestBuilderExt;
use mongodb::bson::doc;
use notification::{AppState, Settings};
use vidmp3_runtime::config::Env;
use vidmp3_runtime::events::{self, AudioConverted, ConversionFailed, OutputOptions};
use vidmp3_runtime::jobs::{self, Job, JobState, NewJob};

struct App {
    url: String,
    db: mongodb::Database,
    smtp: testkit::SmtpServer,
    client: reqwest::Client,
}

async fn spawn_app(smtp: testkit::SmtpServer) -> App {
    testkit::ensure_services();
    let database = testkit::unique_name("notif");
    let smtp_url = smtp.url();
    let mongo = testkit::shared_mongo_uri();
    let vars = [
        ("MONGODB_URI", mongo.as_str()),
        ("MONGODB_DATABASE", database.as_str()),
        ("SMTP_URL", smtp_url.as_str()),
        ("SMTP_TIMEOUT_SECONDS", "3"),
        ("MAIL_FROM", "vidmp3 <no-reply@vidmp3.test>"),
        ("PUBLIC_BASE_URL", "https://vidmp3.example"),
    ];
    let state = AppState::new(Settings::from_env(&Env::from_pairs(vars)).unwrap())
        .await
        .unwrap();
    let url = testkit::serve(notification::router(state)).await;
    let db = mongodb::Client::with_uri_str(&mongo)
        .await
        .unwrap()
        .database(&database);
    App {
        url,
        db,
        smtp,
        client: reqwest::Client::new(),
    }
}

fn job(id: &str, filename: &str, owner: &str, state: JobState) -> Job {
    let mut job = Job::uploaded(NewJob {
        owner_id: "1".into(),
        owner_email: owner.into(),
        filename: filename.into(),
        content_type: "video/mp4".into(),
        size_bytes: 1000,
        video_id: mongodb::bson::oid::ObjectId::new(),
        output: OutputOptions::default(),
    });
    job.id = id.into();
    job.state = state;
    job.event_pending = false;
    job.progress = 1.0;
    job.duration_s = Some(125.0);
    job.mp3_size_bytes = Some(3_000_000);
    job.bitrate_kbps = Some(192);
    job
}

impl App {
    async fn insert(&self, job: &Job) {
        jobs::jobs(&self.db).insert_one(job).await.unwrap();
    }

    async fn deliver(&self, event: cloudevents::Event) -> reqwest::Response {
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
}

fn converted(job_id: &str, filename: &str, owner: &str) -> cloudevents::Event {
    events::to_event(&AudioConverted {
        job_id: job_id.into(),
        mp3_id: "0123456789abcdef01234567".into(),
        owner: owner.into(),
        filename: filename.into(),
        duration_s: 125.0,
        size_bytes: 3_000_000,
        bitrate_kbps: 192,
    })
}

fn failed(job_id: &str) -> cloudevents::Event {
    events::to_event(&ConversionFailed {
        job_id: job_id.into(),
        owner: "owner@example.com".into(),
        filename: "silent.mp4".into(),
        reason: "no_audio_stream".into(),
        message: "the file has no audio track".into(),
    })
}

/// The decoded text of a raw email (quoted-printable and base64 bodies decoded by lettre's own rules are
/// avoided: the checks look at the parts' decoded forms through a tiny parser).
fn decoded(raw: &str) -> String {
    use base64::Engine;
    let mut out = String::new();
    let mut in_b64 = false;
    let mut b64 = String::new();
    for line in raw.lines() {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("content-transfer-encoding: base64") {
            in_b64 = true;
            continue;
        }
        if in_b64 {
            if line.starts_with("--") {
                out.push_str(&String::from_utf8_lossy(
                    &base64::engine::general_purpose::STANDARD
                        .decode(b64.trim())
                        .unwrap_or_default(),
                ));
                b64.clear();
                in_b64 = false;
            } else if !line.trim().is_empty() {
                b64.push_str(line.trim());
            }
            continue;
        }
        out.push_str(line.trim_end_matches('='));
        if !line.ends_with('=') {
            out.push('\n');
        }
    }
    out.replace("=C3=A9", "é")
        .replace("=E2=80=93", "–")
        .replace("=3D", "=")
}

#[tokio::test]
async fn a_converted_job_gets_one_email_with_the_link_duration_and_size() {
    let app = spawn_app(testkit::SmtpServer::start().await).await;
    app.insert(&job(
        "job-1",
        "Café – été.mp4",
        "owner@example.com",
        JobState::Converted,
    ))
    .await;
    let r = app
        .deliver(converted("job-1", "Café – été.mp4", "owner@example.com"))
        .await;
    assert_eq!(r.status(), 200);
    let mails = app.smtp.wait_for_messages(1, Duration::from_secs(5)).await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert!(mail.contains("owner@example.com"));
    assert!(
        mail.to_ascii_lowercase().contains("multipart/alternative"),
        "plain text and HTML alternative"
    );
    assert!(mail.contains("text/plain") && mail.contains("text/html"));
    let text = decoded(mail);
    assert!(
        text.contains("https://vidmp3.example/jobs/job-1/mp3"),
        "{text}"
    );
    assert!(text.contains("2:05"), "duration as m:ss: {text}");
    assert!(text.contains("2.9 MB"), "size: {text}");
    assert!(
        mail.contains("Subject: ") && (mail.contains("=?utf-8?") || mail.contains("Caf")),
        "the subject names the file"
    );
    let job = app.job("job-1").await;
    assert!(job.notified_at.is_some() && job.notify_error.is_none());
}

#[tokio::test]
async fn a_failed_job_gets_the_reason_in_plain_words_and_what_to_do() {
    let app = spawn_app(testkit::SmtpServer::start().await).await;
    app.insert(&job(
        "job-2",
        "silent.mp4",
        "owner@example.com",
        JobState::Failed,
    ))
    .await;
    assert_eq!(app.deliver(failed("job-2")).await.status(), 200);
    let mails = app.smtp.wait_for_messages(1, Duration::from_secs(5)).await;
    let text = decoded(&mails[0]);
    assert!(
        mails[0].contains("We could not convert silent.mp4"),
        "{}",
        mails[0]
    );
    assert!(text.contains("the file has no audio track"), "{text}");
    assert!(text.contains("Upload a video that has sound"), "{text}");
}

#[tokio::test]
async fn a_redelivered_or_concurrent_event_sends_nothing_more() {
    let app = spawn_app(testkit::SmtpServer::start().await).await;
    app.insert(&job(
        "job-3",
        "a.mp4",
        "owner@example.com",
        JobState::Converted,
    ))
    .await;
    let deliveries = (0..5).map(|_| app.deliver(converted("job-3", "a.mp4", "owner@example.com")));
    for r in futures::future::join_all(deliveries).await {
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        app.deliver(converted("job-3", "a.mp4", "owner@example.com"))
            .await
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.smtp.messages().len(), 1, "exactly one email");
}

#[tokio::test]
async fn smtp_down_is_503_then_exactly_one_email_once_it_is_back() {
    let mut smtp = testkit::SmtpServer::start().await;
    smtp.stop().await;
    let app = spawn_app(smtp).await;
    app.insert(&job(
        "job-4",
        "a.mp4",
        "owner@example.com",
        JobState::Converted,
    ))
    .await;
    let r = app
        .deliver(converted("job-4", "a.mp4", "owner@example.com"))
        .await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(app.job("job-4").await.notified_at.is_none());
    let mut app = app;
    app.smtp.restart().await;
    assert_eq!(
        app.deliver(converted("job-4", "a.mp4", "owner@example.com"))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.deliver(converted("job-4", "a.mp4", "owner@example.com"))
            .await
            .status(),
        200
    );
    let mails = app.smtp.wait_for_messages(1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(app.smtp.messages().len(), 1);
}

#[tokio::test]
async fn an_smtp_535_is_retried_and_the_process_stays_alive() {
    let app = spawn_app(testkit::SmtpServer::start_with(&["--reply-code", "535"]).await).await;
    app.insert(&job(
        "job-5",
        "a.mp4",
        "owner@example.com",
        JobState::Converted,
    ))
    .await;
    for _ in 0..3 {
        let r = app
            .deliver(converted("job-5", "a.mp4", "owner@example.com"))
            .await;
        assert_eq!(
            r.status(),
            503,
            "an authentication refusal is worth a retry"
        );
    }
    assert!(app.job("job-5").await.notified_at.is_none());
    let health = app
        .client
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn a_recipient_refused_for_good_is_recorded_and_not_retried() {
    let app = spawn_app(testkit::SmtpServer::start_with(&["--reject-rcpt", "gone@"]).await).await;
    app.insert(&job(
        "job-6",
        "a.mp4",
        "gone@example.com",
        JobState::Converted,
    ))
    .await;
    let r = app
        .deliver(converted("job-6", "a.mp4", "gone@example.com"))
        .await;
    assert_eq!(
        r.status(),
        200,
        "a final refusal must not make the broker retry"
    );
    let job = app.job("job-6").await;
    assert!(
        job.notify_error
            .as_deref()
            .unwrap_or_default()
            .contains("refused"),
        "{job:?}"
    );
    assert_eq!(
        app.deliver(converted("job-6", "a.mp4", "gone@example.com"))
            .await
            .status(),
        200
    );
    assert!(app.smtp.messages().is_empty());
}

#[tokio::test]
async fn bad_events_get_a_final_4xx() {
    let app = spawn_app(testkit::SmtpServer::start().await).await;
    assert_eq!(
        app.deliver(converted("no-such-job", "a.mp4", "x@example.com"))
            .await
            .status(),
        422
    );
    let wrong_type = events::to_event(&vidmp3_runtime::events::VideoUploaded {
        job_id: "j".into(),
        video_id: "v".into(),
        owner: "o@example.com".into(),
        filename: "f".into(),
        content_type: "video/mp4".into(),
        size_bytes: 1,
        output: OutputOptions::default(),
    });
    assert_eq!(app.deliver(wrong_type).await.status(), 400);
    let garbage = app
        .client
        .post(format!("{}/", app.url))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(garbage.status().is_client_error(), "{}", garbage.status());
}

#[tokio::test]
async fn file_names_cannot_inject_headers() {
    let app = spawn_app(testkit::SmtpServer::start().await).await;
    let evil = "x.mp4\r\nBcc: victim@example.com\r\nSubject: pwned";
    app.insert(&job(
        "job-7",
        evil,
        "owner@example.com",
        JobState::Converted,
    ))
    .await;
    assert_eq!(
        app.deliver(converted("job-7", evil, "owner@example.com"))
            .await
            .status(),
        200
    );
    let mails = app.smtp.wait_for_messages(1, Duration::from_secs(5)).await;
    let mail = &mails[0];
    assert!(
        !mail
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
        "{mail}"
    );
    assert_eq!(
        mail.lines().filter(|l| l.starts_with("Subject:")).count(),
        1,
        "{mail}"
    );
    assert!(
        !mail.contains("victim@example.com\r\n") || !mail.contains("X-Envelope-To: victim"),
        "no extra recipient"
    );
    assert!(!mail.contains("X-Envelope-To: victim"), "{mail}");
}
