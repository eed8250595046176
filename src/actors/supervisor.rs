//! Supervisor: owns the pipeline's actors and decides, in this one place, what happens when
//! one of them fails. A failed child is restarted alone, after the backoff of its
//! [`RestartBudget`], its [`Address`] emptied meanwhile, and whoever depended on its in-flight
//! work is told: a restarted planner gets the job intake's pending entries again; a restarted
//! pool or status writer gets every tasks intake's (one per priority). (The embedding workers are the pool's
//! children: it restarts them itself.) A spent budget escalates: the daemon stops with an
//! error so its orchestrator restarts it, instead of looping.
//!
//! It also runs the graceful shutdown, stage by stage within one [`ShutdownPlan`].

use super::address::Address;
use super::embedding_pool::{EmbeddingPool, PoolArgs, PoolMsg};
use super::intake::{Intake, IntakeArgs, IntakeMsg};
use super::planner::{Planner, PlannerArgs, PlannerMsg};
use super::rate_limiter::{RateLimiter, RateLimiterArgs, RateLimiterMsg};
use super::reconciler::{Reconciler, ReconcilerArgs};
use super::restarts::RestartBudget;
use super::retry_scheduler::{RetryScheduler, RetrySchedulerMsg};
use super::scheduler::{Scheduler, SchedulerArgs};
use super::status_writer::{StatusMsg, StatusWriter, StatusWriterArgs};
use super::supervision_report::SupervisionReport;
use super::vector_writer::{VectorWriter, VectorWriterArgs, VectorWriterMsg};
use crate::config::SupervisionSettings;
use crate::domain::Priority;
use crate::events::EventBus;
use crate::gate::PipelineGate;
use crate::messages::{JobMessage, TaskMessage};
use crate::queue::{RetrySet, StreamAcker};
use crate::shutdown::{Shutdown, ShutdownPlan};
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// The supervisor's children, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChildRole {
    VectorWriter,
    RateLimiter,
    StatusWriter,
    Pool,
    RetryScheduler,
    Planner,
    Reconciler,
    Scheduler,
    /// The intake of one priority's tasks stream.
    TaskIntake(Priority),
    JobIntake,
}

impl ChildRole {
    /// The role's name: in the actor tree, in metrics, in fault rules, and (after the daemon's
    /// instance) as the actor's registered name.
    pub fn name(self) -> &'static str {
        match self {
            Self::VectorWriter => "vector_writer",
            Self::RateLimiter => "rate_limiter",
            Self::StatusWriter => "status_writer",
            Self::Pool => "embedding_pool",
            Self::RetryScheduler => "retry_scheduler",
            Self::Planner => "planner",
            Self::Reconciler => "reconciler",
            Self::Scheduler => "scheduler",
            Self::TaskIntake(Priority::Interactive) => "task_intake_interactive",
            Self::TaskIntake(Priority::Normal) => "task_intake",
            Self::TaskIntake(Priority::Bulk) => "task_intake_bulk",
            Self::JobIntake => "job_intake",
        }
    }
}

/// Where each actor of the pipeline can be reached; the supervisor keeps them current.
#[derive(Clone)]
pub struct Addresses {
    pub job_intake: Address<IntakeMsg>,
    /// One per priority, in [`Priority::ALL`]'s order.
    pub task_intakes: [Address<IntakeMsg>; 3],
    pub planner: Address<PlannerMsg>,
    pub pool: Address<PoolMsg>,
    pub rate_limiter: Address<RateLimiterMsg>,
    pub vector_writer: Address<VectorWriterMsg>,
    pub status_writer: Address<StatusMsg>,
    pub retry_scheduler: Address<RetrySchedulerMsg>,
}

impl Default for Addresses {
    fn default() -> Self {
        Self {
            job_intake: Address::new("job intake"),
            task_intakes: [
                Address::new("interactive tasks intake"),
                Address::new("tasks intake"),
                Address::new("bulk tasks intake"),
            ],
            planner: Address::new("planner"),
            pool: Address::new("embedding pool"),
            rate_limiter: Address::new("rate limiter"),
            vector_writer: Address::new("vector writer"),
            status_writer: Address::new("status writer"),
            retry_scheduler: Address::new("retry scheduler"),
        }
    }
}

