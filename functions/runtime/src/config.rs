//! Configuration from the environment, parsed and checked once at start-up.
//!
//! A function builds its settings with [`Env`] and calls [`or_exit`] on the result: a missing or malformed
//! variable stops the process with one line naming it (`config error: MYSQL_PORT: invalid digit ...`) and
//! exit status 2, instead of surfacing later as a 500 on some request.

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

/// A variable that is missing or cannot be parsed.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    /// The environment variable's name, e.g. `JWT_SECRET`.
    pub var: String,
    /// What is wrong with it, in plain words.
    pub reason: String,
}

impl ConfigError {
    /// An error about `var`.
    pub fn new(var: &str, reason: impl Into<String>) -> Self {
        Self {
            var: var.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Reads variables from a source (the process environment, or a map in tests).
pub struct Env {
    lookup: Box<dyn Fn(&str) -> Option<String> + Send + Sync>,
}

impl Default for Env {
    fn default() -> Self {
        Self::process()
    }
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Self {
            lookup: Box::new(|k| std::env::var(k).ok()),
        }
    }

    /// A fixed set of variables (tests).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let map: std::collections::HashMap<String, String> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self {
            lookup: Box::new(move |k| map.get(k).cloned()),
        }
    }

    /// The raw value; an empty string counts as unset.
    pub fn raw(&self, var: &str) -> Option<String> {
        (self.lookup)(var).filter(|v| !v.trim().is_empty())
    }

    /// A required variable, parsed as `T`.
    ///
    /// # Errors
    /// [`ConfigError`] when unset/empty or when `T::from_str` fails.
    pub fn required<T>(&self, var: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        let raw = self
            .raw(var)
            .ok_or_else(|| ConfigError::new(var, "is required but not set"))?;
        parse(var, &raw)
    }

    /// An optional variable, parsed as `T`, with `default` when unset.
    ///
    /// # Errors
    /// [`ConfigError`] when set but `T::from_str` fails.
    pub fn or<T>(&self, var: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.raw(var) {
            Some(raw) => parse(var, &raw),
            None => Ok(default),
        }
    }

    /// An optional variable, `None` when unset.
    ///
    /// # Errors
    /// [`ConfigError`] when set but `T::from_str` fails.
    pub fn optional<T>(&self, var: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.raw(var).map(|raw| parse(var, &raw)).transpose()
    }

    /// A duration given in whole seconds, with a default.
    ///
    /// # Errors
    /// [`ConfigError`] when set but not a non-negative integer.
    pub fn seconds(&self, var: &str, default_s: u64) -> Result<Duration, ConfigError> {
        self.or(var, default_s).map(Duration::from_secs)
    }
}

fn parse<T>(var: &str, raw: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    raw.trim()
        .parse::<T>()
        .map_err(|e| ConfigError::new(var, format!("invalid value {raw:?}: {e}")))
}

impl std::fmt::Debug for MongoSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoSettings")
            .field("uri", &redact_url(&self.uri))
            .field("database", &self.database)
            .finish()
    }
}

/// `url` with the password of its `user:password@` part replaced by `***`, for `Debug` output and logs
/// (`mysql://app:s3cret@db:3306/x` → `mysql://app:***@db:3306/x`); URLs without a password are unchanged.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

/// A required MySQL URL in `var` (`mysql://user:password@host:3306/database`, or `mariadb://`), checked with
/// sqlx's own parser so that a malformed one (a port that is not a number, an unknown `ssl-mode`) stops the
/// process at start instead of failing the first query.
///
/// # Errors
/// [`ConfigError`] naming `var` when it is unset, has another scheme, or does not parse; the reason never
/// repeats the URL's password.
pub fn mysql_url(env: &Env, var: &str) -> Result<String, ConfigError> {
    let url: String = env.required(var)?;
    if !url.starts_with("mysql://") && !url.starts_with("mariadb://") {
        return Err(ConfigError::new(var, "must be a mysql:// URL"));
    }
    if let Err(e) = url.parse::<sqlx::mysql::MySqlConnectOptions>() {
        return Err(ConfigError::new(
            var,
            format!(
                "not a valid MySQL URL: {}",
                error_without_secret(&e.to_string(), &url)
            ),
        ));
    }
    Ok(url)
}

