//! `converter` — serve the converter function on $PORT, or run one JobSink job.

use clap::{Parser, Subcommand};
use vidmp3_runtime::config::{Env, or_exit};
use vidmp3_runtime::{serve, telemetry};

#[derive(Parser)]
#[command(
    name = "converter",
    about = "vidmp3 converter: video.uploaded CloudEvents in, MP3s out"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP on $PORT (the default).
    Serve,
    /// JobSink mode: convert the CloudEvent in $JOBSINK_EVENT_PATH (default /etc/jobsink-event/event), POST
    /// the result event to $K_SINK, exit 0 (1 only for transient failures, so the Job is retried; an event
    /// file that cannot be read or parsed is final: exit 0 with one error line).
    Job,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_tracing();
    if let Err(e) = converter::transcode::check_encoder() {
        eprintln!("converter cannot start: {e}");
        std::process::exit(1);
    }
    let env = Env::process();
    let settings = or_exit(converter::service::Settings::from_env(&env));
    let state = converter::service::AppState::new(settings).await?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve::serve(converter::service::router(state)).await,
        Command::Job => {
            let path: String =
                or_exit(env.or("JOBSINK_EVENT_PATH", "/etc/jobsink-event/event".to_owned()));
            let sink: String = or_exit(env.required("K_SINK"));
            let code = converter::jobsink::run(&state, std::path::Path::new(&path), &sink).await;
            std::process::exit(code)
        }
    }
}
