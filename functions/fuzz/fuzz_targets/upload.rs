//! The pure parts of the gateway's `POST /upload`, in the order the handler runs them, minus GridFS: the
//! query (`UploadQuery`), the Content-Type branch, the multipart form (axum's `Multipart`, field names,
//! option parts via `apply_form_option`, file names via `clean_filename`), the range checks
//! (`OutputOptions::validate`) and the content sniffing of the file's first bytes (`sniff`).
//! Input: line 1 the query string, line 2 the Content-Type, then the body.
#![no_main]

use std::sync::OnceLock;

use axum::extract::{FromRequest, Multipart, Query};
use futures::StreamExt;
use gateway::sniff::{SNIFF_BYTES, Verdict, sniff};
use gateway::upload::{UploadQuery, apply_form_option, clean_filename};
use libfuzzer_sys::fuzz_target;
use vidmp3_runtime::events::OutputOptions;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    })
}

fn line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    }
}

fn check_filename(raw: Option<&str>) {
    let name = clean_filename(raw);
    assert!(!name.is_empty());
    assert!(name.chars().count() <= 255, "{name:?}");
    assert!(!name.contains(['/', '\\']), "{name:?}");
    assert!(!name.chars().any(char::is_control), "{name:?}");
    assert!(name != "." && name != "..");
}

fn check_head(head: &[u8]) {
    let verdict = sniff(&head[..head.len().min(SNIFF_BYTES)]);
    if let Verdict::NotMedia(what) = verdict {
        assert!(!what.is_empty());
    }
}

async fn multipart(content_type: &str, body: Vec<u8>, mut output: OutputOptions) {
    let request = http::Request::builder()
        .method("POST")
        .uri("/upload")
        .header(http::header::CONTENT_TYPE, content_type)
        .body(axum::body::Body::from(body))
        .unwrap();
    let Ok(mut form) = Multipart::from_request(request, &()).await else {
        return;
    };
    let mut files = 0;
    while let Ok(Some(field)) = form.next_field().await {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "file" => {
                files += 1;
                check_filename(field.file_name());
                drop(field.content_type().map(str::to_owned));
                let mut head = Vec::new();
                let mut stream = field;
                while let Some(Ok(chunk)) = stream.next().await {
                    if head.len() < SNIFF_BYTES {
                        head.extend_from_slice(&chunk[..chunk.len().min(SNIFF_BYTES - head.len())]);
                    }
                }
                check_head(&head);
            }
            "bitrate_kbps" | "vbr_quality" if files == 0 => {
                let Ok(text) = field.text().await else { return };
                if apply_form_option(&mut output, &name, &text).is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
    drop(output.validate());
}

fuzz_target!(|data: &[u8]| {
    let (query, rest) = line(data);
    let (content_type, body) = line(rest);
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let Ok(uri) = format!("/upload?{query}").parse::<http::Uri>() else {
        return;
    };
    let query: UploadQuery = match Query::try_from_uri(&uri) {
        Ok(Query(q)) => q,
        Err(_) => return,
    };
    let output = OutputOptions {
        bitrate_kbps: query.bitrate_kbps,
        vbr_quality: query.vbr_quality,
    };
    let content_type = String::from_utf8_lossy(content_type).to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        if http::HeaderValue::from_str(&content_type).is_err() {
            return;
        }
        runtime().block_on(multipart(&content_type, body.to_vec(), output));
    } else {
        check_filename(query.filename.as_deref());
        check_head(body);
        drop(output.validate());
    }
});
