//! Mapping of Knative addressables (`spec.subscriber.ref`, `deadLetterSink.ref`) to local URLs.
//!
//! In a cluster Knative resolves a `ref` to the object's `status.address.url`; locally the runner
//! is told the address of each function. Keys, most specific first, for a ref to
//! `serving.knative.dev/v1` `Service` `converter` in namespace `vidmp3`:
//! `ksvc:vidmp3/converter`, `ksvc:converter`, `vidmp3/converter`, `converter`. Other kinds use
//! their lower-cased kind instead of `ksvc` (e.g. `jobsink:converter-job`).
//! A destination with only a `uri` is used as is; `ref` + `uri` resolves the URI relative to the
//! ref's URL (Knative `Destination` semantics).

use crate::manifest::{Destination, KReference};
use std::collections::BTreeMap;
use std::path::Path;
use url::Url;

/// Why a subscriber map or a destination could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SubscriberError {
    /// A `NAME=URL` entry is malformed.
    #[error("subscriber entry {entry:?}: {message}")]
    Entry {
        /// The entry as given.
        entry: String,
        /// What is wrong with it.
        message: String,
    },
    /// A subscribers file could not be read or parsed.
    #[error("subscribers file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A destination's `ref` has no entry in the map.
    #[error(
        "no URL for {what}: pass --subscriber {name}=http://127.0.0.1:PORT (keys tried: {keys})"
    )]
    Unmapped {
        /// The ref, as `<Kind> <namespace>/<name>`.
        what: String,
        /// The ref's name (the shortest key).
        name: String,
        /// The keys looked up, comma-separated, most specific first.
        keys: String,
    },
    /// A `uri` (alone or relative to a ref) does not make an absolute http(s) URL.
    #[error("destination uri {uri:?}: {message}")]
    BadUri {
        /// The URI.
        uri: String,
        /// What is wrong.
        message: String,
    },
}

/// Local URLs of Knative addressables, keyed as described in the [module docs](self).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriberMap {
    entries: BTreeMap<String, Url>,
}

