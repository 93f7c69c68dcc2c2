//! Issuing and verifying the service's JWTs (RFC 7519), HS256 only.
//!
//! auth issues tokens and answers `POST /validate`; the gateway verifies them itself with the same
//! [`JwtKeys::verify`], so serving a request never wakes auth. Verification rejects: a missing or
//! non-Bearer `Authorization` header, malformed tokens, any algorithm but HS256 (`alg: none`, HS512, RS256
//! with a public key as the HMAC secret…), a wrong signature, a missing `sub`/`exp`/`iat`/`iss`/`aud`/
//! `email`/`admin`, a wrong issuer or audience, an expired token, and `iat` more than [`LEEWAY`] in the future.
//!
//! [`TokenVerifier`] lets a function choose instead to ask auth's `/validate` on every request
//! ([`VerificationMode::Auth`]); the gateway offers it (`TOKEN_VERIFICATION=auth`) to measure that design.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::{HeaderValue, header, request::Parts};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::Problem;
use crate::config::{ConfigError, Env};

/// Clock skew tolerated on `exp` and `iat`, in seconds.
pub const LEEWAY: u64 = 60;
/// Minimum length of `JWT_SECRET` in bytes (HS256 wants a key at least as long as its 256-bit hash).
pub const MIN_SECRET_BYTES: usize = 32;

/// The claims of a vidmp3 token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// Subject: the user's id (decimal string of `users.id`).
    pub sub: String,
    /// The user's email, lower-cased.
    pub email: String,
    /// Whether the user is an administrator.
    pub admin: bool,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: i64,
    /// Issuer (`JWT_ISSUER`).
    pub iss: String,
    /// Audience (`JWT_AUDIENCE`).
    pub aud: String,
}

/// Token settings from the environment.
#[derive(Clone)]
pub struct JwtSettings {
    /// `JWT_SECRET`, at least [`MIN_SECRET_BYTES`] bytes.
    pub secret: Vec<u8>,
    /// `JWT_ISSUER` (default `vidmp3-auth`).
    pub issuer: String,
    /// `JWT_AUDIENCE` (default `vidmp3`).
    pub audience: String,
    /// `JWT_TTL_SECONDS` (default 86400 = 24 h).
    pub ttl: Duration,
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field("secret", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl JwtSettings {
    /// Reads `JWT_SECRET`, `JWT_ISSUER`, `JWT_AUDIENCE`, `JWT_TTL_SECONDS`.
    ///
    /// # Errors
    /// `JWT_SECRET` missing or shorter than 32 bytes; `JWT_TTL_SECONDS` not a positive integer.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let secret: String = env.required("JWT_SECRET")?;
        if secret.len() < MIN_SECRET_BYTES {
            return Err(ConfigError::new(
                "JWT_SECRET",
                format!(
                    "must be at least {MIN_SECRET_BYTES} bytes (got {})",
                    secret.len()
                ),
            ));
        }
        let ttl = env.seconds("JWT_TTL_SECONDS", 86_400)?;
        if ttl.is_zero() {
            return Err(ConfigError::new("JWT_TTL_SECONDS", "must be positive"));
        }
        Ok(Self {
            secret: secret.into_bytes(),
            issuer: env.or("JWT_ISSUER", "vidmp3-auth".to_owned())?,
            audience: env.or("JWT_AUDIENCE", "vidmp3".to_owned())?,
            ttl,
        })
    }
}

/// Why a token was refused. Every variant maps to 401.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum TokenError {
    /// No `Authorization` header.
    #[error("no Authorization header; send `Authorization: Bearer <token>`")]
    Missing,
    /// A header with another scheme (`Basic`…) or not ASCII.
    #[error("the Authorization header must use the Bearer scheme")]
    WrongScheme,
    /// Not a JWT, or claims of the wrong shape.
    #[error("the token is malformed")]
    Malformed,
    /// Any algorithm but HS256.
    #[error("the token's algorithm is not accepted")]
    WrongAlgorithm,
    /// The signature does not match.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `exp` is in the past.
    #[error("the token has expired")]
    Expired,
    /// `iat` is in the future beyond the leeway.
    #[error("the token was issued in the future")]
    IssuedInFuture,
    /// A required claim is missing.
    #[error("the token lacks the claim `{0}`")]
    MissingClaim(String),
    /// `iss` or `aud` is not ours.
    #[error("the token was not issued for this service")]
    WrongIssuerOrAudience,
}

