//! Steps 2 and 3: packing waiting inputs into requests within the provider's limits, and what
//! the outcome of one request means for each of its inputs.

use super::progress::InputResult;
use crate::domain::{ContentHash, ContextId, ItemId};
use crate::providers::{ProviderError, RequestLimits};
use std::collections::VecDeque;
use std::time::Duration;

/// Which input of which held task: the task's stream entry id and the input's index in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InputRef {
    pub task: String,
    pub index: usize,
}

/// A set of inputs that must travel together in a request of their own (the half of a
/// refused request, or one suspect input alone); `None` packs freely.
pub type Group = Option<u64>;

#[derive(Debug, Clone)]
struct Waiting {
    input: InputRef,
    tokens: usize,
    group: Group,
}

/// Inputs waiting for a request, oldest first, whichever task they belong to.
#[derive(Debug, Default)]
pub struct PendingInputs {
    queue: VecDeque<Waiting>,
    tokens: usize,
    next_group: u64,
}

/// The inputs of one request, and the group they travel as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub inputs: Vec<(InputRef, usize)>,
    pub group: Group,
}

impl Packed {
    pub fn tokens(&self) -> usize {
        self.inputs.iter().map(|(_, t)| t).sum()
    }
}

impl PendingInputs {
    fn new_group(&mut self) -> Group {
        self.next_group += 1;
        Some(self.next_group)
    }

    /// A new input; `alone` sends it in a request of its own.
    pub fn push_back(&mut self, input: InputRef, tokens: usize, alone: bool) {
        let group = if alone { self.new_group() } else { None };
        self.tokens += tokens;
        self.queue.push_back(Waiting {
            input,
            tokens,
            group,
        });
    }

    /// A request to be made again as it was, at the front.
    pub fn requeue(&mut self, inputs: Vec<(InputRef, usize)>, group: Group) {
        for (input, tokens) in inputs.into_iter().rev() {
            self.tokens += tokens;
            self.queue.push_front(Waiting {
                input,
                tokens,
                group,
            });
        }
    }

    /// A refused request goes back in two halves, each a request of its own, so that the input
    /// the provider refuses is found in a few requests rather than one per input.
    pub fn bisect(&mut self, mut inputs: Vec<(InputRef, usize)>) {
        let second = inputs.split_off(inputs.len() / 2);
        let (first_group, second_group) = (self.new_group(), self.new_group());
        self.requeue(second, second_group);
        self.requeue(inputs, first_group);
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The inputs of the next request, oldest first, within `limits`: as many free inputs as
    /// fit, or the inputs of one group. Empty when nothing waits.
    pub fn take_request(&mut self, limits: RequestLimits) -> Packed {
        let group = match self.queue.front() {
            Some(front) => front.group,
            None => None,
        };
        let mut taken: Vec<(InputRef, usize)> = Vec::new();
        let mut tokens = 0usize;
        while let Some(next) = self.queue.front() {
            let fits = taken.len() < limits.max_inputs
                && tokens + next.tokens <= limits.max_tokens_per_request;
            if next.group != group || (!taken.is_empty() && !fits) {
                break;
            }
            let next = self.queue.pop_front().expect("front exists");
            self.tokens -= next.tokens;
            tokens += next.tokens;
            taken.push((next.input, next.tokens));
        }
        Packed {
            inputs: taken,
            group,
        }
    }

    /// Tokens the next request would carry, without taking it.
    pub fn next_request_tokens(&self, limits: RequestLimits) -> usize {
        let group = self.queue.front().and_then(|f| f.group);
        let mut tokens = 0usize;
        for (n, next) in self.queue.iter().enumerate() {
            let fits =
                n < limits.max_inputs && tokens + next.tokens <= limits.max_tokens_per_request;
            if next.group != group || (n > 0 && !fits) {
                break;
            }
            tokens += next.tokens;
        }
        tokens
    }

    /// Takes every waiting input out (shutting down, or the provider became unusable).
    pub fn take_all(&mut self) -> Vec<InputRef> {
        self.tokens = 0;
        self.queue.drain(..).map(|w| w.input).collect()
    }
}

/// One input of a request, with what its vector's point needs.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestInput {
    pub item_id: ItemId,
    pub context_id: ContextId,
    pub content_hash: ContentHash,
    pub text: String,
}

/// One request for an embedding worker.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedRequest {
    pub id: u64,
    pub inputs: Vec<RequestInput>,
}

impl EmbedRequest {
    pub fn texts(&self) -> Vec<String> {
        self.inputs.iter().map(|i| i.text.clone()).collect()
    }
}