impl Addresses {
    fn clear(&self, role: ChildRole) {
        match role {
            ChildRole::VectorWriter => self.vector_writer.clear(),
            ChildRole::RateLimiter => self.rate_limiter.clear(),
            ChildRole::StatusWriter => self.status_writer.clear(),
            ChildRole::Pool => self.pool.clear(),
            ChildRole::RetryScheduler => self.retry_scheduler.clear(),
            ChildRole::Planner => self.planner.clear(),
            ChildRole::TaskIntake(p) => self.task_intakes[p.rank()].clear(),
            ChildRole::JobIntake => self.job_intake.clear(),
            // Nobody sends to it.
            ChildRole::Reconciler | ChildRole::Scheduler => {}
        }
    }
}

/// What the children are built from (cloned again for each restart).
#[derive(Clone)]
pub struct Children {
    /// Prefixes the actors' registered names (tests run several daemons in one process).
    pub instance: String,
    pub job_intake: IntakeArgs<PlannerMsg>,
    pub planner: PlannerArgs,
    pub reconciler: ReconcilerArgs,
    pub scheduler: SchedulerArgs,
    pub vector_writer: VectorWriterArgs,
    pub rate_limiter: RateLimiterArgs,
    /// The embedding side; `None` on a planner-only daemon (`pipeline.embed = false`).
    pub embedding: Option<EmbeddingChildren>,
}

#[derive(Clone)]
pub struct EmbeddingChildren {
    /// One intake per priority, in [`Priority::ALL`]'s order.
    pub task_intakes: [IntakeArgs<PoolMsg>; 3],
    pub pool: PoolArgs,
    pub status_writer: StatusWriterArgs,
    pub retries: RetrySet,
}

impl Children {
    /// Start order: downstream before upstream.
    fn roles(&self) -> Vec<ChildRole> {
        let mut roles = vec![ChildRole::VectorWriter, ChildRole::RateLimiter];
        if self.embedding.is_some() {
            roles.extend([
                ChildRole::StatusWriter,
                ChildRole::Pool,
                ChildRole::RetryScheduler,
            ]);
        }
        roles.extend([
            ChildRole::Planner,
            ChildRole::Reconciler,
            ChildRole::Scheduler,
        ]);
        if self.embedding.is_some() {
            roles.extend(Priority::ALL.map(ChildRole::TaskIntake));
        }
        roles.push(ChildRole::JobIntake);
        roles
    }

    /// The stream ackers whose unfinished entries are released at shutdown.
    fn ackers(&self) -> Vec<&StreamAcker> {
        let mut ackers = vec![&self.job_intake.acker];
        if let Some(e) = &self.embedding {
            ackers.extend(e.task_intakes.iter().map(|i| &i.acker));
        }
        ackers
    }
}

pub struct SupervisorArgs {
    pub children: Children,
    pub addresses: Addresses,
    pub policy: SupervisionSettings,
    pub report: Arc<SupervisionReport>,
    pub shutdown: Shutdown,
    pub events: EventBus,
    pub gate: PipelineGate,
}

pub enum SupervisorMsg {
    /// Start a failed child again once its backoff has passed (self-sent).
    Restart(ChildRole),
    /// Stop the pipeline gracefully within the plan; answers when done.
    Shutdown(ShutdownPlan, RpcReplyPort<()>),
}

pub struct SupervisorState {
    args: SupervisorArgs,
    children: HashMap<ActorId, ChildRole>,
    cells: HashMap<ChildRole, ActorCell>,
    restarts: RestartBudget,
    stopping: bool,
}

pub struct Supervisor;

