//! The converter binary's start-up check for its MP3 encoder, without a stripped FFmpeg: the check's
//! encoder name comes from `VIDMP3_MP3_ENCODER` (a test/diagnostic knob, default `libmp3lame`).

use std::process::Command;

fn run_with_encoder(name: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_converter"))
        .arg("job")
        .env_clear()
        .env(converter::transcode::MP3_ENCODER_VAR, name)
        .output()
        .unwrap()
}

#[test]
fn a_missing_mp3_encoder_stops_the_converter_with_one_line_naming_it() {
    let out = run_with_encoder("vidmp3_no_such_encoder");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].contains("vidmp3_no_such_encoder encoder"),
        "{}",
        lines[0]
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn with_libmp3lame_the_check_passes_and_start_up_goes_on_to_the_configuration() {
    // Same run with the real encoder: the process gets past the check and stops at the next step, the
    // missing MONGODB_URI, so the failure above is the check's and not something else's.
    let out = run_with_encoder("libmp3lame");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("encoder"), "{all}");
    assert!(all.contains("MONGODB_URI"), "{all}");
}
