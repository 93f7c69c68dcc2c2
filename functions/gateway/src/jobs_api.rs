//! `GET /jobs`, `GET /jobs/{id}`, `DELETE /jobs/{id}`: the caller's jobs. Another user's job answers 404,
//! exactly like an unknown id (an admin sees every job); a malformed id answers 400.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use futures::TryStreamExt;
use mongodb::bson::{Bson, doc};
use serde::{Deserialize, Serialize};
use vidmp3_runtime::jobs::{self, Job, JobState};
use vidmp3_runtime::jwt::{Authenticated, Claims};
use vidmp3_runtime::{Problem, ProblemQuery};

use crate::{AppState, mongo_problem};

/// A job as clients see it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobView {
    /// Job id.
    pub job_id: String,
    /// `uploaded`, `converting`, `converted` or `failed`.
    pub state: JobState,
    /// 0.0..=1.0.
    pub progress: f64,
    /// The uploaded file's name.
    pub filename: String,
    /// Bytes uploaded.
    pub size_bytes: i64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Failure code and message, when failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    /// The source was damaged; what could be decoded was converted.
    pub partial: bool,
    /// The MP3, once converted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mp3: Option<Mp3View>,
    /// Whether the owner has been emailed about the outcome.
    pub notified: bool,
}

/// Why a job failed.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobError {
    /// Stable code (`no_audio_stream`, `invalid_data`…).
    pub code: String,
    /// Plain words.
    pub message: String,
}

/// The converted MP3.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Mp3View {
    /// `GET` this to download.
    pub url: String,
    /// The MP3's GridFS file id (hex ObjectId), for `GET /download?fid=`.
    pub file_id: String,
    /// Length in seconds.
    pub duration_s: f64,
    /// Bytes.
    pub size_bytes: i64,
    /// Average kbit/s.
    pub bitrate_kbps: i32,
}

impl JobView {
    /// The view of `job`; links are made absolute with `base_url`.
    pub fn new(job: &Job, base_url: &str) -> Self {
        let mp3 = (job.state == JobState::Converted).then(|| Mp3View {
            url: format!("{base_url}/jobs/{}/mp3", job.id),
            file_id: job.mp3_id.map(|id| id.to_hex()).unwrap_or_default(),
            duration_s: job.duration_s.unwrap_or_default(),
            size_bytes: job.mp3_size_bytes.unwrap_or_default(),
            bitrate_kbps: job.bitrate_kbps.unwrap_or_default(),
        });
        Self {
            job_id: job.id.clone(),
            state: job.state,
            progress: job.progress,
            filename: job.filename.clone(),
            size_bytes: job.size_bytes,
            created_at: job.created_at.try_to_rfc3339_string().unwrap_or_default(),
            updated_at: job.updated_at.try_to_rfc3339_string().unwrap_or_default(),
            error: job.error_code.clone().map(|code| JobError {
                code,
                message: job.error_message.clone().unwrap_or_default(),
            }),
            partial: job.partial,
            mp3,
            notified: job.notified_at.is_some() && job.notify_error.is_none(),
        }
    }
}

/// Parses a job id (a UUID).
///
/// # Errors
/// 400 `invalid_id`.
pub fn parse_job_id(raw: &str) -> Result<String, Problem> {
    uuid::Uuid::parse_str(raw)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| Problem::bad_request("invalid_id", format!("{raw:?} is not a job id")))
}

/// Loads a job the caller may see.
///
/// # Errors
/// 404 for unknown and foreign jobs alike; 503/500 for MongoDB.
pub async fn load_visible(state: &AppState, claims: &Claims, id: &str) -> Result<Job, Problem> {
    let job = jobs::jobs(&state.db)
        .find_one(doc! {"_id": id})
        .await
        .map_err(|e| mongo_problem(&e))?;
    job.filter(|j| j.owner_id == claims.sub || claims.admin)
        .ok_or_else(|| Problem::not_found("no such job"))
}

/// Query of `GET /jobs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1..=100 (default 20).
    pub limit: Option<u32>,
    /// Cursor: the `next_cursor` of the previous page (also accepted as `cursor`).
    #[serde(alias = "cursor")]
    pub before: Option<String>,
}

/// A page of jobs, newest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobPage {
    /// The jobs.
    pub jobs: Vec<JobView>,
    /// Pass as `?before=` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Lists the caller's jobs, newest first (`GET /jobs`), paged with `before`.
