//! Embedding pool: holds the task deliveries the tasks intake hands it and turns them into
//! requests for its workers, which it supervises.
//!
//! For each delivery it loads the task's items and classifies them ([`classify`]); the inputs
//! to embed join one queue, whatever task they come from ([`PendingInputs`]). When a worker is
//! idle and inputs wait, it asks the rate limiter for a permit, and only once the permit comes
//! does it pack the request from what waits then — so when the request budget binds, requests
//! fill up while they wait. A worker's answer is turned into each input's result
//! ([`actions_for`]); a task whose items all have one is settled ([`TaskProgress::settle`])
//! and handed, with its delivery (its intake credit and its claim), to the status writer,
//! which commits and then acknowledges it.
//!
//! A worker that crashes mid-request settles that request's items as a crash: an attempt is
//! used and each item goes on alone, so a poison item that crashes its worker every time runs
//! out of attempts and ends FAILED, and the items that shared its request are not dragged down
//! with it. The pool restarts the worker after a backoff; past its restart budget it fails,
//! and the supervisor restarts the pool (the intake then delivers its tasks again).

use super::address::Address;
use super::embedding_worker::{EmbeddingWorker, WorkerArgs, WorkerMsg};
use super::rate_limiter::{Permit, RateLimitedEmbedder};
use super::restarts::RestartBudget;
use super::status_writer::{Settled, StatusMsg};
use super::supervision_report::SupervisionReport;
use crate::config::SupervisionSettings;
use crate::domain::JobState;
use crate::embedding::{
    Answer, EmbedRequest, Group, InputAction, InputRef, InputResult, PendingInputs, PreparedInput,
    RequestInput, Share, TaskProgress, actions_for, classify, settle_unloaded, shares,
};
use crate::events::EventBus;
use crate::gate::PipelineGate;
use crate::messages::{Settlement, TaskMessage};
use crate::queue::Delivery;
use crate::retry::RetryPolicy;
use crate::store::{LoadedItem, Store};
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

pub enum PoolMsg {
    Deliver(Delivery<TaskMessage>),
    /// A task's items were read (self-sent): `None` when its job was cancelled.
    Loaded {
        entry: String,
        loaded: Option<Result<Vec<LoadedItem>, String>>,
    },
    /// The permit asked for, or why none came (self-sent).
    Permit(Result<Permit, String>),
    /// A worker's answer to a request (self-sent).
    Answered {
        worker: usize,
        request: u64,
        answer: Answer,
    },
    /// Start a worker again once its backoff has passed (self-sent).
    RestartWorker(usize),
    /// The pipeline gate changed (self-sent by its watcher).
    GateChanged,
    /// Try to send the next request (self-sent after the limiter could not be reached).
    Dispatch,
    /// Shutting down: send nothing more, give back what was never sent, and answer once every
    /// request in flight is settled.
    Drain(RpcReplyPort<()>),
}

impl From<Delivery<TaskMessage>> for PoolMsg {
    fn from(d: Delivery<TaskMessage>) -> Self {
        Self::Deliver(d)
    }
}

#[derive(Clone)]
pub struct PoolArgs {
    pub store: Store,
    pub embedder: RateLimitedEmbedder,
    pub policy: RetryPolicy,
    /// The model whose vectors are current.
    pub model: String,
    /// Cut inputs over the per-input token limit instead of failing them.
    pub truncate: bool,
    /// The most tokens a request carries, whatever the provider allows
    /// ([`crate::limiter::max_request_tokens`] of the rate budget).
    pub max_request_tokens: usize,
    pub workers: usize,
    /// What every worker starts from (its index set per worker).
    pub worker: WorkerArgs,
    pub status_writer: Address<StatusMsg>,
    pub gate: PipelineGate,
    pub supervision: SupervisionSettings,
    pub report: Arc<SupervisionReport>,
    pub events: EventBus,
}

/// A task held from its delivery to its settlement.
struct HeldTask {
    delivery: Delivery<TaskMessage>,
    /// `None` while its items load.
    embedding: Option<Box<Embedding>>,
}

/// A loaded task's inputs and how far they are.
struct Embedding {
    inputs: Vec<PreparedInput>,
    progress: TaskProgress,
    /// Inputs in a request right now.
    in_flight: usize,
}

struct InFlight {
    request: u64,
    inputs: Vec<(InputRef, usize)>,
    group: Group,
}

#[derive(Default)]
struct WorkerSlot {
    actor: Option<ActorRef<WorkerMsg>>,
    busy: Option<InFlight>,
}

