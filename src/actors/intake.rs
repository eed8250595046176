//! Intake: reads one stream through a consumer group and hands each entry to the actor
//! downstream, only as fast as that actor has room.
//!
//! Room is a semaphore of credits shared with the downstream: every delivery holds one credit
//! until it is dropped, so the number of entries in memory never exceeds the credits, whatever
//! the stream holds. The intake also reclaims entries idle past the visibility timeout
//! (XAUTOCLAIM), re-reads its own pending entries when the downstream restarted, dead-letters
//! entries that do not decode, and rides out Redis restarts: errors back off and retry, and a
//! vanished group is recreated. It never blocks longer than `block` without looking up.

use crate::messages::StreamMessage;
use crate::queue::{Delivery, RawEntry, StreamAcker, StreamConsumer};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use redis::aio::ConnectionManager;
use serde::Serialize;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

/// What the intake last saw, for readiness.
#[derive(Debug, Default)]
pub struct IntakeHealth {
    inner: Mutex<IntakeHealthState>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct IntakeHealthState {
    pub paused: bool,
    pub last_ok_ms: Option<i64>,
    pub last_error: Option<String>,
    pub delivered: u64,
    pub reclaimed: u64,
    pub dead_lettered: u64,
}

impl IntakeHealth {
    pub fn snapshot(&self) -> IntakeHealthState {
        self.inner.lock().expect("health lock").clone()
    }

