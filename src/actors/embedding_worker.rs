//! Embedding worker: turns one task into a [`Settlement`]. It loads the task's items in one
//! query, skips those whose content hash and model are already embedded, packs the rest into
//! requests by token count, takes a permit from the rate limiter for each request, calls the
//! provider, hands the vectors to the vector writer, and classifies every failure: transient
//! (retry with backoff), invalid input (the item fails now, never retried) or fatal (pause).
//!
//! The work is one plain async function, [`process_task`], which the actor wraps.

use super::embedding_pool::PoolMsg;
use super::rate_limiter::{CallOutcome, Permit, RateLimiterMsg};
use super::vector_writer::VectorWriterMsg;
use crate::config::RetrySettings;
use crate::domain::{ContextId, ItemId};
use crate::messages::{ItemOutcome, OutcomeKind, Settlement, TaskItem, TaskMessage};
use crate::providers::{Embedder, ProviderError, pack};
use crate::store::{Store, TaskItemRow};
use crate::vectors::VectorPoint;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::Instrument;

/// What a worker needs; shared by every worker of a daemon.
#[derive(Clone)]
pub struct WorkerContext {
    pub store: Store,
    pub embedder: Arc<dyn Embedder>,
    pub retry: RetrySettings,
    /// Registered names of the actors the worker calls (found again after their restarts).
    pub rate_limiter: String,
    pub vector_writer: String,
    pub pool: String,
    /// The embedding model recorded on completed items.
    pub model: String,
    /// Cut inputs over the per-input token limit instead of failing them.
    pub truncate: bool,
    /// Raised by the first worker that meets a fatal provider error, lowered on resume: no
    /// worker sends another request meanwhile, so a bad key costs one request, not one per
    /// worker or per task.
    pub halted: Arc<AtomicBool>,
}

/// One item being worked on.
struct Pending {
    item: TaskItem,
    row: TaskItemRow,
    input: String,
}

/// Exponential backoff with full jitter: a random wait in `[0, min(max, base * 2^attempt)]`.
/// (A few lines, so no crate: the server's `Retry-After` must be able to win, and the attempt
/// number comes from the message, not from a retry loop.)
pub fn backoff(retry: &RetrySettings, attempt: u32) -> Duration {
    let cap = retry
        .base_backoff_ms
        .saturating_mul(1u64 << attempt.min(20))
        .min(retry.max_backoff_ms);
    Duration::from_millis(rand::random_range(0..=cap))
}

fn is_up_to_date(row: &TaskItemRow, model: &str) -> bool {
    row.status == "COMPLETED"
        && row.embedded_model.as_deref() == Some(model)
        && row.embedded_hash.as_deref() == Some(row.content_hash.as_str())
}

async fn acquire_permit(ctx: &WorkerContext, tokens: u64) -> Result<Permit, String> {
    let Some(limiter) = ActorRef::<RateLimiterMsg>::where_is(ctx.rate_limiter.clone()) else {
        return Err("the rate limiter is restarting".into());
    };
    match limiter
        .call(|reply| RateLimiterMsg::Acquire { tokens, reply }, None)
        .await
    {
        Ok(CallResult::Success(permit)) => Ok(permit),
        _ => Err("the rate limiter stopped while waiting for a permit".into()),
    }
}

async fn write_vectors(ctx: &WorkerContext, points: Vec<VectorPoint>) -> Result<(), String> {
    let Some(writer) = ActorRef::<VectorWriterMsg>::where_is(ctx.vector_writer.clone()) else {
        return Err("the vector writer is restarting".into());
    };
    match writer
        .call(|reply| VectorWriterMsg::Upsert { points, reply }, None)
        .await
    {
        Ok(CallResult::Success(Ok(()))) => Ok(()),
        Ok(CallResult::Success(Err(e))) => Err(e.to_string()),
        _ => Err("the vector writer stopped during the write".into()),
    }
}

