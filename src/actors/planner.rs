//! Planner: expands a job's scope into task messages of bounded size, one keyset page per
//! step, and records its cursor so a restart resumes planning instead of restarting it.
//!
//! Each page is written with its cursor by one atomic Redis script (see
//! [`crate::queue::PlanScripts`]), so every item of a job is planned exactly once, across
//! crashes and racing planners. Memory holds one page at a time, whatever the job's size;
//! planning waits while the tasks stream holds more than `max_queued_tasks` entries.

use super::reconcile_job::{self, Findings, ReconcileError, Reconciling};
use crate::config::PlannerSettings;
use crate::domain::{JobId, JobKind, JobScope};
use crate::messages::{JobMessage, TaskItem, TaskMessage};
use crate::point_sync::PointSync;
use crate::queue::{Delivery, PagePlanned, PlanProgress, PlanScripts, QueueError};
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
}

/// The job being planned.
struct Planning {
    delivery: Delivery<JobMessage>,
    job: JobId,
    kind: JobKind,
    scope: JobScope,
    model: String,
    progress: PlanProgress,
    /// The Redis epoch the job's pages are written in.
    epoch: String,
    /// A reconcile job's findings so far.
    findings: Findings,
}

pub struct PlannerState {
    args: PlannerArgs,
    queue: VecDeque<Delivery<JobMessage>>,
    current: Option<Planning>,
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
/// acknowledged. The caller drops it as the current job.
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
/// reconciler enqueues the job again. The caller drops it as the current job.
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

/// One step of planning; the actor only schedules the next one. Tested below without the
/// actor runtime.
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
                state.current = Some(Planning {
                    delivery,
                    job: job_id,
                    kind: job.kind,
                    scope: job.scope,
                    model: job.model,
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
        state.current = None;
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
        .write_page(
            job,
            &planning.epoch,
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
            state.current = None;
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
            current: None,
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
                },
                model: "m".into(),
                visibility_timeout: Duration::from_secs(30),
                vectors: vectors.clone(),
                point_sync: crate::point_sync::PointSync::new(store.clone(), vectors),
                dimension: 384,
                generation: 1,
            },
            queue: VecDeque::new(),
            current: None,
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
            let scope = JobScope::Context {
                context_id: ContextId::parse(context).unwrap(),
            };
            let new = NewJob {
                id: JobId::new(),
                kind: JobKind::Embed,
                scope,
                model: "m".into(),
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
            let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(self.keys.tasks_stream())
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
        };
        let epoch = scripts.epoch().await.unwrap();
        let written = scripts
            .write_page(
                job,
                &epoch,
                Some("ctx-0009"),
                "ctx-0019",
                20,
                &[theirs.payload()],
            )
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
}
