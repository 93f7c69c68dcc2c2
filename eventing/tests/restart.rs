//! RabbitMQ restarts under the runner. This test starts its OWN RabbitMQ node (own node name,
//! ports, Mnesia and log dirs, config, enabled-plugins file and HOME with its own Erlang cookie,
//! all in a temp dir; it registers with the machine's epmd like any node) and never touches the
//! shared one.

mod common;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::*;
use eventing::SubscriberMap;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RABBIT_BIN: &str = "/usr/lib/rabbitmq/bin";

/// A private RabbitMQ node running in the foreground as a child process.
struct RabbitNode {
    dir: tempfile::TempDir,
    node: String,
    port: u16,
    dist_port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RabbitNode {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for d in ["home", "mnesia", "log"] {
            std::fs::create_dir_all(p.join(d)).unwrap();
        }
        // Our own cookie: rabbitmqctl (same HOME) can talk to this node and to no other.
        let cookie = p.join("home/.erlang.cookie");
        std::fs::write(
            &cookie,
            format!("EVTTEST{}{}", std::process::id(), free_port()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400)).unwrap();
        std::fs::write(p.join("enabled_plugins"), "[].\n").unwrap();
        let port = free_port();
        // Our own config: /etc/rabbitmq/rabbitmq.conf pins the shared node's listener (5672).
        std::fs::write(
            p.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\n"),
        )
        .unwrap();
        // And an empty env file: /etc/rabbitmq/rabbitmq-env.conf names the shared node.
        std::fs::write(p.join("rabbitmq-env.conf"), "").unwrap();
        Self {
            node: format!("evt-{}-{}@localhost", std::process::id(), port),
            port,
            dist_port: free_port(),
            dir,
            child: None,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn env(&self, cmd: &mut Command) {
        let p = |rel: &str| self.path(rel);
        cmd.env("HOME", p("home"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", p("mnesia"))
            .env("RABBITMQ_LOG_BASE", p("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", p("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", p("rabbitmq.conf"))
            .env("RABBITMQ_CONF_ENV_FILE", p("rabbitmq-env.conf"))
            .env("RABBITMQ_PID_FILE", p("rabbitmq.pid"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .current_dir(self.dir.path());
    }

    fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Starts the node and waits until its AMQP port accepts connections.
    fn start(&mut self) {
        assert!(self.child.is_none());
        let mut cmd = Command::new(Path::new(RABBIT_BIN).join("rabbitmq-server"));
        self.env(&mut cmd);
        let log = std::fs::File::create(self.path("log/console.log")).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("rabbitmq-server starts"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "rabbitmq-server exited with {status}: {}",
                    std::fs::read_to_string(self.path("log/console.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "RabbitMQ node did not open its port"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `rabbitmqctl -n NODE stop`, then waits for the process to exit.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let mut cmd = Command::new(Path::new(RABBIT_BIN).join("rabbitmqctl"));
        self.env(&mut cmd);
        let _ = cmd
            .args(["-n", &self.node, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The Erlang VM itself (foreground mode runs it as a child of the script).
        if let Ok(pid) = std::fs::read_to_string(self.path("rabbitmq.pid")) {
            let pid = pid.trim();
            if !pid.is_empty() && Path::new(&format!("/proc/{pid}")).exists() {
                let cmdline =
                    std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if cmdline.contains(&self.node) {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
        }
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_accepted_before_a_rabbitmq_restart_are_all_delivered_after_it() {
    let mut node = blocking(|| {
        let mut n = RabbitNode::new();
        n.start();
        n
    })
    .await;
    let amqp = node.amqp_url();
    let ns = unique("restart");
    // The subscriber holds every response until the gate opens: events pile up in the queue
    // (two in flight, unacked) while RabbitMQ restarts.
    let sub = Recorder::start_gated(Duration::ZERO, false, |_, _| {
        StatusCode::ACCEPTED.into_response()
    })
    .await;
    let topo = topology(&[
        broker_yaml(&ns),
        trigger_yaml(
            &ns,
            "t",
            Some("dev.vidmp3.video.uploaded"),
            "sub",
            Some("    retry: 3\n    backoffPolicy: linear\n    backoffDelay: PT0.1S\n"),
            2,
        ),
    ]);
    let mut subs = SubscriberMap::new();
    subs.insert("sub", &sub.url).unwrap();
    let runner = start_runner(topo, subs, &amqp).await;
    let ingress = runner.ingress_url(&ns, "default");

    const N: usize = 20;
    for i in 0..N {
        let status = post_binary(
            &ingress,
            &format!("before-{i}"),
            "dev.vidmp3.video.uploaded",
            serde_json::json!({"i": i}),
        )
        .await;
        assert_eq!(status, 202, "event {i} accepted before the restart");
    }
    // The two deliveries in flight (unacked) when RabbitMQ stops.
    let in_flight: Vec<String> = sub
        .wait_for(2, Duration::from_secs(10))
        .await
        .iter()
        .map(|r| r.header("ce-id").unwrap().to_string())
        .collect();

    // Stop RabbitMQ: the ingress must answer 503 while it is down.
    let t0 = Instant::now();
    node = blocking(move || {
        node.stop();
        node
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = post_binary(
            &ingress,
            "during",
            "dev.vidmp3.video.uploaded",
            serde_json::json!({}),
        )
        .await;
        if status == 503 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ingress answered {status} with RabbitMQ down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!runner.is_connected());

    // Start it again (same Mnesia dir): the runner reconnects and resumes.
    node = blocking(move || {
        node.start();
        node
    })
    .await;
    assert!(
        runner.wait_connected(Duration::from_secs(30)).await,
        "runner reconnected"
    );
    let downtime = t0.elapsed();
    sub.open_gate();
    assert_eq!(
        post_binary(
            &ingress,
            "after",
            "dev.vidmp3.video.uploaded",
            serde_json::json!({})
        )
        .await,
        202
    );

    let mut want: BTreeSet<String> = (0..N).map(|i| format!("before-{i}")).collect();
    want.insert("after".into());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids: Vec<String> = sub
            .requests()
            .iter()
            .filter_map(|r| r.header("ce-id").map(str::to_string))
            .collect();
        let seen: BTreeSet<String> = ids.iter().cloned().collect();
        // Their answers came after the connection was gone, so they were never acked: RabbitMQ
        // must hand them out again (an ack taken before the outcome would lose them instead).
        let not_redelivered: Vec<&String> = in_flight
            .iter()
            .filter(|id| ids.iter().filter(|seen| seen == id).count() < 2)
            .collect();
        if want.is_subset(&seen) && not_redelivered.is_empty() {
            break;
        }
        let missing: Vec<_> = want.difference(&seen).collect();
        assert!(
            Instant::now() < deadline,
            "events lost across the restart: {missing:?}; in flight at the stop and not delivered again: {not_redelivered:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "restart test: RabbitMQ down+up in {downtime:?}; {} deliveries for {} events (at least once)",
        sub.count(),
        want.len()
    );
    runner.shutdown().await;
    blocking(move || drop(node)).await;
}
