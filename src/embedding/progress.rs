//! Step 4: one task's items as their results come in, and the task's settlement once every item
//! has one.

use super::PreparedInput;
use crate::messages::{ItemOutcome, OutcomeKind, Settlement, TaskItem, TaskMessage};
use crate::retry::{RetryDecision, RetryPolicy};
use std::collections::HashSet;
use std::time::Duration;

/// What one attempt (or non-attempt) came to for one input.
#[derive(Debug, Clone, PartialEq)]
pub enum InputResult {
    /// Its vector is stored.
    Embedded,
    /// It can never succeed as it is (the provider refused it, the store refused its point).
    Failed { reason: String },
    /// It failed for now; `server_wait` is what the provider asked to wait.
    Transient {
        reason: String,
        server_wait: Duration,
    },
    /// The worker holding it crashed: an attempt is used, and it goes on alone.
    Crashed { reason: String },
    /// Never sent (the provider became unusable, or the daemon is stopping): it goes back with
    /// its attempts unchanged.
    Unattempted,
    /// The item was deleted meanwhile: nothing more to do.
    Deleted,
    /// Its content changed meanwhile: it goes back, with its attempts unchanged, to be loaded
    /// and embedded again.
    Superseded,
}

/// The items of one task as they are resolved.
#[derive(Debug)]
pub struct TaskProgress {
    job_id: crate::domain::JobId,
    policy: RetryPolicy,
    outcomes: Vec<ItemOutcome>,
    /// Inputs without a result yet.
    open: usize,
    server_wait: Duration,
    unattempted: Vec<TaskItem>,
    /// Items sent on alone after a crash, each as a task of its own.
    crashed: HashSet<crate::domain::ItemId>,
    crash_retries: Vec<(TaskMessage, Duration)>,
    /// The task's retries embed even up-to-date items, as it does.
    reembed: bool,
    /// The task's priority and tenant, kept by its retries.
    priority: crate::domain::Priority,
    tenant: Option<crate::domain::Tenant>,
    /// Tokens the provider billed for this task's inputs so far (its share of each request).
    billed_tokens: u64,
}

impl TaskProgress {
    /// A task with the outcomes known at classification and `open` inputs to embed.
    pub fn new(
        task: &TaskMessage,
        outcomes: Vec<ItemOutcome>,
        open: usize,
        policy: RetryPolicy,
    ) -> Self {
        Self {
            job_id: task.job_id,
            policy,
            outcomes,
            open,
            server_wait: Duration::ZERO,
            unattempted: Vec::new(),
            crashed: HashSet::new(),
            crash_retries: Vec::new(),
            reembed: task.reembed,
            priority: task.priority,
            tenant: task.tenant.clone(),
            billed_tokens: 0,
        }
    }

    /// Adds the task's share of a request's bill.
    pub fn bill(&mut self, tokens: u64) {
        self.billed_tokens = self.billed_tokens.saturating_add(tokens);
    }

    /// Every input has its result: the task can be settled.
    pub fn is_done(&self) -> bool {
        self.open == 0
    }

