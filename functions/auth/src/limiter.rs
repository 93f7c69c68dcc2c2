//! Login rate limiting: after `max_failures` failed logins within `window`, further attempts for the same
//! account or from the same client get 429 until the window that started with the first failure ends.
//!
//! State is per process: with several auth replicas an attacker gets `max_failures` per replica. That bound
//! still makes online guessing hopeless against argon2id at 19 MiB; a shared store is the next step if needed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failure counters keyed by `account:<email>` and `client:<ip>`.
pub struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    entries: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    /// A limiter allowing `max_failures` per `window`.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(seconds to wait)` when any of `keys` is locked out now.
    pub fn blocked(&self, keys: &[String]) -> Option<u64> {
        let now = Instant::now();
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.retain(|_, (_, start)| now.duration_since(*start) < self.window);
        keys.iter()
            .filter_map(|k| entries.get(k))
            .filter(|(count, _)| *count >= self.max_failures)
            .map(|(_, start)| (self.window - now.duration_since(*start)).as_secs().max(1))
            .max()
    }

    /// Counts a failure against each of `keys`.
    pub fn record_failure(&self, keys: &[String]) {
        let now = Instant::now();
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for key in keys {
            let entry = entries.entry(key.clone()).or_insert((0, now));
            if now.duration_since(entry.1) >= self.window {
                *entry = (0, now);
            }
            entry.0 += 1;
        }
    }

    /// Forgets the account's failures after a successful login.
    pub fn record_success(&self, account_key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(account_key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_failures_and_unlocks_after_the_window() {
        let limiter = LoginLimiter::new(3, Duration::from_millis(200));
        let keys = vec!["account:a@b.c".to_owned()];
        for _ in 0..3 {
            assert_eq!(limiter.blocked(&keys), None);
            limiter.record_failure(&keys);
        }
        assert!(limiter.blocked(&keys).is_some());
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(limiter.blocked(&keys), None);
    }
}
