//! argon2id password hashes (PHC strings), computed off the async runtime.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};

/// Shortest password accepted for new users, in characters (NIST SP 800-63B §5.1.1.2 asks for at least 8).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted, in bytes (bounds the hashing work an attacker can ask for).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A hash of a random password, verified against when the email is unknown so that an unknown user and a
/// wrong password take about the same time.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_blocking("not-a-real-password-just-timing").unwrap_or_default());

/// Hashes `password` with argon2id and the crate's default parameters (m = 19 MiB, t = 2, p = 1: OWASP's).
///
/// # Errors
/// The hasher failed (not expected).
pub fn hash_blocking(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))
}

/// Hashes on the blocking pool.
///
/// # Errors
/// As [`hash_blocking`].
pub async fn hash(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || hash_blocking(&password)).await?
}

/// Checks `password` against `phc` (or the dummy hash when `phc` is `None`) on the blocking pool.
/// Returns `false` for `None`, a mismatch or an unparsable hash.
pub async fn verify(password: String, phc: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let known = phc.is_some();
        let stored = phc.unwrap_or_else(|| DUMMY_HASH.clone());
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
            && known
    })
    .await
    .unwrap_or(false)
}

/// Warms the dummy hash (so the first unknown-user login is not slower than the rest).
pub fn warm_up() {
    LazyLock::force(&DUMMY_HASH);
}

/// Checks a new password's length.
///
/// # Errors
/// A sentence for the problem body.
pub fn check_new_password(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password must have at most {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_phc_and_verify() {
        let h = hash("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(verify("correct horse battery".into(), Some(h.clone())).await);
        assert!(!verify("wrong".into(), Some(h)).await);
        assert!(!verify("not-a-real-password-just-timing".into(), None).await);
    }
}
