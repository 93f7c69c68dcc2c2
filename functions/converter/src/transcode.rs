//! The pure transcoding core of the converter: one local media file in, one
//! MP3 file out, synchronously, with FFmpeg (through `ffmpeg-next`).
//!
//! What it does, in order:
//!
//! 1. refuses an empty file before FFmpeg sees it ([`TranscodeError::EmptyFile`]);
//! 2. opens the input **by content**: the file is handed to libavformat through
//!    a custom I/O context without a file name, so the extension never picks the
//!    demuxer (an MP4 named `.avi` opens as MP4, text named `.mp4` is refused);
//! 3. picks the audio track with `av_find_best_stream` (the default-disposition
//!    track wins) and tells the demuxer to discard every other stream, so video
//!    packets are skipped, never decoded;
//! 4. reads packets with its own `av_read_frame` loop: EOF ends it, other read
//!    errors are counted and logged and the loop gives up after
//!    [`MAX_CONSECUTIVE_READ_ERRORS`] in a row (a truncated file is converted as
//!    far as it goes and reported as [`TranscodeReport::partial`]);
//! 5. if the track is already MP3 and no encoding was asked for
//!    ([`TranscodeOptions::encoding`] is `None`), copies its packets unchanged
//!    into the MP3 muxer (no re-encode); otherwise (any other codec, or an
//!    explicit [`Encoding`], even for an MP3 source) decodes, converts with
//!    swresample to planar float at an MP3-legal rate with at most two
//!    channels, cuts the samples into the encoder's fixed frame size and
//!    encodes with libmp3lame (VBR quality 2 when no encoding was asked for),
//!    flushing decoder, resampler, buffer and encoder at the end so no tail is
//!    lost;
//! 6. writes the MP3 muxer's output: an ID3v2.4 tag with the source's title,
//!    artist, album, date, genre and track (not container noise such as
//!    `major_brand` or `encoder`) and the Xing/LAME header with the frame count
//!    and the encoder delay/padding, so players show the right duration and
//!    play gaplessly.
//!
//! Output timestamps are a running sample count starting at 0: the source's
//! timestamps (negative for Opus, 1.46 s for MPEG-TS, 2 s for audio that starts
//! after the video) never reach the encoder, and no silence is inserted.
//!
//! On any error the output file, if this call created it, is removed; every
//! FFmpeg context is owned by a Rust value and freed on every path. A panic
//! inside (which should not happen) is caught and reported as
//! [`TranscodeError::Internal`].

use std::fs::File;
use std::io;
use std::os::raw::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::ptr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ffmpeg_next as ffmpeg;

use ffmpeg::codec::{self, Id};
use ffmpeg::format::context::StreamIo;
use ffmpeg::format::{self, Sample, sample};
use ffmpeg::{ChannelLayout, Dictionary, Packet, Rational, ffi, frame, media};

/// Read errors in a row after which the demux loop gives up and keeps what it
/// has (a truncated MP4 gives one error per missing sample).
pub const MAX_CONSECUTIVE_READ_ERRORS: u32 = 64;

/// Sample rates an MP3 can carry (MPEG-1, MPEG-2 and MPEG-2.5 layer III), in Hz.
pub const MP3_SAMPLE_RATES_HZ: [u32; 9] =
    [8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000];

/// `FF_QP2LAMBDA`: the factor between a quality scale value and `global_quality`.
const QP2LAMBDA: u32 = 118;

/// Minimum interval between two progress callbacks.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Global metadata keys copied into the ID3v2 tag (FFmpeg's generic names; the
/// mp3 muxer maps them to TIT2, TPE1, TALB, TPE2, TDRC, TCON, TRCK, TPOS, TCOM).
const TAG_KEYS: [&str; 9] = [
    "title",
    "artist",
    "album",
    "album_artist",
    "date",
    "genre",
    "track",
    "disc",
    "composer",
];

/// How the MP3 is encoded, when asked for explicitly through
/// [`TranscodeOptions::encoding`]. An explicit encoding is always applied, also
/// to a source that is already MP3 (it is then decoded and re-encoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Variable bit rate with LAME's quality scale, `0..=9`, 0 best (largest).
    /// 2 (the default) averages about 190 kb/s on music. Values above 9 are
    /// treated as 9.
    Vbr {
        /// LAME VBR quality, `0..=9` (`-q:a` of the ffmpeg CLI).
        quality: u8,
    },
    /// Constant bit rate in kilobits per second, `64..=320`; values outside
    /// are clamped, and LAME rounds to the nearest bit rate MP3 allows.
    Cbr {
        /// Bit rate in kb/s (1000 bit/s), `64..=320`.
        bitrate_kbps: u32,
    },
}

impl Default for Encoding {
    /// `Vbr { quality: 2 }`.
    fn default() -> Self {
        Encoding::Vbr { quality: 2 }
    }
}

/// What [`transcode`] should do beyond the defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TranscodeOptions {
    /// Bit rate mode and quality of the MP3. `None` (no option given): an MP3
    /// source is copied unchanged and any other source is encoded with
    /// [`Encoding::default`] (VBR quality 2). `Some`: every source, MP3
    /// included, is encoded with it, so the requested bit rate or quality is
    /// what comes out. `None` is kept apart from `Some(Encoding::default())`
    /// on purpose: asking for VBR q2 explicitly re-encodes an MP3 source.
    pub encoding: Option<Encoding>,
    /// Longest audio accepted, in seconds. A file whose audio stream (or, when
    /// the stream has none, container) duration says longer is refused with
    /// [`TranscodeError::TooLong`] before anything is decoded, and the job also
    /// stops with that error as soon as the converted audio passes the limit
    /// (containers can lie). `None`: no limit.
    pub max_duration_s: Option<f64>,
    /// ID3 title used when the source has no (non-empty) `title` tag, e.g. the
    /// upload's file name without extension. `None`: no title then.
    pub fallback_title: Option<String>,
}

