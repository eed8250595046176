//! Rate limiter: hands out permits to call the provider. A permit needs room in two places:
//! the global budget in Redis (requests and tokens per minute, shared by all daemons; see
//! [`crate::queue::RateBudget`]) and this daemon's concurrency limit, which adapts like
//! Vector's adaptive request concurrency: +1 per window of successes, halved on a 429, a 5xx or
//! a time-out. A 429 also holds every worker of every daemon for the provider's `Retry-After`.
//! A provider that cannot be reached at all (connections refused) opens a circuit: every worker
//! of every daemon is held for a wait that doubles while it stays unreachable, so an outage
//! costs a probe request now and then instead of a request per waiting task.
//! Waiters are served in arrival order.

use crate::providers::RateLimitHints;
use crate::queue::RateBudget;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a call that held a permit ended with.
#[derive(Debug, Clone)]
pub enum CallOutcome {
    Success(RateLimitHints),
    /// A 429: hold everyone for `retry_after` (or a default second).
    RateLimited {
        retry_after: Option<Duration>,
        hints: RateLimitHints,
    },
    /// A 5xx, a time-out or a reset: the provider is struggling; back off concurrency.
    Overloaded,
    /// No connection could be made: hold everyone, longer each time in a row.
    Unreachable,
    /// Anything else (invalid input, fatal, or a dropped permit): no signal about load.
    Neutral,
}

pub enum RateLimiterMsg {
    Acquire {
        tokens: u64,
        reply: RpcReplyPort<Permit>,
    },
    Release(CallOutcome),
    Tick,
}

/// The right to make one call. Release it with the call's outcome; dropping it releases it
/// as [`CallOutcome::Neutral`].
pub struct Permit {
    limiter: ActorRef<RateLimiterMsg>,
    released: bool,
}

impl Permit {
    pub fn release(mut self, outcome: CallOutcome) {
        self.released = true;
        let _ = self.limiter.cast(RateLimiterMsg::Release(outcome));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.released {
            let _ = self
                .limiter
                .cast(RateLimiterMsg::Release(CallOutcome::Neutral));
        }
    }
}

/// Live figures, for readiness and metrics.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RateLimiterStatus {
    pub concurrency_limit: f64,
    pub in_flight: usize,
    pub waiting: usize,
    pub rate_limited: u64,
    pub last_wait_ms: u64,
    /// Since when the provider cannot be reached (ms since the epoch), while it cannot.
    pub provider_unreachable_since_ms: Option<i64>,
}

#[derive(Clone)]
pub struct RateLimiterArgs {
    pub budget: RateBudget,
    pub min_concurrency: usize,
    pub max_concurrency: usize,
    pub status: Arc<Mutex<RateLimiterStatus>>,
}

pub struct RateLimiterState {
    args: RateLimiterArgs,
    limit: f64,
    in_flight: usize,
    waiters: VecDeque<(u64, RpcReplyPort<Permit>)>,
    tick_scheduled: bool,
    last_decrease: Option<Instant>,
    /// Unreachable outcomes in a row (the circuit's hold doubles with each).
    unreachable_streak: u32,
}

pub struct RateLimiter;

/// A 429 without `Retry-After` holds everyone this long.
const DEFAULT_HOLD: Duration = Duration::from_secs(1);
/// Concurrency is halved at most this often.
const DECREASE_COOLDOWN: Duration = Duration::from_secs(1);
/// The first hold when the provider is unreachable; it doubles up to [`MAX_UNREACHABLE_HOLD`].
const UNREACHABLE_HOLD: Duration = Duration::from_millis(200);
const MAX_UNREACHABLE_HOLD: Duration = Duration::from_secs(2);

