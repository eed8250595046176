//! The one shutdown signal shared by every part of the daemon, and the one plan of how long
//! each stage of a graceful shutdown may take.
//!
//! A [`Shutdown`] is cheap to clone; `trigger` is idempotent and every holder can await
//! `triggered`. The HTTP server, the supervisor and the signal handler all use this one type.
//! A [`ShutdownPlan`] splits one deadline (`pipeline.shutdown_deadline_ms`) between the stages,
//! in order: work in flight finishes and commits, the actors stop, open HTTP connections end.

use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A shared, clonable shutdown flag.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks everything holding a clone of this handle to stop.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once `trigger` has been called.
    pub async fn triggered(&self) {
        self.token.cancelled().await
    }
}

/// The stages of one graceful shutdown, all cut from one budget that starts when the plan does.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownPlan {
    started: Instant,
    total: Duration,
}

impl ShutdownPlan {
    /// Starts the clock of a shutdown that must be over within `total`.
    pub fn start(total: Duration) -> Self {
        Self {
            started: Instant::now(),
            total,
        }
    }

    fn until(&self, share: Duration) -> Duration {
        (self.started + share).saturating_duration_since(Instant::now())
    }

    /// What HTTP connections that never end by themselves (an event stream) get at the end.
    fn http_share(&self) -> Duration {
        (self.total / 6).min(Duration::from_secs(2))
    }

    /// Time left for requests in flight to finish and their results to commit: the first two
    /// thirds of the budget.
    pub fn in_flight(&self) -> Duration {
        self.until(self.total * 2 / 3)
    }

    /// Time left for an actor to stop (and the status writer to commit what it holds): up to
    /// the HTTP share at the end.
    pub fn actors(&self) -> Duration {
        self.until(self.total - self.http_share())
    }

    /// Time left for open HTTP connections: the rest of the budget.
    pub fn http(&self) -> Duration {
        self.until(self.total)
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn os_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on unix");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stages_share_one_budget_in_order() {
        let plan = ShutdownPlan::start(Duration::from_secs(12));
        let (flight, actors, http) = (plan.in_flight(), plan.actors(), plan.http());
        assert!(flight <= Duration::from_secs(8) && flight > Duration::from_millis(7_900));
        assert!(actors <= Duration::from_secs(10) && actors > flight);
        assert!(http <= Duration::from_secs(12) && http > actors);
        let spent = ShutdownPlan {
            started: Instant::now() - Duration::from_secs(20),
            total: Duration::from_secs(12),
        };
        assert_eq!(spent.http(), Duration::ZERO);
    }
}