/// Counts a provider request by outcome, with its latency and (when embedded) its tokens.
fn record_request(
    result: &Result<crate::providers::Embedded, ProviderError>,
    took: Duration,
    tokens: usize,
) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(ProviderError::Transient {
            rate_limited: true, ..
        }) => "rate_limited",
        Err(e) if e.is_unreachable() => "unreachable",
        Err(ProviderError::Transient { .. }) => "transient",
        Err(ProviderError::InvalidInput { .. }) => "invalid_input",
        Err(ProviderError::Fatal { .. }) => "fatal",
    };
    metrics::counter!("embedq_api_requests_total", "outcome" => outcome).increment(1);
    metrics::histogram!("embedq_api_request_duration_seconds").record(took.as_secs_f64());
    if result.is_ok() {
        metrics::counter!("embedq_tokens_total").increment(tokens as u64);
    }
}

/// Decides what a transient failure means for an item: another attempt, or the end.
fn transient(ctx: &WorkerContext, item: &TaskItem, reason: &str) -> ItemOutcome {
    let attempts = item.attempt + 1;
    let kind = if attempts > ctx.retry.max_retries {
        OutcomeKind::Failed {
            reason: format!("gave up after {attempts} attempts; last error: {reason}"),
        }
    } else {
        OutcomeKind::Retrying {
            reason: reason.to_owned(),
        }
    };
    ItemOutcome {
        item_id: item.id.clone(),
        kind,
        attempts,
    }
}

