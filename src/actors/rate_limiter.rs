//! Rate limiter: hands out permits to call the provider, and takes each call's outcome back.
//!
//! A permit needs room in two places: the global budget in Redis (requests and tokens per
//! minute, shared by all daemons; see [`crate::queue::RateBudget`]) and this daemon's adaptive
//! concurrency limit ([`ConcurrencyController`]). A 429 holds every caller of every daemon for
//! the provider's `Retry-After`; an unreachable provider opens the [`OutageCircuit`], which
//! holds everyone for a doubling wait. Waiters are served in arrival order.
//!
//! The protocol — permit, call, release with the outcome — has one home: [`Permit::call`].
//! Both the embedding workers and `POST /v1/contexts/{id}/search` go through a
//! [`RateLimitedEmbedder`], so a search obeys the same budget and opens the same circuit.

use super::address::{Address, Unreachable};
use crate::gate::PipelineGate;
use crate::limiter::{
    CallOutcome, CircuitChange, ConcurrencyController, LimiterStatus, OutageCircuit,
};
use crate::providers::{Embedded, Embedder, InputKind, ProviderError};
use crate::queue::RateBudget;
use crate::retry::Backoff;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

pub enum RateLimiterMsg {
    Acquire {
        tokens: u64,
        reply: RpcReplyPort<Permit>,
    },
    Release(CallOutcome),
    /// A permit's request turned out to carry this many more tokens (fewer, when negative).
    Charge(i64),
    /// The wait the budget asked for is over (self-sent).
    Tick,
}

/// The right to make one call. [`Permit::call`] makes it and releases the permit with the
/// call's outcome; dropping an unused permit releases it as [`CallOutcome::Unused`].
pub struct Permit {
    limiter: ActorRef<RateLimiterMsg>,
    gate: PipelineGate,
    tokens: u64,
    released: bool,
}

impl Permit {
    /// The tokens of the request, once known (it was packed after the permit came): the
    /// budget is charged the difference.
    pub fn resize(&mut self, tokens: u64) {
        if tokens != self.tokens {
            let delta = tokens as i64 - self.tokens as i64;
            let _ = self.limiter.cast(RateLimiterMsg::Charge(delta));
            self.tokens = tokens;
        }
    }

