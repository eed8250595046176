//! Supervisor: owns the pipeline's actors and decides, in this one place, what happens when
//! one fails. A failed child is restarted alone, after a backoff that doubles with each recent
//! restart; a downstream that restarted gets its upstream's pending entries again; more than
//! `max_restarts` within `restart_window` escalates: the daemon stops with an error so its
//! orchestrator can restart it, instead of looping.

use super::intake::{Intake, IntakeArgs, IntakeHealth, IntakeMsg};
use super::planner::{Planner, PlannerArgs, PlannerMsg};
use super::supervision_report::SupervisionReport;
use crate::config::SupervisionSettings;
use crate::messages::JobMessage;
use crate::shutdown::Shutdown;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The children, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChildRole {
    JobIntake,
    Planner,
}

impl ChildRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JobIntake => "job_intake",
            Self::Planner => "planner",
        }
    }

    /// Start order: downstream before upstream.
    const ALL: [ChildRole; 2] = [ChildRole::Planner, ChildRole::JobIntake];
}

/// What the children are built from.
#[derive(Clone)]
pub struct PipelineContext {
    /// Makes actor names unique per daemon instance (tests run several in one process).
    pub instance: String,
    pub job_intake: IntakeArgs,
    pub planner: PlannerArgs,
    pub job_intake_health: Arc<IntakeHealth>,
}

impl PipelineContext {
    pub fn actor_name(&self, role: ChildRole) -> String {
        format!("{}/{}", self.instance, role.as_str())
    }
}

pub struct SupervisorArgs {
    pub pipeline: PipelineContext,
    pub policy: SupervisionSettings,
    pub report: Arc<SupervisionReport>,
    pub shutdown: Shutdown,
}

pub enum SupervisorMsg {
    Restart(ChildRole),
    PauseIntake,
    ResumeIntake,
}

pub struct SupervisorState {
    args: SupervisorArgs,
    children: HashMap<ractor::ActorId, ChildRole>,
    cells: HashMap<ChildRole, ActorCell>,
    recent_restarts: VecDeque<Instant>,
}

pub struct Supervisor;

impl Supervisor {
    async fn spawn_child(
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        role: ChildRole,
    ) -> Result<(), ActorProcessingErr> {
        let name = state.args.pipeline.actor_name(role);
        let cell = match role {
            ChildRole::Planner => {
                let (actor, _) = Actor::spawn_linked(
                    Some(name.clone()),
                    Planner,
                    state.args.pipeline.planner.clone(),
                    myself.get_cell(),
                )
                .await?;
                actor.get_cell()
            }
            ChildRole::JobIntake => {
                let (actor, _) = Actor::spawn_linked(
                    Some(name.clone()),
                    Intake::<JobMessage, PlannerMsg>::default(),
                    state.args.pipeline.job_intake.clone(),
                    myself.get_cell(),
                )
                .await?;
                actor.get_cell()
            }
        };
        state.children.insert(cell.get_id(), role);
        state.cells.insert(role, cell);
        state.args.report.running(role.as_str(), &name);
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
            state.args.report.stopped(role.as_str());
            return;
        }
        tracing::error!(actor = role.as_str(), %reason, "actor failed; restarting it alone");
        state.args.report.failed(role.as_str(), reason.clone());
        match Self::next_backoff(state) {
            Some(backoff) => {
                myself.send_after(backoff, move || SupervisorMsg::Restart(role));
            }
            None => {
                let why = format!(
                    "more than {} restarts within {} ms (last: {} failed: {reason})",
                    state.args.policy.max_restarts,
                    state.args.policy.restart_window_ms,
                    role.as_str()
                );
                tracing::error!(%why, "supervision gives up; stopping the daemon");
                state.args.report.escalate(why);
                state.args.shutdown.trigger();
            }
        }
    }

    fn intake(state: &SupervisorState) -> Option<ActorRef<IntakeMsg>> {
        state
            .cells
            .get(&ChildRole::JobIntake)
            .cloned()
            .map(Into::into)
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
        for role in ChildRole::ALL {
            Self::spawn_child(&myself, &mut state, role).await?;
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Upstream first, so nothing new is delivered to a stopping downstream.
        for role in [ChildRole::JobIntake, ChildRole::Planner] {
            if let Some(cell) = state.cells.remove(&role) {
                state.children.remove(&cell.get_id());
                let _ = cell
                    .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(10)))
                    .await;
                state.args.report.stopped(role.as_str());
            }
        }
        myself.stop_children(Some("shutdown".into()));
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
                    tracing::error!(actor = role.as_str(), error = %e, "restart failed; trying again");
                    state.args.report.failed(role.as_str(), e.to_string());
                    match Self::next_backoff(state) {
                        Some(b) => {
                            myself.send_after(b, move || SupervisorMsg::Restart(role));
                        }
                        None => {
                            state
                                .args
                                .report
                                .escalate(format!("{} cannot be restarted: {e}", role.as_str()));
                            state.args.shutdown.trigger();
                        }
                    }
                    return Ok(());
                }
                tracing::info!(actor = role.as_str(), "actor restarted");
                if role == ChildRole::Planner
                    && let Some(intake) = Self::intake(state)
                {
                    let _ = intake.cast(IntakeMsg::Redeliver);
                }
            }
            SupervisorMsg::PauseIntake => {
                if let Some(intake) = Self::intake(state) {
                    let _ = intake.cast(IntakeMsg::Pause);
                }
            }
            SupervisorMsg::ResumeIntake => {
                if let Some(intake) = Self::intake(state) {
                    let _ = intake.cast(IntakeMsg::Resume);
                }
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