/// What came out of a successful [`transcode`].
#[derive(Debug, Clone, PartialEq)]
pub struct TranscodeReport {
    /// Length of the output audio in seconds: samples given to the encoder (or,
    /// for a stream copy, samples in the copied frames) divided by
    /// [`sample_rate_hz`](Self::sample_rate_hz).
    pub duration_s: f64,
    /// Sample rate of the MP3, in Hz (one of [`MP3_SAMPLE_RATES_HZ`]).
    pub sample_rate_hz: u32,
    /// Channels of the MP3: 1 or 2.
    pub channels: u16,
    /// Average bit rate of the whole output file in kb/s (1000 bit/s):
    /// `size_bytes * 8 / duration_s / 1000`, tags included; 0 if the duration is 0.
    pub bitrate_kbps: u32,
    /// Size of the output file in bytes.
    pub size_bytes: u64,
    /// True when the source audio was already MP3 and no encoding was asked
    /// for, so its frames were copied byte for byte instead of re-encoded.
    pub stream_copied: bool,
    /// True when the input is damaged: the demuxer reported read errors other
    /// than end of file (see [`read_errors`](Self::read_errors)) or audio
    /// packets failed to decode. What could be read was converted.
    pub partial: bool,
    /// Number of demuxer read errors other than end of file, plus one when the
    /// file ends before the data its index points to (a cut-off upload: the
    /// demuxers report that as a plain end of file).
    pub read_errors: u32,
}

/// Why a transcode failed. [`code`](Self::code) gives a stable machine-readable
/// reason; `Display` gives a sentence for people.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    /// The input file has zero bytes.
    #[error("the file is empty")]
    EmptyFile,
    /// The input is not a media file FFmpeg recognises, or it is truncated
    /// before its index (an MP4 whose `moov` atom was cut off), or none of its
    /// audio could be decoded.
    #[error(
        "the file is not a video or audio file we can read, or it is truncated or damaged ({detail})"
    )]
    InvalidData {
        /// What FFmpeg said, for logs.
        detail: String,
    },
    /// The input opened but has no audio track (a silent video, an image).
    #[error("the file has no audio track")]
    NoAudioStream,
    /// The audio track's codec (or channel layout) cannot be decoded here.
    #[error("the audio track uses a format we cannot decode ({codec})")]
    UnsupportedCodec {
        /// Codec name (or what was wrong), for people and logs.
        codec: String,
    },
    /// The audio is longer than [`TranscodeOptions::max_duration_s`].
    #[error("the audio is too long: {duration_s:.1} s, the limit is {limit_s:.1} s")]
    TooLong {
        /// Duration found, in seconds (declared by the file, or converted so far).
        duration_s: f64,
        /// The limit, in seconds.
        limit_s: f64,
    },
    /// Reading the input or writing the output file failed locally (missing
    /// file, permissions, disk full).
    #[error("local file error while {action}: {source}")]
    Io {
        /// What was being done ("opening the input", "writing the MP3", ...).
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Anything else: the encoder or muxer failed, a bug. Not the user's fault.
    #[error("internal conversion error: {0}")]
    Internal(String),
}

impl TranscodeError {
    /// Stable reason code: `"empty_file"`, `"invalid_data"`, `"no_audio_stream"`,
    /// `"unsupported_codec"`, `"too_long"`, `"io"` or `"internal"`.
    pub fn code(&self) -> &'static str {
        match self {
            TranscodeError::EmptyFile => "empty_file",
            TranscodeError::InvalidData { .. } => "invalid_data",
            TranscodeError::NoAudioStream => "no_audio_stream",
            TranscodeError::UnsupportedCodec { .. } => "unsupported_codec",
            TranscodeError::TooLong { .. } => "too_long",
            TranscodeError::Io { .. } => "io",
            TranscodeError::Internal(_) => "internal",
        }
    }
}

/// Initialises FFmpeg once (idempotent, thread-safe) and sets its own log
/// output to errors only.
fn init() -> Result<(), TranscodeError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        ffmpeg::init().map_err(|e| e.to_string())?;
        ffmpeg::log::set_level(ffmpeg::log::Level::Error);
        Ok(())
    })
    .clone()
    .map_err(|e| TranscodeError::Internal(format!("FFmpeg initialisation failed: {e}")))
}

fn find_mp3_encoder() -> Option<ffmpeg::Codec> {
    ffmpeg::encoder::find_by_name("libmp3lame")
}

/// Environment variable naming the encoder [`check_encoder`] looks for
/// (default `libmp3lame`). A test/diagnostic knob read only by the check:
/// a name FFmpeg lacks shows the start-up failure without a stripped FFmpeg.
/// Conversions always use libmp3lame.
pub const MP3_ENCODER_VAR: &str = "VIDMP3_MP3_ENCODER";

/// Checks that FFmpeg initialises and has the libmp3lame encoder (or the one
/// named by [`MP3_ENCODER_VAR`]). Call it at start-up; it initialises FFmpeg
/// (idempotent) and silences FFmpeg's own logging below error level.
///
/// # Errors
/// [`TranscodeError::Internal`] if FFmpeg fails to initialise or was built
/// without the encoder; the message names it.
pub fn check_encoder() -> Result<(), TranscodeError> {
    init()?;
    let name = std::env::var(MP3_ENCODER_VAR).unwrap_or_else(|_| "libmp3lame".to_owned());
    match ffmpeg::encoder::find_by_name(&name) {
        Some(_) => Ok(()),
        None => Err(TranscodeError::Internal(format!(
            "this FFmpeg build has no {name} encoder"
        ))),
    }
}

