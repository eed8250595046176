//! Supervisor: owns the pipeline's actors and decides, in this one place, what happens when
//! one fails. A failed child is restarted alone, after a backoff that doubles with each recent
//! restart, and whoever depended on its in-flight work is told: a restarted planner gets the
//! job intake's pending entries again; a restarted pool or status writer gets the tasks
//! intake's; a restarted worker's task goes back to the pool with its attempts raised. More
//! than `max_restarts` within `restart_window` escalates: the daemon stops with an error so its
//! orchestrator restarts it, instead of looping.

use super::embedding_pool::{EmbeddingPool, PoolArgs, PoolMsg, PoolStart};
use super::embedding_worker::{EmbeddingWorker, WorkerArgs};
use super::intake::{Intake, IntakeArgs, IntakeMsg};
use super::planner::{Planner, PlannerArgs, PlannerMsg};
use super::rate_limiter::{RateLimiter, RateLimiterArgs};
use super::retry_scheduler::RetryScheduler;
use super::status_writer::{StatusWriter, StatusWriterArgs};
use super::supervision_report::SupervisionReport;
use super::vector_writer::VectorWriter;
use crate::config::SupervisionSettings;
use crate::messages::{JobMessage, TaskMessage};
use crate::queue::RetrySet;
use crate::shutdown::Shutdown;
use crate::vectors::VectorStore;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The children, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChildRole {
    VectorWriter,
    RateLimiter,
    StatusWriter,
    Worker(usize),
    Pool,
    RetryScheduler,
    Planner,
    TaskIntake,
    JobIntake,
}

impl ChildRole {
    pub fn name(self) -> String {
        match self {
            Self::VectorWriter => "vector_writer".into(),
            Self::RateLimiter => "rate_limiter".into(),
            Self::StatusWriter => "status_writer".into(),
            Self::Worker(i) => format!("worker-{i}"),
            Self::Pool => "embedding_pool".into(),
            Self::RetryScheduler => "retry_scheduler".into(),
            Self::Planner => "planner".into(),
            Self::TaskIntake => "task_intake".into(),
            Self::JobIntake => "job_intake".into(),
        }
    }
}

/// What the children are built from.
#[derive(Clone)]
pub struct PipelineContext {
    /// Makes actor names unique per daemon instance (tests run several in one process).
    pub instance: String,
    pub job_intake: IntakeArgs,
    pub task_intake: IntakeArgs,
    pub planner: PlannerArgs,
    pub pool: PoolArgs,
    pub worker: WorkerArgs,
    pub workers: usize,
    /// Whether this daemon runs the embedding side of the pipeline.
    pub embed: bool,
    pub rate_limiter: RateLimiterArgs,
    pub status_writer: StatusWriterArgs,
    pub retries: RetrySet,
    pub vectors: Arc<dyn VectorStore>,
}

impl PipelineContext {
    fn halted(&self) -> &std::sync::atomic::AtomicBool {
        &self.worker.ctx.halted
    }
}

impl PipelineContext {
    pub fn actor_name(&self, role: ChildRole) -> String {
        actor_name(&self.instance, role)
    }

    /// Start order: downstream before upstream. Without `embed`, only what planning and
    /// search need.
    fn roles(&self) -> Vec<ChildRole> {
        let mut roles = vec![ChildRole::VectorWriter, ChildRole::RateLimiter];
        if self.embed {
            roles.push(ChildRole::StatusWriter);
            roles.extend((0..self.workers).map(ChildRole::Worker));
            roles.extend([ChildRole::Pool, ChildRole::RetryScheduler]);
        }
        roles.push(ChildRole::Planner);
        if self.embed {
            roles.push(ChildRole::TaskIntake);
        }
        roles.push(ChildRole::JobIntake);
        roles
    }
}

