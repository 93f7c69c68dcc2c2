//! `GET /jobs/{id}/mp3` and `GET /download?fid=<mp3 id>`: the MP3 streamed from GridFS bucket `mp3s`, to
//! its owner (or an admin) only.
//!
//! Headers: `Content-Type: audio/mpeg`, `Content-Length`, `Content-Disposition: attachment` with the upload's
//! name as `.mp3` (RFC 6266 §4.3, `filename*` per RFC 8187 for non-ASCII), `ETag` (the file id: GridFS files
//! never change), `Accept-Ranges: bytes`. A single `Range: bytes=…` (RFC 9110 §14) answers 206 with
//! `Content-Range`; an unsatisfiable one 416; `If-None-Match` with the ETag 304.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use mongodb::bson::{Bson, doc, oid::ObjectId};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tokio_util::io::ReaderStream;
use vidmp3_runtime::jobs::{self, Job, JobState};
use vidmp3_runtime::jwt::Authenticated;
use vidmp3_runtime::{Problem, ProblemQuery};

use crate::jobs_api::{load_visible, parse_job_id};
use crate::{AppState, mongo_problem};

/// Read buffer for GridFS downloads: one GridFS chunk (255 KiB); the 4 KiB default was 7× slower.
const READ_BUFFER: usize = 255 * 1024;

/// Downloads a job's MP3 (`GET /jobs/{id}/mp3`), owner only; Range and ETag (RFC 9110 §14, §8.8.3).
#[utoipa::path(get, path = "/jobs/{id}/mp3", tag = "downloads", description = "Streams the job's MP3 to its owner.",
    params(("id" = String, Path, description = "job id (UUID)")),
    responses((status = 200, description = "the MP3 (Content-Disposition attachment, ETag, Accept-Ranges)", content_type = "audio/mpeg", body = Vec<u8>),
        (status = 206, description = "a single byte range (Content-Range)", content_type = "audio/mpeg", body = Vec<u8>),
        (status = 304, description = "If-None-Match matched the ETag"),
        (status = 400, description = "malformed id", body = vidmp3_runtime::Problem, content_type = "application/problem+json"), (status = 404, description = "no such job or file (or not yours), or the job failed", body = vidmp3_runtime::Problem, content_type = "application/problem+json"),
        (status = 409, description = "not converted yet", body = vidmp3_runtime::Problem, content_type = "application/problem+json"), (status = 416, description = "range not satisfiable", body = vidmp3_runtime::Problem, content_type = "application/problem+json"), (status = 401, description = "missing, malformed, expired or foreign token", body = vidmp3_runtime::Problem, content_type = "application/problem+json"), (status = 503, description = "MongoDB did not answer in time", body = vidmp3_runtime::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn job_mp3(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let id = parse_job_id(&id)?;
    let job = load_visible(&state, &claims, &id).await?;
    serve_mp3(&state, &job, &headers).await
}

/// Query of `GET /download`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadQuery {
    /// The MP3's GridFS id (24 hex digits).
    pub fid: String,
}

/// Downloads an MP3 by its file id (`GET /download?fid=`, the id is the job's `mp3.file_id`), owner only.
#[utoipa::path(get, path = "/download", tag = "downloads", description = "Streams an MP3 by its GridFS id (the tutorial's route).",
    params(crate::download::DownloadQuery),
    responses((status = 200, description = "the MP3 (Content-Disposition attachment, ETag, Accept-Ranges)", content_type = "audio/mpeg", body = Vec<u8>),
        (status = 206, description = "a single byte range (Content-Range)", content_type = "audio/mpeg", body = Vec<u8>),
        (status = 304, description = "If-None-Match matched the ETag"),
        (status = 400, description = "malformed id", body = vidmp3_runtime::Problem, content_type = "application/problem+json"), (status = 404, description = "no such job or file (or not yours), or the job failed", body = vidmp3_runtime::Problem, content_type = "application/problem+json"),
        (status = 409, description = "not converted yet", body = vidmp3_runtime::Problem, content_type = "application/problem+json"), (status = 416, description = "range not satisfiable", body = vidmp3_runtime::Problem, content_type = "application/problem+json"), (status = 401, description = "missing, malformed, expired or foreign token", body = vidmp3_runtime::Problem, content_type = "application/problem+json"), (status = 503, description = "MongoDB did not answer in time", body = vidmp3_runtime::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn by_file_id(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    ProblemQuery(query): ProblemQuery<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let fid = ObjectId::parse_str(&query.fid).map_err(|_| {
        Problem::bad_request("invalid_id", format!("{:?} is not a file id", query.fid))
    })?;
    let job = jobs::jobs(&state.db)
        .find_one(doc! {"mp3_id": fid})
        .await
        .map_err(|e| mongo_problem(&e))?;
    let job = job
        .filter(|j| j.owner_id == claims.sub || claims.admin)
        .ok_or_else(|| Problem::not_found("no such file"))?;
    serve_mp3(&state, &job, &headers).await
}

async fn serve_mp3(state: &AppState, job: &Job, headers: &HeaderMap) -> Result<Response, Problem> {
    let mp3_id = match (job.state, job.mp3_id) {
        (JobState::Converted, Some(id)) => id,
        (JobState::Failed, _) => return Err(Problem::not_found("this job failed; it has no MP3")),
        _ => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "not_ready",
                "the MP3 is not ready yet",
            ));
        }
    };
    let file = state
        .mp3s
        .find_one(doc! {"_id": mp3_id})
        .await
        .map_err(|e| mongo_problem(&e))?;
    let Some(file) = file else {
        return Err(Problem::not_found("the MP3 is gone"));
    };
    let total = file.length;
    let etag = format!("\"{}\"", mp3_id.to_hex());
    let base = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "private, max-age=3600");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return base
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .map_err(|_| Problem::internal());
    }
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(raw) => match parse_range(raw, total) {
            Ok(r) => r,
            Err(()) => {
                let p = Problem::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range_not_satisfiable",
                    format!("the file has {total} bytes"),
                );
                let mut response = axum::response::IntoResponse::into_response(p);
                response.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{total}"))
                        .map_err(|_| Problem::internal())?,
                );
                return Ok(response);
            }
        },
    };
    let (start, end) = range.unwrap_or((0, total.saturating_sub(1)));
    let length = if total == 0 { 0 } else { end - start + 1 };
    let download = state
        .mp3s
        .open_download_stream(Bson::ObjectId(mp3_id))
        .await
        .map_err(|e| mongo_problem(&e))?;
    let mut reader = download.compat();
    if start > 0 {
        tokio::io::copy(&mut (&mut reader).take(start), &mut tokio::io::sink())
            .await
            .map_err(|_| Problem::unavailable("the file store broke off the download"))?;
    }
    let body = Body::from_stream(ReaderStream::with_capacity(
        reader.take(length),
        READ_BUFFER,
    ));
    let mut builder = base
        .header(header::CONTENT_TYPE, "audio/mpeg")
        .header(header::CONTENT_LENGTH, length)
        .header(
            header::CONTENT_DISPOSITION,
            content_disposition(&jobs::mp3_filename(&job.filename)),
        );
    builder = if range.is_some() {
        builder.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{end}/{total}"),
        )
    } else {
        builder.status(StatusCode::OK)
    };
    builder.body(body).map_err(|_| Problem::internal())
}

