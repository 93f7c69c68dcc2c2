//! The event as it travels through RabbitMQ, and its conversions.
//!
//! Like the eventing-rabbitmq broker, an event is stored in *binary* form: every CloudEvents
//! context attribute and extension (`specversion`, `id`, `source`, `type`, `subject`, `time`,
//! `datacontenttype`, `dataschema`, extensions) is an AMQP header of the same name holding a
//! long string, and the message body is the event's `data`. That is what lets the Broker's
//! headers exchange route on attributes with `x-match: all`. Messages are persistent
//! (`delivery_mode` 2), with `content_type` = `datacontenttype` and `message_id` = `id`.
//!
//! Towards subscribers the event is sent in the CloudEvents HTTP binary content mode
//! (CloudEvents HTTP protocol binding 1.0, §3.1): `ce-<attribute>` headers, `Content-Type` =
//! `datacontenttype`, body = data.

use cloudevents::{AttributesReader, Data, Event};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use std::collections::BTreeMap;

/// The extension naming the URL of the destination that failed (Knative dead-letter spec).
pub const ERROR_DEST: &str = "knativeerrordest";
/// The extension with the last HTTP status code as a decimal string, `0` when there was no
/// response at all (Knative dead-letter spec).
pub const ERROR_CODE: &str = "knativeerrorcode";
/// The extension with the base64 of the last response body, truncated so the encoded text stays
/// within [`ERROR_DATA_MAX`] bytes (Knative dead-letter spec).
pub const ERROR_DATA: &str = "knativeerrordata";
/// Maximum length of the encoded `knativeerrordata` value, in bytes (Knative uses 1024).
pub const ERROR_DATA_MAX: usize = 1024;

/// Why an AMQP message is not a CloudEvent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// A required context attribute header is missing.
    #[error("message has no {0:?} header: not a CloudEvent published by a broker")]
    MissingAttribute(&'static str),
}

/// A CloudEvent in the broker's storage form: attribute name → string value, plus data bytes.
///
/// Attribute values are the canonical string forms of the CloudEvents type system (the same
/// strings the HTTP binary mode carries), so converting never loses information that the
/// HTTP binding would keep.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredEvent {
    /// Context attributes and extensions (including `datacontenttype`), by name.
    pub attributes: BTreeMap<String, String>,
    /// The event data (empty when the event has none).
    pub data: Vec<u8>,
}

impl StoredEvent {
    /// Converts a parsed [`Event`] (any content mode). JSON data is serialized compactly and,
    /// when no `datacontenttype` is set, gets `application/json` (the structured-mode default).
    pub fn from_event(event: &Event) -> Self {
        let mut attributes: BTreeMap<String, String> = event
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let data = match event.data() {
            None => Vec::new(),
            Some(Data::Binary(b)) => b.clone(),
            Some(Data::String(s)) => s.clone().into_bytes(),
            Some(Data::Json(v)) => {
                attributes
                    .entry("datacontenttype".into())
                    .or_insert_with(|| "application/json".into());
                serde_json::to_vec(v).unwrap_or_default()
            }
        };
        if event.datacontenttype().is_none() && matches!(event.data(), Some(Data::String(_))) {
            attributes.insert("datacontenttype".into(), "text/plain".into());
        }
        Self { attributes, data }
    }

    /// The `id` attribute ("" if absent).
    pub fn id(&self) -> &str {
        self.attr("id").unwrap_or_default()
    }

    /// The `type` attribute ("" if absent).
    pub fn ty(&self) -> &str {
        self.attr("type").unwrap_or_default()
    }

    /// An attribute or extension value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }

    /// Sets (or replaces) an extension attribute.
    pub fn set_extension(&mut self, name: &str, value: impl Into<String>) {
        self.attributes.insert(name.to_string(), value.into());
    }

    /// The AMQP body and properties for publishing (see the [module docs](self)).
    pub fn to_amqp(&self) -> (Vec<u8>, BasicProperties) {
        let mut headers = FieldTable::default();
        for (k, v) in &self.attributes {
            headers.insert(
                ShortString::from(k.as_str()),
                AMQPValue::LongString(LongString::from(v.as_bytes())),
            );
        }
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers);
        if let Some(ct) = self.attr("datacontenttype")
            && let Ok(ct) = ShortString::try_new(ct)
        {
            props = props.with_content_type(ct);
        }
        if let Ok(id) = ShortString::try_new(self.id()) {
            props = props.with_message_id(id);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        (self.data.clone(), props.with_timestamp(now))
    }