impl SubscriberMap {
    /// An empty map (only `uri:` destinations resolve).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces `key` → `url`.
    ///
    /// # Errors
    /// [`SubscriberError::Entry`] when `url` is not an absolute http(s) URL.
    pub fn insert(&mut self, key: &str, url: &str) -> Result<(), SubscriberError> {
        let entry = || format!("{key}={url}");
        let key = key.trim();
        if key.is_empty() {
            return Err(SubscriberError::Entry {
                entry: entry(),
                message: "empty name".into(),
            });
        }
        let parsed = Url::parse(url.trim()).map_err(|e| SubscriberError::Entry {
            entry: entry(),
            message: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(SubscriberError::Entry {
                entry: entry(),
                message: "URL scheme must be http or https".into(),
            });
        }
        self.entries.insert(key.to_string(), parsed);
        Ok(())
    }

    /// Adds an entry written `NAME=URL` (the `--subscriber` flag).
    ///
    /// # Errors
    /// [`SubscriberError::Entry`] without `=` or with a bad URL.
    pub fn insert_pair(&mut self, pair: &str) -> Result<(), SubscriberError> {
        let (k, v) = pair.split_once('=').ok_or_else(|| SubscriberError::Entry {
            entry: pair.to_string(),
            message: "expected NAME=URL, e.g. converter=http://127.0.0.1:8083".into(),
        })?;
        self.insert(k, v)
    }

    /// Adds every entry of a YAML file that is a flat mapping `NAME: URL`, optionally nested
    /// under a top-level `subscribers:` key.
    ///
    /// # Errors
    /// [`SubscriberError::File`] when unreadable or not such a mapping; [`SubscriberError::Entry`]
    /// for a bad URL.
    pub fn load_file(&mut self, path: &Path) -> Result<(), SubscriberError> {
        let file_err = |message: String| SubscriberError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        let mut map: BTreeMap<String, serde_yaml::Value> =
            serde_yaml::from_str(&text).map_err(|e| file_err(e.to_string()))?;
        if let Some(inner) = map.remove("subscribers") {
            map = serde_yaml::from_value(inner).map_err(|e| file_err(e.to_string()))?;
        }
        for (k, v) in map {
            let url = v
                .as_str()
                .ok_or_else(|| file_err(format!("value of {k:?} must be a URL string")))?;
            self.insert(&k, url)?;
        }
        Ok(())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keys looked up for `reference` seen from `namespace`, most specific first.
    pub fn keys_for(reference: &KReference, namespace: &str) -> Vec<String> {
        let ns = reference.namespace.as_deref().unwrap_or(namespace);
        let short = reference.short_kind();
        let name = &reference.name;
        vec![
            format!("{short}:{ns}/{name}"),
            format!("{short}:{name}"),
            format!("{ns}/{name}"),
            name.clone(),
        ]
    }

    /// Resolves a destination of an object in `namespace` to a URL.
    ///
    /// # Errors
    /// [`SubscriberError::Unmapped`] when the ref has no entry; [`SubscriberError::BadUri`] when
    /// the uri is neither absolute http(s) nor relative to a ref.
    pub fn resolve(&self, dest: &Destination, namespace: &str) -> Result<Url, SubscriberError> {
        let bad = |uri: &str, message: String| SubscriberError::BadUri {
            uri: uri.to_string(),
            message,
        };
        match (&dest.reference, &dest.uri) {
            (Some(r), uri) => {
                let keys = Self::keys_for(r, namespace);
                let base = keys
                    .iter()
                    .find_map(|k| self.entries.get(k))
                    .ok_or_else(|| SubscriberError::Unmapped {
                        what: format!(
                            "{} {}/{}",
                            r.kind,
                            r.namespace.as_deref().unwrap_or(namespace),
                            r.name
                        ),
                        name: r.name.clone(),
                        keys: keys.join(", "),
                    })?;
                match uri {
                    None => Ok(base.clone()),
                    Some(u) => base.join(u).map_err(|e| bad(u, e.to_string())),
                }
            }
            (None, Some(u)) => {
                let url = Url::parse(u).map_err(|e| bad(u, e.to_string()))?;
                if matches!(url.scheme(), "http" | "https") {
                    Ok(url)
                } else {
                    Err(bad(u, "scheme must be http or https".into()))
                }
            }
            (None, None) => Err(bad("", "a destination needs ref or uri".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ksvc(name: &str) -> Destination {
        Destination {
            reference: Some(KReference {
                api_version: Some("serving.knative.dev/v1".into()),
                kind: "Service".into(),
                name: name.into(),
                namespace: None,
            }),
            uri: None,
        }
    }

    #[test]
    fn resolves_most_specific_key() {
        let mut m = SubscriberMap::new();
        m.insert_pair("converter=http://127.0.0.1:1/").unwrap();
        m.insert_pair("ksvc:vidmp3/converter=http://127.0.0.1:2/")
            .unwrap();
        assert_eq!(
            m.resolve(&ksvc("converter"), "vidmp3").unwrap().as_str(),
            "http://127.0.0.1:2/"
        );
        assert_eq!(
            m.resolve(&ksvc("converter"), "other").unwrap().as_str(),
            "http://127.0.0.1:1/"
        );
        assert!(m.resolve(&ksvc("notification"), "vidmp3").is_err());
        let mut d = ksvc("converter");
        d.uri = Some("/hook".into());
        assert_eq!(
            m.resolve(&d, "x").unwrap().as_str(),
            "http://127.0.0.1:1/hook"
        );
        let uri_only = Destination {
            reference: None,
            uri: Some("http://example.test/x".into()),
        };
        assert_eq!(
            m.resolve(&uri_only, "x").unwrap().as_str(),
            "http://example.test/x"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("subs.yaml");
        std::fs::write(
            &file,
            "subscribers:\n  ksvc:notification: http://127.0.0.1:3/\n",
        )
        .unwrap();
        m.load_file(&file).unwrap();
        let mut n = ksvc("notification");
        n.reference.as_mut().unwrap().namespace = Some("vidmp3".into());
        assert_eq!(m.resolve(&n, "x").unwrap().as_str(), "http://127.0.0.1:3/");
        std::fs::write(&file, "converter: 5\n").unwrap();
        assert!(m.load_file(&file).is_err());
        assert!(m.insert_pair("nourl").is_err());
        assert!(m.insert_pair("a=ftp://x").is_err());
    }
}
