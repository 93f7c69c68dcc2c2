//! The whole stack in-process for end-to-end tests: gateway, converter, notification (and, when asked,
//! auth on a fresh MySQL database) wired through this crate's runner over a real RabbitMQ, with the real
//! manifests under a namespace of the test's own, the real MongoDB-wire server and a real SMTP server.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use mongodb::bson::doc;
pub use testkit::serve;
use vidmp3_runtime::config::Env;
use vidmp3_runtime::jwt::{JwtKeys, JwtSettings};

pub const SECRET: &str = "e2e-secret-e2e-secret-e2e-secret-e2e-secret";

pub struct Stack {
    pub gateway: String,
    pub broker_ingress: String,
    pub runner: Option<eventing::Runner>,
    pub smtp: testkit::SmtpServer,
    pub db: mongodb::Database,
    pub keys: JwtKeys,
    pub dead_letters: Arc<Mutex<Vec<axum::http::HeaderMap>>>,
    pub client: reqwest::Client,
}

/// What a test wants on top of the default stack.
#[derive(Default)]
pub struct StackOptions {
    /// Run auth (on a fresh MySQL database) behind the gateway's `/login`, with user
    /// [`USER_EMAIL`] / [`USER_PASSWORD`]; otherwise `AUTH_URL` points nowhere.
    pub auth: bool,
    /// The gateway's `MAX_UPLOAD_BYTES` (default: its own default).
    pub max_upload_bytes: Option<u64>,
}

/// The user created when [`StackOptions::auth`] is set.
pub const USER_EMAIL: &str = "owner@example.com";
/// Their password.
pub const USER_PASSWORD: &str = "correct horse battery staple";

/// The default stack (no auth).
pub async fn start_stack(amqp_url: &str) -> Stack {
    start_stack_with(amqp_url, StackOptions::default()).await
}

/// A stack with `options`.
pub async fn start_stack_with(amqp_url: &str, options: StackOptions) -> Stack {
    testkit::ensure_services();
    let namespace = testkit::unique_name("e2e");
    let database = namespace.clone();
    let mongo = testkit::shared_mongo_uri();
    let smtp = testkit::SmtpServer::start().await;
    let common = [
        ("MONGODB_URI", mongo.as_str()),
        ("MONGODB_DATABASE", database.as_str()),
        ("PUBLIC_BASE_URL", "http://gateway.e2e"),
    ];

    let converter = converter::service::AppState::new(
        converter::service::Settings::from_env(&Env::from_pairs(
            common.iter().copied().chain([("CONVERT_CONCURRENCY", "2")]),
        ))
        .unwrap(),
    )
    .await
    .unwrap();
    let converter_url = serve(converter::service::router(converter)).await;
    let smtp_url = smtp.url();
    let notification = notification::AppState::new(
        notification::Settings::from_env(&Env::from_pairs(
            common
                .iter()
                .copied()
                .chain([("SMTP_URL", smtp_url.as_str())]),
        ))
        .unwrap(),
    )
    .await
    .unwrap();
    let notification_url = serve(notification::router(notification)).await;
    let dead_letters = Arc::new(Mutex::new(Vec::new()));
    let recorded = dead_letters.clone();
    let dead_letters_url = serve(Router::new().route(
        "/",
        post(move |headers: axum::http::HeaderMap| {
            recorded.lock().unwrap().push(headers);
            async { axum::http::StatusCode::ACCEPTED }
        }),
    ))
    .await;

    // The real manifests, moved into a namespace of this test's own.
    let dir = testkit::workspace_root().join("eventing");
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("namespace: vidmp3", &format!("namespace: {namespace}"));
            sources.push((path, text));
        }
    }
    let topology = eventing::Topology::from_sources(&sources).unwrap();
    let mut subscribers = eventing::SubscriberMap::new();
    subscribers.insert("converter", &converter_url).unwrap();
    subscribers
        .insert("notification", &notification_url)
        .unwrap();
    subscribers
        .insert("dead-letters", &dead_letters_url)
        .unwrap();
    let mut config = eventing::Config::new(topology, subscribers, amqp_url);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.shutdown_grace = Duration::from_secs(5);
    config.reconnect_max_backoff = Duration::from_millis(500);
    let runner = eventing::start(config).await.unwrap();
    assert!(runner.wait_connected(Duration::from_secs(20)).await);
    let broker_ingress = runner.ingress_url(&namespace, "default");

    let auth_url = if options.auth {
        start_auth().await
    } else {
        "http://127.0.0.1:9".to_owned()
    };
    let max_upload_bytes = options.max_upload_bytes.map(|n| n.to_string());
    let gateway_vars: Vec<(&str, &str)> = common
        .iter()
        .copied()
        .chain([
            ("AUTH_URL", auth_url.as_str()),
            ("JWT_SECRET", SECRET),
            ("K_SINK", broker_ingress.as_str()),
        ])
        .chain(max_upload_bytes.as_deref().map(|n| ("MAX_UPLOAD_BYTES", n)))
        .collect();
    let gateway = gateway::AppState::new(
        gateway::Settings::from_env(&Env::from_pairs(gateway_vars.clone())).unwrap(),
    )
    .await
    .unwrap();
    let gateway_url = serve(gateway::router(gateway)).await;
    let keys =
        JwtKeys::new(JwtSettings::from_env(&Env::from_pairs(gateway_vars)).unwrap()).unwrap();
    let db = mongodb::Client::with_uri_str(&mongo)
        .await
        .unwrap()
        .database(&database);
    Stack {
        gateway: gateway_url,
        broker_ingress,
        runner: Some(runner),
        smtp,
        db,
        keys,
        dead_letters,
        client: reqwest::Client::new(),
    }
}

