//! Status writer: commits settlements in batches and only then acknowledges their stream
//! entries. Order of one flush: one SQL transaction (item rows, per-job outcomes counted once,
//! job counters, finished jobs), then retries into the retry set, then acknowledgement with the
//! dead letters of the items this commit counted FAILED. A crash anywhere before the
//! acknowledgement leaves the entries pending; they are processed again and, thanks to the
//! per-job outcome rows, counted once. A committed batch whose retries or acknowledgement
//! failed (Redis down) is kept and finished later, without committing it again, so each item
//! that ends FAILED gets exactly one dead letter.

use crate::domain::{ItemId, JobId};
use crate::messages::{OutcomeKind, Settlement, TaskMessage};
use crate::queue::{DeadItem, Delivery, RetrySet};
use crate::retry::Backoff;
use crate::store::{CommitReport, Store, TaskOutcomes};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::HashSet;
use std::time::Duration;

pub enum StatusMsg {
    Settle(Box<Settled>),
    Flush,
}

/// A task's delivery (to acknowledge) and what became of its items.
pub struct Settled {
    pub delivery: Delivery<TaskMessage>,
    pub settlement: Settlement,
}

#[derive(Clone)]
pub struct StatusWriterArgs {
    pub store: Store,
    pub retries: RetrySet,
    pub model: String,
    pub max_batch: usize,
    pub flush_every: Duration,
}

type Batch = Vec<(Delivery<TaskMessage>, Settlement)>;

/// A batch committed to SQL whose retries or acknowledgement are still to be done.
struct Committed {
    batch: Batch,
    dead: Vec<DeadItem>,
    retries_scheduled: bool,
}

pub struct StatusWriterState {
    args: StatusWriterArgs,
    batch: Batch,
    committed: Option<Committed>,
    flush_scheduled: bool,
    /// While flushes fail (the database or Redis is down).
    failures: Backoff,
}

pub struct StatusWriter;

const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl StatusWriter {
    fn schedule(myself: &ActorRef<StatusMsg>, state: &mut StatusWriterState, after: Duration) {
        if !state.flush_scheduled {
            state.flush_scheduled = true;
            myself.send_after(after, || StatusMsg::Flush);
        }
    }
}

/// Commits a batch in one transaction and records what it counted.
#[tracing::instrument(name = "status.commit", skip_all, fields(tasks = batch.len()))]
async fn commit(args: &StatusWriterArgs, batch: &Batch) -> Result<CommitReport, String> {
    let refs: Vec<TaskOutcomes<'_>> = batch
        .iter()
        .map(|(_, s)| TaskOutcomes {
            job_id: s.job_id,
            outcomes: &s.outcomes,
            billed_tokens: s.billed_tokens,
        })
        .collect();
    let report = args
        .store
        .commit_outcomes(&refs, &args.model)
        .await
        .map_err(|e| format!("committing outcomes: {e}"))?;
    let mut outcomes = [0u64; 3];
    for counts in report.counted.values() {
        outcomes[0] += counts.completed as u64;
        outcomes[1] += counts.failed as u64;
        outcomes[2] += counts.skipped as u64;
    }
    for (label, n) in ["completed", "failed", "skipped"].iter().zip(outcomes) {
        if n > 0 {
            metrics::counter!("embedq_items_total", "outcome" => *label).increment(n);
        }
    }
    let retried = batch
        .iter()
        .flat_map(|(_, s)| s.outcomes.iter())
        .filter(|o| matches!(o.kind, OutcomeKind::Retrying { .. }))
        .count();
    if retried > 0 {
        metrics::counter!("embedq_retries_total").increment(retried as u64);
    }
    for job in &report.finished {
        tracing::info!(%job, "job finished");
        if let Ok(Some(record)) = args.store.get_job(*job).await
            && let Some(finished) = record.finished_at
        {
            let seconds = (finished - record.created_at).max(0) as f64 / 1000.0;
            metrics::histogram!("embedq_job_duration_seconds").record(seconds);
            metrics::counter!("embedq_jobs_total", "state" => record.state.as_str()).increment(1);
        }
    }
    Ok(report)
}

