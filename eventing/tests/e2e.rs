//! End to end: gateway → Broker (this crate's runner over real RabbitMQ) → converter → Broker →
//! notification → SMTP, with the real manifests in `eventing/` (under a namespace of the test's own, so
//! tests and a running dev stack never share queues), the real MongoDB-wire server and a real SMTP server.

mod stack;

use std::time::Duration;

use mongodb::bson::doc;
use stack::{link_in, start_stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corpus_video_becomes_one_mp3_and_one_email_whose_link_downloads_it() {
    let stack = start_stack(&testkit::shared_amqp_url()).await;
    let job_id = stack.upload("mp4_h264_aac_moov_at_end_10s.mp4").await;
    let mail = stack
        .wait_for_email(&job_id, Duration::from_secs(120))
        .await;
    let link = link_in(&mail);
    assert_eq!(link, format!("http://gateway.e2e/jobs/{job_id}/mp3"));
    let path = link.trim_start_matches("http://gateway.e2e");
    let mp3 = stack
        .client
        .get(format!("{}{path}", stack.gateway))
        .bearer_auth(stack.token())
        .send()
        .await
        .unwrap();
    assert_eq!(mp3.status(), 200);
    assert_eq!(mp3.headers()["content-type"], "audio/mpeg");
    let file = tempfile::NamedTempFile::with_suffix(".mp3").unwrap();
    std::fs::write(file.path(), mp3.bytes().await.unwrap()).unwrap();
    let seconds = testkit::decoded_audio_seconds(file.path()).expect("the MP3 decodes");
    assert!(
        (seconds - 10.01).abs() <= 0.1,
        "decoded {seconds} s, want 10.01 ± 0.1"
    );
    stack.settle().await;
    assert_eq!(stack.count("mp3s.files").await, 1, "exactly one MP3");
    assert_eq!(stack.smtp.messages().len(), 1, "exactly one email");
    let job = stack.job(&job_id).await;
    assert_eq!(job["state"], "converted");
    assert_eq!(job["notified"], true);
    assert!(stack.dead_letters.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_video_without_audio_fails_with_its_reason_and_one_failure_email() {
    let stack = start_stack(&testkit::shared_amqp_url()).await;
    let job_id = stack.upload("mp4_h264_no_audio_track_10s.mp4").await;
    let mail = stack
        .wait_for_email(&job_id, Duration::from_secs(120))
        .await;
    assert!(mail.contains("We could not convert"), "{mail}");
    stack.settle().await;
    let job = stack.job(&job_id).await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["error"]["code"], "no_audio_stream");
    assert_eq!(stack.count("mp3s.files").await, 0);
    assert_eq!(stack.smtp.messages().len(), 1, "exactly one failure email");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicated_event_still_gives_one_mp3_and_one_email() {
    let stack = start_stack(&testkit::shared_amqp_url()).await;
    let job_id = stack.upload("webm_vp8_vorbis_10s.webm").await;
    stack
        .wait_for_email(&job_id, Duration::from_secs(120))
        .await;
    // The Broker delivers at least once: replay the same event through the ingress, twice.
    let job: vidmp3_runtime::jobs::Job = vidmp3_runtime::jobs::jobs(&stack.db)
        .find_one(doc! {"_id": &job_id})
        .await
        .unwrap()
        .unwrap();
    let event = vidmp3_runtime::events::to_event(&gateway::outbox::uploaded_event(&job));
    for _ in 0..2 {
        vidmp3_runtime::events::send(&stack.client, &stack.broker_ingress, event.clone())
            .await
            .unwrap();
    }
    stack.settle().await;
    assert_eq!(stack.count("mp3s.files").await, 1, "exactly one MP3");
    assert_eq!(stack.smtp.messages().len(), 1, "exactly one email");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_restarted_right_after_an_upload_still_gives_one_mp3_and_one_email() {
    let mut rabbit = testkit::RabbitServer::start().await;
    let mut stack = start_stack(&rabbit.amqp_url).await;
    let job_id = stack.upload("mkv_vp9_opus_10s.mkv").await;
    rabbit.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    rabbit.start_again().await;
    stack
        .wait_for_email(&job_id, Duration::from_secs(180))
        .await;
    stack.settle().await;
    assert_eq!(stack.count("mp3s.files").await, 1, "exactly one MP3");
    assert_eq!(stack.smtp.messages().len(), 1, "exactly one email");
    assert_eq!(stack.job(&job_id).await["state"], "converted");
    if let Some(runner) = stack.runner.take() {
        runner.shutdown().await;
    }
}