impl Supervisor {
    async fn spawn_child(
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        role: ChildRole,
    ) -> Result<(), ActorProcessingErr> {
        let c = &state.args.children;
        let a = &state.args.addresses;
        let name = Some(format!("{}/{}", c.instance, role.name()));
        let me = myself.get_cell();
        let embedding = || {
            c.embedding
                .as_ref()
                .ok_or_else(|| ActorProcessingErr::from("no embedding side on this daemon"))
        };
        let cell = match role {
            ChildRole::VectorWriter => {
                let (actor, _) =
                    Actor::spawn_linked(name, VectorWriter, c.vector_writer.clone(), me).await?;
                a.vector_writer.set(actor.clone());
                actor.get_cell()
            }
            ChildRole::RateLimiter => {
                let (actor, _) =
                    Actor::spawn_linked(name, RateLimiter, c.rate_limiter.clone(), me).await?;
                a.rate_limiter.set(actor.clone());
                actor.get_cell()
            }
            ChildRole::StatusWriter => {
                let args = embedding()?.status_writer.clone();
                let (actor, _) = Actor::spawn_linked(name, StatusWriter, args, me).await?;
                a.status_writer.set(actor.clone());
                actor.get_cell()
            }
            ChildRole::Pool => {
                let args = embedding()?.pool.clone();
                let (actor, _) = Actor::spawn_linked(name, EmbeddingPool, args, me).await?;
                a.pool.set(actor.clone());
                actor.get_cell()
            }
            ChildRole::RetryScheduler => {
                let args = embedding()?.retries.clone();
                let (actor, _) = Actor::spawn_linked(name, RetryScheduler, args, me).await?;
                a.retry_scheduler.set(actor.clone());
                actor.get_cell()
            }
            ChildRole::Planner => {
                let (actor, _) = Actor::spawn_linked(name, Planner, c.planner.clone(), me).await?;
                a.planner.set(actor.clone());
                actor.get_cell()
            }
            ChildRole::Reconciler => {
                let (actor, _) =
                    Actor::spawn_linked(name, Reconciler, c.reconciler.clone(), me).await?;
                actor.get_cell()
            }
            ChildRole::Scheduler => {
                let (actor, _) =
                    Actor::spawn_linked(name, Scheduler, c.scheduler.clone(), me).await?;
                actor.get_cell()
            }
            ChildRole::TaskIntake(priority) => {
                let args = embedding()?.task_intakes[priority.rank()].clone();
                let intake = Intake::<TaskMessage, PoolMsg>::default();
                let (actor, _) = Actor::spawn_linked(name, intake, args, me).await?;
                a.task_intakes[priority.rank()].set(actor.clone());
                actor.get_cell()
            }
            ChildRole::JobIntake => {
                let intake = Intake::<JobMessage, PlannerMsg>::default();
                let (actor, _) =
                    Actor::spawn_linked(name, intake, c.job_intake.clone(), me).await?;
                a.job_intake.set(actor.clone());
                actor.get_cell()
            }
        };
        state.children.insert(cell.get_id(), role);
        state
            .args
            .report
            .running(role.name(), &cell.get_name().unwrap_or_default());
        state.cells.insert(role, cell);
        Ok(())
    }

    fn schedule_restart(
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        role: ChildRole,
        reason: String,
    ) {
        state.args.report.failed(role.name(), reason.clone());
        match state.restarts.next(Instant::now()) {
            Some(backoff) => {
                myself.send_after(backoff, move || SupervisorMsg::Restart(role));
            }
            None => {
                let why = format!(
                    "{} (last: {} failed: {reason})",
                    state.restarts.spent(),
                    role.name()
                );
                tracing::error!(%why, "supervision gives up; stopping the daemon");
                state.args.report.escalate(why);
                state.args.shutdown.trigger();
            }
        }
    }

    fn child_down(
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        cell: &ActorCell,
        reason: String,
    ) {
        let Some(role) = state.children.remove(&cell.get_id()) else {
            return;
        };
        state.cells.remove(&role);
        state.args.addresses.clear(role);
        if state.stopping || state.args.shutdown.is_triggered() {
            state.args.report.stopped(role.name());
            return;
        }
        tracing::error!(actor = role.name(), %reason, "actor failed; restarting it alone");
        metrics::counter!("embedq_actor_restarts_total", "actor" => role.name()).increment(1);
        state.args.events.publish(
            "actor_restarted",
            serde_json::json!({"actor": role.name(), "reason": reason}),
        );
        Self::schedule_restart(myself, state, role, reason);
    }

    /// Tells whoever relied on the restarted actor's in-flight work to send it again.
    fn after_restart(state: &SupervisorState, role: ChildRole) {
        let a = &state.args.addresses;
        let intakes: Vec<&Address<IntakeMsg>> = match role {
            ChildRole::Planner => vec![&a.job_intake],
            ChildRole::Pool | ChildRole::StatusWriter => a.task_intakes.iter().collect(),
            _ => return,
        };
        for intake in intakes {
            let _ = intake.cast(IntakeMsg::Redeliver);
        }
    }

