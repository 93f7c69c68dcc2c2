//! `POST /upload`: a video streamed into GridFS bucket `videos`, a job, and a `video.uploaded` CloudEvent.
//!
//! Accepts `multipart/form-data` with exactly one file part named `file` (optional text parts `bitrate_kbps`
//! or `vbr_quality` before it), or a raw body with an `audio/*`, `video/*` or `application/octet-stream`
//! Content-Type and `?filename=`. Output options may also come as query parameters.
//!
//! Answers 202 `{job_id, status_url, ...}`; 400 empty or malformed; 413 over `MAX_UPLOAD_BYTES` (checked from
//! Content-Length up front and while streaming); 415 not media; 503 MongoDB down. Nothing is left behind on
//! failure: the GridFS upload is aborted (or, if the request is dropped, its chunks are deleted by the
//! driver's drop guard) and no job is written.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{AsyncWriteExt, Stream, StreamExt};
use mongodb::bson::{Bson, DateTime, oid::ObjectId};
use serde::{Deserialize, Serialize};
use vidmp3_runtime::events::OutputOptions;
use vidmp3_runtime::jobs::{self, Job, JobState, NewJob};
use vidmp3_runtime::jwt::Authenticated;
use vidmp3_runtime::{Problem, ProblemQuery};

use crate::sniff::{SNIFF_BYTES, Verdict, sniff};
use crate::{AppState, mongo_problem, outbox};

/// Bytes allowed on top of `MAX_UPLOAD_BYTES` for multipart boundaries and part headers.
pub const MULTIPART_OVERHEAD: u64 = 64 * 1024;

/// Query parameters of `POST /upload`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// File name for raw-body uploads.
    pub filename: Option<String>,
    /// CBR bitrate, 64..=320 kbit/s.
    pub bitrate_kbps: Option<u32>,
    /// VBR quality, 0..=9.
    pub vbr_quality: Option<u8>,
}

/// The 202 answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UploadAccepted {
    /// The new job's id.
    pub job_id: String,
    /// Where to poll the job (`GET`).
    pub status_url: String,
    /// Where the MP3 will be (`GET`, once converted).
    pub download_url: String,
    /// `uploaded`.
    pub state: JobState,
    /// The stored file name.
    pub filename: String,
    /// Bytes stored.
    pub size_bytes: u64,
    /// Whether the Broker has not accepted the event yet (it will be re-sent).
    pub event_pending: bool,
}

fn outcome(o: &'static str) {
    metrics::counter!("gateway_uploads_total", "outcome" => o).increment(1);
}

/// Uploads a video (`POST /upload`), streamed into GridFS, and queues its conversion.
#[utoipa::path(post, path = "/upload", tag = "jobs",
    description = "Streams a video into GridFS and starts a conversion job. multipart/form-data with one part `file` (optional parts bitrate_kbps / vbr_quality before it), or a raw video/*, audio/* or application/octet-stream body with ?filename=.",
    params(crate::upload::UploadQuery),
    request_body(content_type = "multipart/form-data", description = "one part named `file`"),
    responses(
        (status = 202, description = "Stored; the job is queued", body = crate::upload::UploadAccepted),
        (status = 400, description = "empty file, malformed form, bad output options, more than one file", body = vidmp3_runtime::Problem, content_type = "application/problem+json"),
        (status = 401, description = "missing or invalid token", body = vidmp3_runtime::Problem, content_type = "application/problem+json"),
        (status = 408, description = "the body stalled longer than UPLOAD_IDLE_TIMEOUT_SECONDS, or the upload took longer than UPLOAD_TIMEOUT_SECONDS; nothing was kept", body = vidmp3_runtime::Problem, content_type = "application/problem+json"),
        (status = 413, description = "larger than MAX_UPLOAD_BYTES", body = vidmp3_runtime::Problem, content_type = "application/problem+json"),
        (status = 415, description = "not a video or audio file (text, image, archive...)", body = vidmp3_runtime::Problem, content_type = "application/problem+json"),
        (status = 503, description = "MongoDB did not answer; nothing was kept", body = vidmp3_runtime::Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = [])))]
