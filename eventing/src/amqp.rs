//! RabbitMQ side: resource names, topology declaration, the publisher, connection sessions.
//!
//! Topology (what eventing-rabbitmq creates per Broker/Trigger, with local names):
//! - Broker `ns/name` → durable `headers` exchange `b.<ns>.<name>`;
//! - Trigger `ns/name` → durable queue `t.<ns>.<name>`, bound to its Broker's exchange with
//!   arguments `x-match: all` + `spec.filter.attributes` (no attributes = every event), and a
//!   durable dead-letter queue `t.<ns>.<name>.dlq` keeping every dead-lettered event.
//!
//! Bindings are never removed: like on a cluster (where a RabbitMQ Trigger's filter is
//! immutable), changing a filter needs the old queue deleted (`rabbitmqctl delete_queue`).

use crate::manifest::{Topology, Trigger};
use crate::message::StoredEvent;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use std::time::Duration;

/// The exchange of Broker `namespace/name`: `b.<namespace>.<name>`.
pub fn exchange_name(namespace: &str, broker: &str) -> String {
    format!("b.{namespace}.{broker}")
}

/// The queue of Trigger `namespace/name`: `t.<namespace>.<name>`.
pub fn queue_name(namespace: &str, trigger: &str) -> String {
    format!("t.{namespace}.{trigger}")
}

/// The dead-letter queue of Trigger `namespace/name`: `t.<namespace>.<name>.dlq`.
pub fn dlq_name(namespace: &str, trigger: &str) -> String {
    format!("{}.dlq", queue_name(namespace, trigger))
}

/// The binding arguments of a Trigger's queue: `x-match: all` plus each filter attribute as a
/// long string (RabbitMQ headers exchange; values compare exactly).
pub fn binding_arguments(trigger: &Trigger) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-match"),
        AMQPValue::LongString(LongString::from("all")),
    );
    for (k, v) in &trigger.filter {
        args.insert(
            ShortString::from(k.as_str()),
            AMQPValue::LongString(LongString::from(v.as_bytes())),
        );
    }
    args
}

/// Why publishing an event failed. Any of these means the event may not be stored: the caller
/// must not acknowledge anything on its behalf.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No connection to RabbitMQ at the moment.
    #[error("not connected to RabbitMQ")]
    Disconnected,
    /// The AMQP operation failed (channel or connection closed, ...).
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
    /// RabbitMQ answered the publish with a negative confirm.
    #[error("RabbitMQ refused the message (publisher confirm nack)")]
    Nacked,
    /// No publisher confirm arrived in time.
    #[error("no publisher confirm within {0:?}")]
    Timeout(Duration),
}

/// How long a publish waits for its confirm before giving up.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// One AMQP connection with the topology declared and a confirm-mode publisher channel.
pub struct Session {
    /// The connection.
    pub connection: Connection,
    /// A channel in confirm mode (`confirm.select`), shared by every publisher.
    pub publisher: Channel,
}

impl Session {
    /// Connects to `amqp_url` (AMQP 0-9-1 URI, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`),
    /// declares the whole topology (idempotent) and opens the publisher channel.
    ///
    /// # Errors
    /// Connection refused, authentication, declaration conflicts (e.g. a queue that exists with
    /// other arguments), or no answer within `timeout`.
    pub async fn open(
        amqp_url: &str,
        topology: &Topology,
        timeout: Duration,
    ) -> Result<Self, lapin::Error> {
        let props = ConnectionProperties::default()
            .with_connection_name(LongString::from("vidmp3-eventing-runner"));
        let connection =
            match tokio::time::timeout(timeout, Connection::connect(amqp_url, props)).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(lapin::Error::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("AMQP connect took more than {timeout:?}"),
                    )));
                }
            };
        let setup = async {
            let ch = connection.create_channel().await?;
            declare_topology(&ch, topology).await?;
            let _ = ch.close(200, "declared".into()).await;
            let publisher = connection.create_channel().await?;
            publisher
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, lapin::Error>(publisher)
        };
        match setup.await {
            Ok(publisher) => Ok(Self {
                connection,
                publisher,
            }),
            Err(e) => {
                let _ = connection.close(200, "setup failed".into()).await;
                Err(e)
            }
        }
    }

    /// Whether the connection and the publisher channel are both still open.
    pub fn is_healthy(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }

    /// Publishes `event` persistently to `exchange` (routing key `routing_key`; the headers
    /// exchange ignores it) and waits for RabbitMQ's publisher confirm.
    ///
    /// # Errors
    /// [`PublishError`]; on any error the event may or may not have been stored.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        event: &StoredEvent,
    ) -> Result<(), PublishError> {
        let (body, props) = event.to_amqp();
        let confirm = async {
            let pending = self
                .publisher
                .basic_publish(
                    ShortString::from(exchange),
                    ShortString::from(routing_key),
                    BasicPublishOptions::default(),
                    &body,
                    props,
                )
                .await?;
            pending.await
        };
        match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
            Err(_) => Err(PublishError::Timeout(CONFIRM_TIMEOUT)),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(c)) if c.is_ack() => Ok(()),
            Ok(Ok(_)) => Err(PublishError::Nacked),
        }
    }
}

/// Declares every Broker exchange, Trigger queue, binding and dead-letter queue (idempotent).
///
/// # Errors
/// The first failing AMQP operation (the channel is closed by RabbitMQ on a conflict).
pub async fn declare_topology(ch: &Channel, topology: &Topology) -> Result<(), lapin::Error> {
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for b in &topology.brokers {
        ch.exchange_declare(
            ShortString::from(exchange_name(&b.namespace, &b.name)),
            ExchangeKind::Headers,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;
    }
    for t in &topology.triggers {
        let queue = queue_name(&t.namespace, &t.name);
        ch.queue_declare(
            ShortString::from(queue.as_str()),
            durable_queue,
            FieldTable::default(),
        )
        .await?;
        ch.queue_bind(
            ShortString::from(queue.as_str()),
            ShortString::from(exchange_name(&t.namespace, &t.broker)),
            ShortString::from(""),
            QueueBindOptions::default(),
            binding_arguments(t),
        )
        .await?;
        ch.queue_declare(
            ShortString::from(dlq_name(&t.namespace, &t.name)),
            durable_queue,
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// Deletes every exchange and queue of `topology` (including dead-letter queues and their
/// messages). For tests and `--delete-topology`; a missing object is not an error.
///
/// # Errors
/// Connection failures and AMQP errors other than "not found".
pub async fn delete_topology(amqp_url: &str, topology: &Topology) -> Result<(), lapin::Error> {
    let conn = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    for t in &topology.triggers {
        for q in [
            queue_name(&t.namespace, &t.name),
            dlq_name(&t.namespace, &t.name),
        ] {
            // A fresh channel per operation: a 404 closes the channel.
            let ch = conn.create_channel().await?;
            if ch
                .queue_delete(ShortString::from(q), QueueDeleteOptions::default())
                .await
                .is_ok()
            {
                let _ = ch.close(200, "ok".into()).await;
            }
        }
    }
    for b in &topology.brokers {
        let ch = conn.create_channel().await?;
        if ch
            .exchange_delete(
                ShortString::from(exchange_name(&b.namespace, &b.name)),
                ExchangeDeleteOptions::default(),
            )
            .await
            .is_ok()
        {
            let _ = ch.close(200, "ok".into()).await;
        }
    }
    // Closing may complain about channels RabbitMQ already closed (404 on a missing object).
    let _ = conn.close(200, "deleted".into()).await;
    Ok(())
}
