//! Broker and Trigger manifests (Knative Eventing `eventing.knative.dev/v1`), read from YAML.
//!
//! Only the fields the RabbitMQ broker acts on are kept: a Broker's name, namespace and
//! `spec.delivery`; a Trigger's `spec.broker`, `spec.filter.attributes`, `spec.subscriber`,
//! `spec.delivery` and the `rabbitmq.eventing.knative.dev/parallelism` annotation. Other kinds in
//! the same files (e.g. a RabbitmqBrokerConfig) are skipped. `spec.filters` (the new filter
//! dialects) is ignored with a warning, exactly as eventing-rabbitmq ignores it.

use crate::duration::{DurationError, parse_iso8601};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Annotation carrying a Trigger's dispatcher concurrency (eventing-rabbitmq), a quoted integer
/// 1..=1000; default 1.
pub const PARALLELISM_ANNOTATION: &str = "rabbitmq.eventing.knative.dev/parallelism";

/// Annotation naming a Broker's class; this runner serves `RabbitMQBroker` brokers only.
pub const BROKER_CLASS_ANNOTATION: &str = "eventing.knative.dev/broker.class";

/// Why the manifests could not be loaded. Every variant names the file (and document) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file or directory could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The path being read.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A YAML document is not valid YAML or does not have the expected shape.
    #[error("{path} document #{doc}: {source}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// 1-based index of the document in the file.
        doc: usize,
        /// The parse error.
        source: serde_yaml::Error,
    },
    /// A value is present but invalid (bad duration, parallelism out of range, ...).
    #[error("{path}: {kind} {namespace}/{name}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// `Broker` or `Trigger`.
        kind: &'static str,
        /// The object's namespace.
        namespace: String,
        /// The object's name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The set of objects is inconsistent (unknown broker, duplicate names, nothing found).
    #[error("{0}")]
    Inconsistent(String),
}

/// Knative backoff policy (`spec.delivery.backoffPolicy`, Knative eventing delivery spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackoffPolicy {
    /// Wait `backoffDelay * n` before retry `n` (n = 1, 2, ...).
    Linear,
    /// Wait `backoffDelay * 2^n` before retry `n` (n = 1, 2, ...). Knative's default.
    #[default]
    Exponential,
}

/// A Knative `Destination` (duck type `duckv1.Destination`): an object reference, a URI, or
/// both (then the URI is resolved relative to the reference's address).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Destination {
    /// `ref`: the addressable object (a Knative Service for our subscribers).
    #[serde(rename = "ref")]
    pub reference: Option<KReference>,
    /// `uri`: an absolute URL, or a path relative to `ref`'s address.
    pub uri: Option<String>,
}

/// A Knative `KReference` (`apiVersion`, `kind`, `name`, optional `namespace`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KReference {
    /// e.g. `serving.knative.dev/v1`.
    pub api_version: Option<String>,
    /// e.g. `Service`.
    pub kind: String,
    /// The object's name, e.g. `converter`.
    pub name: String,
    /// The object's namespace; defaults to the referring object's namespace.
    pub namespace: Option<String>,
}

impl KReference {
    /// Short name of the kind used in subscriber-map keys: `ksvc` for a Knative Service
    /// (`serving.knative.dev/*` `Service`), otherwise the lower-cased kind.
    pub fn short_kind(&self) -> String {
        let serving = self
            .api_version
            .as_deref()
            .is_some_and(|v| v.starts_with("serving.knative.dev/"));
        if serving && self.kind == "Service" {
            "ksvc".to_string()
        } else {
            self.kind.to_ascii_lowercase()
        }
    }
}

/// A parsed `spec.delivery` (Knative eventing delivery spec, `duckv1.DeliverySpec`).
#[derive(Debug, Clone, PartialEq)]
pub struct DeliverySpec {
    /// `retry`: how many retries after the first attempt (so at most `retry + 1` attempts).
    pub retry: u32,
    /// `backoffPolicy` (default exponential).
    pub backoff_policy: BackoffPolicy,
    /// `backoffDelay` (ISO-8601); zero when absent.
    pub backoff_delay: Duration,
    /// `timeout` (ISO-8601): the limit of each attempt; none = no limit of our own.
    pub timeout: Option<Duration>,
    /// `deadLetterSink`: where events go after the last failed attempt.
    pub dead_letter_sink: Option<Destination>,
}

