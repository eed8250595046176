//! The adaptive limit of requests in flight in one daemon: additive increase (+1 per window of
//! successes, that is +1/limit per success), multiplicative decrease (halved on back-pressure,
//! at most once per cooldown so one burst of errors halves it once).

use super::CallOutcome;
use std::time::{Duration, Instant};

/// Concurrency is halved at most this often.
const DECREASE_COOLDOWN: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct ConcurrencyController {
    limit: f64,
    min: f64,
    max: f64,
    last_decrease: Option<Instant>,
}

impl ConcurrencyController {
    /// Starts at `min` (a bad key then costs one request, not `max`).
    pub fn new(min: usize, max: usize) -> Self {
        let min = min.max(1) as f64;
        Self {
            limit: min,
            min,
            max: (max as f64).max(min),
            last_decrease: None,
        }
    }

    /// Requests that may be in flight now.
    pub fn capacity(&self) -> usize {
        self.limit.floor().max(1.0) as usize
    }

    /// The limit with its fraction, for metrics.
    pub fn limit(&self) -> f64 {
        self.limit
    }

    /// Adjusts the limit to what a finished call said.
    pub fn observe(&mut self, outcome: &CallOutcome, now: Instant) {
        if matches!(outcome, CallOutcome::Success(_)) {
            self.limit = (self.limit + 1.0 / self.limit.max(1.0)).min(self.max);
        } else if outcome.is_back_pressure()
            && self
                .last_decrease
                .is_none_or(|t| now.duration_since(t) >= DECREASE_COOLDOWN)
        {
            self.limit = (self.limit / 2.0).max(self.min);
            self.last_decrease = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::RateLimitHints;

    fn ok() -> CallOutcome {
        CallOutcome::Success(RateLimitHints::default())
    }

    #[test]
    fn grows_by_one_per_window_of_successes() {
        let mut c = ConcurrencyController::new(1, 16);
        let now = Instant::now();
        assert_eq!(c.capacity(), 1);
        c.observe(&ok(), now);
        assert_eq!(c.capacity(), 2);
        // +1/limit per success: from 2, 2.5, 2.9, then 3.24.
        c.observe(&ok(), now);
        c.observe(&ok(), now);
        assert_eq!(c.capacity(), 2);
        c.observe(&ok(), now);
        assert_eq!(c.capacity(), 3, "about one step per window of successes");
        for _ in 0..1_000 {
            c.observe(&ok(), now);
        }
        assert_eq!(c.capacity(), 16, "capped at max");
    }

    #[test]
    fn halves_on_back_pressure_once_per_cooldown() {
        let mut c = ConcurrencyController::new(2, 16);
        let t0 = Instant::now();
        for _ in 0..200 {
            c.observe(&ok(), t0);
        }
        assert_eq!(c.capacity(), 16);
        c.observe(&CallOutcome::Overloaded, t0);
        assert_eq!(c.capacity(), 8);
        c.observe(&CallOutcome::Unreachable, t0 + Duration::from_millis(500));
        assert_eq!(c.capacity(), 8, "within the cooldown");
        c.observe(
            &CallOutcome::RateLimited {
                retry_after: None,
                hints: RateLimitHints::default(),
            },
            t0 + Duration::from_millis(1_001),
        );
        assert_eq!(c.capacity(), 4);
        for i in 0..10 {
            c.observe(&CallOutcome::Overloaded, t0 + Duration::from_secs(2 + i));
        }
        assert_eq!(c.capacity(), 2, "never below min");
        c.observe(&CallOutcome::Refused, t0 + Duration::from_secs(30));
        c.observe(&CallOutcome::Unused, t0 + Duration::from_secs(31));
        assert_eq!(c.capacity(), 2, "refusals and unused permits say nothing");
    }
}
