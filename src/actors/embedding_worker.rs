//! Embedding worker: makes one request at a time for the pool that owns it — the call to the
//! provider under the permit the pool obtained, then the write of the vectors (held and written
//! again while the vector store cannot be reached: they are paid for) — and answers with the
//! request's [`RequestOutcome`]. It decides nothing about attempts or retries: the
//! pool does, with the pure steps of [`crate::embedding`]. If it crashes mid-request, the pool
//! (its supervisor) settles the request's items as a crash and restarts it.

use super::address::Address;
use super::rate_limiter::Permit;
use super::vector_writer::VectorWriterMsg;
use crate::embedding::{Answer, EmbedRequest, RequestOutcome, to_vectors};
use crate::providers::{Embedder, InputKind, ProviderError, RateLimitHints};
use crate::retry::Backoff;
use crate::vectors::VectorError;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

pub enum WorkerMsg {
    Embed {
        request: EmbedRequest,
        permit: Permit,
        reply: RpcReplyPort<Answer>,
    },
}

#[derive(Clone)]
pub struct WorkerArgs {
    pub index: usize,
    pub embedder: Arc<dyn Embedder>,
    pub vector_writer: Address<VectorWriterMsg>,
}

/// The request, from the call to the stored vectors, with the tokens the provider billed.
async fn embed(args: &WorkerArgs, request: &EmbedRequest, permit: Permit) -> Answer {
    match permit
        .call(
            args.embedder.as_ref(),
            &request.texts(),
            InputKind::Document,
        )
        .await
    {
        Ok(billed) => Answer {
            outcome: store(args, request, billed.embedded.vectors).await,
            billed_tokens: billed.tokens,
        },
        Err(e) => Answer {
            outcome: RequestOutcome::Provider(e),
            billed_tokens: 0,
        },
    }
}

/// The answer's vectors checked against the request and written to the vector store.
async fn store(
    args: &WorkerArgs,
    request: &EmbedRequest,
    vectors: Vec<Vec<f32>>,
) -> RequestOutcome {
    let computed = match to_vectors(request, vectors) {
        Ok(computed) => computed,
        Err(problem) => {
            return RequestOutcome::Provider(ProviderError::Transient {
                reason: format!("bad response body: {problem}"),
                retry_after: None,
                rate_limited: false,
                unreachable: false,
                hints: RateLimitHints::default(),
            });
        }
    };
    // The vectors are paid for: while the vector store cannot be reached (or the writer
    // restarts), keep them and write again, using no attempt, for up to STORE_OUTAGE_WAIT.
    let mut waits = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let started = Instant::now();
    loop {
        let attempt = computed.clone();
        let written = args
            .vector_writer
            .call(
                |reply| VectorWriterMsg::Upsert {
                    vectors: attempt,
                    reply,
                },
                None,
            )
            .await;
        let unavailable = match written {
            Ok(Ok(not_stored)) => {
                let not_stored = not_stored
                    .into_iter()
                    .filter_map(|(item, why)| {
                        let index = request.inputs.iter().position(|i| i.item_id == item)?;
                        Some((index, why))
                    })
                    .collect();
                return RequestOutcome::Stored { not_stored };
            }
            Ok(Err(e @ VectorError::Unavailable(_))) => e.to_string(),
            Ok(Err(e)) => return RequestOutcome::Store(e.to_string()),
            Err(unreachable) => unreachable.to_string(),
        };
        if started.elapsed() >= STORE_OUTAGE_WAIT {
            return RequestOutcome::Store(unavailable);
        }
        let wait = waits.next_wait();
        tracing::warn!(reason = %unavailable, retry_in = ?wait, "vectors not written yet; holding them");
        tokio::time::sleep(wait).await;
    }
}

/// How long a worker holds embedded vectors while the vector store cannot be reached before
/// it gives them up (their items then use an attempt).
const STORE_OUTAGE_WAIT: Duration = Duration::from_secs(300);

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
            WorkerMsg::Embed {
                request,
                permit,
                reply,
            } => {
                crate::fault::fault_point!(
                    _myself,
                    &request
                        .inputs
                        .iter()
                        .map(|i| i.item_id.as_str())
                        .collect::<Vec<_>>()
                );
                let span = tracing::info_span!(
                    "worker.request",
                    worker = state.index,
                    request = request.id,
                    inputs = request.inputs.len()
                );
                let answer = embed(state, &request, permit).instrument(span).await;
                let _ = reply.send(answer);
            }
        }
        Ok(())
    }
}
