//! `gateway` — serve the gateway function on $PORT.

use clap::Parser;
use vidmp3_runtime::config::{Env, or_exit};
use vidmp3_runtime::{serve, telemetry};

/// Command line: no arguments besides `--help` and `--version`.
#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "vidmp3 gateway: the public API and web page; serves HTTP on $PORT (default 8080). Configuration comes from the environment (see the README)."
)]
struct Cli {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Cli::parse();
    telemetry::init_tracing();
    let settings = or_exit(gateway::Settings::from_env(&Env::process()));
    let state = gateway::AppState::new(settings).await?;
    let db = state.db.clone();
    tokio::spawn(async move {
        if let Err(e) = vidmp3_runtime::jobs::ensure_indexes(&db).await {
            tracing::warn!(error = %e, "indexes not created yet (MongoDB unavailable?)");
        }
    });
    serve::serve(gateway::router(state)).await
}