/// Converts the audio of the media file `input` into an MP3 file at `output`
/// (created or truncated), synchronously.
///
/// `progress` is called with the fraction done, `0.0..=1.0`, at most about ten
/// times a second while reading (estimated from packet timestamps against the
/// declared duration, or from the byte position when the file declares no
/// duration), and with `1.0` once at the end of a success.
///
/// # Errors
/// - [`TranscodeError::EmptyFile`]: `input` has 0 bytes (FFmpeg is not called);
/// - [`TranscodeError::InvalidData`]: not a media file, truncated before its
///   index, or no audio could be decoded;
/// - [`TranscodeError::NoAudioStream`]: no audio track;
/// - [`TranscodeError::UnsupportedCodec`]: the audio codec cannot be decoded;
/// - [`TranscodeError::TooLong`]: longer than `options.max_duration_s`;
/// - [`TranscodeError::Io`]: `input` cannot be read or `output` written;
/// - [`TranscodeError::Internal`]: encoder/muxer failure or a bug.
///
/// On error no output file is left behind (if this call created it).
pub fn transcode(
    input: &Path,
    output: &Path,
    options: &TranscodeOptions,
    progress: &mut dyn FnMut(f64),
) -> Result<TranscodeReport, TranscodeError> {
    let meta = std::fs::metadata(input).map_err(|source| TranscodeError::Io {
        action: "opening the input file",
        source,
    })?;
    if !meta.is_file() {
        return Err(TranscodeError::Io {
            action: "opening the input file",
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    if meta.len() == 0 {
        return Err(TranscodeError::EmptyFile);
    }
    init()?;

    let mut guard = OutputGuard {
        path: output,
        created: false,
    };
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| {
        run(input, meta.len(), output, options, progress, &mut guard)
    }));
    let result = match result {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(input = %input.display(), panic = %what, "transcode panicked");
            Err(TranscodeError::Internal(format!("panic: {what}")))
        }
    };
    match &result {
        Ok(report) => {
            guard.created = false; // keep the file
            tracing::info!(
                input = %input.display(),
                duration_s = report.duration_s,
                sample_rate_hz = report.sample_rate_hz,
                channels = report.channels,
                bitrate_kbps = report.bitrate_kbps,
                size_bytes = report.size_bytes,
                stream_copied = report.stream_copied,
                partial = report.partial,
                read_errors = report.read_errors,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "transcoded"
            );
        }
        Err(e) => {
            tracing::info!(input = %input.display(), code = e.code(), error = %e, "transcode failed");
        }
    }
    result
}

/// Removes the output file on drop while `created` is true.
struct OutputGuard<'a> {
    path: &'a Path,
    created: bool,
}

impl Drop for OutputGuard<'_> {
    fn drop(&mut self) {
        if self.created
            && let Err(e) = std::fs::remove_file(self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove failed output");
        }
    }
}

/// Maps an FFmpeg error number that is really a local I/O failure.
fn ff_io_error(e: &ffmpeg::Error) -> Option<io::Error> {
    match *e {
        ffmpeg::Error::Other { errno } => match errno {
            libc_errno::EIO
            | libc_errno::ENOSPC
            | libc_errno::EACCES
            | libc_errno::EPERM
            | libc_errno::EROFS
            | libc_errno::EFBIG
            | libc_errno::ENOENT
            | libc_errno::EISDIR
            | libc_errno::EDQUOT
            | libc_errno::EMFILE
            | libc_errno::ENFILE => Some(io::Error::from_raw_os_error(errno)),
            _ => None,
        },
        _ => None,
    }
}

/// The few errno values we map (Linux numbers, as FFmpeg reports them).
mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const EACCES: i32 = 13;
    pub const EISDIR: i32 = 21;
    pub const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const EROFS: i32 = 30;
    pub const EAGAIN: i32 = 11;
    pub const EDQUOT: i32 = 122;
}

/// An FFmpeg failure while writing the output: I/O or internal.
fn write_error(action: &'static str) -> impl FnOnce(ffmpeg::Error) -> TranscodeError {
    move |e| match ff_io_error(&e) {
        Some(source) => TranscodeError::Io { action, source },
        None => TranscodeError::Internal(format!("{action}: {e}")),
    }
}

fn internal(action: &'static str) -> impl FnOnce(ffmpeg::Error) -> TranscodeError {
    move |e| TranscodeError::Internal(format!("{action}: {e}"))
}

fn is_eagain(e: &ffmpeg::Error) -> bool {
    matches!(e, ffmpeg::Error::Other { errno } if *errno == libc_errno::EAGAIN)
}

/// Opens `path` by content: custom I/O and no file name, so no extension hint.
fn open_input(path: &Path) -> Result<format::context::Input, TranscodeError> {
    let file = File::open(path).map_err(|source| TranscodeError::Io {
        action: "opening the input file",
        source,
    })?;
    let io = StreamIo::from_read_seek_with_capacity(file, 64 * 1024)
        .map_err(internal("allocating the input I/O context"))?;
    format::input_from_stream(io, None, None).map_err(|e| match ff_io_error(&e) {
        Some(source) => TranscodeError::Io {
            action: "reading the input file",
            source,
        },
        None if matches!(e, ffmpeg::Error::Other { errno: 12 }) => {
            TranscodeError::Internal(format!("opening the input: {e}"))
        }
        None => TranscodeError::InvalidData {
            detail: e.to_string(),
        },
    })
}

/// The nearest MP3-legal sample rate (ties go up).
fn mp3_rate(rate: u32) -> u32 {
    let mut best = MP3_SAMPLE_RATES_HZ[0];
    for r in MP3_SAMPLE_RATES_HZ {
        if r.abs_diff(rate) <= best.abs_diff(rate) {
            best = r;
        }
    }
    best
}

/// Seconds of a timestamp in `tb`; `None` if unknown.
fn ts_seconds(ts: i64, tb: Rational) -> Option<f64> {
    if ts == ffi::AV_NOPTS_VALUE || ts <= 0 || tb.numerator() <= 0 || tb.denominator() <= 0 {
        return None;
    }
    Some(ts as f64 * f64::from(tb.numerator()) / f64::from(tb.denominator()))
}

/// Throttled progress reporting.
struct Progress<'a> {
    callback: &'a mut dyn FnMut(f64),
    last: Option<Instant>,
    /// Start timestamp and duration of the audio stream, in seconds.
    start_s: f64,
    duration_s: Option<f64>,
    time_base: Rational,
    file_size: u64,
}

impl Progress<'_> {
    fn on_packet(&mut self, packet: &Packet) {
        let now = Instant::now();
        if let Some(last) = self.last
            && now.duration_since(last) < PROGRESS_INTERVAL
        {
            return;
        }
        let by_time = match (self.duration_s, packet.pts().or(packet.dts())) {
            (Some(d), Some(ts)) if self.time_base.denominator() > 0 => {
                let t = ts as f64 * f64::from(self.time_base.numerator())
                    / f64::from(self.time_base.denominator());
                Some((t - self.start_s) / d)
            }
            _ => None,
        };
        let fraction = by_time.or_else(|| {
            let pos = packet.position();
            (pos >= 0 && self.file_size > 0).then(|| pos as f64 / self.file_size as f64)
        });
        if let Some(f) = fraction
            && f.is_finite()
        {
            self.last = Some(now);
            (self.callback)(f.clamp(0.0, 1.0));
        }
    }

    fn done(&mut self) {
        (self.callback)(1.0);
    }
}

