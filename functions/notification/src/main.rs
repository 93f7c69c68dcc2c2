//! `notification` — serve the notification function on $PORT.

use vidmp3_runtime::config::{Env, or_exit};
use vidmp3_runtime::{serve, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let settings = or_exit(notification::Settings::from_env(&Env::process()));
    let state = notification::AppState::new(settings).await?;
    serve::serve(notification::router(state)).await
}