    /// Embeds `inputs` under this permit: one provider request, counted in the metrics, and the
    /// permit released with what the answer says about load.
    pub async fn call(
        mut self,
        embedder: &dyn Embedder,
        inputs: &[String],
        kind: InputKind,
    ) -> Result<Billed, ProviderError> {
        let span = tracing::debug_span!(
            "provider.embed",
            inputs = inputs.len(),
            tokens = self.tokens
        );
        let started = Instant::now();
        let result = embedder.embed(inputs, kind).instrument(span).await;
        let outcome = CallOutcome::of(&result);
        metrics::counter!("embedq_api_requests_total", "outcome" => outcome.label()).increment(1);
        metrics::histogram!("embedq_api_request_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        if let Ok(embedded) = &result {
            // The provider's count is what its quota was charged: the budget follows it.
            metrics::counter!("embedq_tokens_estimated_total").increment(self.tokens);
            if let Some(used) = embedded.usage_tokens {
                self.resize(used);
            }
            metrics::counter!("embedq_tokens_total").increment(self.tokens);
            // OpenTelemetry's GenAI semantic conventions: gen_ai.client.token.usage.
            metrics::histogram!(
                "gen_ai_client_token_usage",
                "gen_ai_operation_name" => "embeddings",
                "gen_ai_token_type" => "input",
                "gen_ai_request_model" => embedder.model().to_owned(),
            )
            .record(self.tokens as f64);
        }
        // An unusable provider closes the gate before the permit goes back, so the permit it
        // frees cannot carry another request to it.
        if let Err(ProviderError::Fatal { reason }) = &result
            && self.gate.close_for_provider(reason)
        {
            tracing::error!(%reason, "the provider is unusable; intake pauses until an operator resumes it");
        }
        self.released = true;
        let _ = self.limiter.cast(RateLimiterMsg::Release(outcome));
        result.map(|embedded| Billed {
            embedded,
            tokens: self.tokens,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.released {
            let _ = self
                .limiter
                .cast(RateLimiterMsg::Release(CallOutcome::Unused));
        }
    }
}

/// A provider's answer and the tokens charged for it: the provider's own count (`usage`) when
/// it gave one, else embedq's estimate.
#[derive(Debug)]
pub struct Billed {
    pub embedded: Embedded,
    pub tokens: u64,
}

/// Why no permit came.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NoPermit {
    #[error(transparent)]
    Limiter(#[from] Unreachable),
}

/// An embedder whose every call goes through the rate limiter.
#[derive(Clone)]
pub struct RateLimitedEmbedder {
    embedder: Arc<dyn Embedder>,
    limiter: Address<RateLimiterMsg>,
}

impl RateLimitedEmbedder {
    pub fn new(embedder: Arc<dyn Embedder>, limiter: Address<RateLimiterMsg>) -> Self {
        Self { embedder, limiter }
    }

    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    /// Waits for a permit for one request of `tokens` (at most `wait`, when given).
    pub async fn acquire(&self, tokens: u64, wait: Option<Duration>) -> Result<Permit, NoPermit> {
        Ok(self
            .limiter
            .call(|reply| RateLimiterMsg::Acquire { tokens, reply }, wait)
            .await?)
    }

    /// One request: a permit, then the call under it.
    pub async fn embed(
        &self,
        inputs: &[String],
        kind: InputKind,
        wait: Option<Duration>,
    ) -> Result<Result<Embedded, ProviderError>, NoPermit> {
        let tokens: usize = inputs.iter().map(|i| self.embedder.count_tokens(i)).sum();
        let permit = self.acquire(tokens.max(1) as u64, wait).await?;
        Ok(permit
            .call(self.embedder.as_ref(), inputs, kind)
            .await
            .map(|billed| billed.embedded))
    }
}

#[derive(Clone)]
pub struct RateLimiterArgs {
    pub budget: RateBudget,
    /// Closed by a permit whose call found the provider unusable.
    pub gate: PipelineGate,
    pub min_concurrency: usize,
    pub max_concurrency: usize,
    pub status: LimiterStatus,
}

pub struct RateLimiterState {
    args: RateLimiterArgs,
    concurrency: ConcurrencyController,
    circuit: OutageCircuit,
    in_flight: usize,
    waiters: VecDeque<(u64, RpcReplyPort<Permit>)>,
    tick_scheduled: bool,
    /// While the budget in Redis cannot be read.
    budget_errors: Backoff,
}

pub struct RateLimiter;

/// A 429 without `Retry-After` holds everyone this long.
const DEFAULT_HOLD: Duration = Duration::from_secs(1);

impl RateLimiter {
    async fn pump(myself: &ActorRef<RateLimiterMsg>, state: &mut RateLimiterState) {
        while let Some((tokens, reply)) = state.waiters.front() {
            if reply.is_closed() {
                state.waiters.pop_front();
                continue;
            }
            if state.in_flight >= state.concurrency.capacity() {
                break;
            }
            let taken = match crate::fault::fault_store!(myself) {
                Some(reason) => Err(reason),
                None => state
                    .args
                    .budget
                    .take(*tokens)
                    .await
                    .map_err(|e| e.to_string()),
            };
            match taken {
                Ok(None) => {
                    state.budget_errors.reset();
                    let (tokens, reply) = state.waiters.pop_front().expect("front exists");
                    state.in_flight += 1;
                    let permit = Permit {
                        limiter: myself.clone(),
                        gate: state.args.gate.clone(),
                        tokens,
                        released: false,
                    };
                    // A failed send drops the permit, which releases it.
                    let _ = reply.send(permit);
                }
                Ok(Some(wait)) => {
                    state
                        .args
                        .status
                        .update(|s| s.last_wait_ms = wait.as_millis() as u64);
                    Self::schedule_tick(myself, state, wait);
                    break;
                }
                Err(e) => {
                    let wait = state.budget_errors.next_wait();
                    tracing::warn!(error = %e, retry_in = ?wait, "rate budget unavailable; waiting");
                    Self::schedule_tick(myself, state, wait);
                    break;
                }
            }
        }
        Self::publish(state);
    }

    fn schedule_tick(
        myself: &ActorRef<RateLimiterMsg>,
        state: &mut RateLimiterState,
        wait: Duration,
    ) {
        if !state.tick_scheduled {
            state.tick_scheduled = true;
            myself.send_after(wait, || RateLimiterMsg::Tick);
        }
    }

    fn publish(state: &RateLimiterState) {
        let limit = state.concurrency.limit();
        let (in_flight, waiting) = (state.in_flight, state.waiters.len());
        state.args.status.update(|s| {
            s.concurrency_limit = limit;
            s.in_flight = in_flight;
            s.waiting = waiting;
        });
    }

    /// Shares what the call said with every daemon: a hold after a 429 or while unreachable,
    /// and the provider's remaining budget (which lowers the shared buckets, never raises them).
    async fn share(state: &mut RateLimiterState, outcome: &CallOutcome, change: CircuitChange) {
        let budget = &state.args.budget;
        let hold = match (outcome, change) {
            (CallOutcome::RateLimited { retry_after, .. }, _) => {
                state.args.status.update(|s| s.rate_limited += 1);
                Some(retry_after.unwrap_or(DEFAULT_HOLD))
            }
            (_, CircuitChange::Opened(hold) | CircuitChange::Held(hold)) => Some(hold),
            _ => None,
        };
        if let Some(hold) = hold
            && let Err(e) = budget.hold(hold).await
        {
            tracing::warn!(error = %e, "could not share a hold with the other daemons");
        }
        if let CallOutcome::Success(hints) | CallOutcome::RateLimited { hints, .. } = outcome
            && (hints.remaining_requests.is_some() || hints.remaining_tokens.is_some())
        {
            let _ = budget
                .correct(hints.remaining_requests, hints.remaining_tokens)
                .await;
        }
    }
}

impl Actor for RateLimiter {
    type Msg = RateLimiterMsg;
    type State = RateLimiterState;
    type Arguments = RateLimiterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: RateLimiterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(RateLimiterState {
            concurrency: ConcurrencyController::new(args.min_concurrency, args.max_concurrency),
            circuit: OutageCircuit::default(),
            args,
            in_flight: 0,
            waiters: VecDeque::new(),
            tick_scheduled: false,
            budget_errors: Backoff::new(Duration::from_millis(250), Duration::from_secs(2)),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::fault::fault_point!(myself);
        match message {
            RateLimiterMsg::Acquire { tokens, reply } => {
                state.waiters.push_back((tokens, reply));
                if !state.tick_scheduled {
                    Self::pump(&myself, state).await;
                }
            }
            RateLimiterMsg::Release(outcome) => {
                state.in_flight = state.in_flight.saturating_sub(1);
                let now = Instant::now();
                state.concurrency.observe(&outcome, now);
                let change = state.circuit.observe(&outcome, now);
                match change {
                    CircuitChange::Opened(_) => {
                        tracing::warn!(
                            "the provider cannot be reached; holding every worker until it can"
                        );
                        let since = crate::domain::now_millis();
                        state
                            .args
                            .status
                            .update(|s| s.provider_unreachable_since_ms = Some(since));
                    }
                    CircuitChange::Closed => {
                        tracing::info!("the provider can be reached again");
                        state
                            .args
                            .status
                            .update(|s| s.provider_unreachable_since_ms = None);
                    }
                    CircuitChange::Held(_) | CircuitChange::None => {}
                }
                Self::share(state, &outcome, change).await;
                if state.tick_scheduled {
                    Self::publish(state);
                } else {
                    Self::pump(&myself, state).await;
                }
            }
            RateLimiterMsg::Charge(delta) => {
                if let Err(e) = state.args.budget.charge(delta).await {
                    tracing::warn!(error = %e, delta, "could not charge the rate budget");
                }
            }
            RateLimiterMsg::Tick => {
                state.tick_scheduled = false;
                Self::pump(&myself, state).await;
            }
        }
        Ok(())
    }
}
