//! The event contract: typed data of our three CloudEvents (CloudEvents 1.0, JSON data), matching the JSON
//! Schemas in `eventing/schemas/`, and sending an event to a sink (`K_SINK`) in binary mode.
//!
//! Events carry ids, never media bytes. Delivery is at least once; every event id is derived from the job id
//! and the state it announces (`<job_id>.uploaded`), so a re-sent event is recognisably the same event.

use cloudevents::{AttributesReader, Data, Event, EventBuilder, EventBuilderV10};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// `type` of the event the gateway emits when a video is stored.
pub const VIDEO_UPLOADED: &str = "dev.vidmp3.video.uploaded";
/// `type` of the converter's reply when an MP3 is stored.
pub const AUDIO_CONVERTED: &str = "dev.vidmp3.audio.converted";
/// `type` of the converter's reply when a conversion failed for good.
pub const CONVERSION_FAILED: &str = "dev.vidmp3.conversion.failed";

/// Largest CloudEvent body a function accepts, in bytes (events carry ids, never media). The cloudevents
/// extractor ignores axum's `DefaultBodyLimit`, so handlers cap bodies with a `RequestBodyLimitLayer`.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// How the MP3 is encoded. At most one field is set; none means VBR quality 2, and an MP3 source is then
/// copied unchanged (with either field set, even `vbr_quality: 2`, it is re-encoded).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputOptions {
    /// Constant bitrate in kbit/s, 64..=320.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<u32>,
    /// LAME VBR quality 0 (best) ..= 9.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vbr_quality: Option<u8>,
}

impl OutputOptions {
    /// Whether neither option is set (the converter's default applies).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the ranges.
    ///
    /// # Errors
    /// A sentence saying what is out of range.
    pub fn validate(&self) -> Result<(), String> {
        match (self.bitrate_kbps, self.vbr_quality) {
            (Some(_), Some(_)) => Err("give either bitrate_kbps or vbr_quality, not both".into()),
            (Some(b), None) if !(64..=320).contains(&b) => {
                Err(format!("bitrate_kbps must be 64..=320, got {b}"))
            }
            (None, Some(q)) if q > 9 => Err(format!("vbr_quality must be 0..=9, got {q}")),
            _ => Ok(()),
        }
    }
}

/// Data of [`VIDEO_UPLOADED`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VideoUploaded {
    /// The job id (also the event's subject).
    pub job_id: String,
    /// GridFS id (hex ObjectId) of the video in bucket `videos`.
    pub video_id: String,
    /// The owner's email.
    pub owner: String,
    /// The uploaded file's name.
    pub filename: String,
    /// The Content-Type the client declared (a hint only).
    pub content_type: String,
    /// Size of the stored video in bytes.
    pub size_bytes: u64,
    /// Requested encoding; omitted when none was asked for (VBR quality 2; an MP3 source copied).
    #[serde(default, skip_serializing_if = "OutputOptions::is_default")]
    pub output: OutputOptions,
}

/// Data of [`AUDIO_CONVERTED`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AudioConverted {
    /// The job id.
    pub job_id: String,
    /// GridFS id (hex ObjectId) of the MP3 in bucket `mp3s`.
    pub mp3_id: String,
    /// The owner's email.
    pub owner: String,
    /// The uploaded file's name.
    pub filename: String,
    /// Decoded length of the MP3 in seconds.
    pub duration_s: f64,
    /// Size of the MP3 in bytes.
    pub size_bytes: u64,
    /// Average bitrate in kbit/s.
    pub bitrate_kbps: u32,
}

/// Data of [`CONVERSION_FAILED`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ConversionFailed {
    /// The job id.
    pub job_id: String,
    /// The owner's email.
    pub owner: String,
    /// The uploaded file's name.
    pub filename: String,
    /// Stable reason code: `empty_file`, `invalid_data`, `no_audio_stream`, `unsupported_codec`,
    /// `too_long`, `internal`.
    pub reason: String,
    /// What went wrong, in plain words.
    pub message: String,
}

/// Data of one of our event types.
pub trait EventData: Serialize + DeserializeOwned {
    /// The CloudEvents `type`.
    const TYPE: &'static str;
    /// The CloudEvents `source`.
    const SOURCE: &'static str;
    /// The job the event is about (the CloudEvents `subject`).
    fn job_id(&self) -> &str;
}

impl EventData for VideoUploaded {
    const TYPE: &'static str = VIDEO_UPLOADED;
    const SOURCE: &'static str = "/gateway";
    fn job_id(&self) -> &str {
        &self.job_id
    }
}

