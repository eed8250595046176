//! Every Redis key embedq uses, derived from one prefix so deployments and tests can share a
//! server without seeing each other's data.

use crate::domain::JobId;

/// Consumer group of the planners on the jobs stream.
pub const PLANNER_GROUP: &str = "planners";
/// Consumer group of the embedding pipeline on the tasks stream.
pub const PIPELINE_GROUP: &str = "pipeline";

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// One entry per job to plan.
    pub fn jobs_stream(&self) -> String {
        format!("{}:jobs", self.prefix)
    }

    /// Task messages: bounded slices of jobs' items.
    pub fn tasks_stream(&self) -> String {
        format!("{}:tasks", self.prefix)
    }

    /// Entries that could not be processed, each with its reason.
    pub fn dead_letters(&self) -> String {
        format!("{}:dead", self.prefix)
    }

    /// A job's planning progress (cursor and items planned), the authority for resuming.
    pub fn plan(&self, job: JobId) -> String {
        format!("{}:plan:{job}", self.prefix)
    }

    /// The provider's rate budget, shared by every daemon.
    pub fn rate_budget(&self) -> String {
        format!("{}:ratelimit", self.prefix)
    }

    /// Items waiting for a retry: a sorted set of task payloads scored by due time (ms).
    pub fn retries(&self) -> String {
        format!("{}:retry", self.prefix)
    }

    /// The lease on a configured consumer name.
    pub fn consumer_lease(&self, name: &str) -> String {
        format!("{}:consumer:{name}", self.prefix)
    }
}
