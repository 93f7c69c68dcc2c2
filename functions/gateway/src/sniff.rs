//! Refusing uploads that are plainly not audio or video, from their first bytes, before anything is stored.
//!
//! This is a coarse filter against mistakes (a PDF picked instead of a video), not a format detector: any
//! binary content that is not a known non-media format passes, and the converter decides for good.

/// How many leading bytes [`sniff`] wants (it works with fewer).
pub const SNIFF_BYTES: usize = 512;

/// What the first bytes say.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Possibly media: store it and let the converter decide.
    Plausible,
    /// Plainly not media; the string names what it looks like ("text", "a PNG image"…).
    NotMedia(&'static str),
}

/// Classifies the first bytes of an upload.
pub fn sniff(head: &[u8]) -> Verdict {
    const SIGNATURES: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"GIF87a", "a GIF image"),
        (b"GIF89a", "a GIF image"),
        (b"%PDF-", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive"),
        (b"\x1f\x8b", "a gzip archive"),
        (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
        (b"Rar!\x1a\x07", "a RAR archive"),
        (b"BZh", "a bzip2 archive"),
        (b"\xfd7zXZ\x00", "an xz archive"),
        (b"\x28\xb5\x2f\xfd", "a zstd archive"),
        (b"\x7fELF", "an executable"),
        (b"MZ", "an executable"),
    ];
    if let Some((_, what)) = SIGNATURES.iter().find(|(magic, _)| head.starts_with(magic)) {
        return Verdict::NotMedia(what);
    }
    if head.len() >= 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return Verdict::NotMedia("a WebP image");
    }
    if looks_like_text(head) {
        return Verdict::NotMedia("text");
    }
    Verdict::Plausible
}

fn looks_like_text(head: &[u8]) -> bool {
    if head.len() < 4 {
        return false;
    }
    // A multi-byte character may be cut at the end of the sample: ignore an incomplete tail.
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        Err(e) if e.error_len().is_none() => match std::str::from_utf8(&head[..e.valid_up_to()]) {
            Ok(t) => t,
            Err(_) => return false,
        },
        Err(_) => return false,
    };
    !text.is_empty()
        && text
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t' | '\x0c'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_containers_pass() {
        assert_eq!(
            sniff(b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00"),
            Verdict::Plausible
        );
        assert_eq!(
            sniff(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81"),
            Verdict::Plausible
        );
        assert_eq!(sniff(b"RIFF\x00\x00\x00\x00AVI LIST"), Verdict::Plausible);
        assert_eq!(sniff(b"FLV\x01\x05\x00\x00\x00\x09"), Verdict::Plausible);
        assert_eq!(sniff(b"ID3\x04\x00\x00\x00\x00"), Verdict::Plausible);
    }

    #[test]
    fn text_images_and_archives_are_refused() {
        assert_eq!(
            sniff(b"hello, this is plain text\n"),
            Verdict::NotMedia("text")
        );
        assert_eq!(
            sniff("caf\u{e9} \u{2013} text".as_bytes()),
            Verdict::NotMedia("text")
        );
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\n\x00\x00"),
            Verdict::NotMedia("a PNG image")
        );
        assert_eq!(
            sniff(b"PK\x03\x04\x14\x00"),
            Verdict::NotMedia("a ZIP archive")
        );
        assert_eq!(sniff(b"%PDF-1.7\n"), Verdict::NotMedia("a PDF document"));
    }
}
