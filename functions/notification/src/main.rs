//! `notification` — serve the notification function on $PORT.

use clap::Parser;
use vidmp3_runtime::config::{Env, or_exit};
use vidmp3_runtime::{serve, telemetry};

/// Command line: no arguments besides `--help` and `--version`.
#[derive(Parser)]
#[command(
    name = "notification",
    version,
    about = "vidmp3 notification: audio.converted / conversion.failed CloudEvents in, one email per job out; serves HTTP on $PORT (default 8080). Configuration comes from the environment (see the README)."
)]
struct Cli {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Cli::parse();
    telemetry::init_tracing();
    let settings = or_exit(notification::Settings::from_env(&Env::process()));
    let state = notification::AppState::new(settings).await?;
    serve::serve(notification::router(state)).await
}