pub struct PoolState {
    args: PoolArgs,
    tasks: HashMap<String, HeldTask>,
    pending: PendingInputs,
    workers: Vec<WorkerSlot>,
    worker_ids: HashMap<ActorId, usize>,
    restarts: RestartBudget,
    permit_asked: bool,
    next_request: u64,
    /// Shutting down: nothing new is taken or sent.
    draining: bool,
    /// Answered once nothing is held any more.
    drained: Option<RpcReplyPort<()>>,
    gate_watch: Option<JoinHandle<()>>,
}

pub struct EmbeddingPool;

fn worker_role(index: usize) -> String {
    format!("worker-{index}")
}

impl PoolState {
    fn embedding(&mut self, entry: &str) -> Option<&mut Embedding> {
        self.tasks.get_mut(entry)?.embedding.as_deref_mut()
    }

    fn sends_requests(&self) -> bool {
        !self.draining && self.args.gate.allows_requests()
    }

    fn idle_worker(&self) -> Option<usize> {
        self.workers
            .iter()
            .position(|w| w.actor.is_some() && w.busy.is_none())
    }

    /// Hands a settled task to the status writer; while the writer restarts, the delivery is
    /// let go (its entry stays pending and is delivered again once the writer is back). While
    /// draining, a task with nothing to commit is simply let go.
    fn settle(&mut self, entry: &str) {
        let Some(task) = self.tasks.remove(entry) else {
            return;
        };
        let Some(embedding) = task.embedding else {
            return;
        };
        let settlement = embedding.progress.settle();
        if self.draining && settlement.outcomes.is_empty() {
            return;
        }
        self.hand_over(task.delivery, settlement);
    }

    fn hand_over(&self, delivery: Delivery<TaskMessage>, settlement: Settlement) {
        let settled = Settled {
            delivery,
            settlement,
        };
        if let Err(e) = self
            .args
            .status_writer
            .cast(StatusMsg::Settle(Box::new(settled)))
        {
            tracing::warn!(error = %e, "the task will be delivered again");
        }
    }

    /// Settles the task if every input has its result.
    fn settle_if_done(&mut self, entry: &str) {
        let done = self
            .tasks
            .get(entry)
            .and_then(|t| t.embedding.as_ref())
            .is_some_and(|e| e.progress.is_done());
        if done {
            self.settle(entry);
        }
    }

    /// Records an input's result (its request ended).
    fn resolve(&mut self, input: &InputRef, result: InputResult) {
        if let Some(e) = self.embedding(&input.task) {
            e.in_flight = e.in_flight.saturating_sub(1);
            e.progress.resolve(&e.inputs[input.index], result);
        }
    }

    /// An input of a finished request goes back to wait (no result yet).
    fn unsend(&mut self, input: &InputRef) {
        if let Some(e) = self.embedding(&input.task) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
    }

    /// Applies each input's action after its request ended; inputs sent again go back in
    /// front, as the request was (`Requeue`) or in halves (`Bisect`).
    /// Charges each task of a request its share of the request's bill, by estimated tokens.
    fn bill(&mut self, in_flight: &InFlight, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let weights: Vec<usize> = in_flight.inputs.iter().map(|(_, t)| *t).collect();
        for ((input, _), share) in in_flight.inputs.iter().zip(shares(tokens, &weights)) {
            if let Some(e) = self.embedding(&input.task) {
                e.progress.bill(share);
            }
        }
    }

    /// What one request may carry: the provider's limits, and no more tokens than the rate
    /// budget takes smoothly.
    fn request_limits(&self) -> crate::providers::RequestLimits {
        let mut limits = self.args.embedder.embedder().limits();
        limits.max_tokens_per_request = limits
            .max_tokens_per_request
            .min(self.args.max_request_tokens.max(1));
        limits
    }

    fn apply(&mut self, in_flight: InFlight, actions: Vec<InputAction>) {
        let sends = self.sends_requests();
        let (mut again, mut halves) = (Vec::new(), Vec::new());
        for ((input, tokens), action) in in_flight.inputs.iter().zip(actions) {
            match action {
                InputAction::Resolve(result) => self.resolve(input, result),
                InputAction::Requeue | InputAction::Bisect if !sends => {
                    self.resolve(input, InputResult::Unattempted)
                }
                InputAction::Requeue => {
                    self.unsend(input);
                    again.push((input.clone(), *tokens));
                }
                InputAction::Bisect => {
                    self.unsend(input);
                    halves.push((input.clone(), *tokens));
                }
            }
        }
        if !again.is_empty() {
            self.pending.requeue(again, in_flight.group);
        }
        if !halves.is_empty() {
            tracing::info!(
                inputs = halves.len(),
                "request refused; sending it again in halves to find the input at fault"
            );
            self.pending.bisect(halves);
        }
        let mut entries: Vec<String> = in_flight.inputs.into_iter().map(|(i, _)| i.task).collect();
        entries.dedup();
        for entry in entries {
            self.settle_if_done(&entry);
        }
    }

