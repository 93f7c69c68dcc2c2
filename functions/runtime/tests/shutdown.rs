//! Graceful shutdown: once the signal comes, new connections are refused but in-flight requests finish.

use std::time::Duration;

use axum::Router;
use axum::routing::get;

#[tokio::test]
async fn in_flight_requests_finish_after_the_shutdown_signal() {
    let router = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            "finished"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(vidmp3_runtime::serve::serve_on(
        listener,
        router,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let client = reqwest::Client::new();
    let in_flight = tokio::spawn(client.get(format!("http://{addr}/slow")).send());
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop_tx.send(()).unwrap();

    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "finished");
    let result = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops")
        .unwrap();
    assert!(result.is_ok());
    let refused = reqwest::Client::new()
        .get(format!("http://{addr}/slow"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(refused.is_err(), "no new connections after shutdown");
}