/// `message` with `url`'s password replaced by `***` wherever the message quotes the URL or its
/// `user:password@` part: parser errors may quote the input, and a config error line goes to the log. The
/// bare password is not searched for, since a short one ("p") also occurs in the driver's own words.
fn error_without_secret(message: &str, url: &str) -> String {
    let redacted = redact_url(url);
    let message = message.replace(url, &redacted);
    let userinfo = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?', '#']).next())
        .and_then(|authority| authority.rsplit_once('@'))
        .map(|(userinfo, _)| userinfo);
    match userinfo.and_then(|u| Some((u, u.split_once(':')?.0))) {
        Some((userinfo, user)) => message.replace(&format!("{userinfo}@"), &format!("{user}:***@")),
        None => message,
    }
}

/// An optional public base URL in `var` (how clients reach the service, the start of links in answers
/// and emails), `default` when unset: an absolute `http://` or `https://` URL with a host and no query or
/// fragment, returned as given without its trailing slashes (`https://vidmp3.example/` →
/// `https://vidmp3.example`) so that `{base}/path` joins cleanly.
///
/// # Errors
/// [`ConfigError`] naming `var` when the value is not such a URL (`foo`, `ftp://x`, `https://x/?a=1`).
pub fn public_base_url(env: &Env, var: &str, default: &str) -> Result<String, ConfigError> {
    let raw = env.raw(var).unwrap_or_else(|| default.to_owned());
    let raw = raw.trim();
    let url = reqwest::Url::parse(raw).map_err(|e| {
        ConfigError::new(
            var,
            format!("invalid value {raw:?}: not an absolute http(s) URL ({e})"),
        )
    })?;
    let problem = if !matches!(url.scheme(), "http" | "https") {
        Some("must be an http:// or https:// URL")
    } else if url.host_str().is_none_or(str::is_empty) {
        Some("has no host")
    } else if url.query().is_some() {
        Some("must not have a query (?...)")
    } else if url.fragment().is_some() {
        Some("must not have a fragment (#...)")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(ConfigError::new(
            var,
            format!("invalid value {raw:?}: {problem}"),
        )),
        None => Ok(raw.trim_end_matches('/').to_owned()),
    }
}

/// Unwraps a configuration result, or prints `config error: VAR: reason` on stderr and exits with status 2.
pub fn or_exit<T>(result: Result<T, ConfigError>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => {
            eprintln!("config error: {e}");
            std::process::exit(2);
        }
    }
}

/// Settings every function shares: where the MongoDB server is, for the three functions that use it.
/// Its `Debug` output hides the URI's password (see [`redact_url`]).
#[derive(Clone)]
pub struct MongoSettings {
    /// `MONGODB_URI`, e.g. `mongodb://127.0.0.1:27018/?directConnection=true`.
    pub uri: String,
    /// `MONGODB_DATABASE` (default `vidmp3`).
    pub database: String,
}