    /// Every waiting input goes back unattempted (the provider became unusable, or the daemon
    /// is stopping); tasks with nothing left in flight settle.
    fn give_back_pending(&mut self) {
        let waiting = self.pending.take_all();
        if !waiting.is_empty() {
            tracing::info!(
                inputs = waiting.len(),
                "inputs never sent go back with their attempts unchanged"
            );
        }
        let mut touched = Vec::new();
        for input in waiting {
            if let Some(e) = self.embedding(&input.task) {
                e.progress
                    .resolve(&e.inputs[input.index], InputResult::Unattempted);
                touched.push(input.task);
            }
        }
        touched.dedup();
        for entry in touched {
            self.settle_if_done(&entry);
        }
    }

    fn answer_drain(&mut self) {
        if self.tasks.is_empty()
            && let Some(reply) = self.drained.take()
        {
            let _ = reply.send(());
        }
    }
}

impl EmbeddingPool {
    async fn spawn_worker(
        myself: &ActorRef<PoolMsg>,
        state: &mut PoolState,
        index: usize,
    ) -> Result<(), ActorProcessingErr> {
        let mut args = state.args.worker.clone();
        args.index = index;
        let name = myself
            .get_name()
            .and_then(|n| n.rsplit_once('/').map(|(instance, _)| instance.to_owned()))
            .map(|instance| format!("{instance}/{}", worker_role(index)));
        let (worker, _) =
            Actor::spawn_linked(name.clone(), EmbeddingWorker, args, myself.get_cell()).await?;
        state.worker_ids.insert(worker.get_id(), index);
        state.workers[index].actor = Some(worker);
        state
            .args
            .report
            .running(&worker_role(index), name.as_deref().unwrap_or_default());
        Ok(())
    }

    /// Reads a task's items off the actor's thread and sends them back as `Loaded`.
    fn load(myself: &ActorRef<PoolMsg>, state: &PoolState, entry: String, task: &TaskMessage) {
        let store = state.args.store.clone();
        let ids: Vec<_> = task.items.iter().map(|i| i.id.clone()).collect();
        let job = task.job_id;
        let me = myself.clone();
        let _name = myself.get_name().unwrap_or_default();
        tokio::spawn(async move {
            // Queued work of a cancelled job is dropped (acknowledged, not counted).
            if let Ok(Some(JobState::Cancelled)) = store.job_state(job).await {
                let _ = me.cast(PoolMsg::Loaded {
                    entry,
                    loaded: None,
                });
                return;
            }
            let loaded = match crate::fault::fault_store!(&_name, "embedding_worker") {
                Some(reason) => Err(reason),
                None => store.load_task_items(&ids).await.map_err(|e| e.to_string()),
            };
            let _ = me.cast(PoolMsg::Loaded {
                entry,
                loaded: Some(loaded),
            });
        });
    }

    fn loaded(
        state: &mut PoolState,
        entry: String,
        loaded: Option<Result<Vec<LoadedItem>, String>>,
    ) {
        let Some(task) = state.tasks.get_mut(&entry) else {
            return;
        };
        let message = task.delivery.message.clone();
        let rows = match loaded {
            None => {
                let settlement = Settlement {
                    job_id: message.job_id,
                    outcomes: Vec::new(),
                    retries: Vec::new(),
                    billed_tokens: 0,
                };
                let task = state.tasks.remove(&entry).expect("held");
                state.hand_over(task.delivery, settlement);
                return;
            }
            Some(Err(e)) => {
                // The database is down: nothing was tried, so no attempt is used; the whole
                // task comes back after a wait (committed once the database is back).
                tracing::warn!(error = %e, "could not load the task's items; it comes back later");
                let task = state.tasks.remove(&entry).expect("held");
                if !state.draining {
                    let settlement = settle_unloaded(&message, state.args.policy.outage_wait());
                    state.hand_over(task.delivery, settlement);
                }
                return;
            }
            Some(Ok(rows)) => rows,
        };
        let args = &state.args;
        let classified = classify(
            &message,
            rows,
            &args.model,
            &args.policy,
            args.embedder.embedder().as_ref(),
            args.truncate,
        );
        let progress = TaskProgress::new(
            &message,
            classified.outcomes,
            classified.inputs.len(),
            args.policy,
        );
        for (index, input) in classified.inputs.iter().enumerate() {
            let input_ref = InputRef {
                task: entry.clone(),
                index,
                share: Share::of(message.job_id, message.tenant.as_ref()),
                priority: message.priority,
            };
            state
                .pending
                .push_back(input_ref, input.tokens, input.alone);
        }
        task.embedding = Some(Box::new(Embedding {
            inputs: classified.inputs,
            progress,
            in_flight: 0,
        }));
        if !state.sends_requests() {
            state.give_back_pending();
        }
        state.settle_if_done(&entry);
    }

