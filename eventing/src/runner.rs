//! The runner: connection supervision, one dispatcher per Trigger, the HTTP server, shutdown.

use crate::amqp::{PublishError, Session, dlq_name, exchange_name, queue_name};
use crate::dispatch::{Outcome, deliver};
use crate::ingress;
use crate::manifest::{DeliverySpec, Topology, Trigger};
use crate::message::StoredEvent;
use crate::subscribers::{SubscriberError, SubscriberMap};
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

/// Default cap of an incoming event body and of a reply event body: 256 KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

/// How long a delivery waits before it is requeued because RabbitMQ refused what had to be stored
/// first (its reply, its dead letter). A requeued message comes back at once and is delivered to the
/// subscriber again, so without a pause a refusing RabbitMQ (a full queue with `reject-publish`, a
/// memory alarm) would turn into a tight loop of deliveries.
pub const REFUSED_PUBLISH_REQUEUE_DELAY: Duration = Duration::from_secs(1);

/// How the runner is set up. Build with [`Config::new`] and adjust the public fields.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Brokers and Triggers to serve.
    pub topology: Topology,
    /// URLs of the subscribers and dead-letter sinks named by `ref`.
    pub subscribers: SubscriberMap,
    /// AMQP 0-9-1 URI of RabbitMQ, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub amqp_url: String,
    /// Address of the HTTP server (ingress + health); port 0 picks a free port.
    pub listen: SocketAddr,
    /// Cap of an incoming event's body and of a reply's body, in bytes.
    pub max_body_bytes: usize,
    /// On shutdown, how long in-flight deliveries may take before they are abandoned (their
    /// messages are then redelivered by RabbitMQ on the next start).
    pub shutdown_grace: Duration,
    /// Longest wait between two reconnection attempts (backoff starts at 200 ms and doubles).
    pub reconnect_max_backoff: Duration,
}

impl Config {
    /// A configuration with the defaults: listen on 127.0.0.1:8090, 256 KiB bodies, 30 s
    /// shutdown grace, reconnect backoff up to 5 s.
    pub fn new(
        topology: Topology,
        subscribers: SubscriberMap,
        amqp_url: impl Into<String>,
    ) -> Self {
        Self {
            topology,
            subscribers,
            amqp_url: amqp_url.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            shutdown_grace: Duration::from_secs(30),
            reconnect_max_backoff: Duration::from_secs(5),
        }
    }
}

/// Why the runner could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A subscriber `ref` has no URL (every subscriber must be mapped; unmapped dead-letter sinks
    /// only produce a warning and leave dead letters in the `.dlq` queue).
    #[error("Trigger {trigger}: {source}")]
    Subscriber {
        /// `namespace/name` of the Trigger.
        trigger: String,
        /// The resolution error.
        source: SubscriberError,
    },
    /// The HTTP listener could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// A Trigger with everything resolved: where to read, where to deliver, where dead letters go.
#[derive(Debug, Clone)]
pub struct Route {
    /// The Trigger.
    pub trigger: Trigger,
    /// Its Broker's exchange (replies are published there).
    pub exchange: String,
    /// Its queue.
    pub queue: String,
    /// Its dead-letter queue.
    pub dlq: String,
    /// The subscriber's URL.
    pub subscriber: Url,
    /// The dead-letter sink's URL, if configured and mapped.
    pub dead_letter_sink: Option<Url>,
}

impl Route {
    /// Resolves the routes of every Trigger of `topology`.
    ///
    /// # Errors
    /// [`StartError::Subscriber`] for an unmapped or invalid subscriber. An unmapped dead-letter
    /// sink is logged (warning) and left out.
    pub fn resolve_all(
        topology: &Topology,
        subscribers: &SubscriberMap,
    ) -> Result<Vec<Route>, StartError> {
        let mut routes = Vec::new();
        for t in &topology.triggers {
            let qualified = format!("{}/{}", t.namespace, t.name);
            let subscriber =
                subscribers
                    .resolve(&t.subscriber, &t.namespace)
                    .map_err(|source| StartError::Subscriber {
                        trigger: qualified.clone(),
                        source,
                    })?;
            let dead_letter_sink = match t
                .delivery
                .as_ref()
                .and_then(|d| d.dead_letter_sink.as_ref())
            {
                None => None,
                Some(dls) => match subscribers.resolve(dls, &t.namespace) {
                    Ok(u) => Some(u),
                    Err(e) => {
                        tracing::warn!(
                            trigger = %qualified,
                            error = %e,
                            "dead-letter sink not mapped: dead letters are only kept in the .dlq queue"
                        );
                        None
                    }
                },
            };
            routes.push(Route {
                exchange: exchange_name(&t.namespace, &t.broker),
                queue: queue_name(&t.namespace, &t.name),
                dlq: dlq_name(&t.namespace, &t.name),
                subscriber,
                dead_letter_sink,
                trigger: t.clone(),
            });
        }
        Ok(routes)
    }
}

