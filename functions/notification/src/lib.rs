//! The notification function: `POST /` receives `dev.vidmp3.audio.converted` and
//! `dev.vidmp3.conversion.failed` CloudEvents and emails the job's owner, exactly once per job.
//!
//! Exactly once: before sending, the handler claims the job with a conditional update (`notified_at` unset,
//! the job in the state the event reports, and no live claim) for [`CLAIM_MS`]; after sending it records
//! `notified_at`. Answers:
//! - 200: sent; or nothing to do (already notified, or a stale event whose type does not match the job's
//!   state: a "ready" email only for a `converted` job, a "failed" email only for a `failed` one); or the
//!   recipient is refused for good (recorded in `notify_error`, no retry storm).
//! - 409 with `Retry-After` (retryable for Knative): another delivery holds a live claim and has not
//!   recorded `notified_at` yet. If that sender died, its claim expires and a later retry sends the email,
//!   so an email is never lost to a crash (it may, rarely, go out twice if the crash came after the mail
//!   server took the message and before it was recorded).
//! - 503 with `Retry-After`: SMTP unreachable, too slow (`SMTP_TIMEOUT_SECONDS` for the whole send), a 4xx, or an authentication
//!   refusal (535); the claim is released so the broker's retry sends it.
//! - 400/422: events that can never succeed (wrong type, bad data, unknown job).

pub mod email;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use cloudevents::{AttributesReader, Event};
use lettre::message::Mailbox;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncFileTransport, AsyncTransport, Tokio1Executor};
use mongodb::Database;
use mongodb::bson::{DateTime, doc};
use vidmp3_runtime::config::{ConfigError, Env, MongoSettings};
use vidmp3_runtime::events::{self, AudioConverted, ConversionFailed};
use vidmp3_runtime::jobs::{self, Job, JobState};
use vidmp3_runtime::{Problem, db, telemetry};

/// How long a sender holds a job's notification claim, in milliseconds (20 s).
///
/// Longer than the worst case of one send (`SMTP_TIMEOUT_SECONDS`, at most [`SEND_DEADLINE`], 12 s) plus recording it (retried until
/// [`MARK_MARGIN_MS`] before the claim ends), so a live sender never loses its claim mid-send and a
/// concurrent delivery cannot send a second email. Well below the Trigger's retry budget
/// (`eventing/triggers.yaml`: 5 retries, exponential from 1 s, so at least 1+2+4+8+16 = 31 s of backoff): the
/// claim of a sender that died expires before the last retry, which then sends the email.
pub const CLAIM_MS: i64 = 20_000;

/// The most `SMTP_TIMEOUT_SECONDS` may be (12 s): it bounds one whole send, connect to the end of `DATA`,
/// and the claim must outlast that. (lettre's own timeout covers only the TCP connect of its async
/// transport, not the greeting or any command, so the handler bounds the whole session itself.)
pub const SEND_DEADLINE: Duration = Duration::from_secs(12);

/// Recording a sent email (`notified_at`) is retried until this long before the claim ends (2 s), so a
/// concurrent delivery never finds the claim expired while the email is sent but not yet recorded.
pub const MARK_MARGIN_MS: i64 = 2_000;

/// Where mail goes. `Debug` hides the SMTP password.
#[derive(Clone)]
pub enum MailTransport {
    /// `SMTP_URL`: `smtp://host:port` (plain, local use), `smtp://…?tls=required` (STARTTLS, e.g. 587),
    /// `smtps://host:465` (implicit TLS); credentials as `user:pass@`. lettre sends no TLS at all for an
    /// `smtp://` URL without `tls=` (and `tls=opportunistic` falls back to clear text when STARTTLS is not
    /// offered), yet still sends AUTH; so a password to a host other than loopback requires
    /// `?tls=required` or `smtps://`, else [`Settings::from_env`] refuses the URL.
    Smtp(String),
    /// `MAIL_TRANSPORT=file:DIR`: one `.eml` file per message (no server needed).
    File(std::path::PathBuf),
}

