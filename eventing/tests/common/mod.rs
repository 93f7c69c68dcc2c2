//! Test helpers: unique topologies on a real RabbitMQ, recording HTTP subscribers, AMQP peeks.
#![allow(dead_code)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use eventing::{Config, Runner, StoredEvent, SubscriberMap, Topology};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::{Connection, ConnectionProperties};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The machine's shared RabbitMQ (tests isolate themselves by unique names).
pub fn shared_amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A name unique across processes and runs (lower-case, DNS-1123 friendly).
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        nanos % 1_000_000_000
    )
}

/// A Broker manifest `default` in `ns`.
pub fn broker_yaml(ns: &str) -> String {
    format!(
        "apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
  namespace: {ns}
  annotations:
    eventing.knative.dev/broker.class: RabbitMQBroker
spec:
  config:
    apiVersion: eventing.knative.dev/v1alpha1
    kind: RabbitmqBrokerConfig
    name: test
"
    )
}

/// A Trigger manifest on Broker `default` in `ns`, filtering on `type` (if given), with a ksvc
/// subscriber ref, an optional `delivery:` block (YAML, indented 4) and a parallelism.
pub fn trigger_yaml(
    ns: &str,
    name: &str,
    ty: Option<&str>,
    subscriber: &str,
    delivery: Option<&str>,
    parallelism: u16,
) -> String {
    let filter = ty
        .map(|t| format!("  filter:\n    attributes:\n      type: {t}\n"))
        .unwrap_or_default();
    let delivery = delivery
        .map(|d| format!("  delivery:\n{d}"))
        .unwrap_or_default();
    format!(
        "apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: {name}
  namespace: {ns}
  annotations:
    rabbitmq.eventing.knative.dev/parallelism: \"{parallelism}\"
spec:
  broker: default
{filter}  subscriber:
    ref:
      apiVersion: serving.knative.dev/v1
      kind: Service
      name: {subscriber}
{delivery}"
    )
}

/// Parses manifests joined with `---`.
pub fn topology(docs: &[String]) -> Topology {
    Topology::from_sources(&[("test.yaml".into(), docs.join("---\n"))]).expect("valid manifests")
}

/// Deletes the topology's exchanges and queues when dropped (even when the test panics).
pub struct Cleanup {
    pub amqp_url: String,
    pub topology: Topology,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let url = self.amqp_url.clone();
        let topology = self.topology.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = rt.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(10),
                    eventing::amqp::delete_topology(&url, &topology),
                )
                .await
            });
        })
        .join();
    }
}

/// Starts a runner on 127.0.0.1:0 and waits until it is connected.
pub async fn start_runner(
    topology: Topology,
    subscribers: SubscriberMap,
    amqp_url: &str,
) -> Runner {
    let mut config = Config::new(topology, subscribers, amqp_url);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.shutdown_grace = Duration::from_secs(5);
    config.reconnect_max_backoff = Duration::from_millis(500);
    let runner = eventing::start(config).await.expect("runner starts");
    assert!(
        runner.wait_connected(Duration::from_secs(20)).await,
        "runner did not connect to RabbitMQ"
    );
    runner
}

/// One request seen by a [`Recorder`].
#[derive(Debug, Clone)]
pub struct Recorded {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Behavior = dyn Fn(usize, &Recorded) -> Response + Send + Sync;

struct RecState {
    requests: Mutex<Vec<Recorded>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    delay: Duration,
    gate: tokio::sync::watch::Receiver<bool>,
    behavior: Box<Behavior>,
}

/// A real HTTP subscriber (axum on 127.0.0.1:0) recording every request; `behavior(n, req)`
/// (n = 0-based request number) makes the response after `delay` and once the gate is open.
pub struct Recorder {
    pub url: String,
    state: Arc<RecState>,
    gate: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Recorder {
    pub async fn start(
        delay: Duration,
        behavior: impl Fn(usize, &Recorded) -> Response + Send + Sync + 'static,
    ) -> Self {
        Self::start_gated(delay, true, behavior).await
    }

    pub async fn start_gated(
        delay: Duration,
        open: bool,
        behavior: impl Fn(usize, &Recorded) -> Response + Send + Sync + 'static,
    ) -> Self {
        let (gate, gate_rx) = tokio::sync::watch::channel(open);
        let state = Arc::new(RecState {
            requests: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            delay,
            gate: gate_rx,
            behavior: Box::new(behavior),
        });
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            state,
            gate,
            server,
        }
    }

    /// An always-202 recorder.
    pub async fn accepting() -> Self {
        Self::start(Duration::ZERO, |_, _| {
            axum::http::StatusCode::ACCEPTED.into_response()
        })
        .await
    }

    pub fn open_gate(&self) {
        let _ = self.gate.send(true);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests arrived (panics after `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} requests at {}, got {}",
                self.url,
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(State(state): State<Arc<RecState>>, headers: HeaderMap, body: Bytes) -> Response {
    let rec = Recorded { headers, body };
    let n = {
        let mut reqs = state.requests.lock().unwrap();
        reqs.push(rec.clone());
        reqs.len() - 1
    };
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    let mut gate = state.gate.clone();
    let _ = gate.wait_for(|open| *open).await;
    let resp = (state.behavior)(n, &rec);
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    resp
}

/// POSTs a binary-mode CloudEvent; returns the status.
pub async fn post_binary(url: &str, id: &str, ty: &str, data: serde_json::Value) -> u16 {
    reqwest::Client::new()
        .post(url)
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/test")
        .header("ce-type", ty)
        .header("ce-subject", format!("job-{id}"))
        .header("content-type", "application/json")
        .body(data.to_string())
        .send()
        .await
        .expect("ingress reachable")
        .status()
        .as_u16()
}

/// POSTs a structured-mode CloudEvent; returns the status.
pub async fn post_structured(url: &str, id: &str, ty: &str, data: serde_json::Value) -> u16 {
    let body = serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "/test",
        "type": ty,
        "datacontenttype": "application/json",
        "data": data,
    });
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/cloudevents+json")
        .body(body.to_string())
        .send()
        .await
        .expect("ingress reachable")
        .status()
        .as_u16()
}

/// Takes (and acks) every message currently in `queue`, as events.
pub async fn drain_queue(amqp_url: &str, queue: &str) -> Vec<StoredEvent> {
    let conn = Connection::connect(amqp_url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(msg) = ch
        .basic_get(queue.into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        out.push(StoredEvent::from_amqp(&msg.delivery.properties, &msg.delivery.data).unwrap());
        msg.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = conn.close(200, "bye".into()).await;
    out
}

/// Waits until `queue` holds at least `n` messages, then drains it.
pub async fn wait_queue(
    amqp_url: &str,
    queue: &str,
    n: usize,
    timeout: Duration,
) -> Vec<StoredEvent> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    loop {
        got.extend(drain_queue(amqp_url, queue).await);
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} messages in {queue}, got {}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
