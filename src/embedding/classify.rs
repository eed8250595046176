//! Step 1: what to do with each item of a task, once its rows are loaded.

use crate::domain::{ContentHash, ContextId, ItemStatus};
use crate::messages::{ItemOutcome, OutcomeKind, TaskItem, TaskMessage};
use crate::providers::Embedder;
use crate::retry::RetryPolicy;
use crate::store::{LoadedItem, TaskItemRow};
use std::collections::HashMap;

/// One item of a task, ready to be embedded.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedInput {
    pub item: TaskItem,
    pub context_id: ContextId,
    pub content_hash: ContentHash,
    /// What is sent to the provider (the content, or its first tokens when truncating).
    pub text: String,
    pub tokens: usize,
    /// Sent in a request of its own (an item suspected of crashing its worker).
    pub alone: bool,
}

/// A task's items, sorted: outcomes known now, and inputs to embed.
#[derive(Debug, Default)]
pub struct Classified {
    pub outcomes: Vec<ItemOutcome>,
    pub inputs: Vec<PreparedInput>,
}

fn is_up_to_date(row: &TaskItemRow, model: &str) -> bool {
    row.status == ItemStatus::Completed
        && row.embedded_model.as_deref() == Some(model)
        && row.embedded_hash.as_ref() == Some(&row.content_hash)
}

