//! `gateway` — serve the gateway function on $PORT.

use vidmp3_runtime::config::{Env, or_exit};
use vidmp3_runtime::{serve, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