/// Damage counters of the demux/decode loop.
#[derive(Default)]
struct Damage {
    read_errors: u32,
    decode_errors: u32,
    /// Input size in bytes, to tell a truncated file at EOF.
    file_size: u64,
    eof_checked: bool,
}

/// If the demuxer's index of stream `index` (MP4 sample table, Matroska cues,
/// AVI idx1) points past the end of the file, the byte offset it points to:
/// the file was cut off after its index was written.
fn index_end_past(ictx: &mut format::context::Input, index: usize, file_size: u64) -> Option<u64> {
    let mut stream = ictx.stream_mut(index)?;
    let mut max_end: i64 = 0;
    unsafe {
        let st = stream.as_mut_ptr();
        let count = ffi::avformat_index_get_entries_count(st);
        for i in 0..count {
            let entry = ffi::avformat_index_get_entry(st, i);
            if entry.is_null() {
                break;
            }
            let end = (*entry)
                .pos
                .saturating_add(i64::from((*entry).size().max(0)));
            max_end = max_end.max(end);
        }
    }
    (max_end > 0 && max_end as u64 > file_size).then_some(max_end as u64)
}

/// Reads the next packet of the audio stream. `Ok(None)` at the end (EOF, or
/// too many consecutive errors). Packets of other streams are dropped.
fn next_audio_packet(
    ictx: &mut format::context::Input,
    audio_index: usize,
    damage: &mut Damage,
) -> Option<Packet> {
    let mut consecutive = 0u32;
    loop {
        let mut packet = Packet::empty();
        match packet.read(ictx) {
            Ok(()) => {
                consecutive = 0;
                if packet.stream() == audio_index {
                    return Some(packet);
                }
            }
            Err(ffmpeg::Error::Eof) => {
                if !damage.eof_checked {
                    damage.eof_checked = true;
                    if let Some(end) = index_end_past(ictx, audio_index, damage.file_size) {
                        // Demuxers report a cut-off file as a plain EOF (mov
                        // logs "partial file" and returns EOF): count it.
                        damage.read_errors = damage.read_errors.saturating_add(1);
                        tracing::warn!(
                            file_size = damage.file_size,
                            index_end = end,
                            "input truncated: its index points past the end of the file"
                        );
                    }
                }
                return None;
            }
            Err(e) => {
                damage.read_errors = damage.read_errors.saturating_add(1);
                consecutive += 1;
                if damage.read_errors <= 3 {
                    tracing::warn!(error = %e, "read error in input (damaged or truncated file)");
                } else {
                    tracing::debug!(error = %e, "read error in input");
                }
                if consecutive >= MAX_CONSECUTIVE_READ_ERRORS {
                    tracing::warn!(
                        consecutive,
                        total = damage.read_errors,
                        "too many read errors in a row: keeping what was read"
                    );
                    return None;
                }
            }
        }
    }
}

/// ID3 metadata from the source's global metadata.
fn output_metadata(
    ictx: &format::context::Input,
    fallback_title: Option<&str>,
) -> Dictionary<'static> {
    let src = ictx.metadata();
    let mut dict = Dictionary::new();
    for key in TAG_KEYS {
        if let Some(value) = src.get(key) {
            let value = value.trim();
            if !value.is_empty() {
                dict.set(key, value);
            }
        }
    }
    if dict.get("title").is_none()
        && let Some(title) = fallback_title.map(str::trim).filter(|t| !t.is_empty())
    {
        dict.set("title", title);
    }
    dict
}

/// Creates the MP3 muxer writing into `path` (custom I/O on a `File` we own).
fn open_output(
    path: &Path,
    guard: &mut OutputGuard<'_>,
) -> Result<format::context::Output, TranscodeError> {
    let file = File::create(path).map_err(|source| TranscodeError::Io {
        action: "creating the output file",
        source,
    })?;
    guard.created = true;
    let io = StreamIo::from_write_seek_with_capacity(file, 64 * 1024)
        .map_err(internal("allocating the output I/O context"))?;
    let mut octx = format::output_to_stream(io, None, Some("mp3"))
        .map_err(internal("creating the MP3 muxer"))?;
    // Bit-exact muxing: no "encoder=Lavf..." (TSSE) noise in the ID3 tag.
    unsafe {
        (*octx.as_mut_ptr()).flags |= ffi::AVFMT_FLAG_BITEXACT as c_int;
    }
    Ok(octx)
}

/// Everything known about the chosen audio stream.
struct Source {
    index: usize,
    time_base: Rational,
    parameters: codec::Parameters,
    codec_id: Id,
}

