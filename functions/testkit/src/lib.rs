//! Dev-only helpers for the functions' integration tests, which talk to real services.
//!
//! Two kinds of services:
//! - **shared** ones, started once per machine by `scripts/services start` (MariaDB on 3306,
//!   RabbitMQ on 5672, SecantusDB on 27018, SMTP sink on 2525): [`ensure_services`],
//!   [`fresh_mysql_database`], [`shared_mongo_uri`], [`shared_amqp_url`], [`shared_smtp_url`],
//!   [`shared_mail_dir`]. Tests isolate themselves with unique names ([`unique_name`]).
//! - **own** instances, one per test, for tests that stop, restart or break a service:
//!   [`MongoServer`], [`SmtpServer`], [`MariaDbServer`], [`RabbitServer`]. Each runs as a child
//!   process in its own process group, with its data in a temporary directory; dropping the
//!   value kills the whole group and deletes the directory.
//!
//! Set `TESTKIT_EXTERNAL_SERVICES=1` to skip `scripts/services start` (services provided by
//! someone else, through the `MYSQL_ADMIN_URL`, `MONGODB_URI`, `AMQP_URL`, `SMTP_URL`,
//! `MAIL_DIR` variables).

pub mod jwt;

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rand::Rng;
use tempfile::TempDir;

const MONGO_START_TIMEOUT: Duration = Duration::from_secs(60);
const SMTP_START_TIMEOUT: Duration = Duration::from_secs(30);
const MARIADB_START_TIMEOUT: Duration = Duration::from_secs(60);
const RABBIT_START_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_GRACE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Shared services
// ---------------------------------------------------------------------------------------------

/// The workspace root (`CARGO_MANIFEST_DIR/../..`), where `scripts/` and `.dev/` live.
pub fn workspace_root() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    dir.canonicalize().unwrap_or(dir)
}

/// Runs `scripts/services start` once per process (later calls return at once; concurrent
/// processes are serialised by the script's lock). Panics with the script's stderr on failure.
/// Skipped when `TESTKIT_EXTERNAL_SERVICES=1`.
pub fn ensure_services() {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = RESULT.get_or_init(|| {
        if std::env::var("TESTKIT_EXTERNAL_SERVICES").is_ok_and(|v| v == "1") {
            return Ok(());
        }
        let script = workspace_root().join("scripts/services");
        let started = Instant::now();
        match Command::new(&script)
            .arg("start")
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {
                let took = started.elapsed();
                if took > Duration::from_secs(5) {
                    eprintln!("testkit: scripts/services start took {took:.1?}");
                }
                Ok(())
            }
            Ok(out) => Err(format!(
                "`{} start` failed ({}):\n{}{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => Err(format!("cannot run `{} start`: {e}", script.display())),
        }
    });
    if let Err(msg) = result {
        panic!("{msg}");
    }
}

/// A value of the shared services' environment: the process environment first, then
/// `<root>/.dev/services.env` (written by `scripts/services start`), else `None`.
pub fn service_env(key: &str) -> Option<String> {
    if let Ok(v) = std::env::var(key)
        && !v.is_empty()
    {
        return Some(v);
    }
    let text = fs::read_to_string(workspace_root().join(".dev/services.env")).ok()?;
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().trim_matches('"').trim_matches('\'').to_string())
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
/// Never returns the same port twice in one process.
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let seen = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..100 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if seen.lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("free_port: no new free port after 100 tries");
}