/// The dead letters of a committed batch: one per FAILED outcome the commit counted (a failure
/// reported twice, by two copies of a task, is counted once and dead-lettered once).
fn dead_letters(batch: &Batch, report: &CommitReport) -> Vec<DeadItem> {
    let mut counted: HashSet<(JobId, ItemId)> = report.newly_failed.iter().cloned().collect();
    let mut dead = Vec::new();
    for (_, s) in batch {
        for o in &s.outcomes {
            if let OutcomeKind::Failed { reason } = &o.kind
                && counted.remove(&(s.job_id, o.item_id.clone()))
            {
                dead.push(DeadItem {
                    job_id: s.job_id,
                    item_id: o.item_id.clone(),
                    attempts: o.attempts,
                    reason: reason.clone(),
                });
            }
        }
    }
    dead
}

/// Schedules the retries of a committed batch (after the commit: a retry never overtakes the
/// outcome that sent it), then acknowledges its entries with its dead letters.
async fn finish_with(retries: &RetrySet, committed: &mut Committed) -> Result<(), String> {
    if !committed.retries_scheduled {
        for (_, settlement) in &committed.batch {
            for (task, wait) in &settlement.retries {
                retries
                    .schedule(task, *wait)
                    .await
                    .map_err(|e| format!("scheduling a retry: {e}"))?;
            }
        }
        committed.retries_scheduled = true;
    }
    // A batch holds tasks of several priorities: each entry is acknowledged on its own
    // stream, all in one transaction with the dead letters.
    let mut streams: Vec<(&crate::queue::StreamAcker, Vec<String>)> = Vec::new();
    for (delivery, _) in &committed.batch {
        match streams
            .iter_mut()
            .find(|(acker, _)| acker.stream() == delivery.acker.stream())
        {
            Some((_, ids)) => ids.push(delivery.entry_id.clone()),
            None => streams.push((&delivery.acker, vec![delivery.entry_id.clone()])),
        }
    }
    if let Some(((first, ids), others)) = streams.split_first() {
        first
            .ack_settled_with(others, ids, &committed.dead)
            .await
            .map_err(|e| format!("acknowledging: {e}"))?;
    }
    Ok(())
}

/// One flush: first what was committed earlier and not yet acknowledged, then the new batch.
async fn flush(state: &mut StatusWriterState) -> Result<(), String> {
    if let Some(committed) = state.committed.as_mut() {
        finish_with(&state.args.retries, committed).await?;
        state.committed = None;
    }
    if state.batch.is_empty() {
        return Ok(());
    }
    let report = commit(&state.args, &state.batch).await?;
    let batch = std::mem::take(&mut state.batch);
    let dead = dead_letters(&batch, &report);
    let mut committed = Committed {
        batch,
        dead,
        retries_scheduled: false,
    };
    if let Err(e) = finish_with(&state.args.retries, &mut committed).await {
        state.committed = Some(committed);
        return Err(e);
    }
    Ok(())
}

impl Actor for StatusWriter {
    type Msg = StatusMsg;
    type State = StatusWriterState;
    type Arguments = StatusWriterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: StatusWriterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(StatusWriterState {
            failures: Backoff::new(args.flush_every, MAX_BACKOFF),
            args,
            batch: Vec::new(),
            committed: None,
            flush_scheduled: false,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Graceful stop: commit and acknowledge what is held; on failure the entries stay
        // pending.
        if let Err(e) = flush(state).await {
            tracing::warn!(error = %e, "could not settle the last batch; its tasks will be taken again");
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
            StatusMsg::Settle(settled) => {
                let Settled {
                    delivery,
                    settlement,
                } = *settled;
                state.batch.push((delivery, settlement));
                let healthy = state.committed.is_none() && state.failures.failures() == 0;
                if state.batch.len() >= state.args.max_batch && healthy {
                    let _ = myself.cast(StatusMsg::Flush);
                } else {
                    let every = state.args.flush_every;
                    Self::schedule(&myself, state, every);
                }
            }
            StatusMsg::Flush => {
                state.flush_scheduled = false;
                if state.batch.is_empty() && state.committed.is_none() {
                    return Ok(());
                }
                let flushed = match crate::fault::fault_store!(myself) {
                    Some(reason) => Err(reason),
                    None => flush(state).await,
                };
                match flushed {
                    Ok(()) => state.failures.reset(),
                    Err(e) => {
                        let wait = state.failures.next_wait();
                        tracing::warn!(error = %e, retry_in = ?wait, "status flush failed; keeping the batch");
                        Self::schedule(&myself, state, wait);
                    }
                }
            }
        }
        Ok(())
    }
}
