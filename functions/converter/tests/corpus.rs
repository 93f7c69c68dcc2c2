//! Corpus tests of the transcoding core against `shared/media-cases.json`.
//!
//! The corpus is made once per run with `shared/scripts/make-media DIR`
//! (idempotent), DIR = `$MEDIA_DIR` or `<workspace>/.cache/media`. Every case
//! not marked `long` is converted; outputs are checked by decoding them with
//! ffmpeg-next (the LAME gapless header honoured, like ffprobe's decoded
//! length). Tests are serialised (one lock) so the file-descriptor count is
//! meaningful.
//!
//! The `long` cases (60 s, 10 min and 60 min; `make-media --long` makes them
//! in a few minutes the first time, about 250 MB) run only on request:
//! `VIDMP3_LONG_CORPUS=1 cargo test -p converter --test corpus every_long_case`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

use converter::transcode::{
    Encoding, TranscodeError, TranscodeOptions, TranscodeReport, check_encoder, transcode,
};
use ffmpeg_next as ffmpeg;
use serde_json::Value;

fn workspace() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    p.canonicalize().unwrap_or(p)
}

fn shared() -> PathBuf {
    workspace().join("../shared")
}

fn manifest() -> &'static Value {
    static M: OnceLock<Value> = OnceLock::new();
    M.get_or_init(|| {
        let path = shared().join("media-cases.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_json::from_str(&text).expect("media-cases.json parses")
    })
}

/// The corpus directory, made on first use.
fn media() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("MEDIA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join(".cache/media"));
        let script = shared().join("scripts/make-media");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "make-media failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        check_encoder().expect("libmp3lame available");
        dir
    })
}

/// All tests hold this: conversions run one at a time (fd counting).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn short_cases() -> Vec<&'static Value> {
    cases(false)
}

fn cases(long: bool) -> Vec<&'static Value> {
    manifest()["cases"]
        .as_array()
        .expect("cases array")
        .iter()
        .filter(|c| c["long"].as_bool().unwrap_or(false) == long)
        .collect()
}

