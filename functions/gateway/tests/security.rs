//! The gateway against hostile clients (issue 9's security cases), over HTTP against the real MongoDB-wire
//! server, each test with a database of its own:
//! - forged tokens × protected routes: every pair is 401 with a problem+json body (table-driven: a new route
//!   is one line in [`protected_routes`], a new attack one entry in `testkit::jwt::Forger::attacks`), both
//!   when the gateway verifies tokens itself and with `TOKEN_VERIFICATION=auth` (a real auth router);
//! - login brute force through the gateway (to a real auth on MariaDB) is 429 for the account, whatever
//!   address the client claims in `X-Forwarded-For`, and does not lock out other clients' accounts, even
//!   when they send no `X-Forwarded-For` (the gateway appends the peer's address);
//! - another user's jobs and files are 404, exactly like unknown ones, and never listed;
//! - a trickled request head is cut off by `REQUEST_HEADER_TIMEOUT_SECONDS`, a stalled body by
//!   `UPLOAD_IDLE_TIMEOUT_SECONDS`, a trickled body by `UPLOAD_TIMEOUT_SECONDS`, and a never-ending body by
//!   `MAX_UPLOAD_BYTES` (413, connection closed) — leaving nothing in GridFS and with the gateway's peak
//!   memory flat. Those tests run the real `gateway` binary, so its settings come from the environment as
//!   in production and its memory can be read from `/proc`.
//!
//! `POST /internal/redeliver` is deliberately not token-protected (a PingSource cannot send a token): it
//! only re-sends pending events, idempotently, and answers two counts; [`redeliver_is_open_but_reveals_nothing`]
//! pins that down.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::serve;

use axum::Router;
use axum::routing::post;
use futures::AsyncWriteExt as _;
use gateway::{AppState, Settings};
use mongodb::bson::{Bson, DateTime, doc, oid::ObjectId};
use serde_json::Value;
use testkit::jwt::Forger;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vidmp3_runtime::config::Env;
use vidmp3_runtime::jobs;

const SECRET: &str = "gateway-security-secret-gateway-security";

/// A gateway router served in process, with no sink (events stay pending) and no auth behind `/login`.
struct App {
    url: String,
    state: AppState,
    client: reqwest::Client,
    forger: Forger,
}

async fn spawn_app() -> App {
    let auth = serve(Router::new().route("/login", post(|| async { "unused" }))).await;
    spawn_app_with(&auth, &[]).await
}

/// A gateway in front of the auth at `auth_url`; `extra` adds or overrides variables.
async fn spawn_app_with(auth_url: &str, extra: &[(&str, &str)]) -> App {
    testkit::ensure_services();
    let database = testkit::unique_name("gwsec");
    let mongo = testkit::shared_mongo_uri();
    let mut vars = vec![
        ("AUTH_URL", auth_url),
        ("MONGODB_URI", mongo.as_str()),
        ("MONGODB_DATABASE", database.as_str()),
        ("JWT_SECRET", SECRET),
        ("PUBLIC_BASE_URL", "http://gateway.test"),
        ("DB_CONNECT_TIMEOUT_SECONDS", "5"),
    ];
    vars.extend_from_slice(extra);
    let settings = Settings::from_env(&Env::from_pairs(vars)).unwrap();
    let state = AppState::new(settings).await.unwrap();
    let url = serve(gateway::router(state.clone())).await;
    App {
        url,
        state,
        client: reqwest::Client::new(),
        forger: Forger::new(SECRET),
    }
}

/// A few bytes that sniff as an MP4 (ftyp box) followed by filler.
fn fake_video(len: usize) -> Vec<u8> {
    let mut v = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41".to_vec();
    v.resize(len, 0xAB);
    v
}

fn email(sub: &str) -> String {
    format!("user{sub}@example.com")
}