impl DeliverySpec {
    /// The wait before retry number `n` (1-based): `delay * n` (linear) or `delay * 2^n`
    /// (exponential), as in Knative's `kncloudevents.RetryConfig`. Saturates at one day.
    pub fn backoff(&self, n: u32) -> Duration {
        let cap = Duration::from_secs(86_400);
        let factor = match self.backoff_policy {
            BackoffPolicy::Linear => f64::from(n),
            BackoffPolicy::Exponential => 2f64.powi(n.min(40) as i32),
        };
        let secs = self.backoff_delay.as_secs_f64() * factor;
        if secs >= cap.as_secs_f64() {
            cap
        } else {
            Duration::from_secs_f64(secs)
        }
    }
}

/// A Broker (`eventing.knative.dev/v1` `Broker`).
#[derive(Debug, Clone, PartialEq)]
pub struct Broker {
    /// `metadata.namespace` (default `default`).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.delivery`: the fallback for Triggers that have none.
    pub delivery: Option<DeliverySpec>,
    /// The file it came from.
    pub source: PathBuf,
}

/// A Trigger (`eventing.knative.dev/v1` `Trigger`), with its effective delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// `metadata.namespace` (default `default`).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.broker`: the Broker's name, in the Trigger's namespace.
    pub broker: String,
    /// `spec.filter.attributes`: exact-match CloudEvents attributes; empty = every event.
    pub filter: BTreeMap<String, String>,
    /// `spec.subscriber`.
    pub subscriber: Destination,
    /// The Trigger's `spec.delivery`, or else its Broker's; `None` = no retries and no
    /// dead-letter sink.
    pub delivery: Option<DeliverySpec>,
    /// `rabbitmq.eventing.knative.dev/parallelism` (1..=1000, default 1).
    pub parallelism: u16,
    /// The file it came from.
    pub source: PathBuf,
}

/// Every Broker and Trigger found in a manifests directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Topology {
    /// The Brokers, in file order.
    pub brokers: Vec<Broker>,
    /// The Triggers, in file order; each refers to one of `brokers`.
    pub triggers: Vec<Trigger>,
}

