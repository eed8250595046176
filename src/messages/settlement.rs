//! What the pipeline concluded about a task: each item's outcome and the retry tasks for items
//! that failed transiently. The status writer commits it and only then acknowledges the task.

use super::TaskMessage;
use crate::domain::{ContentHash, ItemId, JobId};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeKind {
    /// Embedded now; the vector is stored for this content hash.
    Completed { content_hash: ContentHash },
    /// Already embedded with this content and model.
    Skipped,
    /// The item was deleted before its vector was stored (its point, if any, is removed).
    Deleted,
    /// Final failure, with the reason.
    Failed { reason: String },
    /// Failed transiently; the item travels on in [`Settlement::retries`].
    Retrying { reason: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ItemOutcome {
    pub item_id: ItemId,
    pub kind: OutcomeKind,
    /// Attempts used for the item's current content, this one included.
    pub attempts: u32,
}

impl ItemOutcome {
    /// The outcome counted into the job, if final.
    pub fn final_label(&self) -> Option<&'static str> {
        match self.kind {
            OutcomeKind::Completed { .. } => Some("COMPLETED"),
            OutcomeKind::Skipped => Some("SKIPPED"),
            OutcomeKind::Deleted => Some("DELETED"),
            OutcomeKind::Failed { .. } => Some("FAILED"),
            OutcomeKind::Retrying { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    pub job_id: JobId,
    pub outcomes: Vec<ItemOutcome>,
    /// Tasks of items to try again, each with how long to wait. Usually one; the items of a
    /// request whose worker crashed go on one per task, so a poison item crashes alone.
    pub retries: Vec<(TaskMessage, Duration)>,
    /// Tokens the provider billed for this task's requests in this processing (its share of
    /// requests that mixed tasks); added to the job's `tokens` with the outcomes.
    pub billed_tokens: u64,
}
