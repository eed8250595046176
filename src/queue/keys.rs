//! Every Redis key embedq uses, derived from one prefix so deployments and tests can share a
//! server without seeing each other's data.
//!
//! Every key is `{prefix}:name`: the braces make the prefix a hash tag, so on a Redis Cluster
//! all of a deployment's keys live in one slot, and every multi-key command and Lua script
//! (a page of tasks with its cursor, a retry moved to the stream) touches one slot only.

use crate::domain::{JobId, Priority};

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

    fn key(&self, name: &str) -> String {
        format!("{{{}}}:{name}", self.prefix)
    }

    /// The pattern of every key of this prefix (for `SCAN MATCH`).
    pub fn pattern(&self) -> String {
        // `{` and `}` are literal in Redis's glob patterns.
        self.key("*")
    }

    /// One entry per job to plan.
    pub fn jobs_stream(&self) -> String {
        self.key("jobs")
    }

    /// Task messages of one priority: bounded slices of jobs' items. Normal work keeps the
    /// stream's first name (`tasks`), so tasks queued before priorities existed go on.
    pub fn tasks_stream(&self, priority: Priority) -> String {
        match priority {
            Priority::Interactive => self.key("tasks:interactive"),
            Priority::Normal => self.key("tasks"),
            Priority::Bulk => self.key("tasks:bulk"),
        }
    }

    /// Every tasks stream, in [`Priority::ALL`]'s order (the first is taken first).
    pub fn tasks_streams(&self) -> [String; 3] {
        Priority::ALL.map(|p| self.tasks_stream(p))
    }

    /// Entries that could not be processed, each with its reason.
    pub fn dead_letters(&self) -> String {
        self.key("dead")
    }

    /// A job's planning progress (cursor and items planned), the authority for resuming.
    pub fn plan(&self, job: JobId) -> String {
        self.key(&format!("plan:{job}"))
    }

    /// How far the reconciler is in planning a job's unfinished items again.
    pub fn replan(&self, job: JobId) -> String {
        self.key(&format!("replan:{job}"))
    }

    /// The mark of this life of the Redis data: a new one whenever Redis lost it (a restart
    /// without persistence, a flush), so a job recorded in another epoch lost its queued state.
    pub fn epoch(&self) -> String {
        self.key("epoch")
    }

    /// The provider's rate budget, shared by every daemon.
    pub fn rate_budget(&self) -> String {
        self.key("ratelimit")
    }

    /// Items waiting for a retry: a sorted set of task payloads scored by due time (ms).
    pub fn retries(&self) -> String {
        self.key("retry")
    }

    /// The lease on a configured consumer name.
    pub fn consumer_lease(&self, name: &str) -> String {
        self.key(&format!("consumer:{name}"))
    }

    /// The lease of the one reconciler active among the daemons.
    pub fn reconciler_lease(&self) -> String {
        self.key("reconciler")
    }

    /// The lease of the one scheduler active among the daemons, and the counter its fencing
    /// tokens come from.
    pub fn scheduler_lease(&self) -> String {
        self.key("scheduler")
    }

    pub fn scheduler_fence(&self) -> String {
        self.key("scheduler:fence")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_shares_one_hash_tag() {
        let keys = Keys::new("embedq");
        let job = JobId::new();
        for key in [
            keys.jobs_stream(),
            keys.tasks_stream(Priority::Interactive),
            keys.tasks_stream(Priority::Normal),
            keys.tasks_stream(Priority::Bulk),
            keys.dead_letters(),
            keys.plan(job),
            keys.replan(job),
            keys.epoch(),
            keys.rate_budget(),
            keys.retries(),
            keys.consumer_lease("a"),
            keys.reconciler_lease(),
        ] {
            assert!(key.starts_with("{embedq}:"), "{key}");
        }
        assert_eq!(keys.pattern(), "{embedq}:*");
        let streams = keys.tasks_streams();
        assert_eq!(streams[1], "{embedq}:tasks");
        assert_eq!(
            streams
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len(),
            3,
            "one stream per priority"
        );
    }
}
