//! Intake: reads one stream through a consumer group and hands each entry to the actor
//! downstream, only as fast as that actor has room, and only while the pipeline gate is open.
//!
//! Room is a semaphore of credits shared with the downstream: every delivery holds one credit
//! until it is dropped, so the number of entries in memory never exceeds the credits, whatever
//! the stream holds. The intake also reclaims entries idle past the visibility timeout
//! (XAUTOCLAIM), re-reads its own pending entries when the downstream restarted, dead-letters
//! entries that do not decode, and rides out Redis restarts: errors back off and retry, and a
//! vanished group is recreated. It never blocks longer than `block` without looking up.
//!
//! Every entry held in memory anywhere downstream (a live [`Delivery`], queued in the pool, in a
//! worker or in the status writer's batch) has its claim kept alive on a timer, so no other
//! consumer reclaims work in progress however long it takes; and an entry held is never
//! delivered a second time.

use super::address::Address;
use crate::gate::PipelineGate;
use crate::messages::StreamMessage;
use crate::queue::{Delivery, RawEntry, StreamAcker, StreamConsumer};
use crate::retry::Backoff;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use redis::aio::ConnectionManager;
use serde::Serialize;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// What the intake last saw, for readiness.
#[derive(Debug, Default)]
pub struct IntakeHealth {
    inner: Mutex<IntakeHealthState>,
}

#[derive(Debug, Default, Clone, Serialize, utoipa::ToSchema)]
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
    /// The pipeline gate opened or closed (self-sent by its watcher).
    GateChanged,
    /// Renew the claims on the entries held downstream (self-sent on a timer).
    KeepAlive,
}

/// Everything an intake needs; cloned again for each restart.
pub struct IntakeArgs<D> {
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
    /// The actor that receives deliveries.
    pub downstream: Address<D>,
    pub health: Arc<IntakeHealth>,
    pub gate: PipelineGate,
}

impl<D> Clone for IntakeArgs<D> {
    fn clone(&self) -> Self {
        Self {
            conn: self.conn.clone(),
            acker: self.acker.clone(),
            stream: self.stream.clone(),
            group: self.group.clone(),
            consumer: self.consumer.clone(),
            block: self.block,
            visibility_timeout: self.visibility_timeout,
            credits: self.credits.clone(),
            max_batch: self.max_batch,
            downstream: self.downstream.clone(),
            health: self.health.clone(),
            gate: self.gate.clone(),
        }
    }
}

pub struct IntakeState<D> {
    args: IntakeArgs<D>,
    consumer: StreamConsumer,
    poll_scheduled: bool,
    next_reclaim: Instant,
    errors: Backoff,
    timers: Vec<JoinHandle<()>>,
}

/// The intake actor for messages `M`, delivering `D: From<Delivery<M>>` downstream.
pub struct Intake<M, D>(PhantomData<fn() -> (M, D)>);

impl<M, D> Default for Intake<M, D> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

/// Waits between failed reads: from 100 ms, doubling, up to 2 s.
fn read_errors() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(2))
}
/// Own pending entries read per page when redelivering.
const REDELIVER_PAGE: usize = 256;