fn run(
    input: &Path,
    file_size: u64,
    output: &Path,
    options: &TranscodeOptions,
    progress: &mut dyn FnMut(f64),
    guard: &mut OutputGuard<'_>,
) -> Result<TranscodeReport, TranscodeError> {
    let mut ictx = open_input(input)?;

    let (source, stream_duration_s, stream_start_s) = {
        let stream = ictx
            .streams()
            .best(media::Type::Audio)
            .ok_or(TranscodeError::NoAudioStream)?;
        let tb = stream.time_base();
        let start = stream.start_time();
        let start_s = if start == ffi::AV_NOPTS_VALUE || tb.denominator() <= 0 {
            0.0
        } else {
            start as f64 * f64::from(tb.numerator()) / f64::from(tb.denominator())
        };
        let parameters = stream.parameters();
        (
            Source {
                index: stream.index(),
                time_base: tb,
                codec_id: parameters.id(),
                parameters,
            },
            ts_seconds(stream.duration(), tb),
            start_s,
        )
    };
    let container_duration_s = ts_seconds(ictx.duration(), Rational::new(1, ffi::AV_TIME_BASE));
    let declared_s = stream_duration_s.or(container_duration_s);
    tracing::debug!(
        format = ictx.format().name(),
        stream = source.index,
        codec = ?source.codec_id,
        declared_s,
        "input opened"
    );

    if let (Some(limit), Some(d)) = (options.max_duration_s, declared_s)
        && d > limit
    {
        return Err(TranscodeError::TooLong {
            duration_s: d,
            limit_s: limit,
        });
    }

    // Only the audio stream is demuxed: the others are skipped by the demuxer.
    for i in 0..ictx.nb_streams() as usize {
        if i != source.index
            && let Some(mut s) = ictx.stream_mut(i)
        {
            unsafe {
                (*s.as_mut_ptr()).discard = ffi::AVDiscard::AVDISCARD_ALL;
            }
        }
    }

    let metadata = output_metadata(&ictx, options.fallback_title.as_deref());
    let mut progress = Progress {
        callback: progress,
        last: None,
        start_s: if stream_duration_s.is_some() {
            stream_start_s
        } else {
            ts_seconds(
                unsafe { (*ictx.as_ptr()).start_time },
                Rational::new(1, ffi::AV_TIME_BASE),
            )
            .unwrap_or(0.0)
        },
        duration_s: declared_s,
        time_base: source.time_base,
        file_size,
    };

    let mut damage = Damage {
        file_size,
        ..Damage::default()
    };
    // Copy only when nothing was asked for: an explicit bit rate or quality
    // must show in the output, whatever the source codec.
    let result = if source.codec_id == Id::MP3 && options.encoding.is_none() {
        stream_copy(
            &mut ictx,
            &source,
            output,
            guard,
            metadata,
            options,
            &mut progress,
            &mut damage,
        )?
    } else {
        reencode(
            &mut ictx,
            &source,
            output,
            guard,
            metadata,
            options,
            &mut progress,
            &mut damage,
        )?
    };
    drop(ictx);

    let size_bytes = std::fs::metadata(output)
        .map_err(|source| TranscodeError::Io {
            action: "reading back the output file",
            source,
        })?
        .len();
    let duration_s = if result.sample_rate_hz > 0 {
        result.samples as f64 / f64::from(result.sample_rate_hz)
    } else {
        0.0
    };
    let bitrate_kbps = if duration_s > 0.0 {
        (size_bytes as f64 * 8.0 / duration_s / 1000.0).round() as u32
    } else {
        0
    };
    if damage.read_errors > 0 || damage.decode_errors > 0 {
        tracing::warn!(
            read_errors = damage.read_errors,
            decode_errors = damage.decode_errors,
            "input is damaged: converted what could be read"
        );
    }
    progress.done();
    Ok(TranscodeReport {
        duration_s,
        sample_rate_hz: result.sample_rate_hz,
        channels: result.channels,
        bitrate_kbps,
        size_bytes,
        stream_copied: result.stream_copied,
        partial: damage.read_errors > 0 || damage.decode_errors > 0,
        read_errors: damage.read_errors,
    })
}

/// What a conversion path wrote.
struct Written {
    samples: u64,
    sample_rate_hz: u32,
    channels: u16,
    stream_copied: bool,
}

fn too_long(samples: u64, rate: u32, options: &TranscodeOptions) -> Result<(), TranscodeError> {
    if let Some(limit) = options.max_duration_s
        && rate > 0
    {
        let d = samples as f64 / f64::from(rate);
        if d > limit {
            return Err(TranscodeError::TooLong {
                duration_s: d,
                limit_s: limit,
            });
        }
    }
    Ok(())
}

/// Samples in one MPEG audio layer III frame at `rate`.
fn mp3_frame_samples(rate: u32) -> u64 {
    if rate >= 32000 { 1152 } else { 576 }
}

/// Copies MP3 packets unchanged into the MP3 muxer.
#[allow(clippy::too_many_arguments)]
fn stream_copy(
    ictx: &mut format::context::Input,
    source: &Source,
    output: &Path,
    guard: &mut OutputGuard<'_>,
    metadata: Dictionary<'static>,
    options: &TranscodeOptions,
    progress: &mut Progress<'_>,
    damage: &mut Damage,
) -> Result<Written, TranscodeError> {
    let (rate, channels) = unsafe {
        let p = source.parameters.as_ptr();
        ((*p).sample_rate, (*p).ch_layout.nb_channels)
    };
    if rate <= 0 || channels <= 0 {
        return Err(TranscodeError::InvalidData {
            detail: "MP3 stream without sample rate or channels".into(),
        });
    }
    let rate = rate as u32;
    let channels = channels.min(2) as u16;
    let out_tb = Rational::new(1, rate as i32);

    let mut octx = open_output(output, guard)?;
    {
        let mut ost = octx
            .add_stream(ffmpeg::encoder::find(Id::None))
            .map_err(internal("adding the output stream"))?;
        ost.set_parameters(source.parameters.clone());
        unsafe {
            (*(*ost.as_mut_ptr()).codecpar).codec_tag = 0;
        }
        ost.set_time_base(out_tb);
    }
    octx.set_metadata(metadata);
    octx.write_header()
        .map_err(write_error("writing the MP3 header"))?;
    let ost_tb = octx.stream(0).map(|s| s.time_base()).unwrap_or(out_tb);

    let mut samples: u64 = 0;
    while let Some(mut packet) = next_audio_packet(ictx, source.index, damage) {
        progress.on_packet(&packet);
        if packet.size() == 0 {
            continue;
        }
        let duration = packet.duration();
        let n = if duration > 0 && source.time_base.denominator() > 0 {
            duration.rescale(source.time_base, out_tb).max(1) as u64
        } else {
            mp3_frame_samples(rate)
        };
        let pts = (samples as i64).rescale(out_tb, ost_tb);
        packet.set_stream(0);
        packet.set_pts(Some(pts));
        packet.set_dts(Some(pts));
        packet.set_duration((n as i64).rescale(out_tb, ost_tb));
        packet.set_position(-1);
        packet
            .write_interleaved(&mut octx)
            .map_err(write_error("writing the MP3"))?;
        samples += n;
        too_long(samples, rate, options)?;
    }
    if samples == 0 {
        return Err(no_audio_decoded(damage));
    }
    octx.write_trailer()
        .map_err(write_error("finishing the MP3"))?;
    drop(octx);
    Ok(Written {
        samples,
        sample_rate_hz: rate,
        channels,
        stream_copied: true,
    })
}

use ffmpeg::Rescale;

