//! The runner against the machine's shared RabbitMQ (127.0.0.1:5672, or $AMQP_URL). Every test
//! uses its own namespace, hence its own exchange and queues, and deletes them afterwards.

mod common;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::*;
use eventing::SubscriberMap;
use eventing::amqp::dlq_name;
use std::time::Duration;

const T_UPLOADED: &str = "dev.vidmp3.video.uploaded";
const T_CONVERTED: &str = "dev.vidmp3.audio.converted";

fn fast_delivery(retry: u32, policy: &str) -> String {
    format!(
        "    retry: {retry}\n    backoffPolicy: {policy}\n    backoffDelay: PT0.02S\n    timeout: PT5S\n"
    )
}

#[tokio::test]
async fn ingress_routes_binary_and_structured_events_to_the_matching_trigger_only() {
    let ns = unique("route");
    let conv = Recorder::accepting().await;
    let notif = Recorder::accepting().await;
    let topo = topology(&[
        broker_yaml(&ns),
        trigger_yaml(&ns, "to-conv", Some(T_UPLOADED), "conv", None, 1),
        trigger_yaml(&ns, "to-notif", Some(T_CONVERTED), "notif", None, 1),
    ]);
    let _cleanup = Cleanup {
        amqp_url: shared_amqp_url(),
        topology: topo.clone(),
    };
    let mut subs = SubscriberMap::new();
    subs.insert("conv", &conv.url).unwrap();
    subs.insert("ksvc:notif", &notif.url).unwrap();
    let runner = start_runner(topo, subs, &shared_amqp_url()).await;
    let ingress = runner.ingress_url(&ns, "default");

    let data = serde_json::json!({"job_id": "j1", "n": 1});
    assert_eq!(
        post_binary(&ingress, "b-1", T_UPLOADED, data.clone()).await,
        202
    );
    assert_eq!(
        post_structured(&ingress, "s-1", T_UPLOADED, data.clone()).await,
        202
    );

    let got = conv.wait_for(2, Duration::from_secs(10)).await;
    let mut ids: Vec<_> = got
        .iter()
        .map(|r| r.header("ce-id").unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["b-1", "s-1"]);
    for r in &got {
        // Binary mode towards the subscriber, whatever mode it came in.
        assert_eq!(r.header("prefer"), Some("reply"));
        assert_eq!(r.header("ce-specversion"), Some("1.0"));
        assert_eq!(r.header("ce-type"), Some(T_UPLOADED));
        assert_eq!(r.header("ce-source"), Some("/test"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body, data);
    }
    assert_eq!(
        got.iter()
            .find(|r| r.header("ce-id") == Some("b-1"))
            .unwrap()
            .header("ce-subject"),
        Some("job-b-1")
    );

    // Errors: invalid event, unknown broker, too large.
    let client = reqwest::Client::new();
    let bad = client
        .post(&ingress)
        .header("content-type", "application/json")
        .body("{\"not\":\"an event\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.headers()["content-type"], "application/problem+json");
    let missing_type = client
        .post(&ingress)
        .header("ce-specversion", "1.0")
        .header("ce-id", "x")
        .header("ce-source", "/test")
        .send()
        .await
        .unwrap();
    assert_eq!(missing_type.status(), 400);
    let unknown = post_binary(
        &runner.ingress_url(&ns, "nope"),
        "u-1",
        T_UPLOADED,
        data.clone(),
    )
    .await;
    assert_eq!(unknown, 404);
    let huge = serde_json::json!({"blob": "x".repeat(300 * 1024)});
    assert_eq!(post_binary(&ingress, "h-1", T_UPLOADED, huge).await, 413);
    let health = client
        .get(format!("http://{}/healthz", runner.local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        notif.count(),
        0,
        "the other trigger must not see these events"
    );
    assert_eq!(conv.count(), 2, "exactly once each here");
    runner.shutdown().await;
}

#[tokio::test]
async fn retries_per_the_delivery_spec_then_succeeds() {
    let ns = unique("retry");
    // 500, 500, 500, then 202: retry 3 → attempts 1..4, the 4th succeeds.
    let sub = Recorder::start(Duration::ZERO, |n, _| {
        if n < 3 {
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        } else {
            StatusCode::ACCEPTED.into_response()
        }
    })
    .await;
    let topo = topology(&[
        broker_yaml(&ns),
        trigger_yaml(
            &ns,
            "t",
            Some(T_UPLOADED),
            "sub",
            Some(&fast_delivery(3, "exponential")),
            1,
        ),
    ]);
    let _cleanup = Cleanup {
        amqp_url: shared_amqp_url(),
        topology: topo.clone(),
    };
    let mut subs = SubscriberMap::new();
    subs.insert("sub", &sub.url).unwrap();
    let runner = start_runner(topo, subs, &shared_amqp_url()).await;
    let started = std::time::Instant::now();
    assert_eq!(
        post_binary(
            &runner.ingress_url(&ns, "default"),
            "r-1",
            T_UPLOADED,
            serde_json::json!({})
        )
        .await,
        202
    );
    let got = sub.wait_for(4, Duration::from_secs(10)).await;
    // Exponential backoff from 20 ms: 40 + 80 + 160 ms before retries 1..3.
    assert!(
        started.elapsed() >= Duration::from_millis(280),
        "backoff too short: {:?}",
        started.elapsed()
    );
    assert!(got.iter().all(|r| r.header("ce-id") == Some("r-1")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sub.count(), 4, "no attempt after the success");
    runner.shutdown().await;
    assert!(
        drain_queue(&shared_amqp_url(), &dlq_name(&ns, "t"))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn exhausted_retries_and_final_statuses_are_dead_lettered() {
    let ns = unique("dead");
    let always_503 = Recorder::start(Duration::ZERO, |_, _| {
        (StatusCode::SERVICE_UNAVAILABLE, "converter overloaded").into_response()
    })
    .await;
    let bad_request = Recorder::start(Duration::ZERO, |_, _| {
        (StatusCode::BAD_REQUEST, "bad data").into_response()
    })
    .await;
    let no_spec = Recorder::start(Duration::ZERO, |_, _| {
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    })
    .await;
    let dls = Recorder::accepting().await;
    let with_dls = |retry| {
        format!(
            "{}    deadLetterSink:\n      ref:\n        apiVersion: serving.knative.dev/v1\n        kind: Service\n        name: dead-letters\n",
            fast_delivery(retry, "linear")
        )
    };
    let topo = topology(&[
        broker_yaml(&ns),
        trigger_yaml(
            &ns,
            "exhaust",
            Some("t.exhaust"),
            "s503",
            Some(&with_dls(2)),
            1,
        ),
        trigger_yaml(&ns, "final", Some("t.final"), "s400", Some(&with_dls(4)), 1),
        trigger_yaml(&ns, "nospec", Some("t.nospec"), "s500", None, 1),
    ]);
    let _cleanup = Cleanup {
        amqp_url: shared_amqp_url(),
        topology: topo.clone(),
    };
    let mut subs = SubscriberMap::new();
    subs.insert("s503", &always_503.url).unwrap();
    subs.insert("s400", &bad_request.url).unwrap();
    subs.insert("s500", &no_spec.url).unwrap();
    subs.insert("dead-letters", &dls.url).unwrap();
    let runner = start_runner(topo, subs, &shared_amqp_url()).await;
    let ingress = runner.ingress_url(&ns, "default");
    assert_eq!(
        post_binary(&ingress, "e-1", "t.exhaust", serde_json::json!({"k": 1})).await,
        202
    );
    assert_eq!(
        post_binary(&ingress, "f-1", "t.final", serde_json::json!({"k": 2})).await,
        202
    );
    assert_eq!(
        post_binary(&ingress, "n-1", "t.nospec", serde_json::json!({"k": 3})).await,
        202
    );

    // The sink gets both dead letters of the triggers that have one.
    let dead = dls.wait_for(2, Duration::from_secs(10)).await;
    let by_id = |id: &str| {
        dead.iter()
            .find(|r| r.header("ce-id") == Some(id))
            .cloned()
            .unwrap()
    };
    let e = by_id("e-1");
    assert_eq!(
        e.header("ce-knativeerrordest"),
        Some(always_503.url.as_str())
    );
    assert_eq!(e.header("ce-knativeerrorcode"), Some("503"));
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD
        .decode(e.header("ce-knativeerrordata").unwrap())
        .unwrap();
    assert_eq!(data, b"converter overloaded");
    assert_eq!(e.header("ce-type"), Some("t.exhaust"));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&e.body).unwrap(),
        serde_json::json!({"k": 1})
    );
    let f = by_id("f-1");
    assert_eq!(f.header("ce-knativeerrorcode"), Some("400"));
    assert_eq!(
        f.header("ce-knativeerrordest"),
        Some(bad_request.url.as_str())
    );

    // Attempts: retry + 1 for 503, a single one for 400 and without a delivery spec.
    no_spec.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(always_503.count(), 3);
    assert_eq!(bad_request.count(), 1);
    assert_eq!(no_spec.count(), 1);

    // And every dead letter is kept in its trigger's durable dead-letter queue.
    let amqp = shared_amqp_url();
    let q = wait_queue(&amqp, &dlq_name(&ns, "exhaust"), 1, Duration::from_secs(5)).await;
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].id(), "e-1");
    assert_eq!(q[0].attr("knativeerrorcode"), Some("503"));
    assert_eq!(q[0].attr("knativeerrordest"), Some(always_503.url.as_str()));
    let q = wait_queue(&amqp, &dlq_name(&ns, "final"), 1, Duration::from_secs(5)).await;
    assert_eq!(q[0].attr("knativeerrorcode"), Some("400"));
    let q = wait_queue(&amqp, &dlq_name(&ns, "nospec"), 1, Duration::from_secs(5)).await;
    assert_eq!(q[0].attr("knativeerrorcode"), Some("500"));
    assert_eq!(q[0].id(), "n-1");
    runner.shutdown().await;
}

#[tokio::test]
async fn a_reply_event_is_published_back_and_routed_to_the_other_trigger() {
    let ns = unique("reply");
    // The "converter" replies with a binary-mode event for the first request and a
    // structured-mode one for the second (both are replies per the HTTP binding).
    let conv = Recorder::start(Duration::ZERO, |n, req| {
        let job = req.header("ce-id").unwrap_or("?").to_string();
        if n % 2 == 0 {
            (
                StatusCode::OK,
                [
                    ("ce-specversion", "1.0".to_string()),
                    ("ce-id", format!("reply-{job}")),
                    ("ce-source", "/converter".to_string()),
                    ("ce-type", T_CONVERTED.to_string()),
                    ("content-type", "application/json".to_string()),
                ],
                serde_json::json!({"job_id": job, "mode": "binary"}).to_string(),
            )
                .into_response()
        } else {
            let body = serde_json::json!({
                "specversion": "1.0", "id": format!("reply-{job}"), "source": "/converter",
                "type": T_CONVERTED, "datacontenttype": "application/json",
                "data": {"job_id": job, "mode": "structured"}
            });
            (
                StatusCode::OK,
                [("content-type", "application/cloudevents+json")],
                body.to_string(),
            )
                .into_response()
        }
    })
    .await;
    let notif = Recorder::accepting().await;
    let topo = topology(&[
        broker_yaml(&ns),
        trigger_yaml(
            &ns,
            "conv",
            Some(T_UPLOADED),
            "converter",
            Some(&fast_delivery(2, "exponential")),
            1,
        ),
        trigger_yaml(
            &ns,
            "notif",
            Some(T_CONVERTED),
            "notification",
            Some(&fast_delivery(2, "exponential")),
            1,
        ),
    ]);
    let _cleanup = Cleanup {
        amqp_url: shared_amqp_url(),
        topology: topo.clone(),
    };
    let mut subs = SubscriberMap::new();
    subs.insert("converter", &conv.url).unwrap();
    subs.insert("notification", &notif.url).unwrap();
    let runner = start_runner(topo, subs, &shared_amqp_url()).await;
    let ingress = runner.ingress_url(&ns, "default");
    assert_eq!(
        post_binary(&ingress, "u-1", T_UPLOADED, serde_json::json!({})).await,
        202
    );
    conv.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        post_binary(&ingress, "u-2", T_UPLOADED, serde_json::json!({})).await,
        202
    );
    let got = notif.wait_for(2, Duration::from_secs(10)).await;
    let mut seen: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            assert_eq!(r.header("ce-type"), Some(T_CONVERTED));
            assert_eq!(r.header("ce-source"), Some("/converter"));
            assert_eq!(r.header("prefer"), Some("reply"));
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            (
                r.header("ce-id").unwrap().to_string(),
                v["mode"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("reply-u-1".to_string(), "binary".to_string()),
            ("reply-u-2".to_string(), "structured".to_string())
        ]
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        conv.count(),
        2,
        "a reply is not routed back to the converter"
    );
    assert_eq!(notif.count(), 2);
    runner.shutdown().await;
}

#[tokio::test]
async fn parallelism_bounds_concurrent_deliveries() {
    let ns = unique("par");
    let sub = Recorder::start(Duration::from_millis(250), |_, _| {
        StatusCode::ACCEPTED.into_response()
    })
    .await;
    let topo = topology(&[
        broker_yaml(&ns),
        trigger_yaml(&ns, "par", Some(T_UPLOADED), "sub", None, 3),
    ]);
    let _cleanup = Cleanup {
        amqp_url: shared_amqp_url(),
        topology: topo.clone(),
    };
    let mut subs = SubscriberMap::new();
    subs.insert("sub", &sub.url).unwrap();
    let runner = start_runner(topo, subs, &shared_amqp_url()).await;
    let ingress = runner.ingress_url(&ns, "default");
    let posts = (0..9).map(|i| {
        let ingress = ingress.clone();
        async move {
            post_binary(
                &ingress,
                &format!("p-{i}"),
                T_UPLOADED,
                serde_json::json!({"i": i}),
            )
            .await
        }
    });
    for status in futures::future::join_all(posts).await {
        assert_eq!(status, 202);
    }
    let started = std::time::Instant::now();
    sub.wait_for(9, Duration::from_secs(10)).await;
    // Wait for the last responses too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sub.max_in_flight(),
        3,
        "exactly parallelism deliveries in flight"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "9 events × 250 ms / 3 in flight"
    );
    runner.shutdown().await;
}

