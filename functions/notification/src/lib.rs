//! The notification function: `POST /` receives `dev.vidmp3.audio.converted` and
//! `dev.vidmp3.conversion.failed` CloudEvents and emails the job's owner, exactly once per job.
//!
//! Exactly once: before sending, the handler claims the job with a conditional update
//! (`notified_at` unset and no live claim); after sending it records `notified_at`. A redelivered event finds
//! the job notified (or claimed) and sends nothing. Answers: 200 sent or nothing to do; 200 as well when the
//! recipient is refused for good (recorded in `notify_error`, no retry storm); 503 when SMTP is unreachable,
//! answers 4xx, or refuses authentication (535), so the broker retries with backoff; 400/422 for events that
//! can never succeed (wrong type, bad data, unknown job).

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
use vidmp3_runtime::jobs::{self, Job};
use vidmp3_runtime::{Problem, db, telemetry};

/// How long a sender holds a job's notification claim, in milliseconds.
pub const CLAIM_MS: i64 = 120_000;

/// Where mail goes. `Debug` hides the SMTP password.
#[derive(Clone)]
pub enum MailTransport {
    /// `SMTP_URL`: `smtp://host:port` (plain, local use), `smtp://…?tls=required` (STARTTLS, e.g. 587),
    /// `smtps://host:465` (implicit TLS); credentials as `user:pass@`.
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
    /// `SMTP_TIMEOUT_SECONDS`: connect and per-command timeout (default 10).
    pub smtp_timeout: Duration,
    /// `DB_CONNECT_TIMEOUT_SECONDS` (default 5).
    pub db_connect_timeout: Duration,
}

impl Settings {
    /// Reads and checks the settings.
    ///
    /// # Errors
    /// The first variable that is missing or malformed.
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
        }
        let from: String = env.or("MAIL_FROM", "vidmp3 <no-reply@vidmp3.local>".to_owned())?;
        let from = from
            .parse()
            .map_err(|e| ConfigError::new("MAIL_FROM", format!("is not a mailbox: {e}")))?;
        Ok(Self {
            mongo: MongoSettings::from_env(env)?,
            transport,
            from,
            public_base_url: env
                .or("PUBLIC_BASE_URL", "http://localhost:8080".to_owned())?
                .trim_end_matches('/')
                .to_owned(),
            smtp_timeout: env.seconds("SMTP_TIMEOUT_SECONDS", 10)?,
            db_connect_timeout: env.seconds("DB_CONNECT_TIMEOUT_SECONDS", 5)?,
        })
    }
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
    let collection = jobs::jobs(&state.db);
    let unavailable = |e: mongodb::error::Error| {
        tracing::warn!(error = %e, "MongoDB unavailable");
        Problem::unavailable("the job store is not answering")
    };
    let now = DateTime::now();
    let claim = doc! {
        "_id": &request.job_id,
        "notified_at": null,
        "$or": [{"notify_claim_until": null}, {"notify_claim_until": {"$lt": now}}],
    };
    let until = DateTime::from_millis(now.timestamp_millis() + CLAIM_MS);
    let Some(job) = collection
        .find_one_and_update(claim, doc! {"$set": {"notify_claim_until": until}})
        .await
        .map_err(unavailable)?
    else {
        let exists = collection
            .find_one(doc! {"_id": &request.job_id})
            .await
            .map_err(unavailable)?;
        return match exists {
            Some(_) => {
                outcome("duplicate");
                tracing::info!(job_id = %request.job_id, "already notified (or being notified): nothing sent");
                Ok((
                    StatusCode::OK,
                    Json(serde_json::json!({"sent": false, "reason": "already notified"})),
                )
                    .into_response())
            }
            None => Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_job",
                format!("no job {}", request.job_id),
            )),
        };
    };
    match send(&state, &job, &request).await {
        Ok(()) => {
            outcome("sent");
            mark(&state, &job.id, None).await.map_err(unavailable)?;
            tracing::info!(job_id = %job.id, "email sent");
            Ok((StatusCode::OK, Json(serde_json::json!({"sent": true}))).into_response())
        }
        Err(SendFailure::Permanent(reason)) => {
            outcome("refused");
            tracing::warn!(job_id = %job.id, %reason, "recipient refused for good: not retrying");
            mark(&state, &job.id, Some(reason.clone()))
                .await
                .map_err(unavailable)?;
            Ok((
                StatusCode::OK,
                Json(serde_json::json!({"sent": false, "reason": reason})),
            )
                .into_response())
        }
        Err(SendFailure::Transient(reason)) => {
            outcome("retry");
            tracing::warn!(job_id = %job.id, %reason, "email not sent; asking for a retry");
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