impl EventData for AudioConverted {
    const TYPE: &'static str = AUDIO_CONVERTED;
    const SOURCE: &'static str = "/converter";
    fn job_id(&self) -> &str {
        &self.job_id
    }
}

impl EventData for ConversionFailed {
    const TYPE: &'static str = CONVERSION_FAILED;
    const SOURCE: &'static str = "/converter";
    fn job_id(&self) -> &str {
        &self.job_id
    }
}

/// Why an incoming event was refused (a final 4xx: retrying cannot help).
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The `type` is not the one this endpoint handles.
    #[error("unexpected event type {0:?}")]
    WrongType(String),
    /// No data.
    #[error("the event has no data")]
    NoData,
    /// Data that does not match the schema.
    #[error("the event data does not match the schema: {0}")]
    BadData(String),
}

/// Builds the CloudEvent for `data`: id `<job_id>.<last type segment>`, subject the job id, JSON data.
pub fn to_event<T: EventData>(data: &T) -> Event {
    let suffix = T::TYPE.rsplit('.').next().unwrap_or("event");
    EventBuilderV10::new()
        .id(format!("{}.{suffix}", data.job_id()))
        .ty(T::TYPE)
        .source(T::SOURCE)
        .subject(data.job_id())
        .time(chrono::Utc::now())
        .data(
            "application/json",
            serde_json::to_value(data).unwrap_or_default(),
        )
        .build()
        .expect("id, type and source are always set")
}

/// Reads typed data from `event`, checking its type.
///
/// # Errors
/// [`EventError`] for another type, no data, or data that does not deserialize into `T`.
pub fn from_event<T: EventData>(event: &Event) -> Result<T, EventError> {
    if event.ty() != T::TYPE {
        return Err(EventError::WrongType(event.ty().to_owned()));
    }
    data_as(event)
}

/// Reads the event's data as `T`, whatever its encoding (binary mode delivers JSON as bytes).
///
/// # Errors
/// [`EventError::NoData`] or [`EventError::BadData`].
pub fn data_as<T: DeserializeOwned>(event: &Event) -> Result<T, EventError> {
    let bad = |e: serde_json::Error| EventError::BadData(e.to_string());
    match event.data().ok_or(EventError::NoData)? {
        Data::Json(v) => serde_json::from_value(v.clone()).map_err(bad),
        Data::Binary(b) => serde_json::from_slice(b).map_err(bad),
        Data::String(s) => serde_json::from_str(s).map_err(bad),
    }
}

/// Why sending an event to a sink failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No answer (connection refused, timeout).
    #[error("the sink did not answer: {0}")]
    Unreachable(String),
    /// An answer that is not 2xx.
    #[error("the sink answered {0}")]
    Refused(u16),
}

/// POSTs `event` to `sink` in binary content mode (CloudEvents HTTP binding §3.1) and expects a 2xx.
///
/// # Errors
/// [`SendError`].
pub async fn send(client: &reqwest::Client, sink: &str, event: Event) -> Result<(), SendError> {
    use cloudevents::binding::reqwest::RequestBuilderExt;
    let response = client
        .post(sink)
        .event(event)
        .map_err(|e| SendError::Unreachable(e.to_string()))?
        .send()
        .await
        .map_err(|e| SendError::Unreachable(e.to_string()))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(SendError::Refused(response.status().as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_ids_are_stable_per_job_and_state() {
        let data = ConversionFailed {
            job_id: "j1".into(),
            owner: "a@b.c".into(),
            filename: "x.mp4".into(),
            reason: "no_audio_stream".into(),
            message: "the file has no audio track".into(),
        };
        let event = to_event(&data);
        assert_eq!(event.id(), "j1.failed");
        assert_eq!(event.subject(), Some("j1"));
        assert_eq!(event.source().as_str(), "/converter");
        assert_eq!(from_event::<ConversionFailed>(&event).unwrap(), data);
        assert!(matches!(
            from_event::<AudioConverted>(&event),
            Err(EventError::WrongType(_))
        ));
    }

    #[test]
    fn output_options_are_range_checked() {
        assert!(
            OutputOptions {
                bitrate_kbps: Some(192),
                vbr_quality: None
            }
            .validate()
            .is_ok()
        );
        assert!(
            OutputOptions {
                bitrate_kbps: Some(32),
                vbr_quality: None
            }
            .validate()
            .is_err()
        );
        assert!(
            OutputOptions {
                bitrate_kbps: None,
                vbr_quality: Some(10)
            }
            .validate()
            .is_err()
        );
        assert!(
            OutputOptions {
                bitrate_kbps: Some(128),
                vbr_quality: Some(2)
            }
            .validate()
            .is_err()
        );
    }
}