#[utoipa::path(get, path = "/jobs", tag = "jobs", description = "The caller's jobs, newest first, paged with `before`.",
    params(crate::jobs_api::ListQuery),
    responses((status = 200, body = crate::jobs_api::JobPage), (status = 400, description = "limit out of 1..=100 or a malformed cursor", body = vidmp3_runtime::Problem, content_type = "application/problem+json"), (status = 401, description = "missing, malformed, expired or foreign token", body = vidmp3_runtime::Problem, content_type = "application/problem+json"), (status = 503, description = "MongoDB did not answer in time", body = vidmp3_runtime::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    ProblemQuery(query): ProblemQuery<ListQuery>,
) -> Result<Json<JobPage>, Problem> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(Problem::bad_request(
            "invalid_limit",
            "limit must be 1..=100",
        ));
    }
    let mut filter = doc! {"owner_id": &claims.sub};
    if let Some(before) = &query.before {
        filter.insert("_id", doc! {"$lt": parse_job_id(before)?});
    }
    let found: Vec<Job> = jobs::jobs(&state.db)
        .find(filter)
        .sort(doc! {"_id": -1})
        .limit(i64::from(limit) + 1)
        .await
        .map_err(|e| mongo_problem(&e))?
        .try_collect()
        .await
        .map_err(|e| mongo_problem(&e))?;
    let more = found.len() > limit as usize;
    let page: Vec<JobView> = found
        .iter()
        .take(limit as usize)
        .map(|j| JobView::new(j, &state.settings.public_base_url))
        .collect();
    let next_cursor = more
        .then(|| page.last().map(|j| j.job_id.clone()))
        .flatten();
    Ok(Json(JobPage {
        jobs: page,
        next_cursor,
    }))
}

/// One job of the caller's (`GET /jobs/{id}`): state, progress, error, the MP3 once converted.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", description = "One job: state, progress, error, the MP3 link once converted.",
    params(("id" = String, Path, description = "job id (UUID)")),
    responses((status = 200, body = crate::jobs_api::JobView), (status = 400, description = "malformed id", body = vidmp3_runtime::Problem, content_type = "application/problem+json"), (status = 404, description = "no such job (or not yours)", body = vidmp3_runtime::Problem, content_type = "application/problem+json"), (status = 401, description = "missing, malformed, expired or foreign token", body = vidmp3_runtime::Problem, content_type = "application/problem+json"), (status = 503, description = "MongoDB did not answer in time", body = vidmp3_runtime::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<JobView>, Problem> {
    let id = parse_job_id(&id)?;
    let job = load_visible(&state, &claims, &id).await?;
    Ok(Json(JobView::new(&job, &state.settings.public_base_url)))
}

/// Deletes one of the caller's jobs with its video and MP3 (`DELETE /jobs/{id}`); 204.
#[utoipa::path(delete, path = "/jobs/{id}", tag = "jobs", description = "Deletes the job, its video and its MP3.",
    params(("id" = String, Path, description = "job id (UUID)")),
    responses((status = 204, description = "deleted"), (status = 400, description = "malformed id", body = vidmp3_runtime::Problem, content_type = "application/problem+json"), (status = 404, description = "no such job (or not yours)", body = vidmp3_runtime::Problem, content_type = "application/problem+json"), (status = 401, description = "missing, malformed, expired or foreign token", body = vidmp3_runtime::Problem, content_type = "application/problem+json"), (status = 503, description = "MongoDB did not answer in time", body = vidmp3_runtime::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let id = parse_job_id(&id)?;
    let job = load_visible(&state, &claims, &id).await?;
    // The job goes first: a converter finishing meanwhile finds no job and removes the MP3 it wrote.
    jobs::jobs(&state.db)
        .delete_one(doc! {"_id": &job.id})
        .await
        .map_err(|e| mongo_problem(&e))?;
    for (bucket, file) in [(&state.videos, job.video_id), (&state.mp3s, job.mp3_id)] {
        if let Some(file_id) = file {
            if let Err(e) = bucket.delete(Bson::ObjectId(file_id)).await {
                if !matches!(*e.kind, mongodb::error::ErrorKind::GridFs(_)) {
                    tracing::warn!(job_id = %job.id, error = %e, "could not delete a GridFS file");
                }
            }
        }
    }
    tracing::info!(job_id = %job.id, "job deleted");
    Ok(StatusCode::NO_CONTENT)
}