fn no_audio_decoded(damage: &Damage) -> TranscodeError {
    TranscodeError::InvalidData {
        detail: if damage.read_errors > 0 || damage.decode_errors > 0 {
            format!(
                "no audio could be decoded ({} read errors, {} decode errors)",
                damage.read_errors, damage.decode_errors
            )
        } else {
            "the audio track holds no audio".into()
        },
    }
}

/// Decode → resample → fixed-size frames → libmp3lame → MP3 muxer.
#[allow(clippy::too_many_arguments)]
fn reencode(
    ictx: &mut format::context::Input,
    source: &Source,
    output: &Path,
    guard: &mut OutputGuard<'_>,
    metadata: Dictionary<'static>,
    options: &TranscodeOptions,
    progress: &mut Progress<'_>,
    damage: &mut Damage,
) -> Result<Written, TranscodeError> {
    let codec_name = format!("{:?}", source.codec_id).to_lowercase();
    let decoder_codec =
        ffmpeg::decoder::find(source.codec_id).ok_or_else(|| TranscodeError::UnsupportedCodec {
            codec: codec_name.clone(),
        })?;
    let mut ctx = codec::context::Context::from_parameters(source.parameters.clone())
        .map_err(internal("setting up the decoder"))?;
    unsafe {
        // A layout FFmpeg cannot name (Matroska PCM stores only the count):
        // give the decoder the default layout for the channel count.
        let p = ctx.as_mut_ptr();
        let n = (*p).ch_layout.nb_channels;
        if n > 0 && (*p).ch_layout.order != ffi::AVChannelOrder::AV_CHANNEL_ORDER_NATIVE {
            let mut layout = std::mem::zeroed::<ffi::AVChannelLayout>();
            ffi::av_channel_layout_default(&mut layout, n);
            ffi::av_channel_layout_uninit(&mut (*p).ch_layout);
            (*p).ch_layout = layout;
            #[allow(deprecated)]
            {
                (*p).channel_layout =
                    if layout.order == ffi::AVChannelOrder::AV_CHANNEL_ORDER_NATIVE {
                        layout.u.mask
                    } else {
                        0
                    };
                (*p).channels = n;
            }
        }
        (*p).pkt_timebase = source.time_base.into();
    }
    let mut decoder = ctx
        .decoder()
        .open_as(decoder_codec)
        .and_then(|d| d.audio())
        .map_err(|e| match e {
            // The codec is known but its setup data (extradata) is garbage.
            ffmpeg::Error::InvalidData => TranscodeError::InvalidData {
                detail: format!("the {codec_name} audio track's setup data is damaged"),
            },
            e => TranscodeError::UnsupportedCodec {
                codec: format!("{codec_name}: {e}"),
            },
        })?;

    let mut pipeline: Option<Pipeline> = None;
    let mut frame = frame::Audio::empty();
    let mut sink = Sink {
        output,
        guard,
        metadata: &metadata,
        options,
    };
    while let Some(packet) = next_audio_packet(ictx, source.index, damage) {
        progress.on_packet(&packet);
        if let Err(e) = decoder.send_packet(&packet) {
            damage.decode_errors += 1;
            if damage.decode_errors <= 3 {
                tracing::warn!(error = %e, "audio packet could not be decoded");
            }
        }
        drain(&mut decoder, &mut frame, &mut pipeline, damage, &mut sink)?;
    }
    if decoder.send_eof().is_ok() {
        drain(&mut decoder, &mut frame, &mut pipeline, damage, &mut sink)?;
    }
    let mut pipeline = pipeline.ok_or_else(|| no_audio_decoded(damage))?;
    pipeline.finish()?;
    too_long(pipeline.samples_out, pipeline.rate, options)?;
    Ok(Written {
        samples: pipeline.samples_out,
        sample_rate_hz: pipeline.rate,
        channels: pipeline.channels as u16,
        stream_copied: false,
    })
}

/// Where decoded frames go: what [`Pipeline::new`] needs on the first frame.
struct Sink<'a, 'g> {
    output: &'a Path,
    guard: &'a mut OutputGuard<'g>,
    metadata: &'a Dictionary<'static>,
    options: &'a TranscodeOptions,
}

/// Receives every frame the decoder has ready and pushes it down the pipeline
/// (created on the first valid frame).
fn drain(
    decoder: &mut ffmpeg::decoder::Audio,
    frame: &mut frame::Audio,
    pipeline: &mut Option<Pipeline>,
    damage: &mut Damage,
    sink: &mut Sink<'_, '_>,
) -> Result<(), TranscodeError> {
    loop {
        match decoder.receive_frame(frame) {
            Ok(()) => {
                if !InputKey::of(frame).is_valid() || frame.samples() == 0 {
                    damage.decode_errors += 1;
                    continue;
                }
                let p = match pipeline {
                    Some(p) => p,
                    None => pipeline.insert(Pipeline::new(
                        frame,
                        sink.output,
                        sink.guard,
                        sink.metadata,
                        sink.options,
                    )?),
                };
                p.push(frame)?;
                too_long(p.samples_in(), p.rate, sink.options)?;
            }
            Err(ffmpeg::Error::Eof) => return Ok(()),
            Err(e) if is_eagain(&e) => return Ok(()),
            Err(e) => {
                damage.decode_errors += 1;
                tracing::debug!(error = %e, "audio decode error");
                return Ok(());
            }
        }
    }
}

/// The parameters of decoded frames the resampler was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InputKey {
    format: c_int,
    channels: c_int,
    /// Native channel mask, or 0 when the layout is not a native one.
    mask: u64,
    rate: c_int,
}

impl InputKey {
    fn of(frame: &frame::Audio) -> Self {
        unsafe {
            let f = frame.as_ptr();
            let l = &(*f).ch_layout;
            let mask = if l.order == ffi::AVChannelOrder::AV_CHANNEL_ORDER_NATIVE {
                l.u.mask
            } else {
                0
            };
            InputKey {
                format: (*f).format,
                channels: l.nb_channels,
                mask,
                rate: (*f).sample_rate,
            }
        }
    }

    fn is_valid(&self) -> bool {
        self.format >= 0
            && self.format < ffi::AVSampleFormat::AV_SAMPLE_FMT_NB as c_int
            && self.channels > 0
            && self.channels <= 64
            && self.rate > 0
    }