impl std::fmt::Debug for MailTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Smtp(url) => f
                .debug_tuple("Smtp")
                .field(&vidmp3_runtime::config::redact_url(url))
                .finish(),
            Self::File(dir) => f.debug_tuple("File").field(dir).finish(),
        }
    }
}

/// Settings read from the environment at start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `MONGODB_URI`, `MONGODB_DATABASE`.
    pub mongo: MongoSettings,
    /// `MAIL_TRANSPORT` (`smtp` or `file:DIR`; default `smtp` when `SMTP_URL` is set, else `file:./mail`).
    pub transport: MailTransport,
    /// `MAIL_FROM` (default `vidmp3 <no-reply@vidmp3.local>`).
    pub from: Mailbox,
    /// `PUBLIC_BASE_URL`: base of download links (default `http://localhost:8080`).
    pub public_base_url: String,
    /// `SMTP_TIMEOUT_SECONDS`: the longest one whole send may take, connect to the end of `DATA` (default
    /// 10, 1 to [`SEND_DEADLINE`]); past it the answer is 503 and the broker retries.
    pub smtp_timeout: Duration,
    /// `DB_CONNECT_TIMEOUT_SECONDS` (default 5).
    pub db_connect_timeout: Duration,
}

impl Settings {
    /// Reads and checks the settings.
    ///
    /// # Errors
    /// The first variable that is missing or malformed; `SMTP_URL` when it would send a password without
    /// TLS to a host other than loopback (see [`MailTransport::Smtp`]).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let smtp_url: Option<String> = env.optional("SMTP_URL")?;
        let transport = match (env.raw("MAIL_TRANSPORT"), smtp_url) {
            (Some(t), _) if t.starts_with("file:") => {
                MailTransport::File(t["file:".len()..].into())
            }
            (Some(t), Some(url)) if t == "smtp" => MailTransport::Smtp(url),
            (Some(t), None) if t == "smtp" => {
                return Err(ConfigError::new(
                    "SMTP_URL",
                    "is required with MAIL_TRANSPORT=smtp",
                ));
            }
            (Some(t), _) => {
                return Err(ConfigError::new(
                    "MAIL_TRANSPORT",
                    format!("must be `smtp` or `file:DIR`, got {t:?}"),
                ));
            }
            (None, Some(url)) => MailTransport::Smtp(url),
            (None, None) => MailTransport::File("mail".into()),
        };
        if let MailTransport::Smtp(url) = &transport {
            if let Err(e) = AsyncSmtpTransport::<Tokio1Executor>::from_url(url) {
                return Err(ConfigError::new(
                    "SMTP_URL",
                    format!("is not a usable SMTP URL: {e}"),
                ));
            }
            check_password_over_tls(url).map_err(|reason| ConfigError::new("SMTP_URL", reason))?;
        }
        let from: String = env.or("MAIL_FROM", "vidmp3 <no-reply@vidmp3.local>".to_owned())?;
        let from = from
            .parse()
            .map_err(|e| ConfigError::new("MAIL_FROM", format!("is not a mailbox: {e}")))?;
        Ok(Self {
            mongo: MongoSettings::from_env(env)?,
            transport,
            from,
            public_base_url: vidmp3_runtime::config::public_base_url(
                env,
                "PUBLIC_BASE_URL",
                "http://localhost:8080",
            )?,
            smtp_timeout: smtp_timeout(env)?,
            db_connect_timeout: env.seconds("DB_CONNECT_TIMEOUT_SECONDS", 5)?,
        })
    }
}

fn smtp_timeout(env: &Env) -> Result<Duration, ConfigError> {
    let timeout = env.seconds("SMTP_TIMEOUT_SECONDS", 10)?;
    if timeout.is_zero() || timeout > SEND_DEADLINE {
        return Err(ConfigError::new(
            "SMTP_TIMEOUT_SECONDS",
            format!(
                "must be 1 to {} (the notification claim must outlast one send)",
                SEND_DEADLINE.as_secs()
            ),
        ));
    }
    Ok(timeout)
}