/// Processes one task to its settlement. Never fails: every problem becomes an item outcome.
pub async fn process_task(ctx: &WorkerContext, task: &TaskMessage) -> Settlement {
    let mut outcomes: Vec<ItemOutcome> = Vec::with_capacity(task.items.len());
    let mut server_wait = Duration::ZERO;
    let mut fatal: Option<String> = None;
    let mut unattempted: Vec<TaskItem> = Vec::new();

    // Queued work of a cancelled job is dropped (acknowledged, not counted).
    if let Ok(Some(crate::domain::JobState::Cancelled)) = ctx.store.job_state(task.job_id).await {
        return Settlement {
            job_id: task.job_id,
            outcomes: Vec::new(),
            retries: Vec::new(),
            fatal: None,
        };
    }
    let ids: Vec<ItemId> = task.items.iter().map(|i| i.id.clone()).collect();
    let loaded = match crate::fault::fault_store!(&ctx.pool, "embedding_worker") {
        Some(reason) => Err(reason),
        None => ctx
            .store
            .load_task_items(&ids)
            .await
            .map_err(|e| e.to_string()),
    };
    let rows = match loaded {
        Ok(rows) => rows,
        Err(e) => {
            // The database is down: nothing was tried, so no attempt is used; the whole task
            // comes back after a wait (its settlement is committed once the database is back).
            tracing::warn!(error = %e, "could not load the task's items; it comes back later");
            let wait = Duration::from_millis(ctx.retry.base_backoff_ms) + backoff(&ctx.retry, 1);
            return settle(ctx, task, Vec::new(), wait, None, task.items.clone());
        }
    };
    let mut by_id: HashMap<String, TaskItemRow> =
        rows.into_iter().map(|r| (r.id.clone(), r)).collect();

    let limits = ctx.embedder.limits();
    let mut pending: Vec<Pending> = Vec::new();
    for item in &task.items {
        let Some(row) = by_id.remove(item.id.as_str()) else {
            // Deleted since planning: nothing to embed.
            outcomes.push(ItemOutcome {
                item_id: item.id.clone(),
                kind: OutcomeKind::Skipped,
                attempts: item.attempt,
            });
            continue;
        };
        if is_up_to_date(&row, &ctx.model) {
            outcomes.push(ItemOutcome {
                item_id: item.id.clone(),
                kind: OutcomeKind::Skipped,
                attempts: item.attempt,
            });
            continue;
        }
        if item.attempt > ctx.retry.max_retries {
            outcomes.push(ItemOutcome {
                item_id: item.id.clone(),
                kind: OutcomeKind::Failed {
                    reason: format!("attempts exhausted ({} used)", item.attempt),
                },
                attempts: item.attempt,
            });
            continue;
        }
        let input = row.content.clone();
        pending.push(Pending {
            item: item.clone(),
            row,
            input,
        });
    }

    // Pack by real token counts; an input over the per-input limit fails now (or is cut).
    let mut counts: Vec<usize> = pending
        .iter()
        .map(|p| ctx.embedder.count_tokens(&p.input))
        .collect();
    if ctx.truncate {
        for (p, count) in pending.iter_mut().zip(counts.iter_mut()) {
            if *count > limits.max_tokens_per_input {
                p.input = ctx.embedder.truncate(&p.input, limits.max_tokens_per_input);
                *count = ctx.embedder.count_tokens(&p.input);
            }
        }
    }
    let packed = pack(&counts, limits);
    for (index, tokens) in &packed.oversized {
        let p = &pending[*index];
        outcomes.push(ItemOutcome {
            item_id: p.item.id.clone(),
            kind: OutcomeKind::Failed {
                reason: format!(
                    "input has {tokens} tokens; the limit is {} per input (embedding.max_tokens_per_input)",
                    limits.max_tokens_per_input
                ),
            },
            attempts: p.item.attempt + 1,
        });
    }

    let mut requests: VecDeque<(Vec<usize>, usize)> = packed.requests.into();
    while let Some((indices, tokens)) = requests.pop_front() {
        if fatal.is_some() || ctx.halted.load(Ordering::SeqCst) {
            // Another request met the fatal error: keep these items for after the resume.
            unattempted.extend(indices.iter().map(|&i| pending[i].item.clone()));
            continue;
        }
        let permit = match acquire_permit(ctx, tokens as u64).await {
            Ok(p) => p,
            Err(reason) => {
                outcomes.extend(
                    indices
                        .iter()
                        .map(|&i| transient(ctx, &pending[i].item, &reason)),
                );
                continue;
            }
        };
        if ctx.halted.load(Ordering::SeqCst) {
            // Halted while waiting for the permit.
            drop(permit);
            requests.push_front((indices, tokens));
            continue;
        }
        let inputs: Vec<String> = indices.iter().map(|&i| pending[i].input.clone()).collect();
        let span = tracing::debug_span!("provider.embed", inputs = inputs.len(), tokens);
        let started = std::time::Instant::now();
        let result = ctx.embedder.embed(&inputs).instrument(span).await;
        record_request(&result, started.elapsed(), tokens);
        match result {
            Ok(embedded) => {
                permit.release(CallOutcome::Success(embedded.hints));
                let points: Vec<VectorPoint> = indices
                    .iter()
                    .zip(embedded.vectors)
                    .filter_map(|(&i, vector)| {
                        let row = &pending[i].row;
                        Some(VectorPoint {
                            item_id: pending[i].item.id.clone(),
                            context_id: ContextId::parse(row.context_id.clone()).ok()?,
                            content_hash: row.content_hash.clone(),
                            model: ctx.model.clone(),
                            vector,
                        })
                    })
                    .collect();
                match write_vectors(ctx, points).await {
                    Ok(()) => outcomes.extend(indices.iter().map(|&i| ItemOutcome {
                        item_id: pending[i].item.id.clone(),
                        kind: OutcomeKind::Completed {
                            content_hash: pending[i].row.content_hash.clone(),
                        },
                        attempts: pending[i].item.attempt + 1,
                    })),
                    Err(reason) => {
                        let reason = format!("writing vectors: {reason}");
                        outcomes.extend(
                            indices
                                .iter()
                                .map(|&i| transient(ctx, &pending[i].item, &reason)),
                        );
                    }
                }
            }
            Err(error) if error.is_unreachable() => {
                // The request never reached the provider: no attempt is used. The limiter
                // holds everyone (longer while it stays unreachable); this request goes
                // again when a permit comes.
                tracing::debug!(%error, "provider unreachable; the request waits for the next permit");
                permit.release(CallOutcome::Unreachable);
                requests.push_front((indices, tokens));
            }
            Err(error) => {
                if matches!(error, ProviderError::Fatal { .. }) {
                    // Before the permit goes back, so no waiting worker sends another request.
                    ctx.halted.store(true, Ordering::SeqCst);
                }
                let outcome = match &error {
                    ProviderError::Transient {
                        rate_limited: true,
                        retry_after,
                        hints,
                        ..
                    } => CallOutcome::RateLimited {
                        retry_after: *retry_after,
                        hints: *hints,
                    },
                    ProviderError::Transient { .. } => CallOutcome::Overloaded,
                    _ => CallOutcome::Neutral,
                };
                permit.release(outcome);
                match error {
                    ProviderError::Transient {
                        reason,
                        retry_after,
                        ..
                    } => {
                        server_wait = server_wait.max(retry_after.unwrap_or_default());
                        outcomes.extend(
                            indices
                                .iter()
                                .map(|&i| transient(ctx, &pending[i].item, &reason)),
                        );
                    }
                    ProviderError::InvalidInput { reason } if indices.len() > 1 => {
                        // One input spoiled the request: send each alone to find which.
                        tracing::info!(%reason, inputs = indices.len(), "request refused; retrying its inputs one by one");
                        for &i in indices.iter().rev() {
                            requests.push_front((vec![i], counts[i].max(1)));
                        }
                    }
                    ProviderError::InvalidInput { reason } => {
                        let i = indices[0];
                        outcomes.push(ItemOutcome {
                            item_id: pending[i].item.id.clone(),
                            kind: OutcomeKind::Failed { reason },
                            attempts: pending[i].item.attempt + 1,
                        });
                    }
                    ProviderError::Fatal { reason } => {
                        tracing::error!(%reason, "the provider is unusable; pausing intake");
                        unattempted.extend(indices.iter().map(|&i| pending[i].item.clone()));
                        fatal = Some(reason);
                    }
                }
            }
        }
    }
    settle(ctx, task, outcomes, server_wait, fatal, unattempted)
}