#[tokio::test]
async fn a_trigger_without_filter_gets_every_event() {
    let ns = unique("all");
    let all = Recorder::accepting().await;
    let topo = topology(&[
        broker_yaml(&ns),
        trigger_yaml(&ns, "all", None, "all", None, 2),
    ]);
    let _cleanup = Cleanup {
        amqp_url: shared_amqp_url(),
        topology: topo.clone(),
    };
    let mut subs = SubscriberMap::new();
    subs.insert("all", &all.url).unwrap();
    let runner = start_runner(topo, subs, &shared_amqp_url()).await;
    let ingress = runner.ingress_url(&ns, "default");
    assert_eq!(
        post_binary(&ingress, "a-1", "x.one", serde_json::json!({})).await,
        202
    );
    assert_eq!(
        post_structured(&ingress, "a-2", "x.two", serde_json::json!({})).await,
        202
    );
    all.wait_for(2, Duration::from_secs(10)).await;
    runner.shutdown().await;
}

/// A `deadLetterSink:` block (YAML, indented 4) naming the `dead-letters` ksvc.
const DEAD_LETTERS_SINK: &str = "    deadLetterSink:\n      ref:\n        apiVersion: serving.knative.dev/v1\n        kind: Service\n        name: dead-letters\n";

/// A TCP server that accepts connections and closes them at once without answering: an HTTP
/// client sees no response. Returns its URL and the number of connections it accepted.
async fn hang_up_server() -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(socket);
        }
    });
    (url, accepted, task)
}

