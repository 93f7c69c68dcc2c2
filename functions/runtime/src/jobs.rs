//! The job record in MongoDB collection `jobs`, and the GridFS bucket names.
//!
//! A job moves `uploaded → converting → converted | failed`. Every state change is a conditional update
//! (filter on the current state), which is what makes a redelivered event harmless.

use mongodb::bson::{DateTime, Document, doc, oid::ObjectId};
use mongodb::gridfs::{GridFsBucket, GridFsUploadStream};
use mongodb::options::GridFsBucketOptions;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::events::OutputOptions;

/// The collection of jobs.
pub const JOBS: &str = "jobs";
/// GridFS bucket holding uploaded videos.
pub const VIDEOS_BUCKET: &str = "videos";
/// GridFS bucket holding converted MP3s.
pub const MP3S_BUCKET: &str = "mp3s";

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Stored, waiting for the converter.
    Uploaded,
    /// A converter holds the lease and works on it.
    Converting,
    /// The MP3 is stored.
    Converted,
    /// Conversion failed for good; see `error_code`.
    Failed,
}

impl JobState {
    /// The name as stored (`"uploaded"`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uploaded => "uploaded",
            Self::Converting => "converting",
            Self::Converted => "converted",
            Self::Failed => "failed",
        }
    }
}

/// A conversion job. `_id` is a UUID string.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Job {
    /// Job id (UUID v7, so ids sort by creation).
    #[serde(rename = "_id")]
    pub id: String,
    /// The owner's user id (the JWT `sub`).
    pub owner_id: String,
    /// The owner's email (where the notification goes).
    pub owner_email: String,
    /// The uploaded file's name.
    pub filename: String,
    /// The declared Content-Type of the upload.
    pub content_type: String,
    /// Size of the video in bytes.
    pub size_bytes: i64,
    /// GridFS id of the video in bucket [`VIDEOS_BUCKET`]; `None` once deleted after conversion.
    pub video_id: Option<ObjectId>,
    /// Current state.
    pub state: JobState,
    /// Conversion progress, 0.0..=1.0.
    #[serde(default)]
    pub progress: f64,
    /// Requested encoding.
    #[serde(default)]
    pub output: OutputOptions,
    /// GridFS id of the MP3 in bucket [`MP3S_BUCKET`].
    #[serde(default)]
    pub mp3_id: Option<ObjectId>,
    /// Decoded MP3 length in seconds.
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// MP3 size in bytes.
    #[serde(default)]
    pub mp3_size_bytes: Option<i64>,
    /// Average MP3 bitrate in kbit/s.
    #[serde(default)]
    pub bitrate_kbps: Option<i32>,
    /// The source was damaged: what could be decoded was converted.
    #[serde(default)]
    pub partial: bool,
    /// Stable failure reason code.
    #[serde(default)]
    pub error_code: Option<String>,
    /// Failure in plain words.
    #[serde(default)]
    pub error_message: Option<String>,
    /// Outbox: the `video.uploaded` event has not yet been accepted by the sink.
    #[serde(default)]
    pub event_pending: bool,
    /// Outbox: whoever is sending the pending event holds it until then, so it is never sent twice at once.
    #[serde(default)]
    pub event_claim_until: Option<DateTime>,
    /// While `converting`: until when the converter's lease holds.
    #[serde(default)]
    pub lease_until: Option<DateTime>,
    /// When the owner was emailed about the final state.
    #[serde(default)]
    pub notified_at: Option<DateTime>,
    /// While an email is being sent: until when the sender's claim holds (no second sender meanwhile).
    #[serde(default)]
    pub notify_claim_until: Option<DateTime>,
    /// Why the email could not be delivered (a permanent refusal), if so.
    #[serde(default)]
    pub notify_error: Option<String>,
    /// Created.
    pub created_at: DateTime,
    /// Last changed.
    pub updated_at: DateTime,
}

/// What a new job is made of: the stored upload and its owner.
#[derive(Clone, Debug)]
pub struct NewJob {
    /// The owner's user id (the JWT `sub`).
    pub owner_id: String,
    /// The owner's email.
    pub owner_email: String,
    /// The uploaded file's name.
    pub filename: String,
    /// The declared Content-Type.
    pub content_type: String,
    /// Bytes stored.
    pub size_bytes: u64,
    /// GridFS id of the video in bucket [`VIDEOS_BUCKET`].
    pub video_id: ObjectId,
    /// Requested encoding.
    pub output: OutputOptions,
}

