//! Embedding worker: makes one request at a time for the pool that owns it — the call to the
//! provider under the permit the pool obtained, then the write of the vectors — and answers
//! with the request's [`RequestOutcome`]. It decides nothing about attempts or retries: the
//! pool does, with the pure steps of [`crate::embedding`]. If it crashes mid-request, the pool
//! (its supervisor) settles the request's items as a crash and restarts it.

use super::address::Address;
use super::rate_limiter::Permit;
use super::vector_writer::VectorWriterMsg;
use crate::embedding::{EmbedRequest, RequestOutcome, to_points};
use crate::providers::{Embedder, ProviderError, RateLimitHints};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;
use tracing::Instrument;

pub enum WorkerMsg {
    Embed {
        request: EmbedRequest,
        permit: Permit,
        reply: RpcReplyPort<RequestOutcome>,
    },
}

#[derive(Clone)]
pub struct WorkerArgs {
    pub index: usize,
    pub embedder: Arc<dyn Embedder>,
    pub vector_writer: Address<VectorWriterMsg>,
    /// The model recorded in every point.
    pub model: String,
}

/// The request, from the call to the stored vectors.
async fn embed(args: &WorkerArgs, request: &EmbedRequest, permit: Permit) -> RequestOutcome {
    let vectors = match permit.call(args.embedder.as_ref(), &request.texts()).await {
        Ok(embedded) => embedded.vectors,
        Err(e) => return RequestOutcome::Provider(e),
    };
    let points = match to_points(request, vectors, &args.model) {
        Ok(points) => points,
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
    let written = args
        .vector_writer
        .call(|reply| VectorWriterMsg::Upsert { points, reply }, None)
        .await;
    match written {
        Ok(Ok(refused)) => {
            let rejected = refused
                .into_iter()
                .filter_map(|(item, reason)| {
                    let index = request.inputs.iter().position(|i| i.item_id == item)?;
                    Some((index, reason))
                })
                .collect();
            RequestOutcome::Stored { rejected }
        }
        Ok(Err(e)) => RequestOutcome::Store(e.to_string()),
        Err(unreachable) => RequestOutcome::Store(unreachable.to_string()),
    }
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
                let outcome = embed(state, &request, permit).instrument(span).await;
                let _ = reply.send(outcome);
            }
        }
        Ok(())
    }
}
