//! Planner: expands a job's scope into task messages of bounded size, one keyset page per
//! step, and records its cursor so a restart resumes planning instead of restarting it.
//!
//! Each page is written with its cursor by one atomic Redis script (see
//! [`crate::queue::PlanScripts`]), so every item of a job is planned exactly once, across
//! crashes and racing planners. Memory holds one page at a time, whatever the job's size;
//! planning waits while the tasks stream holds more than `max_queued_tasks` entries.

use crate::config::PlannerSettings;
use crate::domain::{JobId, JobScope};
use crate::messages::{JobMessage, TaskItem, TaskMessage};
use crate::queue::{Delivery, PagePlanned, PlanProgress, PlanScripts, QueueError};
use crate::store::{Store, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::task::JoinHandle;

pub enum PlannerMsg {
    /// A job message from the intake (boxed: a delivery is large beside the other messages).
    Plan(Box<Delivery<JobMessage>>),
    /// Plan the next page (self-sent; at most one is outstanding).
    Step,
    /// Renew the claim on the job entries held (self-sent on a timer).
    KeepAlive,
}

impl From<Delivery<JobMessage>> for PlannerMsg {
    fn from(d: Delivery<JobMessage>) -> Self {
        Self::Plan(Box::new(d))
    }
}

#[derive(Clone)]
pub struct PlannerArgs {
    pub store: Store,
    pub scripts: PlanScripts,
    pub settings: PlannerSettings,
    /// The configured embedding model (the `stale_model` scope compares against it).
    pub model: String,
    pub visibility_timeout: Duration,
}

/// The job being planned.
struct Planning {
    delivery: Delivery<JobMessage>,
    job: JobId,
    scope: JobScope,
    model: String,
    progress: PlanProgress,
}

pub struct PlannerState {
    args: PlannerArgs,
    queue: VecDeque<Delivery<JobMessage>>,
    current: Option<Planning>,
    step_scheduled: bool,
    backoff: Duration,
    keep_alive: Option<JoinHandle<()>>,
}

/// What one step did.
#[derive(Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// Nothing to plan.
    Idle,
    /// Planning of a job began (or resumed) at its recorded progress.
    Started { job: JobId, planned: i64 },
    /// The job needs no planning (unknown, final, or already planned) and was acknowledged.
    Skipped { job: JobId, reason: &'static str },
    /// A page of `items` became tasks; `stale` when another planner had written it first.
    Page {
        job: JobId,
        items: usize,
        stale: bool,
    },
    /// The tasks stream is full; try again shortly.
    Throttled,
    /// Every item of the job is planned.
    Finished { job: JobId, total: i64 },
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A fault injected by the test harness (feature `fault-injection`).
    #[error("{0}")]
    Injected(String),
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const THROTTLE_WAIT: Duration = Duration::from_millis(200);

pub struct Planner;

impl Planner {
    fn schedule_step(myself: &ActorRef<PlannerMsg>, state: &mut PlannerState, after: Duration) {
        if state.step_scheduled {
            return;
        }
        state.step_scheduled = true;
        if after.is_zero() {
            let _ = myself.cast(PlannerMsg::Step);
        } else {
            myself.send_after(after, || PlannerMsg::Step);
        }
    }

    fn holds(state: &PlannerState, entry_id: &str) -> bool {
        state
            .current
            .as_ref()
            .is_some_and(|p| p.delivery.entry_id == entry_id)
            || state.queue.iter().any(|d| d.entry_id == entry_id)
    }
}

/// One step of planning. Public so tests can drive the planner without the actor runtime.
#[tracing::instrument(name = "planner.step", skip_all, fields(job))]
async fn step(state: &mut PlannerState) -> Result<StepOutcome, PlanError> {
    let args = &state.args;
    let Some(planning) = state.current.as_mut() else {
        let Some(delivery) = state.queue.front() else {
            return Ok(StepOutcome::Idle);
        };
        let job_id = delivery.message.job_id;
        tracing::Span::current().record("job", tracing::field::display(job_id));
        let job = match (args.store.get_job(job_id).await?, &delivery.message.scope) {
            (None, Some(scope)) => Some(
                args.store
                    .record_job_from_stream(job_id, scope, &args.model)
                    .await?,
            ),
            (job, _) => job,
        };
        let outcome = match job {
            None => Some("unknown job"),
            Some(job) if job.state.is_final() => Some("job already final"),
            Some(job) if job.planned_at.is_some() => Some("job already planned"),
            Some(job) => {
                args.store.mark_job_running(job_id).await?;
                let progress = args
                    .scripts
                    .progress(job_id, job.planning_cursor.as_deref(), job.total)
                    .await?;
                let delivery = state.queue.pop_front().expect("front exists");
                let planned = progress.planned;
                state.current = Some(Planning {
                    delivery,
                    job: job_id,
                    scope: job.scope,
                    model: job.model,
                    progress,
                });
                return Ok(StepOutcome::Started {
                    job: job_id,
                    planned,
                });
            }
        };
        let reason = outcome.expect("handled above");
        delivery.ack().await?;
        state.queue.pop_front();
        return Ok(StepOutcome::Skipped {
            job: job_id,
            reason,
        });
    };
    tracing::Span::current().record("job", tracing::field::display(planning.job));

    if args.store.job_state(planning.job).await? == Some(crate::domain::JobState::Cancelled) {
        let job = planning.job;
        args.store
            .finish_planning(job, planning.progress.planned)
            .await?;
        args.scripts.forget(job).await?;
        planning.delivery.ack().await?;
        state.current = None;
        tracing::info!(%job, "job cancelled; planning stopped");
        return Ok(StepOutcome::Skipped {
            job,
            reason: "job cancelled",
        });
    }

    if args.scripts.queued_tasks().await? >= args.settings.max_queued_tasks {
        return Ok(StepOutcome::Throttled);
    }

    let page = args
        .store
        .scope_page(
            &planning.scope,
            &planning.model,
            planning.progress.cursor.as_deref(),
            args.settings.page_size,
        )
        .await?;
    let job = planning.job;
    let Some(next_cursor) = page.next_cursor else {
        let total = planning.progress.planned;
        args.store.finish_planning(job, total).await?;
        args.scripts.forget(job).await?;
        planning.delivery.ack().await?;
        state.current = None;
        tracing::info!(%job, total, "planning finished");
        return Ok(StepOutcome::Finished { job, total });
    };

    let fresh_attempts = matches!(planning.scope, JobScope::Failed);
    let tasks: Vec<String> = page
        .items
        .chunks(args.settings.task_size)
        .map(|chunk| {
            let task = TaskMessage {
                job_id: job,
                items: chunk
                    .iter()
                    .map(|i| TaskItem {
                        id: i.id.clone(),
                        // A job over the FAILED items is the operator asking to try them again:
                        // they get fresh attempts, as a dead-letter requeue gives.
                        attempt: if fresh_attempts {
                            0
                        } else {
                            i.attempts.clamp(0, u32::MAX as i64) as u32
                        },
                    })
                    .collect(),
            };
            task.payload()
        })
        .collect();
    let planned_after = planning.progress.planned + page.items.len() as i64;
    let written = args
        .scripts
        .write_page(
            job,
            planning.progress.cursor.as_deref(),
            &next_cursor,
            planned_after,
            &tasks,
        )
        .await?;
    match written {
        PagePlanned::Written => {
            planning.progress = PlanProgress {
                cursor: Some(next_cursor.clone()),
                planned: planned_after,
            };
            args.store
                .record_planning(job, &next_cursor, planned_after)
                .await?;
            Ok(StepOutcome::Page {
                job,
                items: page.items.len(),
                stale: false,
            })
        }
        PagePlanned::Stale(progress) => {
            tracing::warn!(%job, "another planner advanced this job; continuing from its cursor");
            planning.progress = progress;
            Ok(StepOutcome::Page {
                job,
                items: 0,
                stale: true,
            })
        }
    }
}

impl Actor for Planner {
    type Msg = PlannerMsg;
    type State = PlannerState;
    type Arguments = PlannerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: PlannerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let period = (args.visibility_timeout / 3).max(Duration::from_millis(100));
        let keep_alive = myself.send_interval(period, || PlannerMsg::KeepAlive);
        Ok(PlannerState {
            args,
            queue: VecDeque::new(),
            current: None,
            step_scheduled: false,
            backoff: MIN_BACKOFF,
            keep_alive: Some(keep_alive),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(handle) = state.keep_alive.take() {
            handle.abort();
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
            PlannerMsg::Plan(delivery) => {
                if !Self::holds(state, &delivery.entry_id) {
                    state.queue.push_back(*delivery);
                }
                Self::schedule_step(&myself, state, Duration::ZERO);
            }
            PlannerMsg::Step => {
                state.step_scheduled = false;
                let result = match crate::fault::fault_store!(myself) {
                    Some(reason) => Err(PlanError::Injected(reason)),
                    None => step(state).await,
                };
                match result {
                    Ok(StepOutcome::Idle) => {}
                    Ok(StepOutcome::Throttled) => {
                        Self::schedule_step(&myself, state, THROTTLE_WAIT);
                    }
                    Ok(outcome) => {
                        tracing::debug!(?outcome, "planner step");
                        state.backoff = MIN_BACKOFF;
                        Self::schedule_step(&myself, state, Duration::ZERO);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?state.backoff, "planning step failed");
                        let wait = state.backoff;
                        state.backoff = (state.backoff * 2).min(MAX_BACKOFF);
                        Self::schedule_step(&myself, state, wait);
                    }
                }
            }
            PlannerMsg::KeepAlive => {
                let mut held: Vec<String> =
                    state.queue.iter().map(|d| d.entry_id.clone()).collect();
                if let Some(p) = &state.current {
                    held.push(p.delivery.entry_id.clone());
                }
                let Some(acker) = state
                    .current
                    .as_ref()
                    .map(|p| p.delivery.acker.clone())
                    .or_else(|| state.queue.front().map(|d| d.acker.clone()))
                else {
                    return Ok(());
                };
                match acker.keep_alive(&held).await {
                    Ok(lost) if !lost.is_empty() => {
                        tracing::warn!(
                            ?lost,
                            "job entries were claimed by another consumer; leaving them to it"
                        );
                        state.queue.retain(|d| !lost.contains(&d.entry_id));
                        if state
                            .current
                            .as_ref()
                            .is_some_and(|p| lost.contains(&p.delivery.entry_id))
                        {
                            state.current = None;
                            Self::schedule_step(&myself, state, Duration::ZERO);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "could not renew job claims"),
                }
            }
        }
        Ok(())
    }
}