/// The Xing/Info header of an MP3 (the first frame after the ID3v2 tag, which
/// players read for the duration): its tag (`Xing` for VBR, `Info` for CBR)
/// and its frame count, or what is wrong.
fn xing_header(mp3: &[u8]) -> Result<(String, u32), String> {
    let mut at = 0;
    if mp3.starts_with(b"ID3") && mp3.len() >= 10 {
        let size = mp3[6..10]
            .iter()
            .fold(0usize, |n, b| (n << 7) | usize::from(b & 0x7f));
        let footer = if mp3[5] & 0x10 != 0 { 10 } else { 0 };
        at = 10 + size + footer;
    }
    let header = mp3
        .get(at..at + 4)
        .ok_or("the file ends before the first frame")?;
    if header[0] != 0xff || header[1] & 0xe0 != 0xe0 {
        return Err(format!("no frame sync at byte {at}: {header:02x?}"));
    }
    let mpeg1 = (header[1] >> 3) & 3 == 3;
    let crc = if header[1] & 1 == 0 { 2 } else { 0 };
    let mono = header[3] >> 6 == 3;
    let side_info = match (mpeg1, mono) {
        (true, false) => 32,
        (true, true) | (false, false) => 17,
        (false, true) => 9,
    };
    let tag_at = at + 4 + crc + side_info;
    let field = |from: usize| -> Result<u32, String> {
        let b = mp3.get(from..from + 4).ok_or("the Xing header is cut")?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let tag = mp3
        .get(tag_at..tag_at + 4)
        .ok_or("the first frame is cut")?;
    if tag != b"Xing" && tag != b"Info" {
        return Err(format!(
            "no Xing/Info tag in the first frame (found {:?})",
            String::from_utf8_lossy(tag)
        ));
    }
    let flags = field(tag_at + 4)?;
    if flags & 1 == 0 {
        return Err("the Xing header has no frame count".into());
    }
    Ok((
        String::from_utf8_lossy(tag).into_owned(),
        field(tag_at + 8)?,
    ))
}

fn tolerance() -> f64 {
    manifest()["duration_tolerance_s"].as_f64().unwrap_or(0.1)
}

/// What an MP3 (or any media file) holds, as ffmpeg-next decodes it.
#[derive(Debug)]
struct Probe {
    format: String,
    codec: String,
    /// Decoded samples per channel (gapless trimming applied by the decoder).
    samples: u64,
    rate: u32,
    channels: u16,
    tags: BTreeMap<String, String>,
    /// Packet payloads of the audio stream, in order.
    packets: Vec<Vec<u8>>,
}

impl Probe {
    fn duration_s(&self) -> f64 {
        self.samples as f64 / f64::from(self.rate.max(1))
    }
}

fn probe(path: &Path, decode: bool) -> Probe {
    let mut ictx = ffmpeg::format::input(path).expect("probe: open");
    let tags = ictx
        .metadata()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let format = ictx.format().name().to_owned();
    let stream = ictx
        .streams()
        .best(ffmpeg::media::Type::Audio)
        .expect("probe: audio stream");
    let index = stream.index();
    let ctx = ffmpeg::codec::context::Context::from_parameters(stream.parameters()).unwrap();
    let codec = format!("{:?}", stream.parameters().id());
    let mut decoder = ctx.decoder().audio().expect("probe: decoder");
    let mut frame = ffmpeg::frame::Audio::empty();
    let mut samples = 0u64;
    let mut rate = 0;
    let mut channels = 0;
    let mut packets = Vec::new();
    let mut receive = |decoder: &mut ffmpeg::decoder::Audio, samples: &mut u64| {
        while decoder.receive_frame(&mut frame).is_ok() {
            *samples += frame.samples() as u64;
            rate = frame.rate();
            channels = frame.channels();
        }
    };
    loop {
        let mut packet = ffmpeg::Packet::empty();
        match packet.read(&mut ictx) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => break,
            Err(e) => panic!("probe: read error {e} in {}", path.display()),
        }
        if packet.stream() != index {
            continue;
        }
        packets.push(packet.data().unwrap_or_default().to_vec());
        if decode {
            decoder.send_packet(&packet).expect("probe: decode");
            receive(&mut decoder, &mut samples);
        }
    }
    if decode {
        decoder.send_eof().unwrap();
        receive(&mut decoder, &mut samples);
    }
    Probe {
        format,
        codec,
        samples,
        rate,
        channels,
        tags,
        packets,
    }
}

fn convert(
    input: &Path,
    out: &Path,
    options: &TranscodeOptions,
) -> (Result<TranscodeReport, TranscodeError>, Vec<f64>) {
    let mut calls = Vec::new();
    let r = transcode(input, out, options, &mut |f| calls.push(f));
    (r, calls)
}

