//! What the converter and notification do with an incoming HTTP CloudEvent, minus the databases: binary-mode
//! `ce-*` headers (or a structured `application/cloudevents+json` body) → `cloudevents::Event` (the axum
//! extractor's `to_event`) → our typed data (`events::from_event`), then the checks and the email built from
//! it. Input: header lines `name: value` up to the first empty line, then the body.
#![no_main]

use cloudevents::AttributesReader;
use libfuzzer_sys::fuzz_target;
use vidmp3_runtime::events::{self, AudioConverted, ConversionFailed, EventData, VideoUploaded};

fn split(data: &[u8]) -> (http::HeaderMap, Vec<u8>) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let mut headers = http::HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&line[..colon]),
            http::HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    (headers, body.to_vec())
}

/// What we send is what we read back.
fn round_trip<T: EventData + PartialEq + std::fmt::Debug>(data: &T) {
    let again: T = events::from_event(&events::to_event(data)).expect("our own event parses");
    assert_eq!(&again, data);
}

fn email(filename: &str, job_id: &str, owner: &str, outcome: &notification::email::Outcome<'_>) {
    let from: lettre::message::Mailbox = "vidmp3 <no-reply@vidmp3.local>".parse().unwrap();
    let to = owner
        .parse()
        .unwrap_or_else(|_| "someone@example.com".parse().unwrap());
    if let Ok(message) = notification::email::build(&from, to, filename, job_id, outcome) {
        drop(message.formatted());
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() > events::MAX_EVENT_BYTES {
        return;
    }
    let (headers, body) = split(data);
    let Ok(event) = cloudevents::binding::http::to_event(&headers, body) else {
        return;
    };
    // converter
    if let Ok(uploaded) = events::from_event::<VideoUploaded>(&event) {
        drop(uploaded.output.validate());
        round_trip(&uploaded);
    }
    // notification
    match event.ty() {
        events::AUDIO_CONVERTED => {
            if let Ok(d) = events::from_event::<AudioConverted>(&event) {
                round_trip(&d);
                let outcome = notification::email::Outcome::Converted {
                    duration_s: d.duration_s,
                    size_bytes: d.size_bytes,
                    download_url: "http://127.0.0.1:8080/jobs/x/mp3",
                    page_url: "http://127.0.0.1:8080/#job=x",
                    partial: d.duration_s < 1.0,
                };
                email(&d.filename, &d.job_id, &d.owner, &outcome);
            }
        }
        events::CONVERSION_FAILED => {
            if let Ok(d) = events::from_event::<ConversionFailed>(&event) {
                round_trip(&d);
                let _ = notification::email::advice(&d.reason);
                let outcome = notification::email::Outcome::Failed {
                    reason: &d.reason,
                    message: &d.message,
                };
                email(&d.filename, &d.job_id, &d.owner, &outcome);
            }
        }
        _ => {}
    }
});
