//! Planner: expands a job's scope into task messages of bounded size, one keyset page per
//! step, and records its cursor so a restart resumes planning instead of restarting it.
//!
//! It plans every job it holds at once, a page at a time in turn: each step takes the job of
//! the highest priority whose tasks stream has room, and among those of one priority the one
//! whose turn is oldest. So a job that arrives while a million-item job is being planned gets
//! its first page within a step, and two jobs of one priority share the streams page for page.
//! Each job's priority and state are read again every step: an operator's change of priority
//! applies to the pages planned after it, and a cancelled job stops.
//!
//! Each page is written with its cursor by one atomic Redis script (see
//! [`crate::queue::PlanScripts`]), so every item of a job is planned exactly once, across
//! crashes and racing planners. Memory holds one page at a time, whatever the job's size;
//! planning waits while the tasks stream holds more than `max_queued_tasks` entries.

use super::reconcile_job::{self, Findings, ReconcileError, Reconciling};
use crate::config::PlannerSettings;
use crate::domain::{JobId, JobKind, JobScope, JobState, Priority, Tenant};
use crate::messages::{JobMessage, TaskItem, TaskMessage};
use crate::point_sync::PointSync;
use crate::queue::{Delivery, PagePlanned, PageWrite, PlanProgress, PlanScripts, QueueError};
use crate::retry::Backoff;
use crate::store::{PlannedItem, Store, StoreError};
use crate::vectors::VectorStore;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::VecDeque;
use std::sync::Arc;
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
    /// The vector store a reconcile job compares SQL with, and what its points should hold.
    pub vectors: Arc<dyn VectorStore>,
    pub point_sync: PointSync,
    pub dimension: usize,
    pub generation: i64,
    /// A job of scope `items` with at most this many ids is interactive unless it says otherwise.
    pub interactive_max_items: usize,
}

/// A job being planned.
struct Planning {
    delivery: Delivery<JobMessage>,
    job: JobId,
    kind: JobKind,
    scope: JobScope,
    model: String,
    priority: Priority,
    tenant: Option<Tenant>,
    /// The planner's turn counter when this job last had a page planned (0: never).
    last_turn: u64,
    progress: PlanProgress,
    /// The Redis epoch the job's pages are written in.
    epoch: String,
    /// A reconcile job's findings so far.
    findings: Findings,
}

pub struct PlannerState {
    args: PlannerArgs,
    /// Job entries not started yet, in arrival order.
    queue: VecDeque<Delivery<JobMessage>>,
    /// Jobs started and planned in turn.
    active: Vec<Planning>,
    /// Counts the pages planned; a job's `last_turn` is the count at its last page.
    turn: u64,
    step_scheduled: bool,
    /// While steps fail (the database or Redis is down).
    failures: Backoff,
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

/// A page to plan, whatever the job's kind.
struct PlanPage {
    items: Vec<PlannedItem>,
    next_cursor: Option<String>,
    /// The items get attempt 0 rather than the attempts they used.
    fresh_attempts: bool,
    /// The tasks embed the items even when SQL says they are up to date.
    reembed: bool,
    /// A reconcile job's findings after this page.
    findings: Option<Findings>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    /// A fault injected by the test harness (feature `fault-injection`).
    #[error("{0}")]
    Injected(String),
}

/// Ends a job's planning: its total is fixed, its Redis progress forgotten, its entry
/// acknowledged. The caller drops it from the active jobs.
async fn finish(args: &PlannerArgs, planning: &mut Planning) -> Result<StepOutcome, PlanError> {
    let job = planning.job;
    let total = planning.progress.planned;
    args.store.finish_planning(job, total).await?;
    args.scripts.forget(job).await?;
    planning.delivery.ack().await?;
    tracing::info!(%job, total, "planning finished");
    Ok(StepOutcome::Finished { job, total })
}

/// Redis lost its data while the job was planned: its entry went with the rest, and the
/// reconciler enqueues the job again. The caller drops it from the active jobs.
fn epoch_changed(job: JobId) -> StepOutcome {
    tracing::warn!(%job, "Redis lost its data while planning this job; the reconciler plans it again");
    StepOutcome::Skipped {
        job,
        reason: "Redis lost the job's state",
    }
}

/// Waits between failed steps: from 100 ms, doubling, up to 5 s.
fn step_failures() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
}