impl App {
    fn token(&self, sub: &str) -> String {
        self.forger.valid(sub, &email(sub), false)
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
    ) -> reqwest::Response {
        let url = format!("{}{path}", self.url);
        let mut req = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            "POST" => self
                .client
                .post(url)
                .header("content-type", "video/mp4")
                .body(fake_video(4096)),
            other => panic!("no such method {other}"),
        };
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        req.send().await.unwrap()
    }

    async fn upload(&self, token: &str) -> String {
        let r = self
            .send(
                "POST",
                "/upload?filename=clip.mp4",
                Some(&format!("Bearer {token}")),
            )
            .await;
        assert_eq!(r.status(), 202);
        r.json::<Value>().await.unwrap()["job_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Marks a job converted with a small MP3 in GridFS, as the converter would; returns the MP3's id.
    async fn fake_conversion(&self, job_id: &str) -> ObjectId {
        let id = ObjectId::new();
        let mut upload = self
            .state
            .mp3s
            .open_upload_stream("x.mp3")
            .id(Bson::ObjectId(id))
            .await
            .unwrap();
        upload.write_all(b"ID3 not really an mp3").await.unwrap();
        upload.close().await.unwrap();
        jobs::jobs(&self.state.db)
            .update_one(
                doc! {"_id": job_id},
                doc! {"$set": {"state": "converted", "mp3_id": id, "duration_s": 1.0, "mp3_size_bytes": 21, "bitrate_kbps": 128, "updated_at": DateTime::now()}},
            )
            .await
            .unwrap();
        id
    }

    async fn count(&self, collection: &str) -> u64 {
        count(&self.state.db, collection).await
    }
}

async fn count(db: &mongodb::Database, collection: &str) -> u64 {
    db.collection::<mongodb::bson::Document>(collection)
        .count_documents(doc! {})
        .await
        .unwrap()
}

/// Every token-protected route of the gateway as (method, path); `{job}` and `{mp3}` are replaced by a real
/// job id and MP3 file id of the token's user. One line per route.
fn protected_routes() -> Vec<(&'static str, &'static str)> {
    vec![
        ("GET", "/jobs"),
        ("GET", "/jobs?limit=5"),
        ("GET", "/jobs/{job}"),
        ("GET", "/jobs/{job}/mp3"),
        ("GET", "/download?fid={mp3}"),
        ("POST", "/upload?filename=forged.mp4"),
        ("DELETE", "/jobs/{job}"),
    ]
}

/// A 401 with an RFC 9457 body saying 401.
async fn assert_unauthorized(r: reqwest::Response, what: &str) {
    assert_eq!(r.status(), 401, "{what}");
    assert_eq!(
        r.headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("application/problem+json".to_owned()),
        "{what}"
    );
    let body: Value = r.json().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(body["status"], 401, "{what}: {body}");
    assert!(
        body["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{what}: {body}"
    );
}

/// A real auth router with the same secret, on a fresh MariaDB database when `database` is set (else on a
/// database it never reaches: `/validate` needs none).
async fn spawn_auth(extra: &[(&str, &str)], database: bool) -> (String, auth::AppState) {
    let database_url = if database {
        testkit::fresh_mysql_database().await
    } else {
        "mysql://nobody:nothing@127.0.0.1:9/unused".to_owned()
    };
    let mut vars = vec![
        ("DATABASE_URL", database_url.as_str()),
        ("JWT_SECRET", SECRET),
    ];
    vars.extend_from_slice(extra);
    let settings = auth::Settings::from_env(&Env::from_pairs(vars)).unwrap();
    let state = auth::AppState::new(&settings).unwrap();
    if database {
        auth::users::migrate(&state.pool).await.unwrap();
    }
    (serve(auth::router(state.clone())).await, state)
}

#[tokio::test]
async fn every_forged_token_is_401_with_a_problem_on_every_protected_route() {
    forged_tokens_are_refused_on_every_route(&spawn_app().await).await;
}

#[tokio::test]
async fn with_token_verification_by_auth_every_forged_token_is_401_too() {
    let (auth, _) = spawn_auth(&[], false).await;
    let app = spawn_app_with(&auth, &[("TOKEN_VERIFICATION", "auth")]).await;
    forged_tokens_are_refused_on_every_route(&app).await;
}

async fn forged_tokens_are_refused_on_every_route(app: &App) {
    let sub = "41";
    let token = app.token(sub);
    let job = app.upload(&token).await;
    let mp3 = app.fake_conversion(&job).await.to_hex();
    let routes = protected_routes();
    let attacks = app.forger.attacks(sub, &email(sub), false);
    assert!(attacks.len() >= 25);
    for attack in &attacks {
        for (method, template) in &routes {
            let path = template.replace("{job}", &job).replace("{mp3}", &mp3);
            let r = app
                .send(method, &path, attack.authorization.as_deref())
                .await;
            assert_unauthorized(r, &format!("{} on {method} {path}", attack.name)).await;
        }
    }
    // An admin claim does not help a forged token either.
    for attack in app.forger.attacks(sub, &email(sub), true) {
        let r = app
            .send("GET", "/jobs", attack.authorization.as_deref())
            .await;
        assert_unauthorized(r, &format!("admin {} on GET /jobs", attack.name)).await;
    }
    // Nothing got through: still exactly the one job and video, and the job is intact.
    assert_eq!(app.count("jobs").await, 1);
    assert_eq!(app.count("videos.files").await, 1);
    // The positive control: the same user's real token passes every route (so each 401 above was the
    // forgery's doing), DELETE last.
    for (method, template) in &routes {
        let path = template.replace("{job}", &job).replace("{mp3}", &mp3);
        let r = app
            .send(method, &path, Some(&format!("Bearer {token}")))
            .await;
        let expected = match *method {
            "POST" => 202,
            "DELETE" => 204,
            _ => 200,
        };
        assert_eq!(r.status(), expected, "valid token on {method} {path}");
    }
}

#[tokio::test]
async fn redeliver_is_open_but_reveals_nothing() {
    let app = spawn_app().await;
    let token = app.token("5");
    app.upload(&token).await;
    let r = app
        .client
        .post(format!("{}/internal/redeliver", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["failed", "sent"], "{body}");
    // Without K_SINK nothing can be sent: the pending event stays pending, nothing else happens.
    assert_eq!(body["sent"], 0);
    assert_eq!(app.count("jobs").await, 1);
}

fn basic(email: &str, password: &str) -> String {
    use base64::Engine;
    let pair = format!("{email}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// A client rotating the X-Forwarded-For it sends stays one client for auth's per-client bound: the gateway
/// (TRUSTED_PROXY_HOPS=0) forwards the address it saw, and auth (TRUSTED_PROXY_HOPS=1) keys on it.
#[tokio::test]
async fn a_client_rotating_x_forwarded_for_through_the_gateway_reaches_its_own_429() {
    let (auth, _) = spawn_auth(
        &[
            ("LOGIN_MAX_FAILURES", "2"),
            ("LOGIN_MAX_CLIENT_FAILURES", "4"),
        ],
        true,
    )
    .await;
    let app = spawn_app_with(&auth, &[]).await;
    let login = |email: String, claimed: String| {
        app.client
            .post(format!("{}/login", app.url))
            .header("authorization", basic(&email, "a guess"))
            .header("x-forwarded-for", claimed)
            .send()
    };
    for i in 0..4 {
        let r = login(format!("t{i}@example.com"), format!("198.51.100.{i}"))
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "attempt {i}");
    }
    let r = login("t9@example.com".into(), "198.51.100.250".into())
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        429,
        "rotating X-Forwarded-For escaped the client bound"
    );
    let (_, body) = problem_of(r).await;
    assert_eq!(body["code"], "too_many_attempts");
}

#[tokio::test]
async fn login_brute_force_through_the_gateway_is_429_whatever_the_client_claims_to_be() {
    let (auth, auth_state) = spawn_auth(&[("LOGIN_MAX_FAILURES", "3")], true).await;
    for email in ["victim@example.com", "bystander@example.com"] {
        let hash = auth::password::hash("the right password".to_owned())
            .await
            .unwrap();
        auth::users::create(
            &auth_state.pool,
            &auth::users::Email::parse(email).unwrap(),
            &hash,
            false,
        )
        .await
        .unwrap();
    }
    let app = spawn_app_with(&auth, &[]).await;
    let login = |email: &str, password: &str, client: &str| {
        app.client
            .post(format!("{}/login", app.url))
            .header("authorization", basic(email, password))
            .header("x-forwarded-for", client)
            .send()
    };
    for guess in ["123456", "password", "qwerty"] {
        let r = login("victim@example.com", guess, "203.0.113.5")
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "guess {guess}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    // Locked: even the right password, and from any address the attacker claims (the account is locked,
    // not just the client).
    for client in ["203.0.113.5", "203.0.113.99", "198.51.100.200"] {
        let r = login("victim@example.com", "the right password", client)
            .await
            .unwrap();
        assert_eq!(r.status(), 429, "from {client}");
        let retry_after: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (1..=300).contains(&retry_after),
            "Retry-After {retry_after}"
        );
        let (_, body) = problem_of(r).await;
        assert_eq!(body["code"], "too_many_attempts");
    }
    // Another client logging into another account is not locked out by the attack.
    let r = login(
        "bystander@example.com",
        "the right password",
        "198.51.100.7",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().starts_with("eyJ"), "a JWT");
}

#[tokio::test]
async fn without_x_forwarded_for_auth_still_tells_the_gateways_clients_apart() {
    let (auth, auth_state) = spawn_auth(
        &[
            ("LOGIN_MAX_FAILURES", "3"),
            ("LOGIN_MAX_CLIENT_FAILURES", "3"),
        ],
        true,
    )
    .await;
    for email in [
        "victim@example.com",
        "bystander@example.com",
        "third@example.com",
    ] {
        let hash = auth::password::hash("the right password".to_owned())
            .await
            .unwrap();
        auth::users::create(
            &auth_state.pool,
            &auth::users::Email::parse(email).unwrap(),
            &hash,
            false,
        )
        .await
        .unwrap();
    }
    let app = spawn_app_with(&auth, &[]).await;
    // Two clients on different loopback addresses, neither sending X-Forwarded-For: auth only sees the
    // gateway's connection, so it must learn the client from the gateway.
    let client_from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let (attacker, bystander) = (client_from([127, 0, 0, 2]), client_from([127, 0, 0, 3]));
    let login = |client: &reqwest::Client, email: &str, password: &str| {
        client
            .post(format!("{}/login", app.url))
            .header("authorization", basic(email, password))
            .send()
    };
    for account in [
        "victim@example.com",
        "nobody@example.com",
        "victim@example.com",
    ] {
        let r = login(&attacker, account, "a guess").await.unwrap();
        assert_eq!(r.status(), 401);
    }
    // The attacking client is locked out, even for an account it never tried…
    let r = login(&attacker, "third@example.com", "the right password")
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // …and another client is not.
    let r = login(&bystander, "bystander@example.com", "the right password")
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the bystander shares the attacker's lockout"
    );
}

/// The parts of a problem a client can see, minus nothing: two of them are indistinguishable when equal.
async fn problem_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn another_users_jobs_and_files_are_404_exactly_like_unknown_ones_and_never_listed() {
    let app = spawn_app().await;
    let (alice, bob) = (app.token("101"), app.token("102"));
    let alice_job = app.upload(&alice).await;
    let alice_mp3 = app.fake_conversion(&alice_job).await.to_hex();
    let alice_video = jobs::jobs(&app.state.db)
        .find_one(doc! {"_id": &alice_job})
        .await
        .unwrap()
        .unwrap()
        .video_id
        .unwrap()
        .to_hex();
    let bob_job = app.upload(&bob).await;
    let unknown_job = uuid::Uuid::new_v4().to_string();
    let unknown_file = ObjectId::new().to_hex();
    let bearer = |t: &str| format!("Bearer {t}");

    // (method, path with alice's ids, the same path with ids nobody has)
    let cases = [
        (
            "GET",
            format!("/jobs/{alice_job}"),
            format!("/jobs/{unknown_job}"),
        ),
        (
            "GET",
            format!("/jobs/{alice_job}/mp3"),
            format!("/jobs/{unknown_job}/mp3"),
        ),
        (
            "GET",
            format!("/download?fid={alice_mp3}"),
            format!("/download?fid={unknown_file}"),
        ),
        // A video's file id is not a download id, even for its owner's neighbour.
        (
            "GET",
            format!("/download?fid={alice_video}"),
            format!("/download?fid={unknown_file}"),
        ),
        (
            "DELETE",
            format!("/jobs/{alice_job}"),
            format!("/jobs/{unknown_job}"),
        ),
    ];
    for (method, foreign, unknown) in &cases {
        let (status, body) = problem_of(app.send(method, foreign, Some(&bearer(&bob))).await).await;
        let (unknown_status, unknown_body) =
            problem_of(app.send(method, unknown, Some(&bearer(&bob))).await).await;
        assert_eq!(status, 404, "bob {method} {foreign}: {body}");
        assert_eq!(
            (status, &body),
            (unknown_status, &unknown_body),
            "{method} {foreign} must look exactly like {unknown}"
        );
    }
    // Bob's DELETE changed nothing: alice still has her job, its video and its MP3.
    let r = app
        .send("GET", &format!("/jobs/{alice_job}"), Some(&bearer(&alice)))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.send(
            "GET",
            &format!("/download?fid={alice_mp3}"),
            Some(&bearer(&alice))
        )
        .await
        .status(),
        200
    );
    assert_eq!(app.count("videos.files").await, 2);
    assert_eq!(app.count("mp3s.files").await, 1);

    // Lists: each sees exactly their own job, whatever the paging parameters.
    for (token, own, other) in [(&bob, &bob_job, &alice_job), (&alice, &alice_job, &bob_job)] {
        for query in ["", "?limit=100", "?limit=1"] {
            let page: Value = app
                .send("GET", &format!("/jobs{query}"), Some(&bearer(token)))
                .await
                .json()
                .await
                .unwrap();
            let ids: Vec<&str> = page["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["job_id"].as_str().unwrap())
                .collect();
            assert_eq!(ids, [own.as_str()], "/jobs{query}: {page}");
            assert!(!page.to_string().contains(other.as_str()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Slow, stalled and endless uploads, against the real binary
// ---------------------------------------------------------------------------------------------

const MAX_UPLOAD: u64 = 32 * 1024 * 1024;

/// The `gateway` binary on a free port, with short timeouts; killed on drop.
struct Gateway {
    child: Child,
    addr: String,
    db: mongodb::Database,
    forger: Forger,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        drop(self.child.kill());
        drop(self.child.wait());
    }
}

/// `extra` overrides the environment (`UPLOAD_TIMEOUT_SECONDS` is 5 unless set there).
async fn spawn_gateway(extra: &[(&str, &str)]) -> Gateway {
    testkit::ensure_services();
    let port = testkit::free_port();
    let database = testkit::unique_name("gwslow");
    let mongo = testkit::shared_mongo_uri();
    let mut command = Command::new(env!("CARGO_BIN_EXE_gateway"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PORT", port.to_string())
        .env("AUTH_URL", "http://127.0.0.1:9")
        .env("MONGODB_URI", &mongo)
        .env("MONGODB_DATABASE", &database)
        .env("JWT_SECRET", SECRET)
        .env("MAX_UPLOAD_BYTES", MAX_UPLOAD.to_string())
        .env("REQUEST_HEADER_TIMEOUT_SECONDS", "2")
        .env("UPLOAD_IDLE_TIMEOUT_SECONDS", "2")
        .env("UPLOAD_TIMEOUT_SECONDS", "5")
        .env("RUST_LOG", "warn")
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = command.spawn().expect("the gateway binary starts");
    let db = mongodb::Client::with_uri_str(&mongo)
        .await
        .unwrap()
        .database(&database);
    let gateway = Gateway {
        child,
        addr: format!("127.0.0.1:{port}"),
        db,
        forger: Forger::new(SECRET),
    };
    assert!(
        testkit::wait_for_port(port, Duration::from_secs(30)).await,
        "the gateway listens on {port}"
    );
    gateway
}

impl Gateway {
    /// The peak resident set size of the process so far (`VmHWM`), in bytes.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    }

    fn head(&self, extra_headers: &str) -> String {
        let token = self.forger.valid("9", "user9@example.com", false);
        format!(
            "POST /upload?filename=slow.mp4 HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n{extra_headers}\r\n",
            self.addr
        )
    }

    /// Waits until GridFS and the jobs collection are empty (a dropped upload's chunks are deleted in the
    /// background), failing after 15 s.
    async fn assert_nothing_stored(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let counts = (
                count(&self.db, "videos.files").await,
                count(&self.db, "videos.chunks").await,
                count(&self.db, "jobs").await,
            );
            if counts == (0, 0, 0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "left behind (files, chunks, jobs): {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A plain request still works: the server survived.
    async fn assert_healthy(&self) {
        let r = reqwest::get(format!("http://{}/healthz", self.addr))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

/// Reads what the server sends until it closes the connection (or resets it); `None` past `limit`.
async fn read_until_closed(
    reader: &mut (impl AsyncReadExt + Unpin),
    limit: Duration,
) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let result = tokio::time::timeout(limit, async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    result
        .ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test]
async fn a_request_head_trickled_a_byte_a_second_is_cut_off_by_the_header_timeout() {
    let gw = spawn_gateway(&[]).await;
    let mut stream = tokio::net::TcpStream::connect(&gw.addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /jobs HTTP/1.1\r\nX-Slow: ")
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // A byte a second, forever, until the server hangs up.
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if writer.write_all(b"a").await.is_err() {
                break;
            }
        }
    });
    let answer = read_until_closed(&mut reader, Duration::from_secs(15))
        .await
        .expect("the server closes a slowloris connection");
    let elapsed = started.elapsed();
    trickle.abort();
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(8),
        "closed after {elapsed:?} (REQUEST_HEADER_TIMEOUT_SECONDS=2)"
    );
    assert!(!answer.contains(" 200 "), "{answer}");
    gw.assert_healthy().await;
}

#[tokio::test]
async fn a_stalled_upload_body_gets_408_within_the_idle_timeout_and_leaves_nothing() {
    let gw = spawn_gateway(&[]).await;
    // Raw body, then multipart: both stall after 100 kB of a declared 10 MB.
    let boundary = "XyZsecurityBoundary";
    let multipart_head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.mp4\"\r\nContent-Type: video/mp4\r\n\r\n"
    );
    for (headers, prefix) in [
        (
            "Content-Type: video/mp4\r\nContent-Length: 10000000\r\n".to_owned(),
            Vec::new(),
        ),
        (
            format!(
                "Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 10000000\r\n"
            ),
            multipart_head.into_bytes(),
        ),
    ] {
        let mut stream = tokio::net::TcpStream::connect(&gw.addr).await.unwrap();
        stream
            .write_all(gw.head(&headers).as_bytes())
            .await
            .unwrap();
        stream.write_all(&prefix).await.unwrap();
        stream.write_all(&fake_video(100_000)).await.unwrap();
        let stalled = Instant::now();
        let answer = read_until_closed(&mut stream, Duration::from_secs(15))
            .await
            .expect("the server answers and closes a stalled upload");
        let elapsed = stalled.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(8),
            "answered after {elapsed:?} (UPLOAD_IDLE_TIMEOUT_SECONDS=2)"
        );
        assert!(answer.starts_with("HTTP/1.1 408"), "{headers}: {answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(answer.contains("upload_timed_out"), "{answer}");
        assert!(answer.contains("stalled"), "{answer}");
        gw.assert_nothing_stored().await;
    }
    gw.assert_healthy().await;
}

#[tokio::test]
async fn an_upload_body_trickled_a_byte_a_second_is_cut_off_by_the_upload_timeout() {
    let gw = spawn_gateway(&[]).await;
    let mut stream = tokio::net::TcpStream::connect(&gw.addr).await.unwrap();
    stream
        .write_all(
            gw.head("Content-Type: video/mp4\r\nContent-Length: 10000000\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    stream.write_all(&fake_video(1024)).await.unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    // Each byte comes before the 2 s idle timeout, so only the 5 s total limit can stop it.
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if writer.write_all(b"\xAB").await.is_err() {
                break;
            }
        }
    });
    let answer = read_until_closed(&mut reader, Duration::from_secs(20))
        .await
        .expect("the server answers and closes a trickled upload");
    let elapsed = started.elapsed();
    trickle.abort();
    assert!(
        elapsed >= Duration::from_secs(4) && elapsed < Duration::from_secs(12),
        "answered after {elapsed:?} (UPLOAD_TIMEOUT_SECONDS=5)"
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("upload_timed_out"), "{answer}");
    assert!(answer.contains("longer than 5 s"), "{answer}");
    gw.assert_nothing_stored().await;
    gw.assert_healthy().await;
}

#[tokio::test]
async fn a_never_ending_chunked_upload_gets_413_the_connection_closed_and_memory_stays_flat() {
    // A loaded machine may need more than 5 s to store the 32 MiB before the cut.
    let gw = spawn_gateway(&[("UPLOAD_TIMEOUT_SECONDS", "300")]).await;
    gw.assert_healthy().await;
    let baseline = gw.peak_rss();
    let stream = tokio::net::TcpStream::connect(&gw.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(
            gw.head("Content-Type: video/mp4\r\nTransfer-Encoding: chunked\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    // Endless 64 KiB chunks; stops only when the server hangs up (or, as a safety net, at 4× the limit).
    let writer = tokio::spawn(async move {
        let first = fake_video(64 * 1024);
        let filler = vec![0xABu8; 64 * 1024];
        let mut sent: u64 = 0;
        loop {
            let chunk = if sent == 0 { &first } else { &filler };
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
            if writer.write_all(&framed).await.is_err() {
                return (sent, true);
            }
            sent += chunk.len() as u64;
            if sent > 4 * MAX_UPLOAD {
                return (sent, false);
            }
        }
    });
    let answer = read_until_closed(&mut reader, Duration::from_secs(120))
        .await
        .expect("the server answers and closes");
    let (sent, cut_off) = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("the writer stops once the connection is closed")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert!(cut_off, "the connection was closed (sent {sent} bytes)");
    assert!(sent >= MAX_UPLOAD, "sent {sent} bytes before the cut");
    gw.assert_nothing_stored().await;
    let grown = gw.peak_rss().saturating_sub(baseline);
    assert!(
        grown < MAX_UPLOAD / 2,
        "peak RSS grew by {} MiB while {} MiB streamed through",
        grown / 1_048_576,
        sent / 1_048_576
    );
    gw.assert_healthy().await;
}
