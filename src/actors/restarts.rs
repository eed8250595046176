//! How a parent restarts a child that failed: after a backoff that doubles with each restart
//! within the window, and not at all once more than `max_restarts` fell within it — then the
//! parent gives up (the supervisor stops the daemon; the pool fails, and its own parent
//! restarts it). The supervisor and the embedding pool each keep one budget, built from the
//! same settings.

use crate::config::SupervisionSettings;
use crate::retry::Backoff;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RestartBudget {
    window: Duration,
    max_restarts: u32,
    base: Duration,
    max_backoff: Duration,
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    pub fn new(settings: &SupervisionSettings) -> Self {
        Self {
            window: settings.restart_window,
            max_restarts: settings.max_restarts,
            base: settings.restart_backoff,
            max_backoff: settings.max_restart_backoff,
            recent: VecDeque::new(),
        }
    }

    /// The wait before restarting a child that failed at `now`, or `None` when the budget is
    /// spent.
    pub fn next(&mut self, now: Instant) -> Option<Duration> {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() as u32 >= self.max_restarts {
            return None;
        }
        let mut backoff = Backoff::new(self.base, self.max_backoff);
        for _ in 0..self.recent.len() {
            backoff.next_wait();
        }
        self.recent.push_back(now);
        Some(backoff.peek())
    }

    /// A sentence saying why the budget is spent.
    pub fn spent(&self) -> String {
        format!(
            "more than {} restarts within {:?}",
            self.max_restarts, self.window
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_then_gives_up_within_the_window() {
        let mut budget = RestartBudget::new(&SupervisionSettings {
            restart_backoff: Duration::from_millis(100),
            max_restart_backoff: Duration::from_millis(300),
            max_restarts: 3,
            restart_window: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        let waits: Vec<Option<Duration>> = (0..4)
            .map(|i| budget.next(t0 + Duration::from_secs(i)))
            .collect();
        assert_eq!(
            waits,
            [Some(100), Some(200), Some(300), None].map(|w| w.map(Duration::from_millis))
        );
        assert_eq!(
            budget.next(t0 + Duration::from_secs(12)),
            Some(Duration::from_millis(200)),
            "the first restarts left the window"
        );
    }
}
