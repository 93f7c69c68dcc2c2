//! The functions' event types match the event contract in `eventing/schemas/` (JSON Schema 2020-12): every
//! event the code can emit validates, and the schemas reject what the types would reject.

use serde_json::{Value, json};
use vidmp3_runtime::events::{
    self, AudioConverted, ConversionFailed, EventData, OutputOptions, VideoUploaded,
};

fn validator(event_type: &str) -> jsonschema::Validator {
    let path = testkit::workspace_root().join(format!("eventing/schemas/{event_type}.json"));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

fn assert_valid<T: EventData>(data: &T) {
    let event = events::to_event(data);
    let value: Value = events::data_as(&event).unwrap();
    let validator = validator(T::TYPE);
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{} data {value} breaks its schema: {errors:?}",
        T::TYPE
    );
}

fn uploaded(output: OutputOptions) -> VideoUploaded {
    VideoUploaded {
        job_id: "01a22940-17b3-76b6-8634-9d74aa315a0c".into(),
        video_id: "65f0c0ffee0123456789abcd".into(),
        owner: "owner@example.com".into(),
        filename: "Café – été.mp4".into(),
        content_type: "video/mp4".into(),
        size_bytes: 1_234_567,
        output,
    }
}

#[test]
fn every_event_the_code_emits_validates_against_its_schema() {
    assert_valid(&uploaded(OutputOptions::default()));
    assert_valid(&uploaded(OutputOptions {
        bitrate_kbps: Some(192),
        vbr_quality: None,
    }));
    assert_valid(&uploaded(OutputOptions {
        bitrate_kbps: None,
        vbr_quality: Some(0),
    }));
    assert_valid(&AudioConverted {
        job_id: "j".into(),
        mp3_id: "65f0c0ffee0123456789abcd".into(),
        owner: "owner@example.com".into(),
        filename: "a.mp4".into(),
        duration_s: 10.01,
        size_bytes: 250_000,
        bitrate_kbps: 190,
    });
    for reason in [
        "empty_file",
        "invalid_data",
        "no_audio_stream",
        "unsupported_codec",
        "too_long",
        "internal",
    ] {
        assert_valid(&ConversionFailed {
            job_id: "j".into(),
            owner: "owner@example.com".into(),
            filename: "a.mp4".into(),
            reason: reason.into(),
            message: "what went wrong".into(),
        });
    }
}

#[test]
fn what_the_schemas_refuse_the_types_refuse_too() {
    let v = validator(events::VIDEO_UPLOADED);
    let good = serde_json::to_value(uploaded(OutputOptions::default())).unwrap();
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("video_id");
    assert!(!v.is_valid(&missing));
    assert!(serde_json::from_value::<VideoUploaded>(missing).is_err());
    let both = json!({"bitrate_kbps": 128, "vbr_quality": 2});
    let mut with_both = good.clone();
    with_both["output"] = both.clone();
    assert!(!v.is_valid(&with_both));
    assert!(
        serde_json::from_value::<OutputOptions>(both)
            .unwrap()
            .validate()
            .is_err()
    );
    let mut bad_rate = good;
    bad_rate["output"] = json!({"bitrate_kbps": 500});
    assert!(!v.is_valid(&bad_rate));
    assert!(
        serde_json::from_value::<OutputOptions>(json!({"bitrate_kbps": 500}))
            .unwrap()
            .validate()
            .is_err()
    );
    assert!(
        serde_json::from_value::<OutputOptions>(json!({"surprise": 1})).is_err(),
        "unknown fields are refused"
    );
}
