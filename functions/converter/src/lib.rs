//! The converter function: `video.uploaded` CloudEvents in, MP3s in GridFS out, with a
//! `audio.converted` / `conversion.failed` reply.
//!
//! - [`transcode`]: the synchronous ffmpeg-next core (any video's audio → MP3);
//! - [`service`]: the HTTP handler, GridFS and the job's state machine;
//! - [`jobsink`]: the same conversion as a one-shot Knative JobSink Job.
pub mod jobsink;
pub mod service;
pub mod transcode;