    /// Input channel mask for swresample: the frame's own if it names its
    /// channels, else the default layout for the count.
    fn layout_mask(&self) -> u64 {
        if self.mask != 0 && self.mask.count_ones() as c_int == self.channels {
            return self.mask;
        }
        let default = ChannelLayout::default(self.channels).bits();
        if default != 0 && default.count_ones() as c_int == self.channels {
            default
        } else if self.channels < 64 {
            (1u64 << self.channels) - 1
        } else {
            u64::MAX
        }
    }
}

/// swresample context converting decoded frames to planar float at the
/// output rate and layout, writing into a [`Fifo`].
struct Resampler {
    ptr: *mut ffi::SwrContext,
    key: InputKey,
    scratch: Vec<Vec<f32>>,
}

impl Drop for Resampler {
    fn drop(&mut self) {
        unsafe { ffi::swr_free(&mut self.ptr) }
    }
}

impl Resampler {
    fn new(
        key: InputKey,
        out_mask: u64,
        out_channels: usize,
        out_rate: u32,
    ) -> Result<Self, TranscodeError> {
        let in_format: ffi::AVSampleFormat = unsafe { std::mem::transmute(key.format) };
        #[allow(deprecated)]
        let ptr = unsafe {
            ffi::swr_alloc_set_opts(
                ptr::null_mut(),
                out_mask as i64,
                ffi::AVSampleFormat::AV_SAMPLE_FMT_FLTP,
                out_rate as c_int,
                key.layout_mask() as i64,
                in_format,
                key.rate,
                0,
                ptr::null_mut(),
            )
        };
        if ptr.is_null() {
            return Err(TranscodeError::Internal(
                "allocating the resampler failed".into(),
            ));
        }
        let mut r = Resampler {
            ptr,
            key,
            scratch: vec![Vec::new(); out_channels],
        };
        let ret = unsafe { ffi::swr_init(r.ptr) };
        if ret < 0 {
            return Err(TranscodeError::UnsupportedCodec {
                codec: format!(
                    "cannot convert audio with {} channels at {} Hz: {}",
                    key.channels,
                    key.rate,
                    ffmpeg::Error::from(ret)
                ),
            });
        }
        r.scratch.shrink_to_fit();
        Ok(r)
    }

    /// Converts `in_samples` samples at `input` (a frame's `extended_data`, or
    /// null to flush) and appends the output to `fifo`. Returns samples added.
    unsafe fn convert_raw(
        &mut self,
        input: *mut *const u8,
        in_samples: c_int,
        fifo: &mut Fifo,
    ) -> Result<usize, TranscodeError> {
        let needed = unsafe { ffi::swr_get_out_samples(self.ptr, in_samples) };
        if needed < 0 {
            return Err(TranscodeError::Internal(format!(
                "resampler: {}",
                ffmpeg::Error::from(needed)
            )));
        }
        let cap = (needed as usize).max(256);
        let mut out: [*mut u8; 2] = [ptr::null_mut(); 2];
        for (i, plane) in self.scratch.iter_mut().enumerate() {
            if plane.len() < cap {
                plane.resize(cap, 0.0);
            }
            out[i] = plane.as_mut_ptr() as *mut u8;
        }
        let ret = unsafe {
            ffi::swr_convert(self.ptr, out.as_mut_ptr(), cap as c_int, input, in_samples)
        };
        if ret < 0 {
            return Err(TranscodeError::Internal(format!(
                "resampler: {}",
                ffmpeg::Error::from(ret)
            )));
        }
        let n = ret as usize;
        for (plane, dst) in self.scratch.iter().zip(fifo.planes.iter_mut()) {
            dst.extend_from_slice(&plane[..n]);
        }
        Ok(n)
    }

    fn convert(&mut self, frame: &frame::Audio, fifo: &mut Fifo) -> Result<usize, TranscodeError> {
        let samples = c_int::try_from(frame.samples())
            .map_err(|_| TranscodeError::Internal("oversized audio frame".into()))?;
        unsafe {
            let data = (*frame.as_ptr()).extended_data as *mut *const u8;
            if data.is_null() {
                return Ok(0);
            }
            self.convert_raw(data, samples, fifo)
        }
    }

    fn flush(&mut self, fifo: &mut Fifo) -> Result<usize, TranscodeError> {
        let mut total = 0;
        // Bounded: the resampler holds at most its filter length of delay.
        for _ in 0..1024 {
            let n = unsafe { self.convert_raw(ptr::null_mut(), 0, fifo)? };
            if n == 0 {
                break;
            }
            total += n;
        }
        Ok(total)
    }
}

/// Planar float samples waiting for a full encoder frame.
struct Fifo {
    planes: Vec<Vec<f32>>,
}

impl Fifo {
    fn len(&self) -> usize {
        self.planes.first().map_or(0, Vec::len)
    }
}

/// Resampler + FIFO + encoder + muxer, created on the first decoded frame.
struct Pipeline {
    resampler: Resampler,
    fifo: Fifo,
    encoder: ffmpeg::encoder::Audio,
    octx: format::context::Output,
    out_mask: u64,
    channels: usize,
    rate: u32,
    frame_size: usize,
    enc_tb: Rational,
    ost_tb: Rational,
    /// Samples sent to the encoder so far.
    samples_out: u64,
    /// Samples produced by the resampler so far.
    samples_resampled: u64,
}

