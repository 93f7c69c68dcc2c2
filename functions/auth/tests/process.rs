//! The `auth` binary as Knative runs it: graceful shutdown on SIGTERM with a request in flight, a cold start
//! that does not wait for MySQL, and JSON log lines carrying the request id.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vidmp3_runtime::config::Env;
use vidmp3_runtime::jwt::{JwtKeys, JwtSettings};

const SECRET: &str = "process-test-secret-process-test-secret";

/// A running `auth serve` whose stdout (the JSON log) is collected line by line.
struct Auth {
    child: Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Auth {
    fn start(database_url: &str, extra: &[(&str, &str)]) -> Self {
        let port = testkit::free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_auth"))
            .env("DATABASE_URL", database_url)
            .env("JWT_SECRET", SECRET)
            .env("PORT", port.to_string())
            .env("LOG_FORMAT", "json")
            // tower_http's debug lines say when a request entered the router (see the SIGTERM test).
            .env("RUST_LOG", "info,tower_http=debug")
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("auth starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, port, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits (up to `within`) for `/healthz` to answer 200; panics otherwise.
    async fn wait_healthy(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client.get(self.url("/healthz")).send().await {
                assert_eq!(r.status(), 200);
                return;
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "auth exited before answering /healthz"
            );
            assert!(
                Instant::now() < deadline,
                "/healthz did not answer within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The log lines (parsed) so far.
    fn log_lines(&self) -> Vec<serde_json::Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (up to 20 s) for a log line that `matches`.
    async fn wait_for_log(&self, what: &str, matches: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log_lines().iter().any(&matches) {
            assert!(
                Instant::now() < deadline,
                "no log line {what} in:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (up to 20 s) for the process to exit; its exit code.
    async fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "auth did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Auth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `POST /users` is held in flight deterministically by sending its JSON body in two parts: the handler
/// waits for the rest of the body. SIGTERM arrives in between; the listener closes, then the rest of the
/// body arrives and the request is answered in full before the process exits 0.
#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let database_url = testkit::fresh_mysql_database().await;
    let pool = vidmp3_runtime::db::mysql_pool(&database_url, Duration::from_secs(5)).unwrap();
    auth::users::migrate(&pool).await.unwrap();
    let mut auth = Auth::start(&database_url, &[]);
    auth.wait_healthy(Duration::from_secs(30)).await;

    let keys =
        JwtKeys::new(JwtSettings::from_env(&Env::from_pairs([("JWT_SECRET", SECRET)])).unwrap())
            .unwrap();
    let (admin_token, _) = keys.issue("1", "root@example.com", true).unwrap();
    let body = br#"{"email": "late@example.com", "password": "a long password"}"#;
    let (first, rest) = body.split_at(20);
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", auth.port))
        .await
        .unwrap();
    let head = format!(
        "POST /users HTTP/1.1\r\nHost: auth\r\nAuthorization: Bearer {admin_token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nX-Request-Id: in-flight-1\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(first).await.unwrap();
    // The request is in the router (tower_http logs it on entry) before the signal is sent.
    auth.wait_for_log("for the request entering the router", |l| {
        l["span"]["request_id"] == "in-flight-1"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("started processing request"))
    })
    .await;

    testkit::sigterm(&auth.child);
    assert!(
        testkit::wait_for_port_closed(auth.port, Duration::from_secs(10)).await,
        "auth still accepts connections after SIGTERM"
    );
    assert!(
        auth.child.try_wait().unwrap().is_none(),
        "auth exited with a request in flight"
    );

    stream.write_all(rest).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("the in-flight request is answered and the connection closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains("late@example.com"), "{answer}");
    assert_eq!(auth.wait_exit().await, Some(0), "exit status after SIGTERM");

    let (count,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM users WHERE email = 'late@example.com'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(count, 1, "the user created during the drain is stored");
    // The handler's own log line carries the request id it was logged in.
    let lines = auth.log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "user created" && l["span"]["request_id"] == "in-flight-1"),
        "{lines:#?}"
    );
}

/// A cold start never waits for MySQL (the pool connects lazily): `/healthz` answers while no database
/// connection could be made, and `/readyz` says MySQL is not ready.
#[tokio::test]
async fn with_mysql_unreachable_healthz_answers_and_readyz_is_503() {
    // A closed port (connections refused at once) and a port that accepts TCP but never speaks MySQL (a
    // connection attempt would wait the whole 30 s DB_CONNECT_TIMEOUT_SECONDS).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    for (what, port) in [
        ("closed port", testkit::free_port()),
        ("silent port", silent_port),
    ] {
        let mut auth = Auth::start(
            &format!("mysql://app:pw@127.0.0.1:{port}/vidmp3"),
            &[("DB_CONNECT_TIMEOUT_SECONDS", "30")],
        );
        // Well below the 30 s a MySQL connection attempt may take: the start did not wait for one.
        auth.wait_healthy(Duration::from_secs(15)).await;
        let ready = reqwest::get(auth.url("/readyz")).await.unwrap();
        assert_eq!(ready.status(), 503, "{what}");
        let body: serde_json::Value = ready.json().await.unwrap();
        assert_eq!(body["ready"], false, "{what}");
        assert_ne!(body["checks"]["mysql"], "ok", "{what}: {body}");
        // Still alive and answering after the failed check.
        let again = reqwest::get(auth.url("/healthz")).await.unwrap();
        assert_eq!(again.status(), 200, "{what}");
    }
    drop(silent);
}
