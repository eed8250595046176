//! What every handler can reach. The pipeline is reached only through [`PipelineView`]: the
//! gate (pause and resume are a flag flip, never a wait on an actor), the shared reports, and
//! the rate-limited embedder that search uses like the workers do.

use crate::actors::{
    IntakeHealth, RateLimitedEmbedder, ReconcilerReport, SchedulerReport, SupervisionReport,
};
use crate::config::Settings;
use crate::gate::PipelineGate;
use crate::limiter::LimiterStatus;
use crate::queue::Keys;
use crate::store::Store;
use crate::vectors::VectorStore;
use redis::aio::ConnectionManager;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub redis: ConnectionManager,
    /// What Redis said of its eviction and persistence at start-up.
    pub redis_durability: crate::queue::RedisDurability,
    pub keys: Keys,
    pub settings: Arc<Settings>,
    pub pipeline: PipelineView,
    pub vectors: Arc<dyn VectorStore>,
    /// Applies deletes and metadata changes to the vector store after their commit.
    pub point_sync: crate::point_sync::PointSync,
    /// Live events for `GET /v1/events` (job progress, pauses, restarts, rate limit).
    pub events: crate::events::EventBus,
    /// Renders the Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
}

/// The running pipeline as the HTTP surface sees it.
#[derive(Clone)]
pub struct PipelineView {
    pub gate: PipelineGate,
    pub supervision: Arc<SupervisionReport>,
    pub limiter: LimiterStatus,
    pub job_intake: Arc<IntakeHealth>,
    pub task_intake: Arc<IntakeHealth>,
    /// What the reconciler planned again of what Redis lost.
    pub reconciler: ReconcilerReport,
    /// Whether this daemon fires the schedules, and what it fired.
    pub scheduler: SchedulerReport,
    pub embedder: RateLimitedEmbedder,
    /// This daemon's consumer name, which prefixes its actors' names.
    pub instance: String,
}