/// A URL on 127.0.0.1 where nothing listens (the port was free a moment ago): connection refused.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    url
}

#[tokio::test]
async fn slow_and_silent_subscribers_are_retried_then_dead_lettered_with_code_0() {
    let ns = unique("timeout");
    // Answers 202, but only after 1.5 s: past the 0.3 s per-attempt timeout. Were the timeout not
    // applied, the first attempt would succeed and nothing would be dead-lettered.
    let slow = Recorder::start(Duration::from_millis(1500), |_, _| {
        StatusCode::ACCEPTED.into_response()
    })
    .await;
    let (hang_up_url, hang_ups, _hang_up_task) = hang_up_server().await;
    let refused_url = closed_port_url();
    let dls = Recorder::accepting().await;
    let delivery = |retry: u32| {
        format!(
            "    retry: {retry}\n    backoffPolicy: linear\n    backoffDelay: PT0.02S\n    timeout: PT0.3S\n{DEAD_LETTERS_SINK}"
        )
    };
    let topo = topology(&[
        broker_yaml(&ns),
        trigger_yaml(&ns, "slow", Some("t.slow"), "slow", Some(&delivery(2)), 1),
        trigger_yaml(
            &ns,
            "hangup",
            Some("t.hangup"),
            "hangup",
            Some(&delivery(3)),
            1,
        ),
        trigger_yaml(
            &ns,
            "refused",
            Some("t.refused"),
            "refused",
            Some(&delivery(1)),
            1,
        ),
    ]);
    let _cleanup = Cleanup {
        amqp_url: shared_amqp_url(),
        topology: topo.clone(),
    };
    let mut subs = SubscriberMap::new();
    subs.insert("slow", &slow.url).unwrap();
    subs.insert("hangup", &hang_up_url).unwrap();
    subs.insert("refused", &refused_url).unwrap();
    subs.insert("dead-letters", &dls.url).unwrap();
    let runner = start_runner(topo, subs, &shared_amqp_url()).await;
    let ingress = runner.ingress_url(&ns, "default");
    for (id, ty) in [
        ("slow-1", "t.slow"),
        ("hangup-1", "t.hangup"),
        ("refused-1", "t.refused"),
    ] {
        assert_eq!(
            post_binary(&ingress, id, ty, serde_json::json!({"id": id})).await,
            202
        );
    }

    let dead = dls.wait_for(3, Duration::from_secs(20)).await;
    let by_id = |id: &str| {
        dead.iter()
            .find(|r| r.header("ce-id") == Some(id))
            .cloned()
            .unwrap_or_else(|| panic!("no dead letter for {id}"))
    };
    use base64::Engine;
    let error_data = |r: &Recorded| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(r.header("ce-knativeerrordata").expect("knativeerrordata"))
                .unwrap(),
        )
        .unwrap()
    };
    // No response within the timeout, no response at all, no connection: all are code 0.
    for (id, dest) in [
        ("slow-1", slow.url.as_str()),
        ("hangup-1", hang_up_url.as_str()),
        ("refused-1", refused_url.as_str()),
    ] {
        let d = by_id(id);
        assert_eq!(d.header("ce-knativeerrorcode"), Some("0"), "{id}");
        assert_eq!(d.header("ce-knativeerrordest"), Some(dest), "{id}");
        let data = error_data(&d);
        assert!(data.starts_with("dispatch error"), "{id}: {data}");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&d.body).unwrap(),
            serde_json::json!({"id": id})
        );
    }
    assert!(
        error_data(&by_id("slow-1")).contains("timed out"),
        "the slow subscriber failed on the timeout"
    );

    // Every attempt was made: retry + 1 of them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(slow.count(), 3, "retry 2 -> 3 attempts, each cut at 0.3 s");
    assert_eq!(
        hang_ups.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "retry 3 -> 4 attempts"
    );
    assert!(
        slow.requests()
            .iter()
            .all(|r| r.header("ce-id") == Some("slow-1"))
    );

    // And the dead letters are kept in the Triggers' dead-letter queues too.
    let amqp = shared_amqp_url();
    for (trigger, id) in [
        ("slow", "slow-1"),
        ("hangup", "hangup-1"),
        ("refused", "refused-1"),
    ] {
        let q = wait_queue(&amqp, &dlq_name(&ns, trigger), 1, Duration::from_secs(5)).await;
        assert_eq!(q.len(), 1, "{trigger}");
        assert_eq!(q[0].id(), id);
        assert_eq!(q[0].attr("knativeerrorcode"), Some("0"));
    }
    runner.shutdown().await;
}

