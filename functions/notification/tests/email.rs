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
    spawn_app_with(smtp, &[]).await
}

/// The app with the test settings, `extra` variables overriding them.
async fn spawn_app_with(smtp: testkit::SmtpServer, extra: &[(&str, &str)]) -> App {
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
    let vars = vars.iter().chain(extra).map(|&(k, v)| (k, v));
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

/// A header's value (`name` case-insensitive, folded lines joined) from the header block of `raw`.
fn header(raw: &str, name: &str) -> Option<String> {
    let raw = raw.replace("\r\n", "\n");
    let head = raw.split("\n\n").next().unwrap_or("");
    let mut value: Option<String> = None;
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(v) = value.as_mut() {
                v.push_str(line); // unfolding keeps the whitespace (RFC 5322 §2.2.3)
            }
        } else if value.is_some() {
            break;
        } else if let Some((_, v)) = line
            .split_once(':')
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            value = Some(v.trim_start().to_owned());
        }
    }
    value
}

/// Decodes RFC 2047 encoded words (`=?charset?B|Q?...?=`, UTF-8 only); whitespace between two encoded
/// words is dropped, as §6.2 says.
fn decode_rfc2047(value: &str) -> String {
    use base64::Engine;
    let mut out = String::new();
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let gap = &rest[..start];
        let parts: Vec<&str> = rest[start + 2..].splitn(4, '?').collect();
        if parts.len() < 4 || !parts[3].starts_with('=') {
            out.push_str(&rest[..start + 2]);
            rest = &rest[start + 2..];
            last_was_word = false;
            continue;
        }
        if !(last_was_word && gap.trim().is_empty()) {
            out.push_str(gap);
        }
        let (encoding, text) = (parts[1], parts[2]);
        let bytes = if encoding.eq_ignore_ascii_case("b") {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .expect("base64 encoded word")
        } else {
            decode_qp_bytes(&text.replace('_', " "))
        };
        out.push_str(&String::from_utf8(bytes).expect("UTF-8 encoded word"));
        let consumed = start + 2 + parts[0].len() + parts[1].len() + parts[2].len() + 3 + 1;
        rest = &rest[consumed..];
        last_was_word = true;
    }
    out.push_str(rest);
    out
}

