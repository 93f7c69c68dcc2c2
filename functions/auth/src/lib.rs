//! The auth function: users in MySQL, `POST /login` (HTTP Basic) issues a JWT, `POST /validate` checks one,
//! `POST /users` (admin) creates users.
//!
//! Routes (all errors are `application/problem+json`):
//! - `POST /login` — `Authorization: Basic base64(email:password)` (RFC 7617, UTF-8). 200 with the token as
//!   `text/plain`, or `{access_token, token_type, expires_in}` when `Accept: application/json`. 401 for any
//!   bad credential (unknown user and wrong password alike), 429 with `Retry-After` after
//!   `LOGIN_MAX_FAILURES` failures per account, or `LOGIN_MAX_CLIENT_FAILURES` per client, within
//!   `LOGIN_WINDOW_SECONDS`, 503 when MySQL is down. The client is the entry of `X-Forwarded-For` that the
//!   gateway appended (`TRUSTED_PROXY_HOPS`, see [`Settings::trusted_proxy_hops`]), never one the client wrote.
//! - `POST /validate` — `Authorization: Bearer <jwt>`; 200 with the claims, else 401 (see `vidmp3_runtime::jwt`).
//! - `POST /users` — admin bearer token; JSON `{email, password, admin?}`; 201 `{id, email, admin}`, 400, 403, 409.

pub mod limiter;
pub mod password;
pub mod users;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRef, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;
use vidmp3_runtime::config::{ConfigError, Env};
use vidmp3_runtime::jwt::{Authenticated, Claims, JwtKeys, JwtSettings, TokenVerifier};
use vidmp3_runtime::{Problem, db, forwarded, telemetry};

use crate::limiter::LoginLimiter;
use crate::users::Email;

/// Settings read from the environment at start. `Debug` hides the database password (and `JwtSettings`
/// its secret).
#[derive(Clone)]
pub struct Settings {
    /// `DATABASE_URL`, `mysql://user:pass@host:port/db`.
    pub database_url: String,
    /// Token settings (`JWT_*`).
    pub jwt: JwtSettings,
    /// `LOGIN_MAX_FAILURES` (default 5).
    pub login_max_failures: u32,
    /// `LOGIN_MAX_CLIENT_FAILURES` (default 10 × `LOGIN_MAX_FAILURES`): failed logins from one client
    /// address, over all accounts, before that client gets 429.
    pub login_max_client_failures: u32,
    /// `LOGIN_WINDOW_SECONDS` (default 300).
    pub login_window: Duration,
    /// `DB_CONNECT_TIMEOUT_SECONDS` (default 5).
    pub db_connect_timeout: Duration,
    /// `TRUSTED_PROXY_HOPS` (default 1): how many proxies in front of auth append the address they saw to
    /// `X-Forwarded-For`; the login limiter's client is the entry the outermost of them appended (see
    /// [`forwarded::client_address`]). The default fits our deployments: the gateway is auth's only caller
    /// and sends the client address it determined as the last entry. 0 trusts only the TCP peer.
    pub trusted_proxy_hops: usize,
}