/// A vector the provider computed for one input, before the vector writer stamps it with
/// the item's current version, metadata and the generation it is written to.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputedVector {
    pub item_id: ItemId,
    pub context_id: ContextId,
    pub content_hash: ContentHash,
    pub vector: Vec<f32>,
}

/// The vectors of a request, one per input, in input order.
pub fn to_vectors(
    request: &EmbedRequest,
    vectors: Vec<Vec<f32>>,
) -> Result<Vec<ComputedVector>, String> {
    if vectors.len() != request.inputs.len() {
        return Err(format!(
            "{} vectors for {} inputs",
            vectors.len(),
            request.inputs.len()
        ));
    }
    Ok(request
        .inputs
        .iter()
        .zip(vectors)
        .map(|(input, vector)| ComputedVector {
            item_id: input.item_id.clone(),
            context_id: input.context_id.clone(),
            content_hash: input.content_hash.clone(),
            vector,
        })
        .collect())
}

/// Why the vector writer did not store one input's vector.
#[derive(Debug, Clone, PartialEq)]
pub enum NotStored {
    /// The store refused the point for good (its reason).
    Refused(String),
    /// The item was deleted; its point (if this write made one) is removed.
    Deleted,
    /// The item's content changed since it was loaded: this vector is stale, the item must be
    /// embedded again (no attempt used).
    Superseded,
}

/// How one request ended.
#[derive(Debug, Clone)]
pub enum RequestOutcome {
    /// The vectors are stored, except those of the inputs (by index) named here.
    Stored { not_stored: Vec<(usize, NotStored)> },
    /// The provider's error.
    Provider(ProviderError),
    /// The vector store failed the write as a whole, for now.
    Store(String),
}

/// A worker's answer to a request: how it ended, and the tokens the provider was paid for it
/// (0 when no answer came back from the provider).
#[derive(Debug, Clone)]
pub struct Answer {
    pub outcome: RequestOutcome,
    pub billed_tokens: u64,
}

/// `total` split over parts in proportion to `weights` (each input's estimated tokens), by
/// largest remainder: the shares add up to `total` exactly, so a job is charged what its
/// inputs cost, however a request mixed tasks.
pub fn shares(total: u64, weights: &[usize]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|&w| w as u128).sum();
    if weights.is_empty() {
        return Vec::new();
    }
    if sum == 0 {
        // No estimate: equal parts.
        let n = weights.len() as u64;
        return (0..n)
            .map(|i| total / n + u64::from(i < total % n))
            .collect();
    }
    let exact: Vec<(u64, u128)> = weights
        .iter()
        .map(|&w| {
            let scaled = total as u128 * w as u128;
            ((scaled / sum) as u64, scaled % sum)
        })
        .collect();
    let mut out: Vec<u64> = exact.iter().map(|&(floor, _)| floor).collect();
    let mut left = total - out.iter().sum::<u64>();
    let mut by_remainder: Vec<usize> = (0..exact.len()).collect();
    by_remainder.sort_by(|&a, &b| exact[b].1.cmp(&exact[a].1).then(a.cmp(&b)));
    for i in by_remainder {
        if left == 0 {
            break;
        }
        out[i] += 1;
        left -= 1;
    }
    out
}

/// What happens to one input of a finished request.
#[derive(Debug, Clone, PartialEq)]
pub enum InputAction {
    /// Its result for this attempt.
    Resolve(InputResult),
    /// Send it again in the same request; no attempt was used.
    Requeue,
    /// The provider refused the request for one of its inputs: send it again in halves, each a
    /// request of its own, to find which; no attempt was used.
    Bisect,
}

