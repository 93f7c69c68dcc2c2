//! The `eventing-runner` binary: `--check`, a clean stop on SIGTERM that finishes the in-flight
//! delivery, and a SIGKILL mid-delivery after which the next runner delivers the event again
//! (shared RabbitMQ, own namespace, cleaned up; only the runner is killed, never RabbitMQ).

mod common;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_eventing-runner");

#[test]
fn check_resolves_the_project_manifests_and_fails_fast_on_unmapped_subscribers() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(BIN)
        .args(["--manifests", dir, "--check"])
        .args(["--subscriber", "converter=http://127.0.0.1:8083"])
        .args([
            "--subscriber",
            "ksvc:vidmp3/notification=http://127.0.0.1:8084",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("vidmp3/converter-on-video-uploaded"),
        "{stdout}"
    );
    assert!(stdout.contains("-> http://127.0.0.1:8083/"), "{stdout}");
    assert_eq!(
        stdout.matches("-> http://127.0.0.1:8084/").count(),
        2,
        "{stdout}"
    );

    let out = Command::new(BIN)
        .args([
            "--manifests",
            dir,
            "--check",
            "--subscriber",
            "converter=http://127.0.0.1:8083",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--subscriber notification="), "{stderr}");
}

#[tokio::test]
async fn sigterm_finishes_the_in_flight_delivery_then_exits_cleanly() {
    let ns = unique("sigterm");
    let sub = Recorder::start(Duration::from_millis(1500), |_, _| {
        StatusCode::ACCEPTED.into_response()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let docs = [
        broker_yaml(&ns),
        trigger_yaml(&ns, "t", Some("dev.vidmp3.video.uploaded"), "sub", None, 1),
    ];
    std::fs::write(dir.path().join("eventing.yaml"), docs.join("---\n")).unwrap();
    let topo = topology(&docs);
    let amqp = shared_amqp_url();
    let _cleanup = Cleanup {
        amqp_url: amqp.clone(),
        topology: topo,
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(BIN)
        .arg("--manifests")
        .arg(dir.path())
        .args(["--subscriber", &format!("sub={}", sub.url)])
        .args(["--amqp-url", &amqp])
        .env("PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "runner never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ingress = format!("{base}/{ns}/default");
    assert_eq!(
        post_binary(
            &ingress,
            "in-flight",
            "dev.vidmp3.video.uploaded",
            serde_json::json!({})
        )
        .await,
        202
    );
    sub.wait_for(1, Duration::from_secs(10)).await;

    let stopped_at = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        stopped_at.elapsed() >= Duration::from_millis(800),
        "exited before the in-flight delivery finished"
    );
    // The delivery completed and was acked before the connection closed: nothing requeued.
    assert!(
        drain_queue(&amqp, &eventing::amqp::queue_name(&ns, "t"))
            .await
            .is_empty()
    );
    assert_eq!(sub.count(), 1);
}

/// A runner process that is killed (and reaped) when dropped, so a failing test leaves none behind.
struct RunnerProcess(Option<std::process::Child>);

impl RunnerProcess {
    /// Takes the process out of the guard (to signal and wait for it).
    fn take(&mut self) -> std::process::Child {
        self.0.take().expect("runner process still owned")
    }
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the binary on a free port with the manifests in `dir`, waits until it is ready, and
/// returns it with its base URL.
async fn spawn_ready_runner(
    dir: &std::path::Path,
    subscriber: &str,
    amqp: &str,
) -> (RunnerProcess, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = RunnerProcess(Some(
        Command::new(BIN)
            .arg("--manifests")
            .arg(dir)
            .args(["--subscriber", subscriber])
            .args(["--amqp-url", amqp])
            .env("PORT", port.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "runner never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, base)
}

/// The ack comes after the outcome: a runner killed (SIGKILL, no cleanup at all) while a delivery
/// is in flight has not acked it, so RabbitMQ hands it to the next runner. Were the message
/// acked when it is taken from the queue, the event would be lost here.
#[tokio::test]
async fn an_event_in_flight_when_the_runner_is_killed_is_delivered_again_by_the_next_runner() {
    let ns = unique("sigkill");
    // Holds every response until the gate opens: the first delivery stays in flight.
    let sub = Recorder::start_gated(Duration::ZERO, false, |_, _| {
        StatusCode::ACCEPTED.into_response()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let docs = [
        broker_yaml(&ns),
        trigger_yaml(&ns, "t", Some("dev.vidmp3.video.uploaded"), "sub", None, 1),
    ];
    std::fs::write(dir.path().join("eventing.yaml"), docs.join("---\n")).unwrap();
    let amqp = shared_amqp_url();
    let _cleanup = Cleanup {
        amqp_url: amqp.clone(),
        topology: topology(&docs),
    };
    let subscriber = format!("sub={}", sub.url);

    let (mut first, base) = spawn_ready_runner(dir.path(), &subscriber, &amqp).await;
    assert_eq!(
        post_binary(
            &format!("{base}/{ns}/default"),
            "in-flight",
            "dev.vidmp3.video.uploaded",
            serde_json::json!({"n": 1})
        )
        .await,
        202
    );
    sub.wait_for(1, Duration::from_secs(10)).await;
    let mut first = first.take();
    first.kill().unwrap(); // SIGKILL
    let status = tokio::task::spawn_blocking(move || first.wait().unwrap())
        .await
        .unwrap();
    assert!(!status.success(), "killed, not exited: {status}");
    assert_eq!(sub.count(), 1, "nothing else delivered before the kill");

    sub.open_gate();
    let (mut second, _) = spawn_ready_runner(dir.path(), &subscriber, &amqp).await;
    let got = sub.wait_for(2, Duration::from_secs(20)).await;
    assert!(
        got.iter().all(|r| r.header("ce-id") == Some("in-flight")),
        "the same event, delivered again"
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&got[1].body).unwrap(),
        serde_json::json!({"n": 1})
    );

    // This time it was answered: acked, so the queue is empty after a clean stop.
    let mut second = second.take();
    assert!(
        Command::new("kill")
            .args(["-TERM", &second.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || second.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        drain_queue(&amqp, &eventing::amqp::queue_name(&ns, "t"))
            .await
            .is_empty()
    );
    assert_eq!(sub.count(), 2, "delivered exactly twice: once per runner");
}