    /// Rebuilds an event from a delivered AMQP message. Headers whose names are not CloudEvents
    /// attribute names (`[a-z0-9]+`, e.g. RabbitMQ's `x-death`) are ignored.
    ///
    /// # Errors
    /// [`MessageError::MissingAttribute`] when `specversion`, `id`, `source` or `type` is absent.
    pub fn from_amqp(properties: &BasicProperties, body: &[u8]) -> Result<Self, MessageError> {
        let mut attributes = BTreeMap::new();
        if let Some(headers) = properties.headers() {
            for (k, v) in headers.inner() {
                let name = k.as_str();
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                {
                    continue;
                }
                let value = match v {
                    AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                    AMQPValue::ShortString(s) => s.as_str().to_string(),
                    AMQPValue::Boolean(b) => b.to_string(),
                    AMQPValue::ShortShortInt(i) => i.to_string(),
                    AMQPValue::ShortShortUInt(i) => i.to_string(),
                    AMQPValue::ShortInt(i) => i.to_string(),
                    AMQPValue::ShortUInt(i) => i.to_string(),
                    AMQPValue::LongInt(i) => i.to_string(),
                    AMQPValue::LongUInt(i) => i.to_string(),
                    AMQPValue::LongLongInt(i) => i.to_string(),
                    _ => continue,
                };
                attributes.insert(name.to_string(), value);
            }
        }
        if !attributes.contains_key("datacontenttype")
            && let Some(ct) = properties.content_type()
        {
            attributes.insert("datacontenttype".into(), ct.as_str().to_string());
        }
        for required in ["specversion", "id", "source", "type"] {
            if !attributes.contains_key(required) {
                return Err(MessageError::MissingAttribute(required));
            }
        }
        Ok(Self {
            attributes,
            data: body.to_vec(),
        })
    }

    /// The HTTP headers of the binary content mode: `ce-<name>` for every attribute but
    /// `datacontenttype`, which becomes `Content-Type`.
    ///
    /// Values are sent as they are when they are valid header text (what the CloudEvents Rust and
    /// Go SDKs' receivers expect for ASCII); characters that cannot appear in a header
    /// (non-ASCII, control characters) are percent-encoded as UTF-8, per CloudEvents HTTP
    /// binding 1.0 §3.1.3.2.
    pub fn http_headers(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (k, v) in &self.attributes {
            let name = if k == "datacontenttype" {
                http::header::CONTENT_TYPE
            } else {
                match http::HeaderName::try_from(format!("ce-{k}")) {
                    Ok(n) => n,
                    Err(_) => continue,
                }
            };
            let value = http::HeaderValue::from_str(v).unwrap_or_else(|_| {
                let encoded = percent_encode_header(v);
                http::HeaderValue::from_str(&encoded).unwrap_or(http::HeaderValue::from_static(""))
            });
            map.insert(name, value);
        }
        map
    }

    /// Adds the Knative dead-letter extensions: `knativeerrordest` = `dest`, `knativeerrorcode`
    /// = `status` (0 = no response), and `knativeerrordata` = base64 of `body` (omitted when
    /// `body` is empty; truncated to [`ERROR_DATA_MAX`] encoded bytes).
    pub fn add_error_extensions(&mut self, dest: &str, status: u16, body: &[u8]) {
        use base64::Engine;
        self.set_extension(ERROR_DEST, dest);
        self.set_extension(ERROR_CODE, status.to_string());
        if !body.is_empty() {
            let max_raw = ERROR_DATA_MAX / 4 * 3;
            let raw = &body[..body.len().min(max_raw)];
            self.set_extension(
                ERROR_DATA,
                base64::engine::general_purpose::STANDARD.encode(raw),
            );
        } else {
            self.attributes.remove(ERROR_DATA);
        }
    }
}

fn percent_encode_header(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for ch in v.chars() {
        if (' '..='~').contains(&ch) {
            out.push(ch);
        } else {
            let mut buf = [0u8; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{EventBuilder, EventBuilderV10};

    #[test]
    fn round_trips_through_amqp() {
        let event = EventBuilderV10::new()
            .id("1")
            .source("/gateway")
            .ty("dev.vidmp3.video.uploaded")
            .subject("job-1")
            .extension("traceparent", "00-abc")
            .data("application/json", serde_json::json!({"job_id": "job-1"}))
            .build()
            .unwrap();
        let stored = StoredEvent::from_event(&event);
        assert_eq!(stored.ty(), "dev.vidmp3.video.uploaded");
        let (body, props) = stored.to_amqp();
        let back = StoredEvent::from_amqp(&props, &body).unwrap();
        assert_eq!(back, stored);
        let h = back.http_headers();
        assert_eq!(h["ce-id"], "1");
        assert_eq!(h["ce-traceparent"], "00-abc");
        assert_eq!(h["content-type"], "application/json");
        let reparsed = cloudevents::binding::http::to_event(&h, back.data.clone()).unwrap();
        assert_eq!(reparsed.id(), "1");
        assert_eq!(reparsed.subject(), Some("job-1"));
    }

    #[test]
    fn error_extensions_follow_knative() {
        let mut e = StoredEvent::default();
        e.add_error_extensions("http://x/", 500, &[b'a'; 5000]);
        assert_eq!(e.attr(ERROR_CODE), Some("500"));
        assert!(e.attr(ERROR_DATA).unwrap().len() <= ERROR_DATA_MAX);
        e.add_error_extensions("http://x/", 0, b"");
        assert_eq!(e.attr(ERROR_DATA), None);
        assert_eq!(percent_encode_header("é a"), "%C3%A9 a");
    }
}
