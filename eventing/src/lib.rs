//! # vidmp3 local eventing runner
//!
//! Does on one machine, over a real RabbitMQ, what Knative Eventing's RabbitMQ broker
//! (knative-extensions/eventing-rabbitmq, Broker class `RabbitMQBroker`) does in a cluster, from
//! the same manifests: `eventing/broker.yaml` and `eventing/triggers.yaml` are the single source
//! of routing. Functions cannot tell the two apart: they receive the same binary-mode CloudEvents
//! with `Prefer: reply`, and their replies are routed the same way.
//!
//! ## What it provides
//! - **Ingress** ([`ingress`]): `POST /<namespace>/<broker>`, CloudEvents HTTP binding binary
//!   or structured mode; `202` only after RabbitMQ's publisher confirm of a persistent message
//!   on the Broker's durable headers exchange, with the CloudEvents attributes as AMQP headers
//!   ([`message`]).
//! - **Topology** ([`amqp`]): exchange `b.<ns>.<broker>`; per Trigger a durable queue
//!   `t.<ns>.<trigger>` bound with `x-match: all` on `spec.filter.attributes` (exact match; no
//!   attributes = every event; `spec.filters` is ignored, as by eventing-rabbitmq), and a durable
//!   dead-letter queue `t.<ns>.<trigger>.dlq`.
//! - **Dispatchers** ([`dispatch`], [`runner`]): one per Trigger, `basic.qos` prefetch =
//!   `rabbitmq.eventing.knative.dev/parallelism` (default 1) and that many concurrent deliveries;
//!   retries per the Trigger's `spec.delivery` (else the Broker's; none = a single attempt):
//!   `retry` retries, linear (`delay*n`) or exponential (`delay*2^n`) backoff from
//!   `backoffDelay`, per-attempt `timeout`, on Knative's retryable set (no response, 404, 408,
//!   409, 429, 5xx); other statuses fail at once. A failed event gets the extensions
//!   `knativeerrordest` (subscriber URL), `knativeerrorcode` (last status, `0` = no response)
//!   and `knativeerrordata` (base64 of the response body, ≤ 1024 chars), is stored in the
//!   Trigger's `.dlq` queue (confirmed) and POSTed once (with the Trigger's `timeout`) to the
//!   `deadLetterSink` when it is mapped.
//!   A 2xx answer carrying a CloudEvent is a reply: it is published back to the Broker
//!   (confirmed) *before* the original message is acked. A message is acked only once its
//!   outcome is final (delivered, reply stored, or dead letter stored), so delivery is at least
//!   once: a crash or a lost connection at any point leads to a redelivery, never to a loss.
//! - **Reconnection**: a lost connection (RabbitMQ restarted) is retried with backoff (200 ms
//!   doubling up to 5 s); the topology is redeclared and the dispatchers resume; the ingress
//!   answers `503` meanwhile. Durable exchange and queues, persistent messages and publisher
//!   confirms mean an event answered with 202 survives a RabbitMQ restart.
//! - **Shutdown** on SIGTERM/SIGINT: stop accepting, stop consuming, finish in-flight
//!   deliveries (a delivery waiting for a retry is requeued), close.
//!
//! ## Running it
//! ```text
//! eventing-runner --manifests eventing \
//!     --subscriber converter=http://127.0.0.1:8083 \
//!     --subscriber notification=http://127.0.0.1:8084 \
//!     --subscriber dead-letters=http://127.0.0.1:8099      # optional: else .dlq queue only
//! # functions' K_SINK = http://127.0.0.1:8090/vidmp3/default
//! ```
//! Flags (env): `--manifests DIR` (`EVENTING_MANIFESTS`, default `eventing`), `--subscriber
//! NAME=URL` repeatable (`EVENTING_SUBSCRIBERS`, comma-separated), `--subscribers-file FILE`
//! (`EVENTING_SUBSCRIBERS_FILE`, YAML `NAME: URL`), `--amqp-url` (`AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`), `--listen ADDR` (`EVENTING_LISTEN`; default
//! `127.0.0.1:$PORT` when `PORT` is set, else `127.0.0.1:8090`), `--max-body-bytes` (262144),
//! `--shutdown-grace` (30s), `--check` (resolve and print the routes, exit),
//! `--delete-topology` (delete the manifests' exchanges and queues, exit). Logs are JSON
//! (`RUST_LOG`, default `info`). A subscriber `ref` is looked up as `ksvc:<ns>/<name>`,
//! `ksvc:<name>`, `<ns>/<name>`, then `<name>` ([`subscribers`]); every subscriber must be mapped
//! (startup fails otherwise), an unmapped dead-letter sink only logs a warning.
//!
//! ## Why replies cannot loop
//! A reply goes back into the Broker and is routed by its `type` like any other event. The
//! converter is only triggered by `dev.vidmp3.video.uploaded` and replies only with
//! `dev.vidmp3.audio.converted` or `dev.vidmp3.conversion.failed`, which are routed only to
//! notification; notification answers `200` with a plain JSON body (`{"sent": ...}`), which is
//! not a CloudEvent (no `ce-` headers, not `application/cloudevents+json`), so it is no reply.
//! So every chain is at most gateway → converter → notification. A Trigger with an empty filter
//! (every event) would see replies too: keep filters on `type`. `tests/reply_loop.rs` checks
//! this on the real manifests: it fails when a Trigger has no `type` filter or when a type a
//! subscriber replies with reaches that subscriber again.
//!
//! ## Differences from the cluster broker (on purpose or not needed locally)
//! - Classic durable queues instead of quorum queues (`RabbitmqBrokerConfig.queueType`).
//! - No `knativearrivaltime`/`knativebrokerttl` extensions; `retryAfterMax` (Retry-After) is not
//!   honoured; batched replies are not supported.
//! - Subscriber `ref`s are resolved through a [`SubscriberMap`] given on the command line.
//! - Dead letters are kept in the `.dlq` queue in addition to being sent to the sink.

#![warn(missing_docs)]

pub mod amqp;
pub mod dispatch;
pub mod duration;
pub mod ingress;
pub mod manifest;
pub mod message;
pub mod runner;
pub mod subscribers;

pub use manifest::{Broker, DeliverySpec, Topology, Trigger};
pub use message::StoredEvent;
pub use runner::{Config, Route, Runner, StartError, start};
pub use subscribers::SubscriberMap;