impl TokenError {
    /// Stable machine-readable code for problem bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "missing_token",
            Self::WrongScheme => "wrong_auth_scheme",
            Self::Malformed => "malformed_token",
            Self::WrongAlgorithm => "wrong_algorithm",
            Self::BadSignature => "bad_signature",
            Self::Expired => "token_expired",
            Self::IssuedInFuture => "token_issued_in_future",
            Self::MissingClaim(_) => "missing_claim",
            Self::WrongIssuerOrAudience => "wrong_issuer_or_audience",
        }
    }
}

impl From<TokenError> for Problem {
    fn from(e: TokenError) -> Self {
        Problem::new(
            axum::http::StatusCode::UNAUTHORIZED,
            e.code(),
            e.to_string(),
        )
    }
}

/// Signing and verification keys with the validation rules. Cheap to clone.
#[derive(Clone)]
pub struct JwtKeys(Arc<Inner>);

struct Inner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    settings: JwtSettings,
}

impl JwtKeys {
    /// Keys for `settings`.
    ///
    /// # Errors
    /// The secret cannot be used as an HMAC key.
    pub fn new(settings: JwtSettings) -> anyhow::Result<Self> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = LEEWAY;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        Ok(Self(Arc::new(Inner {
            encoding: EncodingKey::from_secret(&settings.secret)?,
            decoding: DecodingKey::from_secret(&settings.secret)?,
            validation,
            settings,
        })))
    }

    /// The token lifetime.
    pub fn ttl(&self) -> Duration {
        self.0.settings.ttl
    }

    /// Issues a token for user `sub` valid for the configured TTL; returns it with its claims.
    ///
    /// # Errors
    /// Signing failed (not expected with an HMAC key).
    pub fn issue(&self, sub: &str, email: &str, admin: bool) -> anyhow::Result<(String, Claims)> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: sub.to_owned(),
            email: email.to_owned(),
            admin,
            iat: now,
            exp: now + i64::try_from(self.0.settings.ttl.as_secs()).unwrap_or(i64::MAX / 2),
            iss: self.0.settings.issuer.clone(),
            aud: self.0.settings.audience.clone(),
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.0.encoding)?;
        Ok((token, claims))
    }

    /// Verifies a compact JWS token and returns its claims.
    ///
    /// # Errors
    /// [`TokenError`] naming the first rule the token breaks.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.0.decoding, &self.0.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidAlgorithmName
                | ErrorKind::MissingAlgorithm => TokenError::WrongAlgorithm,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::IssuedInFuture,
                ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                    TokenError::WrongIssuerOrAudience
                }
                ErrorKind::Json(err) => match missing_field(&err.to_string()) {
                    Some(field) => TokenError::MissingClaim(field),
                    None => TokenError::Malformed,
                },
                _ => TokenError::Malformed,
            })?;
        let claims = data.claims;
        let now = chrono::Utc::now().timestamp();
        if claims.iat > now + LEEWAY as i64 {
            return Err(TokenError::IssuedInFuture);
        }
        Ok(claims)
    }

    /// Verifies the token in an `Authorization: Bearer <token>` header.
    ///
    /// # Errors
    /// [`TokenError::Missing`], [`TokenError::WrongScheme`], or whatever [`JwtKeys::verify`] says.
    pub fn verify_header(&self, header: Option<&HeaderValue>) -> Result<Claims, TokenError> {
        let value = header
            .ok_or(TokenError::Missing)?
            .to_str()
            .map_err(|_| TokenError::WrongScheme)?;
        let (scheme, token) = value
            .trim()
            .split_once(' ')
            .ok_or(TokenError::WrongScheme)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::WrongScheme);
        }
        self.verify(token.trim())
    }
}

fn missing_field(message: &str) -> Option<String> {
    let rest = message.split("missing field `").nth(1)?;
    Some(rest.split('`').next()?.to_owned())
}

