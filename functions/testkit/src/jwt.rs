//! Forged and broken JWTs for the security tests: every way a token must be refused.
//!
//! [`Forger::attacks`] lists tokens that a correct verifier refuses with 401: `alg: none`, HS384/HS512 with
//! the right secret, a real RS256 signature, RS256's public key used as the HMAC secret (algorithm
//! confusion, with an `HS256` and an `RS256` header), a wrong key, an expired token, `iat` and `nbf` far in
//! the future, each claim missing, a wrong issuer or audience, a tampered payload, no signature, no token, a
//! non-Bearer scheme and garbage. [`Forger::valid`] makes the matching good token, for positive controls.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// An RSA private key made for these tests only (PKCS#8 PEM). Nothing trusts it.
pub const TEST_RSA_PRIVATE_KEY_PEM: &str = concat!(
    "-----BEGIN PRIVATE KEY-----\n",
    "MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQCpVnjsUatoBsIy\n",
    "YY+oQdeIYkwzA40fMWnLbd8VP7lEd3UDQ1a2+DETneIuTmumjYIHPi2x0JS2Pszq\n",
    "9+9HkYlwhqIkaQYciPQsH6HOGiOwOfi4HsbMppm/CQSyBVeK2uOBMeIbQgZQdwnN\n",
    "KnSiMaZn23B8tsRTFbJd40SVbGALdJLiKms4Jke14un/ShPhpU44Ak2uIKmrLtsI\n",
    "ByGDrIxoI0Mssdi6yX3PqQJq7chpa+aeprnUyWIUMtWFHhZ27snE+t2ppo8UIoy2\n",
    "NUIUP1oOFQJr14UPWYAwxuhmlZwJRXcr7k1pwHIBB2zluHkSGagq5RAJOf9iNeSt\n",
    "NIP9hmiTAgMBAAECggEAOzXQv3UJFa0zTxF8/UzUc8xHL5lAyZTqFKcc1126Rr3s\n",
    "TNFJa13aLy1IDn/+NTUKr8SmjqPLs/O+jDRYVvKFF7MD0+5jJCwhEKKY3auXKgID\n",
    "PUIJqjpgzQL2wNaMVzGVVjHeiUBrW8xbwYDkWmg48tywdvMjL5gJD7otW4ATDz3I\n",
    "UlsvWa+4TVkkYOdMea9cr0EAJQZW4eeYSkncsjzYli5w4eS+xyb06LvXxw/vKT9o\n",
    "XAj+3louZ5YHl8fcvDyonx0IaB46AykAG38VT3TtjpqLporH0Gj8aerDW1Nwr5OR\n",
    "PZFKWKr7Kt9AIGzyYFbsYl/C3vPkvCruWrrLjNosIQKBgQDdd3779D96PIVUJcL6\n",
    "+nph8+POp3hjjRu9GI/9YdWsipb3UyljiVDBnBn3QRQW6FdWB4gfeWEIcBxKZSOo\n",
    "uwMXIAiWLiFuNLZjOW+N2qW97bsXt7BBYohk/xGGwxKHvH07MxWsvAlIdL6v5saE\n",
    "78voIH3n6RIxrWonJaFjLFIo8wKBgQDDvhe0zyLxxPr3cuYiZ47E+vR+GTacWO6O\n",
    "XGK22gdTvzHfpnYRT2oFij8iR0BXCoiOm6a0xhKETrSHS5NPZZVG4Ci6kcLN/5cz\n",
    "6REDWiU99L9wu4hsnzqck+XzsZFphAn/SX4lLaikJqh6U/+UWLd1MDvJTLoKqxYD\n",
    "gBaRlJip4QKBgFel4EK00p5870NzQmxzzxWPIXx6+QFlKjI3U10zaA5GNyMg7YNw\n",
    "J97H+drKDbpXL6Fjj7LtJcLiI8ApsOgpQzrWua8+CIsGH5y7cXPRscCuIlprnzzx\n",
    "UwutivErqNzBc0qHmC9pp77ePU1+Ztjb0nZGza2Hp2SzvgxKL0oBk26TAoGBALk1\n",
    "UkT4gP31/ejIxMvk5IepVFFEFhIVa5M0Aws0fR5WmCAf5zM1ywF274nFlTFGfDND\n",
    "P5domvipZ9NkRPwpB/fJ/X+aj5JOtoidjEV5tCdNPx6xssHkX5brsfbFGuuVzcfJ\n",
    "iBwxeZHoKh2lAP0ifGPbwZYUjSuu+eNR/Qi+azzBAoGBAM6FnIHTFQzaNX5S6pyH\n",
    "nHYNaJdEQkZED8zSihg8i0vZddKJA0jXzMN1hJVy1aHQhJaTjeVICzkhbKVyw4B6\n",
    "72ZQtWjXt/bI3tsoo82tsyL97z/cgT2rxlBI7RsKtJCumcMRtZiXBVUeXa4ky/Cv\n",
    "tLra8Qmpkg33vdtwpbIPp5tT\n",
    "-----END PRIVATE KEY-----\n"
);
/// The public half of [`TEST_RSA_PRIVATE_KEY_PEM`] (SPKI PEM): what an attacker would know of an RS256
/// issuer, and the bytes an algorithm-confusion attack uses as an HMAC secret.
pub const TEST_RSA_PUBLIC_KEY_PEM: &str = concat!(
    "-----BEGIN PUBLIC KEY-----\n",
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqVZ47FGraAbCMmGPqEHX\n",
    "iGJMMwONHzFpy23fFT+5RHd1A0NWtvgxE53iLk5rpo2CBz4tsdCUtj7M6vfvR5GJ\n",
    "cIaiJGkGHIj0LB+hzhojsDn4uB7GzKaZvwkEsgVXitrjgTHiG0IGUHcJzSp0ojGm\n",
    "Z9twfLbEUxWyXeNElWxgC3SS4iprOCZHteLp/0oT4aVOOAJNriCpqy7bCAchg6yM\n",
    "aCNDLLHYusl9z6kCau3IaWvmnqa51MliFDLVhR4Wdu7JxPrdqaaPFCKMtjVCFD9a\n",
    "DhUCa9eFD1mAMMboZpWcCUV3K+5NacByAQds5bh5EhmoKuUQCTn/YjXkrTSD/YZo\n",
    "kwIDAQAB\n",
    "-----END PUBLIC KEY-----\n"
);