    /// Stops one child within `wait`; says so when it did not stop in time.
    async fn stop_child(
        state: &mut SupervisorState,
        role: ChildRole,
        wait: std::time::Duration,
        drain: bool,
    ) {
        let Some(cell) = state.cells.remove(&role) else {
            return;
        };
        state.children.remove(&cell.get_id());
        state.args.addresses.clear(role);
        let stopped = if drain {
            cell.drain_and_wait(Some(wait)).await.is_ok()
        } else {
            cell.stop_and_wait(Some("shutdown".into()), Some(wait))
                .await
                .is_ok()
        };
        if !stopped {
            tracing::warn!(actor = role.name(), "did not stop in time");
            cell.kill();
        }
        state.args.report.stopped(role.name());
    }

    /// The graceful shutdown. Upstream first, so nothing new enters; the pool sends nothing
    /// more and waits (within the plan) for the requests in flight; the status writer commits
    /// what it holds and acknowledges it; finally whatever this consumer still has pending is
    /// released for the next consumer to take at once rather than after a visibility timeout.
    async fn shut_down(state: &mut SupervisorState, plan: ShutdownPlan) {
        state.stopping = true;
        state.args.gate.drain();
        let started = Instant::now();
        for role in [
            ChildRole::Scheduler,
            ChildRole::JobIntake,
            ChildRole::TaskIntake(Priority::Interactive),
            ChildRole::TaskIntake(Priority::Normal),
            ChildRole::TaskIntake(Priority::Bulk),
            ChildRole::Reconciler,
            ChildRole::Planner,
        ] {
            Self::stop_child(state, role, plan.actors(), false).await;
        }
        if state.cells.contains_key(&ChildRole::Pool) {
            let answer = state
                .args
                .addresses
                .pool
                .call(PoolMsg::Drain, Some(plan.in_flight()))
                .await;
            if answer.is_err() {
                tracing::warn!(
                    "requests in flight did not finish within the shutdown plan; their tasks will be taken again"
                );
            }
            Self::stop_child(state, ChildRole::Pool, plan.actors(), false).await;
        }
        Self::stop_child(state, ChildRole::RetryScheduler, plan.actors(), false).await;
        Self::stop_child(state, ChildRole::StatusWriter, plan.actors(), true).await;
        for role in [ChildRole::RateLimiter, ChildRole::VectorWriter] {
            Self::stop_child(state, role, plan.actors(), false).await;
        }
        let visibility = state.args.children.job_intake.visibility_timeout;
        for acker in state.args.children.ackers() {
            let released = match acker.own_pending(10_000).await {
                Ok(ids) => acker.release(&ids, visibility).await,
                Err(e) => Err(e),
            };
            match released {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(stream = %acker.stream(), released = n, "unfinished entries released for the next consumer")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not release unfinished entries; they are reclaimed after the visibility timeout")
                }
            }
        }
        tracing::info!(took = ?started.elapsed(), "pipeline stopped");
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            restarts: RestartBudget::new(&args.policy),
            args,
            children: HashMap::new(),
            cells: HashMap::new(),
            stopping: false,
        };
        for role in state.args.children.roles() {
            Self::spawn_child(&myself, &mut state, role).await?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Restart(role) => {
                if state.stopping
                    || state.args.shutdown.is_triggered()
                    || state.cells.contains_key(&role)
                {
                    return Ok(());
                }
                if let Err(e) = Self::spawn_child(&myself, state, role).await {
                    tracing::error!(actor = role.name(), error = %e, "restart failed; trying again");
                    Self::schedule_restart(&myself, state, role, e.to_string());
                    return Ok(());
                }
                tracing::info!(actor = role.name(), "actor restarted");
                Self::after_restart(state, role);
            }
            SupervisorMsg::Shutdown(plan, reply) => {
                Self::shut_down(state, plan).await;
                let _ = reply.send(());
                myself.stop(Some("shutdown".into()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                Self::child_down(&myself, state, &cell, err.to_string());
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let reason = reason.unwrap_or_else(|| "stopped unexpectedly".into());
                Self::child_down(&myself, state, &cell, reason);
            }
            _ => {}
        }
        Ok(())
    }
}