/// Where a function checks bearer tokens (`TOKEN_VERIFICATION`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VerificationMode {
    /// `local`: verify the signature and claims here with the shared key (no network; the default).
    #[default]
    Local,
    /// `auth`: ask auth's `POST /validate` for every request (the tutorial's design: slower, and every
    /// request wakes auth).
    Auth,
}

impl std::str::FromStr for VerificationMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "local" => Ok(Self::Local),
            "auth" => Ok(Self::Auth),
            _ => Err("expected `local` or `auth`".to_owned()),
        }
    }
}

/// Checks tokens by calling auth's `POST /validate` with the request's `Authorization` header.
#[derive(Clone, Debug)]
pub struct RemoteValidator {
    http: reqwest::Client,
    url: String,
}

impl RemoteValidator {
    /// A validator calling `{auth_url}/validate` with `http`.
    pub fn new(http: reqwest::Client, auth_url: &str) -> Self {
        Self {
            http,
            url: format!("{}/validate", auth_url.trim_end_matches('/')),
        }
    }

    /// Asks auth about the `Authorization` header.
    ///
    /// # Errors
    /// 401 with auth's problem when auth refuses the token (401 `missing_token` without asking when there
    /// is no header); 503 when auth does not answer or answers anything else.
    pub async fn verify_header(&self, header: Option<&HeaderValue>) -> Result<Claims, Problem> {
        let header = header.ok_or(TokenError::Missing)?;
        let unavailable =
            || Problem::unavailable("the token service is not answering; try again shortly");
        let answer = self
            .http
            .post(&self.url)
            .header(header::AUTHORIZATION, header)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "auth /validate unreachable");
                unavailable()
            })?;
        match answer.status().as_u16() {
            200 => answer.json::<Claims>().await.map_err(|e| {
                tracing::warn!(error = %e, "auth /validate answered unreadable claims");
                unavailable()
            }),
            401 => Err(match answer.json::<Problem>().await {
                Ok(problem) if problem.status == 401 => problem,
                _ => Problem::unauthorized("the token was refused"),
            }),
            status => {
                tracing::warn!(status, "auth /validate answered an unexpected status");
                Err(unavailable())
            }
        }
    }
}

/// How the [`Authenticated`] extractor checks a token: locally with [`JwtKeys`], or by asking auth.
#[derive(Clone)]
pub enum TokenVerifier {
    /// [`JwtKeys::verify_header`], in process.
    Local(JwtKeys),
    /// [`RemoteValidator::verify_header`], one HTTP call to auth per request.
    Remote(RemoteValidator),
}

impl TokenVerifier {
    /// Verifies an `Authorization: Bearer <token>` header.
    ///
    /// # Errors
    /// A 401 problem for a refused token; 503 when a remote validator cannot reach auth.
    pub async fn verify_header(&self, header: Option<&HeaderValue>) -> Result<Claims, Problem> {
        match self {
            Self::Local(keys) => keys.verify_header(header).map_err(Problem::from),
            Self::Remote(remote) => remote.verify_header(header).await,
        }
    }
}

impl From<JwtKeys> for TokenVerifier {
    fn from(keys: JwtKeys) -> Self {
        Self::Local(keys)
    }
}

/// Extractor: the verified claims of the request's bearer token, or a 401 problem.
///
/// Needs a [`TokenVerifier`] reachable from the router state (`FromRef`).
#[derive(Clone, Debug)]
pub struct Authenticated(pub Claims);

