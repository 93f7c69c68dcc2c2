//! `eventing-runner`: the vidmp3 local Knative eventing runner (see the `eventing` crate docs).

use anyhow::Context;
use clap::Parser;
use eventing::{Config, SubscriberMap, Topology};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Runs the Broker/Trigger manifests over a real RabbitMQ, like Knative's RabbitMQ broker.
#[derive(Debug, Parser)]
#[command(name = "eventing-runner", version, about)]
struct Cli {
    /// Directory whose *.yaml files hold the Broker and Trigger manifests (not recursive).
    #[arg(long, env = "EVENTING_MANIFESTS", default_value = "eventing")]
    manifests: PathBuf,
    /// Local URL of a subscriber or dead-letter sink ref, NAME=URL (repeatable). NAME is
    /// `converter`, `vidmp3/converter`, `ksvc:converter` or `ksvc:vidmp3/converter`.
    #[arg(
        long = "subscriber",
        value_name = "NAME=URL",
        env = "EVENTING_SUBSCRIBERS",
        value_delimiter = ','
    )]
    subscribers: Vec<String>,
    /// YAML file mapping NAME: URL (flat, or under `subscribers:`); --subscriber entries win.
    #[arg(long, value_name = "FILE", env = "EVENTING_SUBSCRIBERS_FILE")]
    subscribers_file: Option<PathBuf>,
    /// AMQP 0-9-1 URI of RabbitMQ.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// Listen address of the ingress and health endpoints [default: 127.0.0.1:$PORT if PORT is
    /// set, else 127.0.0.1:8090].
    #[arg(long, env = "EVENTING_LISTEN")]
    listen: Option<SocketAddr>,
    /// Cap of an incoming event body (and of a reply), in bytes.
    #[arg(long, default_value_t = eventing::runner::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// How long in-flight deliveries may finish on shutdown (e.g. 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
    /// Check the manifests and the subscriber map, print the routes, and exit.
    #[arg(long)]
    check: bool,
    /// Delete the exchanges and queues (with their messages, dead letters included) of the
    /// manifests from RabbitMQ, and exit.
    #[arg(long, conflicts_with = "check")]
    delete_topology: bool,
}

fn listen_addr(cli: &Cli) -> anyhow::Result<SocketAddr> {
    if let Some(a) = cli.listen {
        return Ok(a);
    }
    match std::env::var("PORT") {
        Ok(p) => {
            let port: u16 = p
                .parse()
                .with_context(|| format!("PORT={p:?} is not a port number"))?;
            Ok(SocketAddr::from(([127, 0, 0, 1], port)))
        }
        Err(_) => Ok(SocketAddr::from(([127, 0, 0, 1], 8090))),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let topology = Topology::load_dir(&cli.manifests)
        .with_context(|| format!("loading manifests from {}", cli.manifests.display()))?;
    if cli.delete_topology {
        eventing::amqp::delete_topology(&cli.amqp_url, &topology)
            .await
            .context("deleting the topology")?;
        tracing::info!("topology deleted");
        return Ok(());
    }
    let mut subscribers = SubscriberMap::new();
    if let Some(f) = &cli.subscribers_file {
        subscribers.load_file(f)?;
    }
    for s in &cli.subscribers {
        subscribers.insert_pair(s)?;
    }
    if cli.check {
        let routes = eventing::Route::resolve_all(&topology, &subscribers)?;
        for r in routes {
            println!(
                "{}/{}: {:?} -> {} (parallelism {}, dead letters -> {}{})",
                r.trigger.namespace,
                r.trigger.name,
                r.trigger.filter,
                r.subscriber,
                r.trigger.parallelism,
                r.dlq,
                r.dead_letter_sink
                    .map(|u| format!(" + {u}"))
                    .unwrap_or_default()
            );
        }
        return Ok(());
    }
    let mut config = Config::new(topology, subscribers, cli.amqp_url.clone());
    config.listen = listen_addr(&cli)?;
    config.max_body_bytes = cli.max_body_bytes;
    config.shutdown_grace = cli.shutdown_grace;
    let runner = eventing::start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutdown signal received");
    runner.shutdown().await;
    Ok(())
}
