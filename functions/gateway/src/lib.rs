//! The gateway function: the only public one. Login (proxied to auth), streamed uploads into GridFS, job
//! status, owner-only downloads, and the `video.uploaded` CloudEvent to the Broker (`K_SINK`) with an outbox.
//!
//! JWTs are verified here with the same code as auth's `/validate` (`vidmp3_runtime::jwt`), so serving a
//! request never wakes auth (`TOKEN_VERIFICATION=auth` asks auth's `/validate` instead, for comparison).
//! Every error is `application/problem+json`.

pub mod download;
pub mod jobs_api;
pub mod login;
pub mod openapi;
pub mod outbox;
pub mod sniff;
pub mod upload;
pub mod web;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{get, post};
use mongodb::Database;
use mongodb::gridfs::GridFsBucket;
use vidmp3_runtime::config::{ConfigError, Env, MongoSettings};
use vidmp3_runtime::jobs::{self, MP3S_BUCKET, VIDEOS_BUCKET};
use vidmp3_runtime::jwt::{JwtKeys, JwtSettings, RemoteValidator, TokenVerifier, VerificationMode};
use vidmp3_runtime::{Problem, db, telemetry};

/// Default `MAX_UPLOAD_BYTES`: 2 GiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Settings read from the environment at start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `AUTH_URL`: base URL of the auth function (for `POST /login` only).
    pub auth_url: String,
    /// `MONGODB_URI`, `MONGODB_DATABASE`.
    pub mongo: MongoSettings,
    /// `JWT_*`: the same values as auth's.
    pub jwt: JwtSettings,
    /// `K_SINK`: where CloudEvents go (the Broker's ingress); `None` keeps every event pending in the outbox.
    pub sink: Option<String>,
    /// `MAX_UPLOAD_BYTES` (default 2 GiB).
    pub max_upload_bytes: u64,
    /// `PUBLIC_BASE_URL`: how clients reach the gateway (for `status_url` and download links); default
    /// `http://localhost:8080`.
    pub public_base_url: String,
    /// `DB_CONNECT_TIMEOUT_SECONDS` (default 5).
    pub db_connect_timeout: Duration,
    /// `UPLOAD_IDLE_TIMEOUT_SECONDS` (default 30): an upload whose body sends nothing for this long is cut
    /// off with 408.
    pub upload_idle_timeout: Duration,
    /// `UPLOAD_TIMEOUT_SECONDS` (default 600, Knative's request timeout): the longest an upload may take,
    /// however steadily it trickles; past it, 408.
    pub upload_timeout: Duration,
    /// `TOKEN_VERIFICATION`: `local` (default: verify JWTs here) or `auth` (ask auth's `/validate` per request).
    pub token_verification: VerificationMode,
    /// `TRUSTED_PROXY_HOPS` (default 0: the TCP peer is the client): how many proxies in front of the gateway
    /// append the address they saw to `X-Forwarded-For`. `POST /login` tells auth the client address found
    /// with it ([`vidmp3_runtime::forwarded::client_address`]), so auth's per-client login limit counts
    /// clients, whatever they write in `X-Forwarded-For` themselves.
    pub trusted_proxy_hops: usize,
}

impl Settings {
    /// Reads and checks the settings.
    ///
    /// # Errors
    /// The first variable that is missing or malformed.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let auth_url: String = env.required("AUTH_URL")?;
        let sink: Option<String> = env.optional("K_SINK")?;
        for (var, value) in [("AUTH_URL", Some(&auth_url)), ("K_SINK", sink.as_ref())] {
            if let Some(v) = value {
                if !(v.starts_with("http://") || v.starts_with("https://")) {
                    return Err(ConfigError::new(
                        var,
                        format!("must be an http(s) URL, got {v:?}"),
                    ));
                }
            }
        }
        let max_upload_bytes = env.or("MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES)?;
        if max_upload_bytes == 0 {
            return Err(ConfigError::new("MAX_UPLOAD_BYTES", "must be positive"));
        }
        Ok(Self {
            auth_url: auth_url.trim_end_matches('/').to_owned(),
            mongo: MongoSettings::from_env(env)?,
            jwt: JwtSettings::from_env(env)?,
            sink,
            max_upload_bytes,
            public_base_url: vidmp3_runtime::config::public_base_url(
                env,
                "PUBLIC_BASE_URL",
                "http://localhost:8080",
            )?,
            db_connect_timeout: env.seconds("DB_CONNECT_TIMEOUT_SECONDS", 5)?,
            upload_idle_timeout: positive_seconds(env, "UPLOAD_IDLE_TIMEOUT_SECONDS", 30)?,
            upload_timeout: positive_seconds(env, "UPLOAD_TIMEOUT_SECONDS", 600)?,
            token_verification: env.or("TOKEN_VERIFICATION", VerificationMode::Local)?,
            trusted_proxy_hops: vidmp3_runtime::forwarded::trusted_proxy_hops(env, 0)?,
        })
    }
}