/// Builds the settlement and its retry task: items retrying travel with their new attempt
/// count; items never attempted because of a fatal error travel with their count unchanged.
fn settle(
    ctx: &WorkerContext,
    task: &TaskMessage,
    outcomes: Vec<ItemOutcome>,
    server_wait: Duration,
    fatal: Option<String>,
    unattempted: Vec<TaskItem>,
) -> Settlement {
    let mut retry_items: Vec<TaskItem> = outcomes
        .iter()
        .filter(|o| matches!(o.kind, OutcomeKind::Retrying { .. }))
        .map(|o| TaskItem {
            id: o.item_id.clone(),
            attempt: o.attempts,
        })
        .collect();
    let highest = retry_items.iter().map(|i| i.attempt).max().unwrap_or(0);
    retry_items.extend(unattempted);
    let retries = if retry_items.is_empty() {
        Vec::new()
    } else {
        let wait = if highest == 0 {
            server_wait
        } else {
            backoff(&ctx.retry, highest - 1).max(server_wait)
        };
        vec![(
            TaskMessage {
                job_id: task.job_id,
                items: retry_items,
            },
            wait,
        )]
    };
    Settlement {
        job_id: task.job_id,
        outcomes,
        retries,
        fatal,
    }
}

pub enum WorkerMsg {
    Work { entry_id: String, task: TaskMessage },
}

#[derive(Clone)]
pub struct WorkerArgs {
    pub index: usize,
    pub ctx: WorkerContext,
}

pub struct EmbeddingWorker;

impl Actor for EmbeddingWorker {
    type Msg = WorkerMsg;
    type State = WorkerArgs;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: WorkerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerMsg::Work { entry_id, task } => {
                crate::fault::fault_point!(
                    _myself,
                    &task.items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>()
                );
                let span = tracing::info_span!("worker.task", worker = state.index, job = %task.job_id, items = task.items.len());
                let settlement = process_task(&state.ctx, &task).instrument(span).await;
                match ActorRef::<PoolMsg>::where_is(state.ctx.pool.clone()) {
                    Some(pool) => {
                        let _ = pool.cast(PoolMsg::Finished {
                            worker: state.index,
                            entry_id,
                            settlement,
                        });
                    }
                    None => tracing::warn!("the pool is restarting; the task will be redelivered"),
                }
            }
        }
        Ok(())
    }
}