/// Checks one manifest case; returns a summary and the problems found.
fn check_case(c: &Value, dir: &Path) -> (String, Vec<String>) {
    let mut summary = String::new();
    let file = c["file"].as_str().unwrap();
    let input = media().join(file);
    let out = dir.join(format!("{}.mp3", file.replace('/', "_")));
    let (result, calls) = convert(&input, &out, &TranscodeOptions::default());
    let mut problems = Vec::new();
    match (c["expect"].as_str().unwrap(), result) {
        ("converts", Ok(report)) => {
            let want = &c["output"];
            let p = probe(&out, true);
            let expected_s = want["duration_s"].as_f64().unwrap();
            summary = format!(
                "decoded {:.3} s (want {expected_s}), {} Hz, {} ch, {} kb/s, copied={}, partial={}",
                p.duration_s(),
                p.rate,
                p.channels,
                report.bitrate_kbps,
                report.stream_copied,
                report.partial
            );
            if p.format != "mp3" || p.codec != "MP3" {
                problems.push(format!("output is {}/{}", p.format, p.codec));
            }
            match xing_header(&std::fs::read(&out).unwrap()) {
                // The mp3 demuxer reads past the Xing frame: the packets are the audio frames.
                Ok((tag, frames)) if (i64::from(frames) - p.packets.len() as i64).abs() <= 1 => {
                    summary.push_str(&format!(", {tag} header {frames} frames"));
                }
                Ok((tag, frames)) => problems.push(format!(
                    "{tag} header says {frames} frames, the file has {}",
                    p.packets.len()
                )),
                Err(e) => problems.push(e),
            }
            if (p.duration_s() - expected_s).abs() > tolerance() {
                problems.push(format!(
                    "decoded output {:.3} s, want {expected_s} s",
                    p.duration_s()
                ));
            }
            if (report.duration_s - expected_s).abs() > tolerance() {
                problems.push(format!(
                    "report says {:.3} s, want {expected_s} s",
                    report.duration_s
                ));
            }
            if u64::from(p.channels) != want["channels"].as_u64().unwrap() {
                problems.push(format!(
                    "{} channels, want {}",
                    p.channels, want["channels"]
                ));
            }
            if u64::from(p.rate) != want["reference_sample_rate_hz"].as_u64().unwrap() {
                problems.push(format!(
                    "{} Hz, want {}",
                    p.rate, want["reference_sample_rate_hz"]
                ));
            }
            if report.channels != p.channels || report.sample_rate_hz != p.rate {
                problems.push(format!("report {report:?} disagrees with the file"));
            }
            let size = std::fs::metadata(&out).unwrap().len();
            if report.size_bytes != size || report.bitrate_kbps == 0 {
                problems.push(format!(
                    "report size/bitrate wrong: {report:?}, file {size}"
                ));
            }
            let partial = c["partial"].as_bool().unwrap_or(false);
            if report.partial != partial || (partial && report.read_errors == 0) {
                problems.push(format!(
                    "partial={} (read_errors {}), want {partial}",
                    report.partial, report.read_errors
                ));
            }
            let audio = &c["input"]["audio"][0];
            let copied = audio["codec"] == "mp3";
            if report.stream_copied != copied {
                problems.push(format!(
                    "stream_copied={}, want {copied}",
                    report.stream_copied
                ));
            }
            if let Some(tags) = want["tags"].as_object() {
                for (k, v) in tags {
                    if p.tags.get(k).map(String::as_str) != v.as_str() {
                        problems.push(format!("tag {k}={:?}, want {v}", p.tags.get(k)));
                    }
                }
            }
            for noise in [
                "major_brand",
                "minor_version",
                "compatible_brands",
                "encoder",
            ] {
                if p.tags.contains_key(noise) {
                    problems.push(format!("container noise tag {noise} in output"));
                }
            }
            if calls.last() != Some(&1.0) || calls.iter().any(|f| !(0.0..=1.0).contains(f)) {
                problems.push(format!("progress calls wrong: {calls:?}"));
            }
        }
        ("rejected", Err(e)) => {
            let kind = c["error"]["kind"].as_str().unwrap();
            summary = format!("[{}] {e}", e.code());
            if e.code() != kind {
                problems.push(format!("error {} ({e}), want {kind}", e.code()));
            }
            if out.exists() {
                problems.push("output file left behind".into());
            }
            if e.to_string().is_empty() {
                problems.push("empty message".into());
            }
        }
        ("converts", Err(e)) => problems.push(format!("failed: [{}] {e}", e.code())),
        (_, Ok(r)) => problems.push(format!("converted but should be rejected: {r:?}")),
        (other, _) => problems.push(format!("unknown expectation {other}")),
    }
    let _ = std::fs::remove_file(&out);
    (summary, problems)
}