impl Settings {
    /// Reads and checks the settings.
    ///
    /// # Errors
    /// The first variable that is missing or malformed.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let database_url = vidmp3_runtime::config::mysql_url(env, "DATABASE_URL")?;
        let login_max_failures = env.or("LOGIN_MAX_FAILURES", 5u32)?;
        if login_max_failures == 0 {
            return Err(ConfigError::new("LOGIN_MAX_FAILURES", "must be at least 1"));
        }
        let login_max_client_failures = env.or(
            "LOGIN_MAX_CLIENT_FAILURES",
            login_max_failures.saturating_mul(10),
        )?;
        if login_max_client_failures < login_max_failures {
            return Err(ConfigError::new(
                "LOGIN_MAX_CLIENT_FAILURES",
                format!("must be at least LOGIN_MAX_FAILURES ({login_max_failures})"),
            ));
        }
        Ok(Self {
            database_url,
            login_max_client_failures,
            jwt: JwtSettings::from_env(env)?,
            login_max_failures,
            login_window: env.seconds("LOGIN_WINDOW_SECONDS", 300)?,
            db_connect_timeout: env.seconds("DB_CONNECT_TIMEOUT_SECONDS", 5)?,
            trusted_proxy_hops: forwarded::trusted_proxy_hops(env, 1)?,
        })
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field(
                "database_url",
                &vidmp3_runtime::config::redact_url(&self.database_url),
            )
            .field("jwt", &self.jwt)
            .field("login_max_failures", &self.login_max_failures)
            .field("login_max_client_failures", &self.login_max_client_failures)
            .field("login_window", &self.login_window)
            .field("db_connect_timeout", &self.db_connect_timeout)
            .field("trusted_proxy_hops", &self.trusted_proxy_hops)
            .finish()
    }
}

/// Shared state of the auth router.
#[derive(Clone)]
pub struct AppState {
    /// The lazily connected pool.
    pub pool: MySqlPool,
    /// Token keys.
    pub keys: JwtKeys,
    /// Login failure counters.
    pub limiter: Arc<LoginLimiter>,
    /// [`Settings::trusted_proxy_hops`].
    pub trusted_proxy_hops: usize,
}

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        TokenVerifier::Local(state.keys.clone())
    }
}

impl AppState {
    /// State from settings; connects nothing yet.
    ///
    /// # Errors
    /// A malformed `DATABASE_URL` or an unusable secret.
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            pool: db::mysql_pool(&settings.database_url, settings.db_connect_timeout)?,
            keys: JwtKeys::new(settings.jwt.clone())?,
            limiter: Arc::new(LoginLimiter::new(
                settings.login_max_failures,
                settings.login_max_client_failures,
                settings.login_window,
            )),
            trusted_proxy_hops: settings.trusted_proxy_hops,
        })
    }
}

/// The auth router with health, readiness (MySQL answers) and metrics routes.
pub fn router(state: AppState) -> Router {
    let pool = state.pool.clone();
    let readiness =
        telemetry::Readiness::new().check("mysql", move || db::ping_mysql(pool.clone()));
    let routes = Router::new()
        .route("/login", post(login))
        .route("/validate", post(validate))
        .route("/users", post(create_user))
        .with_state(state);
    telemetry::instrument(routes, "auth", readiness)
}

/// The JSON login answer (RFC 6749 §5.1 shape).
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
}

fn db_problem(e: &sqlx::Error) -> Problem {
    if db::mysql_unavailable(e) {
        tracing::warn!(error = %e, "MySQL unavailable");
        Problem::unavailable("the user database is not answering; try again shortly")
    } else {
        tracing::error!(error = %e, "MySQL error");
        Problem::internal()
    }
}

/// Splits `Authorization: Basic …` into (email, password); RFC 7617 with UTF-8.
fn basic_credentials(headers: &HeaderMap) -> Result<(String, String), Problem> {
    let invalid = |d: &str| Problem::new(StatusCode::UNAUTHORIZED, "invalid_credentials_format", d);
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| invalid("send the email and password with HTTP Basic authentication"))?
        .to_str()
        .map_err(|_| invalid("the Authorization header is not ASCII"))?;
    let (scheme, encoded) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| invalid("use the Basic scheme"))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(invalid("use the Basic scheme"));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| invalid("the Basic credentials are not valid base64"))?;
    let text =
        String::from_utf8(decoded).map_err(|_| invalid("the Basic credentials are not UTF-8"))?;
    let (email, password) = text
        .split_once(':')
        .ok_or_else(|| invalid("the Basic credentials lack a ':'"))?;
    Ok((email.to_owned(), password.to_owned()))
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

