//! auth against hostile input (issue 9's security cases), over HTTP against a real MariaDB (a fresh database
//! per test):
//! - every forged token of `testkit::jwt::Forger::attacks` × every token-protected route (`POST /validate`,
//!   `POST /users`) is 401 with a problem+json body, and no forged admin token creates a user;
//! - SQL-injection-shaped emails and passwords are 401 (or stored literally, for a new user) and leave the
//!   `users` table intact;
//! - no SQL statement in `functions/auth/src` is built with `format!` or passed as anything but a string
//!   literal (so every value reaches MySQL as a bound parameter).
//!
//! `POST /login` takes HTTP Basic credentials, not a token; its brute-force limit is tested in `api.rs` and,
//! through the gateway, in the gateway's `security.rs`.

use std::path::{Path, PathBuf};

use auth::{AppState, Settings, users};
use serde_json::{Value, json};
use testkit::jwt::Forger;
use vidmp3_runtime::config::Env;

const SECRET: &str = "auth-security-secret-auth-security-secret";

struct App {
    url: String,
    state: AppState,
    client: reqwest::Client,
}

async fn spawn_app(extra: &[(&str, &str)]) -> App {
    let database_url = testkit::fresh_mysql_database().await;
    let mut vars = vec![
        ("DATABASE_URL", database_url.as_str()),
        ("JWT_SECRET", SECRET),
        ("DB_CONNECT_TIMEOUT_SECONDS", "5"),
    ];
    vars.extend_from_slice(extra);
    let settings = Settings::from_env(&Env::from_pairs(vars)).expect("settings");
    let state = AppState::new(&settings).expect("state");
    users::migrate(&state.pool).await.expect("migrations");
    let url = testkit::serve(auth::router(state.clone())).await;
    App {
        url,
        state,
        client: reqwest::Client::new(),
    }
}

