//! Embedding pool: receives task deliveries from the tasks intake and hands each to an idle
//! worker. It keeps every delivery (and with it the intake credit) until the worker's
//! settlement goes to the status writer, so a worker that crashes loses nothing: its task is
//! queued again with every item's attempt count raised — a poison task that crashes its worker
//! every time runs out of attempts instead of crashing forever.

use super::embedding_worker::WorkerMsg;
use super::status_writer::{Settled, StatusMsg};
use super::supervisor::SupervisorMsg;
use crate::messages::{Settlement, TaskMessage};
use crate::queue::Delivery;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::{BTreeSet, HashMap, VecDeque};

pub enum PoolMsg {
    Deliver(Delivery<TaskMessage>),
    Finished {
        worker: usize,
        entry_id: String,
        settlement: Settlement,
    },
    /// The supervisor restarted a worker: whatever it held is queued again.
    WorkerRestarted(usize),
    /// Stop (true) or restart (false) handing out tasks; held deliveries stay queued.
    Hold(bool),
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

pub struct PoolState {
    args: PoolArgs,
    queue: VecDeque<Delivery<TaskMessage>>,
    assigned: HashMap<usize, Delivery<TaskMessage>>,
    idle: BTreeSet<usize>,
    held: bool,
}

pub struct EmbeddingPool;

impl EmbeddingPool {
    fn holds(state: &PoolState, entry_id: &str) -> bool {
        state.queue.iter().any(|d| d.entry_id == entry_id)
            || state.assigned.values().any(|d| d.entry_id == entry_id)
    }

    fn dispatch(state: &mut PoolState) {
        while !state.held && !state.queue.is_empty() {
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
}

impl Actor for EmbeddingPool {
    type Msg = PoolMsg;
    type State = PoolState;
    type Arguments = PoolArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: PoolArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let idle = (0..args.workers.len()).collect();
        Ok(PoolState {
            args,
            queue: VecDeque::new(),
            assigned: HashMap::new(),
            idle,
            held: false,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
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
                        if settlement.fatal.is_some() {
                            state.held = true;
                        }
                        if let Some(reason) = &settlement.fatal
                            && let Some(sup) =
                                ActorRef::<SupervisorMsg>::where_is(state.args.supervisor.clone())
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
                            None => tracing::warn!(
                                "the status writer is restarting; the task will be redelivered"
                            ),
                        }
                    }
                    // A report about a task this worker no longer holds: keep what it holds.
                    Some(other) => {
                        state.idle.remove(&worker);
                        state.assigned.insert(worker, other);
                    }
                    None => {}
                }
            }
            PoolMsg::Hold(held) => state.held = held,
            PoolMsg::WorkerRestarted(worker) => {
                if let Some(mut delivery) = state.assigned.remove(&worker) {
                    for item in &mut delivery.message.items {
                        item.attempt = item.attempt.saturating_add(1);
                    }
                    tracing::warn!(worker, entry = %delivery.entry_id, "worker crashed on a task; queued again with attempts raised");
                    state.queue.push_front(delivery);
                }
                state.idle.insert(worker);
            }
        }
        Self::dispatch(state);
        Ok(())
    }
}
