//! Login rate limiting: after `max_failures` failed logins for one account within `window`, further
//! attempts for that account get 429 until the window that started with the first failure ends; a client
//! (IP address) gets the same after `max_client_failures`, a higher bound, so that a few typos behind a
//! shared address (an office NAT, localhost in development) never lock everybody else out, while a client
//! guessing across many accounts still is stopped.
//!
//! State is per process: with several auth replicas an attacker gets `max_failures` per replica. That bound
//! still makes online guessing hopeless against argon2id at 19 MiB; a shared store is the next step if needed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failure counters keyed by `account:<email>` and `client:<ip>`.
pub struct LoginLimiter {
    max_failures: u32,
    max_client_failures: u32,
    window: Duration,
    entries: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    /// A limiter allowing `max_failures` per account and `max_client_failures` per client (`client:` keys)
    /// per `window`.
    pub fn new(max_failures: u32, max_client_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            max_client_failures,
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
            .filter_map(|k| entries.get(k).map(|e| (self.limit_for(k), e)))
            .filter(|(limit, (count, _))| count >= limit)
            .map(|(_, entry)| entry)
            .map(|(_, start)| (self.window - now.duration_since(*start)).as_secs().max(1))
            .max()
    }

    fn limit_for(&self, key: &str) -> u32 {
        if key.starts_with("client:") {
            self.max_client_failures
        } else {
            self.max_failures
        }
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
        let limiter = LoginLimiter::new(3, 10, Duration::from_millis(200));
        let keys = vec!["account:a@b.c".to_owned()];
        for _ in 0..3 {
            assert_eq!(limiter.blocked(&keys), None);
            limiter.record_failure(&keys);
        }
        assert!(limiter.blocked(&keys).is_some());
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(limiter.blocked(&keys), None);
    }

    #[test]
    fn a_client_is_locked_out_only_at_its_own_higher_bound() {
        let limiter = LoginLimiter::new(2, 4, Duration::from_secs(60));
        let client = "client:192.0.2.1".to_owned();
        for account in ["a", "a"] {
            limiter.record_failure(&[format!("account:{account}"), client.clone()]);
        }
        assert!(
            limiter
                .blocked(&["account:a".to_owned(), client.clone()])
                .is_some()
        );
        assert_eq!(
            limiter.blocked(&["account:b".to_owned(), client.clone()]),
            None
        );
        for account in ["b", "c"] {
            limiter.record_failure(&[format!("account:{account}"), client.clone()]);
        }
        assert!(limiter.blocked(&["account:d".to_owned(), client]).is_some());
    }
}
