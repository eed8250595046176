//! The supervised pipeline. One actor per file, each with its messages, state and arguments
//! side by side; each parent supervises its own children and reaches them, and they each
//! other, through typed addresses (`address::Address`).
//!
//! ```text
//! Supervisor ─┬─ JobIntake  (jobs stream) ──► Planner ──► tasks stream
//!             ├─ TaskIntake (tasks stream) ──► EmbeddingPool ─┬─ EmbeddingWorker × N
//!             │        pool ──► RateLimiter (permits) ; workers ──► provider ──► VectorWriter
//!             │        pool ──► StatusWriter (SQL, then XACK) ; retries ──► RetryScheduler
//!             ├─ Reconciler: plans again from SQL what Redis lost (one active among daemons)
//!             ├─ Scheduler: fires the [[schedules]], one job per tick (one active among daemons)
//!             └─ …each restarted alone by its parent
//! ```

mod address;
mod embedding_pool;
mod embedding_worker;
mod intake;
mod planner;
mod rate_limiter;
mod reconcile_job;
mod reconciler;
mod restarts;
mod retry_scheduler;
mod scheduler;
mod status_writer;
mod supervision_report;
mod supervisor;
mod vector_writer;

pub(crate) use embedding_pool::PoolArgs;
pub(crate) use embedding_worker::WorkerArgs;
pub(crate) use intake::{IntakeArgs, IntakeHealth};
pub(crate) use planner::PlannerArgs;
pub(crate) use rate_limiter::{RateLimitedEmbedder, RateLimiterArgs};
pub(crate) use reconciler::{ReconcilerArgs, ReconcilerReport};
pub(crate) use scheduler::{SchedulerArgs, SchedulerFigures, SchedulerReport};
pub(crate) use status_writer::StatusWriterArgs;
pub(crate) use supervision_report::SupervisionReport;
pub(crate) use supervisor::{
    Addresses, Children, EmbeddingChildren, Supervisor, SupervisorArgs, SupervisorMsg,
};
pub(crate) use vector_writer::VectorWriterArgs;
