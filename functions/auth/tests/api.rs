//! The auth function over HTTP against a real MariaDB (a fresh database per test).

use std::time::{Duration, Instant};

use auth::{AppState, Settings, users};
use base64::Engine;
use vidmp3_runtime::config::Env;
use vidmp3_runtime::jwt::Claims;

const SECRET: &str = "test-secret-test-secret-test-secret-0123";

struct App {
    url: String,
    state: AppState,
    client: reqwest::Client,
}

async fn spawn_app_with(database_url: &str, extra: &[(&str, &str)]) -> App {
    let mut vars = vec![
        ("DATABASE_URL", database_url),
        ("JWT_SECRET", SECRET),
        ("DB_CONNECT_TIMEOUT_SECONDS", "2"),
    ];
    vars.extend_from_slice(extra);
    let settings = Settings::from_env(&Env::from_pairs(vars)).expect("settings");
    let state = AppState::new(&settings).expect("state");
    users::migrate(&state.pool).await.expect("migrations");
    let router = auth::router(state.clone());
    let url = testkit::serve(router).await;
    App {
        url,
        state,
        client: reqwest::Client::new(),
    }
}

async fn spawn_app(extra: &[(&str, &str)]) -> App {
    let db = testkit::fresh_mysql_database().await;
    spawn_app_with(&db, extra).await
}

impl App {
    async fn add_user(&self, email: &str, password: &str, admin: bool) {
        let hash = auth::password::hash(password.to_owned()).await.unwrap();
        users::create(
            &self.state.pool,
            &users::Email::parse(email).unwrap(),
            &hash,
            admin,
        )
        .await
        .unwrap();
    }

    async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/login", self.url))
            .basic_auth(email, Some(password))
            .send()
            .await
            .unwrap()
    }

    async fn token(&self, email: &str, password: &str) -> String {
        let r = self.login(email, password).await;
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    async fn validate(&self, authorization: Option<&str>) -> reqwest::Response {
        let mut req = self.client.post(format!("{}/validate", self.url));
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        req.send().await.unwrap()
    }
}

async fn problem(r: reqwest::Response) -> serde_json::Value {
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    r.json().await.unwrap()
}

#[tokio::test]
async fn a_stored_user_logs_in_and_the_token_validates() {
    let app = spawn_app(&[]).await;
    app.add_user("Alice@Example.com", "correct horse 1", false)
        .await;
    let response = app.login("alice@EXAMPLE.com", "correct horse 1").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let token = response.text().await.unwrap();
    let validated = app.validate(Some(&format!("Bearer {token}"))).await;
    assert_eq!(validated.status(), 200);
    let claims: Claims = validated.json().await.unwrap();
    assert_eq!(claims.email, "alice@example.com");
    assert!(!claims.admin);
    assert_eq!(claims.exp - claims.iat, 86_400);
    assert_eq!(
        (claims.iss.as_str(), claims.aud.as_str()),
        ("vidmp3-auth", "vidmp3")
    );
}