    /// Asks for a permit when a worker is idle and inputs wait (one ask at a time).
    fn dispatch(myself: &ActorRef<PoolMsg>, state: &mut PoolState) {
        if state.permit_asked
            || !state.sends_requests()
            || state.pending.is_empty()
            || state.idle_worker().is_none()
        {
            return;
        }
        let limits = state.request_limits();
        let tokens = state.pending.next_request_tokens(limits).max(1) as u64;
        state.permit_asked = true;
        let embedder = state.args.embedder.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let permit = embedder
                .acquire(tokens, None)
                .await
                .map_err(|e| e.to_string());
            let _ = me.cast(PoolMsg::Permit(permit));
        });
    }

    /// Packs the next request from what waits now and hands it to an idle worker.
    fn send_request(myself: &ActorRef<PoolMsg>, state: &mut PoolState, mut permit: Permit) {
        let Some(index) = state.idle_worker().filter(|_| state.sends_requests()) else {
            return;
        };
        let limits = state.request_limits();
        let packed = state.pending.take_request(limits);
        if packed.inputs.is_empty() {
            return;
        }
        permit.resize(packed.tokens() as u64);
        let group = packed.group;
        let mut inputs = Vec::with_capacity(packed.inputs.len());
        let mut refs = Vec::with_capacity(packed.inputs.len());
        for (input, tokens) in packed.inputs {
            let Some(e) = state.embedding(&input.task) else {
                continue;
            };
            let p = &e.inputs[input.index];
            inputs.push(RequestInput {
                item_id: p.item.id.clone(),
                context_id: p.context_id.clone(),
                content_hash: p.content_hash.clone(),
                text: p.text.clone(),
            });
            e.in_flight += 1;
            refs.push((input, tokens));
        }
        if inputs.is_empty() {
            return;
        }
        state.next_request += 1;
        let request = EmbedRequest {
            id: state.next_request,
            inputs,
        };
        let id = request.id;
        let worker = state.workers[index]
            .actor
            .clone()
            .expect("idle means alive");
        let (reply, answer) = ractor::concurrency::oneshot();
        let sent = worker.cast(WorkerMsg::Embed {
            request,
            permit,
            reply: reply.into(),
        });
        if sent.is_err() {
            // The worker is going down; its supervision event follows. Nothing was sent.
            state.workers[index].actor = None;
            let actions = vec![InputAction::Requeue; refs.len()];
            let unsent = InFlight {
                request: id,
                inputs: refs,
                group,
            };
            state.apply(unsent, actions);
            return;
        }
        state.workers[index].busy = Some(InFlight {
            request: id,
            inputs: refs,
            group,
        });
        let me = myself.clone();
        tokio::spawn(async move {
            // No answer means the worker crashed: its supervision event settles the request.
            if let Ok(answer) = answer.await {
                let _ = me.cast(PoolMsg::Answered {
                    worker: index,
                    request: id,
                    answer,
                });
            }
        });
    }

    fn answered(state: &mut PoolState, worker: usize, request: u64, answer: Answer) {
        let slot = &mut state.workers[worker];
        if slot.busy.as_ref().is_none_or(|b| b.request != request) {
            return;
        }
        let in_flight = slot.busy.take().expect("checked");
        state.bill(&in_flight, answer.billed_tokens);
        let (actions, fatal) = actions_for(answer.outcome, in_flight.inputs.len());
        // The permit closed the gate already (before it was released); this keeps the rule
        // for an answer that came some other way.
        if let Some(reason) = &fatal {
            state.args.gate.close_for_provider(reason);
        }
        state.apply(in_flight, actions);
        if fatal.is_some() {
            state.give_back_pending();
        }
    }

    /// A worker died: the request it held is settled as a crash, and it restarts after its
    /// backoff — unless the budget is spent, and then the pool fails.
    fn worker_down(
        myself: &ActorRef<PoolMsg>,
        state: &mut PoolState,
        cell: &ActorCell,
        reason: String,
    ) -> Result<(), ActorProcessingErr> {
        let Some(index) = state.worker_ids.remove(&cell.get_id()) else {
            return Ok(());
        };
        let role = worker_role(index);
        state.workers[index].actor = None;
        if let Some(in_flight) = state.workers[index].busy.take() {
            tracing::warn!(worker = index, inputs = in_flight.inputs.len(), %reason, "worker crashed mid-request; its items go on alone with attempts raised");
            let crashed = InputResult::Crashed {
                reason: reason.clone(),
            };
            let actions = vec![InputAction::Resolve(crashed); in_flight.inputs.len()];
            state.apply(in_flight, actions);
        }
        if state.draining {
            state.args.report.stopped(&role);
            return Ok(());
        }
        tracing::error!(actor = %role, %reason, "actor failed; restarting it alone");
        state.args.report.failed(&role, reason.clone());
        metrics::counter!("embedq_actor_restarts_total", "actor" => "embedding_worker")
            .increment(1);
        state.args.events.publish(
            "actor_restarted",
            serde_json::json!({"actor": role, "reason": reason}),
        );
        match state.restarts.next(Instant::now()) {
            Some(wait) => {
                myself.send_after(wait, move || PoolMsg::RestartWorker(index));
                Ok(())
            }
            None => Err(format!("embedding workers: {}", state.restarts.spent()).into()),
        }
    }
}