pub async fn upload(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    ProblemQuery(query): ProblemQuery<UploadQuery>,
    request: Request,
) -> Result<Response, Problem> {
    // Past the deadline the upload future is dropped: the GridFS upload stream's drop guard deletes the
    // chunks written so far, and no job exists yet.
    let limit = state.settings.upload_timeout;
    let result = tokio::time::timeout(limit, upload_inner(&state, &claims, query, request))
        .await
        .unwrap_or_else(|_| {
            Err(timed_out(&format!(
                "the upload took longer than {} s",
                limit.as_secs()
            )))
        });
    match &result {
        Ok(_) => outcome("accepted"),
        Err(p) => outcome(match p.status {
            408 => "timed_out",
            413 => "too_large",
            415 => "not_media",
            503 => "unavailable",
            _ => "rejected",
        }),
    }
    result
}

async fn upload_inner(
    state: &AppState,
    claims: &vidmp3_runtime::jwt::Claims,
    query: UploadQuery,
    request: Request,
) -> Result<Response, Problem> {
    let max = state.settings.max_upload_bytes;
    let headers = request.headers().clone();
    let content_type = header_str(&headers, header::CONTENT_TYPE)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let multipart = content_type.starts_with("multipart/form-data");
    if let Some(length) =
        header_str(&headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok())
    {
        let allowed = if multipart {
            max + MULTIPART_OVERHEAD
        } else {
            max
        };
        if length > allowed {
            return Err(too_large(max));
        }
    }
    let mut output = OutputOptions {
        bitrate_kbps: query.bitrate_kbps,
        vbr_quality: query.vbr_quality,
    };

    let stored = if multipart {
        let mut form = Multipart::from_request(request, state)
            .await
            .map_err(|e| Problem::bad_request("invalid_multipart", e.body_text()))?;
        let mut stored: Option<StoredVideo> = None;
        loop {
            let field = match form.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    discard(state, stored.as_ref()).await;
                    return Err(multipart_problem(&e, max));
                }
            };
            let name = field.name().unwrap_or_default().to_owned();
            match name.as_str() {
                "file" if stored.is_some() => {
                    discard(state, stored.as_ref()).await;
                    return Err(Problem::bad_request(
                        "too_many_files",
                        "send exactly one part named `file`",
                    ));
                }
                "file" => {
                    let filename = clean_filename(field.file_name());
                    let declared = field
                        .content_type()
                        .unwrap_or("application/octet-stream")
                        .to_owned();
                    let stream = field.map(move |r| r.map_err(|e| multipart_problem(&e, max)));
                    stored = Some(store_video(state, filename, declared, stream).await?);
                }
                "bitrate_kbps" | "vbr_quality" if stored.is_none() => {
                    let text = field.text().await.map_err(|e| multipart_problem(&e, max))?;
                    apply_form_option(&mut output, &name, &text)?;
                }
                other => {
                    discard(state, stored.as_ref()).await;
                    return Err(Problem::bad_request(
                        "unexpected_field",
                        format!(
                            "unexpected form field {other:?}: send one part named `file` (options before it)"
                        ),
                    ));
                }
            }
        }
        stored.ok_or_else(|| {
            Problem::bad_request("missing_file", "the form has no part named `file`")
        })?
    } else if content_type.starts_with("video/")
        || content_type.starts_with("audio/")
        || content_type.starts_with("application/octet-stream")
    {
        let filename = clean_filename(query.filename.as_deref());
        let stream = request.into_body().into_data_stream().map(|r| {
            r.map_err(|e| {
                if is_body_timeout(&e) {
                    idle_timeout_problem()
                } else {
                    Problem::bad_request("upload_interrupted", format!("the upload broke off: {e}"))
                }
            })
        });
        store_video(state, filename, content_type.clone(), stream).await?
    } else {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
            "send multipart/form-data with one part named `file`, or a raw body with a video/*, audio/* or \
             application/octet-stream Content-Type",
        ));
    };

    if let Err(detail) = output.validate() {
        discard(state, Some(&stored)).await;
        return Err(Problem::bad_request("invalid_output_options", detail));
    }
    let job = create_job(state, claims, &stored, output)
        .await
        .inspect_err(|_| {
            let state = state.clone();
            let id = stored.id;
            tokio::spawn(async move { drop(state.videos.delete(Bson::ObjectId(id)).await) });
        })?;
    let event_pending = !outbox::send_claimed(state, &job).await;
    let status_url = format!("{}/jobs/{}", state.settings.public_base_url, job.id);
    tracing::info!(job_id = %job.id, size_bytes = stored.size_bytes, event_pending, "video uploaded");
    let body = UploadAccepted {
        download_url: format!("{status_url}/mp3"),
        job_id: job.id,
        status_url: status_url.clone(),
        state: JobState::Uploaded,
        filename: stored.filename,
        size_bytes: stored.size_bytes,
        event_pending,
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, status_url)],
        Json(body),
    )
        .into_response())
}

