//! `TOKEN_VERIFICATION=auth`: the gateway asks a real auth router (spawned on a random port) to check every
//! bearer token through `POST /validate`, instead of verifying it itself.
//!
//! auth and the gateway get different secrets here, so a request the gateway accepts in `auth` mode can only
//! have been accepted by auth, and the same token is refused in the default `local` mode.

use gateway::{AppState, Settings};
use testkit::serve;
use vidmp3_runtime::config::Env;
use vidmp3_runtime::jwt::{JwtKeys, JwtSettings, VerificationMode};

const AUTH_SECRET: &str = "auth-side-secret-auth-side-secret-0123456";
const GATEWAY_SECRET: &str = "gateway-side-secret-gateway-side-secret-01";

/// The real auth router. `/validate` needs no database; the pool connects lazily and is never used.
async fn spawn_auth() -> String {
    let vars = [
        ("DATABASE_URL", "mysql://nobody:nothing@127.0.0.1:9/unused"),
        ("JWT_SECRET", AUTH_SECRET),
    ];
    let settings = auth::Settings::from_env(&Env::from_pairs(vars)).unwrap();
    serve(auth::router(auth::AppState::new(&settings).unwrap())).await
}

async fn spawn_gateway(auth_url: &str, mode: &str) -> String {
    testkit::ensure_services();
    let mongo = testkit::shared_mongo_uri();
    let database = testkit::unique_name("gwtok");
    let vars = [
        ("AUTH_URL", auth_url),
        ("MONGODB_URI", mongo.as_str()),
        ("MONGODB_DATABASE", database.as_str()),
        ("JWT_SECRET", GATEWAY_SECRET),
        ("TOKEN_VERIFICATION", mode),
        ("DB_CONNECT_TIMEOUT_SECONDS", "2"),
    ];
    let settings = Settings::from_env(&Env::from_pairs(vars)).unwrap();
    serve(gateway::router(AppState::new(settings).await.unwrap())).await
}

fn token(secret: &str) -> String {
    let env = Env::from_pairs([("JWT_SECRET", secret)]);
    JwtKeys::new(JwtSettings::from_env(&env).unwrap())
        .unwrap()
        .issue("7", "seven@example.com", false)
        .unwrap()
        .0
}

async fn get_jobs(gateway: &str, authorization: Option<&str>) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new().get(format!("{gateway}/jobs"));
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    if status != 200 {
        assert_eq!(
            answer.headers()["content-type"],
            "application/problem+json",
            "errors are problems"
        );
    }
    (status, answer.json().await.unwrap())
}

#[tokio::test]
async fn auth_mode_accepts_what_auth_accepts_and_refuses_the_rest_with_401() {
    let auth = spawn_auth().await;
    let gateway = spawn_gateway(&auth, "auth").await;

    let good = format!("Bearer {}", token(AUTH_SECRET));
    let (status, body) = get_jobs(&gateway, Some(&good)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jobs"], serde_json::json!([]));

    // Signed with the gateway's own key: the gateway would accept it locally, auth does not.
    let foreign = format!("Bearer {}", token(GATEWAY_SECRET));
    let (status, body) = get_jobs(&gateway, Some(&foreign)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "bad_signature", "auth's reason is passed on");

    let (status, body) = get_jobs(&gateway, Some("Bearer not.a.jwt")).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "malformed_token");

    let (status, body) = get_jobs(&gateway, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "missing_token");
}

#[tokio::test]
async fn local_mode_never_asks_auth() {
    let auth = spawn_auth().await;
    let gateway = spawn_gateway(&auth, "local").await;
    let (status, _) = get_jobs(&gateway, Some(&format!("Bearer {}", token(GATEWAY_SECRET)))).await;
    assert_eq!(status, 200);
    let (status, body) = get_jobs(&gateway, Some(&format!("Bearer {}", token(AUTH_SECRET)))).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "bad_signature");
}

#[tokio::test]
async fn auth_mode_answers_503_when_auth_is_down() {
    let gateway = spawn_gateway("http://127.0.0.1:9", "auth").await;
    let (status, body) = get_jobs(&gateway, Some(&format!("Bearer {}", token(AUTH_SECRET)))).await;
    assert_eq!(status, 503, "{body}");
}

#[test]
fn the_mode_defaults_to_local_and_rejects_unknown_values() {
    let base = [
        ("AUTH_URL", "http://auth.test"),
        (
            "MONGODB_URI",
            "mongodb://127.0.0.1:1/?directConnection=true",
        ),
        ("JWT_SECRET", GATEWAY_SECRET),
    ];
    let settings = Settings::from_env(&Env::from_pairs(base)).unwrap();
    assert_eq!(settings.token_verification, VerificationMode::Local);
    let mut vars = base.to_vec();
    vars.push(("TOKEN_VERIFICATION", "AUTH"));
    let settings = Settings::from_env(&Env::from_pairs(vars.clone())).unwrap();
    assert_eq!(settings.token_verification, VerificationMode::Auth);
    vars.pop();
    vars.push(("TOKEN_VERIFICATION", "remote"));
    let err = Settings::from_env(&Env::from_pairs(vars)).unwrap_err();
    assert_eq!(err.var, "TOKEN_VERIFICATION");
}