/// auth on a fresh database with one user ([`USER_EMAIL`]); its URL.
async fn start_auth() -> String {
    let database_url = testkit::fresh_mysql_database().await;
    let settings = auth::Settings::from_env(&Env::from_pairs([
        ("DATABASE_URL", database_url.as_str()),
        ("JWT_SECRET", SECRET),
    ]))
    .unwrap();
    let state = auth::AppState::new(&settings).unwrap();
    auth::users::migrate(&state.pool).await.unwrap();
    let hash = auth::password::hash(USER_PASSWORD.to_owned())
        .await
        .unwrap();
    auth::users::create(
        &state.pool,
        &auth::users::Email::parse(USER_EMAIL).unwrap(),
        &hash,
        false,
    )
    .await
    .unwrap();
    serve(auth::router(state)).await
}

impl Stack {
    pub fn token(&self) -> String {
        self.keys.issue("42", "owner@example.com", false).unwrap().0
    }

    pub async fn upload(&self, file: &str) -> String {
        let path = testkit::media_corpus().join(file);
        let bytes = std::fs::read(&path).unwrap();
        let part = reqwest::multipart::Part::bytes(bytes).file_name(file.to_owned());
        let r = self
            .client
            .post(format!("{}/upload", self.gateway))
            .bearer_auth(self.token())
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        r.json::<serde_json::Value>().await.unwrap()["job_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn job(&self, id: &str) -> serde_json::Value {
        self.client
            .get(format!("{}/jobs/{id}", self.gateway))
            .bearer_auth(self.token())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn wait_for_email(&self, job_id: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            // Flush the gateway's outbox as the dev stack's timer (or the cluster's PingSource) would.
            let _ = self
                .client
                .post(format!("{}/internal/redeliver", self.gateway))
                .send()
                .await;
            if let Some(mail) = self
                .smtp
                .messages()
                .into_iter()
                .find(|m| m.contains(job_id))
            {
                return mail;
            }
            assert!(
                Instant::now() < deadline,
                "no email about {job_id} within {timeout:?}; job: {}",
                self.job(job_id).await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn count(&self, collection: &str) -> u64 {
        self.db
            .collection::<mongodb::bson::Document>(collection)
            .count_documents(doc! {})
            .await
            .unwrap()
    }

    /// Waits a little longer than any retry would take to show a duplicate, then counts.
    pub async fn settle(&self) {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// The download link in an email's plain-text part (quoted-printable soft breaks undone).
pub fn link_in(mail: &str) -> String {
    let flat = mail
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    let start = flat
        .find("http://gateway.e2e/jobs/")
        .expect("a download link");
    flat[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches(['.', ')'])
        .to_owned()
}