    /// Records one input's result.
    pub fn resolve(&mut self, input: &PreparedInput, result: InputResult) {
        self.open = self.open.saturating_sub(1);
        let item = &input.item;
        let attempts = item.attempt.saturating_add(1);
        let kind = match result {
            InputResult::Embedded => OutcomeKind::Completed {
                content_hash: input.content_hash.clone(),
            },
            InputResult::Failed { reason } => OutcomeKind::Failed { reason },
            InputResult::Transient {
                reason,
                server_wait,
            } => {
                self.server_wait = self.server_wait.max(server_wait);
                if self.policy.has_attempts_left(attempts) {
                    OutcomeKind::Retrying { reason }
                } else {
                    OutcomeKind::Failed {
                        reason: format!("gave up after {attempts} attempts; last error: {reason}"),
                    }
                }
            }
            InputResult::Crashed { reason } => {
                match self.policy.after_failure(attempts, Duration::ZERO) {
                    RetryDecision::Retry { after } => {
                        self.crashed.insert(item.id.clone());
                        self.crash_retries.push((
                            TaskMessage {
                                job_id: self.job_id,
                                items: vec![TaskItem {
                                    id: item.id.clone(),
                                    attempt: attempts,
                                }],
                                isolated: true,
                                reembed: self.reembed,
                                priority: self.priority,
                                tenant: self.tenant.clone(),
                            },
                            after,
                        ));
                        OutcomeKind::Retrying {
                            reason: format!("the embedding worker crashed: {reason}"),
                        }
                    }
                    RetryDecision::GiveUp => OutcomeKind::Failed {
                        reason: format!(
                            "the embedding worker crashed while holding it ({attempts} attempts); last crash: {reason}"
                        ),
                    },
                }
            }
            InputResult::Unattempted | InputResult::Superseded => {
                self.unattempted.push(item.clone());
                return;
            }
            InputResult::Deleted => {
                self.outcomes.push(ItemOutcome {
                    item_id: item.id.clone(),
                    kind: OutcomeKind::Deleted,
                    attempts: item.attempt,
                });
                return;
            }
        };
        self.outcomes.push(ItemOutcome {
            item_id: item.id.clone(),
            kind,
            attempts,
        });
    }

    /// The settlement: every outcome, and the retries — one task for the items retrying (with
    /// their new attempt counts) and those never attempted (with theirs unchanged), backed off
    /// by the policy for the highest attempt count or the provider's wait, whichever is
    /// longer; and one task per item sent on alone after a crash.
    pub fn settle(self) -> Settlement {
        let mut items: Vec<TaskItem> = self
            .outcomes
            .iter()
            .filter(|o| {
                matches!(o.kind, OutcomeKind::Retrying { .. }) && !self.crashed.contains(&o.item_id)
            })
            .map(|o| TaskItem {
                id: o.item_id.clone(),
                attempt: o.attempts,
            })
            .collect();
        let highest = items.iter().map(|i| i.attempt).max().unwrap_or(0);
        items.extend(self.unattempted);
        let mut retries = Vec::new();
        if !items.is_empty() {
            let wait = if highest == 0 {
                self.server_wait
            } else {
                self.policy.backoff(highest, self.server_wait)
            };
            retries.push((
                TaskMessage {
                    job_id: self.job_id,
                    items,
                    isolated: false,
                    reembed: self.reembed,
                    priority: self.priority,
                    tenant: self.tenant.clone(),
                },
                wait,
            ));
        }
        retries.extend(self.crash_retries);
        Settlement {
            job_id: self.job_id,
            outcomes: self.outcomes,
            retries,
            billed_tokens: self.billed_tokens,
        }
    }
}

