//! Embedding pool: receives task deliveries from the tasks intake and hands each to an idle
//! worker. It keeps every delivery (and with it the intake credit and the claim on its entry)
//! until the worker's settlement goes to the status writer, so a worker that crashes loses
//! nothing: its task is settled as a failed attempt of every item in it, each item sent on
//! alone with its attempt count raised — a poison item that crashes its worker every time runs
//! out of attempts and ends FAILED with the reason, and the items that shared its task are not
//! dragged down with it.

use super::embedding_worker::{WorkerMsg, backoff};
use super::status_writer::{Settled, StatusMsg};
use super::supervisor::SupervisorMsg;
use crate::config::RetrySettings;
use crate::messages::{ItemOutcome, OutcomeKind, Settlement, TaskMessage};
use crate::queue::Delivery;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::{BTreeSet, HashMap, VecDeque};

pub enum PoolMsg {
    Deliver(Delivery<TaskMessage>),
    Finished {
        worker: usize,
        entry_id: String,
        settlement: Settlement,
    },
    /// A worker crashed (`reason`) while holding whatever it was assigned.
    WorkerCrashed {
        worker: usize,
        reason: String,
    },
    /// The supervisor restarted a worker: it can take work again.
    WorkerRestarted(usize),
    /// Stop (true) or restart (false) handing out tasks; held deliveries stay queued.
    Hold(bool),
    /// Shutting down: hand out nothing more, let go of queued deliveries (their entries stay
    /// pending for whoever comes next), and answer once every assigned task has settled.
    Drain(RpcReplyPort<()>),
}

impl From<Delivery<TaskMessage>> for PoolMsg {
    fn from(d: Delivery<TaskMessage>) -> Self {
        Self::Deliver(d)
    }
}

#[derive(Clone)]
pub struct PoolArgs {
    /// Registered names of the workers, by index.
    pub workers: Vec<String>,
    pub status_writer: String,
    pub supervisor: String,
}

/// What the pool starts from: its names, and the retry policy that decides what a worker's
/// crash costs the items it held.
#[derive(Clone)]
pub struct PoolStart {
    pub args: PoolArgs,
    pub retry: RetrySettings,
}

pub struct PoolState {
    args: PoolArgs,
    retry: RetrySettings,
    queue: VecDeque<Delivery<TaskMessage>>,
    assigned: HashMap<usize, Delivery<TaskMessage>>,
    idle: BTreeSet<usize>,
    held: bool,
    drained: Option<RpcReplyPort<()>>,
}

pub struct EmbeddingPool;

/// The settlement of a task whose worker crashed: every item used an attempt; those with
/// attempts left go on alone (one retry task each), the others end FAILED with the reason.
pub fn crash_settlement(retry: &RetrySettings, task: &TaskMessage, reason: &str) -> Settlement {
    let mut outcomes = Vec::with_capacity(task.items.len());
    let mut retries = Vec::new();
    for item in &task.items {
        let attempts = item.attempt.saturating_add(1);
        let kind = if attempts > retry.max_retries {
            OutcomeKind::Failed {
                reason: format!(
                    "the embedding worker crashed while holding it ({attempts} attempts); last crash: {reason}"
                ),
            }
        } else {
            retries.push((
                TaskMessage {
                    job_id: task.job_id,
                    items: vec![crate::messages::TaskItem {
                        id: item.id.clone(),
                        attempt: attempts,
                    }],
                },
                backoff(retry, attempts - 1),
            ));
            OutcomeKind::Retrying {
                reason: format!("the embedding worker crashed: {reason}"),
            }
        };
        outcomes.push(ItemOutcome {
            item_id: item.id.clone(),
            kind,
            attempts,
        });
    }
    Settlement {
        job_id: task.job_id,
        outcomes,
        retries,
        fatal: None,
    }
}

impl EmbeddingPool {
    fn holds(state: &PoolState, entry_id: &str) -> bool {
        state.queue.iter().any(|d| d.entry_id == entry_id)
            || state.assigned.values().any(|d| d.entry_id == entry_id)
    }

