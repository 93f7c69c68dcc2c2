//! The `users` table.

use sqlx::MySqlPool;

/// A stored user.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct User {
    /// Primary key; the JWT `sub` is its decimal string.
    pub id: u64,
    /// Lower-cased email.
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Administrator?
    pub is_admin: bool,
}

/// An email, trimmed, lower-cased and checked for a plausible shape (`local@domain.tld`, ≤ 254 bytes,
/// no whitespace or control characters: RFC 5321 §4.5.3.1.3 bounds the path length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Parses an email.
    ///
    /// # Errors
    /// A sentence saying what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let email = raw.trim().to_lowercase();
        let bad = || format!("{raw:?} is not a valid email address");
        if email.is_empty()
            || email.len() > 254
            || email.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad());
        }
        let (local, domain) = email.rsplit_once('@').ok_or_else(bad)?;
        if local.is_empty()
            || local.len() > 64
            || domain.len() < 3
            || !domain.contains('.')
            || domain.contains('@')
        {
            return Err(bad());
        }
        if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
            return Err(bad());
        }
        Ok(Self(email))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Runs the embedded migrations (`functions/auth/migrations`).
///
/// # Errors
/// MySQL errors.
pub async fn migrate(pool: &MySqlPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(pool).await
}

/// Finds a user by (normalised) email.
///
/// # Errors
/// MySQL errors.
pub async fn find_by_email(pool: &MySqlPool, email: &Email) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as::<_, User>(
        "SELECT id, email, password_hash, is_admin FROM users WHERE email = ?",
    )
    .bind(email.as_str())
    .fetch_optional(pool)
    .await
}

/// Why a user could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The email is taken.
    #[error("a user with this email already exists")]
    Exists,
    /// MySQL failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Inserts a user; returns its id.
///
/// # Errors
/// [`CreateError::Exists`] on a duplicate email, else MySQL errors.
pub async fn create(
    pool: &MySqlPool,
    email: &Email,
    password_hash: &str,
    is_admin: bool,
) -> Result<u64, CreateError> {
    let result = sqlx::query("INSERT INTO users (email, password_hash, is_admin) VALUES (?, ?, ?)")
        .bind(email.as_str())
        .bind(password_hash)
        .bind(is_admin)
        .execute(pool)
        .await;
    match result {
        Ok(done) => Ok(done.last_insert_id()),
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(CreateError::Exists),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Alice@Example.COM ").unwrap().as_str(),
            "alice@example.com"
        );
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@com",
            "a b@example.com",
            "a@b..com",
            "a@.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            Email::parse("zoë@exämple.org").unwrap().as_str(),
            "zoë@exämple.org"
        );
    }
}
