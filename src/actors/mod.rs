//! The supervised pipeline. One actor per file, each with its messages, state and arguments
//! side by side; which actor restarts how is decided in one place, [`supervisor`].
//!
//! ```text
//! Supervisor ─┬─ Intake<JobMessage>  (jobs stream, group "planners")
//!             └─ Planner             (scope → keyset pages → task messages)
//! ```

pub mod intake;
pub mod planner;
pub mod supervision_report;
pub mod supervisor;

pub use intake::{Intake, IntakeArgs, IntakeHealth, IntakeMsg};
pub use planner::{Planner, PlannerArgs, PlannerMsg};
pub use supervision_report::{ActorReport, SupervisionReport};
pub use supervisor::{PipelineContext, Supervisor, SupervisorArgs, SupervisorMsg};
