//! The web page in a real browser: headless Chromium driven over WebDriver (chromedriver + fantoccini)
//! against the whole stack in-process (auth, gateway, Broker runner, converter, notification).
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/test` installs them). Screenshots of every
//! state go to `target/screenshots/` (or `$CARGO_TARGET_DIR/screenshots/`): look at them.

mod stack;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use stack::{StackOptions, USER_EMAIL, USER_PASSWORD, start_stack_with};

/// A chromedriver process (in its own process group, so Chromium dies with it) and a WebDriver session.
struct Browser {
    client: Client,
    webdriver_url: String,
    chromedriver: Child,
    downloads: tempfile::TempDir,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Self {
        for binary in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: `apt-get install chromium chromium-driver` (scripts/test does it)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let chromedriver = {
            use std::os::unix::process::CommandExt;
            Command::new("/usr/bin/chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("chromedriver starts")
        };
        let downloads = tempfile::tempdir().unwrap();
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-extensions",
                    "--window-size=1280,900", "--lang=en-US",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.path(),
                    "download.prompt_for_download": false,
                    "safebrowsing.enabled": false,
                },
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no WebDriver session from chromedriver: {e}"),
            }
        };
        Self {
            client,
            webdriver_url: url,
            chromedriver,
            downloads,
            _profile: profile,
        }
    }

    /// Limits the page's upload bandwidth to `bytes_per_second` (`None`: no limit), through chromedriver's
    /// Chrome DevTools Protocol bridge (`Network.emulateNetworkConditions`), so an upload lasts long enough
    /// to be seen.
    async fn throttle_upload(&self, bytes_per_second: Option<u32>) {
        let session = self.client.session_id().await.unwrap().expect("a session");
        let throughput = bytes_per_second.map_or(-1.0, f64::from);
        let http = reqwest::Client::new();
        let cdp = format!("{}/session/{session}/goog/cdp/execute", self.webdriver_url);
        for (cmd, params) in [
            ("Network.enable", json!({})),
            (
                "Network.emulateNetworkConditions",
                json!({"offline": false, "latency": 0, "downloadThroughput": -1,
                       "uploadThroughput": throughput}),
            ),
        ] {
            let r = http
                .post(&cdp)
                .json(&json!({"cmd": cmd, "params": params}))
                .send()
                .await
                .unwrap();
            assert!(
                r.status().is_success(),
                "{cmd}: {}",
                r.text().await.unwrap()
            );
        }
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `condition` (a JS expression) is truthy; panics with `what` and the page's text after
    /// `timeout`.
    async fn wait_until(&self, condition: &str, what: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let script = format!("return Boolean({condition});");
        loop {
            if self.js(&script, vec![]).await == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let text = self.js("return document.body.innerText;", vec![]).await;
                panic!("{what}: not within {timeout:?}; the page says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (up to 60 s) for the job list's first entry (the newest job); its job id.
    async fn wait_for_new_job(&self) -> String {
        self.wait_until(
            "document.querySelector('#jobs li')",
            "the job appears",
            Duration::from_secs(60),
        )
        .await;
        let id = self
            .js(
                "return document.querySelector('#jobs li').dataset.jobId;",
                vec![],
            )
            .await;
        id.as_str().expect("a job id").to_owned()
    }

    /// Waits (up to 15 s) until the element with id `id` is no longer `hidden`.
    async fn wait_shown(&self, id: &str, what: &str) {
        let condition = format!("!document.getElementById('{id}').hidden");
        self.wait_until(&condition, what, Duration::from_secs(15))
            .await;
    }

    async fn text_of(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Picks `path` in the page's file input (as a person choosing it in the file dialog).
    async fn choose_file(&self, path: &Path) {
        self.client
            .find(Locator::Css("#file"))
            .await
            .unwrap()
            .send_keys(&path.display().to_string())
            .await
            .unwrap();
    }

    /// Saves a PNG of the viewport as `target/screenshots/{name}.png`.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// The first finished download (no `.crdownload` partial) in the download folder.
    async fn wait_for_download(&self, timeout: Duration) -> PathBuf {
        let deadline = Instant::now() + timeout;
        loop {
            let files: Vec<PathBuf> = std::fs::read_dir(self.downloads.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            if let Some(done) = files
                .iter()
                .find(|p| p.extension().is_some_and(|e| e == "mp3"))
            {
                return done.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no download within {timeout:?}: {files:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver's process group holds Chromium and its helpers.
        let pgid = i32::try_from(self.chromedriver.id()).unwrap();
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.chromedriver.wait();
    }
}

fn screenshot_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| testkit::workspace_root().join("target"), PathBuf::from)
        .join("screenshots")
}

/// The job's `<li>` is in `state` (a `data-state` value).
fn job_in_state(job_id: &str, state: &str) -> String {
    format!("document.querySelector('#job-{job_id}[data-state=\"{state}\"]')")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_person_logs_in_uploads_a_clip_follows_it_downloads_the_mp3_and_deletes_it() {
    let stack = start_stack_with(
        &testkit::shared_amqp_url(),
        StackOptions {
            auth: true,
            ..StackOptions::default()
        },
    )
    .await;
    let clip = testkit::media_corpus().join("mp4_h264_aac_faststart_10s.mp4");
    let browser = Browser::start().await;
    let page = &browser.client;
    page.goto(&format!("{}/", stack.gateway)).await.unwrap();

    // The login form, labelled and focusable by keyboard.
    browser
        .wait_shown("login-view", "the login form shows")
        .await;
    let unlabelled = browser
        .js(
            "return [...document.querySelectorAll('input, select')]
                .filter(i => i.type !== 'hidden' && !(i.labels && i.labels.length)).map(i => i.id);",
            vec![],
        )
        .await;
    assert_eq!(unlabelled, json!([]), "every field has a label");
    browser.screenshot("01-login").await;

    // A wrong password says so, in words.
    browser.fill("#email", USER_EMAIL).await;
    browser.fill("#password", "not the password").await;
    browser.click("#login-button").await;
    browser
        .wait_shown("login-error", "the login error shows")
        .await;
    assert!(
        browser
            .text_of("#login-error")
            .await
            .contains("don't match"),
        "{}",
        browser.text_of("#login-error").await
    );
    browser.screenshot("02-login-wrong-password").await;

    // Logged in: the token is in sessionStorage, never in the URL.
    browser.fill("#password", USER_PASSWORD).await;
    browser.click("#login-button").await;
    browser
        .wait_shown("app-view", "the app shows after login")
        .await;
    assert!(browser.text_of("#who").await.contains(USER_EMAIL));
    let url = page.current_url().await.unwrap();
    assert!(!url.as_str().contains("ey"), "no token in the URL: {url}");
    let stored = browser
        .js("return sessionStorage.getItem('vidmp3.token');", vec![])
        .await;
    assert!(
        stored.as_str().is_some_and(|t| t.split('.').count() == 3),
        "{stored}"
    );
    browser.wait_shown("jobs-empty", "the empty list").await;
    browser.screenshot("03-empty").await;

    // Upload a corpus clip (slowly enough to watch its progress); it appears in the list and is followed
    // live to `converted`.
    browser.throttle_upload(Some(200_000)).await;
    browser.choose_file(&clip).await;
    browser
        .wait_until(
            "document.getElementById('upload-progress').value > 0.2 && !document.getElementById('upload-status').hidden",
            "the upload progress shows",
            Duration::from_secs(30),
        )
        .await;
    let progress = browser.text_of("#upload-text").await;
    assert!(
        progress.contains("mp4_h264_aac_faststart_10s.mp4") && progress.contains('%'),
        "{progress}"
    );
    browser.screenshot("04-uploading").await;
    let job_id = browser.wait_for_new_job().await;
    browser.screenshot("05-uploaded").await;
    browser.throttle_upload(None).await;
    browser
        .wait_until(
            &job_in_state(&job_id, "converted"),
            "the job converts",
            Duration::from_secs(120),
        )
        .await;
    let badge = browser.text_of(&format!("#job-{job_id} .badge")).await;
    assert_eq!(badge, "Ready");
    let meta = browser.text_of(&format!("#job-{job_id} .job-meta")).await;
    assert!(meta.contains("MP3 0:10"), "{meta}");
    browser.screenshot("06-converted").await;

    // Download: the bytes are an MP3 as long as the clip's audio.
    browser.click(&format!("#job-{job_id} .download")).await;
    let mp3 = browser.wait_for_download(Duration::from_secs(30)).await;
    assert_eq!(mp3.file_name().unwrap(), "mp4_h264_aac_faststart_10s.mp3");
    let bytes = std::fs::read(&mp3).unwrap();
    assert!(
        bytes.starts_with(b"ID3") || (bytes[0] == 0xFF && bytes[1] & 0xE0 == 0xE0),
        "an MP3 (ID3 tag or frame sync)"
    );
    let got = testkit::decoded_audio_seconds(&mp3).expect("the download decodes");
    let want = testkit::decoded_audio_seconds(&clip).unwrap();
    assert!(
        (got - want).abs() < 0.15,
        "MP3 {got} s vs source audio {want} s"
    );

    // The email's link opens the page on that job (a plain link cannot carry a token).
    let mail = stack.wait_for_email(&job_id, Duration::from_secs(60)).await;
    let flat = mail
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    let page_link = format!("http://gateway.e2e/#job={job_id}");
    assert!(flat.contains(&page_link), "{flat}");
    page.goto(&format!("{}/#job={job_id}", stack.gateway))
        .await
        .unwrap();
    page.refresh().await.unwrap();
    browser
        .wait_until(
            &format!("document.activeElement && document.activeElement.closest('#job-{job_id}')"),
            "the emailed job is focused",
            Duration::from_secs(10),
        )
        .await;

    // A phone-sized screen: nothing wider than the viewport.
    page.set_window_size(390, 844).await.unwrap();
    let overflow = browser
        .js(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "horizontal overflow of {overflow} px on a phone"
    );
    browser.screenshot("07-phone").await;
    page.set_window_size(1280, 900).await.unwrap();

    // Delete asks once more, then the job is gone here and in the API.
    browser.click(&format!("#job-{job_id} .delete")).await;
    assert_eq!(
        browser.text_of(&format!("#job-{job_id} .delete")).await,
        "Confirm delete"
    );
    browser.screenshot("08-confirm-delete").await;
    browser.click(&format!("#job-{job_id} .delete")).await;
    browser
        .wait_until(
            &format!("!document.getElementById('job-{job_id}')"),
            "the job disappears",
            Duration::from_secs(10),
        )
        .await;
    let status = stack
        .client
        .get(format!("{}/jobs/{job_id}", stack.gateway))
        .bearer_auth(stack.token())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404, "deleted for real");

    // Logging out forgets the token.
    browser.click("#logout").await;
    browser
        .wait_shown("login-view", "back to the login form")
        .await;
    assert_eq!(
        browser
            .js("return sessionStorage.getItem('vidmp3.token');", vec![])
            .await,
        Value::Null
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_error_shows_a_clear_message() {
    const LIMIT: u64 = 50 * 1024 * 1024;
    // No auth behind this gateway: its /login answers 503.
    let stack = start_stack_with(
        &testkit::shared_amqp_url(),
        StackOptions {
            max_upload_bytes: Some(LIMIT),
            ..StackOptions::default()
        },
    )
    .await;
    let browser = Browser::start().await;
    let page = &browser.client;
    page.goto(&format!("{}/", stack.gateway)).await.unwrap();

    // Service unavailable.
    browser.fill("#email", "owner@example.com").await;
    browser.fill("#password", "whatever").await;
    browser.click("#login-button").await;
    browser
        .wait_shown("login-error", "the login error shows")
        .await;
    assert!(
        browser
            .text_of("#login-error")
            .await
            .contains("unavailable")
    );
    browser.screenshot("10-unavailable").await;

    // A session from elsewhere (the token a login would have stored).
    browser
        .js(
            "sessionStorage.setItem('vidmp3.token', arguments[0]);",
            vec![json!(stack.token())],
        )
        .await;
    page.refresh().await.unwrap();
    browser.wait_shown("app-view", "the app shows").await;
    assert!(
        browser.text_of("#max-size").await.contains("52 MB"),
        "the limit is shown"
    );

    // Too large: refused before a byte is sent.
    let work = tempfile::tempdir().unwrap();
    let big = work.path().join("holiday.mp4");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(LIMIT + 1)
        .unwrap();
    browser.choose_file(&big).await;
    browser
        .wait_shown("upload-error", "the too-large message")
        .await;
    let message = browser.text_of("#upload-error").await;
    assert!(
        message.contains("holiday.mp4") && message.contains("too large"),
        "{message}"
    );
    browser.screenshot("11-too-large").await;

    // Not a video: the gateway sniffs the bytes (415) whatever the name says.
    let text = testkit::media_corpus().join("text_file_renamed.mp4");
    browser.choose_file(&text).await;
    browser
        .wait_until(
            "document.getElementById('upload-error').textContent.includes('text_file_renamed.mp4')",
            "the not-a-video message",
            Duration::from_secs(30),
        )
        .await;
    let message = browser.text_of("#upload-error").await;
    assert!(message.contains("doesn't look like a video"), "{message}");
    browser.screenshot("12-not-a-video").await;
    assert_eq!(stack.count("videos.files").await, 0, "nothing was kept");

    // A failed conversion shows its reason.
    let silent = testkit::media_corpus().join("mp4_h264_no_audio_track_10s.mp4");
    browser.choose_file(&silent).await;
    let job_id = browser.wait_for_new_job().await;
    browser
        .wait_until(
            &job_in_state(&job_id, "failed"),
            "the job fails",
            Duration::from_secs(120),
        )
        .await;
    let note = browser.text_of(&format!("#job-{job_id} .job-note")).await;
    assert!(
        note.starts_with("Could not convert:") && note.contains("audio"),
        "{note}"
    );
    assert_eq!(
        browser.text_of(&format!("#job-{job_id} .badge")).await,
        "Failed"
    );
    browser.screenshot("13-failed").await;

    // A link to a job that is not (or no longer) in the list says so.
    page.goto(&format!(
        "{}/#job=01a229e0-0000-7000-8000-000000000000",
        stack.gateway
    ))
    .await
    .unwrap();
    browser
        .wait_shown("link-notice", "the missing-job notice")
        .await;
    assert!(browser.text_of("#link-notice").await.contains("deleted"));
    browser.screenshot("14-missing-job-link").await;

    // Session expired (here: a token the gateway no longer accepts) → back to login, with the reason.
    let token = stack.token();
    let tampered = format!("{}x", &token[..token.len() - 1]);
    browser
        .js(
            "sessionStorage.setItem('vidmp3.token', arguments[0]);",
            vec![json!(tampered)],
        )
        .await;
    page.refresh().await.unwrap();
    browser
        .wait_shown("login-error", "the expired message")
        .await;
    assert!(
        browser
            .text_of("#login-error")
            .await
            .contains("session has expired")
    );
    browser.screenshot("15-session-expired").await;
}
