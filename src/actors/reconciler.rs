//! Reconciler: whatever Redis forgets, SQL remembers. Every daemon runs one; a lease in Redis
//! makes one of them active at a time. Each round (a quarter of the visibility timeout) it
//! repairs what Redis lost:
//!
//! - a job recorded in another Redis epoch than the current one (Redis restarted without
//!   persistence, or was flushed): a job not fully planned is enqueued again and planned from
//!   its first item; a fully planned job's unfinished items (its membership rows without an
//!   outcome) are planned again from SQL, page by page, with a cursor of their own;
//! - a fully planned job that still has unfinished items while nothing at all is queued (no
//!   task on the stream, pending ones included, and no retry waiting): those items have no
//!   task anywhere, so they are planned again too.
//!
//! - deleted items whose points the API could not remove, and metadata changes it could not
//!   write into payloads (see [`crate::point_sync`]): applied now.
//!
//! Items already final are never counted again (their rows have their outcome); an item whose
//! task comes back twice is embedded at most twice and counted once.

use crate::domain::{JobId, now_millis};
use crate::messages::{JobMessage, TaskItem, TaskMessage};
use crate::queue::{Keys, Lease, PagePlanned, PlanScripts, QueueError, enqueue_job};
use crate::store::{Store, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use redis::aio::ConnectionManager;
use serde::Serialize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::task::JoinHandle;

/// What this daemon's reconciler did, for `/readyz`.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct ReconcilerFigures {
    /// Whether this daemon holds the reconciler's lease.
    pub active: bool,
    pub jobs_enqueued: u64,
    pub jobs_replanned: u64,
    pub items_replanned: u64,
    /// Points of deleted items removed, and payloads updated, that the API had left owed.
    pub points_removed: u64,
    pub payloads_updated: u64,
    /// When the last repair happened (ms since the epoch).
    pub last_repair_ms: Option<i64>,
    pub last_error: Option<String>,
}

/// The figures, shared with the HTTP surface.
#[derive(Debug, Default, Clone)]
pub struct ReconcilerReport(Arc<Mutex<ReconcilerFigures>>);

impl ReconcilerReport {
    pub fn snapshot(&self) -> ReconcilerFigures {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut ReconcilerFigures)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

pub enum ReconcilerMsg {
    /// One round (self-sent on a timer).
    Tick,
}

#[derive(Clone)]
pub struct ReconcilerArgs {
    pub store: Store,
    pub scripts: PlanScripts,
    pub redis: ConnectionManager,
    pub keys: Keys,
    /// How often a round runs.
    pub period: Duration,
    /// How long a job whose epoch was never recorded may be left before it is enqueued again.
    pub grace: Duration,
    pub page_size: usize,
    pub task_size: usize,
    /// Planning again waits while the tasks stream holds more entries than this.
    pub max_queued_tasks: u64,
    pub report: ReconcilerReport,
    pub point_sync: crate::point_sync::PointSync,
}

pub struct ReconcilerState {
    args: ReconcilerArgs,
    lease: Lease,
    active: bool,
    timer: Option<JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Sync(#[from] crate::point_sync::SyncError),
    #[error("{0}")]
    Injected(String),
}

/// What one round repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Repairs {
    /// Jobs not fully planned, enqueued again to be planned from the start.
    pub jobs_enqueued: usize,
    /// Fully planned jobs whose unfinished items were planned again.
    pub jobs_replanned: usize,
    pub items_replanned: i64,
    pub points_removed: usize,
    pub payloads_updated: usize,
}

/// How planning a job's unfinished items again went.
enum Replanned {
    Done(i64),
    /// The tasks stream is full: go on next round.
    Throttled,
    /// Redis lost its data again meanwhile: start over next round.
    EpochChanged,
}

/// Plans a job's unfinished items again in `epoch`, from where an earlier round stopped.
async fn replan(
    args: &ReconcilerArgs,
    job: JobId,
    epoch: &str,
) -> Result<Replanned, ReconcileError> {
    let mut progress = args.scripts.replan_progress(job).await?;
    let record = args.store.get_job(job).await?;
    // A reconcile job's items are embedded again even though SQL says they are up to date.
    let reembed = record
        .as_ref()
        .is_some_and(|j| j.kind == crate::domain::JobKind::Reconcile);
    // The tasks keep the job's priority and tenant.
    let priority = record.as_ref().map(|j| j.priority).unwrap_or_default();
    let tenant = record.and_then(|j| j.tenant);
    loop {
        if args.scripts.waiting_tasks().await?[priority.rank()] >= args.max_queued_tasks {
            return Ok(Replanned::Throttled);
        }
        let cursor = progress
            .cursor
            .as_deref()
            .map(crate::domain::ItemId::parse)
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.0))?;
        let page = args
            .store
            .unfinished_page(job, cursor.as_ref(), args.page_size)
            .await?;
        let Some(last) = page.last() else {
            args.scripts.forget_replan(job).await?;
            return Ok(Replanned::Done(progress.planned));
        };
        let next = last.id.as_str().to_owned();
        let tasks: Vec<String> = page
            .chunks(args.task_size)
            .map(|chunk| {
                TaskMessage {
                    job_id: job,
                    items: chunk
                        .iter()
                        .map(|i| TaskItem {
                            id: i.id.clone(),
                            attempt: i.attempts.clamp(0, u32::MAX as i64) as u32,
                        })
                        .collect(),
                    isolated: false,
                    reembed,
                    priority,
                    tenant: tenant.clone(),
                }
                .payload()
            })
            .collect();
        let after = progress.planned + page.len() as i64;
        match args
            .scripts
            .write_replan_page(&crate::queue::PageWrite {
                job,
                priority,
                epoch,
                expected: progress.cursor.as_deref(),
                next_cursor: &next,
                planned_after: after,
                tasks: &tasks,
            })
            .await?
        {
            PagePlanned::Written => {
                progress.cursor = Some(next);
                progress.planned = after;
            }
            PagePlanned::Stale(theirs) => progress = theirs,
            PagePlanned::EpochChanged => return Ok(Replanned::EpochChanged),
        }
    }
}