/// A video stored in GridFS.
struct StoredVideo {
    id: ObjectId,
    filename: String,
    content_type: String,
    size_bytes: u64,
}

/// Streams `body` into the `videos` bucket: sniffs the head first, enforces the limit while streaming, and
/// aborts the GridFS upload on any failure so no chunk is left behind.
async fn store_video<S>(
    state: &AppState,
    filename: String,
    content_type: String,
    mut body: S,
) -> Result<StoredVideo, Problem>
where
    S: Stream<Item = Result<Bytes, Problem>> + Unpin,
{
    let max = state.settings.max_upload_bytes;
    let mut head: Vec<u8> = Vec::with_capacity(SNIFF_BYTES);
    let mut pending: Vec<Bytes> = Vec::new();
    while head.len() < SNIFF_BYTES {
        match body.next().await {
            Some(chunk) => {
                let chunk = chunk?;
                head.extend_from_slice(&chunk[..chunk.len().min(SNIFF_BYTES - head.len())]);
                pending.push(chunk);
            }
            None => break,
        }
    }
    if head.is_empty() {
        return Err(Problem::bad_request(
            "empty_file",
            "the uploaded file is empty",
        ));
    }
    if let Verdict::NotMedia(what) = sniff(&head) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not_media",
            format!("this looks like {what}, not a video or audio file"),
        ));
    }
    let id = ObjectId::new();
    let mut upload = state
        .videos
        .open_upload_stream(&filename)
        .id(Bson::ObjectId(id))
        .await
        .map_err(|e| mongo_problem(&e))?;
    let mut size: u64 = 0;
    let mut chunks = futures::stream::iter(pending.into_iter().map(Ok)).chain(body);
    while let Some(chunk) = chunks.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(p) => {
                jobs::abort_upload(&state.db, jobs::VIDEOS_BUCKET, &mut upload, id).await;
                return Err(p);
            }
        };
        size += chunk.len() as u64;
        if size > max {
            jobs::abort_upload(&state.db, jobs::VIDEOS_BUCKET, &mut upload, id).await;
            return Err(too_large(max));
        }
        if let Err(e) = upload.write_all(&chunk).await {
            jobs::abort_upload(&state.db, jobs::VIDEOS_BUCKET, &mut upload, id).await;
            tracing::warn!(error = %e, "GridFS write failed");
            return Err(Problem::unavailable(
                "the file store failed while storing the upload; nothing was kept",
            ));
        }
    }
    if let Err(e) = upload.close().await {
        jobs::abort_upload(&state.db, jobs::VIDEOS_BUCKET, &mut upload, id).await;
        tracing::warn!(error = %e, "GridFS close failed");
        return Err(Problem::unavailable(
            "the file store failed while storing the upload; nothing was kept",
        ));
    }
    Ok(StoredVideo {
        id,
        filename,
        content_type,
        size_bytes: size,
    })
}

async fn create_job(
    state: &AppState,
    claims: &vidmp3_runtime::jwt::Claims,
    stored: &StoredVideo,
    output: OutputOptions,
) -> Result<Job, Problem> {
    let mut job = Job::uploaded(NewJob {
        owner_id: claims.sub.clone(),
        owner_email: claims.email.clone(),
        filename: stored.filename.clone(),
        content_type: stored.content_type.clone(),
        size_bytes: stored.size_bytes,
        video_id: stored.id,
        output,
    });
    // The uploading request holds the outbox claim, so the redelivery timer does not send it concurrently.
    job.event_claim_until = Some(DateTime::from_millis(
        job.created_at.timestamp_millis() + outbox::CLAIM_MS,
    ));
    jobs::jobs(&state.db)
        .insert_one(&job)
        .await
        .map_err(|e| mongo_problem(&e))?;
    Ok(job)
}