impl<S> FromRequestParts<S> for Authenticated
where
    S: Send + Sync,
    TokenVerifier: FromRef<S>,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        TokenVerifier::from_ref(state)
            .verify_header(parts.headers.get(header::AUTHORIZATION))
            .await
            .map(Authenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn keys() -> JwtKeys {
        JwtKeys::new(JwtSettings {
            secret: SECRET.as_bytes().to_vec(),
            issuer: "vidmp3-auth".into(),
            audience: "vidmp3".into(),
            ttl: Duration::from_secs(3600),
        })
        .unwrap()
    }

    fn sign(alg: Algorithm, key: &[u8], claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            claims,
            &EncodingKey::from_secret(key).unwrap(),
        )
        .unwrap()
    }

    fn claims(now: i64) -> serde_json::Value {
        serde_json::json!({"sub":"1","email":"a@b.c","admin":false,"iat":now,"exp":now+600,"iss":"vidmp3-auth","aud":"vidmp3"})
    }

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let k = keys();
        let (token, claims) = k.issue("42", "me@example.com", true).unwrap();
        assert_eq!(k.verify(&token).unwrap(), claims);
        assert_eq!(claims.exp - claims.iat, 3600);
    }

    #[test]
    fn alg_none_is_refused() {
        let now = chrono::Utc::now().timestamp();
        let header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = B64.encode(claims(now).to_string());
        let token = format!("{header}.{body}.");
        assert!(matches!(
            keys().verify(&token),
            Err(TokenError::WrongAlgorithm | TokenError::Malformed)
        ));
    }

    #[test]
    fn hs512_with_the_right_secret_is_refused() {
        let now = chrono::Utc::now().timestamp();
        let token = sign(Algorithm::HS512, SECRET.as_bytes(), &claims(now));
        assert_eq!(keys().verify(&token), Err(TokenError::WrongAlgorithm));
    }

    #[test]
    fn a_wrong_key_is_refused() {
        let now = chrono::Utc::now().timestamp();
        let token = sign(
            Algorithm::HS256,
            b"another-secret-another-secret-another",
            &claims(now),
        );
        assert_eq!(keys().verify(&token), Err(TokenError::BadSignature));
    }

    #[test]
    fn expired_beyond_leeway_is_refused() {
        let now = chrono::Utc::now().timestamp();
        let mut c = claims(now - 7200);
        c["exp"] = serde_json::json!(now - LEEWAY as i64 - 5);
        assert_eq!(
            keys().verify(&sign(Algorithm::HS256, SECRET.as_bytes(), &c)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn iat_in_the_future_beyond_leeway_is_refused_but_small_skew_is_fine() {
        let now = chrono::Utc::now().timestamp();
        let far = claims(now + 3600);
        assert_eq!(
            keys().verify(&sign(Algorithm::HS256, SECRET.as_bytes(), &far)),
            Err(TokenError::IssuedInFuture)
        );
        let near = claims(now + 10);
        assert!(
            keys()
                .verify(&sign(Algorithm::HS256, SECRET.as_bytes(), &near))
                .is_ok()
        );
    }

    #[test]
    fn missing_claims_are_refused() {
        let now = chrono::Utc::now().timestamp();
        for field in ["exp", "iat", "sub", "iss", "aud", "email", "admin"] {
            let mut c = claims(now);
            c.as_object_mut().unwrap().remove(field);
            let err = keys()
                .verify(&sign(Algorithm::HS256, SECRET.as_bytes(), &c))
                .unwrap_err();
            assert_eq!(
                err,
                TokenError::MissingClaim(field.into()),
                "without {field}"
            );
        }
    }

    #[test]
    fn wrong_issuer_or_audience_is_refused() {
        let now = chrono::Utc::now().timestamp();
        for (field, value) in [("iss", "someone-else"), ("aud", "other-app")] {
            let mut c = claims(now);
            c[field] = serde_json::json!(value);
            let err = keys()
                .verify(&sign(Algorithm::HS256, SECRET.as_bytes(), &c))
                .unwrap_err();
            assert_eq!(err, TokenError::WrongIssuerOrAudience);
        }
    }

    #[test]
    fn headers_need_the_bearer_scheme() {
        let k = keys();
        assert_eq!(k.verify_header(None), Err(TokenError::Missing));
        let basic = HeaderValue::from_static("Basic dXNlcjpwYXNz");
        assert_eq!(k.verify_header(Some(&basic)), Err(TokenError::WrongScheme));
        let garbage = HeaderValue::from_static("Bearer not.a.jwt");
        assert_eq!(k.verify_header(Some(&garbage)), Err(TokenError::Malformed));
    }

    #[test]
    fn short_secrets_refuse_to_start() {
        let env = Env::from_pairs([("JWT_SECRET", "short")]);
        assert_eq!(JwtSettings::from_env(&env).unwrap_err().var, "JWT_SECRET");
        assert_eq!(
            JwtSettings::from_env(&Env::from_pairs::<[(&str, &str); 0], _, _>([]))
                .unwrap_err()
                .var,
            "JWT_SECRET"
        );
    }
}
