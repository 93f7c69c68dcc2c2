//! Each own server starts, serves, stops (port closed), restarts (same port, same data), and two
//! instances run side by side. Also the shared services. Start times are printed (`--nocapture`).

use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use mongodb::bson::{Document, doc};
use sqlx::Connection as _;
use testkit::*;

async fn timed<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    let t = Instant::now();
    let v = f.await;
    eprintln!("timing: {what}: {:.2?}", t.elapsed());
    v
}

// ------------------------------------------------------------------ MongoDB (SecantusDB)

async fn mongo_client(uri: &str) -> mongodb::Client {
    let mut opts = mongodb::options::ClientOptions::parse(uri).await.unwrap();
    opts.server_selection_timeout = Some(Duration::from_secs(10));
    mongodb::Client::with_options(opts).unwrap()
}

async fn mongo_insert_find(uri: &str, db: &str, value: i32) {
    let coll = mongo_client(uri)
        .await
        .database(db)
        .collection::<Document>("things");
    coll.insert_one(doc! { "v": value }).await.unwrap();
    let found = coll.find_one(doc! { "v": value }).await.unwrap();
    assert_eq!(found.unwrap().get_i32("v").unwrap(), value);
}

async fn mongo_count(uri: &str, db: &str) -> u64 {
    mongo_client(uri)
        .await
        .database(db)
        .collection::<Document>("things")
        .count_documents(doc! {})
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_server_starts_serves_stops_restarts_in_parallel() {
    ensure_services();
    let (mut a, b) = timed("MongoServer::start x2 in parallel", async {
        tokio::join!(MongoServer::start(), MongoServer::start())
    })
    .await;
    assert_ne!(a.port, b.port);
    mongo_insert_find(&a.uri, "t", 1).await;
    mongo_insert_find(&b.uri, "t", 2).await;
    mongo_insert_find(&b.uri, "t", 3).await;
    assert_eq!(mongo_count(&a.uri, "t").await, 1, "instances share no data");

    timed("MongoServer::stop", a.stop()).await;
    assert!(!wait_for_port(a.port, Duration::from_millis(300)).await);
    mongo_insert_find(&b.uri, "t", 4).await; // the other one is untouched

    timed("MongoServer::restart", a.restart()).await;
    assert!(a.is_running());
    assert_eq!(mongo_count(&a.uri, "t").await, 1, "data survives a restart");
    mongo_insert_find(&a.uri, "t", 5).await;

    let port = b.port;
    drop(b);
    assert!(
        !wait_for_port(port, Duration::from_millis(300)).await,
        "drop kills the server"
    );
}

// ------------------------------------------------------------------ SMTP sink

fn mail(to: &str, subject: &str) -> Message {
    Message::builder()
        .from("vidmp3 <noreply@vidmp3.test>".parse::<Mailbox>().unwrap())
        .to(to.parse::<Mailbox>().unwrap())
        .subject(subject)
        .body(format!("body of {subject}"))
        .unwrap()
}

fn transport(url: &str, creds: bool) -> AsyncSmtpTransport<Tokio1Executor> {
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .unwrap()
        .timeout(Some(Duration::from_secs(5)));
    if creds {
        b = b.credentials(Credentials::new("user".into(), "secret".into()));
    }
    b.build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_server_starts_serves_stops_restarts_in_parallel() {
    ensure_services();
    let (mut a, b) = timed("SmtpServer::start x2 in parallel", async {
        tokio::join!(SmtpServer::start(), SmtpServer::start())
    })
    .await;
    assert_eq!(a.url(), format!("smtp://127.0.0.1:{}", a.port));

    transport(&a.url(), false)
        .send(mail("owner@example.test", "first"))
        .await
        .unwrap();
    transport(&b.url(), true) // AUTH is offered and any credentials pass
        .send(mail("other@example.test", "to b"))
        .await
        .unwrap();
    let got = a.wait_for_messages(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("Subject: first"), "{}", got[0]);
    assert!(
        got[0].contains("X-Envelope-To: owner@example.test"),
        "{}",
        got[0]
    );
    assert_eq!(
        b.wait_for_messages(1, Duration::from_secs(5)).await.len(),
        1
    );
    assert_eq!(a.messages().len(), 1, "instances share no maildir");

    timed("SmtpServer::stop", a.stop()).await;
    assert!(!wait_for_port(a.port, Duration::from_millis(300)).await);
    let err = transport(&a.url(), false)
        .send(mail("owner@example.test", "while down"))
        .await
        .unwrap_err();
    assert!(
        err.status().is_none(),
        "a connection error, not an SMTP reply: {err}"
    );

    timed("SmtpServer::restart", a.restart()).await;
    transport(&a.url(), false)
        .send(mail("owner@example.test", "second"))
        .await
        .unwrap();
    let got = a.wait_for_messages(2, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 2);
    assert!(got[0].contains("Subject: first") && got[1].contains("Subject: second"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_server_simulates_refusals() {
    ensure_services();
    let (auth, temp, perm, picky) = tokio::join!(
        SmtpServer::start_with(&["--reply-code", "535"]),
        SmtpServer::start_with(&["--reply-code", "451"]),
        SmtpServer::start_with(&["--reply-code", "550"]),
        SmtpServer::start_with(&["--reject-rcpt", "gone@"]),
    );
    let code = |e: &lettre::transport::smtp::Error| e.status().map(|c| c.to_string());

    for creds in [false, true] {
        let e = transport(&auth.url(), creds)
            .send(mail("a@example.test", "x"))
            .await
            .unwrap_err();
        assert_eq!(code(&e).as_deref(), Some("535"), "{e}");
        assert!(e.is_permanent());
    }
    let e = transport(&temp.url(), false)
        .send(mail("a@example.test", "x"))
        .await
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("451"), "{e}");
    assert!(e.is_transient());
    let e = transport(&perm.url(), false)
        .send(mail("a@example.test", "x"))
        .await
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("550"), "{e}");
    assert!(e.is_permanent());

    let e = transport(&picky.url(), false)
        .send(mail("gone@example.test", "x"))
        .await
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("550"), "{e}");
    transport(&picky.url(), false)
        .send(mail("here@example.test", "kept"))
        .await
        .unwrap();
    assert_eq!(
        picky
            .wait_for_messages(1, Duration::from_secs(5))
            .await
            .len(),
        1
    );
    for s in [&auth, &temp, &perm] {
        assert!(s.messages().is_empty());
    }
}

// ------------------------------------------------------------------ MariaDB

async fn mysql_one(url: &str) -> i64 {
    let mut c = sqlx::MySqlConnection::connect(url).await.unwrap();
    let (one,): (i64,) = sqlx::query_as("SELECT 1").fetch_one(&mut c).await.unwrap();
    one
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_server_starts_serves_stops_restarts_in_parallel() {
    let (mut a, b) = timed("MariaDbServer::start x2 in parallel", async {
        tokio::join!(MariaDbServer::start(), MariaDbServer::start())
    })
    .await;
    assert_ne!(a.port, b.port);
    assert_eq!(mysql_one(&a.url).await, 1);
    assert_eq!(mysql_one(&b.url).await, 1);

    let mut c = sqlx::MySqlConnection::connect(&a.url).await.unwrap();
    sqlx::query("CREATE TABLE kv (k VARCHAR(10) PRIMARY KEY, v INT)")
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::query("INSERT INTO kv VALUES ('x', 42)")
        .execute(&mut c)
        .await
        .unwrap();
    drop(c);
    let mut cb = sqlx::MySqlConnection::connect(&b.url).await.unwrap();
    let tables: Vec<(String,)> = sqlx::query_as("SHOW TABLES")
        .fetch_all(&mut cb)
        .await
        .unwrap();
    assert!(tables.is_empty(), "instances share no data");

    timed("MariaDbServer::stop", a.stop()).await;
    assert!(!wait_for_port(a.port, Duration::from_millis(300)).await);
    assert!(sqlx::MySqlConnection::connect(&a.url).await.is_err());
    assert_eq!(mysql_one(&b.url).await, 1, "the other one is untouched");

    timed("MariaDbServer::restart", a.restart()).await;
    let mut c = sqlx::MySqlConnection::connect(&a.url).await.unwrap();
    let (v,): (i32,) = sqlx::query_as("SELECT v FROM kv WHERE k = 'x'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(v, 42, "data survives a restart");
}

// ------------------------------------------------------------------ RabbitMQ

async fn amqp_roundtrip(url: &str, queue: &str, publish: Option<&[u8]>) -> Option<Vec<u8>> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    if let Some(body) = publish {
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        None
    } else {
        let got = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        let _ = conn.close(200, "bye".into()).await;
        got.map(|m| m.delivery.data.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbit_server_starts_serves_stops_restarts_in_parallel() {
    let (mut a, b) = timed("RabbitServer::start x2 in parallel", async {
        tokio::join!(RabbitServer::start(), RabbitServer::start())
    })
    .await;
    assert_ne!(a.port, b.port);
    assert_ne!(a.node_name, b.node_name);
    amqp_roundtrip(&a.amqp_url, "jobs", Some(b"persist me")).await;
    amqp_roundtrip(&b.amqp_url, "jobs", Some(b"on b")).await;

    timed("RabbitServer::stop", a.stop()).await;
    assert!(!wait_for_port(a.port, Duration::from_millis(300)).await);
    assert!(
        Connection::connect(&a.amqp_url, ConnectionProperties::default())
            .await
            .is_err()
    );
    assert_eq!(
        amqp_roundtrip(&b.amqp_url, "jobs", None).await.as_deref(),
        Some(&b"on b"[..]),
        "the other node is untouched"
    );

    timed("RabbitServer::start_again", a.start_again()).await;
    assert_eq!(
        amqp_roundtrip(&a.amqp_url, "jobs", None).await.as_deref(),
        Some(&b"persist me"[..]),
        "durable queue and persistent message survive a restart"
    );
    assert!(
        wait_for_port(5672, Duration::from_millis(500)).await,
        "shared node untouched"
    );
}

// ------------------------------------------------------------------ shared services

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_services_answer() {
    timed("ensure_services", async { ensure_services() }).await;
    let (u1, u2) = tokio::join!(fresh_mysql_database(), fresh_mysql_database());
    assert_ne!(u1, u2);
    assert!(
        u1.starts_with("mysql://vidmp3:vidmp3@127.0.0.1:3306/test_"),
        "{u1}"
    );
    let mut c = sqlx::MySqlConnection::connect(&u1).await.unwrap();
    let (db,): (String,) = sqlx::query_as("SELECT DATABASE()")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(u1.rsplit('/').next().unwrap(), db);

    mongo_insert_find(&shared_mongo_uri(), &unique_name("testkit_"), 7).await;

    let conn = Connection::connect(&shared_amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    conn.close(200, "bye".into()).await.unwrap();

    let rcpt = format!("{}@example.test", unique_name("rcpt-"));
    transport(&shared_smtp_url(), false)
        .send(mail(&rcpt, "shared"))
        .await
        .unwrap();
    let dir = shared_mail_dir();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !read_maildir(&dir).iter().any(|m| m.contains(&rcpt)) {
        assert!(
            Instant::now() < deadline,
            "no mail to {rcpt} in {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(venv_bin("secantusd-py").is_file());
}