#[tokio::test]
async fn login_answers_json_when_asked_and_credentials_are_utf8() {
    let app = spawn_app(&[]).await;
    app.add_user("zoë@exämple.org", "pässwörd-ünïcode", false)
        .await;
    let response = app
        .client
        .post(format!("{}/login", app.url))
        .basic_auth("zoë@exämple.org", Some("pässwörd-ünïcode"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 86_400);
    assert_eq!(body["access_token"].as_str().unwrap().split('.').count(), 3);
}

#[tokio::test]
async fn unknown_user_and_wrong_password_get_the_same_401_in_about_the_same_time() {
    let app = spawn_app(&[("LOGIN_MAX_FAILURES", "100")]).await;
    app.add_user("bob@example.com", "right password", false)
        .await;
    let mut timings = Vec::new();
    for (email, password) in [
        ("bob@example.com", "wrong password"),
        ("nobody@example.com", "right password"),
    ] {
        let started = Instant::now();
        let r = app.login(email, password).await;
        timings.push(started.elapsed());
        assert_eq!(r.status(), 401);
        let p = problem(r).await;
        assert_eq!(p["code"], "bad_credentials");
        assert_eq!(p["detail"], "wrong email or password");
    }
    // Both paths run one argon2id verification; neither answers without hashing.
    let (a, b) = (timings[0].as_secs_f64(), timings[1].as_secs_f64());
    assert!(
        a.max(b) / a.min(b) < 5.0,
        "timings differ too much: {timings:?}"
    );
}

#[tokio::test]
async fn malformed_basic_credentials_are_401_not_500() {
    let app = spawn_app(&[]).await;
    for header in [
        "Bearer abc",
        "Basic !!!notbase64",
        "Basic bm9jb2xvbg==",
        "Basic //79",
    ] {
        let r = app
            .client
            .post(format!("{}/login", app.url))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{header}");
        assert_eq!(problem(r).await["code"], "invalid_credentials_format");
    }
    let r = app
        .client
        .post(format!("{}/login", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// Regression: five typos from one address (everyone is 127.0.0.1 on a dev machine, or one office NAT)
/// used to lock every account out for that address.
#[tokio::test]
async fn an_accounts_lockout_does_not_lock_other_accounts_out_for_the_same_client() {
    let app = spawn_app(&[]).await;
    app.add_user("typo@example.com", "the right one", false)
        .await;
    app.add_user("other@example.com", "other password", false)
        .await;
    for _ in 0..5 {
        assert_eq!(app.login("typo@example.com", "guess").await.status(), 401);
    }
    assert_eq!(
        app.login("typo@example.com", "the right one")
            .await
            .status(),
        429
    );
    assert_eq!(
        app.login("other@example.com", "other password")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn repeated_failures_are_rate_limited_until_the_window_ends() {
    let app = spawn_app(&[("LOGIN_MAX_FAILURES", "3"), ("LOGIN_WINDOW_SECONDS", "2")]).await;
    app.add_user("carol@example.com", "the right one", false)
        .await;
    for _ in 0..3 {
        assert_eq!(app.login("carol@example.com", "guess").await.status(), 401);
    }
    let limited = app.login("carol@example.com", "the right one").await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(problem(limited).await["code"], "too_many_attempts");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        app.login("carol@example.com", "the right one")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn validate_refuses_everything_but_a_good_bearer_token() {
    let app = spawn_app(&[]).await;
    let now = chrono_now();
    let sign = |alg, key: &[u8], claims: serde_json::Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(alg),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(key).unwrap(),
        )
        .unwrap()
    };
    let good = serde_json::json!({"sub":"1","email":"a@b.c","admin":false,"iat":now,"exp":now+600,"iss":"vidmp3-auth","aud":"vidmp3"});
    let mut expired = good.clone();
    expired["exp"] = serde_json::json!(now - 3600);
    let mut future = good.clone();
    future["iat"] = serde_json::json!(now + 3600);
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let alg_none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&good.to_string())
    );
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "missing_token"),
        (Some("Basic YTpi".into()), "wrong_auth_scheme"),
        (Some("Bearer not-a-jwt".into()), "malformed_token"),
        (Some(format!("Bearer {alg_none}")), "*"),
        (
            Some(format!(
                "Bearer {}",
                sign(
                    jsonwebtoken::Algorithm::HS512,
                    SECRET.as_bytes(),
                    good.clone()
                )
            )),
            "wrong_algorithm",
        ),
        (
            Some(format!(
                "Bearer {}",
                sign(
                    jsonwebtoken::Algorithm::HS256,
                    b"wrong-key-wrong-key-wrong-key-wrong",
                    good.clone()
                )
            )),
            "bad_signature",
        ),
        (
            Some(format!(
                "Bearer {}",
                sign(jsonwebtoken::Algorithm::HS256, SECRET.as_bytes(), expired)
            )),
            "token_expired",
        ),
        (
            Some(format!(
                "Bearer {}",
                sign(jsonwebtoken::Algorithm::HS256, SECRET.as_bytes(), future)
            )),
            "token_issued_in_future",
        ),
        (
            Some(format!(
                "Bearer {}",
                sign(jsonwebtoken::Algorithm::HS256, SECRET.as_bytes(), no_exp)
            )),
            "missing_claim",
        ),
    ];
    for (header, code) in cases {
        let r = app.validate(header.as_deref()).await;
        assert_eq!(r.status(), 401, "{header:?}");
        assert!(r.headers().contains_key("www-authenticate"));
        let p = problem(r).await;
        if code != "*" {
            assert_eq!(p["code"], code, "{header:?}");
        }
    }
    let ok = app
        .validate(Some(&format!(
            "Bearer {}",
            sign(jsonwebtoken::Algorithm::HS256, SECRET.as_bytes(), good)
        )))
        .await;
    assert_eq!(ok.status(), 200);
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn admins_create_users_and_others_cannot() {
    let app = spawn_app(&[]).await;
    app.add_user("root@example.com", "admin password", true)
        .await;
    app.add_user("user@example.com", "user password", false)
        .await;
    let admin = app.token("root@example.com", "admin password").await;
    let user = app.token("user@example.com", "user password").await;
    let create = |token: String, body: serde_json::Value| {
        app.client
            .post(format!("{}/users", app.url))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let created = create(
        admin.clone(),
        serde_json::json!({"email": "New@Example.com", "password": "new password"}),
    )
    .await
    .unwrap();
    assert_eq!(created.status(), 201);
    let body: serde_json::Value = created.json().await.unwrap();
    assert_eq!(body["email"], "new@example.com");
    assert_eq!(
        app.login("new@example.com", "new password").await.status(),
        200
    );

    let dup = create(
        admin.clone(),
        serde_json::json!({"email": "NEW@example.COM", "password": "another one"}),
    )
    .await
    .unwrap();
    assert_eq!(dup.status(), 409);
    assert_eq!(problem(dup).await["code"], "user_exists");
    let bad_email = create(
        admin.clone(),
        serde_json::json!({"email": "not-an-email", "password": "long enough"}),
    )
    .await
    .unwrap();
    assert_eq!(problem(bad_email).await["code"], "invalid_email");
    let weak = create(
        admin.clone(),
        serde_json::json!({"email": "w@example.com", "password": "short"}),
    )
    .await
    .unwrap();
    assert_eq!(weak.status(), 400);
    assert_eq!(problem(weak).await["code"], "weak_password");
    let forbidden = create(
        user,
        serde_json::json!({"email": "x@example.com", "password": "long enough"}),
    )
    .await
    .unwrap();
    assert_eq!(forbidden.status(), 403);
    let anonymous = app
        .client
        .post(format!("{}/users", app.url))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn passwords_are_stored_as_argon2id_only() {
    let app = spawn_app(&[]).await;
    app.add_user("dave@example.com", "plain text secret", false)
        .await;
    let (hash,): (String,) =
        sqlx::query_as("SELECT password_hash FROM users WHERE email = 'dave@example.com'")
            .fetch_one(&app.state.pool)
            .await
            .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("plain text secret"));
}

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_again_harmlessly() {
    let db = testkit::fresh_mysql_database().await;
    let pool = vidmp3_runtime::db::mysql_pool(&db, Duration::from_secs(5)).unwrap();
    users::migrate(&pool).await.unwrap();
    users::migrate(&pool).await.unwrap();
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = 'users'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 5, "id, email, password_hash, is_admin, created_at");
}

#[tokio::test]
async fn the_cli_bootstraps_an_admin_who_can_log_in() {
    let db = testkit::fresh_mysql_database().await;
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_auth"))
            .args(args)
            .env("DATABASE_URL", &db)
            .env_remove("JWT_SECRET")
            .env("AUTH_NEW_PASSWORD", "bootstrap password")
            .output()
            .unwrap()
    };
    let out = run(&["user", "add", "--email", "Admin@Example.com", "--admin"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = run(&["user", "add", "--email", "admin@example.com", "--admin"]);
    assert!(
        !again.status.success(),
        "a duplicate must fail without --exists-ok"
    );
    assert!(
        run(&["user", "add", "--email", "admin@example.com", "--exists-ok"])
            .status
            .success()
    );
    let app = spawn_app_with(&db, &[]).await;
    let token = app.token("admin@example.com", "bootstrap password").await;
    let claims: Claims = app
        .validate(Some(&format!("Bearer {token}")))
        .await
        .json()
        .await
        .unwrap();
    assert!(claims.admin);
    let logs =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !logs.contains("bootstrap password"),
        "the password must never be printed"
    );
}

#[tokio::test]
async fn configuration_errors_stop_the_process_with_one_line_naming_the_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("JWT_SECRET", SECRET)], "DATABASE_URL"),
        (
            &[("DATABASE_URL", "mysql://u:p@127.0.0.1:3306/x")],
            "JWT_SECRET",
        ),
        (
            &[
                ("DATABASE_URL", "mysql://u:p@127.0.0.1:3306/x"),
                ("JWT_SECRET", "too-short"),
            ],
            "JWT_SECRET",
        ),
        (
            &[
                ("DATABASE_URL", "mysql://u:p@127.0.0.1:3306/x"),
                ("JWT_SECRET", SECRET),
                ("LOGIN_MAX_FAILURES", "abc"),
            ],
            "LOGIN_MAX_FAILURES",
        ),
        (
            &[
                ("DATABASE_URL", "mysql://u:p@127.0.0.1:3306/x"),
                ("JWT_SECRET", SECRET),
                ("PORT", "abc"),
            ],
            "PORT",
        ),
        // Malformed URLs are refused at start, not at the first query.
        (
            &[
                ("DATABASE_URL", "mysql://u:p@127.0.0.1:abc/x"),
                ("JWT_SECRET", SECRET),
            ],
            "DATABASE_URL",
        ),
        (
            &[
                (
                    "DATABASE_URL",
                    "mysql://u:p@127.0.0.1:3306/x?ssl-mode=sometimes",
                ),
                ("JWT_SECRET", SECRET),
            ],
            "DATABASE_URL",
        ),
        (
            &[
                ("DATABASE_URL", "mysql://u:p@127.0.0.1:3306/x"),
                ("JWT_SECRET", SECRET),
                ("TRUSTED_PROXY_HOPS", "one"),
            ],
            "TRUSTED_PROXY_HOPS",
        ),
    ];
    for (vars, var) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_auth"))
            .env_clear()
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        assert_configuration_error(&out, var);
    }
    // The CLI (`migrate`, `user add`) checks DATABASE_URL the same way.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_auth"))
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", "mysql://u:p@127.0.0.1:99999/x")
        .output()
        .unwrap();
    assert_configuration_error(&out, "DATABASE_URL");
}

