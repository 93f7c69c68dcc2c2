//! What every vidmp3 function stands on, and nothing function-specific.
//!
//! - [`config`]: environment variables parsed at start-up; a bad one stops the process with one line.
//! - [`serve`]: plain HTTP on `$PORT`, or `lambda_http::run` under AWS Lambda; graceful shutdown.
//! - [`telemetry`]: JSON logs, request ids, Prometheus metrics, `/healthz`, `/readyz`, `/metrics`.
//! - [`problem`]: `application/problem+json` errors (RFC 9457) with stable codes.
//! - [`db`]: the MySQL pool and the MongoDB client, both connected lazily with bounded timeouts.
//! - [`forwarded`]: the client's address behind trusted proxies (`X-Forwarded-For`, `TRUSTED_PROXY_HOPS`).
//! - [`jwt`]: issuing and verifying the HS256 JWTs shared by auth and gateway.
//! - [`events`]: typed CloudEvents of the event contract (`eventing/schemas/`).
//! - [`jobs`]: the `jobs` collection and GridFS bucket names shared by gateway, converter, notification.
//! - [`units`]: sizes as people read them (SI units, as the web page shows them).

pub mod config;
pub mod db;
pub mod events;
pub mod forwarded;
pub mod jobs;
pub mod jwt;
pub mod problem;
pub mod serve;
pub mod telemetry;
pub mod units;

pub use problem::{Problem, ProblemQuery};
