//! The MySQL pool and the MongoDB client. Both connect lazily, so a cold start never waits for a database,
//! and both recover by themselves when the database comes back.

use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

use crate::config::MongoSettings;

/// Default bound on connecting to a database (and on waiting for a pooled connection).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A lazily connected MySQL pool.
///
/// - `acquire_timeout` = `connect_timeout`: a request waits at most that long, then gets an error (→ 503);
/// - idle connections are closed after 5 min and every connection after 30 min, well before MySQL's
///   `wait_timeout` (8 h by default), so the pool never hands out a connection the server has dropped;
/// - `test_before_acquire`: a connection broken by a server restart is replaced, not returned.
///
/// # Errors
/// `url` is not a valid `mysql://` URL.
pub fn mysql_pool(url: &str, connect_timeout: Duration) -> Result<MySqlPool, sqlx::Error> {
    let options: MySqlConnectOptions = url.parse()?;
    Ok(MySqlPoolOptions::new()
        .max_connections(10)
        .min_connections(0)
        .acquire_timeout(connect_timeout)
        .idle_timeout(Duration::from_secs(300))
        .max_lifetime(Duration::from_secs(1800))
        .test_before_acquire(true)
        .connect_lazy_with(options))
}

/// A MongoDB client for `settings.uri`; no connection is made until the first operation.
///
/// Connect and server-selection timeouts are `connect_timeout`, so an operation against a stopped server
/// fails within it (→ 503) instead of hanging for the driver's 30 s default.
///
/// # Errors
/// The URI does not parse.
pub async fn mongo_client(
    settings: &MongoSettings,
    connect_timeout: Duration,
) -> mongodb::error::Result<mongodb::Client> {
    let mut options = mongodb::options::ClientOptions::parse(&settings.uri).await?;
    options.connect_timeout = Some(connect_timeout);
    options.server_selection_timeout = Some(connect_timeout);
    options.max_idle_time = Some(Duration::from_secs(300));
    options.app_name.get_or_insert_with(|| "vidmp3".to_owned());
    mongodb::Client::with_options(options)
}

/// The database named in `settings`.
pub async fn mongo_database(
    settings: &MongoSettings,
    connect_timeout: Duration,
) -> mongodb::error::Result<mongodb::Database> {
    Ok(mongo_client(settings, connect_timeout)
        .await?
        .database(&settings.database))
}

/// Whether a MongoDB error means "the server is unreachable / busy" (retry later, 503) rather than a bug.
pub fn mongo_unavailable(err: &mongodb::error::Error) -> bool {
    use mongodb::error::ErrorKind;
    matches!(
        *err.kind,
        ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
    ) || err.contains_label(mongodb::error::RETRYABLE_ERROR)
        || err.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR)
}

/// Whether a sqlx error means "MySQL is unreachable" (503) rather than a bug.
pub fn mysql_unavailable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
    )
}

/// A readiness check that pings MySQL.
pub async fn ping_mysql(pool: MySqlPool) -> Result<(), String> {
    sqlx::query("SELECT 1")
        .execute(&pool)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A readiness check that pings MongoDB.
pub async fn ping_mongo(db: mongodb::Database) -> Result<(), String> {
    db.run_command(mongodb::bson::doc! {"ping": 1})
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}