async fn discard(state: &AppState, stored: Option<&StoredVideo>) {
    if let Some(s) = stored {
        if let Err(e) = state.videos.delete(Bson::ObjectId(s.id)).await {
            tracing::warn!(error = %e, video_id = %s.id, "could not delete a refused upload");
        }
    }
}

fn too_large(max: u64) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "the upload exceeds the limit of {max} bytes ({})",
            vidmp3_runtime::units::human_bytes(max)
        ),
    )
}

/// The layer that cuts off an upload body idle for `UPLOAD_IDLE_TIMEOUT_SECONDS` (tower-http's
/// [`RequestBodyTimeoutLayer`](tower_http::timeout::RequestBodyTimeoutLayer): the timer restarts with every
/// chunk received). The handler then answers 408 and hyper closes the connection. The whole upload is also
/// bounded by `UPLOAD_TIMEOUT_SECONDS` in the handler, so a steady trickle does not hold a slot forever either.
pub fn timeouts(settings: &crate::Settings) -> tower_http::timeout::RequestBodyTimeoutLayer {
    tower_http::timeout::RequestBodyTimeoutLayer::new(settings.upload_idle_timeout)
}

/// Whether a body error (anywhere in its source chain) is the idle timeout of [`timeouts`].
fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        current = err.source();
    }
    // multer wraps the body error in a boxed error whose chain may not be exposed: fall back to the text.
    e.to_string()
        .contains("data was not received within the designated timeout")
}

fn timed_out(detail: &str) -> Problem {
    Problem::new(
        StatusCode::REQUEST_TIMEOUT,
        "upload_timed_out",
        format!("{detail}; nothing was kept"),
    )
}

fn idle_timeout_problem() -> Problem {
    timed_out("the upload stalled: no data arrived within UPLOAD_IDLE_TIMEOUT_SECONDS")
}

fn multipart_problem(e: &axum::extract::multipart::MultipartError, max: u64) -> Problem {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(max)
    } else if is_body_timeout(e) {
        idle_timeout_problem()
    } else {
        Problem::bad_request(
            "upload_interrupted",
            format!("the upload broke off or is malformed: {}", e.body_text()),
        )
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Sets the output option in form part `name` (`bitrate_kbps` or `vbr_quality`; any other name is ignored)
/// from the part's text. Ranges are checked later, by [`OutputOptions::validate`].
///
/// # Errors
/// 400 `invalid_output_options` when the text is not a number of the option's type.
pub fn apply_form_option(
    output: &mut OutputOptions,
    name: &str,
    text: &str,
) -> Result<(), Problem> {
    let bad = || Problem::bad_request("invalid_output_options", format!("{name} must be a number"));
    match name {
        "bitrate_kbps" => output.bitrate_kbps = Some(text.trim().parse().map_err(|_| bad())?),
        "vbr_quality" => output.vbr_quality = Some(text.trim().parse().map_err(|_| bad())?),
        _ => {}
    }
    Ok(())
}

/// The last path component, without control characters, at most 255 characters; `upload` when empty.
pub fn clean_filename(raw: Option<&str>) -> String {
    let name = raw
        .unwrap_or_default()
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default();
    let name: String = name.chars().filter(|c| !c.is_control()).take(255).collect();
    let name = name.trim();
    if name.is_empty() || name == "." || name == ".." {
        "upload".to_owned()
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::clean_filename;

    #[test]
    fn filenames_lose_paths_and_control_characters() {
        assert_eq!(clean_filename(Some("../../etc/passwd")), "passwd");
        assert_eq!(clean_filename(Some("C:\\videos\\clip.mp4")), "clip.mp4");
        assert_eq!(clean_filename(Some("a\r\nb.mp4")), "ab.mp4");
        assert_eq!(clean_filename(Some("Café – été.mkv")), "Café – été.mkv");
        assert_eq!(clean_filename(None), "upload");
    }
}