    fn dispatch(state: &mut PoolState) {
        while !state.held && state.drained.is_none() && !state.queue.is_empty() {
            let Some(worker) = state.idle.pop_first() else {
                return;
            };
            let delivery = state.queue.pop_front().expect("not empty");
            let Some(actor) = ActorRef::<WorkerMsg>::where_is(state.args.workers[worker].clone())
            else {
                // Restarting: it is marked idle again when the supervisor reports it.
                state.queue.push_front(delivery);
                continue;
            };
            let work = WorkerMsg::Work {
                entry_id: delivery.entry_id.clone(),
                task: delivery.message.clone(),
            };
            if actor.send_message(work).is_err() {
                state.queue.push_front(delivery);
                continue;
            }
            state.assigned.insert(worker, delivery);
        }
    }

    /// Hands a settled delivery to the status writer (which commits, then acknowledges).
    fn settle(state: &mut PoolState, delivery: Delivery<TaskMessage>, settlement: Settlement) {
        if settlement.fatal.is_some() {
            state.held = true;
        }
        if let Some(reason) = &settlement.fatal
            && let Some(sup) = ActorRef::<SupervisorMsg>::where_is(state.args.supervisor.clone())
        {
            let _ = sup.cast(SupervisorMsg::ProviderFatal(reason.clone()));
        }
        match ActorRef::<StatusMsg>::where_is(state.args.status_writer.clone()) {
            Some(writer) => {
                let _ = writer.cast(StatusMsg::Settle(Box::new(Settled {
                    delivery,
                    settlement,
                })));
            }
            None => {
                tracing::warn!("the status writer is restarting; the task will be redelivered")
            }
        }
    }

    fn answer_drain(state: &mut PoolState) {
        if state.assigned.is_empty()
            && let Some(reply) = state.drained.take()
        {
            let _ = reply.send(());
            // Stay drained: nothing more is handed out.
            state.held = true;
        }
    }
}

impl Actor for EmbeddingPool {
    type Msg = PoolMsg;
    type State = PoolState;
    type Arguments = PoolStart;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        start: PoolStart,
    ) -> Result<Self::State, ActorProcessingErr> {
        let idle = (0..start.args.workers.len()).collect();
        Ok(PoolState {
            args: start.args,
            retry: start.retry,
            queue: VecDeque::new(),
            assigned: HashMap::new(),
            idle,
            held: false,
            drained: None,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::fault::fault_point!(_myself);
        match message {
            PoolMsg::Deliver(delivery) => {
                if !Self::holds(state, &delivery.entry_id) {
                    state.queue.push_back(delivery);
                }
            }
            PoolMsg::Finished {
                worker,
                entry_id,
                settlement,
            } => {
                let held = state.assigned.remove(&worker);
                state.idle.insert(worker);
                match held {
                    Some(delivery) if delivery.entry_id == entry_id => {
                        Self::settle(state, delivery, settlement);
                    }
                    other => {
                        // A report about a task this worker no longer holds here (this pool
                        // restarted while the worker worked). Keep what the worker holds now;
                        // if the finished entry came back and waits in the queue, it is done:
                        // settle it instead of embedding it again.
                        if let Some(other) = other {
                            state.idle.remove(&worker);
                            state.assigned.insert(worker, other);
                        }
                        if let Some(i) = state.queue.iter().position(|d| d.entry_id == entry_id) {
                            let delivery = state.queue.remove(i).expect("position is valid");
                            Self::settle(state, delivery, settlement);
                        }
                    }
                }
            }
            PoolMsg::WorkerCrashed { worker, reason } => {
                state.idle.remove(&worker);
                if let Some(delivery) = state.assigned.remove(&worker) {
                    tracing::warn!(worker, entry = %delivery.entry_id, items = delivery.message.items.len(), %reason, "worker crashed on a task; its items go on alone with attempts raised");
                    let settlement = crash_settlement(&state.retry, &delivery.message, &reason);
                    Self::settle(state, delivery, settlement);
                }
            }
            PoolMsg::WorkerRestarted(worker) => {
                if !state.assigned.contains_key(&worker) {
                    state.idle.insert(worker);
                }
            }
            PoolMsg::Hold(held) => state.held = held,
            PoolMsg::Drain(reply) => {
                let dropped = state.queue.len();
                state.queue.clear();
                if dropped > 0 {
                    tracing::info!(
                        dropped,
                        "shutting down: queued tasks left pending for the next consumer"
                    );
                }
                state.drained = Some(reply);
            }
        }
        Self::answer_drain(state);
        Self::dispatch(state);
        Ok(())
    }
}