/// How often idle entries are looked for: often enough that work left by a dead consumer is
/// taken soon after its visibility timeout, cheap enough to not matter (one XAUTOCLAIM).
fn reclaim_period(visibility_timeout: Duration) -> Duration {
    (visibility_timeout / 8).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// How often the claims on held entries are renewed.
fn keep_alive_period(visibility_timeout: Duration) -> Duration {
    (visibility_timeout / 3).max(Duration::from_millis(100))
}

impl<M, D> Intake<M, D>
where
    M: StreamMessage,
    D: From<Delivery<M>> + ractor::Message,
{
    fn schedule_poll(myself: &ActorRef<IntakeMsg>, state: &mut IntakeState<D>) {
        if !state.poll_scheduled && state.args.gate.is_open() {
            state.poll_scheduled = true;
            let _ = myself.cast(IntakeMsg::Poll);
        }
    }

    /// Takes up to `max_batch` credits, waiting at most the block time for the first.
    async fn take_credits(args: &IntakeArgs<D>) -> Vec<OwnedSemaphorePermit> {
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
        state: &mut IntakeState<D>,
        room: usize,
    ) -> Result<(Vec<RawEntry>, usize), crate::queue::QueueError> {
        let mut entries = Vec::new();
        if Instant::now() >= state.next_reclaim {
            entries = state.consumer.reclaim_idle(room).await?;
            if state.consumer.reclaim_scan_complete() || entries.is_empty() {
                state.next_reclaim = Instant::now() + reclaim_period(state.args.visibility_timeout);
            }
        }
        let reclaimed = entries.len();
        if entries.len() < room {
            entries.extend(state.consumer.read_new(room - entries.len()).await?);
        }
        Ok((entries, reclaimed))
    }

    /// Decodes and hands on each entry with one credit; dead-letters what does not decode.
    /// Entries already held downstream are left to their holder.
    async fn dispatch(
        state: &mut IntakeState<D>,
        entries: Vec<RawEntry>,
        mut permits: Vec<OwnedSemaphorePermit>,
    ) {
        for entry in entries {
            match M::decode(&entry.fields) {
                Ok(message) => {
                    let Some(held) = state.args.acker.hold(&entry.id) else {
                        tracing::debug!(entry = %entry.id, "entry already held; not delivered again");
                        continue;
                    };
                    let delivery = Delivery {
                        entry_id: entry.id,
                        message,
                        acker: state.args.acker.clone(),
                        _credit: permits.pop(),
                        _held: Some(held),
                    };
                    // A delivery that finds no downstream is dropped: its entry stays pending
                    // and comes back by `Redeliver` (after the restart) or by reclaim.
                    if let Err(e) = state.args.downstream.cast(D::from(delivery)) {
                        tracing::warn!(stream = %state.args.stream, error = %e, "the entry stays pending");
                    }
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

impl<M, D> Actor for Intake<M, D>
where
    M: StreamMessage,
    D: From<Delivery<M>> + ractor::Message,
{
    type Msg = IntakeMsg;
    type State = IntakeState<D>;
    type Arguments = IntakeArgs<D>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: IntakeArgs<D>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut consumer = StreamConsumer::new(
            args.conn.clone(),
            args.stream.clone(),
            args.group.clone(),
            args.consumer.clone(),
            args.block,
            args.visibility_timeout,
        );
        // The group is made before the first read, so a first start reads quietly; a Redis
        // that is down now is reported by the reads, which make the group when it is back.
        if let Err(e) = consumer.ensure_group().await {
            tracing::debug!(error = %e, "could not make the consumer group yet");
        }
        let keep_alive = myself.send_interval(keep_alive_period(args.visibility_timeout), || {
            IntakeMsg::KeepAlive
        });
        let mut gate = args.gate.subscribe();
        let me = myself.clone();
        let gate_watch = tokio::spawn(async move {
            while gate.changed().await.is_ok() {
                if me.cast(IntakeMsg::GateChanged).is_err() {
                    return;
                }
            }
        });
        let paused = !args.gate.is_open();
        args.health.update(|h| h.paused = paused);
        let mut state = IntakeState {
            args,
            consumer,
            poll_scheduled: false,
            next_reclaim: Instant::now(),
            errors: read_errors(),
            timers: vec![keep_alive, gate_watch],
        };
        // Entries this consumer read before a crash of this actor (or, under a configured
        // name, before a restart of the daemon) and that nobody holds: deliver them again now
        // rather than after a visibility timeout.
        let _ = myself.cast(IntakeMsg::Redeliver);
        Self::schedule_poll(&myself, &mut state);
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for timer in state.timers.drain(..) {
            timer.abort();
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
            IntakeMsg::Poll => {
                state.poll_scheduled = false;
                if !state.args.gate.is_open() {
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
                        state.errors.reset();
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
                        let wait = state.errors.next_wait();
                        tracing::warn!(stream = %state.args.stream, error = %reason, retry_in = ?wait, "intake read failed");
                        state.args.health.update(|h| h.last_error = Some(reason));
                        tokio::time::sleep(wait).await;
                    }
                }
                Self::schedule_poll(&myself, state);
            }
            IntakeMsg::Redeliver => {
                // This consumer's pending entries that no live delivery holds, page by page.
                let room = state.args.credits.available_permits();
                let mut entries: Vec<RawEntry> = Vec::new();
                let mut after = "0".to_owned();
                while entries.len() < room {
                    match state
                        .consumer
                        .read_own_pending_after(&after, REDELIVER_PAGE)
                        .await
                    {
                        Ok(page) => {
                            let Some(last) = page.last() else { break };
                            after = last.id.clone();
                            let full = page.len() >= REDELIVER_PAGE;
                            entries.extend(
                                page.into_iter()
                                    .filter(|e| !state.args.acker.is_held(&e.id)),
                            );
                            if !full {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not read pending entries; they will be reclaimed");
                            break;
                        }
                    }
                }
                if !entries.is_empty() {
                    tracing::info!(stream = %state.args.stream, count = entries.len(), "redelivering this consumer's pending entries");
                }
                let mut permits = Vec::new();
                for _ in 0..entries.len() {
                    match state.args.credits.clone().try_acquire_owned() {
                        Ok(p) => permits.push(p),
                        Err(_) => break,
                    }
                }
                // Entries beyond the credits stay pending and are reclaimed later.
                entries.truncate(permits.len());
                Self::dispatch(state, entries, permits).await;
            }
            IntakeMsg::KeepAlive => {
                let held = state.args.acker.held();
                match state.args.acker.keep_alive(&held).await {
                    Ok(lost) if !lost.is_empty() => tracing::warn!(
                        stream = %state.args.stream,
                        ?lost,
                        "entries held here were claimed by another consumer; both may process them, each item is counted once"
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "could not renew the claims on held entries")
                    }
                }
            }
            IntakeMsg::GateChanged => {
                let open = state.args.gate.is_open();
                state.args.health.update(|h| h.paused = !open);
                Self::schedule_poll(&myself, state);
            }
        }
        Ok(())
    }
}