/// A queue that refuses every message (`x-max-length: 0`, `x-overflow: reject-publish`), bound
/// to `exchange` with `x-match: all` plus `filter`: RabbitMQ then nacks every publish routed to
/// it (publisher confirms), even when other queues took the message. Exclusive to the returned
/// connection, so it disappears with it.
async fn refusing_queue(exchange: &str, filter: &[(&str, &str)]) -> lapin::Connection {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
    let conn = lapin::Connection::connect(&shared_amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-max-length"), AMQPValue::LongLongInt(0));
    args.insert(
        ShortString::from("x-overflow"),
        AMQPValue::LongString(LongString::from("reject-publish")),
    );
    let queue = ch
        .queue_declare(
            ShortString::from(""),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
    let mut bind = FieldTable::default();
    bind.insert(
        ShortString::from("x-match"),
        AMQPValue::LongString(LongString::from("all")),
    );
    for (k, v) in filter {
        bind.insert(
            ShortString::from(*k),
            AMQPValue::LongString(LongString::from(v.as_bytes())),
        );
    }
    ch.queue_bind(
        queue.name().clone(),
        ShortString::from(exchange),
        ShortString::from(""),
        QueueBindOptions::default(),
        bind,
    )
    .await
    .unwrap();
    conn
}

#[tokio::test]
async fn a_publish_rabbitmq_refuses_is_answered_503_not_202() {
    let ns = unique("nack");
    let sub = Recorder::accepting().await;
    let topo = topology(&[
        broker_yaml(&ns),
        trigger_yaml(&ns, "t", Some(T_UPLOADED), "sub", None, 1),
    ]);
    let _cleanup = Cleanup {
        amqp_url: shared_amqp_url(),
        topology: topo.clone(),
    };
    let mut subs = SubscriberMap::new();
    subs.insert("sub", &sub.url).unwrap();
    let runner = start_runner(topo, subs, &shared_amqp_url()).await;
    let ingress = runner.ingress_url(&ns, "default");

    let refusing = refusing_queue(&eventing::amqp::exchange_name(&ns, "default"), &[]).await;
    let resp = reqwest::Client::new()
        .post(&ingress)
        .header("ce-specversion", "1.0")
        .header("ce-id", "n-1")
        .header("ce-source", "/test")
        .header("ce-type", T_UPLOADED)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503, "a nacked publish is not accepted");
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert_eq!(resp.headers()["retry-after"], "1");
    let problem: serde_json::Value = resp.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("nack"),
        "{problem}"
    );

    // The same event once RabbitMQ takes it again: 202.
    refusing.close(200, "done".into()).await.unwrap();
    assert_eq!(
        post_binary(&ingress, "n-2", T_UPLOADED, serde_json::json!({})).await,
        202
    );
    sub.wait_for(1, Duration::from_secs(10)).await;
    runner.shutdown().await;
}