/// State shared by the HTTP handlers, the supervisor and the dispatchers.
pub(crate) struct Shared {
    pub(crate) topology: Topology,
    pub(crate) routes: Vec<(Arc<Route>, Arc<Semaphore>)>,
    exchanges: HashMap<(String, String), String>,
    session: watch::Sender<Option<Arc<Session>>>,
    pub(crate) client: reqwest::Client,
    pub(crate) max_body_bytes: usize,
    amqp_url: String,
    shutdown: CancellationToken,
    shutdown_grace: Duration,
    reconnect_max_backoff: Duration,
}

impl Shared {
    pub(crate) fn exchange_for(&self, namespace: &str, broker: &str) -> Option<&str> {
        self.exchanges
            .get(&(namespace.to_string(), broker.to_string()))
            .map(String::as_str)
    }

    /// The current session if it is healthy.
    pub(crate) fn current_session(&self) -> Option<Arc<Session>> {
        self.session
            .borrow()
            .as_ref()
            .filter(|s| s.is_healthy())
            .cloned()
    }

    /// Publishes through the current session, waiting up to 30 s for one (a reconnection).
    async fn publish_waiting(
        &self,
        exchange: &str,
        routing_key: &str,
        event: &StoredEvent,
    ) -> Result<(), PublishError> {
        let mut rx = self.session.subscribe();
        let wait = tokio::time::timeout(Duration::from_secs(30), async {
            rx.wait_for(|s| s.as_ref().is_some_and(|s| s.is_healthy()))
                .await
                .ok()
                .and_then(|s| s.clone())
        });
        // A healthy session wins even during shutdown (replies and dead letters of in-flight
        // deliveries are still stored); without one, shutdown stops the wait.
        let session = tokio::select! {
            biased;
            s = wait => s.ok().flatten(),
            _ = self.shutdown.cancelled() => None,
        }
        .ok_or(PublishError::Disconnected)?;
        session.publish(exchange, routing_key, event).await
    }
}

