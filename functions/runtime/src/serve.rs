//! Serving a function's [`Router`]: plain HTTP on `0.0.0.0:$PORT`, or AWS Lambda when
//! `AWS_LAMBDA_RUNTIME_API` is set; graceful shutdown on SIGTERM and SIGINT.
//!
//! Connections are served by hyper's HTTP/1 server with a header read timeout
//! (`REQUEST_HEADER_TIMEOUT_SECONDS`, default [`DEFAULT_HEADER_READ_TIMEOUT`]): a client that trickles its
//! request head (slowloris) is disconnected when the timeout passes. `axum::serve` offers no way to set it.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::config::{ConfigError, Env, or_exit};

/// The port when `$PORT` is unset (Knative always sets it).
pub const DEFAULT_PORT: u16 = 8080;
/// The header read timeout when `REQUEST_HEADER_TIMEOUT_SECONDS` is unset.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How connections are served.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// Longest time a client may take to send a request's head (request line and headers), from its
    /// first byte (or from the end of the previous request on a kept-alive connection); the connection is
    /// closed past it.
    pub header_read_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

impl ServeOptions {
    /// Reads `REQUEST_HEADER_TIMEOUT_SECONDS` (default 30, must be positive).
    ///
    /// # Errors
    /// The variable is not a positive whole number of seconds.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let header_read_timeout = env.seconds(
            "REQUEST_HEADER_TIMEOUT_SECONDS",
            DEFAULT_HEADER_READ_TIMEOUT.as_secs(),
        )?;
        if header_read_timeout.is_zero() {
            return Err(ConfigError::new(
                "REQUEST_HEADER_TIMEOUT_SECONDS",
                "must be positive",
            ));
        }
        Ok(Self {
            header_read_timeout,
        })
    }
}

/// Serves `router` until SIGTERM/SIGINT, then finishes in-flight requests and returns.
///
/// Under AWS Lambda (`AWS_LAMBDA_RUNTIME_API` set) the same router runs through `lambda_http::run`; there a
/// request body is capped by Lambda (about 6 MB for synchronous invokes), so large uploads need the HTTP path.
/// An unparsable `$PORT` exits the process with status 2 (see [`crate::config::or_exit`]); a port that cannot
/// be bound (in use, privileged) prints one line, `cannot listen on 0.0.0.0:8080 (PORT): Address already in
/// use (os error 98)`, and exits with status 1: the setting is well-formed, the machine refused it.
///
/// # Errors
/// The Lambda runtime reports an error.
pub async fn serve(router: Router) -> anyhow::Result<()> {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        tracing::info!("serving through the AWS Lambda runtime API");
        return lambda_http::run(router)
            .await
            .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"));
    }
    let env = Env::process();
    let port = or_exit(env.or("PORT", DEFAULT_PORT));
    let options = or_exit(ServeOptions::from_env(&env));
    let listener = match listen(port).await {
        Ok(listener) => listener,
        Err(e) => {
            // One line, not anyhow's `Error: ...` from `main` (which named neither the address nor PORT).
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    tracing::info!(port, "listening");
    serve_on_with(listener, router, shutdown_signal(), options).await
}

/// The port `$PORT` named could not be bound; displays as
/// `cannot listen on 0.0.0.0:<port> (PORT): <the OS's reason>`.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on 0.0.0.0:{port} (PORT): {source}")]
pub struct ListenError {
    /// The TCP port that was asked for.
    pub port: u16,
    /// Why the OS refused it (address in use, permission denied…).
    pub source: std::io::Error,
}

/// Binds `0.0.0.0:port`, the address [`serve`] listens on.
///
/// # Errors
/// [`ListenError`] naming the address and `PORT` when the OS refuses the bind.
pub async fn listen(port: u16) -> Result<TcpListener, ListenError> {
    TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|source| ListenError { port, source })
}

/// Serves `router` on `listener` with the default [`ServeOptions`] until `shutdown` completes, then waits
/// for in-flight requests.
///
/// # Errors
/// An I/O error from the listener.
pub async fn serve_on(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_on_with(listener, router, shutdown, ServeOptions::default()).await
}

/// Serves `router` on `listener` with `options` until `shutdown` completes, then finishes in-flight requests
/// (each connection is shut down gracefully) and returns. Handlers can extract
/// `ConnectInfo<SocketAddr>` (the peer's address), as with `axum::serve`.
///
/// # Errors
/// Never in practice: accept errors (too many open files…) are logged and retried after a pause.
pub async fn serve_on_with(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> anyhow::Result<()> {
    // Dropping `stop_tx` tells every connection to shut down gracefully; each holds a `done_rx` clone, so
    // `done_tx.closed()` completes when the last one has finished.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let (done_tx, done_rx) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        drop(stream.set_nodelay(true));
        let service = router
            .clone()
            .map_request(move |mut req: http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                req
            });
        let mut stop_rx = stop_rx.clone();
        let done_rx = done_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(options.header_read_timeout);
            let connection = builder
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stop_rx.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(done_rx);
        });
    }
    drop(listener);
    drop(stop_tx);
    drop(stop_rx);
    drop(done_rx);
    done_tx.closed().await;
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