impl Job {
    /// A fresh job in state `uploaded` with a new UUID v7 id, its event pending in the outbox.
    pub fn uploaded(new: NewJob) -> Self {
        let now = DateTime::now();
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            owner_id: new.owner_id,
            owner_email: new.owner_email,
            filename: new.filename,
            content_type: new.content_type,
            size_bytes: i64::try_from(new.size_bytes).unwrap_or(i64::MAX),
            video_id: Some(new.video_id),
            state: JobState::Uploaded,
            progress: 0.0,
            output: new.output,
            mp3_id: None,
            duration_s: None,
            mp3_size_bytes: None,
            bitrate_kbps: None,
            partial: false,
            error_code: None,
            error_message: None,
            event_pending: true,
            event_claim_until: None,
            lease_until: None,
            notified_at: None,
            notify_claim_until: None,
            notify_error: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// The file name without its last extension (`clip.final.mov` → `clip.final`); the whole name when it has
/// none or starts with the only dot.
pub fn filename_stem(filename: &str) -> &str {
    match filename.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => filename,
    }
}

/// The MP3's name for an upload: `clip.mov` → `clip.mp3`.
pub fn mp3_filename(upload: &str) -> String {
    format!("{}.mp3", filename_stem(upload))
}

/// The GridFS bucket `name` ([`VIDEOS_BUCKET`] or [`MP3S_BUCKET`]) of `db`.
pub fn bucket(db: &Database, name: &str) -> GridFsBucket {
    db.gridfs_bucket(
        GridFsBucketOptions::builder()
            .bucket_name(name.to_owned())
            .build(),
    )
}

/// How long [`abort_upload`] keeps retrying to delete what an abandoned upload wrote.
pub const CLEANUP_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// Abandons GridFS upload `upload` (file `id` of bucket `bucket_name`) without leaving chunks behind. The
/// driver's abort deletes the chunks written so far; when it cannot (MongoDB is down: often the very reason
/// the upload failed), [`delete_file_later`] deletes them once MongoDB answers again.
pub async fn abort_upload(
    db: &Database,
    bucket_name: &str,
    upload: &mut GridFsUploadStream,
    id: ObjectId,
) {
    if let Err(e) = upload.abort().await {
        tracing::warn!(error = %e, bucket = bucket_name, file_id = %id, "GridFS abort failed: deleting the chunks later");
        delete_file_later(db, bucket_name, id);
    }
}

/// Deletes GridFS file `id` of bucket `bucket_name` (its chunks, then its files document if any) in the
/// background, retrying with backoff (1 s doubling to 30 s) for [`CLEANUP_RETRY_FOR`]: a MongoDB outage
/// shorter than that leaves no orphan chunk behind.
pub fn delete_file_later(db: &Database, bucket_name: &str, id: ObjectId) {
    let files = db.collection::<Document>(&format!("{bucket_name}.files"));
    let chunks = db.collection::<Document>(&format!("{bucket_name}.chunks"));
    let bucket = bucket_name.to_owned();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + CLEANUP_RETRY_FOR;
        let mut wait = std::time::Duration::from_secs(1);
        loop {
            tokio::time::sleep(wait).await;
            let result = async {
                let deleted = chunks.delete_many(doc! {"files_id": id}).await?;
                files.delete_one(doc! {"_id": id}).await?;
                Ok::<_, mongodb::error::Error>(deleted.deleted_count)
            }
            .await;
            match result {
                Ok(n) => {
                    tracing::info!(bucket, file_id = %id, chunks = n, "abandoned upload deleted");
                    return;
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(error = %e, bucket, file_id = %id, "could not delete an abandoned upload: its chunks stay");
                    return;
                }
                Err(_) => wait = (wait * 2).min(std::time::Duration::from_secs(30)),
            }
        }
    });
}

/// The `jobs` collection, typed.
pub fn jobs(db: &Database) -> Collection<Job> {
    db.collection(JOBS)
}

/// Creates the indexes the functions query by (idempotent): `(owner_id, _id)` for a user's jobs newest
/// first (`GET /jobs` filters by owner and pages by the time-ordered UUIDv7 `_id`) and `event_pending`
/// for the outbox.
///
/// # Errors
/// MongoDB errors.
pub async fn ensure_indexes(db: &Database) -> mongodb::error::Result<()> {
    use mongodb::bson::doc;
    jobs(db)
        .create_indexes([
            IndexModel::builder()
                .keys(doc! {"owner_id": 1, "_id": -1})
                .build(),
            IndexModel::builder()
                .keys(doc! {"event_pending": 1})
                .build(),
        ])
        .await
        .map(drop)
}