/// Every claim a vidmp3 token must carry (see `vidmp3_runtime::jwt::Claims`).
pub const REQUIRED_CLAIMS: [&str; 7] = ["sub", "email", "admin", "iat", "exp", "iss", "aud"];

/// One refused token: a name for assertion messages and the `Authorization` header to send (`None`: no
/// header at all).
#[derive(Clone, Debug)]
pub struct Attack {
    /// What the token tries (`alg_none`, `missing_sub`…).
    pub name: String,
    /// The whole `Authorization` header value, or `None` to send no header.
    pub authorization: Option<String>,
}

/// Builds good and forged tokens for one service configuration.
#[derive(Clone, Debug)]
pub struct Forger {
    secret: Vec<u8>,
    issuer: String,
    audience: String,
}

impl Forger {
    /// A forger for `JWT_SECRET = secret` and the default issuer `vidmp3-auth` and audience `vidmp3`.
    pub fn new(secret: &str) -> Self {
        Self {
            secret: secret.as_bytes().to_vec(),
            issuer: "vidmp3-auth".into(),
            audience: "vidmp3".into(),
        }
    }

    /// The claims of a good token for user `sub`, issued now, valid for an hour.
    pub fn claims(&self, sub: &str, email: &str, admin: bool) -> Value {
        let now = now();
        json!({"sub": sub, "email": email, "admin": admin, "iat": now, "exp": now + 3600,
               "iss": self.issuer, "aud": self.audience})
    }

    /// A good HS256 token for user `sub` (the positive control: every route accepts it).
    pub fn valid(&self, sub: &str, email: &str, admin: bool) -> String {
        sign_hmac(
            Algorithm::HS256,
            &self.secret,
            &self.claims(sub, email, admin),
        )
    }