    fn update(&self, f: impl FnOnce(&mut IntakeHealthState)) {
        f(&mut self.inner.lock().expect("health lock"))
    }
}

pub enum IntakeMsg {
    /// Read the next batch (self-sent; at most one is outstanding).
    Poll,
    /// The downstream restarted and lost what it held: deliver this consumer's pending entries
    /// again.
    Redeliver,
    Pause,
    Resume,
}

/// Everything an intake needs; cloned again for each restart.
#[derive(Clone)]
pub struct IntakeArgs {
    pub conn: ConnectionManager,
    pub acker: StreamAcker,
    pub stream: String,
    pub group: String,
    pub consumer: String,
    pub block: Duration,
    pub visibility_timeout: Duration,
    /// Shared with the downstream; survives restarts of either side.
    pub credits: Arc<Semaphore>,
    /// Most entries read per call.
    pub max_batch: usize,
    /// Registered name of the actor that receives deliveries.
    pub downstream: String,
    pub health: Arc<IntakeHealth>,
}

pub struct IntakeState {
    args: IntakeArgs,
    consumer: StreamConsumer,
    poll_scheduled: bool,
    paused: bool,
    next_reclaim: Instant,
    backoff: Duration,
}

/// The intake actor for messages `M`, delivering `D: From<Delivery<M>>` downstream.
pub struct Intake<M, D>(PhantomData<fn() -> (M, D)>);

impl<M, D> Default for Intake<M, D> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl<M, D> Intake<M, D>
where
    M: StreamMessage,
    D: From<Delivery<M>> + ractor::Message,
{
    fn schedule_poll(myself: &ActorRef<IntakeMsg>, state: &mut IntakeState) {
        if !state.poll_scheduled && !state.paused {
            state.poll_scheduled = true;
            let _ = myself.cast(IntakeMsg::Poll);
        }
    }

    /// Takes up to `max_batch` credits, waiting at most the block time for the first.
    async fn take_credits(args: &IntakeArgs) -> Vec<OwnedSemaphorePermit> {
        let first = tokio::time::timeout(args.block, args.credits.clone().acquire_owned()).await;
        let Ok(Ok(first)) = first else {
            return Vec::new();
        };
        let mut permits = vec![first];
        while permits.len() < args.max_batch {
            match args.credits.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        permits
    }

    /// One read: reclaimed entries first, when a reclaim is due, then new ones.
    async fn read(
        state: &mut IntakeState,
        room: usize,
    ) -> Result<(Vec<RawEntry>, usize), crate::queue::QueueError> {
        let mut entries = Vec::new();
        if Instant::now() >= state.next_reclaim {
            entries = state.consumer.reclaim_idle(room).await?;
            if state.consumer.reclaim_scan_complete() || entries.is_empty() {
                state.next_reclaim = Instant::now() + state.args.visibility_timeout / 2;
            }
        }
        let reclaimed = entries.len();
        if entries.len() < room {
            entries.extend(state.consumer.read_new(room - entries.len()).await?);
        }
        Ok((entries, reclaimed))
    }

    /// Decodes and hands on each entry with one credit; dead-letters what does not decode.
    async fn dispatch(
        state: &mut IntakeState,
        entries: Vec<RawEntry>,
        mut permits: Vec<OwnedSemaphorePermit>,
    ) {
        for entry in entries {
            match M::decode(&entry.fields) {
                Ok(message) => {
                    let delivery = Delivery {
                        entry_id: entry.id,
                        message,
                        acker: state.args.acker.clone(),
                        _credit: permits.pop(),
                    };
                    deliver::<D>(&state.args.downstream, D::from(delivery));
                    state.args.health.update(|h| h.delivered += 1);
                }
                Err(malformed) => {
                    tracing::warn!(stream = %state.args.stream, entry = %entry.id, reason = %malformed, "dead-lettering a malformed entry");
                    let reason = malformed.to_string();
                    if let Err(e) = state
                        .args
                        .acker
                        .dead_letter(&entry.id, &entry.fields, &reason)
                        .await
                    {
                        // Left pending: it is reclaimed and dead-lettered again later.
                        tracing::warn!(error = %e, "could not dead-letter an entry");
                    } else {
                        state.args.health.update(|h| h.dead_lettered += 1);
                    }
                }
            }
        }
    }
}

/// Sends to the downstream by name, so a restarted downstream is found again. A delivery that
/// finds no downstream is dropped: its entry stays pending and comes back by `Redeliver` or
/// by reclaim.
fn deliver<D: ractor::Message>(downstream: &str, message: D) {
    match ractor::registry::where_is(downstream) {
        Some(cell) => {
            let actor: ActorRef<D> = cell.into();
            if actor.send_message(message).is_err() {
                tracing::warn!(%downstream, "downstream is stopping; the entry stays pending");
            }
        }
        None => tracing::warn!(%downstream, "downstream not running; the entry stays pending"),
    }
}

impl<M, D> Actor for Intake<M, D>
where
    M: StreamMessage,
    D: From<Delivery<M>> + ractor::Message,
{
    type Msg = IntakeMsg;
    type State = IntakeState;
    type Arguments = IntakeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: IntakeArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let consumer = StreamConsumer::new(
            args.conn.clone(),
            args.stream.clone(),
            args.group.clone(),
            args.consumer.clone(),
            args.block,
            args.visibility_timeout,
        );
        let paused = args.health.snapshot().paused;
        let mut state = IntakeState {
            args,
            consumer,
            poll_scheduled: false,
            paused,
            next_reclaim: Instant::now(),
            backoff: MIN_BACKOFF,
        };
        Self::schedule_poll(&myself, &mut state);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            IntakeMsg::Poll => {
                state.poll_scheduled = false;
                if state.paused {
                    return Ok(());
                }
                let permits = Self::take_credits(&state.args).await;
                if permits.is_empty() {
                    Self::schedule_poll(&myself, state);
                    return Ok(());
                }
                let span = tracing::debug_span!("intake.read", stream = %state.args.stream, room = permits.len());
                match Self::read(state, permits.len()).instrument(span).await {
                    Ok((entries, reclaimed)) => {
                        state.backoff = MIN_BACKOFF;
                        state.args.health.update(|h| {
                            h.last_ok_ms = Some(crate::domain::now_millis());
                            h.last_error = None;
                            h.reclaimed += reclaimed as u64;
                        });
                        if reclaimed > 0 {
                            tracing::info!(stream = %state.args.stream, reclaimed, "reclaimed entries idle past the visibility timeout");
                        }
                        Self::dispatch(state, entries, permits).await;
                    }
                    Err(e) => {
                        drop(permits);
                        let reason = e.to_string();
                        tracing::warn!(stream = %state.args.stream, error = %reason, retry_in = ?state.backoff, "intake read failed");
                        state.args.health.update(|h| h.last_error = Some(reason));
                        tokio::time::sleep(state.backoff).await;
                        state.backoff = (state.backoff * 2).min(MAX_BACKOFF);
                    }
                }
                Self::schedule_poll(&myself, state);
            }
            IntakeMsg::Redeliver => {
                let room = state.args.credits.available_permits().max(1);
                match state.consumer.read_own_pending(room).await {
                    Ok(entries) => {
                        tracing::info!(stream = %state.args.stream, count = entries.len(), "redelivering this consumer's pending entries");
                        let mut permits = Vec::new();
                        for _ in 0..entries.len() {
                            match state.args.credits.clone().try_acquire_owned() {
                                Ok(p) => permits.push(p),
                                Err(_) => break,
                            }
                        }
                        // Entries beyond the credits stay pending and are reclaimed later.
                        let entries = entries.into_iter().take(permits.len()).collect();
                        Self::dispatch(state, entries, permits).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read pending entries; they will be reclaimed")
                    }
                }
            }
            IntakeMsg::Pause => {
                state.paused = true;
                state.args.health.update(|h| h.paused = true);
            }
            IntakeMsg::Resume => {
                state.paused = false;
                state.args.health.update(|h| h.paused = false);
                Self::schedule_poll(&myself, state);
            }
        }
        Ok(())
    }
}