/// Refuses an `smtp://` URL that carries a password to a host other than loopback without
/// `tls=required`: lettre would send AUTH in clear (no `tls=`), or after a stripped STARTTLS offer
/// (`tls=opportunistic`). The reason names the host, never the password.
fn check_password_over_tls(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Ok(());
    };
    if !scheme.eq_ignore_ascii_case("smtp") {
        return Ok(()); // smtps: TLS from the first byte
    }
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, q.split('#').next().unwrap_or("")),
        None => (rest, ""),
    };
    let authority = before_query.split(['/', '#']).next().unwrap_or("");
    let Some((userinfo, host_port)) = authority.rsplit_once('@') else {
        return Ok(()); // no credentials, no AUTH
    };
    if !userinfo.contains(':') {
        return Ok(()); // lettre authenticates only with a password
    }
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let tls = query.split('&').find_map(|pair| pair.strip_prefix("tls="));
    if loopback || tls == Some("required") {
        return Ok(());
    }
    Err(format!(
        "would send the SMTP password to {host} without TLS (an smtp:// URL without `tls=required` is clear \
         text, and `tls=opportunistic` falls back to it): add `?tls=required` (STARTTLS, port 587) or use \
         `smtps://{host}:465` (implicit TLS)"
    ))
}

enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>),
}

/// Shared state of the notification router.
#[derive(Clone)]
pub struct AppState {
    db: Database,
    mailer: Arc<Mailer>,
    settings: Arc<Settings>,
}

impl AppState {
    /// State from settings; connects nothing yet.
    ///
    /// # Errors
    /// A malformed URI, or a mail directory that cannot be created.
    pub async fn new(settings: Settings) -> anyhow::Result<Self> {
        let mailer = match &settings.transport {
            MailTransport::Smtp(url) => Mailer::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?
                    .timeout(Some(settings.smtp_timeout))
                    .build(),
            ),
            MailTransport::File(dir) => {
                std::fs::create_dir_all(dir)?;
                Mailer::File(AsyncFileTransport::new(dir))
            }
        };
        Ok(Self {
            db: db::mongo_database(&settings.mongo, settings.db_connect_timeout).await?,
            mailer: Arc::new(mailer),
            settings: Arc::new(settings),
        })
    }
}

/// The notification router with health, readiness (MongoDB answers) and metrics routes.
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
    telemetry::instrument(routes, "notification", readiness)
}

fn outcome(o: &'static str) {
    metrics::counter!("notification_emails_total", "outcome" => o).increment(1);
}

/// What an event asks for.
struct Request {
    job_id: String,
    failed: Option<ConversionFailed>,
    converted: Option<AudioConverted>,
}

fn parse(event: &Event) -> Result<Request, Problem> {
    let bad = |e: events::EventError| Problem::bad_request("invalid_event", e.to_string());
    match event.ty() {
        events::AUDIO_CONVERTED => {
            let data: AudioConverted = events::from_event(event).map_err(bad)?;
            Ok(Request {
                job_id: data.job_id.clone(),
                converted: Some(data),
                failed: None,
            })
        }
        events::CONVERSION_FAILED => {
            let data: ConversionFailed = events::from_event(event).map_err(bad)?;
            Ok(Request {
                job_id: data.job_id.clone(),
                failed: Some(data),
                converted: None,
            })
        }
        other => Err(Problem::bad_request(
            "unexpected_event_type",
            format!("this function does not handle {other:?}"),
        )),
    }
}

