//! Steps 2 and 3: packing waiting inputs into requests within the provider's limits, and what
//! the outcome of one request means for each of its inputs.

use super::progress::InputResult;
use crate::domain::{ContentHash, ContextId, ItemId, JobId, Priority, Tenant};
use crate::providers::{ProviderError, RequestLimits};
use std::collections::VecDeque;
use std::time::Duration;

/// Which input of which held task: the task's stream entry id and the input's index in it,
/// and the task's share and priority (which queue it waits in).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InputRef {
    pub task: String,
    pub index: usize,
    pub share: Share,
    pub priority: Priority,
}

/// Whose turn an input waits for within its priority: its job's tenant, or the job itself
/// when it has none. (Within one tenant, its jobs' inputs wait in arrival order; the planner
/// has interleaved their pages already.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Share {
    Tenant(Tenant),
    Job(JobId),
}

impl Share {
    pub fn of(job: JobId, tenant: Option<&Tenant>) -> Self {
        match tenant {
            Some(tenant) => Self::Tenant(tenant.clone()),
            None => Self::Job(job),
        }
    }
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

/// The inputs of one priority: a queue per share (tenant or job), oldest first, and the
/// shares in a ring whose front is served first.
#[derive(Debug, Default)]
struct JobRing {
    jobs: VecDeque<(Share, VecDeque<Waiting>)>,
}

impl JobRing {
    /// The job's queue; `at_front` also puts the job at the front of the ring (a request
    /// made again goes next).
    fn queue(&mut self, job: &Share, at_front: bool) -> &mut VecDeque<Waiting> {
        let index = match self.jobs.iter().position(|(j, _)| j == job) {
            Some(index) if at_front && index > 0 => {
                let entry = self.jobs.remove(index).expect("index in range");
                self.jobs.push_front(entry);
                0
            }
            Some(index) => index,
            None if at_front => {
                self.jobs.push_front((job.clone(), VecDeque::new()));
                0
            }
            None => {
                self.jobs.push_back((job.clone(), VecDeque::new()));
                self.jobs.len() - 1
            }
        };
        &mut self.jobs[index].1
    }

    fn front(&self) -> Option<&Waiting> {
        self.jobs.front().and_then(|(_, q)| q.front())
    }
}

/// Inputs waiting for a request, whichever task they belong to: one ring per priority, and in
/// it one queue per share (a tenant, or a job without one). A request takes from the highest
/// priority first and fills what room is left from the next, so an interactive input goes out
/// in the very next request and that request is still full; within one priority it takes one
/// input of each share in turn, so a small job's inputs share every request with a big job's
/// backlog instead of waiting for it, and a tenant with many jobs gets one turn like any other.
#[derive(Debug, Default)]
pub struct PendingInputs {
    rings: [JobRing; 3],
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

/// How many inputs the next request takes from the front of each job's queue:
/// (priority rank, the job's place in its ring, how many).
type Plan = Vec<(usize, usize, usize)>;

impl PendingInputs {
    fn new_group(&mut self) -> Group {
        self.next_group += 1;
        Some(self.next_group)
    }

    /// A new input; `alone` sends it in a request of its own.
    pub fn push_back(&mut self, input: InputRef, tokens: usize, alone: bool) {
        let group = if alone { self.new_group() } else { None };
        self.tokens += tokens;
        let (rank, share) = (input.priority.rank(), input.share.clone());
        self.rings[rank].queue(&share, false).push_back(Waiting {
            input,
            tokens,
            group,
        });
    }

