//! A port that cannot be bound stops `serve` with one line naming the address and `PORT`, exit status 1.

use std::process::Command;

use axum::Router;

/// Set in the child process this test starts: there the test calls `serve` itself.
const CHILD: &str = "VIDMP3_LISTEN_TEST_CHILD";

#[test]
fn a_busy_port_is_one_line_naming_the_address_and_port_and_exit_1() {
    if std::env::var_os(CHILD).is_some() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let result = runtime.block_on(vidmp3_runtime::serve::serve(Router::new()));
        panic!("serve returned instead of exiting: {result:?}");
    }
    // Held for the whole test: the child's bind of the same port must fail.
    let busy = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_busy_port_is_one_line_naming_the_address_and_port_and_exit_1",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("PORT", port.to_string())
        .env("RUST_BACKTRACE", "1")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env_remove("REQUEST_HEADER_TIMEOUT_SECONDS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, no backtrace: {stderr}");
    assert!(
        lines[0].starts_with(&format!("cannot listen on 0.0.0.0:{port} (PORT): ")),
        "{stderr}"
    );
    assert!(lines[0].contains("in use"), "{stderr}");
    drop(busy);
}

#[tokio::test]
async fn listen_error_names_the_port() {
    let busy = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = busy.local_addr().unwrap().port();
    let err = vidmp3_runtime::serve::listen(port).await.unwrap_err();
    assert_eq!(err.port, port);
    assert_eq!(err.source.kind(), std::io::ErrorKind::AddrInUse);
    assert!(
        err.to_string()
            .starts_with(&format!("cannot listen on 0.0.0.0:{port} (PORT): ")),
        "{err}"
    );
}