async fn login(
    State(state): State<AppState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let outcome =
        |o: &'static str| metrics::counter!("auth_logins_total", "outcome" => o).increment(1);
    let (raw_email, password) =
        basic_credentials(&headers).inspect_err(|_| outcome("malformed"))?;
    let email = Email::parse(&raw_email).ok();
    let account_key = format!(
        "account:{}",
        email
            .as_ref()
            .map_or(raw_email.to_lowercase(), |e| e.as_str().to_owned())
    );
    let client =
        forwarded::client_address(peer.map(|c| c.0.0.ip()), &headers, state.trusted_proxy_hops)
            .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let keys = [account_key.clone(), format!("client:{client}")];
    if let Some(wait) = state.limiter.blocked(&keys) {
        outcome("rate_limited");
        // The client address is logged so an operator can check TRUSTED_PROXY_HOPS against the
        // real proxies (README, Deploy to Knative); the email is not.
        tracing::info!(%client, "login refused: rate limited");
        return Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("too many failed logins; try again in {wait} s"),
        )
        .retry_after(wait));
    }
    let user = match &email {
        Some(email) => users::find_by_email(&state.pool, email)
            .await
            .map_err(|e| db_problem(&e))?,
        None => None,
    };
    let verified = password::verify(password, user.as_ref().map(|u| u.password_hash.clone())).await;
    let Some(user) = user.filter(|_| verified) else {
        state.limiter.record_failure(&keys);
        outcome("bad_credentials");
        tracing::info!(%client, "login refused: bad credentials");
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "wrong email or password",
        ));
    };
    state.limiter.record_success(&account_key);
    let (token, _) = state
        .keys
        .issue(&user.id.to_string(), &user.email, user.is_admin)
        .map_err(|e| {
            tracing::error!(error = %e, "signing failed");
            Problem::internal()
        })?;
    outcome("ok");
    tracing::info!(user_id = user.id, "login");
    if wants_json(&headers) {
        let body = TokenResponse {
            access_token: token,
            token_type: "Bearer".into(),
            expires_in: state.keys.ttl().as_secs(),
        };
        Ok(Json(body).into_response())
    } else {
        Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], token).into_response())
    }
}

async fn validate(Authenticated(claims): Authenticated) -> Json<Claims> {
    Json(claims)
}

/// Body of `POST /users`.
#[derive(Debug, Deserialize)]
pub struct NewUser {
    /// Email (normalised to lower case).
    pub email: String,
    /// Clear password, at least [`password::MIN_PASSWORD_CHARS`] characters.
    pub password: String,
    /// Make an administrator.
    #[serde(default)]
    pub admin: bool,
}

/// Answer of `POST /users`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreatedUser {
    /// New user id.
    pub id: u64,
    /// Normalised email.
    pub email: String,
    /// Administrator?
    pub admin: bool,
}

async fn create_user(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    body: Result<Json<NewUser>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreatedUser>), Problem> {
    if !claims.admin {
        return Err(Problem::forbidden("only administrators can create users"));
    }
    let Json(new) = body.map_err(|e| Problem::bad_request("invalid_body", e.body_text()))?;
    let email = Email::parse(&new.email).map_err(|d| Problem::bad_request("invalid_email", d))?;
    password::check_new_password(&new.password)
        .map_err(|d| Problem::bad_request("weak_password", d))?;
    let hash = password::hash(new.password)
        .await
        .map_err(|_| Problem::internal())?;
    let id = users::create(&state.pool, &email, &hash, new.admin)
        .await
        .map_err(|e| match e {
            users::CreateError::Exists => Problem::new(
                StatusCode::CONFLICT,
                "user_exists",
                "a user with this email already exists",
            ),
            users::CreateError::Db(e) => db_problem(&e),
        })?;
    tracing::info!(user_id = id, admin = new.admin, "user created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedUser {
            id,
            email: email.as_str().to_owned(),
            admin: new.admin,
        }),
    ))
}