impl Actor for EmbeddingPool {
    type Msg = PoolMsg;
    type State = PoolState;
    type Arguments = PoolArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: PoolArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut gate = args.gate.subscribe();
        let me = myself.clone();
        let gate_watch = tokio::spawn(async move {
            while gate.changed().await.is_ok() {
                if me.cast(PoolMsg::GateChanged).is_err() {
                    return;
                }
            }
        });
        let mut state = PoolState {
            restarts: RestartBudget::new(&args.supervision),
            workers: (0..args.workers).map(|_| WorkerSlot::default()).collect(),
            args,
            tasks: HashMap::new(),
            pending: PendingInputs::default(),
            worker_ids: HashMap::new(),
            permit_asked: false,
            next_request: 0,
            draining: false,
            drained: None,
            gate_watch: Some(gate_watch),
        };
        for index in 0..state.workers.len() {
            Self::spawn_worker(&myself, &mut state, index).await?;
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(watch) = state.gate_watch.take() {
            watch.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::fault::fault_point!(myself);
        match message {
            PoolMsg::Deliver(delivery) => {
                let entry = delivery.entry_id.clone();
                if !state.draining && !state.tasks.contains_key(&entry) {
                    Self::load(&myself, state, entry.clone(), &delivery.message);
                    state.tasks.insert(
                        entry,
                        HeldTask {
                            delivery,
                            embedding: None,
                        },
                    );
                }
            }
            PoolMsg::Loaded { entry, loaded } => Self::loaded(state, entry, loaded),
            PoolMsg::Permit(Ok(permit)) => {
                state.permit_asked = false;
                Self::send_request(&myself, state, permit);
            }
            PoolMsg::Permit(Err(reason)) => {
                state.permit_asked = false;
                tracing::warn!(%reason, "no permit; asking again shortly");
                myself.send_after(Duration::from_millis(200), || PoolMsg::Dispatch);
            }
            PoolMsg::Answered {
                worker,
                request,
                answer,
            } => Self::answered(state, worker, request, answer),
            PoolMsg::RestartWorker(index) => {
                if !state.draining && state.workers[index].actor.is_none() {
                    Self::spawn_worker(&myself, state, index).await?;
                    tracing::info!(actor = %worker_role(index), "actor restarted");
                }
            }
            PoolMsg::GateChanged => {
                if state.args.gate.provider_unusable().is_some() {
                    state.give_back_pending();
                }
            }
            PoolMsg::Dispatch => {}
            PoolMsg::Drain(reply) => {
                state.draining = true;
                state.drained = Some(reply);
                state.give_back_pending();
                let loading: Vec<String> = state
                    .tasks
                    .iter()
                    .filter(|(_, t)| t.embedding.is_none())
                    .map(|(e, _)| e.clone())
                    .collect();
                // Tasks still loading are let go: nothing of theirs was tried.
                for entry in loading {
                    state.tasks.remove(&entry);
                }
            }
        }
        state.answer_drain();
        Self::dispatch(&myself, state);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let result = match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                Self::worker_down(&myself, state, &cell, err.to_string())
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let reason = reason.unwrap_or_else(|| "stopped unexpectedly".into());
                Self::worker_down(&myself, state, &cell, reason)
            }
            _ => Ok(()),
        };
        state.answer_drain();
        Self::dispatch(&myself, state);
        result
    }
}
