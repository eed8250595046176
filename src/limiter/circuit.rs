//! The outage circuit: while the provider cannot be reached at all, every worker of every
//! daemon is held for a wait that doubles with each unreachable answer in a row, so an outage
//! costs a probe request now and then instead of a request per waiting task. The first answer
//! that reaches the provider closes it.

use super::CallOutcome;
use crate::retry::Backoff;
use std::time::{Duration, Instant};

/// The first hold; it doubles up to [`MAX_HOLD`].
const FIRST_HOLD: Duration = Duration::from_millis(200);
const MAX_HOLD: Duration = Duration::from_secs(2);

/// What one outcome did to the circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitChange {
    /// Nothing new.
    None,
    /// The provider just became unreachable; hold everyone this long.
    Opened(Duration),
    /// Still unreachable; hold everyone this long.
    Held(Duration),
    /// The provider answered again.
    Closed,
}

#[derive(Debug, Clone)]
pub struct OutageCircuit {
    holds: Backoff,
    /// Since when the provider cannot be reached, while it cannot.
    since: Option<Instant>,
}

impl Default for OutageCircuit {
    fn default() -> Self {
        Self {
            holds: Backoff::new(FIRST_HOLD, MAX_HOLD),
            since: None,
        }
    }
}

impl OutageCircuit {
    pub fn observe(&mut self, outcome: &CallOutcome, now: Instant) -> CircuitChange {
        if matches!(outcome, CallOutcome::Unreachable) {
            let hold = self.holds.next_wait();
            if self.since.is_none() {
                self.since = Some(now);
                CircuitChange::Opened(hold)
            } else {
                CircuitChange::Held(hold)
            }
        } else if outcome.reached_provider() && self.since.is_some() {
            self.since = None;
            self.holds.reset();
            CircuitChange::Closed
        } else {
            CircuitChange::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::RateLimitHints;

    #[test]
    fn holds_double_while_unreachable_and_close_on_an_answer() {
        let mut c = OutageCircuit::default();
        let t0 = Instant::now();
        assert_eq!(
            c.observe(&CallOutcome::Unreachable, t0),
            CircuitChange::Opened(Duration::from_millis(200))
        );
        assert_eq!(c.since, Some(t0));
        let holds: Vec<CircuitChange> = (1..5)
            .map(|i| c.observe(&CallOutcome::Unreachable, t0 + Duration::from_secs(i)))
            .collect();
        assert_eq!(
            holds,
            [400, 800, 1600, 2000].map(|ms| CircuitChange::Held(Duration::from_millis(ms)))
        );
        assert_eq!(c.since, Some(t0), "open since the first");
        assert_eq!(
            c.observe(&CallOutcome::Unused, t0),
            CircuitChange::None,
            "an unused permit proves nothing"
        );
        assert!(c.since.is_some());
        assert_eq!(
            c.observe(&CallOutcome::Refused, t0 + Duration::from_secs(9)),
            CircuitChange::Closed,
            "a refusal is an answer"
        );
        assert!(c.since.is_none());
        assert_eq!(
            c.observe(&CallOutcome::Success(RateLimitHints::default()), t0),
            CircuitChange::None
        );
        assert_eq!(
            c.observe(&CallOutcome::Unreachable, t0),
            CircuitChange::Opened(Duration::from_millis(200)),
            "the holds start again"
        );
    }
}
