//! Status writer: commits settlements in batches and only then acknowledges their stream
//! entries. Order of one flush: retries into the retry set, then one SQL transaction (item rows,
//! per-job outcomes counted once, job counters, finished jobs), then acknowledgement with the
//! dead letters of items that ended FAILED. A crash anywhere before the acknowledgement leaves
//! the entries pending; they are processed again and, thanks to the per-job outcome rows,
//! counted once.

use crate::domain::ItemId;
use crate::messages::{OutcomeKind, Settlement, TaskMessage};
use crate::queue::{DeadItem, Delivery, RetrySet};
use crate::store::Store;
use ractor::{Actor, ActorProcessingErr, ActorRef};
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

pub struct StatusWriterState {
    args: StatusWriterArgs,
    batch: Vec<(Delivery<TaskMessage>, Settlement)>,
    flush_scheduled: bool,
    backoff: Duration,
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

/// One flush. Returns an error (and keeps the batch) when anything before the acknowledgement
/// failed.
#[tracing::instrument(name = "status.flush", skip_all, fields(tasks = batch.len()))]
async fn flush(
    args: &StatusWriterArgs,
    batch: &[(Delivery<TaskMessage>, Settlement)],
) -> Result<(), String> {
    for (_, settlement) in batch {
        if let Some((task, wait)) = &settlement.retry {
            args.retries
                .schedule(task, *wait)
                .await
                .map_err(|e| format!("scheduling a retry: {e}"))?;
        }
    }
    let refs: Vec<(crate::domain::JobId, &[crate::messages::ItemOutcome])> = batch
        .iter()
        .map(|(_, s)| (s.job_id, s.outcomes.as_slice()))
        .collect();
    let report = args
        .store
        .commit_outcomes(&refs, &args.model)
        .await
        .map_err(|e| format!("committing outcomes: {e}"))?;
    let mut outcomes = [0u64; 3];
    for (completed, failed, skipped) in report.counted.values() {
        outcomes[0] += *completed as u64;
        outcomes[1] += *failed as u64;
        outcomes[2] += *skipped as u64;
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
        if let Ok(id) = crate::domain::JobId::parse(job)
            && let Ok(Some(record)) = args.store.get_job(id).await
            && let Some(finished) = record.finished_at
        {
            let seconds = (finished - record.created_at).max(0) as f64 / 1000.0;
            metrics::histogram!("embedq_job_duration_seconds").record(seconds);
            metrics::counter!("embedq_jobs_total", "state" => record.state.as_str()).increment(1);
        }
    }
    let dead: Vec<DeadItem> = batch
        .iter()
        .flat_map(|(_, s)| {
            s.outcomes.iter().filter_map(move |o| match &o.kind {
                OutcomeKind::Failed { reason } => Some(DeadItem {
                    job_id: s.job_id.to_string(),
                    item_id: ItemId::as_str(&o.item_id).to_owned(),
                    attempts: o.attempts,
                    reason: reason.clone(),
                }),
                _ => None,
            })
        })
        .collect();
    let ids: Vec<String> = batch.iter().map(|(d, _)| d.entry_id.clone()).collect();
    if let Some((delivery, _)) = batch.first()
        && let Err(e) = delivery.acker.ack_settled(&ids, &dead).await
    {
        // Committed but not acknowledged: the entries come back and are counted once.
        tracing::warn!(error = %e, "could not acknowledge settled tasks; they will be reclaimed");
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
            backoff: args.flush_every,
            args,
            batch: Vec::new(),
            flush_scheduled: false,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Graceful stop: commit what is held; on failure the entries stay pending.
        if !state.batch.is_empty() && flush(&state.args, &state.batch).await.is_ok() {
            state.batch.clear();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            StatusMsg::Settle(settled) => {
                let Settled {
                    delivery,
                    settlement,
                } = *settled;
                state.batch.push((delivery, settlement));
                if state.batch.len() >= state.args.max_batch {
                    let _ = myself.cast(StatusMsg::Flush);
                } else {
                    let every = state.args.flush_every;
                    Self::schedule(&myself, state, every);
                }
            }
            StatusMsg::Flush => {
                state.flush_scheduled = false;
                if state.batch.is_empty() {
                    return Ok(());
                }
                match flush(&state.args, &state.batch).await {
                    Ok(()) => {
                        state.batch.clear();
                        state.backoff = state.args.flush_every;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?state.backoff, "status flush failed; keeping the batch");
                        let wait = state.backoff;
                        state.backoff = (state.backoff * 2).min(MAX_BACKOFF);
                        Self::schedule(&myself, state, wait);
                    }
                }
            }
        }
        Ok(())
    }
}
