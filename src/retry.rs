//! The one home of "try again": how many attempts an item gets and how long anything that
//! backs off waits.
//!
//! - [`RetryPolicy`] decides, from the attempts an item has used, whether it gets another one
//!   and after how long: exponential backoff with full jitter, or a longer wait the server asked
//!   for. The embedding step, the crash settlement of a worker and the status writer's retries
//!   all ask it.
//! - [`Backoff`] is the plain doubling wait of a loop that retries an operation until it works
//!   (an intake read, a planning step, a status flush, an actor restart, an unreachable
//!   provider): the same formula, without jitter, reset on success.
//!
//! (A few lines, so no crate: the attempt count travels in the messages rather than in a retry
//! loop, and a server's `Retry-After` must be able to win.)

use crate::config::RetrySettings;
use std::time::Duration;

/// `base * 2^exponent`, capped at `max` (the exponent is capped too, so it cannot overflow).
fn doubled(base: Duration, exponent: u32, max: Duration) -> Duration {
    base.saturating_mul(1u32 << exponent.min(20)).min(max)
}

/// What becomes of an item after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again, not before this wait.
    Retry { after: Duration },
    /// No attempt is left: the item ends FAILED.
    GiveUp,
}

/// The attempt limit and the backoff between attempts of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    max_retries: u32,
    base: Duration,
    max: Duration,
}

impl RetryPolicy {
    pub fn new(settings: &RetrySettings) -> Self {
        Self {
            max_retries: settings.max_retries,
            base: settings.base_backoff,
            max: settings.max_backoff,
        }
    }

    /// Attempts an item may use in all: the first and the retries.
    pub fn max_attempts(&self) -> u32 {
        self.max_retries.saturating_add(1)
    }

    /// Whether an item that has used `attempts_used` attempts may be tried again.
    pub fn has_attempts_left(&self, attempts_used: u32) -> bool {
        attempts_used < self.max_attempts()
    }

    /// The wait before the attempt after `attempts_used` failed ones: a random wait in
    /// `[0, min(max, base * 2^(attempts_used - 1))]` (full jitter), or `server_wait` when longer.
    pub fn backoff(&self, attempts_used: u32, server_wait: Duration) -> Duration {
        let cap = doubled(self.base, attempts_used.saturating_sub(1), self.max);
        let jittered = Duration::from_millis(rand::random_range(0..=cap.as_millis() as u64));
        jittered.max(server_wait)
    }

    /// What follows a failed attempt, the item having now used `attempts_used` attempts.
    pub fn after_failure(&self, attempts_used: u32, server_wait: Duration) -> RetryDecision {
        if self.has_attempts_left(attempts_used) {
            RetryDecision::Retry {
                after: self.backoff(attempts_used, server_wait),
            }
        } else {
            RetryDecision::GiveUp
        }
    }

    /// A wait for work that failed without using an attempt (the database was down while a
    /// task loaded): at least the base, so an outage is not hammered.
    pub fn outage_wait(&self) -> Duration {
        self.base + self.backoff(1, Duration::ZERO)
    }
}

/// A doubling wait for a loop that retries until it succeeds.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            failures: 0,
        }
    }

    /// The wait after one more failure in a row: `base`, then twice that, up to `max`.
    pub fn next_wait(&mut self) -> Duration {
        let wait = doubled(self.base, self.failures, self.max);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    /// The wait the next failure would get, without counting one.
    pub fn peek(&self) -> Duration {
        doubled(self.base, self.failures, self.max)
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: the next failure starts again from `base`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_retries: u32) -> RetryPolicy {
        RetryPolicy::new(&RetrySettings {
            max_retries,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1_000),
        })
    }

    #[test]
    fn attempts_end_at_the_limit() {
        let p = policy(3);
        assert_eq!(p.max_attempts(), 4);
        for used in 1..=3 {
            assert!(matches!(
                p.after_failure(used, Duration::ZERO),
                RetryDecision::Retry { .. }
            ));
        }
        assert_eq!(p.after_failure(4, Duration::ZERO), RetryDecision::GiveUp);
        assert_eq!(p.after_failure(9, Duration::ZERO), RetryDecision::GiveUp);
        assert_eq!(
            policy(0).after_failure(1, Duration::ZERO),
            RetryDecision::GiveUp
        );
    }

    #[test]
    fn backoff_is_jittered_within_a_doubling_cap() {
        let p = policy(10);
        for (used, cap) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1_000),
            (30, 1_000),
        ] {
            for _ in 0..200 {
                let wait = p.backoff(used, Duration::ZERO);
                assert!(wait <= Duration::from_millis(cap), "{used}: {wait:?}");
            }
        }
        // Full jitter: the waits are spread, not all at the cap.
        let waits: std::collections::HashSet<Duration> =
            (0..200).map(|_| p.backoff(4, Duration::ZERO)).collect();
        assert!(waits.len() > 20, "{} distinct waits", waits.len());
    }

    #[test]
    fn a_longer_server_wait_wins() {
        let p = policy(3);
        let server = Duration::from_secs(7);
        assert_eq!(p.backoff(1, server), server);
        assert!(matches!(
            p.after_failure(2, server),
            RetryDecision::Retry { after } if after == server
        ));
    }

    #[test]
    fn a_loop_backoff_doubles_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<u128> = (0..4).map(|_| b.next_wait().as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        assert_eq!(b.failures(), 4);
        b.reset();
        assert_eq!(b.peek(), Duration::from_millis(100));
        assert_eq!(b.next_wait(), Duration::from_millis(100));
    }
}