    /// A request to be made again as it was, at the front (of each input's job and priority).
    pub fn requeue(&mut self, inputs: Vec<(InputRef, usize)>, group: Group) {
        for (input, tokens) in inputs.into_iter().rev() {
            self.tokens += tokens;
            let (rank, share) = (input.priority.rank(), input.share.clone());
            self.rings[rank].queue(&share, true).push_front(Waiting {
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
        self.rings
            .iter()
            .all(|r| r.jobs.iter().all(|(_, q)| q.is_empty()))
    }

    /// What the next request carries: the inputs of one group, or as many free inputs as fit
    /// within `limits`, highest priority first, one input of each job in turn within one.
    fn plan(&self, limits: RequestLimits) -> Plan {
        let Some(first) = self.rings.iter().position(|r| r.front().is_some()) else {
            return Vec::new();
        };
        let ring = &self.rings[first];
        if let Some(group) = ring.front().and_then(|w| w.group) {
            let n = ring.jobs[0]
                .1
                .iter()
                .take_while(|w| w.group == Some(group))
                .count();
            return vec![(first, 0, n)];
        }
        let (mut inputs, mut tokens) = (0usize, 0usize);
        let mut plan: Plan = Vec::new();
        'rings: for (rank, ring) in self.rings.iter().enumerate().skip(first) {
            // How far into each job's queue this request reaches; a job stops at its first
            // input that is grouped or does not fit.
            let mut taken = vec![0usize; ring.jobs.len()];
            let mut open = vec![true; ring.jobs.len()];
            while open.iter().any(|o| *o) {
                for (j, (_, queue)) in ring.jobs.iter().enumerate() {
                    if !open[j] {
                        continue;
                    }
                    let Some(next) = queue.get(taken[j]) else {
                        open[j] = false;
                        continue;
                    };
                    let fits = inputs < limits.max_inputs
                        && tokens + next.tokens <= limits.max_tokens_per_request;
                    if next.group.is_some() || (inputs > 0 && !fits) {
                        open[j] = false;
                        continue;
                    }
                    inputs += 1;
                    tokens += next.tokens;
                    taken[j] += 1;
                }
            }
            plan.extend(
                taken
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(j, n)| (rank, j, *n)),
            );
            if inputs >= limits.max_inputs {
                break 'rings;
            }
        }
        plan
    }

    /// The inputs of the next request within `limits`: the inputs of one group, or as many
    /// free inputs as fit, highest priority first and each job in turn within one. The jobs
    /// served go to the back of their ring. Empty when nothing waits.
    pub fn take_request(&mut self, limits: RequestLimits) -> Packed {
        let plan = self.plan(limits);
        let group = plan
            .first()
            .and_then(|(rank, j, _)| self.rings[*rank].jobs[*j].1.front())
            .and_then(|w| w.group);
        let mut taken: Vec<(InputRef, usize)> = Vec::new();
        let mut served: Vec<(usize, usize)> = Vec::new();
        for (rank, j, n) in plan {
            for next in self.rings[rank].jobs[j].1.drain(..n) {
                self.tokens -= next.tokens;
                taken.push((next.input, next.tokens));
            }
            served.push((rank, j));
        }
        // Served jobs go to the back, in the order they were served; emptied ones leave.
        for rank in 0..self.rings.len() {
            let ring = &mut self.rings[rank];
            let mut order: Vec<usize> = served
                .iter()
                .filter(|(r, _)| *r == rank)
                .map(|(_, j)| *j)
                .collect();
            if order.is_empty() {
                continue;
            }
            order.sort_unstable();
            let mut moved = Vec::new();
            for j in order.into_iter().rev() {
                if let Some(entry) = ring.jobs.remove(j) {
                    moved.push(entry);
                }
            }
            for entry in moved.into_iter().rev() {
                if !entry.1.is_empty() {
                    ring.jobs.push_back(entry);
                }
            }
            ring.jobs.retain(|(_, q)| !q.is_empty());
        }
        Packed {
            inputs: taken,
            group,
        }
    }

    /// Tokens the next request would carry, without taking it.
    pub fn next_request_tokens(&self, limits: RequestLimits) -> usize {
        self.plan(limits)
            .into_iter()
            .map(|(rank, j, n)| {
                self.rings[rank].jobs[j]
                    .1
                    .iter()
                    .take(n)
                    .map(|w| w.tokens)
                    .sum::<usize>()
            })
            .sum()
    }

    /// Takes every waiting input out (shutting down, or the provider became unusable).
    pub fn take_all(&mut self) -> Vec<InputRef> {
        self.tokens = 0;
        self.rings
            .iter_mut()
            .flat_map(|r| r.jobs.drain(..))
            .flat_map(|(_, q)| q.into_iter())
            .map(|w| w.input)
            .collect()
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

    /// The job of a test task: the part of its name before `/` (the name when there is none).
    fn job_of(task: &str) -> JobId {
        let name = task.split('/').next().unwrap_or(task);
        let n = name
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(131).wrapping_add(b as u64));
        JobId::parse(&format!(
            "00000000-0000-7000-8000-{:012x}",
            n & 0xffff_ffff_ffff
        ))
        .unwrap()
    }

    fn input(task: &str, index: usize) -> InputRef {
        InputRef {
            task: task.into(),
            index,
            share: Share::Job(job_of(task)),
            priority: Priority::Normal,
        }
    }

    fn input_of(task: &str, index: usize, priority: Priority) -> InputRef {
        InputRef {
            priority,
            ..input(task, index)
        }
    }

    #[test]
    fn the_highest_priority_goes_first_and_the_rest_fills_the_request() {
        let mut p = PendingInputs::default();
        for i in 0..3 {
            p.push_back(input_of("bulk", i, Priority::Bulk), 1, false);
        }
        p.push_back(input("normal", 0), 1, false);
        p.push_back(input_of("edit", 0, Priority::Interactive), 1, false);
        assert_eq!(p.next_request_tokens(LIMITS), 3);
        let requests = sizes(&mut p);
        assert_eq!(
            requests,
            vec![
                vec![("edit".into(), 0), ("normal".into(), 0), ("bulk".into(), 0)],
                vec![("bulk".into(), 1), ("bulk".into(), 2)],
            ],
            "interactive, then normal, then bulk fill each request"
        );
        // A refused request's halves go back to the front of each input's own queue.
        p.push_back(input("normal", 1), 1, false);
        p.bisect(vec![
            (input_of("edit", 1, Priority::Interactive), 1),
            (input_of("bulk", 3, Priority::Bulk), 1),
        ]);
        let first = p.take_request(LIMITS);
        assert_eq!(first.inputs.len(), 1);
        assert_eq!(first.inputs[0].0.task, "edit");
        assert!(first.group.is_some());
        let rest: Vec<Vec<(String, usize)>> = sizes(&mut p);
        assert_eq!(
            rest,
            vec![vec![("normal".into(), 1)], vec![("bulk".into(), 3)]],
            "a group travels alone, after the free inputs of a higher priority"
        );
        assert_eq!(p.tokens, 0);
        assert!(p.is_empty());
    }

    #[test]
    fn a_tenants_jobs_share_one_turn() {
        let mut p = PendingInputs::default();
        let acme = Share::Tenant(Tenant::parse("acme").unwrap());
        // Tenant acme's two jobs, then another job without a tenant.
        for t in ["a1/1", "a2/1"] {
            for i in 0..2 {
                p.push_back(
                    InputRef {
                        share: acme.clone(),
                        ..input(t, i)
                    },
                    1,
                    false,
                );
            }
        }
        for i in 0..2 {
            p.push_back(input("solo/1", i), 1, false);
        }
        let tasks: Vec<String> = p
            .take_request(LIMITS)
            .inputs
            .into_iter()
            .map(|(i, _)| i.task)
            .collect();
        assert_eq!(
            tasks,
            ["a1/1", "a1/1", "solo/1"],
            "acme's turn and the solo job's"
        );
    }

    #[test]
    fn jobs_of_one_priority_share_each_request_in_turn() {
        let mut p = PendingInputs::default();
        // A big job's backlog of two tasks, then a small job's one task.
        for t in ["big/1", "big/2"] {
            for i in 0..3 {
                p.push_back(input(t, i), 1, false);
            }
        }
        p.push_back(input("small/1", 0), 1, false);
        p.push_back(input("small/1", 1), 1, false);
        let first = p.take_request(LIMITS);
        let tasks: Vec<&str> = first.inputs.iter().map(|(i, _)| i.task.as_str()).collect();
        assert_eq!(
            tasks,
            ["big/1", "big/1", "small/1"],
            "one of each job in turn: {tasks:?}"
        );
        // The small job was served last: the big job leads the next request, then the small.
        let second = p.take_request(LIMITS);
        let tasks: Vec<&str> = second.inputs.iter().map(|(i, _)| i.task.as_str()).collect();
        assert_eq!(tasks, ["big/1", "big/2", "small/1"], "{tasks:?}");
        let rest: Vec<usize> = sizes(&mut p).iter().map(Vec::len).collect();
        assert_eq!(rest, [2], "the big job's last two inputs");
        assert!(p.is_empty());
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
        // Tasks of one job: its inputs stay in order.
        p.push_back(input("j/a", 0), 1, false);
        p.push_back(input("j/b", 0), 1, true);
        p.push_back(input("j/a", 1), 1, false);
        p.push_back(input("j/a", 2), 1, false);
        let requests: Vec<usize> = sizes(&mut p).iter().map(Vec::len).collect();
        assert_eq!(requests, [1, 1, 2]);
    }

    #[test]
    fn a_refused_request_comes_back_in_halves_then_as_it_was() {
        let mut p = PendingInputs::default();
        p.push_back(input("t/later", 0), 1, false);
        let refused: Vec<(InputRef, usize)> = (0..5).map(|i| (input("t/1", i), 1)).collect();
        p.bisect(refused);
        let first = p.take_request(LIMITS);
        assert_eq!(first.inputs.len(), 2, "the first half, alone");
        assert!(first.group.is_some());
        p.requeue(first.inputs.clone(), first.group);
        assert_eq!(p.take_request(LIMITS), first, "requeued as it was");
        let second = p.take_request(LIMITS);
        assert_eq!(second.inputs.len(), 3);
        assert_ne!(second.group, first.group);
        assert_eq!(p.take_request(LIMITS).inputs, [(input("t/later", 0), 1)]);
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