/// The kind of an actor, for metric labels (workers share one label).
fn actor_kind(role: ChildRole) -> &'static str {
    match role {
        ChildRole::VectorWriter => "vector_writer",
        ChildRole::RateLimiter => "rate_limiter",
        ChildRole::StatusWriter => "status_writer",
        ChildRole::Worker(_) => "embedding_worker",
        ChildRole::Pool => "embedding_pool",
        ChildRole::RetryScheduler => "retry_scheduler",
        ChildRole::Planner => "planner",
        ChildRole::TaskIntake => "task_intake",
        ChildRole::JobIntake => "job_intake",
    }
}

/// The registered name of an actor of a daemon instance.
pub fn actor_name(instance: &str, role: ChildRole) -> String {
    format!("{instance}/{}", role.name())
}

pub struct SupervisorArgs {
    pub pipeline: PipelineContext,
    pub policy: SupervisionSettings,
    pub report: Arc<SupervisionReport>,
    pub shutdown: Shutdown,
    pub events: crate::events::EventBus,
}

pub enum SupervisorMsg {
    Restart(ChildRole),
    /// An operator paused intake.
    PauseIntake,
    /// An operator resumed intake (also clears a fatal provider pause).
    ResumeIntake,
    /// The provider is unusable (bad key, no quota): pause intake and say why.
    ProviderFatal(String),
}

pub struct SupervisorState {
    args: SupervisorArgs,
    children: HashMap<ractor::ActorId, ChildRole>,
    cells: HashMap<ChildRole, ActorCell>,
    recent_restarts: VecDeque<Instant>,
}

pub struct Supervisor;

/// How long a shutdown waits for the tasks being embedded to finish.
const SHUTDOWN_DRAIN_DEADLINE: Duration = Duration::from_secs(8);

impl Supervisor {
    async fn spawn_child(
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        role: ChildRole,
    ) -> Result<(), ActorProcessingErr> {
        let p = &state.args.pipeline;
        let name = p.actor_name(role);
        let me = myself.get_cell();
        let cell = match role {
            ChildRole::VectorWriter => {
                Actor::spawn_linked(Some(name.clone()), VectorWriter, p.vectors.clone(), me)
                    .await?
                    .0
                    .get_cell()
            }
            ChildRole::RateLimiter => {
                Actor::spawn_linked(Some(name.clone()), RateLimiter, p.rate_limiter.clone(), me)
                    .await?
                    .0
                    .get_cell()
            }
            ChildRole::StatusWriter => Actor::spawn_linked(
                Some(name.clone()),
                StatusWriter,
                p.status_writer.clone(),
                me,
            )
            .await?
            .0
            .get_cell(),
            ChildRole::Worker(index) => {
                let mut args = p.worker.clone();
                args.index = index;
                Actor::spawn_linked(Some(name.clone()), EmbeddingWorker, args, me)
                    .await?
                    .0
                    .get_cell()
            }
            ChildRole::Pool => {
                let start = PoolStart {
                    args: p.pool.clone(),
                    retry: p.worker.ctx.retry.clone(),
                };
                Actor::spawn_linked(Some(name.clone()), EmbeddingPool, start, me)
                    .await?
                    .0
                    .get_cell()
            }
            ChildRole::RetryScheduler => {
                Actor::spawn_linked(Some(name.clone()), RetryScheduler, p.retries.clone(), me)
                    .await?
                    .0
                    .get_cell()
            }
            ChildRole::Planner => {
                Actor::spawn_linked(Some(name.clone()), Planner, p.planner.clone(), me)
                    .await?
                    .0
                    .get_cell()
            }
            ChildRole::TaskIntake => Actor::spawn_linked(
                Some(name.clone()),
                Intake::<TaskMessage, PoolMsg>::default(),
                p.task_intake.clone(),
                me,
            )
            .await?
            .0
            .get_cell(),
            ChildRole::JobIntake => Actor::spawn_linked(
                Some(name.clone()),
                Intake::<JobMessage, PlannerMsg>::default(),
                p.job_intake.clone(),
                me,
            )
            .await?
            .0
            .get_cell(),
        };
        state.children.insert(cell.get_id(), role);
        state.cells.insert(role, cell);
        state.args.report.running(&role.name(), &name);
        Ok(())
    }

