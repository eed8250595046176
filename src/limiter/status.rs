//! What the rate limiter shows of itself, for readiness, metrics and the dashboard.

use serde::Serialize;
use std::sync::{Arc, Mutex, PoisonError};

/// Live figures of this daemon's rate limiter.
#[derive(Debug, Default, Clone, Serialize, utoipa::ToSchema)]
pub struct LimiterFigures {
    /// The adaptive limit of requests in flight.
    pub concurrency_limit: f64,
    pub in_flight: usize,
    /// Callers waiting for a permit.
    pub waiting: usize,
    /// 429 answers seen.
    pub rate_limited: u64,
    /// The last wait the shared budget asked for, in milliseconds.
    pub last_wait_ms: u64,
    /// Since when the provider cannot be reached (ms since the epoch), while it cannot.
    pub provider_unreachable_since_ms: Option<i64>,
}

/// The figures, shared between the rate limiter (which writes them) and the readers.
#[derive(Debug, Default, Clone)]
pub struct LimiterStatus(Arc<Mutex<LimiterFigures>>);

impl LimiterStatus {
    pub fn snapshot(&self) -> LimiterFigures {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut LimiterFigures)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