impl RateLimiter {
    async fn pump(myself: &ActorRef<RateLimiterMsg>, state: &mut RateLimiterState) {
        while let Some((tokens, reply)) = state.waiters.front() {
            if reply.is_closed() {
                state.waiters.pop_front();
                continue;
            }
            if state.in_flight >= state.limit.floor().max(1.0) as usize {
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
                    let (_, reply) = state.waiters.pop_front().expect("front exists");
                    state.in_flight += 1;
                    let permit = Permit {
                        limiter: myself.clone(),
                        released: false,
                    };
                    // A failed send drops the permit, which releases it.
                    let _ = reply.send(permit);
                }
                Ok(Some(wait)) => {
                    state.args.status.lock().expect("status").last_wait_ms =
                        wait.as_millis() as u64;
                    Self::schedule_tick(myself, state, wait);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rate budget unavailable; waiting");
                    Self::schedule_tick(myself, state, Duration::from_millis(250));
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
        let mut s = state.args.status.lock().expect("status");
        s.concurrency_limit = state.limit;
        s.in_flight = state.in_flight;
        s.waiting = state.waiters.len();
    }

    fn decrease(state: &mut RateLimiterState) {
        let now = Instant::now();
        if state
            .last_decrease
            .is_none_or(|t| now.duration_since(t) >= DECREASE_COOLDOWN)
        {
            state.limit = (state.limit / 2.0).max(state.args.min_concurrency as f64);
            state.last_decrease = Some(now);
        }
    }

    /// Lowers the shared buckets to what the provider says is left. When nothing is left, the
    /// buckets at zero make every taker wait one refill interval; a hold until the provider's
    /// reset would be far longer than needed (its reset is the time to a full window), and a
    /// real overrun comes back as a 429 with its own wait.
    async fn apply_hints(state: &RateLimiterState, hints: &RateLimitHints) {
        if hints.remaining_requests.is_some() || hints.remaining_tokens.is_some() {
            let _ = state
                .args
                .budget
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
        let limit = args.min_concurrency.max(1) as f64;
        Ok(RateLimiterState {
            args,
            limit,
            in_flight: 0,
            waiters: VecDeque::new(),
            tick_scheduled: false,
            last_decrease: None,
            unreachable_streak: 0,
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
                if !matches!(outcome, CallOutcome::Unreachable | CallOutcome::Neutral)
                    && state.unreachable_streak > 0
                {
                    state.unreachable_streak = 0;
                    state
                        .args
                        .status
                        .lock()
                        .expect("status")
                        .provider_unreachable_since_ms = None;
                    tracing::info!("the provider can be reached again");
                }
                match &outcome {
                    CallOutcome::Success(hints) => {
                        let max = state.args.max_concurrency as f64;
                        state.limit = (state.limit + 1.0 / state.limit.max(1.0)).min(max);
                        Self::apply_hints(state, hints).await;
                    }
                    CallOutcome::RateLimited { retry_after, hints } => {
                        Self::decrease(state);
                        state.args.status.lock().expect("status").rate_limited += 1;
                        let wait = retry_after.unwrap_or(DEFAULT_HOLD);
                        if let Err(e) = state.args.budget.hold(wait).await {
                            tracing::warn!(error = %e, "could not share a 429 hold");
                        }
                        Self::apply_hints(state, hints).await;
                    }
                    CallOutcome::Overloaded => Self::decrease(state),
                    CallOutcome::Unreachable => {
                        Self::decrease(state);
                        let wait = UNREACHABLE_HOLD
                            .saturating_mul(1 << state.unreachable_streak.min(8))
                            .min(MAX_UNREACHABLE_HOLD);
                        state.unreachable_streak = state.unreachable_streak.saturating_add(1);
                        {
                            let mut status = state.args.status.lock().expect("status");
                            if status.provider_unreachable_since_ms.is_none() {
                                status.provider_unreachable_since_ms =
                                    Some(crate::domain::now_millis());
                                tracing::warn!(
                                    "the provider cannot be reached; holding every worker until it can"
                                );
                            }
                        }
                        if let Err(e) = state.args.budget.hold(wait).await {
                            tracing::warn!(error = %e, "could not share the hold");
                        }
                    }
                    CallOutcome::Neutral => {}
                }
                if !state.tick_scheduled {
                    Self::pump(&myself, state).await;
                } else {
                    Self::publish(state);
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