    /// Backoff for the next restart, or `None` when the restart budget is spent.
    fn next_backoff(state: &mut SupervisorState) -> Option<Duration> {
        let policy = &state.args.policy;
        let window = Duration::from_millis(policy.restart_window_ms);
        let now = Instant::now();
        while state
            .recent_restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            state.recent_restarts.pop_front();
        }
        if state.recent_restarts.len() as u32 >= policy.max_restarts {
            return None;
        }
        let exponent = state.recent_restarts.len().min(16) as u32;
        state.recent_restarts.push_back(now);
        let backoff = policy.restart_backoff_ms.saturating_mul(1 << exponent);
        Some(Duration::from_millis(
            backoff.min(policy.max_restart_backoff_ms),
        ))
    }

    fn schedule_restart(
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        role: ChildRole,
        reason: String,
    ) {
        state.args.report.failed(&role.name(), reason.clone());
        match Self::next_backoff(state) {
            Some(backoff) => {
                myself.send_after(backoff, move || SupervisorMsg::Restart(role));
            }
            None => {
                let why = format!(
                    "more than {} restarts within {} ms (last: {} failed: {reason})",
                    state.args.policy.max_restarts,
                    state.args.policy.restart_window_ms,
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
        if state.args.shutdown.is_triggered() {
            state.args.report.stopped(&role.name());
            return;
        }
        tracing::error!(actor = %role.name(), %reason, "actor failed; restarting it alone");
        if let ChildRole::Worker(worker) = role
            && let Some(pool) = state.cells.get(&ChildRole::Pool)
        {
            // Settle what it held now, with attempts raised; it gets work again once restarted.
            let pool: ActorRef<PoolMsg> = pool.clone().into();
            let _ = pool.cast(PoolMsg::WorkerCrashed {
                worker,
                reason: reason.clone(),
            });
        }
        metrics::counter!("embedq_actor_restarts_total", "actor" => actor_kind(role)).increment(1);
        state.args.events.publish(
            "actor_restarted",
            serde_json::json!({"actor": role.name(), "reason": reason}),
        );
        Self::schedule_restart(myself, state, role, reason);
    }

    fn intake(state: &SupervisorState, role: ChildRole) -> Option<ActorRef<IntakeMsg>> {
        state.cells.get(&role).cloned().map(Into::into)
    }

    /// Tells whoever relied on the restarted actor's in-flight work to send it again.
    fn after_restart(state: &SupervisorState, role: ChildRole) {
        match role {
            ChildRole::Planner => {
                if let Some(i) = Self::intake(state, ChildRole::JobIntake) {
                    let _ = i.cast(IntakeMsg::Redeliver);
                }
            }
            ChildRole::Pool | ChildRole::StatusWriter => {
                if let Some(i) = Self::intake(state, ChildRole::TaskIntake) {
                    let _ = i.cast(IntakeMsg::Redeliver);
                }
            }
            ChildRole::Worker(index) => {
                if let Some(pool) = state.cells.get(&ChildRole::Pool) {
                    let pool: ActorRef<PoolMsg> = pool.clone().into();
                    let _ = pool.cast(PoolMsg::WorkerRestarted(index));
                }
            }
            _ => {}
        }
    }

    fn set_intake_paused(state: &SupervisorState, paused: bool) {
        for role in [ChildRole::JobIntake, ChildRole::TaskIntake] {
            if let Some(i) = Self::intake(state, role) {
                let _ = i.cast(if paused {
                    IntakeMsg::Pause
                } else {
                    IntakeMsg::Resume
                });
            }
        }
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
            args,
            children: HashMap::new(),
            cells: HashMap::new(),
            recent_restarts: VecDeque::new(),
        };
        for role in state.args.pipeline.roles() {
            Self::spawn_child(&myself, &mut state, role).await?;
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Graceful shutdown. Upstream first, so nothing new enters; the pool lets go of the
        // tasks it queued and waits (within a deadline) for those its workers are embedding;
        // the status writer commits what it holds and acknowledges it; finally whatever this
        // consumer still has pending is released for the next consumer to take at once
        // rather than after a visibility timeout.
        let wait = Some(Duration::from_secs(5));
        let started = Instant::now();
        let mut roles = state.args.pipeline.roles();
        roles.reverse();
        let mut drained = true;
        for role in roles {
            let Some(cell) = state.cells.remove(&role) else {
                continue;
            };
            state.children.remove(&cell.get_id());
            let stopped = match role {
                ChildRole::Worker(_) if !drained => {
                    // Still embedding past the deadline: their tasks stay pending.
                    cell.kill();
                    true
                }
                ChildRole::Pool => {
                    let pool: ActorRef<PoolMsg> = cell.clone().into();
                    let answer = pool
                        .call(PoolMsg::Drain, Some(SHUTDOWN_DRAIN_DEADLINE))
                        .await;
                    drained = matches!(answer, Ok(ractor::rpc::CallResult::Success(())));
                    if !drained {
                        tracing::warn!(
                            "tasks in flight did not finish within {SHUTDOWN_DRAIN_DEADLINE:?}; they will be taken again"
                        );
                    }
                    cell.stop_and_wait(Some("shutdown".into()), wait)
                        .await
                        .is_ok()
                }
                ChildRole::StatusWriter => cell.drain_and_wait(wait).await.is_ok(),
                _ => cell
                    .stop_and_wait(Some("shutdown".into()), wait)
                    .await
                    .is_ok(),
            };
            if !stopped {
                tracing::warn!(actor = %role.name(), "did not stop in time");
            }
            state.args.report.stopped(&role.name());
        }
        myself.stop_children(Some("shutdown".into()));
        let p = &state.args.pipeline;
        let mut ackers = vec![&p.job_intake.acker];
        if p.embed {
            ackers.push(&p.task_intake.acker);
        }
        for acker in ackers {
            let released = match acker.own_pending(10_000).await {
                Ok(ids) => acker.release(&ids, p.task_intake.visibility_timeout).await,
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
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Restart(role) => {
                if state.args.shutdown.is_triggered() || state.cells.contains_key(&role) {
                    return Ok(());
                }
                if let Err(e) = Self::spawn_child(&myself, state, role).await {
                    tracing::error!(actor = %role.name(), error = %e, "restart failed; trying again");
                    Self::schedule_restart(&myself, state, role, e.to_string());
                    return Ok(());
                }
                tracing::info!(actor = %role.name(), "actor restarted");
                Self::after_restart(state, role);
            }
            SupervisorMsg::PauseIntake => {
                state
                    .args
                    .report
                    .set_paused(Some("paused by an operator".into()));
                Self::set_intake_paused(state, true);
                state.args.events.publish(
                    "paused",
                    serde_json::json!({"reason": "paused by an operator"}),
                );
            }
            SupervisorMsg::ResumeIntake => {
                state.args.report.set_paused(None);
                state
                    .args
                    .pipeline
                    .halted()
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                if let Some(pool) = state.cells.get(&ChildRole::Pool) {
                    let pool: ActorRef<PoolMsg> = pool.clone().into();
                    let _ = pool.cast(PoolMsg::Hold(false));
                }
                Self::set_intake_paused(state, false);
                state.args.events.publish("resumed", serde_json::json!({}));
            }
            SupervisorMsg::ProviderFatal(reason) => {
                // The first reason is the one that explains the pause.
                let already = state
                    .args
                    .report
                    .paused()
                    .is_some_and(|p| p.starts_with("provider unusable"));
                if !already {
                    tracing::error!(%reason, "pausing intake until an operator resumes it");
                    state
                        .args
                        .report
                        .set_paused(Some(format!("provider unusable: {reason}")));
                    state.args.events.publish(
                        "paused",
                        serde_json::json!({"reason": format!("provider unusable: {reason}")}),
                    );
                }
                Self::set_intake_paused(state, true);
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
