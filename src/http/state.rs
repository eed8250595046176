//! What every handler can reach.

use crate::actors::rate_limiter::RateLimiterStatus;
use crate::actors::{IntakeHealth, SupervisionReport, SupervisorMsg};
use crate::config::Settings;
use crate::providers::Embedder;
use crate::queue::Keys;
use crate::store::Store;
use crate::vectors::VectorStore;
use ractor::ActorRef;
use redis::aio::ConnectionManager;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub redis: ConnectionManager,
    pub keys: Keys,
    pub settings: Arc<Settings>,
    pub job_intake: Arc<IntakeHealth>,
    pub task_intake: Arc<IntakeHealth>,
    pub supervision: Arc<SupervisionReport>,
    /// Control verbs (pause, resume) go to the supervisor as messages; the API never waits.
    pub supervisor: ActorRef<SupervisorMsg>,
    pub embedder: Arc<dyn Embedder>,
    pub vectors: Arc<dyn VectorStore>,
    pub rate_limiter: Arc<Mutex<RateLimiterStatus>>,
    /// Registered name of the rate limiter: search takes its permits there too.
    pub rate_limiter_name: String,
    /// This daemon's consumer name, which prefixes its actors' names.
    pub instance: String,
    /// Live events for `GET /v1/events` (job progress, pauses, restarts, rate limit).
    pub events: crate::events::EventBus,
    /// Renders the Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
}
