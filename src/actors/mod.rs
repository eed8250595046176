//! The supervised pipeline. One actor per file, each with its messages, state and arguments
//! side by side; which actor restarts how is decided in one place, [`supervisor`].
//!
//! ```text
//! Supervisor ─┬─ JobIntake  (jobs stream) ──► Planner ──► tasks stream
//!             ├─ TaskIntake (tasks stream) ──► EmbeddingPool ──► EmbeddingWorker × N
//!             │        workers ──► RateLimiter (permits) ──► provider ──► VectorWriter
//!             │        pool ──► StatusWriter (SQL, then XACK) ; retries ──► RetryScheduler
//!             └─ …each restarted alone by the supervisor
//! ```

pub mod embedding_pool;
pub mod embedding_worker;
pub mod intake;
pub mod planner;
pub mod rate_limiter;
pub mod retry_scheduler;
pub mod status_writer;
pub mod supervision_report;
pub mod supervisor;
pub mod vector_writer;

pub use intake::{Intake, IntakeArgs, IntakeHealth, IntakeMsg};
pub use planner::{Planner, PlannerArgs, PlannerMsg};
pub use supervision_report::{ActorReport, SupervisionReport};
pub use supervisor::{PipelineContext, Supervisor, SupervisorArgs, SupervisorMsg};