/// The settlement of a task whose items could not be loaded (the database is down): nothing
/// was tried, so no attempt is used; the whole task comes back after `wait`.
pub fn settle_unloaded(task: &TaskMessage, wait: Duration) -> Settlement {
    Settlement {
        job_id: task.job_id,
        outcomes: Vec::new(),
        retries: vec![(task.clone(), wait)],
        billed_tokens: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ContentHash, ContextId, JobId};
    use crate::embedding::classify::tests::{id, policy};

    fn input(item: &str, attempt: u32) -> PreparedInput {
        PreparedInput {
            item: TaskItem {
                id: id(item),
                attempt,
            },
            context_id: ContextId::parse("c").unwrap(),
            content_hash: ContentHash::of(item),
            text: item.into(),
            tokens: 1,
            alone: false,
        }
    }

    fn task() -> TaskMessage {
        TaskMessage {
            job_id: JobId::new(),
            items: vec![],
            isolated: false,
            reembed: false,
            priority: crate::domain::Priority::Bulk,
            tenant: None,
        }
    }

    #[test]
    fn a_task_settles_each_item_once_with_its_retries() {
        let t = task();
        let skipped = ItemOutcome {
            item_id: id("s"),
            kind: OutcomeKind::Skipped,
            attempts: 0,
        };
        let mut p = TaskProgress::new(&t, vec![skipped], 5, policy());
        let (ok, flaky, spent, paused, crashed) = (
            input("ok", 0),
            input("flaky", 1),
            input("spent", 3),
            input("paused", 2),
            input("crashed", 0),
        );
        p.resolve(&ok, InputResult::Embedded);
        let transient = |ms| InputResult::Transient {
            reason: "HTTP 503".into(),
            server_wait: Duration::from_millis(ms),
        };
        p.resolve(&flaky, transient(5_000));
        p.resolve(&spent, transient(0));
        p.resolve(&paused, InputResult::Unattempted);
        assert!(!p.is_done());
        p.resolve(
            &crashed,
            InputResult::Crashed {
                reason: "panic".into(),
            },
        );
        assert!(p.is_done());
        let s = p.settle();
        let by_item: Vec<(&str, &OutcomeKind, u32)> = s
            .outcomes
            .iter()
            .map(|o| (o.item_id.as_str(), &o.kind, o.attempts))
            .collect();
        assert_eq!(by_item[0], ("s", &OutcomeKind::Skipped, 0));
        assert!(
            matches!(by_item[1], ("ok", OutcomeKind::Completed { content_hash }, 1) if *content_hash == ContentHash::of("ok"))
        );
        assert!(matches!(
            by_item[2],
            ("flaky", OutcomeKind::Retrying { .. }, 2)
        ));
        assert!(
            matches!(by_item[3], ("spent", OutcomeKind::Failed { reason }, 4) if reason.starts_with("gave up after 4 attempts"))
        );
        assert!(matches!(
            by_item[4],
            ("crashed", OutcomeKind::Retrying { .. }, 1)
        ));
        assert_eq!(s.outcomes.len(), 5, "the unattempted item has no outcome");

        assert_eq!(s.retries.len(), 2);
        let (retry, wait) = &s.retries[0];
        let items: Vec<(&str, u32)> = retry
            .items
            .iter()
            .map(|i| (i.id.as_str(), i.attempt))
            .collect();
        assert_eq!(items, [("flaky", 2), ("paused", 2)]);
        assert!(!retry.isolated);
        assert_eq!(
            retry.priority,
            crate::domain::Priority::Bulk,
            "a retry keeps its priority"
        );
        assert!(
            *wait >= Duration::from_secs(5),
            "the provider's wait wins: {wait:?}"
        );
        let (alone, _) = &s.retries[1];
        assert!(alone.isolated);
        assert_eq!(alone.priority, crate::domain::Priority::Bulk);
        assert_eq!(
            alone.items,
            [TaskItem {
                id: id("crashed"),
                attempt: 1
            }]
        );
    }

    #[test]
    fn a_crash_at_the_last_attempt_fails_the_item() {
        let t = task();
        let mut p = TaskProgress::new(&t, vec![], 1, policy());
        p.resolve(
            &input("poison", 3),
            InputResult::Crashed {
                reason: "panic".into(),
            },
        );
        let s = p.settle();
        assert!(s.retries.is_empty());
        assert!(
            matches!(&s.outcomes[0].kind, OutcomeKind::Failed { reason } if reason.contains("crashed while holding it (4 attempts)"))
        );
    }

    #[test]
    fn unattempted_items_come_back_at_once_with_their_attempts() {
        let t = task();
        let mut p = TaskProgress::new(&t, vec![], 2, policy());
        p.resolve(&input("a", 0), InputResult::Unattempted);
        p.resolve(&input("b", 2), InputResult::Unattempted);
        let s = p.settle();
        assert!(s.outcomes.is_empty());
        assert_eq!(s.retries[0].1, Duration::ZERO);
        assert_eq!(
            s.retries[0].0.items[1],
            TaskItem {
                id: id("b"),
                attempt: 2
            }
        );
        let unloaded = settle_unloaded(&t, Duration::from_millis(7));
        assert_eq!(
            unloaded.retries,
            vec![(t.clone(), Duration::from_millis(7))]
        );
    }
}