#[tokio::test]
async fn an_event_whose_reply_rabbitmq_refuses_is_not_acked_but_delivered_again() {
    let ns = unique("replynack");
    let conv = Recorder::start(Duration::ZERO, |_, req| {
        let id = req.header("ce-id").unwrap_or("?").to_string();
        (
            StatusCode::OK,
            [
                ("ce-specversion", "1.0".to_string()),
                ("ce-id", format!("reply-{id}")),
                ("ce-source", "/converter".to_string()),
                ("ce-type", T_CONVERTED.to_string()),
                ("content-type", "application/json".to_string()),
            ],
            serde_json::json!({"job_id": id}).to_string(),
        )
            .into_response()
    })
    .await;
    let notif = Recorder::accepting().await;
    let topo = topology(&[
        broker_yaml(&ns),
        trigger_yaml(&ns, "conv", Some(T_UPLOADED), "converter", None, 1),
        trigger_yaml(&ns, "notif", Some(T_CONVERTED), "notification", None, 1),
    ]);
    let _cleanup = Cleanup {
        amqp_url: shared_amqp_url(),
        topology: topo.clone(),
    };
    let mut subs = SubscriberMap::new();
    subs.insert("converter", &conv.url).unwrap();
    subs.insert("notification", &notif.url).unwrap();
    let runner = start_runner(topo, subs, &shared_amqp_url()).await;
    let ingress = runner.ingress_url(&ns, "default");

    // Only the replies are refused; the original event is stored normally.
    let refusing = refusing_queue(
        &eventing::amqp::exchange_name(&ns, "default"),
        &[("type", T_CONVERTED)],
    )
    .await;
    assert_eq!(
        post_binary(&ingress, "u-1", T_UPLOADED, serde_json::json!({})).await,
        202
    );
    // The reply is not confirmed, so u-1 is requeued rather than acked, and comes back.
    let got = conv.wait_for(2, Duration::from_secs(10)).await;
    assert!(got.iter().all(|r| r.header("ce-id") == Some("u-1")));
    // ...but not in a tight loop: each requeue waits REFUSED_PUBLISH_REQUEUE_DELAY (1 s), so 3 s of
    // refusals are a handful of deliveries (hundreds without the pause).
    let before = conv.count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = conv.count() - before;
    assert!(
        (1..=5).contains(&during),
        "{during} deliveries in 3 s while RabbitMQ refused the reply: a retry storm, or none at all"
    );

    // Once replies are taken, the next delivery's reply is confirmed, u-1 is acked, and the
    // deliveries stop.
    refusing.close(200, "done".into()).await.unwrap();
    notif.wait_for(1, Duration::from_secs(10)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let before = conv.count();
        // Quiet for longer than a requeue's pause (REFUSED_PUBLISH_REQUEUE_DELAY).
        tokio::time::sleep(eventing::runner::REFUSED_PUBLISH_REQUEUE_DELAY * 2).await;
        if conv.count() == before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "u-1 is still being redelivered after its reply was stored"
        );
    }
    runner.shutdown().await;
    assert!(
        drain_queue(&shared_amqp_url(), &eventing::amqp::queue_name(&ns, "conv"))
            .await
            .is_empty(),
        "u-1 was acked in the end"
    );
    assert!(
        notif
            .requests()
            .iter()
            .all(|r| r.header("ce-id") == Some("reply-u-1"))
    );
}