async fn receive(State(state): State<AppState>, event: Event) -> Result<Response, Problem> {
    let request = parse(&event)?;
    // The email an event asks for only fits a job in the matching state: a stale event of the other
    // type (say, "converted" for a job that failed since) must not send a contradicting email.
    let wanted = if request.converted.is_some() {
        JobState::Converted
    } else {
        JobState::Failed
    };
    let collection = jobs::jobs(&state.db);
    let unavailable = |e: mongodb::error::Error| {
        tracing::warn!(error = %e, "MongoDB unavailable");
        Problem::unavailable("the job store is not answering")
    };
    let now = DateTime::now();
    let claim = doc! {
        "_id": &request.job_id,
        "state": wanted.as_str(),
        "notified_at": null,
        "$or": [{"notify_claim_until": null}, {"notify_claim_until": {"$lt": now}}],
    };
    let until = DateTime::from_millis(now.timestamp_millis() + CLAIM_MS);
    let Some(job) = collection
        .find_one_and_update(claim, doc! {"$set": {"notify_claim_until": until}})
        .await
        .map_err(unavailable)?
    else {
        let job = collection
            .find_one(doc! {"_id": &request.job_id})
            .await
            .map_err(unavailable)?;
        return not_claimed(&request.job_id, job, wanted, now);
    };
    let limit = state.settings.smtp_timeout;
    let sent = match tokio::time::timeout(limit, send(&state, &job, &request)).await {
        Ok(result) => result,
        Err(_) => Err(SendFailure::Transient(format!(
            "the mail server did not finish within {} s (SMTP_TIMEOUT_SECONDS)",
            limit.as_secs()
        ))),
    };
    match sent {
        Ok(()) => {
            outcome("sent");
            tracing::info!(job_id = %job.id, "email sent");
            let recorded = mark_within_claim(&state, &job.id, None, until).await;
            if !recorded {
                // The email went out. Answering a retryable status would make a retry after the claim
                // ends send it a second time; at most one email per claim is the better failure.
                outcome("sent_unrecorded");
                tracing::error!(job_id = %job.id, "email sent but notified_at could not be recorded: acknowledging anyway so no second email goes out");
            }
            Ok((
                StatusCode::OK,
                Json(serde_json::json!({"sent": true, "recorded": recorded})),
            )
                .into_response())
        }
        Err(SendFailure::Permanent(reason)) => {
            outcome("refused");
            tracing::warn!(job_id = %job.id, %reason, "recipient refused for good: not retrying");
            // Nothing went out, so a retry (after the claim) that asks the server again is harmless.
            if !mark_within_claim(&state, &job.id, Some(reason.clone()), until).await {
                return Err(Problem::unavailable("the job store is not answering"));
            }
            Ok((
                StatusCode::OK,
                Json(serde_json::json!({"sent": false, "reason": reason})),
            )
                .into_response())
        }
        Err(SendFailure::Transient(reason)) => {
            outcome("retry");
            tracing::warn!(job_id = %job.id, %reason, "email not sent; asking for a retry");
            // Released so that the retry can claim at once; if this fails too, the claim just expires.
            drop(
                collection
                    .update_one(
                        doc! {"_id": &job.id},
                        doc! {"$unset": {"notify_claim_until": ""}},
                    )
                    .await,
            );
            Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "smtp_unavailable",
                format!("the mail server did not take the email: {reason}"),
            )
            .retry_after(10))
        }
    }
}

/// The answer when the claim did not match: why not, from the job as it is now (`None`: no such job).
fn not_claimed(
    job_id: &str,
    job: Option<Job>,
    wanted: JobState,
    now: DateTime,
) -> Result<Response, Problem> {
    let Some(job) = job else {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_job",
            format!("no job {job_id}"),
        ));
    };
    let nothing = |reason: &str| {
        Ok((
            StatusCode::OK,
            Json(serde_json::json!({"sent": false, "reason": reason})),
        )
            .into_response())
    };
    if job.notified_at.is_some() {
        outcome("duplicate");
        tracing::info!(%job_id, "already notified: nothing sent");
        return nothing("already notified");
    }
    if job.state != wanted {
        outcome("stale");
        tracing::warn!(%job_id, job_state = job.state.as_str(), event_for = wanted.as_str(), "the event does not match the job's state: nothing sent");
        return nothing("the job is not in the state this event reports");
    }
    // A live claim (or one that ended a moment ago): another delivery is sending, or its sender died.
    // Retryable, so the email is not lost if that sender never records it.
    let left_ms = job
        .notify_claim_until
        .map_or(0, |u| u.timestamp_millis() - now.timestamp_millis());
    outcome("in_progress");
    tracing::info!(%job_id, left_ms, "another delivery holds the notification claim: retry later");
    Err(Problem::new(
        StatusCode::CONFLICT,
        "notification_in_progress",
        "another delivery of this job's notification is in progress; retry after the claim ends",
    )
    .retry_after(u64::try_from((left_ms + 999) / 1000).unwrap_or(0).max(1)))
}