fn positive_seconds(env: &Env, var: &str, default_s: u64) -> Result<Duration, ConfigError> {
    let value = env.seconds(var, default_s)?;
    if value.is_zero() {
        return Err(ConfigError::new(var, "must be positive"));
    }
    Ok(value)
}

/// Shared state of the gateway router.
#[derive(Clone)]
pub struct AppState {
    /// The MongoDB database (lazily connected).
    pub db: Database,
    /// GridFS bucket `videos`.
    pub videos: GridFsBucket,
    /// GridFS bucket `mp3s`.
    pub mp3s: GridFsBucket,
    /// What the `Authenticated` extractor uses: the shared key in process, or auth's `/validate`.
    pub verifier: TokenVerifier,
    /// Client for auth and the sink.
    pub http: reqwest::Client,
    /// The settings.
    pub settings: Arc<Settings>,
}

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

impl AppState {
    /// State from settings; connects nothing yet.
    ///
    /// # Errors
    /// A malformed `MONGODB_URI` or an unusable secret.
    pub async fn new(settings: Settings) -> anyhow::Result<Self> {
        let db = db::mongo_database(&settings.mongo, settings.db_connect_timeout).await?;
        // Checks the secret in either mode.
        let keys = JwtKeys::new(settings.jwt.clone())?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()?;
        let verifier = match settings.token_verification {
            VerificationMode::Local => TokenVerifier::Local(keys),
            VerificationMode::Auth => {
                TokenVerifier::Remote(RemoteValidator::new(http.clone(), &settings.auth_url))
            }
        };
        Ok(Self {
            videos: jobs::bucket(&db, VIDEOS_BUCKET),
            mp3s: jobs::bucket(&db, MP3S_BUCKET),
            verifier,
            http,
            db,
            settings: Arc::new(settings),
        })
    }
}

/// The gateway router: the API, the web page (`GET /`), health, readiness (MongoDB answers) and metrics
/// routes, every answer with the security headers of [`web::SECURITY_HEADERS`].
pub fn router(state: AppState) -> Router {
    let db_for_ready = state.db.clone();
    let readiness =
        telemetry::Readiness::new().check("mongodb", move || db::ping_mongo(db_for_ready.clone()));
    let upload_limit = usize::try_from(
        state
            .settings
            .max_upload_bytes
            .saturating_add(upload::MULTIPART_OVERHEAD),
    )
    .unwrap_or(usize::MAX);
    let routes = Router::new()
        .route("/login", post(login::login))
        .route(
            "/upload",
            post(upload::upload)
                .layer::<_, std::convert::Infallible>(DefaultBodyLimit::max(upload_limit))
                .layer(upload::timeouts(&state.settings)),
        )
        .route("/jobs", get(jobs_api::list))
        .route("/jobs/{id}", get(jobs_api::get).delete(jobs_api::delete))
        .route("/jobs/{id}/mp3", get(download::job_mp3))
        .route("/download", get(download::by_file_id))
        .route("/internal/redeliver", post(outbox::redeliver))
        .route("/openapi.json", get(openapi::serve_openapi))
        .merge(web::routes(state.settings.max_upload_bytes))
        .with_state(state.clone());
    web::with_security_headers(
        telemetry::instrument(routes, "gateway", readiness),
        &state.settings.public_base_url,
    )
}

/// Maps a MongoDB error to 503 (unreachable) or 500.
pub(crate) fn mongo_problem(e: &mongodb::error::Error) -> Problem {
    if db::mongo_unavailable(e) {
        tracing::warn!(error = %e, "MongoDB unavailable");
        Problem::unavailable("the file store is not answering; try again shortly")
    } else {
        tracing::error!(error = %e, "MongoDB error");
        Problem::internal()
    }
}