impl App {
    async fn add_user(&self, email: &str, password: &str) {
        let hash = auth::password::hash(password.to_owned()).await.unwrap();
        users::create(
            &self.state.pool,
            &users::Email::parse(email).unwrap(),
            &hash,
            false,
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

    /// `POST path` with an optional `Authorization` header and JSON body.
    async fn post(
        &self,
        path: &str,
        authorization: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut req = self.client.post(format!("{}{path}", self.url));
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().await.unwrap()
    }

    /// The rows of `users` as (email, is_admin), sorted.
    async fn users(&self) -> Vec<(String, bool)> {
        let mut rows: Vec<(String, bool)> = sqlx::query_as("SELECT email, is_admin FROM users")
            .fetch_all(&self.state.pool)
            .await
            .expect("the users table is still there");
        rows.sort();
        rows
    }
}

/// Every token-protected route of auth as (path, JSON body); one line per route.
fn protected_routes() -> Vec<(&'static str, Option<Value>)> {
    vec![
        ("/validate", None),
        (
            "/users",
            Some(
                json!({"email": "forged-admin-made-me@example.com", "password": "long enough password", "admin": true}),
            ),
        ),
    ]
}

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

#[tokio::test]
async fn every_forged_token_is_401_with_a_problem_on_every_protected_route() {
    let app = spawn_app(&[]).await;
    let forger = Forger::new(SECRET);
    let before = app.users().await;
    // Forged *admin* tokens: one that got through would create a user.
    let attacks = forger.attacks("1", "root@example.com", true);
    assert!(attacks.len() >= 25);
    for attack in &attacks {
        for (path, body) in protected_routes() {
            let r = app
                .post(path, attack.authorization.as_deref(), body.as_ref())
                .await;
            assert_unauthorized(r, &format!("{} on POST {path}", attack.name)).await;
        }
    }
    assert_eq!(app.users().await, before, "no forged token created a user");
    // Positive control: the same admin's real token passes both routes.
    let bearer = format!("Bearer {}", forger.valid("1", "root@example.com", true));
    for (path, body) in protected_routes() {
        let r = app.post(path, Some(&bearer), body.as_ref()).await;
        assert!(
            r.status().is_success(),
            "valid token on POST {path}: {}",
            r.status()
        );
    }
    assert_eq!(app.users().await.len(), before.len() + 1);
}

/// Classic injection payloads, used as emails and as passwords.
const INJECTIONS: &[&str] = &[
    "' OR '1'='1",
    "' OR '1'='1' -- ",
    "' OR 1=1 #",
    "\"; DROP TABLE users; --",
    "'; DROP TABLE users; --",
    "alice@example.com' --",
    "alice@example.com' OR '1'='1",
    "alice@example.com'; UPDATE users SET is_admin=1; --",
    "' UNION SELECT 1, 'alice@example.com', 'x', 1 -- ",
    "%",
    "_%@%.%",
    "\\' OR 1=1 -- ",
];

#[tokio::test]
async fn sql_injection_shaped_credentials_are_401_and_leave_the_users_table_intact() {
    // A high limit: this test is about SQL, not about the rate limiter.
    let app = spawn_app(&[("LOGIN_MAX_FAILURES", "1000")]).await;
    app.add_user("alice@example.com", "alice's real password")
        .await;
    let before = app.users().await;
    for payload in INJECTIONS {
        for (email, password) in [
            (*payload, "whatever it is"),
            ("alice@example.com", *payload),
            (*payload, *payload),
        ] {
            let r = app.login(email, password).await;
            assert_eq!(r.status(), 401, "login {email:?} / {password:?}");
            assert_eq!(r.headers()["content-type"], "application/problem+json");
        }
    }
    assert_eq!(app.users().await, before, "the users table is unchanged");
    assert_eq!(
        app.login("alice@example.com", "alice's real password")
            .await
            .status(),
        200
    );

    // Quotes are data: a user whose email and password contain SQL is stored and matched literally.
    let admin = format!(
        "Bearer {}",
        Forger::new(SECRET).valid("1", "root@example.com", true)
    );
    let sneaky_password = "\"; DROP TABLE users; -- ' OR '1'='1";
    let r = app
        .post(
            "/users",
            Some(&admin),
            Some(&json!({"email": "o'brien@example.com", "password": sneaky_password})),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        app.login("O'Brien@example.com", sneaky_password)
            .await
            .status(),
        200
    );
    assert_eq!(
        app.login("o'brien@example.com", "' OR '1'='1")
            .await
            .status(),
        401
    );
    assert_eq!(
        app.login("o'brien@example.com' -- ", sneaky_password)
            .await
            .status(),
        401
    );
    let mut expected = before.clone();
    expected.push(("o'brien@example.com".to_owned(), false));
    expected.sort();
    assert_eq!(
        app.users().await,
        expected,
        "one new row, nobody became admin"
    );
}

// ---------------------------------------------------------------------------------------------
// Static check: SQL is never assembled from strings
// ---------------------------------------------------------------------------------------------

const SQL_WORDS: &[&str] = &[
    "select ", "insert ", "update ", "delete ", "drop ", " where ", " from ", "values", " set ",
    "replace ",
];
const QUERY_FUNCTIONS: &[&str] = &[
    "query",
    "query_as",
    "query_scalar",
    "query_with",
    "query_as_with",
    "query_scalar_with",
    "raw_sql",
];

/// Problems in one source file: `format!` calls whose text looks like SQL, and sqlx query functions whose
/// first argument is not a string literal (a variable, `&format!(…)`, a concatenation…). Also
/// `QueryBuilder`, which exists to assemble SQL text.
fn sql_building_problems(source: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let line_of = |at: usize| source[..at].lines().count().max(1);
    for (at, _) in source.match_indices("format!(") {
        let args = &source[at + "format!(".len()..];
        let text = args.split(')').next().unwrap_or_default().to_lowercase();
        if SQL_WORDS.iter().any(|w| text.contains(w)) {
            problems.push(format!("line {}: SQL text built with format!", line_of(at)));
        }
    }
    for function in QUERY_FUNCTIONS {
        let needle = (*function).to_owned();
        for (at, _) in source.match_indices(&needle) {
            let before = source[..at].chars().next_back().unwrap_or(' ');
            if before.is_alphanumeric() || before == '_' {
                continue; // part of a longer name
            }
            let mut rest = &source[at + needle.len()..];
            if rest.starts_with("::<") {
                let Some(end) = rest.find(">(") else { continue };
                rest = &rest[end + 1..];
            }
            let Some(args) = rest.strip_prefix('(') else {
                continue; // not a call (a `use`, a word in a comment…)
            };
            let args = args.trim_start();
            let literal =
                args.starts_with('"') || args.starts_with("r\"") || args.starts_with("r#");
            if !literal || *function == "raw_sql" {
                problems.push(format!(
                    "line {}: {function}(…) is not given a string literal",
                    line_of(at)
                ));
            }
        }
    }
    if source.contains("QueryBuilder") {
        problems.push("QueryBuilder assembles SQL text".to_owned());
    }
    problems
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

#[test]
fn the_sql_check_catches_string_built_sql_and_passes_literals() {
    let bad = [
        r#"sqlx::query(&format!("SELECT * FROM users WHERE email = '{email}'"))"#,
        r#"let sql = format!("DELETE FROM users WHERE id = {id}");"#,
        r#"sqlx::query_as::<_, User>(sql.as_str())"#,
        r#"sqlx::query(&("SELECT 1 FROM users WHERE email = '".to_owned() + email + "'"))"#,
        r#"sqlx::raw_sql("SELECT 1")"#,
        r#"let mut b = sqlx::QueryBuilder::new("SELECT ");"#,
    ];
    for snippet in bad {
        assert!(
            !sql_building_problems(snippet).is_empty(),
            "missed: {snippet}"
        );
    }
    let good = [
        r#"sqlx::query("INSERT INTO users (email) VALUES (?)").bind(email)"#,
        "sqlx::query_as::<_, User>(\n        \"SELECT id FROM users WHERE email = ?\",\n    )",
        r#"let bad = || format!("{raw:?} is not a valid email address");"#,
    ];
    for snippet in good {
        assert_eq!(
            sql_building_problems(snippet),
            Vec::<String>::new(),
            "{snippet}"
        );
    }
}

#[test]
fn every_sql_statement_in_auth_is_a_literal_with_bound_parameters() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() >= 3, "found {files:?}");
    let mut queries = 0;
    let mut problems = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap();
        queries += source.matches("sqlx::query").count();
        for p in sql_building_problems(&source) {
            problems.push(format!("{}: {p}", file.display()));
        }
    }
    assert!(
        queries >= 2,
        "the scan found only {queries} queries: is it looking in the right place?"
    );
    assert!(
        problems.is_empty(),
        "SQL must be a literal with ? placeholders:\n{}",
        problems.join("\n")
    );
}

#[test]
fn settings_debug_output_hides_the_database_password_and_the_jwt_secret() {
    let env = Env::from_pairs([
        (
            "DATABASE_URL",
            "mysql://app:db-password-9f3k@127.0.0.1:3306/vidmp3",
        ),
        ("JWT_SECRET", SECRET),
    ]);
    let debug = format!("{:?}", Settings::from_env(&env).unwrap());
    assert!(!debug.contains("db-password-9f3k"), "{debug}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(
        debug.contains("mysql://app:***@127.0.0.1:3306/vidmp3"),
        "{debug}"
    );
}