/// Records the notification (`notified_at`, and `notify_error` for a refusal), retrying until
/// [`MARK_MARGIN_MS`] before the claim ends at `claim_until`. `false` when it could not be recorded.
async fn mark_within_claim(
    state: &AppState,
    job_id: &str,
    error: Option<String>,
    claim_until: DateTime,
) -> bool {
    let give_up_at = claim_until.timestamp_millis() - MARK_MARGIN_MS;
    loop {
        let left = give_up_at - DateTime::now().timestamp_millis();
        if left <= 0 {
            return false;
        }
        let left = Duration::from_millis(left.unsigned_abs());
        match tokio::time::timeout(left, mark(state, job_id, error.clone())).await {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => {
                tracing::warn!(%job_id, error = %e, "recording the notification failed; retrying")
            }
            Err(_) => return false,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn mark(state: &AppState, job_id: &str, error: Option<String>) -> mongodb::error::Result<()> {
    let mut set = doc! {"notified_at": DateTime::now(), "updated_at": DateTime::now()};
    if let Some(e) = error {
        set.insert("notify_error", e);
    }
    jobs::jobs(&state.db)
        .update_one(
            doc! {"_id": job_id},
            doc! {"$set": set, "$unset": {"notify_claim_until": ""}},
        )
        .await
        .map(drop)
}

enum SendFailure {
    Permanent(String),
    Transient(String),
}

async fn send(state: &AppState, job: &Job, request: &Request) -> Result<(), SendFailure> {
    let to: Mailbox = job
        .owner_email
        .parse()
        .map_err(|e| SendFailure::Permanent(format!("the owner's address is unusable: {e}")))?;
    let download_url = format!("{}/jobs/{}/mp3", state.settings.public_base_url, job.id);
    let page_url = format!("{}/#job={}", state.settings.public_base_url, job.id);
    let outcome = match (&request.converted, &request.failed) {
        (Some(c), _) => email::Outcome::Converted {
            duration_s: c.duration_s,
            size_bytes: c.size_bytes,
            download_url: &download_url,
            page_url: &page_url,
            partial: job.partial,
        },
        (_, Some(f)) => email::Outcome::Failed {
            reason: &f.reason,
            message: &f.message,
        },
        (None, None) => return Err(SendFailure::Permanent("nothing to say".into())),
    };
    let message = email::build(&state.settings.from, to, &job.filename, &job.id, &outcome)
        .map_err(|e| SendFailure::Permanent(format!("the email could not be built: {e}")))?;
    match state.mailer.as_ref() {
        Mailer::File(t) => t
            .send(message)
            .await
            .map(drop)
            .map_err(|e| SendFailure::Transient(e.to_string())),
        Mailer::Smtp(t) => t.send(message).await.map(drop).map_err(|e| classify(&e)),
    }
}

/// 5xx about the mailbox or recipient (RFC 5321 §4.2.2/§4.2.3: 550, 551, 553, and 552/554 transaction
/// refusals) is final; everything else — no connection, timeouts, 4xx, and 530/534/535 authentication
/// failures (a configuration the operator can fix) — is worth a retry.
fn classify(e: &lettre::transport::smtp::Error) -> SendFailure {
    let code = e.status().map(u16::from);
    match code {
        Some(550 | 551 | 552 | 553 | 554 | 501) => {
            SendFailure::Permanent(format!("the mail server refused the recipient: {e}"))
        }
        _ => SendFailure::Transient(e.to_string()),
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn settings_debug_output_hides_the_smtp_and_mongodb_passwords() {
        let env = Env::from_pairs([
            (
                "MONGODB_URI",
                "mongodb://app:mongo-pw-41x@127.0.0.1:27017/?directConnection=true",
            ),
            ("SMTP_URL", "smtp://mailer:smtp-pw-77q@127.0.0.1:2525"),
        ]);
        let debug = format!("{:?}", Settings::from_env(&env).unwrap());
        assert!(
            !debug.contains("smtp-pw-77q") && !debug.contains("mongo-pw-41x"),
            "{debug}"
        );
        assert!(
            debug.contains("smtp://mailer:***@127.0.0.1:2525"),
            "{debug}"
        );
    }
}