/// Each input's action after a request of `inputs` inputs ended with `outcome`, and the
/// provider's reason when it became unusable (intake must pause).
pub fn actions_for(outcome: RequestOutcome, inputs: usize) -> (Vec<InputAction>, Option<String>) {
    let all = |action: InputAction| vec![action; inputs];
    match outcome {
        RequestOutcome::Stored { not_stored } => {
            let mut actions = all(InputAction::Resolve(InputResult::Embedded));
            for (index, why) in not_stored {
                if let Some(action) = actions.get_mut(index) {
                    *action = InputAction::Resolve(match why {
                        NotStored::Refused(reason) => InputResult::Failed {
                            reason: format!("the vector store refused the point: {reason}"),
                        },
                        NotStored::Deleted => InputResult::Deleted,
                        NotStored::Superseded => InputResult::Superseded,
                    });
                }
            }
            (actions, None)
        }
        RequestOutcome::Store(reason) => (
            all(InputAction::Resolve(InputResult::Transient {
                reason: format!("writing vectors: {reason}"),
                server_wait: Duration::ZERO,
            })),
            None,
        ),
        // The request never reached the provider, or the provider asked everyone to slow down
        // (a 429 is about the budget, not the inputs): no attempt is used, it goes again when
        // a permit comes — the limiter holds everyone meanwhile, for the provider's wait.
        RequestOutcome::Provider(e) if e.is_unreachable() || e.is_rate_limited() => {
            (all(InputAction::Requeue), None)
        }
        RequestOutcome::Provider(ProviderError::Transient {
            reason,
            retry_after,
            ..
        }) => (
            all(InputAction::Resolve(InputResult::Transient {
                reason,
                server_wait: retry_after.unwrap_or_default(),
            })),
            None,
        ),
        // One input spoiled the request: bisect it to find which.
        RequestOutcome::Provider(ProviderError::InvalidInput { .. }) if inputs > 1 => {
            (all(InputAction::Bisect), None)
        }
        RequestOutcome::Provider(ProviderError::InvalidInput { reason }) => (
            all(InputAction::Resolve(InputResult::Failed { reason })),
            None,
        ),
        // Nothing works until an operator acts: the inputs keep their attempts.
        RequestOutcome::Provider(ProviderError::Fatal { reason }) => (
            all(InputAction::Resolve(InputResult::Unattempted)),
            Some(reason),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::RateLimitHints;

    const LIMITS: RequestLimits = RequestLimits {
        max_inputs: 3,
        max_tokens_per_input: 10,
        max_tokens_per_request: 12,
    };

    fn input(task: &str, index: usize) -> InputRef {
        InputRef {
            task: task.into(),
            index,
        }
    }

    fn sizes(p: &mut PendingInputs) -> Vec<Vec<(String, usize)>> {
        let mut out = Vec::new();
        loop {
            let r = p.take_request(LIMITS);
            if r.inputs.is_empty() {
                return out;
            }
            out.push(
                r.inputs
                    .into_iter()
                    .map(|(i, _)| (i.task, i.index))
                    .collect(),
            );
        }
    }

    #[test]
    fn requests_are_filled_across_tasks_within_the_limits() {
        let mut p = PendingInputs::default();
        for i in 0..2 {
            p.push_back(input("t1", i), 2, false);
        }
        for i in 0..3 {
            p.push_back(input("t2", i), 5, false);
        }
        assert_eq!(p.tokens, 19);
        assert_eq!(p.next_request_tokens(LIMITS), 9);
        assert_eq!(p.take_request(LIMITS).tokens(), 9);
        p.requeue(
            vec![
                (input("t1", 0), 2),
                (input("t1", 1), 2),
                (input("t2", 0), 5),
            ],
            None,
        );
        let requests = sizes(&mut p);
        assert_eq!(
            requests,
            vec![
                vec![("t1".into(), 0), ("t1".into(), 1), ("t2".into(), 0)],
                vec![("t2".into(), 1), ("t2".into(), 2)],
            ],
            "three inputs at most, twelve tokens at most"
        );
        assert_eq!(p.tokens, 0);
    }

    #[test]
    fn an_input_that_must_go_alone_goes_alone() {
        let mut p = PendingInputs::default();
        p.push_back(input("a", 0), 1, false);
        p.push_back(input("b", 0), 1, true);
        p.push_back(input("a", 1), 1, false);
        p.push_back(input("a", 2), 1, false);
        let requests: Vec<usize> = sizes(&mut p).iter().map(Vec::len).collect();
        assert_eq!(requests, [1, 1, 2]);
    }

    #[test]
    fn a_refused_request_comes_back_in_halves_then_as_it_was() {
        let mut p = PendingInputs::default();
        p.push_back(input("later", 0), 1, false);
        let refused: Vec<(InputRef, usize)> = (0..5).map(|i| (input("t", i), 1)).collect();
        p.bisect(refused);
        let first = p.take_request(LIMITS);
        assert_eq!(first.inputs.len(), 2, "the first half, alone");
        assert!(first.group.is_some());
        p.requeue(first.inputs.clone(), first.group);
        assert_eq!(p.take_request(LIMITS), first, "requeued as it was");
        let second = p.take_request(LIMITS);
        assert_eq!(second.inputs.len(), 3);
        assert_ne!(second.group, first.group);
        assert_eq!(p.take_request(LIMITS).inputs, [(input("later", 0), 1)]);
    }

    #[test]
    fn vectors_carry_each_inputs_identity() {
        let request = EmbedRequest {
            id: 1,
            inputs: vec![RequestInput {
                item_id: ItemId::parse("a").unwrap(),
                context_id: ContextId::parse("c").unwrap(),
                content_hash: ContentHash::of("x"),
                text: "x".into(),
            }],
        };
        let points = to_vectors(&request, vec![vec![1.0, 0.0]]).unwrap();
        assert_eq!(points[0].item_id.as_str(), "a");
        assert_eq!(points[0].context_id.as_str(), "c");
        assert_eq!(points[0].content_hash, ContentHash::of("x"));
        assert!(
            to_vectors(&request, vec![]).is_err(),
            "a count mismatch is an error"
        );
    }

    fn transient(unreachable: bool) -> ProviderError {
        ProviderError::Transient {
            reason: "HTTP 503".into(),
            retry_after: Some(Duration::from_secs(2)),
            rate_limited: false,
            unreachable,
            hints: RateLimitHints::default(),
        }
    }

    #[test]
    fn each_outcome_decides_for_every_input() {
        let (a, fatal) = actions_for(
            RequestOutcome::Stored {
                not_stored: vec![
                    (1, NotStored::Refused("bad point".into())),
                    (3, NotStored::Deleted),
                    (4, NotStored::Superseded),
                ],
            },
            5,
        );
        assert_eq!(fatal, None);
        assert_eq!(a[0], InputAction::Resolve(InputResult::Embedded));
        assert!(
            matches!(&a[1], InputAction::Resolve(InputResult::Failed { reason }) if reason.contains("bad point"))
        );
        assert_eq!(a[2], InputAction::Resolve(InputResult::Embedded));
        assert_eq!(a[3], InputAction::Resolve(InputResult::Deleted));
        assert_eq!(a[4], InputAction::Resolve(InputResult::Superseded));

        let (a, _) = actions_for(RequestOutcome::Provider(transient(true)), 2);
        assert_eq!(a, vec![InputAction::Requeue; 2]);
        let rate_limited = ProviderError::Transient {
            reason: "HTTP 429".into(),
            retry_after: Some(Duration::from_secs(1)),
            rate_limited: true,
            unreachable: false,
            hints: RateLimitHints::default(),
        };
        let (a, _) = actions_for(RequestOutcome::Provider(rate_limited), 2);
        assert_eq!(a, vec![InputAction::Requeue; 2], "a 429 uses no attempt");

        let (a, _) = actions_for(RequestOutcome::Provider(transient(false)), 1);
        assert_eq!(
            a,
            [InputAction::Resolve(InputResult::Transient {
                reason: "HTTP 503".into(),
                server_wait: Duration::from_secs(2)
            })]
        );

        let refused = || ProviderError::InvalidInput {
            reason: "too long".into(),
        };
        let (a, _) = actions_for(RequestOutcome::Provider(refused()), 2);
        assert_eq!(a, vec![InputAction::Bisect; 2]);
        let (a, _) = actions_for(RequestOutcome::Provider(refused()), 1);
        assert_eq!(
            a,
            [InputAction::Resolve(InputResult::Failed {
                reason: "too long".into()
            })]
        );

        let (a, fatal) = actions_for(
            RequestOutcome::Provider(ProviderError::Fatal {
                reason: "HTTP 401".into(),
            }),
            2,
        );
        assert_eq!(a, vec![InputAction::Resolve(InputResult::Unattempted); 2]);
        assert_eq!(fatal.as_deref(), Some("HTTP 401"));

        let (a, _) = actions_for(RequestOutcome::Store("busy".into()), 1);
        assert!(
            matches!(&a[0], InputAction::Resolve(InputResult::Transient { reason, .. }) if reason == "writing vectors: busy")
        );
    }

    #[test]
    fn shares_add_up_to_the_bill_in_proportion() {
        assert_eq!(shares(100, &[1, 1, 2]), vec![25, 25, 50]);
        // Largest remainder: 10 over 3 equal weights gives 4, 3, 3.
        assert_eq!(shares(10, &[5, 5, 5]), vec![4, 3, 3]);
        let odd = shares(1_000_003, &[17, 3, 250, 9, 1]);
        assert_eq!(odd.iter().sum::<u64>(), 1_000_003);
        assert!(odd[2] > odd[0] && odd[0] > odd[3] && odd[3] > odd[1]);
        assert_eq!(shares(7, &[0, 0]), vec![4, 3]);
        assert_eq!(shares(0, &[4, 2]), vec![0, 0]);
        assert!(shares(5, &[]).is_empty());
    }
}