#[test]
fn every_short_case_matches_the_manifest() {
    let _lock = serial();
    media();
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let cases = short_cases();
    for c in &cases {
        let (summary, problems) = check_case(c, dir.path());
        let file = c["file"].as_str().unwrap();
        if problems.is_empty() {
            eprintln!("ok    {file}: {summary}");
        } else {
            eprintln!("FAIL  {file}: {}", problems.join("; "));
            failures.push(format!("{file}: {}", problems.join("; ")));
        }
    }
    assert!(cases.len() >= 20, "only {} short cases", cases.len());
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn errors_say_what_is_wrong() {
    let _lock = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.mp3");
    let no_audio = transcode(
        &media().join("mp4_h264_no_audio_track_10s.mp4"),
        &out,
        &TranscodeOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(no_audio.to_string(), "the file has no audio track");
    let empty = transcode(
        &media().join("empty_zero_bytes.mp4"),
        &out,
        &TranscodeOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(empty.to_string(), "the file is empty");
    let missing = transcode(
        &dir.path().join("does-not-exist.mp4"),
        &out,
        &TranscodeOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(missing.code(), "io");
    // An output that cannot be created is a local I/O error, not a crash.
    let bad_out = transcode(
        &media().join("m4a_aac_audio_only_10s.m4a"),
        &dir.path().join("no/such/dir/out.mp3"),
        &TranscodeOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(bad_out.code(), "io", "{bad_out}");
    assert!(!out.exists());
}

#[test]
fn cbr_bitrate_is_applied() {
    let _lock = serial();
    let dir = tempfile::tempdir().unwrap();
    let input = media().join("mp4_h264_aac_faststart_10s.mp4");
    let mut kbps = Vec::new();
    for bitrate in [128, 320] {
        let out = dir.path().join(format!("{bitrate}.mp3"));
        let options = TranscodeOptions {
            encoding: Some(Encoding::Cbr {
                bitrate_kbps: bitrate,
            }),
            ..Default::default()
        };
        let report = transcode(&input, &out, &options, &mut |_| {}).unwrap();
        let p = probe(&out, true);
        assert!((p.duration_s() - 10.01).abs() <= tolerance(), "{p:?}");
        let (tag, frames) = xing_header(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(tag, "Info", "a CBR file's header is tagged Info");
        assert!(
            (i64::from(frames) - p.packets.len() as i64).abs() <= 1,
            "{frames} frames in the header, {} in the file",
            p.packets.len()
        );
        // Average over the file (tags and Xing frame included): near the target.
        let expect = f64::from(bitrate);
        assert!(
            (f64::from(report.bitrate_kbps) - expect).abs() < expect * 0.05,
            "CBR {bitrate}: {report:?}"
        );
        kbps.push(report.bitrate_kbps);
    }
    assert!(kbps[1] > kbps[0] * 2, "{kbps:?}");
}

#[test]
fn vbr_quality_changes_size() {
    let _lock = serial();
    let dir = tempfile::tempdir().unwrap();
    let input = media().join("mp4_h264_aac_faststart_10s.mp4");
    let mut sizes = Vec::new();
    for quality in [0, 9] {
        let out = dir.path().join(format!("q{quality}.mp3"));
        let options = TranscodeOptions {
            encoding: Some(Encoding::Vbr { quality }),
            ..Default::default()
        };
        sizes.push(
            transcode(&input, &out, &options, &mut |_| {})
                .unwrap()
                .size_bytes,
        );
    }
    assert!(sizes[0] > sizes[1], "{sizes:?}");
}

#[test]
fn mp3_source_is_stream_copied_byte_for_byte() {
    let _lock = serial();
    let dir = tempfile::tempdir().unwrap();
    let input = media().join("avi_mpeg4_mp3_10s.avi");
    let out = dir.path().join("copy.mp3");
    // No encoding asked for: the only case in which an MP3 source is copied.
    let options = TranscodeOptions::default();
    assert_eq!(options.encoding, None);
    let report = transcode(&input, &out, &options, &mut |_| {}).unwrap();
    assert!(report.stream_copied);
    let src = probe(&input, false);
    let dst = probe(&out, true);
    assert_eq!(src.codec, "MP3");
    let src_bytes: Vec<u8> = src.packets.concat();
    let dst_bytes: Vec<u8> = dst.packets.concat();
    assert_eq!(
        src_bytes.len(),
        dst_bytes.len(),
        "audio payload size differs"
    );
    assert!(src_bytes == dst_bytes, "audio payload differs");
    assert_eq!(src.packets.len(), dst.packets.len(), "frame count differs");
    assert!(
        (dst.duration_s() - 10.03).abs() <= tolerance(),
        "{}",
        dst.duration_s()
    );
}

/// An explicit encoding applies to an MP3 source too (a user asking for 64 kbit/s speech must not get the
/// source's 192 kbit/s frames back): the audio is decoded and re-encoded at the requested bit rate.
#[test]
fn mp3_source_with_explicit_cbr_is_reencoded_at_that_bitrate() {
    let _lock = serial();
    let dir = tempfile::tempdir().unwrap();
    let input = media().join("avi_mpeg4_mp3_10s.avi");
    let src = probe(&input, false);
    assert_eq!(src.codec, "MP3");
    assert_eq!(
        mp3_frame_bitrate_kbps(&src.packets[0]),
        192,
        "the corpus file's MP3 is 192 kbit/s"
    );
    let out = dir.path().join("64.mp3");
    let options = TranscodeOptions {
        encoding: Some(Encoding::Cbr { bitrate_kbps: 64 }),
        ..Default::default()
    };
    let report = transcode(&input, &out, &options, &mut |_| {}).unwrap();
    assert!(!report.stream_copied, "{report:?}");
    let dst = probe(&out, true);
    assert_eq!(dst.codec, "MP3");
    assert!(
        (dst.duration_s() - 10.03).abs() <= tolerance(),
        "{}",
        dst.duration_s()
    );
    // Every audio frame's header says 64 kbit/s (the Xing/Info frame is not an audio packet).
    let rates: std::collections::BTreeSet<u32> = dst
        .packets
        .iter()
        .map(|p| mp3_frame_bitrate_kbps(p))
        .collect();
    assert_eq!(rates, [64].into(), "frame header bit rates");
    // And the file as a whole: size over duration near 64, far from the source's 192.
    assert!(
        (f64::from(report.bitrate_kbps) - 64.0).abs() < 64.0 * 0.05,
        "{report:?}"
    );
    let (tag, _) = xing_header(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(tag, "Info", "a CBR file's header is tagged Info");
}

/// The bit rate in kbit/s written in the header of the MPEG audio layer III frame starting `frame`.
fn mp3_frame_bitrate_kbps(frame: &[u8]) -> u32 {
    assert!(
        frame.len() >= 4 && frame[0] == 0xFF && frame[1] & 0xE0 == 0xE0,
        "not an MPEG audio frame header: {:02x?}",
        &frame[..frame.len().min(4)]
    );
    let version = (frame[1] >> 3) & 0b11; // 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    assert_eq!((frame[1] >> 1) & 0b11, 0b01, "layer III");
    let index = usize::from(frame[2] >> 4);
    const MPEG1: [u32; 15] = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    const MPEG2: [u32; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
    assert!((1..15).contains(&index), "bit rate index {index}");
    if version == 3 {
        MPEG1[index]
    } else {
        MPEG2[index]
    }
}

#[test]
fn fallback_title_only_when_source_has_none() {
    let _lock = serial();
    let dir = tempfile::tempdir().unwrap();
    let options = TranscodeOptions {
        fallback_title: Some("Holiday vidéo 2024".into()),
        ..Default::default()
    };
    let out = dir.path().join("a.mp3");
    transcode(
        &media().join("m4a_aac_audio_only_10s.m4a"),
        &out,
        &options,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(
        probe(&out, false).tags.get("title").map(String::as_str),
        Some("Holiday vidéo 2024")
    );
    transcode(
        &media().join("mp4_h264_aac_tagged_title_artist_10s.mp4"),
        &out,
        &options,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(
        probe(&out, false).tags.get("title").map(String::as_str),
        Some("Corpus Test Title – Café")
    );
}

#[test]
fn max_duration_refuses_long_audio() {
    let _lock = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("long.mp3");
    let options = TranscodeOptions {
        max_duration_s: Some(5.0),
        ..Default::default()
    };
    // Declared duration (mp4) and no stream duration (FLV, TS estimate).
    for file in [
        "mp4_h264_aac_faststart_10s.mp4",
        "flv_h264_aac_10s.flv",
        "ts_h264_aac_10s.ts",
        "avi_mpeg4_mp3_10s.avi",
    ] {
        let err = transcode(&media().join(file), &out, &options, &mut |_| {}).unwrap_err();
        assert_eq!(err.code(), "too_long", "{file}: {err}");
        assert!(!out.exists(), "{file}: output left behind");
    }
    let ok = TranscodeOptions {
        max_duration_s: Some(11.0),
        ..Default::default()
    };
    transcode(
        &media().join("mp4_h264_aac_faststart_10s.mp4"),
        &out,
        &ok,
        &mut |_| {},
    )
    .unwrap();
}

#[test]
fn progress_rises_without_stream_duration() {
    let _lock = serial();
    let dir = tempfile::tempdir().unwrap();
    for file in [
        "flv_h264_aac_10s.flv",
        "ts_h264_aac_10s.ts",
        "mkv_vp9_opus_10s.mkv",
    ] {
        let (r, calls) = convert(
            &media().join(file),
            &dir.path().join("p.mp3"),
            &TranscodeOptions::default(),
        );
        r.unwrap();
        assert_eq!(calls.last(), Some(&1.0), "{file}: {calls:?}");
        assert!(
            calls.iter().all(|f| (0.0..=1.0).contains(f)),
            "{file}: {calls:?}"
        );
    }
}

/// Damaged copies of corpus files (cut at several points, bytes overwritten):
/// every one must give a result, never a panic or a hang, and a failure must
/// leave no output.
#[test]
fn damaged_inputs_never_panic() {
    let _lock = serial();
    let dir = tempfile::tempdir().unwrap();
    let sources = [
        "mp4_h264_aac_faststart_10s.mp4",
        "mkv_vp9_opus_10s.mkv",
        "ts_h264_aac_10s.ts",
        "flv_h264_aac_10s.flv",
        "avi_mpeg4_mp3_10s.avi",
        "webm_vp8_vorbis_10s.webm",
        "mkv_h264_pcm_s24le_96khz_10s.mkv",
    ];
    let mut outcomes = Vec::new();
    for file in sources {
        let bytes = std::fs::read(media().join(file)).unwrap();
        let mut variants: Vec<(String, Vec<u8>)> = Vec::new();
        for pct in [1usize, 5, 35] {
            variants.push((
                format!("cut{pct}"),
                bytes[..bytes.len() * pct / 100].to_vec(),
            ));
        }
        // Overwrite 64-byte runs every 4 KiB from the 2nd KiB on (a
        // deterministic pattern: headers mostly intact, payload damaged).
        let mut damaged = bytes.clone();
        let mut i = 2048;
        while i + 64 < damaged.len() {
            for (j, b) in damaged[i..i + 64].iter_mut().enumerate() {
                *b = (j as u8).wrapping_mul(37) ^ 0x5a;
            }
            i += 4096;
        }
        variants.push(("holes".into(), damaged));
        for (name, data) in variants {
            let input = dir.path().join(format!("{name}-{file}"));
            std::fs::write(&input, &data).unwrap();
            let out = dir.path().join("d.mp3");
            let outcome = match transcode(&input, &out, &TranscodeOptions::default(), &mut |_| {}) {
                Ok(r) => {
                    assert!(out.exists());
                    std::fs::remove_file(&out).unwrap();
                    format!("ok {:.2}s partial={}", r.duration_s, r.partial)
                }
                Err(e) => {
                    assert!(!out.exists(), "{name}-{file}: output left after {e}");
                    assert_ne!(e.code(), "internal", "{name}-{file}: {e}");
                    e.code().to_string()
                }
            };
            eprintln!("{name}-{file}: {outcome}");
            outcomes.push(outcome);
        }
    }
    assert_eq!(outcomes.len(), sources.len() * 4);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn no_descriptor_or_temp_file_leak() {
    let _lock = serial();
    let dir = tempfile::tempdir().unwrap();
    let run_all = || {
        for c in short_cases() {
            let file = c["file"].as_str().unwrap();
            let out = dir.path().join("leak.mp3");
            let _ = transcode(
                &media().join(file),
                &out,
                &TranscodeOptions::default(),
                &mut |_| {},
            );
            let _ = std::fs::remove_file(&out);
        }
    };
    run_all(); // warm-up: lazily opened libraries, caches
    let before = open_fds();
    for _ in 0..3 {
        run_all();
    }
    let after = open_fds();
    assert_eq!(before, after, "file descriptors leaked");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "files left in the output dir: {left:?}");
}

/// A Matroska file written to a pipe declares no duration at all: the limit
/// must still hold (checked on the converted audio) and progress falls back to
/// the byte position.
#[test]
fn no_declared_duration_limit_and_progress() {
    let _lock = serial();
    media();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("nodur.mkv");
    let out = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=f=440:d=10",
        ])
        .args(["-c:a", "libopus", "-f", "matroska", "-"])
        .output()
        .expect("ffmpeg CLI");
    assert!(out.status.success());
    std::fs::write(&input, &out.stdout).unwrap();
    {
        let ictx = ffmpeg::format::input(&input).unwrap();
        assert!(ictx.duration() <= 0, "test file declares a duration");
    }
    let mp3 = dir.path().join("nodur.mp3");
    let limited = TranscodeOptions {
        max_duration_s: Some(5.0),
        ..Default::default()
    };
    let err = transcode(&input, &mp3, &limited, &mut |_| {}).unwrap_err();
    assert_eq!(err.code(), "too_long", "{err}");
    assert!(!mp3.exists());

    let (report, calls) = convert(&input, &mp3, &TranscodeOptions::default());
    let report = report.unwrap();
    assert!((report.duration_s - 10.0).abs() < 0.1, "{report:?}");
    assert!(calls.len() >= 2 && calls[0] < 1.0, "{calls:?}");
    assert!(calls.windows(2).all(|w| w[0] <= w[1]), "{calls:?}");
}

/// An audio track whose codec has no decoder: the Opus track of a corpus MKV with
/// its CodecID patched to an unknown one of the same length (`A_OPUS` →
/// `A_XXXX`), so the file stays valid Matroska.
#[test]
fn an_audio_codec_with_no_decoder_is_unsupported_codec() {
    let _lock = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(media().join("mkv_vp9_opus_10s.mkv")).unwrap();
    let hits: Vec<usize> = bytes
        .windows(6)
        .enumerate()
        .filter(|(_, w)| *w == b"A_OPUS")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hits.len(), 1, "one CodecID to patch");
    bytes[hits[0]..hits[0] + 6].copy_from_slice(b"A_XXXX");
    let input = dir.path().join("unknown_codec.mkv");
    std::fs::write(&input, &bytes).unwrap();
    let out = dir.path().join("u.mp3");
    let err = transcode(&input, &out, &TranscodeOptions::default(), &mut |_| {}).unwrap_err();
    assert_eq!(err.code(), "unsupported_codec", "{err}");
    assert!(!err.to_string().is_empty());
    assert!(!out.exists(), "output left behind");
}

/// The manifest's `long: true` cases, checked like the short ones. Opt-in
/// (`VIDMP3_LONG_CORPUS=1`): making them takes minutes and 250 MB, and the
/// 60-minute case about a minute of encoding.
#[test]
fn every_long_case_matches_the_manifest() {
    if std::env::var("VIDMP3_LONG_CORPUS").as_deref() != Ok("1") {
        eprintln!(
            "every_long_case_matches_the_manifest: skipped; VIDMP3_LONG_CORPUS=1 runs it (after make-media --long)"
        );
        return;
    }
    let _lock = serial();
    let dir = media();
    let script = shared().join("scripts/make-media");
    let made = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .arg("--long")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        made.status.success(),
        "make-media --long failed: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let out = tempfile::tempdir().unwrap();
    let cases = cases(true);
    assert!(cases.len() >= 3, "only {} long cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let file = c["file"].as_str().unwrap();
        let started = std::time::Instant::now();
        let (summary, problems) = check_case(c, out.path());
        let took = started.elapsed().as_secs_f64();
        if problems.is_empty() {
            eprintln!("ok    {file} ({took:.1} s): {summary}");
        } else {
            eprintln!("FAIL  {file}: {}", problems.join("; "));
            failures.push(format!("{file}: {}", problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