/// One round; public to the crate so a test can drive it without the actor.
pub(crate) async fn reconcile(args: &ReconcilerArgs) -> Result<Repairs, ReconcileError> {
    let mut repairs = Repairs::default();
    // Neither part waits on the other: a vector store outage does not hold back what Redis
    // lost, nor the other way round.
    let redis = repair_redis(args, &mut repairs).await;
    let swept = args.point_sync.sweep().await;
    if let Ok(swept) = &swept {
        repairs.points_removed = swept.points_removed;
        repairs.payloads_updated = swept.payloads_updated;
    }
    redis?;
    swept?;
    Ok(repairs)
}

/// Re-enqueues and plans again what Redis lost.
async fn repair_redis(args: &ReconcilerArgs, repairs: &mut Repairs) -> Result<(), ReconcileError> {
    let epoch = args.scripts.epoch().await?;
    let unknown_before = now_millis() - args.grace.as_millis() as i64;
    for job in args
        .store
        .stranded_jobs(&epoch, unknown_before, 100)
        .await?
    {
        if job.planned {
            match replan(args, job.id, &epoch).await? {
                Replanned::Done(items) => {
                    args.store.set_job_epoch(job.id, &epoch).await?;
                    tracing::warn!(job = %job.id, items, "Redis lost this job's tasks; its unfinished items were planned again from SQL");
                    repairs.jobs_replanned += 1;
                    repairs.items_replanned += items;
                }
                Replanned::Throttled => return Ok(()),
                Replanned::EpochChanged => return Ok(()),
            }
        } else {
            // The entry first: if this daemon stops right after, the job still reads as of
            // another epoch and is enqueued again (a second entry is harmless).
            let mut conn = args.redis.clone();
            let enqueued =
                enqueue_job(&mut conn, &args.keys, &JobMessage::recorded(job.id)).await?;
            if enqueued.epoch != epoch {
                return Ok(());
            }
            args.store.restart_planning(job.id, &epoch).await?;
            tracing::warn!(job = %job.id, "Redis lost this job's entry; it was enqueued again and is planned from the start");
            repairs.jobs_enqueued += 1;
        }
    }
    // Nothing queued at all, yet planned jobs have unfinished items: their tasks are gone.
    let read_at = now_millis() - 1_000;
    if args.scripts.nothing_queued().await? {
        for job in args
            .store
            .planned_jobs_with_unfinished_items(read_at, 100)
            .await?
        {
            match replan(args, job, &epoch).await? {
                Replanned::Done(items) => {
                    tracing::warn!(%job, items, "no task was left for this job's unfinished items; they were planned again from SQL");
                    repairs.jobs_replanned += 1;
                    repairs.items_replanned += items;
                }
                Replanned::Throttled | Replanned::EpochChanged => return Ok(()),
            }
        }
    }
    Ok(())
}

pub struct Reconciler;

impl Actor for Reconciler {
    type Msg = ReconcilerMsg;
    type State = ReconcilerState;
    type Arguments = ReconcilerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ReconcilerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let lease = Lease::new(
            args.redis.clone(),
            args.keys.reconciler_lease(),
            args.period * 3,
        );
        let timer = myself.send_interval(args.period, || ReconcilerMsg::Tick);
        Ok(ReconcilerState {
            args,
            lease,
            active: false,
            timer: Some(timer),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        _message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::fault::fault_point!(_myself);
        let held = match state.lease.renew().await {
            Ok(held) => held,
            Err(e) => {
                tracing::debug!(error = %e, "reconciler lease unavailable");
                false
            }
        };
        if held != state.active {
            state.active = held;
            state.args.report.update(|r| r.active = held);
            tracing::info!(active = held, "reconciler lease");
        }
        if !held {
            return Ok(());
        }
        let round = match crate::fault::fault_store!(_myself) {
            Some(reason) => Err(ReconcileError::Injected(reason)),
            None => reconcile(&state.args).await,
        };
        match round {
            Ok(repairs) if repairs != Repairs::default() => {
                let items = repairs.items_replanned.max(0) as u64;
                metrics::counter!("embedq_reconciled_items_total").increment(items);
                state.args.report.update(|r| {
                    r.jobs_enqueued += repairs.jobs_enqueued as u64;
                    r.jobs_replanned += repairs.jobs_replanned as u64;
                    r.items_replanned += items;
                    r.points_removed += repairs.points_removed as u64;
                    r.payloads_updated += repairs.payloads_updated as u64;
                    r.last_repair_ms = Some(now_millis());
                    r.last_error = None;
                });
                tracing::info!(
                    ?repairs,
                    "reconciled what Redis lost or the vector store was owed"
                );
            }
            Ok(_) => state.args.report.update(|r| r.last_error = None),
            Err(e) => {
                tracing::warn!(error = %e, "reconciling failed; trying again next round");
                state
                    .args
                    .report
                    .update(|r| r.last_error = Some(e.to_string()));
            }
        }
        Ok(())
    }
}