/// A running runner (see [`start`]). Dropping it does not stop it: call [`Runner::shutdown`].
pub struct Runner {
    addr: SocketAddr,
    shared: Arc<Shared>,
    supervisor: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Runner {
    /// The address the HTTP server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The ingress URL of Broker `namespace/broker`: `http://<addr>/<namespace>/<broker>`.
    pub fn ingress_url(&self, namespace: &str, broker: &str) -> String {
        format!("http://{}/{namespace}/{broker}", self.addr)
    }

    /// Whether a healthy RabbitMQ session is up (topology declared, consumers running).
    pub fn is_connected(&self) -> bool {
        self.shared.current_session().is_some()
    }

    /// Waits until connected, at most `timeout`; returns whether connected.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.session.subscribe();
        tokio::time::timeout(
            timeout,
            rx.wait_for(|s| s.as_ref().is_some_and(|s| s.is_healthy())),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }

    /// A token that stops the runner when cancelled (same as [`Runner::shutdown`] without the
    /// wait).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }

    /// Stops gracefully: the HTTP server stops accepting and finishes its requests, the
    /// dispatchers stop taking messages, in-flight deliveries finish (at most the shutdown
    /// grace; a delivery waiting to retry is requeued instead), then the connection is closed.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the runner has stopped (after [`Runner::shutdown_token`] was cancelled).
    pub async fn wait(self) {
        let _ = self.server.await;
        let _ = self.supervisor.await;
    }
}

/// Starts the runner: resolves every route (failing fast on unmapped subscribers), binds the
/// HTTP listener, and spawns the RabbitMQ supervisor (which connects, declares the topology,
/// starts one dispatcher per Trigger, and reconnects with backoff whenever the connection is
/// lost). Returns as soon as the listener is bound; until RabbitMQ is reached the ingress
/// answers 503.
///
/// # Errors
/// [`StartError`].
pub async fn start(config: Config) -> Result<Runner, StartError> {
    let routes = Route::resolve_all(&config.topology, &config.subscribers)?;
    for r in &routes {
        tracing::info!(
            trigger = %format!("{}/{}", r.trigger.namespace, r.trigger.name),
            queue = %r.queue,
            filter = ?r.trigger.filter,
            subscriber = %r.subscriber,
            dead_letter_sink = ?r.dead_letter_sink.as_ref().map(Url::as_str),
            parallelism = r.trigger.parallelism,
            "route"
        );
    }
    let exchanges = config
        .topology
        .brokers
        .iter()
        .map(|b| {
            (
                (b.namespace.clone(), b.name.clone()),
                exchange_name(&b.namespace, &b.name),
            )
        })
        .collect();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!(
            "vidmp3-eventing-runner/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()?;
    let shared = Arc::new(Shared {
        routes: routes
            .into_iter()
            .map(|r| {
                let permits = usize::from(r.trigger.parallelism);
                (Arc::new(r), Arc::new(Semaphore::new(permits)))
            })
            .collect(),
        topology: config.topology,
        exchanges,
        session: watch::Sender::new(None),
        client,
        max_body_bytes: config.max_body_bytes,
        amqp_url: config.amqp_url,
        shutdown: CancellationToken::new(),
        shutdown_grace: config.shutdown_grace,
        reconnect_max_backoff: config.reconnect_max_backoff,
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    tracing::info!(%addr, "HTTP server listening (ingress POST /<namespace>/<broker>)");
    let server_done = CancellationToken::new();
    let server = {
        let shared = shared.clone();
        let done = server_done.clone();
        let stop = shared.shutdown.clone();
        tokio::spawn(async move {
            let app = ingress::router(shared);
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
            {
                tracing::error!(error = %e, "HTTP server failed");
            }
            done.cancel();
        })
    };
    let supervisor = tokio::spawn(supervise(shared.clone(), server_done));
    Ok(Runner {
        addr,
        shared,
        supervisor,
        server,
    })
}

/// Connect → declare → consume → wait for loss or shutdown → repeat.
async fn supervise(shared: Arc<Shared>, server_done: CancellationToken) {
    let tracker = TaskTracker::new();
    let shutdown = shared.shutdown.clone();
    let mut failures: u32 = 0;
    while !shutdown.is_cancelled() {
        let opened = tokio::select! {
            r = Session::open(&shared.amqp_url, &shared.topology, Duration::from_secs(10)) => r,
            _ = shutdown.cancelled() => break,
        };
        let session = match opened {
            Ok(s) => Arc::new(s),
            Err(e) => {
                failures += 1;
                let wait = Duration::from_millis(200)
                    .saturating_mul(2u32.saturating_pow(failures.min(16) - 1))
                    .min(shared.reconnect_max_backoff);
                tracing::warn!(error = %e, attempt = failures, retry_in_ms = wait.as_millis() as u64, "cannot connect to RabbitMQ");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = shutdown.cancelled() => break,
                }
            }
        };
        let lost = shutdown.child_token();
        let channels = match start_dispatchers(&shared, &session, &lost, &tracker).await {
            Ok(c) => c,
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "starting dispatchers failed; reconnecting");
                lost.cancel();
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    session.connection.close(200, "restarting".into()),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        failures = 0;
        shared.session.send_replace(Some(session.clone()));
        tracing::info!(
            triggers = shared.routes.len(),
            "connected to RabbitMQ; topology declared, dispatchers running"
        );
        watch_session(&session, &channels, &lost).await;
        if shutdown.is_cancelled() {
            tracker.close();
            if tokio::time::timeout(shared.shutdown_grace, tracker.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    in_flight = tracker.len(),
                    "shutdown grace elapsed: abandoning in-flight deliveries (RabbitMQ redelivers them)"
                );
            }
            let _ = tokio::time::timeout(shared.shutdown_grace, server_done.cancelled()).await;
            shared.session.send_replace(None);
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                session.connection.close(200, "shutdown".into()),
            )
            .await;
            tracing::info!("stopped");
            return;
        }
        shared.session.send_replace(None);
        tracing::warn!(
            "lost the RabbitMQ connection; reconnecting (ingress answers 503 meanwhile)"
        );
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            session.connection.close(200, "reconnecting".into()),
        )
        .await;
    }
    // Shut down while disconnected: nothing can be acked; let in-flight work end quickly.
    tracker.close();
    let _ = tokio::time::timeout(shared.shutdown_grace, tracker.wait()).await;
    let _ = tokio::time::timeout(shared.shutdown_grace, server_done.cancelled()).await;
    tracing::info!("stopped");
}