/// Parses one `bytes=` range against `total` bytes: `Ok(None)` to ignore it (several ranges, other units),
/// `Ok(Some((first, last)))` inclusive, `Err(())` when unsatisfiable (RFC 9110 §14.1.2).
fn parse_range(raw: &str, total: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = raw.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (first, last) = spec.split_once('-').ok_or(())?;
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        let suffix: u64 = last.parse().map_err(|_| ())?;
        if suffix == 0 || total == 0 {
            return Err(());
        }
        (total.saturating_sub(suffix), total - 1)
    } else {
        let first: u64 = first.parse().map_err(|_| ())?;
        let last: u64 = if last.is_empty() {
            total.saturating_sub(1)
        } else {
            last.parse::<u64>()
                .map_err(|_| ())?
                .min(total.saturating_sub(1))
        };
        if first >= total || last < first {
            return Err(());
        }
        (first, last)
    };
    Ok(Some(range))
}

/// `attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded>` (RFC 6266, RFC 8187).
fn content_disposition(name: &str) -> String {
    const ATTR: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'!')
        .remove(b'#')
        .remove(b'$')
        .remove(b'&')
        .remove(b'+')
        .remove(b'-')
        .remove(b'.')
        .remove(b'^')
        .remove(b'_')
        .remove(b'`')
        .remove(b'|')
        .remove(b'~');
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
        utf8_percent_encode(name, ATTR)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc9110() {
        assert_eq!(parse_range("bytes=0-99", 1000), Ok(Some((0, 99))));
        assert_eq!(parse_range("bytes=900-", 1000), Ok(Some((900, 999))));
        assert_eq!(parse_range("bytes=-100", 1000), Ok(Some((900, 999))));
        assert_eq!(parse_range("bytes=990-2000", 1000), Ok(Some((990, 999))));
        assert_eq!(parse_range("bytes=1000-", 1000), Err(()));
        assert_eq!(parse_range("bytes=5-1", 1000), Err(()));
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Ok(None));
        assert_eq!(parse_range("items=0-1", 1000), Ok(None));
    }

    #[test]
    fn disposition_has_an_ascii_fallback_and_utf8_name() {
        assert_eq!(jobs::mp3_filename("Café – été.mkv"), "Café – été.mp3");
        assert_eq!(
            content_disposition("Café \"x\".mp3"),
            "attachment; filename=\"Caf_ _x_.mp3\"; filename*=UTF-8''Caf%C3%A9%20%22x%22.mp3"
        );
        assert_eq!(jobs::mp3_filename("noext"), "noext.mp3");
    }
}