impl Pipeline {
    fn new(
        first: &frame::Audio,
        output: &Path,
        guard: &mut OutputGuard<'_>,
        metadata: &Dictionary<'static>,
        options: &TranscodeOptions,
    ) -> Result<Self, TranscodeError> {
        let key = InputKey::of(first);
        let rate = mp3_rate(key.rate as u32);
        let channels: usize = if key.channels >= 2 { 2 } else { 1 };
        let layout = if channels == 2 {
            ChannelLayout::STEREO
        } else {
            ChannelLayout::MONO
        };
        let out_mask = layout.bits();

        let codec = find_mp3_encoder()
            .ok_or_else(|| TranscodeError::Internal("no libmp3lame encoder".into()))?;
        let mut enc = codec::context::Context::new_with_codec(codec)
            .encoder()
            .audio()
            .map_err(internal("setting up the encoder"))?;
        enc.set_rate(rate as i32);
        enc.set_format(Sample::F32(sample::Type::Planar));
        enc.set_channel_layout(layout);
        #[allow(deprecated)]
        enc.set_channels(channels as i32);
        let enc_tb = Rational::new(1, rate as i32);
        enc.set_time_base(enc_tb);
        match options.encoding.unwrap_or_default() {
            Encoding::Vbr { quality } => {
                enc.set_flags(codec::Flags::QSCALE);
                enc.set_quality((u32::from(quality.min(9)) * QP2LAMBDA) as usize);
            }
            Encoding::Cbr { bitrate_kbps } => {
                enc.set_bit_rate(bitrate_kbps.clamp(64, 320) as usize * 1000);
            }
        }
        let encoder = enc
            .open_as(codec)
            .map_err(internal("opening the MP3 encoder"))?;
        let frame_size = match encoder.frame_size() {
            0 => mp3_frame_samples(rate) as usize,
            n => n as usize,
        };

        let mut octx = open_output(output, guard)?;
        {
            let mut ost = octx
                .add_stream(codec)
                .map_err(internal("adding the output stream"))?;
            ost.set_parameters(&encoder);
            ost.set_time_base(enc_tb);
        }
        octx.set_metadata(metadata.clone());
        octx.write_header()
            .map_err(write_error("writing the MP3 header"))?;
        let ost_tb = octx.stream(0).map(|s| s.time_base()).unwrap_or(enc_tb);

        let resampler = Resampler::new(key, out_mask, channels, rate)?;
        tracing::debug!(
            in_rate = key.rate,
            in_channels = key.channels,
            rate,
            channels,
            frame_size,
            "encoder opened"
        );
        Ok(Pipeline {
            resampler,
            fifo: Fifo {
                planes: vec![Vec::with_capacity(frame_size * 4); channels],
            },
            encoder,
            octx,
            out_mask,
            channels,
            rate,
            frame_size,
            enc_tb,
            ost_tb,
            samples_out: 0,
            samples_resampled: 0,
        })
    }

    /// Samples converted so far (sent to the encoder or waiting for it).
    fn samples_in(&self) -> u64 {
        self.samples_resampled
    }

    /// Converts one decoded frame and encodes every full frame available.
    fn push(&mut self, frame: &frame::Audio) -> Result<(), TranscodeError> {
        let key = InputKey::of(frame);
        if key != self.resampler.key {
            tracing::debug!(?key, old = ?self.resampler.key, "audio parameters changed: new resampler");
            let n = self.resampler.flush(&mut self.fifo)?;
            self.samples_resampled += n as u64;
            self.resampler = Resampler::new(key, self.out_mask, self.channels, self.rate)?;
        }
        let n = self.resampler.convert(frame, &mut self.fifo)?;
        self.samples_resampled += n as u64;
        self.encode_available(false)
    }

    /// Encodes full frames from the FIFO (and the last partial one if `last`).
    fn encode_available(&mut self, last: bool) -> Result<(), TranscodeError> {
        while self.fifo.len() >= self.frame_size || (last && self.fifo.len() > 0) {
            let n = self.fifo.len().min(self.frame_size);
            let layout = if self.channels == 2 {
                ChannelLayout::STEREO
            } else {
                ChannelLayout::MONO
            };
            let mut out = frame::Audio::new(Sample::F32(sample::Type::Planar), n, layout);
            if out.planes() != self.channels {
                return Err(TranscodeError::Internal(
                    "allocating an audio frame failed".into(),
                ));
            }
            out.set_rate(self.rate);
            for (c, plane) in self.fifo.planes.iter_mut().enumerate() {
                out.plane_mut::<f32>(c)[..n].copy_from_slice(&plane[..n]);
                plane.drain(..n);
            }
            out.set_pts(Some(self.samples_out as i64));
            self.samples_out += n as u64;
            self.encoder
                .send_frame(&out)
                .map_err(internal("encoding MP3"))?;
            self.write_packets()?;
        }
        Ok(())
    }

    fn write_packets(&mut self) -> Result<(), TranscodeError> {
        let mut packet = Packet::empty();
        loop {
            match self.encoder.receive_packet(&mut packet) {
                Ok(()) => {
                    packet.set_stream(0);
                    packet.rescale_ts(self.enc_tb, self.ost_tb);
                    packet
                        .write_interleaved(&mut self.octx)
                        .map_err(write_error("writing the MP3"))?;
                }
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(e) if is_eagain(&e) => return Ok(()),
                Err(e) => return Err(internal("encoding MP3")(e)),
            }
        }
    }

    /// Flushes resampler, FIFO and encoder and finishes the file.
    fn finish(&mut self) -> Result<(), TranscodeError> {
        let n = self.resampler.flush(&mut self.fifo)?;
        self.samples_resampled += n as u64;
        self.encode_available(true)?;
        self.encoder
            .send_eof()
            .map_err(internal("flushing the MP3 encoder"))?;
        self.write_packets()?;
        self.octx
            .write_trailer()
            .map_err(write_error("finishing the MP3"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mp3_rates() {
        assert_eq!(mp3_rate(96000), 48000);
        assert_eq!(mp3_rate(48000), 48000);
        assert_eq!(mp3_rate(44100), 44100);
        assert_eq!(mp3_rate(22050), 22050);
        assert_eq!(mp3_rate(8000), 8000);
        assert_eq!(mp3_rate(4000), 8000);
        assert_eq!(mp3_rate(88200), 48000);
        assert_eq!(mp3_rate(37800), 32000);
        assert_eq!(mp3_rate(64000), 48000);
    }

    #[test]
    fn codes_are_stable() {
        assert_eq!(TranscodeError::EmptyFile.code(), "empty_file");
        assert_eq!(TranscodeError::NoAudioStream.code(), "no_audio_stream");
        assert_eq!(
            TranscodeError::NoAudioStream.to_string(),
            "the file has no audio track"
        );
        assert_eq!(Encoding::default(), Encoding::Vbr { quality: 2 });
    }

    #[test]
    fn empty_file_is_refused_before_ffmpeg() {
        let dir = std::env::temp_dir().join(format!("vidmp3-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("empty.mp4");
        std::fs::write(&input, b"").unwrap();
        let out = dir.join("out.mp3");
        let err = transcode(&input, &out, &TranscodeOptions::default(), &mut |_| {}).unwrap_err();
        assert_eq!(err.code(), "empty_file");
        assert!(!out.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