/// `<root>/.cache/venv/bin/NAME`, the Python venv made by `scripts/services start`
/// (calls [`ensure_services`] first).
pub fn venv_bin(name: &str) -> PathBuf {
    ensure_services();
    let venv = service_env("VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".cache/venv"));
    venv.join("bin").join(name)
}

/// Creates an empty database `test_<random>` on the shared MariaDB and returns its URL
/// (`mysql://vidmp3:vidmp3@127.0.0.1:3306/test_…`). Calls [`ensure_services`]; the admin URL is
/// `MYSQL_ADMIN_URL` (env, then `.dev/services.env`), else `mysql://vidmp3:vidmp3@127.0.0.1:3306`.
/// The database is not dropped afterwards.
pub async fn fresh_mysql_database() -> String {
    use sqlx::Connection;
    ensure_services();
    let admin = service_env("MYSQL_ADMIN_URL")
        .unwrap_or_else(|| "mysql://vidmp3:vidmp3@127.0.0.1:3306".to_string());
    let name = unique_name("test_");
    let mut conn = connect_mysql_retrying(&admin, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("fresh_mysql_database: cannot connect to {admin}: {e}"));
    sqlx::query(&format!("CREATE DATABASE `{name}`"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("fresh_mysql_database: CREATE DATABASE {name}: {e}"));
    let _ = conn.close().await;
    let mut url = url::Url::parse(&admin)
        .unwrap_or_else(|e| panic!("fresh_mysql_database: bad MYSQL_ADMIN_URL {admin}: {e}"));
    url.set_path(&format!("/{name}"));
    url.to_string()
}

async fn connect_mysql_retrying(
    url: &str,
    timeout: Duration,
) -> Result<sqlx::MySqlConnection, sqlx::Error> {
    use sqlx::Connection;
    let deadline = Instant::now() + timeout;
    loop {
        match sqlx::MySqlConnection::connect(url).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The shared MongoDB-wire server's URI: `MONGODB_URI` (env, then `.dev/services.env`), else
/// `mongodb://127.0.0.1:27018/?directConnection=true`. Calls [`ensure_services`].
/// Use [`unique_name`] for database or bucket names.
pub fn shared_mongo_uri() -> String {
    ensure_services();
    service_env("MONGODB_URI")
        .unwrap_or_else(|| "mongodb://127.0.0.1:27018/?directConnection=true".to_string())
}

/// The shared RabbitMQ's URL: `AMQP_URL` (env, then `.dev/services.env`), else
/// `amqp://guest:guest@127.0.0.1:5672/%2f`. Calls [`ensure_services`].
pub fn shared_amqp_url() -> String {
    ensure_services();
    service_env("AMQP_URL").unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

/// The shared SMTP sink's URL: `SMTP_URL` (env, then `.dev/services.env`), else
/// `smtp://127.0.0.1:2525`. Calls [`ensure_services`]. Messages land in [`shared_mail_dir`],
/// shared by every test: filter by a unique recipient, or use an own [`SmtpServer`].
pub fn shared_smtp_url() -> String {
    ensure_services();
    service_env("SMTP_URL").unwrap_or_else(|| "smtp://127.0.0.1:2525".to_string())
}

/// The directory where the shared SMTP sink stores `.eml` files: `MAIL_DIR` (env, then
/// `.dev/services.env`), else `<root>/.dev/mail`. Calls [`ensure_services`].
pub fn shared_mail_dir() -> PathBuf {
    ensure_services();
    service_env("MAIL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".dev/mail"))
}

/// The sum of the samples of `metric` whose label set contains `labels` (e.g. `outcome="sent"`) in a
/// Prometheus text exposition (`/metrics`, text format 0.0.4); 0 when there is none.
pub fn metric_value(exposition: &str, metric: &str, labels: &str) -> f64 {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix(metric)?.strip_prefix('{'))
        .filter(|rest| rest.split('}').next().is_some_and(|l| l.contains(labels)))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `prefix` followed by 10 random lowercase letters and digits (for database names, buckets,
/// queues, recipients…).
pub fn unique_name(prefix: &str) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..10)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`; `false` after `timeout`.
pub async fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if port_open(port).await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until nothing accepts TCP connections on 127.0.0.1:`port`; `false` after `timeout`.
pub async fn wait_for_port_closed(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !port_open(port).await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    matches!(
        tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr)
        )
        .await,
        Ok(Ok(_))
    )
}

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/// A server child process in its own process group, logging to a file.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` (stdin from /dev/null, stdout and stderr appended to `log`) as the leader of
    /// a new process group.
    fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> Proc {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{name}: cannot open log {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log fd");
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot spawn {cmd:?}: {e}"));
        Proc {
            name,
            child,
            log: log.to_path_buf(),
        }
    }

    fn signal_group(&self, sig: libc::c_int) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: plain syscall; the group is ours (process_group(0) made the child its leader).
        unsafe {
            libc::kill(-pgid, sig);
        }
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until the server answers on `port`; panics (naming the server, with the end of its
    /// log) if it exits first or does not answer within `timeout`.
    async fn wait_ready(&mut self, port: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if port_open(port).await {
                return;
            }
            if self.exited() {
                panic!(
                    "{} exited before answering on 127.0.0.1:{port}\n--- {} ---\n{}",
                    self.name,
                    self.log.display(),
                    log_tail(&self.log, 40)
                );
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "{} did not answer on 127.0.0.1:{port} within {timeout:?}\n--- {} ---\n{}",
                    self.name,
                    self.log.display(),
                    log_tail(&self.log, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGTERM to the group, up to `STOP_GRACE` for the leader to exit, then SIGKILL to the group.
    async fn terminate(&mut self) {
        if !self.exited() {
            self.signal_group(libc::SIGTERM);
            let deadline = Instant::now() + STOP_GRACE;
            while !self.exited() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Stragglers (and the leader if it ignored SIGTERM).
        self.kill();
    }

    /// SIGKILL to the whole group, then reap the leader.
    fn kill(&mut self) {
        self.signal_group(libc::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"))
}

async fn stop_proc(proc: &mut Option<Proc>, port: u16) {
    if let Some(mut p) = proc.take() {
        let name = p.name;
        p.terminate().await;
        drop(p);
        assert!(
            wait_for_port_closed(port, Duration::from_secs(10)).await,
            "{name} stopped but 127.0.0.1:{port} still answers"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// MongoDB wire (SecantusDB)
// ---------------------------------------------------------------------------------------------

/// Own SecantusDB instance (own port, own tempdir storage) for tests that stop/restart MongoDB.
/// Dropping it kills the server and deletes its data.
pub struct MongoServer {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// `mongodb://127.0.0.1:PORT/?directConnection=true`.
    pub uri: String,
    dir: TempDir,
    proc: Option<Proc>,
}

impl MongoServer {
    /// Starts a new instance on a free port with empty storage and waits until it answers.
    pub async fn start() -> Self {
        let port = free_port();
        let dir = temp_dir("testkit-mongo-");
        fs::create_dir_all(dir.path().join("data")).expect("create mongo data dir");
        let mut server = MongoServer {
            port,
            uri: format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
            dir,
            proc: None,
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(venv_bin("secantusd-py"));
        cmd.current_dir(self.dir.path()) // no stray ./secantusd.toml is picked up
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--storage-path")
            .arg(self.dir.path().join("data"));
        let mut proc = Proc::spawn("SecantusDB", cmd, &self.dir.path().join("mongo.log"));
        proc.wait_ready(self.port, MONGO_START_TIMEOUT).await;
        self.proc = Some(proc);
    }

    /// Stops the server (SIGTERM, then SIGKILL after a grace period); returns once the port is
    /// closed. The data stays. No-op when already stopped.
    pub async fn stop(&mut self) {
        stop_proc(&mut self.proc, self.port).await;
    }

    /// Stops the server if it runs, then starts it again on the same port with the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| !p.exited())
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        self.proc.take();
    }
}

// ---------------------------------------------------------------------------------------------
// SMTP sink
// ---------------------------------------------------------------------------------------------

/// Own SMTP sink instance (`scripts/lib/smtp_sink.py`) for tests that stop it or need
/// refusals. Every accepted message becomes one `.eml` file in `maildir`.
/// Dropping it kills the server and deletes the maildir.
pub struct SmtpServer {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// Where accepted messages are stored, one `<timestamp>-<uuid>.eml` file each.
    pub maildir: PathBuf,
    args: Vec<String>,
    dir: TempDir,
    proc: Option<Proc>,
}

impl SmtpServer {
    /// Starts a sink that accepts every message (and any AUTH credentials).
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts a sink with extra `smtp_sink.py` arguments, kept for [`SmtpServer::restart`]:
    /// `["--reply-code", "535"]` (AUTH and MAIL FROM refused with 535),
    /// `["--reply-code", "451"]` / `"550"` / any code (every RCPT TO refused with it),
    /// `["--reject-rcpt", "SUBSTRING"]` (550 for matching recipients only; repeatable).
    pub async fn start_with(args: &[&str]) -> Self {
        let port = free_port();
        let dir = temp_dir("testkit-smtp-");
        let maildir = dir.path().join("mail");
        fs::create_dir_all(&maildir).expect("create maildir");
        let mut server = SmtpServer {
            port,
            maildir,
            args: args.iter().map(|s| s.to_string()).collect(),
            dir,
            proc: None,
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(venv_bin("python"));
        cmd.current_dir(self.dir.path())
            .arg(workspace_root().join("scripts/lib/smtp_sink.py"))
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--maildir")
            .arg(&self.maildir)
            .args(&self.args);
        let mut proc = Proc::spawn("SMTP sink", cmd, &self.dir.path().join("smtp.log"));
        proc.wait_ready(self.port, SMTP_START_TIMEOUT).await;
        self.proc = Some(proc);
    }

    /// Stops the sink; returns once the port is closed. Stored messages stay.
    pub async fn stop(&mut self) {
        stop_proc(&mut self.proc, self.port).await;
    }

    /// Stops the sink if it runs, then starts it again on the same port, maildir and arguments.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    /// The stored messages (raw `.eml` contents, with `X-Envelope-From`/`X-Envelope-To`
    /// headers prepended), sorted by file name, i.e. by arrival.
    pub fn messages(&self) -> Vec<String> {
        read_maildir(&self.maildir)
    }

    /// Waits until at least `n` messages are stored, polling; returns them (possibly fewer than
    /// `n` when `timeout` ran out, so callers assert on the length).
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let msgs = self.messages();
            if msgs.len() >= n || Instant::now() >= deadline {
                return msgs;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `smtp://127.0.0.1:PORT` (plain SMTP, no TLS; AUTH PLAIN/LOGIN accepted).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.proc.take();
    }
}

/// The `.eml` files of `dir` (as written by `smtp_sink.py`), sorted by name, read as text.
pub fn read_maildir(dir: &Path) -> Vec<String> {
    let mut names: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "eml")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
        .iter()
        .filter_map(|p| fs::read(p).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// MariaDB
// ---------------------------------------------------------------------------------------------

/// Own MariaDB instance (datadir in a tempdir, copied from a cached `mariadb-install-db`
/// template; own port and socket) for tests that stop/restart MySQL. Root has no password:
/// over the socket, and over TCP as `root@127.0.0.1`. Database `test` exists.
/// Dropping it kills the server and deletes its data.
pub struct MariaDbServer {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// `mysql://root@127.0.0.1:PORT/test`.
    pub url: String,
    /// The unix socket (root can log in here too).
    pub socket: PathBuf,
    dir: TempDir,
    proc: Option<Proc>,
}

/// Options for a small, fast, non-durable test server.
const MARIADB_FAST_OPTS: &[&str] = &[
    "--skip-name-resolve",
    "--innodb-log-file-size=8M",
    "--innodb-buffer-pool-size=32M",
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--innodb-use-native-aio=0",
    "--innodb-flush-method=nosync",
];

fn mariadbd_bin() -> PathBuf {
    for p in ["/usr/sbin/mariadbd", "/usr/sbin/mysqld"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("mariadbd")
}

fn is_root() -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::geteuid() == 0 }
}

/// A datadir made once by `mariadb-install-db` under `<root>/.cache/testkit/`, keyed by the
/// server version; each instance copies it (about 50 ms instead of about 4 s).
fn mariadb_template() -> PathBuf {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let version = Command::new(mariadbd_bin())
                .arg("--version")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .map_err(|e| format!("cannot run {}: {e}", mariadbd_bin().display()))?;
            let key: String = version
                .split_whitespace()
                .nth(2)
                .unwrap_or("unknown")
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let cache = workspace_root().join(".cache/testkit");
            let template = cache.join(format!("mariadb-datadir-{key}"));
            if template.join("mysql").is_dir() {
                return Ok(template);
            }
            fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
            let build = tempfile::Builder::new()
                .prefix(".mariadb-template-")
                .tempdir_in(&cache)
                .map_err(|e| e.to_string())?;
            let datadir = build.path().join("data");
            let mut cmd = Command::new("mariadb-install-db");
            cmd.arg("--no-defaults")
                .arg(format!("--datadir={}", datadir.display()))
                .arg("--auth-root-authentication-method=normal")
                .arg("--skip-test-db")
                .args(MARIADB_FAST_OPTS);
            if is_root() {
                cmd.arg("--user=root");
            }
            let out = cmd
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run mariadb-install-db: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "mariadb-install-db failed ({}):\n{}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            // Another process may have won the race: theirs is as good as ours.
            if fs::rename(&datadir, &template).is_err() && !template.join("mysql").is_dir() {
                return Err(format!("cannot create {}", template.display()));
            }
            Ok(template)
        })
        .clone()
        .unwrap_or_else(|e| panic!("MariaDB template datadir: {e}"))
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

impl MariaDbServer {
    /// Starts a new instance on a free port with a fresh datadir and waits until root can log in
    /// over TCP; creates database `test`.
    pub async fn start() -> Self {
        ensure_services(); // installs mariadb-server on a fresh machine
        let template = mariadb_template();
        let port = free_port();
        let dir = temp_dir("testkit-mariadb-");
        copy_dir(&template, &dir.path().join("data"))
            .unwrap_or_else(|e| panic!("copy MariaDB template datadir: {e}"));
        let mut server = MariaDbServer {
            port,
            url: format!("mysql://root@127.0.0.1:{port}/test"),
            socket: dir.path().join("mysql.sock"),
            dir,
            proc: None,
        };
        server.spawn().await;
        let admin = format!("mysql://root@127.0.0.1:{port}");
        let mut conn = connect_mysql_retrying(&admin, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("own MariaDB on {port}: root cannot log in over TCP: {e}"));
        sqlx::query("CREATE DATABASE IF NOT EXISTS test")
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE test");
        server
    }

    async fn spawn(&mut self) {
        let d = self.dir.path();
        let mut cmd = Command::new(mariadbd_bin());
        cmd.current_dir(d)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--pid-file={}", d.join("mariadb.pid").display()))
            .arg(format!("--tmpdir={}", d.display()))
            .arg("--skip-log-bin")
            .arg("--performance-schema=0")
            .arg("--max-connections=500")
            .args(MARIADB_FAST_OPTS);
        if is_root() {
            cmd.arg("--user=root");
        }
        let mut proc = Proc::spawn("MariaDB", cmd, &d.join("mariadb.log"));
        proc.wait_ready(self.port, MARIADB_START_TIMEOUT).await;
        self.proc = Some(proc);
    }

    /// Stops the server (clean shutdown); returns once the port is closed. The data stays.
    pub async fn stop(&mut self) {
        stop_proc(&mut self.proc, self.port).await;
    }

    /// Stops the server if it runs, then starts it again on the same port with the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }
}

impl Drop for MariaDbServer {
    fn drop(&mut self) {
        self.proc.take();
    }
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ
// ---------------------------------------------------------------------------------------------

/// Own RabbitMQ node for tests that stop/restart RabbitMQ: own `RABBITMQ_NODENAME`,
/// `RABBITMQ_NODE_PORT`, `RABBITMQ_DIST_PORT`, `RABBITMQ_MNESIA_BASE`, `RABBITMQ_LOG_BASE`,
/// `HOME` (Erlang cookie), `RABBITMQ_ENABLED_PLUGINS_FILE` (no plugins), config and env files,
/// all in a tempdir; never touches the shared node. User guest/guest.
/// Dropping it kills the node and deletes its data.
pub struct RabbitServer {
    /// The AMQP port on 127.0.0.1.
    pub port: u16,
    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub amqp_url: String,
    /// The Erlang node name (`testkit-…@localhost`).
    pub node_name: String,
    dist_port: u16,
    dir: TempDir,
    proc: Option<Proc>,
}

fn rabbitmq_server_bin() -> PathBuf {
    // Debian's /usr/sbin/rabbitmq-server is a wrapper that `su`s to the rabbitmq user and
    // loses our environment: run the real script.
    let debian = Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
    if debian.exists() {
        debian.to_path_buf()
    } else {
        PathBuf::from("rabbitmq-server")
    }
}

impl RabbitServer {
    /// Starts a new node on free ports with an empty database and waits until AMQP answers
    /// (about 6–9 s on 2 cores).
    pub async fn start() -> Self {
        ensure_services(); // installs rabbitmq-server on a fresh machine
        let port = free_port();
        let dist_port = free_port();
        let dir = temp_dir("testkit-rabbit-");
        let d = dir.path();
        let write = |name: &str, text: &str| {
            fs::write(d.join(name), text).unwrap_or_else(|e| panic!("write {name}: {e}"))
        };
        write("enabled_plugins", "[].\n");
        write(
            "rabbitmq.conf",
            &format!(
                "listeners.tcp.local = 127.0.0.1:{port}\n\
                 log.console = false\n"
            ),
        );
        write("rabbitmq-env.conf", "");
        let node_name = format!("{}@localhost", unique_name("testkit-"));
        let mut server = RabbitServer {
            port,
            amqp_url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            node_name,
            dist_port,
            dir,
            proc: None,
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let d = self.dir.path();
        let mut cmd = Command::new(rabbitmq_server_bin());
        // Nothing of the machine's RabbitMQ/Erlang settings leaks in.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("RABBITMQ_") || k.starts_with("ERL_") {
                cmd.env_remove(&key);
            }
        }
        cmd.current_dir(d)
            .env("HOME", d)
            .env("RABBITMQ_NODENAME", &self.node_name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d.join("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
        let mut proc = Proc::spawn("RabbitMQ", cmd, &d.join("rabbitmq.out"));
        proc.wait_ready(self.port, RABBIT_START_TIMEOUT).await;
        self.proc = Some(proc);
    }

    /// Stops the node (SIGTERM: clean shutdown); returns once the AMQP port is closed.
    /// Durable queues and persistent messages stay.
    pub async fn stop(&mut self) {
        stop_proc(&mut self.proc, self.port).await;
    }

    /// Starts the stopped node again: same name, ports and data. No-op when it runs.
    pub async fn start_again(&mut self) {
        if self.proc.as_mut().is_some_and(|p| !p.exited()) {
            return;
        }
        self.proc = None;
        self.spawn().await;
    }

    /// [`RabbitServer::stop`] then [`RabbitServer::start_again`].
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }
}

impl Drop for RabbitServer {
    fn drop(&mut self) {
        self.proc.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ() {
        let a = unique_name("db_");
        let b = unique_name("db_");
        assert!(a.starts_with("db_") && a.len() == 13);
        assert_ne!(a, b);
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports: HashSet<u16> = (0..20).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 20);
    }

    #[test]
    fn maildir_reads_only_complete_eml_files_in_order() {
        let dir = temp_dir("testkit-maildir-");
        fs::write(dir.path().join("002-b.eml"), "second").unwrap();
        fs::write(dir.path().join("001-a.eml"), "first").unwrap();
        fs::write(dir.path().join(".003-c.eml.tmp"), "partial").unwrap();
        fs::write(dir.path().join("notes.txt"), "x").unwrap();
        assert_eq!(read_maildir(dir.path()), vec!["first", "second"]);
    }

    #[test]
    fn workspace_root_has_the_services_script() {
        assert!(workspace_root().join("scripts/services").is_file());
    }
}

/// The synthetic media corpus (`../shared/scripts/make-media`, without `--long`), made once per process
/// under an exclusive file lock (so concurrent test binaries never write the same file), in `$MEDIA_DIR`
/// or `<workspace>/.cache/media`. Never committed. Returns the folder.
pub fn media_corpus() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace_root();
        let dir =
            std::env::var_os("MEDIA_DIR").map_or_else(|| root.join(".cache/media"), PathBuf::from);
        std::fs::create_dir_all(&dir).expect("media dir");
        let lock = std::fs::File::create(root.join(".cache/media.lock")).expect("media lock file");
        lock.lock().expect("media lock");
        let out = std::process::Command::new(root.join("../shared/scripts/make-media"))
            .arg(&dir)
            .output()
            .expect("make-media runs");
        assert!(
            out.status.success(),
            "make-media failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        drop(lock);
        dir
    })
    .clone()
}

/// Decoded length in seconds of the default audio track of `path` (samples / rate, via the ffmpeg CLI),
/// or `None` when it does not decode.
pub fn decoded_audio_seconds(path: &Path) -> Option<f64> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-xerror", "-i"])
        .arg(path)
        .args([
            "-map", "0:a:0", "-vn", "-f", "s16le", "-ac", "1", "-ar", "8000", "-",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| out.stdout.len() as f64 / 2.0 / 8000.0)
}

/// Serves `router` on a fresh 127.0.0.1 port (the function's own `serve_on`, so header timeouts and
/// graceful shutdown are the real ones) for the rest of the test; its base URL, `http://127.0.0.1:PORT`.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free loopback port");
    let url = format!("http://{}", listener.local_addr().expect("a bound address"));
    tokio::spawn(vidmp3_runtime::serve::serve_on(
        listener,
        router,
        std::future::pending(),
    ));
    url
}

/// Sends SIGTERM (what Kubernetes sends to stop a pod) to `child` alone, without waiting for it to exit.
pub fn sigterm(child: &Child) {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    // SAFETY: a plain syscall on a child process this test spawned and has not reaped.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}