/// Returns when `lost` is cancelled or the session (connection, publisher, a consumer channel)
/// is no longer healthy, cancelling `lost` in the latter case.
async fn watch_session(session: &Session, channels: &[lapin::Channel], lost: &CancellationToken) {
    let mut events = session.connection.events_listener();
    let mut events_open = true;
    loop {
        tokio::select! {
            _ = lost.cancelled() => return,
            ev = events.next(), if events_open => match ev {
                Some(lapin::Event::Error(e)) => tracing::warn!(error = %e, "RabbitMQ connection error"),
                Some(_) => {}
                None => events_open = false,
            },
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        if !session.is_healthy() || channels.iter().any(|c| !c.status().connected()) {
            lost.cancel();
            return;
        }
    }
}

/// Opens one channel per Trigger with `basic.qos(prefetch = parallelism)` and starts its
/// consumer loop.
async fn start_dispatchers(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    lost: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<Vec<lapin::Channel>, lapin::Error> {
    let mut channels = Vec::new();
    for (route, permits) in &shared.routes {
        let ch = session.connection.create_channel().await?;
        ch.basic_qos(route.trigger.parallelism, BasicQosOptions::default())
            .await?;
        let consumer = ch
            .basic_consume(
                ShortString::from(route.queue.as_str()),
                ShortString::from(format!("eventing-runner.{}", route.trigger.name)),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tokio::spawn(consume(
            shared.clone(),
            route.clone(),
            permits.clone(),
            consumer,
            lost.clone(),
            tracker.clone(),
        ));
        channels.push(ch);
    }
    Ok(channels)
}

async fn consume(
    shared: Arc<Shared>,
    route: Arc<Route>,
    permits: Arc<Semaphore>,
    mut consumer: lapin::Consumer,
    lost: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let item = tokio::select! {
            biased;
            _ = lost.cancelled() => return,
            item = consumer.next() => item,
        };
        match item {
            Some(Ok(delivery)) => {
                // Holding a permit bounds concurrency at `parallelism` even while deliveries of a
                // lost connection are still finishing next to those of the new one.
                let permit = tokio::select! {
                    p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                    _ = lost.cancelled() => return, // unacked: requeued when the channel closes
                };
                tracker.spawn(handle_delivery(
                    shared.clone(),
                    route.clone(),
                    delivery,
                    lost.clone(),
                    permit,
                ));
            }
            Some(Err(e)) => {
                tracing::warn!(queue = %route.queue, error = %e, "consumer failed");
                lost.cancel();
                return;
            }
            None => {
                if !lost.is_cancelled() {
                    tracing::warn!(queue = %route.queue, "consumer cancelled by RabbitMQ (queue deleted?)");
                    lost.cancel();
                }
                return;
            }
        }
    }
}

/// Processes one message to its final outcome and only then acknowledges it.
async fn handle_delivery(
    shared: Arc<Shared>,
    route: Arc<Route>,
    delivery: Delivery,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let trigger = route.trigger.name.as_str();
    let event = match StoredEvent::from_amqp(&delivery.properties, &delivery.data) {
        Ok(e) => e,
        Err(e) => {
            // Not a CloudEvent (someone published by hand): keep it in the DLQ as it is.
            tracing::error!(%trigger, error = %e, "undeliverable message moved to the dead-letter queue");
            let mut raw = StoredEvent {
                data: delivery.data.clone(),
                ..Default::default()
            };
            if let Some(h) = delivery.properties.headers() {
                for (k, v) in h.inner() {
                    if let lapin::types::AMQPValue::LongString(s) = v {
                        raw.attributes.insert(
                            k.to_string(),
                            String::from_utf8_lossy(s.as_bytes()).into_owned(),
                        );
                    }
                }
            }
            match shared.publish_waiting("", &route.dlq, &raw).await {
                Ok(()) => ack(&delivery, trigger).await,
                Err(_) => requeue(&delivery, trigger).await,
            }
            return;
        }
    };
    let delivery_spec = route.trigger.delivery.as_ref();
    let started = std::time::Instant::now();
    let outcome = deliver(
        &shared.client,
        &route.subscriber,
        &event,
        delivery_spec,
        &stop,
        shared.max_body_bytes,
    )
    .await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Outcome::Delivered { reply: None } => {
            tracing::info!(%trigger, id = event.id(), r#type = event.ty(), elapsed_ms, "delivered");
            ack(&delivery, trigger).await;
        }
        Outcome::Delivered { reply: Some(reply) } => {
            match shared.publish_waiting(&route.exchange, "", &reply).await {
                Ok(()) => {
                    tracing::info!(%trigger, id = event.id(), r#type = event.ty(), reply_id = reply.id(), reply_type = reply.ty(), elapsed_ms, "delivered; reply published to the broker");
                    ack(&delivery, trigger).await;
                }
                Err(e) => {
                    tracing::warn!(%trigger, id = event.id(), error = %e, "reply not published; requeueing the event");
                    pause_before_requeue(&stop).await;
                    requeue(&delivery, trigger).await;
                }
            }
        }
        Outcome::Failed {
            status,
            body,
            attempts,
        } => {
            let mut dead = event.clone();
            dead.add_error_extensions(route.subscriber.as_str(), status, &body);
            if let Err(e) = shared.publish_waiting("", &route.dlq, &dead).await {
                tracing::warn!(%trigger, id = event.id(), error = %e, "dead letter not stored; requeueing the event");
                pause_before_requeue(&stop).await;
                requeue(&delivery, trigger).await;
                return;
            }
            tracing::warn!(%trigger, id = event.id(), r#type = event.ty(), status, attempts, dlq = %route.dlq, "delivery failed; dead-lettered");
            if let Some(dls) = &route.dead_letter_sink {
                // One attempt (with the Trigger's timeout): the dead letter is already safe in
                // the .dlq queue, and the total time a message stays unacked must stay within
                // RabbitMQ's consumer_timeout (see knative/rabbitmq.yaml).
                let single = delivery_spec.map(|d| DeliverySpec {
                    retry: 0,
                    ..d.clone()
                });
                match deliver(
                    &shared.client,
                    dls,
                    &dead,
                    single.as_ref(),
                    &stop,
                    shared.max_body_bytes,
                )
                .await
                {
                    Outcome::Delivered { .. } => {
                        tracing::info!(%trigger, id = event.id(), %dls, "sent to the dead-letter sink");
                    }
                    other => {
                        tracing::warn!(%trigger, id = event.id(), %dls, outcome = ?other, "dead-letter sink failed; the event stays in the dead-letter queue");
                    }
                }
            }
            ack(&delivery, trigger).await;
        }
        Outcome::Interrupted => {
            tracing::info!(%trigger, id = event.id(), "interrupted before a retry; requeueing");
            requeue(&delivery, trigger).await;
        }
    }
}

async fn ack(delivery: &Delivery, trigger: &str) {
    if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
        tracing::warn!(%trigger, error = %e, "ack failed (connection lost?); RabbitMQ will redeliver");
    }
}

/// Waits [`REFUSED_PUBLISH_REQUEUE_DELAY`], or less when the runner is stopping.
async fn pause_before_requeue(stop: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(REFUSED_PUBLISH_REQUEUE_DELAY) => {}
        () = stop.cancelled() => {}
    }
}

async fn requeue(delivery: &Delivery, trigger: &str) {
    let opts = BasicNackOptions {
        multiple: false,
        requeue: true,
    };
    if let Err(e) = delivery.acker.nack(opts).await {
        tracing::debug!(%trigger, error = %e, "nack failed (connection lost?); RabbitMQ will redeliver");
    }
}