const THROTTLE_WAIT: Duration = Duration::from_millis(50);

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
        state.active.iter().any(|p| p.delivery.entry_id == entry_id)
            || state.queue.iter().any(|d| d.entry_id == entry_id)
    }
}

/// A job's claim to the next turn: its priority, its tenant's last turn (the latest of its
/// tenant's jobs; its own when it has no tenant) and its own last turn.
type Turn = (Priority, u64, u64);

/// The job whose page is planned next, as an index into `jobs`: of the highest priority whose
/// stream has room (`waiting` tasks of each priority, in [`Priority::ALL`]'s order, below
/// `max_waiting`), the tenant whose last turn is oldest, and of its jobs the one whose last
/// turn is oldest. `None` when every stream that a job needs is full.
fn next_turn(jobs: &[Turn], waiting: [u64; 3], max_waiting: u64) -> Option<usize> {
    jobs.iter()
        .enumerate()
        .filter(|(_, (priority, _, _))| waiting[priority.rank()] < max_waiting)
        .min_by_key(|(i, turn)| (turn.0, turn.1, turn.2, *i))
        .map(|(i, _)| i)
}

/// Each active job's [`Turn`].
fn turns(active: &[Planning]) -> Vec<Turn> {
    active
        .iter()
        .map(|p| {
            let tenant_turn = match &p.tenant {
                Some(tenant) => active
                    .iter()
                    .filter(|o| o.tenant.as_ref() == Some(tenant))
                    .map(|o| o.last_turn)
                    .max()
                    .unwrap_or(p.last_turn),
                None => p.last_turn,
            };
            (p.priority, tenant_turn, p.last_turn)
        })
        .collect()
}

/// Starts planning the job of the oldest entry not started yet: records a producer's job,
/// skips what needs no planning, or makes it active at its recorded progress.
async fn start_next(state: &mut PlannerState) -> Result<StepOutcome, PlanError> {
    let args = &state.args;
    let Some(delivery) = state.queue.front() else {
        return Ok(StepOutcome::Idle);
    };
    let job_id = delivery.message.job_id;
    tracing::Span::current().record("job", tracing::field::display(job_id));
    let job = match (args.store.get_job(job_id).await?, &delivery.message.scope) {
        (None, Some(scope)) => {
            let priority = delivery
                .message
                .priority
                .unwrap_or_else(|| scope.default_priority(args.interactive_max_items));
            Some(
                args.store
                    .record_job_from_stream(
                        job_id,
                        scope,
                        &args.model,
                        priority,
                        delivery.message.tenant.as_ref(),
                    )
                    .await?,
            )
        }
        (job, _) => job,
    };
    let reason = match job {
        None => "unknown job",
        Some(job) if job.state.is_final() => "job already final",
        Some(job) if job.planned_at.is_some() => "job already planned",
        Some(mut job) => {
            // Pages planned in another epoch lived in a Redis that forgot them: plan the
            // job again from its first item (what is final stays counted).
            let epoch = args.scripts.epoch().await?;
            let recorded = args.store.job_epoch(job_id).await?;
            if job.planning_cursor.is_some() && recorded.as_deref() != Some(epoch.as_str()) {
                tracing::warn!(job = %job_id, "Redis lost this job's planning; planning it again from the start");
                args.store.restart_planning(job_id, &epoch).await?;
                job.planning_cursor = None;
                job.total = 0;
            }
            args.store.mark_job_running(job_id, &epoch).await?;
            let progress = args
                .scripts
                .progress(job_id, job.planning_cursor.as_deref(), job.total)
                .await?;
            let delivery = state.queue.pop_front().expect("front exists");
            let planned = progress.planned;
            state.active.push(Planning {
                delivery,
                job: job_id,
                kind: job.kind,
                scope: job.scope,
                model: job.model,
                priority: job.priority,
                tenant: job.tenant,
                last_turn: 0,
                progress,
                epoch,
                findings: Findings::from_result(job.result.as_ref()),
            });
            return Ok(StepOutcome::Started {
                job: job_id,
                planned,
            });
        }
    };
    delivery.ack().await?;
    state.queue.pop_front();
    Ok(StepOutcome::Skipped {
        job: job_id,
        reason,
    })
}