impl Topology {
    /// Reads every `*.yaml` / `*.yml` file directly in `dir` (not recursive: `schemas/` and other
    /// sub-directories are left alone), in name order.
    ///
    /// # Errors
    /// [`ManifestError`] for unreadable files, malformed documents, invalid values, a Trigger
    /// naming an unknown Broker, duplicate names, or no Broker at all.
    pub fn load_dir(dir: &Path) -> Result<Self, ManifestError> {
        let io = |source| ManifestError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        let mut sources = Vec::new();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Io {
                path: path.clone(),
                source,
            })?;
            sources.push((path, text));
        }
        Self::from_sources(&sources)
    }

    /// Parses manifests given as `(path, YAML text)` pairs (multi-document YAML allowed); the
    /// path is only used in error messages and [`Broker::source`] / [`Trigger::source`].
    ///
    /// # Errors
    /// As [`Topology::load_dir`].
    pub fn from_sources(sources: &[(PathBuf, String)]) -> Result<Self, ManifestError> {
        let mut brokers = Vec::new();
        let mut raw_triggers = Vec::new();
        for (path, text) in sources {
            for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
                let yaml_err = |source| ManifestError::Yaml {
                    path: path.clone(),
                    doc: i + 1,
                    source,
                };
                let value = serde_yaml::Value::deserialize(doc).map_err(yaml_err)?;
                if value.is_null() {
                    continue;
                }
                let head: Head = serde_yaml::from_value(value.clone()).map_err(yaml_err)?;
                let group = head.api_version.split('/').next().unwrap_or_default();
                match (group, head.kind.as_str()) {
                    ("eventing.knative.dev", "Broker") => {
                        let raw: RawBroker = serde_yaml::from_value(value).map_err(yaml_err)?;
                        brokers.push(raw.into_broker(path)?);
                    }
                    ("eventing.knative.dev", "Trigger") => {
                        let raw: RawTrigger = serde_yaml::from_value(value).map_err(yaml_err)?;
                        raw_triggers.push((path.clone(), raw));
                    }
                    _ => tracing::debug!(
                        path = %path.display(),
                        kind = %head.kind,
                        "skipping a manifest that is neither Broker nor Trigger"
                    ),
                }
            }
        }
        if brokers.is_empty() {
            return Err(ManifestError::Inconsistent(
                "no Broker (eventing.knative.dev/v1) found in the manifests".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for b in &brokers {
            if !seen.insert((b.namespace.clone(), b.name.clone())) {
                return Err(ManifestError::Inconsistent(format!(
                    "Broker {}/{} is declared twice",
                    b.namespace, b.name
                )));
            }
        }
        let mut triggers = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (path, raw) in raw_triggers {
            let trigger = raw.into_trigger(&path, &brokers)?;
            if !seen.insert((trigger.namespace.clone(), trigger.name.clone())) {
                return Err(ManifestError::Inconsistent(format!(
                    "Trigger {}/{} is declared twice",
                    trigger.namespace, trigger.name
                )));
            }
            triggers.push(trigger);
        }
        Ok(Self { brokers, triggers })
    }

    /// The Broker `namespace/name`, if declared.
    pub fn broker(&self, namespace: &str, name: &str) -> Option<&Broker> {
        self.brokers
            .iter()
            .find(|b| b.namespace == namespace && b.name == name)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

#[derive(Deserialize, Default)]
struct Metadata {
    name: String,
    namespace: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

impl Metadata {
    fn namespace(&self) -> String {
        self.namespace
            .clone()
            .unwrap_or_else(|| "default".to_string())
    }
}

#[derive(Deserialize)]
struct RawBroker {
    metadata: Metadata,
    #[serde(default)]
    spec: RawBrokerSpec,
}

#[derive(Deserialize, Default)]
struct RawBrokerSpec {
    delivery: Option<RawDelivery>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDelivery {
    retry: Option<i64>,
    backoff_policy: Option<String>,
    backoff_delay: Option<String>,
    timeout: Option<String>,
    dead_letter_sink: Option<Destination>,
}

#[derive(Deserialize)]
struct RawTrigger {
    metadata: Metadata,
    spec: RawTriggerSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTriggerSpec {
    broker: Option<String>,
    filter: Option<RawFilter>,
    filters: Option<serde_yaml::Value>,
    subscriber: Destination,
    delivery: Option<RawDelivery>,
}

#[derive(Deserialize)]
struct RawFilter {
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

fn invalid(path: &Path, kind: &'static str, m: &Metadata, message: String) -> ManifestError {
    ManifestError::Invalid {
        path: path.to_path_buf(),
        kind,
        namespace: m.namespace(),
        name: m.name.clone(),
        message,
    }
}

impl RawDelivery {
    fn parse(self) -> Result<DeliverySpec, String> {
        let dur = |s: Option<String>, field: &str| -> Result<Option<Duration>, String> {
            s.map(|s| parse_iso8601(&s))
                .transpose()
                .map_err(|e: DurationError| format!("spec.delivery.{field}: {e}"))
        };
        let retry = match self.retry {
            None => 0,
            Some(r) if r >= 0 => u32::try_from(r).unwrap_or(u32::MAX),
            Some(r) => return Err(format!("spec.delivery.retry must be >= 0, got {r}")),
        };
        let backoff_policy = match self.backoff_policy.as_deref() {
            None | Some("exponential") => BackoffPolicy::Exponential,
            Some("linear") => BackoffPolicy::Linear,
            Some(other) => {
                return Err(format!(
                    "spec.delivery.backoffPolicy must be linear or exponential, got {other:?}"
                ));
            }
        };
        Ok(DeliverySpec {
            retry,
            backoff_policy,
            backoff_delay: dur(self.backoff_delay, "backoffDelay")?.unwrap_or_default(),
            timeout: dur(self.timeout, "timeout")?,
            dead_letter_sink: self.dead_letter_sink,
        })
    }
}

impl RawBroker {
    fn into_broker(self, path: &Path) -> Result<Broker, ManifestError> {
        let m = &self.metadata;
        if let Some(class) = m.annotations.get(BROKER_CLASS_ANNOTATION)
            && class != "RabbitMQBroker"
        {
            tracing::warn!(
                broker = %m.name,
                %class,
                "broker class is not RabbitMQBroker; serving it with RabbitMQ semantics anyway"
            );
        }
        let delivery = self
            .spec
            .delivery
            .map(RawDelivery::parse)
            .transpose()
            .map_err(|e| invalid(path, "Broker", m, e))?;
        Ok(Broker {
            namespace: m.namespace(),
            name: m.name.clone(),
            delivery,
            source: path.to_path_buf(),
        })
    }
}

impl RawTrigger {
    fn into_trigger(self, path: &Path, brokers: &[Broker]) -> Result<Trigger, ManifestError> {
        let m = &self.metadata;
        let namespace = m.namespace();
        let broker_name = self
            .spec
            .broker
            .clone()
            .ok_or_else(|| invalid(path, "Trigger", m, "spec.broker is required".into()))?;
        let broker = brokers
            .iter()
            .find(|b| b.namespace == namespace && b.name == broker_name)
            .ok_or_else(|| {
                invalid(
                    path,
                    "Trigger",
                    m,
                    format!("spec.broker {broker_name:?} is not a Broker in namespace {namespace}"),
                )
            })?;
        if self.spec.filters.is_some() {
            tracing::warn!(
                trigger = %m.name,
                "spec.filters is ignored by the RabbitMQ broker; only spec.filter.attributes binds"
            );
        }
        let filter = self.spec.filter.map(|f| f.attributes).unwrap_or_default();
        for key in filter.keys() {
            let ok = key.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            if !ok {
                return Err(invalid(
                    path,
                    "Trigger",
                    m,
                    format!("filter attribute {key:?} is not a CloudEvents attribute name"),
                ));
            }
        }
        let parallelism = match m.annotations.get(PARALLELISM_ANNOTATION) {
            None => 1,
            Some(v) => match v.trim().parse::<u16>() {
                Ok(n @ 1..=1000) => n,
                _ => {
                    return Err(invalid(
                        path,
                        "Trigger",
                        m,
                        format!("{PARALLELISM_ANNOTATION} must be an integer 1..1000, got {v:?}"),
                    ));
                }
            },
        };
        let delivery = match self.spec.delivery {
            Some(d) => Some(d.parse().map_err(|e| invalid(path, "Trigger", m, e))?),
            None => broker.delivery.clone(),
        };
        if self.spec.subscriber.reference.is_none() && self.spec.subscriber.uri.is_none() {
            return Err(invalid(
                path,
                "Trigger",
                m,
                "spec.subscriber needs ref or uri".into(),
            ));
        }
        Ok(Trigger {
            namespace,
            name: m.name.clone(),
            broker: broker_name,
            filter,
            subscriber: self.spec.subscriber,
            delivery,
            parallelism,
            source: path.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_project_manifests() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let t = Topology::load_dir(dir).unwrap();
        assert_eq!(t.brokers.len(), 1);
        assert_eq!(t.brokers[0].namespace, "vidmp3");
        assert_eq!(t.triggers.len(), 3);
        let conv = &t.triggers[0];
        assert_eq!(conv.name, "converter-on-video-uploaded");
        assert_eq!(conv.filter["type"], "dev.vidmp3.video.uploaded");
        let d = conv.delivery.as_ref().unwrap();
        assert_eq!(d.retry, 3);
        assert_eq!(d.timeout, Some(Duration::from_secs(600)));
        assert_eq!(d.backoff(1), Duration::from_secs(20));
        assert_eq!(d.backoff(3), Duration::from_secs(80));
        assert_eq!(t.triggers[1].parallelism, 10);
    }

    #[test]
    fn falls_back_to_broker_delivery_and_rejects_unknown_broker() {
        let broker = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: b, namespace: n}\nspec: {delivery: {retry: 2, backoffPolicy: linear, backoffDelay: PT0.5S}}\n";
        let trig = "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t, namespace: n}\nspec: {broker: b, subscriber: {uri: 'http://x/'}}\n";
        let t =
            Topology::from_sources(&[("a.yaml".into(), format!("{broker}---\n{trig}"))]).unwrap();
        let d = t.triggers[0].delivery.as_ref().unwrap();
        assert_eq!(d.retry, 2);
        assert_eq!(d.backoff(2), Duration::from_secs(1));
        assert!(t.triggers[0].filter.is_empty());
        assert_eq!(t.triggers[0].parallelism, 1);
        let bad = trig.replace("broker: b", "broker: zz");
        assert!(
            Topology::from_sources(&[("a.yaml".into(), format!("{broker}---\n{bad}"))]).is_err()
        );
    }
}