fn assert_configuration_error(out: &std::process::Output, var: &str) {
    assert_eq!(out.status.code(), Some(2), "{var}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("config error"))
        .unwrap_or_default();
    assert!(
        line.starts_with(&format!("config error: {var}:")),
        "{var}: {stderr}"
    );
    assert!(
        !stderr.contains("u:p@"),
        "the URL's password is not printed: {stderr}"
    );
}

#[tokio::test]
async fn mysql_down_is_503_within_the_timeout_and_recovers_without_restart() {
    let mut mariadb = testkit::MariaDbServer::start().await;
    let app = spawn_app_with(&mariadb.url, &[]).await;
    app.add_user("eve@example.com", "eve's password", false)
        .await;
    assert_eq!(
        app.login("eve@example.com", "eve's password")
            .await
            .status(),
        200
    );
    let ready = app
        .client
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    mariadb.stop().await;
    let started = Instant::now();
    let down = app.login("eve@example.com", "eve's password").await;
    assert_eq!(down.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    assert!(down.headers().contains_key("retry-after"));
    assert_eq!(problem(down).await["code"], "dependency_unavailable");
    let not_ready = app
        .client
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(not_ready.status(), 503);

    mariadb.restart().await;
    let mut status = 0;
    for _ in 0..40 {
        status = app
            .login("eve@example.com", "eve's password")
            .await
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status, 200, "login works again once MySQL is back");
}

#[tokio::test]
async fn metrics_count_logins_by_outcome() {
    let app = spawn_app(&[]).await;
    app.add_user("frank@example.com", "frank's password", false)
        .await;
    app.login("frank@example.com", "frank's password").await;
    app.login("frank@example.com", "nope").await;
    let text = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("auth_logins_total{outcome=\"ok\"}"), "{text}");
    assert!(text.contains("auth_logins_total{outcome=\"bad_credentials\"}"));
    assert!(
        text.contains("http_requests_total{method=\"POST\",route=\"/login\",status=\"200\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app(&[]).await;
    for (method, path, status, code) in [
        (reqwest::Method::GET, "/nope", 404, "not_found"),
        (reqwest::Method::GET, "/login", 405, "method_not_allowed"),
        (reqwest::Method::PUT, "/users", 405, "method_not_allowed"),
        (reqwest::Method::POST, "/healthz", 405, "method_not_allowed"),
    ] {
        let r = app
            .client
            .request(method.clone(), format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{method} {path}");
        if status == 405 {
            assert!(r.headers().contains_key("allow"), "{method} {path}");
        }
        let p = problem(r).await;
        assert_eq!(p["code"], code, "{method} {path}");
        assert_eq!(p["status"], status, "{method} {path}");
    }
}

#[tokio::test]
async fn jwt_ttl_seconds_sets_the_token_lifetime() {
    let app = spawn_app(&[("JWT_TTL_SECONDS", "120")]).await;
    app.add_user("ttl@example.com", "ttl password", false).await;
    let token = app.token("ttl@example.com", "ttl password").await;
    let claims: Claims = app
        .validate(Some(&format!("Bearer {token}")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(claims.exp - claims.iat, 120);
    let json: serde_json::Value = app
        .client
        .post(format!("{}/login", app.url))
        .basic_auth("ttl@example.com", Some("ttl password"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["expires_in"], 120);
}

/// `auth user add` with the password on stdin (no AUTH_NEW_PASSWORD); refusals name the problem and exit
/// non-zero without touching the database.
#[tokio::test]
async fn the_cli_reads_the_password_from_stdin_and_refuses_bad_input() {
    use std::io::Write;
    let db = testkit::fresh_mysql_database().await;
    let run = |email: &str, stdin: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_auth"))
            .args(["user", "add", "--email", email])
            .env("DATABASE_URL", &db)
            .env_remove("JWT_SECRET")
            .env_remove("AUTH_NEW_PASSWORD")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The CLI may refuse the email and exit before reading stdin: a broken pipe is fine then.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    };
    let out = run("stdin@example.com", "piped password\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = spawn_app_with(&db, &[]).await;
    assert_eq!(
        app.login("stdin@example.com", "piped password")
            .await
            .status(),
        200,
        "the password is the line read from stdin, without its newline"
    );

    for (email, password, says) in [
        (
            "not-an-email",
            "long enough password\n",
            "not a valid email address",
        ),
        ("short@example.com", "7chars!\n", "at least 8 characters"),
    ] {
        let out = run(email, password);
        assert!(!out.status.success(), "{email} must be refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{email}: {stderr}");
        assert!(!stderr.contains(password.trim_end()), "{email}: {stderr}");
    }
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
        .fetch_one(&app.state.pool)
        .await
        .unwrap();
    assert_eq!(count, 1, "only the valid user was added");
}

/// With the default TRUSTED_PROXY_HOPS=1 the client is the last X-Forwarded-For entry, the one the gateway
/// appended; whatever a client writes before it does not make it another client, so rotating it still
/// reaches the per-client bound.
#[tokio::test]
async fn a_client_rotating_its_own_x_forwarded_for_is_still_one_client() {
    let app = spawn_app(&[
        ("LOGIN_MAX_FAILURES", "2"),
        ("LOGIN_MAX_CLIENT_FAILURES", "4"),
    ])
    .await;
    app.add_user("fresh@example.com", "fresh password", false)
        .await;
    let login = |email: String, claimed: String, gateway_saw: &'static str| {
        app.client
            .post(format!("{}/login", app.url))
            .basic_auth(email, Some("a guess"))
            .header("x-forwarded-for", format!("{claimed}, {gateway_saw}"))
            .send()
    };
    // Four accounts, each below its own bound, each from a "new" address the attacker claims.
    for i in 0..4 {
        let r = login(
            format!("target{i}@example.com"),
            format!("198.51.100.{i}"),
            "203.0.113.66",
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 401, "attempt {i}");
    }
    let r = login(
        "fresh@example.com".into(),
        "198.51.100.200".into(),
        "203.0.113.66",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 429, "the client's bound counts the real client");
    assert_eq!(problem(r).await["code"], "too_many_attempts");
    // Another client (another address appended by the gateway) is not limited.
    let other = app
        .client
        .post(format!("{}/login", app.url))
        .basic_auth("fresh@example.com", Some("fresh password"))
        .header("x-forwarded-for", "198.51.100.200, 203.0.113.67")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
}

/// TRUSTED_PROXY_HOPS=0 (auth reached directly): X-Forwarded-For is ignored, the TCP peer is the client.
#[tokio::test]
async fn with_no_trusted_proxy_x_forwarded_for_is_ignored() {
    let app = spawn_app(&[
        ("LOGIN_MAX_FAILURES", "2"),
        ("LOGIN_MAX_CLIENT_FAILURES", "3"),
        ("TRUSTED_PROXY_HOPS", "0"),
    ])
    .await;
    for i in 0..3 {
        let r = app
            .client
            .post(format!("{}/login", app.url))
            .basic_auth(format!("t{i}@example.com"), Some("a guess"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "attempt {i}");
    }
    let r = app
        .client
        .post(format!("{}/login", app.url))
        .basic_auth("t9@example.com", Some("a guess"))
        .header("x-forwarded-for", "203.0.113.99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}

/// One `SHOW GLOBAL STATUS` counter of the server at `url`, over a fresh connection.
async fn global_status(url: &str, name: &str) -> u64 {
    use sqlx::Connection;
    let mut conn = sqlx::MySqlConnection::connect(url).await.unwrap();
    let (value,): (String,) = sqlx::query_as(
        "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = ?",
    )
    .bind(name)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    value.parse().unwrap()
}

#[tokio::test]
async fn a_pooled_connection_the_server_closed_for_idleness_is_replaced_not_a_500() {
    // A private server, so the short idle timeout cannot break the shared MariaDB's other users.
    let mariadb = testkit::MariaDbServer::start().await;
    {
        use sqlx::Connection;
        let mut admin = sqlx::MySqlConnection::connect(&mariadb.url).await.unwrap();
        // Sessions take their timeout from the global value when they connect, so set it before the pool
        // opens its first connection. Both: the server picks one by the client's CLIENT_INTERACTIVE flag.
        for sql in [
            "SET GLOBAL wait_timeout = 2",
            "SET GLOBAL interactive_timeout = 2",
        ] {
            sqlx::query(sql).execute(&mut admin).await.unwrap();
        }
    }
    let app = spawn_app_with(&mariadb.url, &[]).await;
    app.add_user("idle@example.com", "idle's password", false)
        .await;
    assert_eq!(
        app.login("idle@example.com", "idle's password")
            .await
            .status(),
        200
    );
    let aborted_before = global_status(&mariadb.url, "Aborted_clients").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The precondition, or the test proves nothing: the server did drop the idle pooled connections.
    let aborted_after = global_status(&mariadb.url, "Aborted_clients").await;
    assert!(
        aborted_after > aborted_before,
        "the server closed no idle connection (Aborted_clients {aborted_before} -> {aborted_after})"
    );
    let again = app.login("idle@example.com", "idle's password").await;
    assert_eq!(
        again.status(),
        200,
        "a connection the server dropped is replaced by the pool, not handed to the query"
    );
    assert!(!again.text().await.unwrap().is_empty(), "a token");
}