impl MongoSettings {
    /// Reads `MONGODB_URI` (required) and `MONGODB_DATABASE`.
    ///
    /// # Errors
    /// [`ConfigError`] when `MONGODB_URI` is missing, does not start with `mongodb://` / `mongodb+srv://`, or
    /// is not a connection string the driver accepts (a port that is not a number, an unknown option value):
    /// checked here, with the driver's own parser, so it stops the process at start instead of failing the
    /// first request. The parse makes no network call (`mongodb+srv://` names are resolved on connect).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let uri: String = env.required("MONGODB_URI")?;
        if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
            return Err(ConfigError::new(
                "MONGODB_URI",
                "must start with mongodb:// or mongodb+srv://",
            ));
        }
        if let Err(e) = mongodb::options::ConnectionString::parse(&uri) {
            return Err(ConfigError::new(
                "MONGODB_URI",
                format!(
                    "not a valid MongoDB connection string: {}",
                    // The kind alone: the full error appends empty labels and sources.
                    error_without_secret(&e.kind.to_string(), &uri)
                ),
            ));
        }
        Ok(Self {
            uri,
            database: env.or("MONGODB_DATABASE", "vidmp3".to_owned())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_in_debug_output() {
        assert_eq!(
            redact_url("mysql://app:s3cret@db:3306/x"),
            "mysql://app:***@db:3306/x"
        );
        assert_eq!(
            redact_url("mongodb://u:p%40ss@h1:1,h2:2/?authSource=admin&x=a@b"),
            "mongodb://u:***@h1:1,h2:2/?authSource=admin&x=a@b"
        );
        assert_eq!(redact_url("smtp://127.0.0.1:2525"), "smtp://127.0.0.1:2525");
        assert_eq!(redact_url("smtp://user@host:25"), "smtp://user@host:25");
        assert_eq!(redact_url("not a url"), "not a url");
        let settings = MongoSettings {
            uri: "mongodb://root:hunter2-pw@db:27017/?directConnection=true".into(),
            database: "vidmp3".into(),
        };
        let debug = format!("{settings:?}");
        assert!(
            !debug.contains("hunter2-pw") && debug.contains("root:***@db"),
            "{debug}"
        );
    }

    #[test]
    fn a_malformed_number_names_the_variable() {
        let env = Env::from_pairs([("MYSQL_PORT", "abc")]);
        let err = env.or::<u16>("MYSQL_PORT", 3306).unwrap_err();
        assert_eq!(err.var, "MYSQL_PORT");
        assert!(
            err.to_string()
                .starts_with("MYSQL_PORT: invalid value \"abc\""),
            "{err}"
        );
    }

    #[test]
    fn a_missing_required_variable_is_an_error_and_empty_counts_as_missing() {
        let env = Env::from_pairs([("JWT_SECRET", "  ")]);
        let err = env.required::<String>("JWT_SECRET").unwrap_err();
        assert_eq!(err.to_string(), "JWT_SECRET: is required but not set");
    }

    #[test]
    fn defaults_apply_only_when_unset() {
        let env = Env::from_pairs([("PORT", "9000")]);
        assert_eq!(env.or::<u16>("PORT", 8080).unwrap(), 9000);
        assert_eq!(env.or::<u16>("OTHER", 8080).unwrap(), 8080);
    }

    #[test]
    fn a_malformed_mysql_url_names_the_variable_and_hides_the_password() {
        for (url, reason) in [
            ("mysql://u:s3cret-pw@h:abc/db", "not a valid MySQL URL"),
            (
                "mysql://u:s3cret-pw@h:3306/db?ssl-mode=sometimes",
                "not a valid MySQL URL",
            ),
            ("postgres://u:s3cret-pw@h/db", "must be a mysql:// URL"),
        ] {
            let env = Env::from_pairs([("DATABASE_URL", url)]);
            let err = mysql_url(&env, "DATABASE_URL").unwrap_err();
            assert_eq!(err.var, "DATABASE_URL", "{url}");
            assert!(err.reason.contains(reason), "{url}: {err}");
            assert!(!err.reason.contains("s3cret-pw"), "{url}: {err}");
        }
        let env = Env::from_pairs([("DATABASE_URL", "mysql://u:p@127.0.0.1:3306/db")]);
        assert_eq!(
            mysql_url(&env, "DATABASE_URL").unwrap(),
            "mysql://u:p@127.0.0.1:3306/db"
        );
    }

    #[test]
    fn a_malformed_mongo_uri_names_the_variable_and_hides_the_password() {
        for uri in [
            "mongodb://u:s3cret-pw@h:abc/?directConnection=true",
            "mongodb://u:s3cret-pw@h:27017/?directConnection=maybe",
            "mongodb://u:s3cret-pw@h:99999/",
        ] {
            let env = Env::from_pairs([("MONGODB_URI", uri)]);
            let err = MongoSettings::from_env(&env).unwrap_err();
            assert_eq!(err.var, "MONGODB_URI", "{uri}");
            assert!(
                err.reason
                    .starts_with("not a valid MongoDB connection string"),
                "{uri}: {err}"
            );
            assert!(!err.reason.contains("s3cret-pw"), "{uri}: {err}");
        }
        let env = Env::from_pairs([(
            "MONGODB_URI",
            "mongodb://127.0.0.1:27018/?directConnection=true",
        )]);
        assert!(MongoSettings::from_env(&env).is_ok());
    }

    #[test]
    fn a_short_password_is_masked_only_in_the_userinfo() {
        // One letter, and a password that is also part of the option's name: the driver's own words stay.
        for (uri, password) in [
            ("mongodb://u:p@127.0.0.1:1/?connectTimeoutMS=abc", "p"),
            (
                "mongodb://u:connect@127.0.0.1:1/?connectTimeoutMS=abc",
                "connect",
            ),
        ] {
            let env = Env::from_pairs([("MONGODB_URI", uri)]);
            let err = MongoSettings::from_env(&env).unwrap_err();
            assert!(!err.reason.contains("***"), "{uri}: {err}");
            assert!(
                err.reason.contains("connecttimeoutms") && err.reason.contains("option"),
                "{uri}: {err}"
            );
            let quoted = format!("invalid argument: {uri} (u:{password}@127.0.0.1)");
            assert_eq!(
                error_without_secret(&quoted, uri),
                format!("invalid argument: {} (u:***@127.0.0.1)", redact_url(uri)),
                "{uri}"
            );
        }
        assert_eq!(
            error_without_secret("option p is not a pair", "mysql://u:p@h/db"),
            "option p is not a pair"
        );
    }

    #[test]
    fn a_public_base_url_is_an_absolute_http_url_without_query_or_fragment() {
        for (raw, expected) in [
            ("https://vidmp3.example/", "https://vidmp3.example"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("https://example.com/vidmp3//", "https://example.com/vidmp3"),
        ] {
            let env = Env::from_pairs([("PUBLIC_BASE_URL", raw)]);
            assert_eq!(
                public_base_url(&env, "PUBLIC_BASE_URL", "http://localhost:8080").unwrap(),
                expected
            );
        }
        let unset = Env::from_pairs([("OTHER", "x")]);
        assert_eq!(
            public_base_url(&unset, "PUBLIC_BASE_URL", "http://localhost:8080").unwrap(),
            "http://localhost:8080"
        );
        for raw in [
            "foo",
            "/relative",
            "ftp://example.com",
            "mailto:a@example.com",
            "https://example.com/?a=1",
            "https://example.com/#job=1",
        ] {
            let env = Env::from_pairs([("PUBLIC_BASE_URL", raw)]);
            let err =
                public_base_url(&env, "PUBLIC_BASE_URL", "http://localhost:8080").unwrap_err();
            assert_eq!(err.var, "PUBLIC_BASE_URL", "{raw}");
            assert!(
                err.to_string()
                    .starts_with(&format!("PUBLIC_BASE_URL: invalid value {raw:?}")),
                "{raw}: {err}"
            );
        }
    }

    #[test]
    fn mongo_uri_must_have_the_mongodb_scheme() {
        let env = Env::from_pairs([("MONGODB_URI", "http://x")]);
        assert_eq!(
            MongoSettings::from_env(&env).unwrap_err().var,
            "MONGODB_URI"
        );
    }
}
