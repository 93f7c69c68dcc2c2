//! The two emails: "your MP3 is ready" and "we could not convert", each plain text with an HTML alternative.
//!
//! Everything that came from an upload (file names) is stripped of control characters before it reaches a
//! header, and HTML-escaped before it reaches markup, so it cannot inject headers or tags.

use lettre::Message;
use lettre::message::{Mailbox, MultiPart};

/// What the email is about.
pub enum Outcome<'a> {
    /// The MP3 is stored.
    Converted {
        /// Decoded length in seconds.
        duration_s: f64,
        /// Bytes.
        size_bytes: u64,
        /// Where to download it with a token (`GET`, the API).
        download_url: &'a str,
        /// The web page, opened on this job (`{PUBLIC_BASE_URL}/#job={id}`): a person logs in there and
        /// downloads with one click, since a plain link cannot carry a token.
        page_url: &'a str,
        /// The source was damaged or cut short: only the readable part was converted.
        partial: bool,
    },
    /// The conversion failed for good.
    Failed {
        /// Stable reason code.
        reason: &'a str,
        /// The converter's message.
        message: &'a str,
    },
}

/// Builds the email to `to` about `filename`.
///
/// # Errors
/// lettre refuses the message (not expected: addresses are parsed by the caller).
pub fn build(
    from: &Mailbox,
    to: Mailbox,
    filename: &str,
    job_id: &str,
    outcome: &Outcome<'_>,
) -> Result<Message, lettre::error::Error> {
    let name = header_safe(filename);
    let (subject, text, html) = match outcome {
        Outcome::Converted {
            duration_s,
            size_bytes,
            download_url,
            page_url,
            partial,
        } => {
            let duration = format_duration(*duration_s);
            let size = vidmp3_runtime::units::human_bytes(*size_bytes);
            let damaged = if *partial { PARTIAL_NOTE } else { "" };
            (
                format!("Your MP3 is ready: {name}"),
                format!(
                    "Hello,\n\nthe audio of \"{name}\" is ready as an MP3 ({duration}, {size}).{damaged}\n\nDownload it in your browser (log in first): {page_url}\nor with the API and your token: {download_url}\n\nJob {job_id}.\n"
                ),
                format!(
                    "<!doctype html><html><body style=\"font-family:sans-serif\"><p>Hello,</p><p>the audio of <strong>{}</strong> is ready as an MP3 ({duration}, {size}).{damaged}</p><p><a href=\"{}\">Download the MP3</a> (log in first).</p><p style=\"color:#666\">API: {} (with your token). Job {}</p></body></html>",
                    html_escape(&name),
                    html_escape(page_url),
                    html_escape(download_url),
                    html_escape(job_id)
                ),
            )
        }
        Outcome::Failed { reason, message } => {
            let advice = advice(reason);
            (
                format!("We could not convert {name}"),
                format!(
                    "Hello,\n\nwe could not turn \"{name}\" into an MP3: {message}.\n\n{advice}\n\nJob {job_id} (reason: {reason}).\n"
                ),
                format!(
                    "<!doctype html><html><body style=\"font-family:sans-serif\"><p>Hello,</p><p>we could not turn <strong>{}</strong> into an MP3: {}.</p><p>{}</p><p style=\"color:#666\">Job {} (reason: {})</p></body></html>",
                    html_escape(&name),
                    html_escape(message),
                    html_escape(advice),
                    html_escape(job_id),
                    html_escape(reason)
                ),
            )
        }
    };
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(subject)
        .multipart(MultiPart::alternative_plain_html(text, html))
}

/// Said when only part of a damaged source could be converted.
const PARTIAL_NOTE: &str =
    " The video was damaged or cut short: the MP3 holds the part that could be read.";

/// What the user can do about a failure, by reason code.
pub fn advice(reason: &str) -> &'static str {
    match reason {
        "no_audio_stream" => "The file has no sound track. Upload a video that has sound.",
        "empty_file" => "The file was empty. Upload it again.",
        "invalid_data" => {
            "The file is not a video we can read, or it is cut short. Check that it plays, then upload it again."
        }
        "unsupported_codec" => {
            "Its audio is in a format we cannot decode. Convert it to MP4 (H.264/AAC) and upload that."
        }
        "too_long" => {
            "It is longer than we convert. Cut it into shorter parts and upload them one by one."
        }
        _ => {
            "Something went wrong on our side. Try again later; if it keeps failing, tell us the job id."
        }
    }
}

fn header_safe(raw: &str) -> String {
    raw.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// Escapes `& < > " '` for HTML text and attribute values.
pub fn html_escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn format_duration(seconds: f64) -> String {
    let total = seconds.round() as u64;
    format!("{}:{:02}", total / 60, total % 60)
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn names_cannot_inject_headers_or_markup() {
        let from: Mailbox = "vidmp3 <no-reply@example.com>".parse().unwrap();
        let to: Mailbox = "user@example.com".parse().unwrap();
        let evil = "x\r\nBcc: victim@example.com\r\n<script>alert(1)</script>.mp4";
        let outcome = Outcome::Converted {
            duration_s: 61.0,
            size_bytes: 2_000_000,
            download_url: "http://h/jobs/1/mp3",
            page_url: "http://h/#job=1",
            partial: true,
        };
        let raw =
            String::from_utf8(build(&from, to, evil, "j1", &outcome).unwrap().formatted()).unwrap();
        // Undo quoted-printable soft line breaks and `=3D` to read the HTML part.
        let flat = raw
            .replace("=\r\n", "")
            .replace("=\n", "")
            .replace("=3D", "=");
        assert!(
            !raw.lines()
                .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
            "{raw}"
        );
        assert!(
            flat.contains(
                "<strong>xBcc: victim@example.com&lt;script&gt;alert(1)&lt;/script&gt;.mp4</strong>"
            ),
            "{raw}"
        );
        assert!(flat.contains("1:01"));
        assert!(
            flat.contains("damaged or cut short"),
            "a partial conversion says so"
        );
    }
}