/// One step of planning; the actor only schedules the next one. Tested below without the
/// actor runtime.
#[tracing::instrument(name = "planner.step", skip_all, fields(job))]
async fn step(state: &mut PlannerState) -> Result<StepOutcome, PlanError> {
    if !state.queue.is_empty() {
        return start_next(state).await;
    }
    if state.active.is_empty() {
        return Ok(StepOutcome::Idle);
    }
    // What the operator may have changed since the last step: priorities, cancellations.
    let ids: Vec<JobId> = state.active.iter().map(|p| p.job).collect();
    let views = state.args.store.planning_views(&ids).await?;
    for (id, job_state, priority) in views {
        let Some(index) = state.active.iter().position(|p| p.job == id) else {
            continue;
        };
        if job_state == JobState::Cancelled {
            let args = &state.args;
            let planning = &state.active[index];
            args.store
                .finish_planning(id, planning.progress.planned)
                .await?;
            args.scripts.forget(id).await?;
            planning.delivery.ack().await?;
            state.active.remove(index);
            tracing::info!(job = %id, "job cancelled; planning stopped");
            return Ok(StepOutcome::Skipped {
                job: id,
                reason: "job cancelled",
            });
        }
        if state.active[index].priority != priority {
            tracing::info!(job = %id, from = %state.active[index].priority, to = %priority, "job priority changed");
            state.active[index].priority = priority;
        }
    }

    let waiting = state.args.scripts.waiting_tasks().await?;
    let turns = turns(&state.active);
    let Some(index) = next_turn(&turns, waiting, state.args.settings.max_queued_tasks) else {
        return Ok(StepOutcome::Throttled);
    };
    state.turn += 1;
    let turn = state.turn;
    let args = &state.args;
    let planning = &mut state.active[index];
    planning.last_turn = turn;
    tracing::Span::current().record("job", tracing::field::display(planning.job));

    let job = planning.job;
    let page = match planning.kind {
        JobKind::Embed => {
            let page = args
                .store
                .scope_page(
                    &planning.scope,
                    &planning.model,
                    planning.progress.cursor.as_deref(),
                    args.settings.page_size,
                )
                .await?;
            PlanPage {
                items: page.items,
                next_cursor: page.next_cursor,
                // A job over the FAILED items is the operator asking to try them again: they
                // get fresh attempts, as a dead-letter requeue gives.
                fresh_attempts: matches!(planning.scope, JobScope::Failed),
                reembed: false,
                findings: None,
            }
        }
        JobKind::Reconcile => {
            let on = Reconciling {
                store: &args.store,
                vectors: args.vectors.as_ref(),
                point_sync: &args.point_sync,
                model: &planning.model,
                dimension: args.dimension,
                generation: args.generation,
                page_size: args.settings.page_size,
            };
            let found =
                reconcile_job::page(&on, planning.progress.cursor.as_deref(), planning.findings)
                    .await?;
            PlanPage {
                items: found.repairs,
                next_cursor: found.next_cursor,
                fresh_attempts: true,
                // Up to date by SQL, wrong in the vector store: embed them whatever SQL says.
                reembed: true,
                findings: Some(found.findings),
            }
        }
    };
    let Some(next_cursor) = page.next_cursor else {
        let outcome = finish(args, planning).await?;
        state.active.remove(index);
        return Ok(outcome);
    };

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
                        attempt: if page.fresh_attempts {
                            0
                        } else {
                            i.attempts.clamp(0, u32::MAX as i64) as u32
                        },
                    })
                    .collect(),
                isolated: false,
                reembed: page.reembed,
                priority: planning.priority,
                tenant: planning.tenant.clone(),
            };
            task.payload()
        })
        .collect();
    let planned_after = planning.progress.planned + page.items.len() as i64;
    // SQL learns the page's items before Redis gets their tasks, so it always knows at least
    // every item that has a task.
    args.store.insert_membership(job, &page.items).await?;
    let written = args
        .scripts
        .write_page(&PageWrite {
            job,
            priority: planning.priority,
            epoch: &planning.epoch,
            expected: planning.progress.cursor.as_deref(),
            next_cursor: &next_cursor,
            planned_after,
            tasks: &tasks,
        })
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
            if let Some(findings) = page.findings {
                planning.findings = findings;
                let result = serde_json::to_value(findings).expect("findings serialise");
                args.store.set_job_result(job, &result).await?;
            }
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
        PagePlanned::EpochChanged => {
            state.active.remove(index);
            Ok(epoch_changed(job))
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
            active: Vec::new(),
            turn: 0,
            step_scheduled: false,
            failures: step_failures(),
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
                        state.failures.reset();
                        Self::schedule_step(&myself, state, Duration::ZERO);
                    }
                    Err(e) => {
                        let wait = state.failures.next_wait();
                        tracing::warn!(error = %e, retry_in = ?wait, "planning step failed");
                        Self::schedule_step(&myself, state, wait);
                    }
                }
            }
            PlannerMsg::KeepAlive => {
                let held: Vec<String> = state
                    .queue
                    .iter()
                    .map(|d| d.entry_id.clone())
                    .chain(state.active.iter().map(|p| p.delivery.entry_id.clone()))
                    .collect();
                let Some(acker) = state
                    .active
                    .first()
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
                        state
                            .active
                            .retain(|p| !lost.contains(&p.delivery.entry_id));
                        Self::schedule_step(&myself, state, Duration::ZERO);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "could not renew job claims"),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The step driven alone, against a real SQLite file and the real Redis (127.0.0.1:6379,
    //! or `EMBEDQ_TEST_REDIS`), under a key prefix of its own.

    use super::*;
    use crate::config::Settings;
    use crate::domain::{ContextId, ItemContent, ItemId};
    use crate::queue::{Keys, PLANNER_GROUP, StreamAcker};
    use crate::store::{NewItem, NewJob};

    struct Bench {
        state: PlannerState,
        keys: Keys,
        redis: redis::aio::ConnectionManager,
        _dir: tempfile::TempDir,
    }

    async fn bench(page_size: usize, task_size: usize, max_queued_tasks: u64) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::defaults();
        settings.database.url = format!("sqlite://{}", dir.path().join("t.db").display());
        settings.vectors.path = dir.path().join("vectors").display().to_string();
        let store = Store::connect(&settings.database).await.unwrap();
        store.migrate().await.unwrap();
        let vectors = crate::vectors::open(&settings.vectors, None).await.unwrap();
        let url =
            std::env::var("EMBEDQ_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let redis = redis::aio::ConnectionManager::new(redis::Client::open(url).unwrap())
            .await
            .expect("Redis must be running for the planner's tests");
        let keys = Keys::new(format!("embedq-unit-{}", uuid::Uuid::new_v4().simple()));
        let state = PlannerState {
            args: PlannerArgs {
                store: store.clone(),
                scripts: PlanScripts::new(redis.clone(), keys.clone()),
                settings: crate::config::PlannerSettings {
                    page_size,
                    task_size,
                    max_queued_tasks,
                    interactive_max_items: 100,
                },
                model: "m".into(),
                visibility_timeout: Duration::from_secs(30),
                vectors: vectors.clone(),
                point_sync: crate::point_sync::PointSync::new(store.clone(), vectors),
                dimension: 384,
                generation: 1,
                interactive_max_items: 100,
            },
            queue: VecDeque::new(),
            active: Vec::new(),
            turn: 0,
            step_scheduled: false,
            failures: step_failures(),
            keep_alive: None,
        };
        Bench {
            state,
            keys,
            redis,
            _dir: dir,
        }
    }

    impl Bench {
        fn store(&self) -> &Store {
            &self.state.args.store
        }

        async fn seed(&self, context: &str, n: usize) {
            let items: Vec<NewItem> = (0..n)
                .map(|i| NewItem {
                    id: ItemId::parse(format!("{context}-{i:04}")).unwrap(),
                    content: ItemContent::parse(format!("text {i}"), 1_000).unwrap(),
                    metadata: None,
                })
                .collect();
            let context = ContextId::parse(context).unwrap();
            self.store()
                .upsert_items(&context, &items, &[])
                .await
                .unwrap();
        }

        async fn job(&self, context: &str) -> JobId {
            self.job_of(context, Priority::Normal).await
        }

        async fn job_of(&self, context: &str, priority: Priority) -> JobId {
            let scope = JobScope::Context {
                context_id: ContextId::parse(context).unwrap(),
            };
            let new = NewJob {
                id: JobId::new(),
                kind: JobKind::Embed,
                scope,
                model: "m".into(),
                priority,
                tenant: None,
                idempotency_key: None,
            };
            self.store().create_job(new).await.unwrap().job.id
        }

        /// Hands the planner a delivery of `message`, as the job intake would.
        fn deliver(&mut self, message: JobMessage) {
            let acker = StreamAcker::new(
                self.redis.clone(),
                self.keys.jobs_stream(),
                PLANNER_GROUP.into(),
                "unit".into(),
                self.keys.dead_letters(),
            );
            self.state.queue.push_back(Delivery {
                entry_id: format!("{}-0", self.state.queue.len() + 1),
                message,
                acker,
                _credit: None,
                _held: None,
            });
        }

        async fn tasks(&self) -> Vec<TaskMessage> {
            self.tasks_of(Priority::Normal).await
        }

        async fn tasks_of(&self, priority: Priority) -> Vec<TaskMessage> {
            let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(self.keys.tasks_stream(priority))
                .arg("-")
                .arg("+")
                .query_async(&mut self.redis.clone())
                .await
                .unwrap();
            reply
                .ids
                .iter()
                .map(|e| {
                    let Some(redis::Value::BulkString(raw)) = e.map.get("task") else {
                        panic!("task entry without payload")
                    };
                    serde_json::from_slice(raw).unwrap()
                })
                .collect()
        }

        async fn clean(self) {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}:*", self.keys.prefix()))
                .query_async(&mut self.redis.clone())
                .await
                .unwrap();
            if !keys.is_empty() {
                let _: () = redis::cmd("DEL")
                    .arg(keys)
                    .query_async(&mut self.redis.clone())
                    .await
                    .unwrap();
            }
        }
    }

    #[tokio::test]
    async fn plans_a_job_page_by_page_then_finishes() {
        let mut b = bench(10, 4, 1_000).await;
        assert_eq!(step(&mut b.state).await.unwrap(), StepOutcome::Idle);
        b.seed("ctx", 25).await;
        b.seed("other", 3).await;
        let job = b.job("ctx").await;
        b.deliver(JobMessage::recorded(job));
        assert_eq!(
            step(&mut b.state).await.unwrap(),
            StepOutcome::Started { job, planned: 0 }
        );
        for items in [10, 10, 5] {
            assert_eq!(
                step(&mut b.state).await.unwrap(),
                StepOutcome::Page {
                    job,
                    items,
                    stale: false
                }
            );
        }
        assert_eq!(
            step(&mut b.state).await.unwrap(),
            StepOutcome::Finished { job, total: 25 }
        );
        let record = b.store().get_job(job).await.unwrap().unwrap();
        assert_eq!(record.total, 25);
        assert!(record.planned_at.is_some());
        assert_eq!(record.state, crate::domain::JobState::Running);
        let tasks = b.tasks().await;
        // 3 pages of 10, 10 and 5 items in tasks of at most 4: 3 + 3 + 2.
        assert_eq!(tasks.len(), 8);
        let ids: Vec<String> = tasks
            .iter()
            .flat_map(|t| t.items.iter().map(|i| i.id.to_string()))
            .collect();
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!((ids.len(), unique.len()), (25, 25), "each item once");
        assert!(ids.iter().all(|i| i.starts_with("ctx-")));
        assert_eq!(step(&mut b.state).await.unwrap(), StepOutcome::Idle);
        b.clean().await;
    }

    #[tokio::test]
    async fn skips_what_needs_no_planning_and_waits_while_the_stream_is_full() {
        let mut b = bench(10, 4, 2).await;
        b.deliver(JobMessage::recorded(JobId::new()));
        assert!(matches!(
            step(&mut b.state).await.unwrap(),
            StepOutcome::Skipped {
                reason: "unknown job",
                ..
            }
        ));
        b.seed("ctx", 30).await;
        let job = b.job("ctx").await;
        b.deliver(JobMessage::recorded(job));
        assert!(matches!(
            step(&mut b.state).await.unwrap(),
            StepOutcome::Started { .. }
        ));
        // The first page writes 3 tasks, past the high-water mark of 2: planning waits.
        assert!(matches!(
            step(&mut b.state).await.unwrap(),
            StepOutcome::Page { items: 10, .. }
        ));
        assert_eq!(step(&mut b.state).await.unwrap(), StepOutcome::Throttled);
        assert_eq!(b.tasks().await.len(), 3);
        // A cancelled job stops planning where it is.
        b.store().cancel_job(job).await.unwrap();
        assert_eq!(
            step(&mut b.state).await.unwrap(),
            StepOutcome::Skipped {
                job,
                reason: "job cancelled"
            }
        );
        let record = b.store().get_job(job).await.unwrap().unwrap();
        assert_eq!(record.total, 10, "what was planned is the total");
        // A job already planned is acknowledged, not planned again.
        b.deliver(JobMessage::recorded(job));
        assert!(matches!(
            step(&mut b.state).await.unwrap(),
            StepOutcome::Skipped {
                reason: "job already final",
                ..
            }
        ));
        b.clean().await;
    }

    #[tokio::test]
    async fn resumes_from_the_recorded_cursor_and_yields_to_a_faster_planner() {
        let mut b = bench(10, 10, 1_000).await;
        b.seed("ctx", 30).await;
        let job = b.job("ctx").await;
        // An earlier planner wrote the first page, then died.
        let epoch = b.state.args.scripts.epoch().await.unwrap();
        b.store().mark_job_running(job, &epoch).await.unwrap();
        b.store()
            .record_planning(job, "ctx-0009", 10)
            .await
            .unwrap();
        b.deliver(JobMessage::recorded(job));
        assert_eq!(
            step(&mut b.state).await.unwrap(),
            StepOutcome::Started { job, planned: 10 }
        );
        // Another planner (a stalled lease) writes the next page first.
        let scripts = b.state.args.scripts.clone();
        let theirs = TaskMessage {
            job_id: job,
            items: (10..20)
                .map(|i| TaskItem {
                    id: ItemId::parse(format!("ctx-{i:04}")).unwrap(),
                    attempt: 0,
                })
                .collect(),
            isolated: false,
            reembed: false,
            priority: Priority::Normal,
            tenant: None,
        };
        let epoch = scripts.epoch().await.unwrap();
        let written = scripts
            .write_page(&PageWrite {
                job,
                priority: Priority::Normal,
                epoch: &epoch,
                expected: Some("ctx-0009"),
                next_cursor: "ctx-0019",
                planned_after: 20,
                tasks: &[theirs.payload()],
            })
            .await
            .unwrap();
        assert_eq!(written, PagePlanned::Written);
        assert_eq!(
            step(&mut b.state).await.unwrap(),
            StepOutcome::Page {
                job,
                items: 0,
                stale: true
            }
        );
        assert_eq!(
            step(&mut b.state).await.unwrap(),
            StepOutcome::Page {
                job,
                items: 10,
                stale: false
            }
        );
        let planned: Vec<String> = b
            .tasks()
            .await
            .iter()
            .flat_map(|t| t.items.iter().map(|i| i.id.to_string()))
            .collect();
        let expected: Vec<String> = (10..30).map(|i| format!("ctx-{i:04}")).collect();
        assert_eq!(planned, expected, "theirs, then ours after their cursor");
        assert_eq!(
            step(&mut b.state).await.unwrap(),
            StepOutcome::Finished { job, total: 30 }
        );
        b.clean().await;
    }

    #[test]
    fn the_next_turn_is_the_highest_priority_with_room_then_the_oldest_turn() {
        use Priority::*;
        let room = [0, 0, 0];
        // A job without a tenant is a tenant of its own: its tenant's turn is its own.
        let alone = |p: Priority, t: u64| (p, t, t);
        // Two normal jobs take turns; a bulk job waits while they have room.
        let jobs = [alone(Normal, 3), alone(Normal, 2), alone(Bulk, 0)];
        assert_eq!(next_turn(&jobs, room, 10), Some(1));
        let jobs = [alone(Normal, 3), alone(Normal, 4), alone(Bulk, 0)];
        assert_eq!(next_turn(&jobs, room, 10), Some(0));
        // An interactive job goes first, whatever the turns.
        let jobs = [alone(Normal, 0), alone(Interactive, 9)];
        assert_eq!(next_turn(&jobs, room, 10), Some(1));
        // A full stream passes the turn to the next priority; all full: nothing.
        let jobs = [alone(Normal, 0), alone(Bulk, 5)];
        assert_eq!(next_turn(&jobs, [0, 10, 0], 10), Some(1));
        assert_eq!(next_turn(&jobs, [0, 10, 10], 10), None);
        assert_eq!(next_turn(&[], room, 10), None);
    }

    #[test]
    fn tenants_take_turns_before_their_jobs_do() {
        use Priority::*;
        // Tenant A has three jobs, tenant B one. A's jobs had turns 1, 2 and 3, B's job 0.
        let a = Tenant::parse("a").unwrap();
        let b = Tenant::parse("b").unwrap();
        let tenants = [&a, &a, &a, &b];
        let mut last = [1u64, 2, 3, 0];
        let mut order = Vec::new();
        for turn in 4..10 {
            let jobs: Vec<Turn> = (0..4)
                .map(|j| {
                    let tenant_turn = (0..4)
                        .filter(|o| tenants[*o] == tenants[j])
                        .map(|o| last[o])
                        .max()
                        .unwrap();
                    (Normal, tenant_turn, last[j])
                })
                .collect();
            let next = next_turn(&jobs, [0, 0, 0], 10).unwrap();
            last[next] = turn;
            order.push((tenants[next].as_str().to_owned(), next));
        }
        let tenants_in_turn: Vec<&str> = order.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            tenants_in_turn,
            ["b", "a", "b", "a", "b", "a"],
            "tenants alternate"
        );
        let a_jobs: Vec<usize> = order
            .iter()
            .filter(|(t, _)| t == "a")
            .map(|(_, j)| *j)
            .collect();
        assert_eq!(
            a_jobs,
            [0, 1, 2],
            "and a tenant's jobs take its turns in order"
        );
    }

    #[tokio::test]
    async fn jobs_are_planned_in_turn_and_an_interactive_one_first() {
        let mut b = bench(10, 10, 1_000).await;
        b.seed("big", 40).await;
        b.seed("small", 20).await;
        b.seed("edit", 5).await;
        let big = b.job("big").await;
        let small = b.job("small").await;
        b.deliver(JobMessage::recorded(big));
        b.deliver(JobMessage::recorded(small));
        assert!(
            matches!(step(&mut b.state).await.unwrap(), StepOutcome::Started { job, .. } if job == big)
        );
        assert!(
            matches!(step(&mut b.state).await.unwrap(), StepOutcome::Started { job, .. } if job == small)
        );
        let mut order = Vec::new();
        for _ in 0..3 {
            match step(&mut b.state).await.unwrap() {
                StepOutcome::Page { job, .. } => order.push(job),
                other => panic!("a page: {other:?}"),
            }
        }
        assert_eq!(order, [big, small, big], "one page each in turn");
        // An interactive job arrives: it is started, then planned before anything else.
        let edit = b.job_of("edit", Priority::Interactive).await;
        b.deliver(JobMessage::recorded(edit));
        assert!(
            matches!(step(&mut b.state).await.unwrap(), StepOutcome::Started { job, .. } if job == edit)
        );
        assert_eq!(
            step(&mut b.state).await.unwrap(),
            StepOutcome::Page {
                job: edit,
                items: 5,
                stale: false
            }
        );
        assert_eq!(
            step(&mut b.state).await.unwrap(),
            StepOutcome::Finished {
                job: edit,
                total: 5
            }
        );
        let interactive = b.tasks_of(Priority::Interactive).await;
        assert_eq!(interactive.len(), 1);
        assert!(
            interactive
                .iter()
                .all(|t| t.job_id == edit && t.priority == Priority::Interactive)
        );
        // An operator lowers the big job to bulk: its next pages go to the bulk stream.
        b.store()
            .set_job_priority(big, Priority::Bulk)
            .await
            .unwrap();
        let mut finished = Vec::new();
        for _ in 0..8 {
            match step(&mut b.state).await.unwrap() {
                StepOutcome::Finished { job, .. } => finished.push(job),
                StepOutcome::Idle => break,
                _ => {}
            }
        }
        assert_eq!(
            finished,
            [small, big],
            "the normal job ends before the bulk one"
        );
        let bulk = b.tasks_of(Priority::Bulk).await;
        assert_eq!(bulk.len(), 2, "the big job's last two pages: {bulk:?}");
        assert!(
            bulk.iter()
                .all(|t| t.job_id == big && t.priority == Priority::Bulk)
        );
        let normal = b.tasks().await;
        assert_eq!(normal.iter().filter(|t| t.job_id == big).count(), 2);
        assert_eq!(normal.iter().filter(|t| t.job_id == small).count(), 2);
        b.clean().await;
    }
}