/// Sorts the items of `task` given their loaded rows: an item gone since planning counts as
/// deleted; one already embedded with its current content and `model` is skipped (unless the
/// task says to embed again); one with no attempt left, or
/// over the per-input token limit (unless truncating), fails now; the rest become inputs,
/// their tokens counted as the provider counts them.
pub fn classify(
    task: &TaskMessage,
    loaded: Vec<LoadedItem>,
    model: &str,
    policy: &RetryPolicy,
    embedder: &dyn Embedder,
    truncate: bool,
) -> Classified {
    let mut by_id: HashMap<_, _> = loaded.into_iter().map(|l| (l.id().clone(), l)).collect();
    let max_tokens = embedder.limits().max_tokens_per_input;
    let mut out = Classified::default();
    for item in &task.items {
        let outcome = |kind| ItemOutcome {
            item_id: item.id.clone(),
            kind,
            attempts: item.attempt,
        };
        let row = match by_id.remove(&item.id) {
            // Deleted since planning: nothing to embed.
            None => {
                out.outcomes.push(outcome(OutcomeKind::Deleted));
                continue;
            }
            Some(LoadedItem::Corrupt { reason, .. }) => {
                out.outcomes.push(outcome(OutcomeKind::Failed {
                    reason: format!("the stored item is corrupt: {reason}"),
                }));
                continue;
            }
            Some(LoadedItem::Row(row)) => row,
        };
        if !task.reembed && is_up_to_date(&row, model) {
            out.outcomes.push(outcome(OutcomeKind::Skipped));
            continue;
        }
        if !policy.has_attempts_left(item.attempt) {
            out.outcomes.push(outcome(OutcomeKind::Failed {
                reason: format!("attempts exhausted ({} used)", item.attempt),
            }));
            continue;
        }
        let mut text = row.content;
        let mut tokens = embedder.count_tokens(&text);
        if tokens > max_tokens && truncate {
            text = embedder.truncate(&text, max_tokens);
            tokens = embedder.count_tokens(&text);
        }
        if tokens > max_tokens {
            out.outcomes.push(ItemOutcome {
                item_id: item.id.clone(),
                kind: OutcomeKind::Failed {
                    reason: format!(
                        "input has {tokens} tokens; the limit is {max_tokens} per input (embedding.max_tokens_per_input)"
                    ),
                },
                attempts: item.attempt + 1,
            });
            continue;
        }
        out.inputs.push(PreparedInput {
            item: item.clone(),
            context_id: row.context_id,
            content_hash: row.content_hash,
            text,
            tokens: tokens.max(1),
            alone: task.isolated,
        });
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::RetrySettings;
    use crate::domain::{ItemId, JobId};
    use crate::providers::{Embedded, ProviderError, RequestLimits};
    use std::time::Duration;

    /// An embedder that counts one token per word and embeds nothing.
    pub(crate) struct WordCounter;

    #[async_trait::async_trait]
    impl Embedder for WordCounter {
        fn model(&self) -> &str {
            "m"
        }
        fn dimension(&self) -> usize {
            2
        }
        fn limits(&self) -> RequestLimits {
            RequestLimits {
                max_inputs: 3,
                max_tokens_per_input: 5,
                max_tokens_per_request: 8,
            }
        }
        fn count_tokens(&self, text: &str) -> usize {
            text.split_whitespace().count()
        }
        fn truncate(&self, text: &str, max_tokens: usize) -> String {
            text.split_whitespace()
                .take(max_tokens)
                .collect::<Vec<_>>()
                .join(" ")
        }
        async fn embed(
            &self,
            _inputs: &[String],
            _kind: crate::providers::InputKind,
        ) -> Result<Embedded, ProviderError> {
            unreachable!("classify never embeds")
        }
    }

    pub(crate) fn policy() -> RetryPolicy {
        RetryPolicy::new(&RetrySettings {
            max_retries: 3,
            base_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
        })
    }

    pub(crate) fn id(s: &str) -> ItemId {
        ItemId::parse(s).unwrap()
    }

    pub(crate) fn row(item: &str, content: &str) -> TaskItemRow {
        TaskItemRow {
            id: id(item),
            context_id: ContextId::parse("ctx").unwrap(),
            content: content.into(),
            content_hash: ContentHash::of(content),
            status: ItemStatus::Pending,
            embedded_model: None,
            embedded_hash: None,
        }
    }

    fn task(items: &[(&str, u32)]) -> TaskMessage {
        TaskMessage {
            job_id: JobId::new(),
            items: items
                .iter()
                .map(|(i, a)| TaskItem {
                    id: id(i),
                    attempt: *a,
                })
                .collect(),
            isolated: false,
            priority: Default::default(),
            tenant: None,
            reembed: false,
        }
    }

    #[test]
    fn sorts_every_item_into_one_outcome_or_one_input() {
        let mut done = row("done", "already embedded");
        done.status = ItemStatus::Completed;
        done.embedded_model = Some("m".into());
        done.embedded_hash = Some(done.content_hash.clone());
        let mut other_model = row("old", "embedded with another model");
        other_model.status = ItemStatus::Completed;
        other_model.embedded_model = Some("older".into());
        other_model.embedded_hash = Some(other_model.content_hash.clone());
        let t = task(&[
            ("new", 0),
            ("gone", 0),
            ("done", 0),
            ("old", 1),
            ("spent", 4),
            ("long", 0),
            ("bad", 0),
        ]);
        let loaded = vec![
            LoadedItem::Row(row("new", "a short text")),
            LoadedItem::Row(done),
            LoadedItem::Row(other_model),
            LoadedItem::Row(row("spent", "no attempts left")),
            LoadedItem::Row(row("long", "one two three four five six")),
            LoadedItem::Corrupt {
                id: id("bad"),
                reason: "context id \"a b\"".into(),
            },
        ];
        let c = classify(&t, loaded, "m", &policy(), &WordCounter, false);
        let kinds: Vec<(&str, &OutcomeKind, u32)> = c
            .outcomes
            .iter()
            .map(|o| (o.item_id.as_str(), &o.kind, o.attempts))
            .collect();
        assert_eq!(kinds[0], ("gone", &OutcomeKind::Deleted, 0));
        assert_eq!(kinds[1], ("done", &OutcomeKind::Skipped, 0));
        assert!(
            matches!(kinds[2], ("spent", OutcomeKind::Failed { reason }, 4) if reason.contains("exhausted"))
        );
        assert!(
            matches!(kinds[3], ("long", OutcomeKind::Failed { reason }, 1) if reason.contains("6 tokens"))
        );
        assert!(
            matches!(kinds[4], ("bad", OutcomeKind::Failed { reason }, 0) if reason.contains("corrupt"))
        );
        let inputs: Vec<(&str, usize, u32)> = c
            .inputs
            .iter()
            .map(|i| (i.item.id.as_str(), i.tokens, i.item.attempt))
            .collect();
        assert_eq!(inputs, [("new", 3, 0), ("old", 4, 1)]);
        assert_eq!(c.outcomes.len() + c.inputs.len(), t.items.len());
    }

    #[test]
    fn truncating_keeps_over_long_inputs() {
        let t = task(&[("long", 0)]);
        let loaded = vec![LoadedItem::Row(row("long", "one two three four five six"))];
        let c = classify(&t, loaded, "m", &policy(), &WordCounter, true);
        assert!(c.outcomes.is_empty());
        assert_eq!(c.inputs[0].text, "one two three four five");
        assert_eq!(c.inputs[0].tokens, 5);
        assert_eq!(
            c.inputs[0].content_hash,
            ContentHash::of("one two three four five six"),
            "the hash stays that of the stored content"
        );
    }

    #[test]
    fn an_isolated_task_sends_its_items_alone() {
        let mut t = task(&[("a", 1)]);
        t.isolated = true;
        let c = classify(
            &t,
            vec![LoadedItem::Row(row("a", "x"))],
            "m",
            &policy(),
            &WordCounter,
            false,
        );
        assert!(c.inputs[0].alone);
    }
}
