//! Serving a function's [`Router`]: plain HTTP on `0.0.0.0:$PORT`, or AWS Lambda when
//! `AWS_LAMBDA_RUNTIME_API` is set; graceful shutdown on SIGTERM and SIGINT.

use std::future::Future;

use axum::Router;
use tokio::net::TcpListener;

use crate::config::{Env, or_exit};

/// The port when `$PORT` is unset (Knative always sets it).
pub const DEFAULT_PORT: u16 = 8080;

/// Serves `router` until SIGTERM/SIGINT, then finishes in-flight requests and returns.
///
/// Under AWS Lambda (`AWS_LAMBDA_RUNTIME_API` set) the same router runs through `lambda_http::run`; there a
/// request body is capped by Lambda (about 6 MB for synchronous invokes), so large uploads need the HTTP path.
/// An unparsable `$PORT` exits the process with status 2 (see [`crate::config::or_exit`]).
///
/// # Errors
/// Binding the port fails, or the Lambda runtime reports an error.
pub async fn serve(router: Router) -> anyhow::Result<()> {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        tracing::info!("serving through the AWS Lambda runtime API");
        return lambda_http::run(router)
            .await
            .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"));
    }
    let port = or_exit(Env::process().or("PORT", DEFAULT_PORT));
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    tracing::info!(port, "listening");
    serve_on(listener, router, shutdown_signal()).await
}

/// Serves `router` on `listener` until `shutdown` completes, then waits for in-flight requests.
///
/// # Errors
/// An I/O error from the listener.
pub async fn serve_on(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    tracing::info!("stopped: in-flight requests finished");
    Ok(())
}

/// Completes on the first SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received: draining");
}