/// Quoted-printable (RFC 2045 §6.7) to bytes: soft line breaks removed, `=XX` decoded.
fn decode_qp_bytes(text: &str) -> Vec<u8> {
    let text = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The leaf parts of a MIME message as (Content-Type, decoded body), for base64, quoted-printable and
/// 7bit/8bit parts.
fn mime_parts(raw: &str) -> Vec<(String, String)> {
    use base64::Engine;
    let raw = raw.replace("\r\n", "\n");
    let content_type = header(&raw, "Content-Type").unwrap_or_default();
    let body = raw.split_once("\n\n").map_or("", |(_, b)| b);
    if let Some(at) = content_type.to_ascii_lowercase().find("boundary=") {
        let boundary = content_type[at + "boundary=".len()..]
            .trim_matches('"')
            .split(['"', ';'])
            .next()
            .unwrap()
            .to_owned();
        let delimiter = format!("--{boundary}");
        return body
            .split(&delimiter)
            .skip(1)
            .take_while(|p| !p.starts_with("--"))
            .flat_map(|p| mime_parts(p.trim_start_matches('\n')))
            .collect();
    }
    let encoding = header(&raw, "Content-Transfer-Encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let decoded = match encoding.trim() {
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(body.split_whitespace().collect::<String>())
            .expect("base64 part"),
        "quoted-printable" => decode_qp_bytes(body),
        _ => body.as_bytes().to_vec(),
    };
    vec![(
        content_type,
        String::from_utf8(decoded).expect("UTF-8 part"),
    )]
}

/// The decoded body of the one part whose Content-Type starts with `mime` (`text/html`).
fn part(raw: &str, mime: &str) -> String {
    let parts: Vec<(String, String)> = mime_parts(raw)
        .into_iter()
        .filter(|(ct, _)| ct.to_ascii_lowercase().starts_with(mime))
        .collect();
    assert_eq!(parts.len(), 1, "one {mime} part in {raw}");
    parts.into_iter().next().unwrap().1
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
    assert!(text.contains("3.0 MB"), "size: {text}");
    let subject = decode_rfc2047(&header(mail, "Subject").expect("a Subject header"));
    assert_eq!(subject, "Your MP3 is ready: Café – été.mp4", "{mail}");
    let from = header(mail, "From").expect("a From header");
    assert_eq!(
        decode_rfc2047(&from),
        "vidmp3 <no-reply@vidmp3.test>",
        "MAIL_FROM"
    );
    assert!(
        mail.starts_with("X-Envelope-From: no-reply@vidmp3.test\r\n"),
        "{mail}"
    );
    for mime in ["text/html", "text/plain"] {
        let body = part(mail, mime);
        assert!(
            body.contains("https://vidmp3.example/jobs/job-1/mp3"),
            "{mime}: {body}"
        );
        assert!(body.contains("2:05"), "{mime}, duration as m:ss: {body}");
        assert!(body.contains("3.0 MB"), "{mime}, size: {body}");
        assert!(body.contains("Café – été.mp4"), "{mime}, the name: {body}");
    }
    assert!(
        part(mail, "text/html").contains("href=\"https://vidmp3.example/#job=job-1\""),
        "the HTML link opens the job's page"
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
    let mut sent = 0;
    for r in futures::future::join_all(deliveries).await {
        // A loser finds the job notified (200), or the winner's claim still live: a retryable 409, so
        // that the email is not lost if the winner dies before recording it.
        match r.status().as_u16() {
            200 => {
                let body: serde_json::Value = r.json().await.unwrap();
                sent += usize::from(body["sent"] == true);
            }
            409 => {
                assert!(r.headers().contains_key("retry-after"));
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["code"], "notification_in_progress", "{body}");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(sent, 1, "exactly one delivery sends");
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

/// A sender that claimed the job and died (killed, or its handler dropped mid-send) leaves
/// `notify_claim_until` set and `notified_at` unset, exactly as the handler writes them. Until that claim
/// ends a redelivery must get a retryable status (not a 200 that would acknowledge the event and lose the
/// email); after it ends, exactly one email goes out.
#[tokio::test]
async fn a_claim_left_by_a_dead_sender_is_retried_until_it_ends_then_one_email_goes_out() {
    let app = spawn_app(testkit::SmtpServer::start().await).await;
    app.insert(&job(
        "job-dead",
        "a.mp4",
        "owner@example.com",
        JobState::Converted,
    ))
    .await;
    let claim_until = mongodb::bson::DateTime::from_millis(
        mongodb::bson::DateTime::now().timestamp_millis() + 2_000,
    );
    jobs::jobs(&app.db)
        .update_one(
            doc! {"_id": "job-dead"},
            doc! {"$set": {"notify_claim_until": claim_until}},
        )
        .await
        .unwrap();
    let r = app
        .deliver(converted("job-dead", "a.mp4", "owner@example.com"))
        .await;
    assert_eq!(r.status(), 409, "retryable while the claim is live");
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=2).contains(&retry_after),
        "the claim's rest: {retry_after}"
    );
    assert!(app.job("job-dead").await.notified_at.is_none());
    assert!(app.smtp.messages().is_empty());

    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let r = app
        .deliver(converted("job-dead", "a.mp4", "owner@example.com"))
        .await;
    assert_eq!(r.status(), 200);
    let again = app
        .deliver(converted("job-dead", "a.mp4", "owner@example.com"))
        .await;
    assert_eq!(again.status(), 200, "then it is done");
    let mails = app.smtp.wait_for_messages(1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(app.smtp.messages().len(), 1, "exactly one email");
    let job = app.job("job-dead").await;
    assert!(
        job.notified_at.is_some() && job.notify_claim_until.is_none(),
        "{job:?}"
    );
}

/// The claim outlives one send and its recording, and ends before the notification Triggers' retries
/// run out (`eventing/triggers.yaml`), so a dead sender's claim never swallows the event.
#[test]
fn the_claim_is_longer_than_a_send_and_shorter_than_the_retry_budget() {
    use notification::{CLAIM_MS, MARK_MARGIN_MS, SEND_DEADLINE};
    let send_ms = i64::try_from(SEND_DEADLINE.as_millis()).unwrap();
    assert!(
        CLAIM_MS >= send_ms + MARK_MARGIN_MS + 3_000,
        "room to record the send"
    );
    let triggers =
        std::fs::read_to_string(testkit::workspace_root().join("eventing/triggers.yaml")).unwrap();
    let mut checked = 0;
    for doc in triggers
        .split("\n---")
        .filter(|d| d.contains("name: notification"))
    {
        let field = |name: &str| {
            doc.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .unwrap_or_else(|| panic!("{name} in {doc}"))
                .trim()
                .to_owned()
        };
        assert_eq!(field("backoffPolicy:"), "exponential", "{doc}");
        let retries: u32 = field("retry:").parse().unwrap();
        let delay_s: i64 = field("backoffDelay:")
            .trim_start_matches("PT")
            .trim_end_matches('S')
            .parse()
            .unwrap();
        // Knative waits delay * 2^n before retry n; counted from n = 0, the smallest reading.
        let budget_ms: i64 = (0..retries).map(|n| delay_s * 1000 * (1 << n)).sum();
        assert!(
            CLAIM_MS * 3 / 2 <= budget_ms,
            "claim {CLAIM_MS} ms vs retry budget {budget_ms} ms: {doc}"
        );
        checked += 1;
    }
    assert_eq!(checked, 2, "both notification Triggers");
}

#[tokio::test]
async fn a_stale_event_of_the_other_outcome_sends_nothing() {
    let app = spawn_app(testkit::SmtpServer::start().await).await;
    app.insert(&job(
        "job-stale",
        "silent.mp4",
        "owner@example.com",
        JobState::Failed,
    ))
    .await;
    let r = app
        .deliver(converted("job-stale", "silent.mp4", "owner@example.com"))
        .await;
    assert_eq!(r.status(), 200, "nothing to retry");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["sent"], false, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        app.smtp.messages().is_empty(),
        "no \"ready\" email for a failed job"
    );
    assert!(app.job("job-stale").await.notified_at.is_none());

    assert_eq!(app.deliver(failed("job-stale")).await.status(), 200);
    let mails = app.smtp.wait_for_messages(1, Duration::from_secs(5)).await;
    assert_eq!(mails.len(), 1);
    assert!(
        decode_rfc2047(&header(&mails[0], "Subject").unwrap()).starts_with("We could not convert"),
        "{}",
        mails[0]
    );

    app.insert(&job(
        "job-stale-2",
        "ok.mp4",
        "owner@example.com",
        JobState::Converted,
    ))
    .await;
    assert_eq!(app.deliver(failed("job-stale-2")).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.smtp.messages().len(),
        1,
        "no \"failed\" email for a converted job"
    );
}

#[tokio::test]
async fn the_file_transport_writes_one_eml_file_per_email() {
    let dir = std::env::temp_dir().join(testkit::unique_name("notif-mail"));
    let transport = format!("file:{}", dir.display());
    let app = spawn_app_with(
        testkit::SmtpServer::start().await,
        &[("MAIL_TRANSPORT", transport.as_str())],
    )
    .await;
    app.insert(&job(
        "job-file",
        "Café.mp4",
        "owner@example.com",
        JobState::Converted,
    ))
    .await;
    assert_eq!(
        app.deliver(converted("job-file", "Café.mp4", "owner@example.com"))
            .await
            .status(),
        200
    );
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().unwrap(), "eml");
    let mail = std::fs::read_to_string(&files[0]).unwrap();
    assert_eq!(
        decode_rfc2047(&header(&mail, "Subject").unwrap()),
        "Your MP3 is ready: Café.mp4"
    );
    assert_eq!(header(&mail, "To").as_deref(), Some("owner@example.com"));
    assert!(part(&mail, "text/html").contains("https://vidmp3.example/jobs/job-file/mp3"));
    assert!(app.smtp.messages().is_empty(), "nothing over SMTP");
    assert!(app.job("job-file").await.notified_at.is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn an_smtp_451_is_503_and_nothing_is_recorded() {
    let app = spawn_app(testkit::SmtpServer::start_with(&["--reply-code", "451"]).await).await;
    app.insert(&job(
        "job-451",
        "a.mp4",
        "owner@example.com",
        JobState::Converted,
    ))
    .await;
    let r = app
        .deliver(converted("job-451", "a.mp4", "owner@example.com"))
        .await;
    assert_eq!(r.status(), 503, "a temporary refusal is worth a retry");
    assert!(r.headers().contains_key("retry-after"));
    let job = app.job("job-451").await;
    assert!(
        job.notified_at.is_none() && job.notify_error.is_none(),
        "{job:?}"
    );
    assert!(
        job.notify_claim_until.is_none(),
        "the claim is released for the retry"
    );
    assert!(app.smtp.messages().is_empty());
}

/// A server that takes the connection and then says nothing (no greeting), or never answers the end of
/// DATA: 503 once SMTP_TIMEOUT_SECONDS (3 s here) has passed, not a request that hangs.
#[tokio::test]
async fn a_stalling_smtp_server_is_503_within_the_smtp_timeout() {
    for stall in ["greeting", "data"] {
        let app = spawn_app(testkit::SmtpServer::start_with(&["--stall", stall]).await).await;
        app.insert(&job(
            "job-stall",
            "a.mp4",
            "owner@example.com",
            JobState::Converted,
        ))
        .await;
        let started = std::time::Instant::now();
        let r = app
            .deliver(converted("job-stall", "a.mp4", "owner@example.com"))
            .await;
        let took = started.elapsed();
        assert_eq!(r.status(), 503, "stall at {stall}");
        assert!(
            took < Duration::from_secs(3 + 2),
            "stall at {stall}: answered after {took:?}, SMTP_TIMEOUT_SECONDS is 3"
        );
        let job = app.job("job-stall").await;
        assert!(
            job.notified_at.is_none() && job.notify_claim_until.is_none(),
            "{job:?}"
        );
        assert!(app.smtp.messages().is_empty());
    }
}

#[tokio::test]
async fn markup_in_the_failure_message_is_escaped_in_the_html_part() {
    let app = spawn_app(testkit::SmtpServer::start().await).await;
    app.insert(&job(
        "job-markup",
        "<b>x</b>.mp4",
        "owner@example.com",
        JobState::Failed,
    ))
    .await;
    let event = events::to_event(&ConversionFailed {
        job_id: "job-markup".into(),
        owner: "owner@example.com".into(),
        filename: "<b>x</b>.mp4".into(),
        reason: "invalid_data".into(),
        message: "<script>alert(1)</script> & <img src=x onerror=alert(2)>".into(),
    });
    assert_eq!(app.deliver(event).await.status(), 200);
    let mails = app.smtp.wait_for_messages(1, Duration::from_secs(5)).await;
    let html = part(&mails[0], "text/html");
    assert!(
        html.contains(
            "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(2)&gt;"
        ),
        "{html}"
    );
    assert!(html.contains("&lt;b&gt;x&lt;/b&gt;.mp4"), "{html}");
    assert!(
        !html.contains("<script") && !html.contains("<img") && !html.contains("<b>"),
        "{html}"
    );
    let text = part(&mails[0], "text/plain");
    assert!(
        text.contains("<script>alert(1)</script>"),
        "plain text stays as said: {text}"
    );
}

#[tokio::test]
async fn an_owner_address_with_injected_headers_is_refused_and_recorded() {
    let app = spawn_app(testkit::SmtpServer::start().await).await;
    app.insert(&job(
        "job-addr",
        "a.mp4",
        "owner@example.com\r\nBcc: victim@example.com",
        JobState::Converted,
    ))
    .await;
    let r = app
        .deliver(converted("job-addr", "a.mp4", "owner@example.com"))
        .await;
    assert_eq!(r.status(), 200, "final: retrying cannot fix the address");
    let job = app.job("job-addr").await;
    assert!(
        job.notify_error
            .as_deref()
            .unwrap_or_default()
            .contains("address"),
        "{job:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app.smtp.messages().is_empty());
}

fn settings(pairs: &[(&str, &str)]) -> Result<Settings, vidmp3_runtime::config::ConfigError> {
    let mut vars = vec![("MONGODB_URI", "mongodb://127.0.0.1:27018")];
    vars.extend_from_slice(pairs);
    Settings::from_env(&Env::from_pairs(vars))
}

#[test]
fn without_smtp_url_mail_goes_to_eml_files_in_mail() {
    let s = settings(&[]).unwrap();
    assert!(
        matches!(&s.transport, notification::MailTransport::File(d) if d == std::path::Path::new("mail")),
        "{s:?}"
    );
    let s = settings(&[("MAIL_TRANSPORT", "file:/tmp/x")]).unwrap();
    assert!(
        matches!(&s.transport, notification::MailTransport::File(d) if d == std::path::Path::new("/tmp/x"))
    );
}

#[test]
fn smtp_urls_plain_starttls_and_smtps_are_accepted() {
    for url in [
        // plain: local use, or a relay that takes no password
        "smtp://127.0.0.1:2525",
        "smtp://mailer:pw@127.0.0.1:2525",
        "smtp://mailer:pw@localhost:2525",
        "smtp://mailer:pw@[::1]:2525",
        "smtp://relay.internal:25",
        // STARTTLS, required
        "smtp://vidmp3:pw@smtp.example.net:587?tls=required",
        // implicit TLS
        "smtps://vidmp3:pw@smtp.example.net:465",
        "smtps://smtp.example.net",
    ] {
        let s = settings(&[("SMTP_URL", url)]).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(matches!(&s.transport, notification::MailTransport::Smtp(u) if u == url));
    }
}

#[test]
fn a_password_without_tls_to_a_remote_host_is_a_config_error() {
    for url in [
        "smtp://vidmp3:secret-pw@smtp.example.net:587",
        "smtp://vidmp3:secret-pw@smtp.example.net:587?tls=opportunistic",
        "smtp://vidmp3:secret-pw@192.0.2.7:25",
    ] {
        let e = settings(&[("SMTP_URL", url)]).unwrap_err().to_string();
        assert!(e.starts_with("SMTP_URL"), "{e}");
        assert!(e.contains("tls=required") && e.contains("smtps://"), "{e}");
        assert!(!e.contains("secret-pw"), "the password is never shown: {e}");
    }
    let e = settings(&[("SMTP_URL", "smtp://h"), ("SMTP_TIMEOUT_SECONDS", "60")])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("SMTP_TIMEOUT_SECONDS"), "{e}");
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
async fn metrics_count_emails_by_outcome_and_time_the_event_route() {
    let app = spawn_app(testkit::SmtpServer::start().await).await;
    // The recorder is process-wide and other tests send concurrently: compare with a before value and
    // expect at least this test's own increment.
    let before = app.metrics().await;
    app.insert(&job(
        "job-metrics",
        "clip.mp4",
        "owner@example.com",
        JobState::Converted,
    ))
    .await;
    let r = app
        .deliver(converted("job-metrics", "clip.mp4", "owner@example.com"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.smtp
            .wait_for_messages(1, Duration::from_secs(5))
            .await
            .len(),
        1
    );
    let after = app.metrics().await;
    let sent =
        |text: &str| testkit::metric_value(text, "notification_emails_total", "outcome=\"sent\"");
    assert!(
        sent(&after) >= sent(&before) + 1.0,
        "notification_emails_total{{outcome=\"sent\"}} did not grow: {after}"
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