    /// Every token that must be refused, each standing for user `sub` (so only the forgery differs from a
    /// token that works).
    pub fn attacks(&self, sub: &str, email: &str, admin: bool) -> Vec<Attack> {
        let good = self.claims(sub, email, admin);
        let now = now();
        let with = |changes: &[(&str, Value)]| {
            let mut c = good.clone();
            for (k, v) in changes {
                c[*k] = v.clone();
            }
            c
        };
        let hs256 = |claims: &Value| sign_hmac(Algorithm::HS256, &self.secret, claims);
        let mut list: Vec<(String, String)> = vec![
            (
                "alg_none".into(),
                unsigned(json!({"alg": "none", "typ": "JWT"}), &good, ""),
            ),
            (
                "alg_none_capitalised".into(),
                unsigned(json!({"alg": "None", "typ": "JWT"}), &good, ""),
            ),
            ("alg_none_with_a_valid_hs256_signature".into(), {
                let real = self.valid(sub, email, admin);
                let signature = real.rsplit('.').next().unwrap_or_default().to_owned();
                unsigned(json!({"alg": "none", "typ": "JWT"}), &good, &signature)
            }),
            (
                "hs384_with_the_right_secret".into(),
                sign_hmac(Algorithm::HS384, &self.secret, &good),
            ),
            (
                "hs512_with_the_right_secret".into(),
                sign_hmac(Algorithm::HS512, &self.secret, &good),
            ),
            ("rs256_signed_with_an_rsa_key".into(), sign_rs256(&good)),
            (
                "hs256_with_the_rsa_public_key_as_secret".into(),
                sign_hmac(Algorithm::HS256, TEST_RSA_PUBLIC_KEY_PEM.as_bytes(), &good),
            ),
            (
                "rs256_header_hmac_signed_with_the_public_key".into(),
                hmac_with_header(
                    json!({"alg": "RS256", "typ": "JWT"}),
                    TEST_RSA_PUBLIC_KEY_PEM.as_bytes(),
                    &good,
                ),
            ),
            (
                "wrong_key".into(),
                sign_hmac(
                    Algorithm::HS256,
                    b"not-the-secret-not-the-secret-not-the-secret",
                    &good,
                ),
            ),
            (
                "expired".into(),
                hs256(&with(&[
                    ("iat", json!(now - 7200)),
                    ("exp", json!(now - 3600)),
                ])),
            ),
            (
                "iat_far_in_the_future".into(),
                hs256(&with(&[
                    ("iat", json!(now + 3600)),
                    ("exp", json!(now + 7200)),
                ])),
            ),
            (
                "nbf_far_in_the_future".into(),
                hs256(&with(&[("nbf", json!(now + 3600))])),
            ),
            (
                "wrong_issuer".into(),
                hs256(&with(&[("iss", json!("someone-else"))])),
            ),
            (
                "wrong_audience".into(),
                hs256(&with(&[("aud", json!("another-app"))])),
            ),
            (
                "exp_as_a_string".into(),
                hs256(&with(&[("exp", json!((now + 3600).to_string()))])),
            ),
            ("tampered_payload".into(), {
                let real = self.valid(sub, email, admin);
                let parts: Vec<&str> = real.split('.').collect();
                let forged = B64.encode(
                    with(&[("admin", json!(!admin)), ("sub", json!(format!("{sub}0")))])
                        .to_string(),
                );
                format!("{}.{forged}.{}", parts[0], parts[2])
            }),
            ("signature_stripped".into(), {
                let real = self.valid(sub, email, admin);
                let (head, _) = real.rsplit_once('.').unwrap_or_default();
                format!("{head}.")
            }),
            ("garbage".into(), "not.a.jwt".into()),
            ("empty".into(), String::new()),
        ];
        for claim in REQUIRED_CLAIMS {
            let mut c = good.clone();
            c.as_object_mut().map(|o| o.remove(claim));
            list.push((format!("missing_{claim}"), hs256(&c)));
        }
        let mut attacks: Vec<Attack> = list
            .into_iter()
            .map(|(name, token)| Attack {
                name,
                authorization: Some(format!("Bearer {token}")),
            })
            .collect();
        attacks.push(Attack {
            name: "no_authorization_header".into(),
            authorization: None,
        });
        attacks.push(Attack {
            name: "basic_scheme".into(),
            authorization: Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{email}:password"))
            )),
        });
        attacks.push(Attack {
            name: "valid_token_without_the_bearer_scheme".into(),
            authorization: Some(self.valid(sub, email, admin)),
        });
        attacks
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Signs `claims` with HMAC algorithm `alg` and `key`.
///
/// # Panics
/// `alg` is not an HMAC algorithm.
pub fn sign_hmac(alg: Algorithm, key: &[u8], claims: &Value) -> String {
    let key = EncodingKey::from_secret(key).expect("an HMAC key");
    jsonwebtoken::encode(&Header::new(alg), claims, &key).expect("HMAC signing")
}

/// Signs `claims` with RS256 and [`TEST_RSA_PRIVATE_KEY_PEM`].
///
/// # Panics
/// Never: the key is a constant.
pub fn sign_rs256(claims: &Value) -> String {
    let key =
        EncodingKey::from_rsa_pem(TEST_RSA_PRIVATE_KEY_PEM.as_bytes()).expect("the test RSA key");
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).expect("RS256 signing")
}

/// `header.payload.signature` with the given raw `signature` (empty for `alg: none`).
fn unsigned(header: Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    )
}

/// A token whose header says whatever `header` says but whose signature is HMAC-SHA256 with `key`.
fn hmac_with_header(header: Value, key: &[u8], claims: &Value) -> String {
    let message = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let key = EncodingKey::from_secret(key).expect("an HMAC key");
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256)
        .expect("HMAC signing");
    format!("{message}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attack_has_a_unique_name_and_the_valid_token_is_well_formed() {
        let forger = Forger::new("0123456789abcdef0123456789abcdef");
        let attacks = forger.attacks("1", "a@example.com", false);
        let names: std::collections::HashSet<_> = attacks.iter().map(|a| a.name.clone()).collect();
        assert_eq!(names.len(), attacks.len());
        assert!(attacks.len() >= 25, "{}", attacks.len());
        assert_eq!(
            forger.valid("1", "a@example.com", false).split('.').count(),
            3
        );
    }
}
